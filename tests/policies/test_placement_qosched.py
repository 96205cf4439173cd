"""The full ``qosched`` policy: score terms, workload mix, fairness hook, configuration."""

from __future__ import annotations

import numpy as np
import pytest

from qosched.policies.fairness.shares import FairnessSnapshot
from qosched.policies.placement.base import best_candidate, make_policy
from qosched.policies.placement.fgd.mix import WorkloadLearner, WorkloadMix
from qosched.policies.placement.qosched.config import QoschedConfig
from qosched.policies.placement.qosched.fairness_hook import FairnessInputs, SnapshotFairness
from qosched.policies.placement.qosched.policy import QoschedPolicy
from qosched.policies.placement.testing import (
    ProfileTable,
    gpu_node,
    inference_pod,
    plain_gpu_pod,
    state_with,
)
from qosched.policies.state import ServiceParams

TABLE = ProfileTable(
    {("nvidia-t4", "resnet50"): ServiceParams(service_ms=10.0, second_moment_ms2=100.0, memory_mib=1000.0)},
    {"nvidia-t4": 16_000.0},
)
POD = inference_pod("new", "resnet50", rate_rps=20.0, slo_ms=100.0, gpu_milli=100, qos_class="prod")


def cluster():
    nodes = [gpu_node("n0"), gpu_node("n1"), gpu_node("n2")]
    running = [
        (
            inference_pod("p0", "resnet50", rate_rps=30.0, slo_ms=40.0, gpu_milli=100, qos_class="prod"),
            "n0",
            (0,),
        ),
        (
            inference_pod("p1", "resnet50", rate_rps=50.0, slo_ms=40.0, gpu_milli=100, qos_class="prod"),
            "n1",
            (0,),
        ),
    ]
    return state_with(nodes, TABLE, running)


# Slack after placing POD (20 req/s), SLO of the co-located services 40 ms:
#  n0: ρ = 0.5, W = 10, R = 20 → min((40 − 20)/40, (100 − 20)/100) = 0.5
#  n1: ρ = 0.7, W = 23.33, R = 33.33 → (40 − 33.33)/40 = 0.1667
#  n2: alone, M/D/1: W = 0.02·100/(2·0.8) = 1.25, R = 11.25 → 0.8875
SLACK = [0.5, (40 - (10 + 10 * 0.7 / 0.3)) / 40, 0.8875]


def test_slack_term_without_fragmentation_or_fairness() -> None:
    # Packing off (``gpu_consolidation``, default ``pack``: it would take n0's used GPU; see
    # test_qosched_consolidation.py), so the slack term decides.
    ev = make_policy("qosched", gpu_consolidation="spread").evaluate(cluster(), POD, np.arange(3))
    np.testing.assert_allclose(ev.extras["slack_frac"], SLACK, rtol=1e-9)
    np.testing.assert_allclose(ev.extras["frag_delta_milli"], 0.0)  # the pod's own shape fragments nothing
    np.testing.assert_array_equal(ev.extras["fairness"], 0.0)
    assert best_candidate(ev) == 2


def test_fragmentation_term_follows_the_mix() -> None:
    # Mix of whole-GPU pods: taking 100 milli of the idle GPU on n2 strands the other 900 for
    # them (F: 0 → 900, ΔF = +900). On n0 and n1 the GPU is already shared, all its free milli
    # (900 and 900) is fragment, and the pod takes 100 of it: ΔF = −100. Score f(ΔF) + slack with
    # f FGD's integer score in GPUs (issue 18): ⌊100·sigmoid(0.1)⌋ = 52 → +0.08, ⌊28.9⌋ = 28 →
    # −0.88 (it was −ΔF/1000: +0.1, −0.9; same choice). Balance off to check the two terms alone.
    mix = WorkloadMix.of([(0, 1000, 1)], [1.0])
    config = QoschedConfig(balance_weight=0.0)
    policy = make_policy("qosched", mix=mix, config=config, gpu_consolidation="spread")  # no packing term
    ev = policy.evaluate(cluster(), POD, np.arange(3))
    np.testing.assert_allclose(ev.extras["frag_delta_milli"], [-100.0, -100.0, 900.0])
    np.testing.assert_allclose(ev.raw_score, np.add(SLACK, [0.08, 0.08, -0.88]), rtol=1e-9)
    assert best_candidate(ev) == 0


def test_own_learner_is_fed_by_observe() -> None:
    policy = QoschedPolicy()
    mix = policy.current_mix()
    assert mix is not None
    assert mix.empty
    for i in range(3):
        policy.observe(plain_gpu_pod(f"w{i}", gpu_milli=1000))
    ev = policy.evaluate(cluster(), POD, np.arange(3))
    np.testing.assert_allclose(ev.extras["frag_delta_milli"], [-100.0, -100.0, 900.0])


def test_a_fixed_mix_and_a_learner_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        make_policy("qosched", mix=WorkloadMix.of([(0, 100, 1)], [1]), learner=WorkloadLearner())


def test_plain_pods_are_placed_by_fragmentation() -> None:
    mix = WorkloadMix.of([(30_000, 1000, 1)], [1.0])
    # A 10,000-CPU pod leaves 22,000 < 30,000 CPU, so the mix's pods no longer fit anywhere it
    # goes. On the idle n2 that strands a whole usable GPU (F: 0 → 1000); on n0 and n1 the 900
    # free milli were already unusable for whole-GPU pods (F = 900 before and after): ΔF = 0.
    pod = plain_gpu_pod("cpu", cpu_milli=10_000)
    ev = make_policy("qosched", mix=mix).evaluate(cluster(), pod, np.arange(3))
    np.testing.assert_allclose(ev.extras["frag_delta_milli"], [0.0, 0.0, 1000.0])
    assert best_candidate(ev) == 0


def hook(top_k: int = 16, headroom: float = 0.2) -> SnapshotFairness:
    nq = {"p0": 0.9, "p1": 0.6}
    snapshot = FairnessSnapshot.from_values(list(nq.values()), ["prod", "prod"])
    return SnapshotFairness(snapshot, nq, lambda cls: 1.0, top_k=top_k, headroom_frac=headroom)


def test_fairness_hook_penalises_squeezing_the_worst_served_service() -> None:
    # Headroom factors a(σ) = min(1, σ/0.2): n0 1.0, n1 0.833, n2 1.0. On n1 the prod service
    # already lowest (0.6) would drop to 0.5: the class minimum falls and the Gini rises.
    config = QoschedConfig(fairness_weight=1.0, balance_weight=0.0)  # balance off: s = σ + φ here
    policy = make_policy("qosched", fairness=hook(), config=config, gpu_consolidation="spread")  # no packing
    ev = policy.evaluate(cluster(), POD, np.arange(3))
    fair = ev.extras["fairness"]
    assert fair[1] < fair[0]
    assert fair[1] < fair[2]
    np.testing.assert_allclose(ev.raw_score, np.array(SLACK) + fair, rtol=1e-9)


def test_fairness_hook_examines_only_the_top_candidates() -> None:
    calls: list[int] = []
    inner = hook(top_k=1)
    original = inner._term

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    inner._term = counting
    inputs = FairnessInputs(
        state=cluster(),
        pod=POD,
        rows=np.arange(3),
        devices=np.zeros((3, 1), dtype=np.int64),
        latency_ms=np.full(3, 20.0),
        slack_frac=np.array(SLACK),
        base_score=np.array([0.5, -np.inf, 0.9]),
    )
    out = inner(inputs)
    assert len(calls) == 1
    assert np.isnan(out[1])  # infeasible: not scored
    assert out[0] == out[2]  # the unexamined feasible node gets the lowest examined value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"frag_weight": -1.0}, "frag_weight"),
        ({"slack_weight": float("nan")}, "slack_weight"),
        ({"fairness_weight": True}, "fairness_weight"),
        ({"popularity_threshold": 0.0}, "popularity_threshold"),
    ],
    ids=["negative", "nan", "bool", "threshold"],
)
def test_config_is_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        QoschedConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"top_k": 0}, {"headroom_frac": 0.0}], ids=["top-k", "headroom"])
def test_hook_arguments_are_validated(kwargs: dict[str, float]) -> None:
    snapshot = FairnessSnapshot.from_values([1.0], ["prod"])
    with pytest.raises(ValueError, match=rf"^SnapshotFairness\.{next(iter(kwargs))} must"):
        SnapshotFairness(snapshot, {}, lambda cls: 1.0, **kwargs)  # type: ignore[arg-type]
