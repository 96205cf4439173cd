"""The fast victim search (and the replay's memory of unfit requests) decide as before.

The replay's victim search keeps, per (cluster version, instant, preemptor kind), the eligible
victims and what evicting them frees (``VictimPool``), answers repeated plain requests that
found nothing from a miss set, sums freed milli-GPU from device bit masks, and visits candidate
nodes by a lower bound of the rule's cost (branch and bound). None of that may change a
decision. The reference below is the previous implementation, verbatim: every call rebuilds
the running pods' facts and resources, tests every node with ``np.add.at`` over device tuples,
and examines every pre-ranked node. Both replay the same seeded, oversubscribed workload with
departures (three classes, fractional, whole and multi-GPU pods, two GPU models, a ``gpu_spec``
restriction); the ledgers (who ran where, when, how often evicted) must be identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.placement.base import PlacementPolicy, make_policy
from qosched.policies.placement.constraints import gather
from qosched.policies.placement.testing import gpu_node
from qosched.policies.preemption import (
    PriorityPolicy,
    PriorityRule,
    QosDrivenPolicy,
    QosDrivenRule,
    SchedulerConfig,
    SearchConfig,
    VictimChoice,
    fits_with_policy,
    minimal_subset,
)
from qosched.policies.preemption.base import _RUNNING, _Take
from qosched.policies.preemption.room import NodeRoom, VictimResources
from qosched.policies.preemption.search import _RESOLVABLE, _policy_check
from qosched.policies.preemption.victims import Preemptor, VictimFacts, VictimRule
from qosched.policies.simulator.replay import PolicyScheduler, ReplayConfig, ReplayResult, replay
from qosched.policies.simulator.scenarios import Workload
from qosched.policies.state import ClusterState
from qosched.policies.types import GPU_MILLI_PER_DEVICE, SHARING_MODES, NodeView, PodDemand

_EXCLUSIVE = SHARING_MODES.index("exclusive")


# ------------------------------------------------------------------ the previous implementation
def reference_fits_if_all_gone(state: ClusterState, pod: PodDemand, victims: VictimResources) -> np.ndarray:
    n = state.n_nodes
    cpu = (
        state.cpu_cap_milli
        - state.cpu_used_milli
        + np.bincount(victims.row, weights=victims.cpu_milli, minlength=n)
    )
    mem = (
        state.mem_cap_mib
        - state.mem_used_mib
        + np.bincount(victims.row, weights=victims.memory_mib, minlength=n)
    )
    ok = (cpu >= pod.cpu_milli) & (mem + 1e-6 >= pod.memory_mib)
    need, milli = (
        (pod.gpu_count, pod.milli_per_device) if pod.gpu_milli > 0 else ((1 if pod.is_inference else 0), 0)
    )
    if need == 0:
        return np.asarray(ok)
    free = state.free_gpu_milli().astype(np.int64)
    has_gpu = victims.milli > 0
    if has_gpu.any():
        gpu_idx = np.flatnonzero(has_gpu).tolist()
        counts = np.fromiter((len(victims.devices[i]) for i in gpu_idx), dtype=np.int64, count=len(gpu_idx))
        rows = np.repeat(victims.row[has_gpu], counts)
        devs = np.fromiter(
            (d for i in gpu_idx for d in victims.devices[i]), dtype=np.int64, count=int(counts.sum())
        )
        np.add.at(free, (rows, devs), np.repeat(victims.milli[has_gpu], counts))
    exclusive = (state.sharing_code == _EXCLUSIVE)[:, None]
    usable = state.dev_exists & np.where(exclusive, free >= GPU_MILLI_PER_DEVICE, free >= milli)
    return np.asarray(ok & (usable.sum(axis=1) >= need))


def reference_search_victims(
    state: ClusterState,
    pod: PodDemand,
    policy: PlacementPolicy,
    rule: VictimRule,
    preemptor: Preemptor,
    uids: Sequence[str],
    facts: VictimFacts,
    resources: VictimResources,
    cfg: SearchConfig,
) -> VictimChoice | None:
    if not rule.may_preempt(preemptor) or len(facts) == 0:
        return None
    eligible = np.flatnonzero(rule.eligible(preemptor, facts))
    if eligible.size == 0:
        return None
    res = VictimResources(
        row=resources.row[eligible],
        cpu_milli=resources.cpu_milli[eligible],
        memory_mib=resources.memory_mib[eligible],
        milli=resources.milli[eligible],
        devices=[resources.devices[i] for i in eligible.tolist()],
    )
    n = state.n_nodes
    has_victim = np.bincount(res.row, minlength=n) > 0
    candidate = has_victim & reference_fits_if_all_gone(state, pod, res)
    if not candidate.any():
        return None
    candidate &= _RESOLVABLE[gather(state, pod, np.arange(n, dtype=np.int64)).reason.astype(np.int64)]
    rows = np.flatnonzero(candidate)
    if rows.size == 0:
        return None
    efacts = facts.take(eligible)
    lowest = np.full(n, -1, dtype=np.int64)
    np.maximum.at(lowest, res.row, efacts.rank.astype(np.int64))
    room = state.free_gpu_milli().sum(axis=1) + np.bincount(
        res.row, weights=res.milli * np.fromiter((len(d) for d in res.devices), dtype=np.int64), minlength=n
    )
    pre = np.lexsort((rows, -room[rows], -lowest[rows]))
    rows = rows[pre[: cfg.max_nodes]]
    order_by_row = np.argsort(res.row, kind="stable")
    sorted_rows = res.row[order_by_row]
    options: list[tuple[tuple[float, ...], int, list[int]]] = []
    for row in rows.tolist():
        lo, hi = np.searchsorted(sorted_rows, [row, row + 1])
        local = order_by_row[lo:hi]
        node_res = VictimResources(
            row=res.row[local],
            cpu_milli=res.cpu_milli[local],
            memory_mib=res.memory_mib[local],
            milli=res.milli[local],
            devices=[res.devices[i] for i in local.tolist()],
        )
        node_facts = efacts.take(local)
        room_test = NodeRoom(state, row, pod, node_res)
        chosen = minimal_subset(rule.order(node_facts).tolist(), room_test.fits)
        if chosen is None or not chosen:
            continue
        cost = (
            *rule.cost(node_facts.take(np.array(chosen))),
            -float(room_test.free_gpu_after(chosen)),
            float(row),
        )
        options.append((cost, row, [int(local[i]) for i in chosen]))
    options.sort(key=lambda o: o[0])
    eligible_uids = [uids[i] for i in eligible.tolist()]
    for cost, row, chosen in options[: cfg.confirm_tries]:
        names = [eligible_uids[i] for i in chosen]
        if fits_with_policy(state, policy, pod, row, names):
            return VictimChoice(row=row, uids=tuple(names), cost=cost)
        lo, hi = np.searchsorted(sorted_rows, [row, row + 1])
        local = order_by_row[lo:hi]
        node_facts = efacts.take(local)
        local_uids = [eligible_uids[int(i)] for i in local.tolist()]
        again = minimal_subset(
            rule.order(node_facts).tolist(), _policy_check(state, policy, pod, row, local_uids)
        )
        if again:
            names = [local_uids[i] for i in again]
            cost2 = (*rule.cost(node_facts.take(np.array(again))), math.nan, float(row))
            return VictimChoice(row=row, uids=tuple(names), cost=cost2)
    return None


class _Reference:
    """The previous ``PreemptivePolicy.preempt``: everything rebuilt on every call."""

    def preempt(self, state: ClusterState, pod: PodDemand, ledger: Any, now_s: float) -> tuple[str, ...]:
        me: Any = self
        i = ledger.index.get(pod.uid)
        if i is None:
            return ()
        facts = me.facts(ledger, now_s)
        preemptor = Preemptor(rank=int(ledger.rank[i]), needs=not bool(facts.slack[i]))
        if not me.rule.may_preempt(preemptor):
            return ()
        running = np.flatnonzero(ledger.status == _RUNNING)
        if running.size == 0:
            return ()
        static = me._static_of(ledger)
        vfacts = VictimFacts(
            rank=np.asarray(ledger.rank[running], dtype=np.int64),
            surplus=facts.surplus[running],
            slack=facts.slack[running],
            start_s=np.asarray(ledger.run_start_s[running], dtype=np.float64),
        )
        resources = VictimResources(
            row=np.asarray(ledger.node_row[running], dtype=np.int64),
            cpu_milli=static.cpu_milli[running],
            memory_mib=static.memory_mib[running],
            milli=static.milli[running],
            devices=list(_Take(ledger.devices, running)),
        )
        choice = reference_search_victims(
            state,
            pod,
            me.placement,
            me.rule,
            preemptor,
            _Take(static.uids, running),
            vfacts,
            resources,
            me.config.search,
        )
        return () if choice is None else choice.uids


class RefPriority(_Reference, PriorityPolicy):
    pass


class RefQosDriven(_Reference, QosDrivenPolicy):
    pass


# ------------------------------------------------------------------ the workload
def medium_workload(seed: int, n_pods: int = 700) -> Workload:
    """16 nodes (T4 x 4, V100 x 8, one exclusive), pods every 0.5 s, exponential lifetimes."""
    rng = np.random.default_rng(seed)
    nodes: list[NodeView] = []
    for i in range(16):
        if i % 3 == 2:
            nodes.append(
                gpu_node(
                    f"v{i}",
                    gpus=8,
                    accelerator="nvidia-v100",
                    gpu_model="V100M32",
                    cpu_milli=64_000,
                    memory_mib=256_000,
                )
            )
        else:
            sharing = "exclusive" if i == 0 else "time-slicing"
            nodes.append(gpu_node(f"t{i}", gpus=4, cpu_milli=32_000, memory_mib=128_000, sharing=sharing))
    pods: list[PodDemand] = []
    for k in range(n_pods):
        cls = str(rng.choice(["prod", "batch", "free"], p=[0.35, 0.25, 0.4]))
        gpu = int(
            rng.choice(
                [0, 100, 250, 500, 700, 1000, 2000, 4000], p=[0.1, 0.15, 0.2, 0.2, 0.1, 0.15, 0.07, 0.03]
            )
        )
        spec = ("V100M32",) if rng.random() < 0.05 else ()
        pods.append(
            PodDemand(
                uid=f"p{k}",
                name=f"p{k}",
                qos_class=cls,
                gpu_milli=gpu,
                cpu_milli=int(rng.choice([500, 1000, 2000, 4000, 8000])),
                memory_mib=float(rng.choice([1024, 2048, 8192, 16384])),
                gpu_spec=spec,
            )
        )
    arrival = 0.5 * np.arange(n_pods)
    duration = np.where(rng.random(n_pods) < 0.1, np.inf, rng.exponential(250.0, n_pods) + 1.0)
    return Workload.build(nodes, pods, arrival, duration)


class _Uncached(PolicyScheduler):
    """The scheduler without its memory of requests no node fitted (the reference side)."""

    def place(self, state: ClusterState, pod: PodDemand) -> Any:
        self._unfit = None
        return super().place(state, pod)


def _run(workload: Workload, policy: Any, *, reference: bool = False) -> ReplayResult:
    own = getattr(policy, "observe", None)
    cls = _Uncached if reference else PolicyScheduler
    return replay(
        workload,
        cls(policy, candidates="fit", observe=own),
        np.random.default_rng(0),
        lookup=lambda a, m: None,
        device_memory=lambda a: math.inf,
        config=ReplayConfig(horizon_s=600.0, simulate_latency=False),
    )


def _assert_same(a: ReplayResult, b: ReplayResult) -> None:
    la, lb = a.ledger, b.ledger
    for field in ("status", "node_row", "preemptions", "failures", "attempts"):
        assert np.array_equal(getattr(la, field), getattr(lb, field)), field
    for field in ("first_start_s", "end_s", "run_start_s", "running_s", "remaining_s"):
        assert np.array_equal(getattr(la, field), getattr(lb, field), equal_nan=True), field
    assert list(la.devices) == list(lb.devices)
    assert a.stats == b.stats


SMALL_SEARCH = SearchConfig(max_nodes=3, confirm_tries=1)


def _qosched(config: SchedulerConfig, ref: bool) -> Any:
    cls = RefQosDriven if ref else QosDrivenPolicy
    return cls(config=config, placement=make_policy("qosched"), name="qosched")


class _Unkeyed:
    """A rule without the keyed extras (the search then works node by node)."""

    def __init__(self, rule: Any) -> None:
        self._rule = rule
        self.name = rule.name
        self.may_preempt, self.eligible, self.order, self.cost = (
            rule.may_preempt,
            rule.eligible,
            rule.order,
            rule.cost,
        )


def _unkeyed(policy: Any) -> Any:
    policy.rule = _Unkeyed(policy.rule)
    return policy


CASES = {
    "priority": lambda ref: (RefPriority if ref else PriorityPolicy)(),
    "qos-driven": lambda ref: (RefQosDriven if ref else QosDrivenPolicy)(),
    "qos-driven-own-class-small-search": lambda ref: (RefQosDriven if ref else QosDrivenPolicy)(
        config=SchedulerConfig(victims_any_class=False, search=SMALL_SEARCH)
    ),
    "priority-small-search": lambda ref: (RefPriority if ref else PriorityPolicy)(
        config=SchedulerConfig(search=SMALL_SEARCH)
    ),
    "qosched": lambda ref: _qosched(SchedulerConfig(), ref),
    "unkeyed-rule": lambda ref: _unkeyed((RefQosDriven if ref else QosDrivenPolicy)()),
    "best-fit-no-preemption": lambda ref: make_policy("best-fit"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fast_search_replays_exactly_like_the_reference(case: str) -> None:
    wl = medium_workload(seed=11)
    fast_policy = CASES[case](False)
    fast = _run(wl, fast_policy)
    ref = _run(wl, CASES[case](True), reference=True)
    _assert_same(fast, ref)
    # The scene is contended enough to exercise the search: many preemption decisions, many
    # evictions, and pods that stay pending.
    assert int(fast.stats["failed_attempts"]) > 100
    if case != "best-fit-no-preemption":
        assert fast_policy.decisions > 200
        assert int(fast.ledger.preemptions.sum()) > 20


@settings(max_examples=200, deadline=None)
@given(
    rank=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    data=st.data(),
)
def test_cost_keys_give_the_rules_cost(rank: list[int], data: st.DataObject) -> None:
    """The keyed contract: cost(S) = column-wise max of the keys over S, |S| in the count column."""
    k = len(rank)
    surplus = data.draw(st.lists(st.floats(-1.0, 1.0), min_size=k, max_size=k))
    start = data.draw(st.lists(st.floats(0.0, 1e6), min_size=k, max_size=k))
    facts = VictimFacts(np.array(rank), np.array(surplus), np.ones(k, dtype=bool), np.array(start))
    subset = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True)))
    for rule in (PriorityRule(), QosDrivenRule()):
        keys = rule.cost_keys(facts)[subset]
        want = keys.max(axis=0)
        want[rule.victim_count_index] = len(subset)
        assert rule.cost(facts.take(subset)) == tuple(want.tolist())
