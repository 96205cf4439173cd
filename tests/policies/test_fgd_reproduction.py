"""What the FGD reproduction rests on (issue 18, docs/fgd-reproduction.md): FGD's integer score
and tie rule, the random node order of FGD mode, the mix fixed from the trace, and the curve
sampled as the simulator's artifact samples it. Small inputs only; the full comparison is
``benchmarks/bench_fgd_reproduction.py``."""

from __future__ import annotations

import numpy as np
import pytest

from qosched.policies.placement.base import best_candidate, make_policy
from qosched.policies.placement.fgd.mix import WorkloadMix
from qosched.policies.placement.fgd.policy import simulator_score
from qosched.policies.placement.testing import ProfileTable, gpu_node, plain_gpu_pod, state_with
from qosched.policies.simulator.metrics import fgd_discrete_curve
from qosched.policies.simulator.replay import build_scheduler
from qosched.policies.simulator.scenarios import contended_workload, fgd_workload, pod_from_trace
from qosched.policies.traces.openb import OpenbTrace, TraceNode, TracePod

TABLE = ProfileTable(params={}, device_memory_mib={"nvidia-t4": 16_000.0})


@pytest.mark.parametrize(
    ("delta_milli", "score"),
    [
        (0.0, 50.0),
        (-39.0, 50.0),  # 100·sigmoid(0.039) = 50.97 → 50: ties with 0
        (1.0, 49.0),  # just above 0 drops a step (⌊49.99⌋)
        (39.0, 49.0),
        (41.0, 48.0),
        (-1000.0, 73.0),
        (900.0, 28.0),
        (np.inf, -np.inf),  # no device: infeasible
    ],
    ids=["zero", "tie-below", "step", "tie-above", "next-step", "minus-one-gpu", "plus-0.9-gpu", "inf"],
)
def test_simulator_score(delta_milli: float, score: float) -> None:
    assert simulator_score(np.array([delta_milli]))[0] == score


def test_fgd_scores_nodes_with_the_integer_and_ties_go_first() -> None:
    nodes = [gpu_node(f"n{i}", gpus=2) for i in range(6)]
    running = [
        (plain_gpu_pod("a", gpu_milli=600, cpu_milli=4000), "n1", (0,)),
        (plain_gpu_pod("b", gpu_milli=300, cpu_milli=4000), "n3", (1,)),
        (plain_gpu_pod("c", gpu_milli=1000, cpu_milli=4000), "n4", (0,)),
    ]
    state = state_with(nodes, TABLE, running)
    mix = WorkloadMix.of([(4000, 1000, 1), (4000, 300, 1), (4000, 0, 0)], [5, 3, 2])
    pod = plain_gpu_pod("new", gpu_milli=300, cpu_milli=4000)
    ev = make_policy("fgd", mix=mix).evaluate(state, pod, np.arange(6))
    np.testing.assert_array_equal(ev.raw_score, simulator_score(ev.extras["frag_delta_milli"]))
    best = best_candidate(ev)
    assert best is not None
    assert best == int(np.flatnonzero(ev.raw_score == ev.raw_score.max())[0])


def _trace() -> OpenbTrace:
    nodes = tuple(TraceNode(f"openb-node-{i:04d}", 32_000, 262_144, 2, "T4") for i in range(12))
    pods = tuple(
        TracePod(
            f"openb-pod-{i:04d}", 4000, 8192, 1, (250, 500, 1000)[i % 3], (), "LS", "Running", 0.0, 9.0, 1.0
        )
        for i in range(20)
    )
    return OpenbTrace(nodes=nodes, pods=pods, nodes_file="n.csv", pods_file="p.csv")


def test_fgd_mode_replays_the_nodes_in_a_seeded_random_order() -> None:
    trace = _trace()
    names = [n.name for n in trace.nodes]
    a = fgd_workload(trace, 1.3, np.random.default_rng(42))
    again = fgd_workload(trace, 1.3, np.random.default_rng(42))
    other = fgd_workload(trace, 1.3, np.random.default_rng(43))
    kept = fgd_workload(trace, 1.3, np.random.default_rng(42), shuffle_nodes=False)
    order = [v.name for v in a.nodes]
    assert sorted(order) == names
    assert order != names
    assert order == [v.name for v in again.nodes]
    assert order != [v.name for v in other.nodes]
    assert [v.name for v in kept.nodes] == names
    # the pods are drawn first: the same as contention mode's with the same seed
    contended = contended_workload(trace, 1.3, np.random.default_rng(42))
    assert [p.uid for p in a.pods] == [p.uid for p in contended.pods] == [p.uid for p in kept.pods]


def test_trace_mix_leaves_the_clones_out() -> None:
    trace = _trace()
    workload = fgd_workload(trace, 1.3, np.random.default_rng(0))
    clones = int(workload.description["clones"])
    assert clones > 0
    assert all("-tuned-" in p.uid for p in workload.pods[-clones:])
    policy = build_scheduler("fgd", workload=workload, mix="trace").policy
    expected = WorkloadMix.from_pods([pod_from_trace(p, "prod") for p in trace.pods])
    assert policy.mix.shapes == expected.shapes
    np.testing.assert_allclose(policy.mix.popularity, expected.popularity)


@pytest.mark.parametrize(
    ("arrived", "allocated", "points", "expected"),
    [
        ([0.1, 0.104, 0.2], [0.05, 0.07, 0.1], [10, 20], {10: 6.0, 20: 10.0}),  # mean at a point
        ([0.1, 0.12], [0.05, 0.07], [11], {11: 6.0}),  # no record at 11: the mean over 10..12
        ([0.1], [0.05], [15], {}),  # nothing within ±1
        ([1.2949, 1.2951, 1.3], [0.9, 0.95, 0.96], [129, 130], {129: 90.0, 130: 95.5}),
    ],
    ids=["mean", "fallback", "missing", "end"],
)
def test_discrete_curve_samples_as_the_artifact(
    arrived: list[float], allocated: list[float], points: list[int], expected: dict[int, float]
) -> None:
    assert fgd_discrete_curve(np.array(arrived), np.array(allocated), points) == pytest.approx(expected)
