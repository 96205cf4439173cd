"""``priority`` vs ``qos-driven`` through the what-if replay, on toy clusters built so that the
outcome follows from the mechanism and can be worked out by hand.

Rotating evictions (fairness within a class). One node, 4 whole GPUs, 4 ``free`` pods that never
leave (submitted at 0), and a ``prod`` pod arriving every 100 s (t = 100 … 1000) for 50 s; the
horizon is 1050 s. Every prod arrival needs one free pod evicted (worst fit has nowhere else to go).

- ``priority`` evicts the most recently started free pod. After the first eviction (a 4-way tie,
  broken by position: f0) that is always f0, which restarts when the prod pod leaves: f0 loses
  10 × 50 s, the others nothing. QoS at 1050 s: f0 = 550/1050, others 1.
- ``qos-driven`` evicts the free pod with the largest QoS surplus, so the pod just evicted (lower
  availability) is spared next time: the 10 evictions rotate over the 4 pods.

Total eviction time is the same (10 × 50 s), so mean free QoS is equal; its spread is not: the
Gini of priority is (2 · 3 · (1 − 550/1050)) / (2 · 4² · mean), qos-driven's strictly lower.
Prod is never delayed in either (each free pod keeps its slack: availability ≥ 0.75 ≫ 0.5).

The trade-off (a young victim). One GPU, a free pod that started 10 s before a prod pod arrives:
it has no slack then (10 < 0.5 · (10 + 60), the predicted pause being the 60 s floor), so
``qos-driven`` makes the prod pod wait; at the next retry (t = 70 s, the 60 s retry interval)
the free pod can afford the pause (70 ≥ 0.5 · (70 + 60)) and is evicted. ``priority`` evicts it
at once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qosched.policies.fairness.gini import gini
from qosched.policies.placement.baselines.kube import WorstFitPolicy
from qosched.policies.placement.testing import gpu_node
from qosched.policies.preemption import (
    PriorityPolicy,
    QosDrivenHooks,
    QosDrivenPolicy,
    QosDrivenRule,
    preemptive_qosched,
)
from qosched.policies.simulator.metrics import pod_outcomes, summarize
from qosched.policies.simulator.replay import (
    PolicyScheduler,
    ReplayConfig,
    ReplayResult,
    build_scheduler,
    replay,
)
from qosched.policies.simulator.scenarios import Workload
from qosched.policies.types import PodDemand


def _pod(uid: str, cls: str) -> PodDemand:
    return PodDemand(uid=uid, name=uid, qos_class=cls, gpu_milli=1000, cpu_milli=100, memory_mib=100.0)


def _run(workload: Workload, policy: object, horizon_s: float) -> ReplayResult:
    return replay(
        workload,
        PolicyScheduler(policy),  # type: ignore[arg-type]
        np.random.default_rng(0),
        lookup=lambda a, m: None,
        device_memory=lambda a: math.inf,
        config=ReplayConfig(horizon_s=horizon_s, simulate_latency=False),
    )


def rotating_workload() -> Workload:
    free = [_pod(f"f{i}", "free") for i in range(4)]
    prod = [_pod(f"p{k}", "prod") for k in range(10)]
    arrival = [0.0] * 4 + [100.0 * (k + 1) for k in range(10)]
    duration = [math.inf] * 4 + [50.0] * 10
    return Workload.build([gpu_node("n0", gpus=4)], free + prod, arrival, duration)


def _free_qos(result: ReplayResult) -> np.ndarray:
    out = pod_outcomes(result)
    free = result.ledger.class_name == "free"
    return np.asarray(out.qos[free])


def test_priority_always_evicts_the_most_recent() -> None:
    result = _run(rotating_workload(), PriorityPolicy(), 1050.0)
    np.testing.assert_allclose(_free_qos(result), [550 / 1050, 1.0, 1.0, 1.0], rtol=1e-12)
    assert result.ledger.preemptions[:4].tolist() == [10, 0, 0, 0]


def test_qos_driven_rotates_evictions_and_is_fairer() -> None:
    wl = rotating_workload()
    pr = _run(wl, PriorityPolicy(), 1050.0)
    qd = _run(wl, QosDrivenPolicy(), 1050.0)
    q_pr, q_qd = _free_qos(pr), _free_qos(qd)
    # same total loss → same mean; rotation → strictly lower Gini
    np.testing.assert_allclose(q_qd.mean(), q_pr.mean(), rtol=1e-12)
    mean = (550 / 1050 + 3) / 4
    want_gini_pr = 2 * 3 * (1 - 550 / 1050) / (2 * 16 * mean)
    np.testing.assert_allclose(gini(q_pr), want_gini_pr, rtol=1e-12)
    assert gini(q_qd) < gini(q_pr)
    assert gini(q_qd) < 0.25 * gini(q_pr)
    assert max(qd.ledger.preemptions[:4]) - min(qd.ledger.preemptions[:4]) <= 1  # spread evenly
    # prod never waits under either
    for r in (pr, qd):
        s = summarize(r)
        assert s["mean_qos_by_class"]["prod"] == pytest.approx(1.0, abs=1e-12)
        assert s["gini_by_class"]["free"] == pytest.approx(gini(_free_qos(r)), abs=1e-6)


def test_young_victim_is_evicted_only_once_it_has_slack() -> None:
    wl = Workload.build(
        [gpu_node("n0", gpus=1)],
        [_pod("f", "free"), _pod("p", "prod")],
        [0.0, 10.0],
        [100.0, 100.0],
    )
    pr = _run(wl, PriorityPolicy(), 300.0)
    qd = _run(wl, QosDrivenPolicy(), 300.0)
    assert pr.ledger.preemptions.tolist() == [1, 0]
    assert pr.ledger.first_start_s[1] == 10.0
    assert qd.ledger.preemptions.tolist() == [1, 0]
    assert qd.ledger.first_start_s[1] == 70.0  # waited until the victim had slack
    # the victim (100 s of work) ran 0-70 and 170-200: QoS 100/200 = 0.5, on target
    np.testing.assert_allclose(pod_outcomes(qd).qos[0], 0.5, rtol=1e-12)
    # Pods below target, per class: under qos-driven the prod pod waited 60 s (100 s of work by
    # t = 170 s: QoS 100/160 < 1); the victim ends exactly on its target 0.5 under both rules.
    s_qd, s_pr = summarize(qd), summarize(pr)
    assert s_qd["below_target_by_class"] == {"free": 0, "prod": 1}
    assert s_pr["below_target_by_class"] == {"free": 0, "prod": 0}
    assert s_pr["penalty_by_class"] == {"free": 0.0, "prod": 0.0}
    assert s_qd["penalty_by_class"]["prod"] > 0.0
    assert s_qd["penalty_by_class"]["free"] == 0.0
    assert sum(s_qd["penalty_by_class"].values()) == pytest.approx(s_qd["penalty"], rel=1e-5)


@pytest.mark.parametrize(("name", "cls"), [("priority", PriorityPolicy), ("qos-driven", QosDrivenPolicy)])
def test_build_scheduler_resolves_the_contract_names(name: str, cls: type) -> None:
    sched = build_scheduler(name)
    assert isinstance(sched.policy, cls)
    assert sched.can_preempt
    assert sched.retry_interval_s == 60.0
    result = replay(
        rotating_workload(),
        sched,
        np.random.default_rng(0),
        lookup=lambda a, m: None,
        device_memory=lambda a: math.inf,
        config=ReplayConfig(horizon_s=1050.0, simulate_latency=False),
    )
    assert result.policy == name
    assert int(result.ledger.preemptions.sum()) == 10


class _HookedWorstFit(QosDrivenHooks, WorstFitPolicy):
    """A placement policy made preemptive by the mixin (as ``qosched`` can be)."""


def test_hooks_mixin_makes_a_placement_policy_qos_driven() -> None:
    policy = _HookedWorstFit(name="hooked")
    assert policy.retry_interval_s == 60.0
    assert isinstance(policy.rule, QosDrivenRule)
    hooked = _run(rotating_workload(), policy, 1050.0)
    plain = _run(rotating_workload(), QosDrivenPolicy(), 1050.0)
    assert hooked.ledger.preemptions.tolist() == plain.ledger.preemptions.tolist()
    np.testing.assert_allclose(_free_qos(hooked), _free_qos(plain), rtol=1e-12)


def test_preemptive_qosched_runs_the_same_rule() -> None:
    policy = preemptive_qosched()
    assert policy.name == "qosched"
    assert isinstance(policy.rule, QosDrivenRule)
    result = _run(rotating_workload(), policy, 1050.0)
    assert int(result.ledger.preemptions.sum()) == 10
    assert max(result.ledger.preemptions[:4]) - min(result.ledger.preemptions[:4]) <= 1


def _fgd_mode(workload: Workload) -> Workload:
    """The same pods with no departure (FGD mode: nobody leaves)."""
    return Workload.build(workload.nodes, workload.pods, workload.arrival_s, None)


@pytest.mark.parametrize(
    ("departs", "preempt", "want_preemptive"),
    [(True, None, True), (False, None, False), (True, False, False), (False, True, True)],
    ids=["departures", "fgd-mode", "forced-off", "forced-on"],
)
def test_build_scheduler_makes_qosched_preemptive_when_pods_leave(
    departs: bool, preempt: bool | None, want_preemptive: bool
) -> None:
    wl = rotating_workload() if departs else _fgd_mode(rotating_workload())
    sched = build_scheduler("qosched", workload=wl, preempt=preempt)
    assert sched.name == "qosched"
    assert sched.can_preempt is want_preemptive
    assert isinstance(sched.policy, QosDrivenPolicy) is want_preemptive
    assert sched.retry_interval_s == (60.0 if want_preemptive else None)


def test_preemptive_qosched_from_build_scheduler_rotates_like_qos_driven() -> None:
    """On one node the host choice is moot: the replay through ``build_scheduler("qosched")`` must
    give qos-driven's hand-worked outcome (10 evictions spread over the 4 free pods, same mean
    free QoS as priority's 550/1050 + 3 over 4), and its workload learner sees every pod."""
    wl = rotating_workload()
    sched = build_scheduler("qosched", workload=wl)
    result = replay(
        wl,
        sched,
        np.random.default_rng(0),
        lookup=lambda a, m: None,
        device_memory=lambda a: math.inf,
        config=ReplayConfig(horizon_s=1050.0, simulate_latency=False),
    )
    preemptions = result.ledger.preemptions[:4]
    assert int(preemptions.sum()) == 10
    assert max(preemptions) - min(preemptions) <= 1
    np.testing.assert_allclose(_free_qos(result).mean(), (550 / 1050 + 3) / 4, rtol=1e-12)
    assert summarize(result)["mean_qos_by_class"]["prod"] == pytest.approx(1.0, abs=1e-12)
    learner = sched.policy.placement.learner  # type: ignore[attr-defined]
    assert learner is not None
    assert learner.seen == len(wl)


def test_qosched_in_fgd_mode_never_evicts() -> None:
    """Nobody leaves: the 4 free pods keep the GPUs and every prod pod fails (none is evicted)."""
    wl = _fgd_mode(rotating_workload())
    result = replay(
        wl,
        build_scheduler("qosched", workload=wl),
        np.random.default_rng(0),
        lookup=lambda a, m: None,
        device_memory=lambda a: math.inf,
        config=ReplayConfig(horizon_s=1050.0, simulate_latency=False),
    )
    assert int(result.ledger.preemptions.sum()) == 0
    assert summarize(result)["pods_failed"] == 10
