"""Queue order, victim choice and the cluster-wide victim search of ``priority`` / ``qos-driven``.

Scenes are hand-built: whole-GPU or fractional plain pods on ``nvidia-t4`` nodes, a ``PodLedger``
with each pod's submission, start and running time set by hand, ``now = 1000 s`` and a predicted
pause of exactly 60 s (``PauseModel(floor_s=60, safety=1e-9)``: the floor, whatever the waits so
far), so every slack verdict can be checked with ``r >= T (t + 60)`` next to the row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosched.policies.fairness.qos import has_slack
from qosched.policies.placement.base import best_candidate
from qosched.policies.placement.testing import ProfileTable, gpu_node
from qosched.policies.preemption import (
    PauseModel,
    Preemptor,
    PriorityPolicy,
    PriorityRule,
    QosDrivenPolicy,
    QosDrivenRule,
    SchedulerConfig,
    VictimFacts,
    expected_wait_s,
    ledger_facts,
    minimal_subset,
    priority_order,
    qos_driven_order,
)
from qosched.policies.preemption.base import PreemptivePolicy
from qosched.policies.simulator.replay import PENDING, RUNNING, PodLedger
from qosched.policies.simulator.scenarios import Workload
from qosched.policies.state import ClusterState
from qosched.policies.types import Allocation, NodeView, PodDemand

NOW = 1000.0
PAUSE = 60.0
TABLE = ProfileTable(params={}, device_memory_mib={})
CONFIG = SchedulerConfig(pause=PauseModel(floor_s=PAUSE, safety=1e-9), retry_interval_s=None)


# ---------------------------------------------------------------------------------------------- queue order
@pytest.mark.parametrize(
    ("rank", "submit", "want"),
    [
        ([1, 0, 2], [0.0, 9.0, 1.0], [1, 0, 2]),
        ([1, 1, 1], [5.0, 3.0, 4.0], [1, 2, 0]),
        ([0, 0], [2.0, 2.0], [0, 1]),
        ([], [], []),
    ],
    ids=["class-first", "submission-within-class", "tie-by-position", "empty"],
)
def test_priority_order(rank: list[int], submit: list[float], want: list[int]) -> None:
    assert priority_order(rank, submit).tolist() == want


@pytest.mark.parametrize(
    ("rank", "qos", "submit", "want"),
    [
        ([1, 0], [0.0, 1.0], [0.0, 5.0], [1, 0]),
        ([2, 2, 2], [0.9, 0.1, 0.5], [0.0, 1.0, 2.0], [1, 2, 0]),
        ([1, 1], [0.5, 0.5], [7.0, 3.0], [1, 0]),
        ([1, 1], [0.5, 0.5], [3.0, 3.0], [0, 1]),
    ],
    ids=["class-beats-qos", "qos-ascending-within-class", "submission-breaks-qos-tie", "position-breaks-all"],
)
def test_qos_driven_order(rank: list[int], qos: list[float], submit: list[float], want: list[int]) -> None:
    assert qos_driven_order(rank, qos, submit).tolist() == want


def test_order_uses_the_given_tiebreak() -> None:
    assert qos_driven_order([0, 0], [1.0, 1.0], [0.0, 0.0], tiebreak=[9, 4]).tolist() == [1, 0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: qos_driven_order([0, 1], [np.nan, 1.0], [0.0, 0.0]), "^qos: NaN at position 0"),
        (lambda: priority_order([0, 1], [0.0]), "^submit_s: expected a 1-d array of 2 values"),
        (lambda: qos_driven_order([0], [1.0], [0.0], tiebreak=[1, 2]), "^tiebreak: expected 1 values"),
    ],
    ids=["nan-qos", "length-mismatch", "tiebreak-length"],
)
def test_order_rejects_bad_input(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("rank", "waited", "episodes", "floor", "safety", "want"),
    [
        # class 1: (30 + 90) / (1 + 2) = 40; class 0: 0 / 1 → floor; class 2: no pod → floor
        ([0, 1, 1], [0.0, 30.0, 90.0], [1, 1, 2], 10.0, 1.0, [10.0, 40.0, 10.0]),
        ([0, 1, 1], [0.0, 30.0, 90.0], [1, 1, 2], 10.0, 2.0, [10.0, 80.0, 10.0]),
        ([2], [500.0], [1], 0.0, 1.0, [0.0, 0.0, 500.0]),
    ],
    ids=["class-means-and-floor", "safety-factor", "no-floor"],
)
def test_expected_wait(
    rank: list[int], waited: list[float], episodes: list[int], floor: float, safety: float, want: list[float]
) -> None:
    got = expected_wait_s(rank, waited, episodes, 3, floor_s=floor, safety=safety)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_expected_wait_rejects_out_of_range_rank() -> None:
    with pytest.raises(ValueError, match="rank"):
        expected_wait_s([3], [1.0], [1], 3, floor_s=0.0)


# ---------------------------------------------------------------------------------------------- rules
def _facts(rank: list[int], surplus: list[float], slack: list[bool], start: list[float]) -> VictimFacts:
    return VictimFacts(
        rank=np.array(rank, dtype=np.int64),
        surplus=np.array(surplus, dtype=float),
        slack=np.array(slack, dtype=bool),
        start_s=np.array(start, dtype=float),
    )


@pytest.mark.parametrize(
    ("facts", "want"),
    [
        (_facts([1, 2, 2], [0.5, 0.1, 0.4], [True] * 3, [0, 0, 0]), [2, 1, 0]),
        (_facts([2, 2], [0.3, 0.3], [True] * 2, [10, 50]), [1, 0]),
        (_facts([2, 2], [0.3, 0.3], [True] * 2, [10, 10]), [0, 1]),
    ],
    ids=["lowest-class-then-largest-surplus", "equal-surplus-most-recent-first", "full-tie-position"],
)
def test_qos_driven_rule_order(facts: VictimFacts, want: list[int]) -> None:
    assert QosDrivenRule().order(facts).tolist() == want


def test_priority_rule_ignores_qos() -> None:
    # The free pod with the least surplus started last: priority evicts it first anyway.
    facts = _facts([2, 2, 1], [0.5, 0.01, 0.1], [True, False, True], [0.0, 900.0, 950.0])
    assert PriorityRule().order(facts).tolist() == [1, 0, 2]
    assert PriorityRule().eligible(Preemptor(rank=1), facts).tolist() == [True, True, False]


@pytest.mark.parametrize(
    ("needs", "require_need", "any_class", "want_may", "want_eligible"),
    [
        (True, True, True, True, [True, False, True]),
        (False, True, True, False, [True, False, True]),
        (False, False, True, True, [True, False, True]),
        (True, True, False, True, [True, False, False]),
    ],
    ids=["needs", "has-slack-waits", "need-not-required", "own-class-or-lower"],
)
def test_qos_driven_rule_gate(
    needs: bool, require_need: bool, any_class: bool, want_may: bool, want_eligible: list[bool]
) -> None:
    rule = QosDrivenRule(require_need=require_need, any_class=any_class)
    facts = _facts([2, 1, 0], [0.4, 0.01, 0.0], [True, False, True], [0, 0, 0])
    who = Preemptor(rank=1, needs=needs)
    assert rule.may_preempt(who) is want_may
    assert rule.eligible(who, facts).tolist() == want_eligible


@pytest.mark.parametrize(
    ("order", "sizes", "need", "want"),
    [
        ([0, 1, 2], [5, 5, 5], 0, []),
        ([0, 1, 2], [1, 1, 1], 5, None),
        ([0, 1, 2], [1, 3, 1], 3, [1]),
        ([0, 1, 2], [2, 2, 2], 4, [0, 1]),
        ([2, 0, 1], [1, 3, 2], 3, [2, 0]),
        ([], [], 1, None),
    ],
    ids=[
        "fits-already",
        "impossible",
        "reprieve-drops-small",
        "multi-victim",
        "order-respected",
        "no-candidates",
    ],
)
def test_minimal_subset(order: list[int], sizes: list[int], need: int, want: list[int] | None) -> None:
    got = minimal_subset(order, lambda vs: sum(sizes[v] for v in vs) >= need)
    assert got == want


@given(st.lists(st.integers(1, 9), min_size=1, max_size=8), st.integers(0, 40))
def test_minimal_subset_is_irredundant(sizes: list[int], need: int) -> None:
    order = list(range(len(sizes)))
    got = minimal_subset(order, lambda vs: sum(sizes[v] for v in vs) >= need)
    if sum(sizes) < need:
        assert got is None
        return
    assert got is not None
    assert sum(sizes[v] for v in got) >= need
    assert set(got) <= set(order)
    for v in got:  # giving back any one victim breaks the fit
        assert sum(sizes[u] for u in got if u != v) < need


# ---------------------------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class Run:
    """A running pod: class, GPU milli (per device) × devices, node, devices, submit, start, ran before."""

    uid: str
    cls: str
    node: str
    devices: tuple[int, ...]
    milli: int = 1000
    submit_s: float = 0.0
    start_s: float = 0.0
    ran_before_s: float = 0.0


def _pod(uid: str, cls: str, milli: int, count: int = 1) -> PodDemand:
    gpu = milli if count == 1 else 1000 * count
    return PodDemand(uid=uid, name=uid, qos_class=cls, gpu_milli=gpu, cpu_milli=100, memory_mib=100.0)


@dataclass
class Scene:
    state: ClusterState
    ledger: PodLedger
    pod: PodDemand


def scene(
    nodes: list[NodeView], running: list[Run], pending: tuple[str, str, int], pending_submit_s: float = NOW
) -> Scene:
    """Running pods placed as given; ``pending = (uid, class, milli)`` waiting since ``pending_submit_s``."""
    pods = [_pod(r.uid, r.cls, r.milli, max(1, len(r.devices)) if r.milli == 1000 else 1) for r in running]
    uid, cls, milli = pending
    target = _pod(uid, cls, milli)
    pods.append(target)
    wl = Workload.build(nodes, pods, [r.submit_s for r in running] + [pending_submit_s])
    ledger = PodLedger(wl)
    state = ClusterState(nodes, TABLE.lookup, TABLE.device_memory)
    names = [n.name for n in nodes]
    for i, r in enumerate(running):
        state.add(Allocation(pods[i], r.node, r.devices))
        ledger.status[i] = RUNNING
        ledger.node_row[i] = names.index(r.node)
        ledger.devices[i] = r.devices
        ledger.run_start_s[i] = r.start_s
        ledger.first_start_s[i] = min(r.start_s, r.submit_s + r.ran_before_s) if r.ran_before_s else r.start_s
        ledger.running_s[i] = r.ran_before_s
    ledger.status[len(running)] = PENDING
    return Scene(state, ledger, target)


def one_gpu_nodes(n: int, gpus: int = 1) -> list[NodeView]:
    return [gpu_node(f"n{i}", gpus=gpus) for i in range(n)]


def _preempt(policy: PreemptivePolicy, sc: Scene) -> tuple[str, ...]:
    return policy.preempt(sc.state, sc.pod, sc.ledger, NOW)


# Availability at NOW (t = 1000 s): r = NOW - start + ran_before. Slack: r >= T (t + 60).
#   free (T 0.5):  r >= 530;  batch (T 0.9): r >= 954;  prod (T 1.0): never (r <= t < t + 60).
VICTIM_ROWS = [
    pytest.param(
        one_gpu_nodes(1),
        [Run("p1", "prod", "n0", (0,))],
        ("f", "free", 1000),
        (),
        (),
        id="no-victim-possible",
    ),
    pytest.param(
        one_gpu_nodes(1),
        [Run("b1", "batch", "n0", (0,), start_s=50.0)],  # r = 950 < 954: would drop below 0.9
        ("p", "prod", 1000),
        (),
        ("b1",),
        id="victim-would-drop-below-target",
    ),
    pytest.param(
        one_gpu_nodes(1),
        [Run("b1", "batch", "n0", (0,), start_s=0.0)],  # r = 1000 >= 954: slack
        ("p", "prod", 1000),
        ("b1",),
        ("b1",),
        id="victim-with-slack",
    ),
    pytest.param(
        one_gpu_nodes(1, gpus=2),
        [Run("f1", "free", "n0", (0,), start_s=300.0), Run("f2", "free", "n0", (1,), start_s=300.0)],
        ("p", "prod", 1000),
        ("f1",),
        ("f1",),
        id="equal-surplus-equal-start-position",
    ),
    pytest.param(
        one_gpu_nodes(1, gpus=2),
        # equal surplus (r = 700 both) but f2 started later (it ran 100 s before an eviction)
        [
            Run("f1", "free", "n0", (0,), start_s=300.0),
            Run("f2", "free", "n0", (1,), start_s=400.0, ran_before_s=100.0),
        ],
        ("p", "prod", 1000),
        ("f2",),
        ("f2",),
        id="equal-surplus-most-recent-first",
    ),
    pytest.param(
        one_gpu_nodes(1, gpus=2),
        # f1 r = 1000 (surplus 0.5), f2 r = 600 (surplus 0.1, started last)
        [Run("f1", "free", "n0", (0,), start_s=0.0), Run("f2", "free", "n0", (1,), start_s=400.0)],
        ("p", "prod", 1000),
        ("f1",),
        ("f2",),
        id="largest-surplus-vs-most-recent",
    ),
    pytest.param(
        one_gpu_nodes(1, gpus=2),
        # batch with more surplus (r = 1000, +0.1) than free (r = 550, +0.05): lowest class first
        [Run("b1", "batch", "n0", (0,), start_s=0.0), Run("f1", "free", "n0", (1,), start_s=450.0)],
        ("p", "prod", 1000),
        ("f1",),
        ("f1",),
        id="lowest-class-first",
    ),
    pytest.param(
        [gpu_node("n0", gpus=1)],
        # four quarter-GPU free pods; a whole-GPU pod needs all four gone
        [Run(f"f{i}", "free", "n0", (0,), milli=250, start_s=100.0 * i) for i in range(4)],
        ("p", "prod", 1000),
        ("f0", "f1", "f2", "f3"),
        ("f3", "f2", "f1", "f0"),
        id="multi-victim-needed",
    ),
    pytest.param(
        [gpu_node("n0", gpus=1)],
        # half a GPU wanted: two quarter pods suffice; qos-driven takes the largest surplus (f0, f1)
        [Run(f"f{i}", "free", "n0", (0,), milli=250, start_s=100.0 * i) for i in range(4)],
        ("p", "prod", 500),
        ("f0", "f1"),
        ("f3", "f2"),
        id="stop-as-soon-as-it-fits",
    ),
    pytest.param(
        [gpu_node("n0", gpus=1), gpu_node("n1", gpus=1)],
        [Run("b1", "batch", "n0", (0,), start_s=0.0), Run("f1", "free", "n1", (0,), start_s=0.0)],
        ("p", "prod", 1000),
        ("f1",),
        ("f1",),
        id="node-with-the-lowest-class",
    ),
    pytest.param(
        [gpu_node("n0", gpus=1), gpu_node("n1", gpus=2)],
        # n0: one free pod; n1: two free pods on device 0 (half each) + a prod pod on device 1
        [
            Run("fa", "free", "n0", (0,), start_s=0.0),
            Run("fb", "free", "n1", (0,), milli=500, start_s=0.0),
            Run("fc", "free", "n1", (0,), milli=500, start_s=0.0),
            Run("pp", "prod", "n1", (1,), start_s=0.0),
        ],
        ("p", "prod", 1000),
        ("fa",),
        ("fa",),
        id="fewest-victims",
    ),
]


@pytest.mark.parametrize(("nodes", "running", "pending", "want_qos", "want_priority"), VICTIM_ROWS)
def test_victims(
    nodes: list[NodeView],
    running: list[Run],
    pending: tuple[str, str, int],
    want_qos: tuple[str, ...],
    want_priority: tuple[str, ...],
) -> None:
    got_qos = _preempt(QosDrivenPolicy(config=CONFIG), scene(nodes, running, pending))
    got_priority = _preempt(PriorityPolicy(config=CONFIG), scene(nodes, running, pending))
    assert got_qos == want_qos
    assert got_priority == want_priority


def test_same_class_never_preempted_by_priority() -> None:
    sc = scene(one_gpu_nodes(1), [Run("p1", "prod", "n0", (0,))], ("p2", "prod", 1000))
    assert _preempt(PriorityPolicy(config=CONFIG), sc) == ()


def test_prod_never_a_qos_driven_victim() -> None:
    # Even a prod pod that has run its whole life (A = 1) has no slack for any pause > 0.
    sc = scene(one_gpu_nodes(1), [Run("p1", "prod", "n0", (0,))], ("p2", "prod", 1000))
    assert _preempt(QosDrivenPolicy(config=CONFIG), sc) == ()


def test_preemptor_with_slack_waits() -> None:
    # A free pod that ran 900 s of its 1000 s (evicted just now) has slack for 60 s: it waits.
    running = [Run("f1", "free", "n0", (0,), start_s=0.0)]
    sc = scene(one_gpu_nodes(1), running, ("f2", "free", 1000), pending_submit_s=0.0)
    i = sc.ledger.index["f2"]
    sc.ledger.running_s[i] = 900.0
    assert _preempt(QosDrivenPolicy(config=CONFIG), sc) == ()
    relaxed = SchedulerConfig(pause=CONFIG.pause, retry_interval_s=None, require_need=False)
    assert _preempt(QosDrivenPolicy(config=relaxed), sc) == ("f1",)


def test_state_is_restored_after_a_decision() -> None:
    running = [Run(f"f{i}", "free", "n0", (0,), milli=250, start_s=100.0 * i) for i in range(4)]
    sc = scene([gpu_node("n0", gpus=1)], running, ("p", "prod", 500))
    before = sc.state.gpu_used_milli.copy(), sorted(a.uid for a in sc.state.allocations())
    assert _preempt(QosDrivenPolicy(config=CONFIG), sc)
    assert np.array_equal(sc.state.gpu_used_milli, before[0])
    assert sorted(a.uid for a in sc.state.allocations()) == before[1]


def test_ledger_facts_by_hand() -> None:
    running = [Run("f1", "free", "n0", (0,), start_s=400.0, submit_s=100.0, ran_before_s=50.0)]
    sc = scene(one_gpu_nodes(1), running, ("p", "prod", 1000), pending_submit_s=700.0)
    facts = ledger_facts(sc.ledger, NOW, PauseModel(floor_s=10.0, safety=2.0))
    # f1: r = 600 + 50 = 650, t = 900, A = 0.7222, surplus 0.2222; waited 900 - 650 = 250 in one
    # episode; p: waited 300 in one episode (prod class). Pause free = 2 * 250 = 500 → slack?
    # 650 >= 0.5 (900 + 500) = 700 → no.
    np.testing.assert_allclose(facts.qos[0], 650 / 900, rtol=1e-12)
    np.testing.assert_allclose(facts.surplus[0], 650 / 900 - 0.5, rtol=1e-12)
    np.testing.assert_allclose(facts.wait_by_rank_s, [600.0, 10.0, 500.0], rtol=1e-12)
    assert not facts.slack[0]
    assert facts.qos[1] == 0.0
    assert not facts.slack[1]


def test_order_hook_on_a_ledger() -> None:
    running = [Run("f1", "free", "n0", (0,))]
    sc = scene(one_gpu_nodes(1), running, ("p", "prod", 1000))
    lg = sc.ledger
    # two more pending pods: a free one with QoS 0.9 and a free one with QoS 0.2 (same submit)
    ids = [lg.index["f1"], lg.index["p"]]
    lg.status[ids[0]] = PENDING
    lg.running_s[ids[0]] = 900.0
    lg.run_start_s[ids[0]] = np.nan
    assert QosDrivenPolicy(config=CONFIG).order(ids, lg, NOW) == [ids[1], ids[0]]
    assert PriorityPolicy(config=CONFIG).order(ids, lg, NOW) == [ids[1], ids[0]]


# ---------------------------------------------------------------------------------------------- properties
CLASSES = ("prod", "batch", "free")
TARGET = {"prod": 1.0, "batch": 0.9, "free": 0.5}
RANK = {"prod": 0, "batch": 1, "free": 2}


@st.composite
def scenes(draw: st.DrawFn) -> Scene:
    n_nodes = draw(st.integers(1, 3))
    nodes = [gpu_node(f"n{i}", gpus=2) for i in range(n_nodes)]
    free = {(i, d): 1000 for i in range(n_nodes) for d in range(2)}
    running: list[Run] = []
    for k in range(draw(st.integers(0, 8))):
        slot = draw(st.sampled_from(sorted(free)))
        milli = draw(st.sampled_from([250, 500, 1000]))
        if free[slot] < milli:
            continue
        free[slot] -= milli
        start = draw(st.floats(0.0, 990.0))
        ran = draw(st.floats(0.0, start))
        running.append(
            Run(f"r{k}", draw(st.sampled_from(CLASSES)), f"n{slot[0]}", (slot[1],), milli, 0.0, start, ran)
        )
    cls = draw(st.sampled_from(CLASSES))
    milli = draw(st.sampled_from([250, 500, 1000]))
    return scene(nodes, running, ("pend", cls, milli))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from(["qos-driven", "priority"]))
def test_victim_properties(sc: Scene, which: str) -> None:
    policy: PreemptivePolicy = (QosDrivenPolicy if which == "qos-driven" else PriorityPolicy)(config=CONFIG)
    victims = _preempt(policy, sc)
    lg = sc.ledger
    running = {lg.pods[i].uid for i in np.flatnonzero(lg.status == RUNNING)}
    assert set(victims) <= running
    assert len(set(victims)) == len(victims)
    if not victims:
        return
    nodes = {sc.state.allocation(u).node for u in victims}  # type: ignore[union-attr]
    assert len(nodes) == 1
    row = sc.state.node_index[nodes.pop()]
    removed = [sc.state.remove(u) for u in victims]
    ev = policy.evaluate(sc.state, sc.pod, np.array([row]))
    assert best_candidate(ev) is not None  # the pod fits once they are gone
    for a in removed:
        assert a is not None
        sc.state.add(a)
        assert best_candidate(policy.evaluate(sc.state, sc.pod, np.array([row]))) is None  # irredundant
        sc.state.remove(a.uid)
    pr = RANK[sc.pod.qos_class]
    for u in victims:
        i = lg.index[u]
        r = NOW - lg.run_start_s[i] + lg.running_s[i]
        if which == "priority":
            assert RANK[lg.pods[i].qos_class] > pr
        else:  # never below target after the predicted pause
            assert has_slack(r, NOW, PAUSE, TARGET[lg.pods[i].qos_class])
            assert r / (NOW + PAUSE) >= TARGET[lg.pods[i].qos_class] - 1e-12


def test_registered_names() -> None:
    from qosched.policies.placement.base import make_policy

    assert isinstance(make_policy("priority"), PriorityPolicy)
    assert isinstance(make_policy("qos-driven"), QosDrivenPolicy)
    assert make_policy("qos-driven").name == "qos-driven"


@pytest.mark.parametrize(
    "kwargs",
    [{"floor_s": -1.0}, {"safety": 0.0}, {"floor_s": math.inf}],
    ids=["negative-floor", "zero-safety", "infinite-floor"],
)
def test_pause_model_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="PauseModel"):
        PauseModel(**kwargs)


def test_scheduler_config_validation() -> None:
    with pytest.raises(ValueError, match="retry_interval_s"):
        SchedulerConfig(retry_interval_s=0.0)
