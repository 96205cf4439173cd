"""Tests of FGD's workload inflation (count rule) and tuning (GPU-capacity rule)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qosched.extender.cli.trace_files import read_nodes, read_pods
from qosched.policies.traces.inflate import arrived_gpu_fraction, inflate_workload, tune_workload
from qosched.policies.traces.openb import (
    ClusterCapacity,
    PodTable,
    TracePod,
    cluster_capacity,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "alibaba-gpu-v2023"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"trace not found at {DATA}")

Trace = tuple[tuple[TracePod, ...], ClusterCapacity]
HUGE = ClusterCapacity(cpu_milli=10**12, memory_mib=10**12, gpu_milli=10**12)


def pod(
    name: str, cpu_milli: int = 1000, num_gpu: int = 1, gpu_milli: int = 500, qos: str = "LS"
) -> TracePod:
    return TracePod(name, cpu_milli, 4096, num_gpu, gpu_milli, (), qos, "Running", 10.0, 20.0, 11.0)


def pods(n: int, **kwargs: int) -> list[TracePod]:
    return [pod(f"p{i:03d}", **kwargs) for i in range(n)]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trace() -> Trace:
    if not DATA.is_dir():
        pytest.skip(f"trace not found at {DATA}")
    return read_pods(DATA / "openb_pod_list_default.csv"), cluster_capacity(
        read_nodes(DATA / "openb_node_list_gpu_node.csv")
    )


# ---------------------------------------------------------------------------------------------
# inflate_workload: ceil(n * ratio) - n clones unless capacity stops it


@pytest.mark.parametrize(
    ("n", "ratio", "want"),
    [
        (100, 1.3, 30),  # ceil(130.0) - 100
        (7, 1.5, 4),  # ceil(10.5) - 7
        (8152, 1.3, 2446),  # the default trace: ceil(10597.6) - 8152
        (50, 1.1, 6),  # float64 as in Go: 50 * 1.1 = 55.00000000000001 -> ceil 56
        (5, 1.0, 0),  # ratio <= 1 adds nothing
        (5, 0.5, 0),
        (0, 2.0, 0),  # empty trace
    ],
    ids=["100x1.3", "7x1.5", "8152x1.3", "float-ceil-quirk", "ratio-1", "ratio-below-1", "empty"],
)
def test_inflation_reaches_target_when_capacity_allows(n: int, ratio: float, want: int) -> None:
    w = inflate_workload(pods(n), HUGE, ratio, np.random.default_rng(7))
    assert w.n_clones_target == want
    assert w.n_clones == want
    assert w.n_original == n
    assert not w.stopped_at_capacity


@pytest.mark.parametrize(
    ("capacity", "want_clones"),
    [
        # 10 pods of 1000 mCPU / 500 mGPU: 5000 mGPU asked; 6000 fits 2 more, the 3rd would exceed.
        (ClusterCapacity(cpu_milli=10**9, memory_mib=0, gpu_milli=6000), 2),
        (ClusterCapacity(cpu_milli=10**9, memory_mib=0, gpu_milli=6499), 2),
        (ClusterCapacity(cpu_milli=10**9, memory_mib=0, gpu_milli=5000), 0),  # equal is allowed, no room
        # CPU: 10,000 mCPU asked; 13,000 fits 3 more.
        (ClusterCapacity(cpu_milli=13_000, memory_mib=0, gpu_milli=10**9), 3),
    ],
    ids=["gpu-exact", "gpu-slack", "gpu-full", "cpu"],
)
def test_inflation_stops_at_capacity(capacity: ClusterCapacity, want_clones: int) -> None:
    w = inflate_workload(pods(10), capacity, 2.0, np.random.default_rng(1))
    assert w.n_clones_target == 10
    assert w.n_clones == want_clones
    assert w.stopped_at_capacity
    assert w.total_gpu_milli <= capacity.gpu_milli
    assert w.total_cpu_milli <= capacity.cpu_milli


def test_inflation_stops_at_first_misfit_not_skipping() -> None:
    # A whole-GPU pod never fits the 500 mGPU left; a CPU-only pod always would. FGD stops at the
    # first misfit, so only CPU-only clones drawn before the first GPU draw are kept: with 198
    # draws, each a GPU pod with probability 1/2, that is far fewer than 198.
    trace = [pod("gpu", num_gpu=1, gpu_milli=1000), pod("cpu", num_gpu=0, gpu_milli=0)]
    capacity = ClusterCapacity(cpu_milli=10**9, memory_mib=0, gpu_milli=1500)
    w = inflate_workload(trace, capacity, 100.0, np.random.default_rng(3))
    assert w.n_clones_target == 198
    assert w.stopped_at_capacity
    assert w.n_clones < 198
    assert all(p.num_gpu == 0 for p in w.pods[w.n_original :])


def test_inflation_is_deterministic_per_seed() -> None:
    trace = [pod(f"p{i}", gpu_milli=100 * (i + 1)) for i in range(9)]
    first = inflate_workload(trace, HUGE, 3.0, np.random.default_rng(42))
    again = inflate_workload(trace, HUGE, 3.0, np.random.default_rng(42))
    other = inflate_workload(trace, HUGE, 3.0, np.random.default_rng(43))
    assert first == again
    assert first.source_index != other.source_index


def test_clones_are_renamed_copies() -> None:
    trace = [pod(f"p{i}", cpu_milli=1000 + i, gpu_milli=100 + i, qos=("LS", "BE")[i % 2]) for i in range(6)]
    w = inflate_workload(trace, HUGE, 2.5, np.random.default_rng(0))
    assert w.n_clones == 9
    names = [p.name for p in w.pods]
    assert len(set(names)) == len(names)
    assert list(w.pods[:6]) == trace
    for j, (clone, src) in enumerate(zip(w.pods[6:], w.source_index[6:], strict=True)):
        assert clone.name == f"{trace[src].name}-clone-{j}"
        assert replace(clone, name=trace[src].name) == trace[src]
    assert w.is_clone.tolist() == [False] * 6 + [True] * 9
    assert w.total_gpu_milli == sum(p.total_gpu_milli for p in w.pods)


def test_shuffle_permutes_the_trace_pods() -> None:
    trace = pods(30)
    w = inflate_workload(trace, HUGE, 1.0, np.random.default_rng(5), shuffle=True)
    assert sorted(w.source_index) == list(range(30))
    assert list(w.source_index) != list(range(30))
    assert [p.name for p in w.pods] == [trace[i].name for i in w.source_index]


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        ([pod("a"), pod("a")], "unique"),
        ([pod("a"), pod("a-clone-0")], "already the name"),
    ],
    ids=["duplicate-names", "clone-name-collision"],
)
def test_inflation_name_errors(trace: list[TracePod], message: str) -> None:
    # Ratio 1.5 on 2 pods adds one clone; it is named "a-clone-0", a collision, when its source is
    # "a" (probability 1/2 per seed), which one of the 20 fixed seeds draws.

    def inflate_with_every_seed() -> None:
        for seed in range(20):
            inflate_workload(trace, HUGE, 1.5, np.random.default_rng(seed))

    with pytest.raises(ValueError, match=message):
        inflate_with_every_seed()


@pytest.mark.parametrize("ratio", [-0.1, math.nan, math.inf], ids=["negative", "nan", "inf"])
def test_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        inflate_workload(pods(3), HUGE, ratio, np.random.default_rng(0))
    with pytest.raises(ValueError, match="ratio"):
        tune_workload(pods(3), HUGE, ratio, np.random.default_rng(0))


@needs_data
def test_inflation_of_real_trace_stops_at_gpu_capacity(trace: Trace) -> None:
    trace_pods, capacity = trace
    w = inflate_workload(trace_pods, capacity, 1.3, np.random.default_rng(42))
    # The trace already asks 97.98 % of the 6,212 GPUs, so capacity ends it long before 2,446.
    assert w.n_clones_target == 2446
    assert w.stopped_at_capacity
    assert 0 < w.n_clones < 2446
    assert w.total_gpu_milli <= capacity.gpu_milli
    assert w.total_cpu_milli <= capacity.cpu_milli
    assert capacity.gpu_milli - w.total_gpu_milli < 8000  # the clone that stopped it did not fit


# ---------------------------------------------------------------------------------------------
# tune_workload: total GPU request to ratio x capacity


def test_tuning_up_single_gpu_pods_stays_within_target() -> None:
    trace = [pod(f"p{i}", gpu_milli=(250, 500, 1000)[i % 3]) for i in range(12)]  # 7000 mGPU
    capacity = ClusterCapacity(cpu_milli=1, memory_mib=0, gpu_milli=10_000)  # CPU is not checked
    w = tune_workload(trace, capacity, 1.3, np.random.default_rng(9))
    assert w.n_clones_target is None
    assert w.n_original == 12
    assert 13_000 - 1000 < w.total_gpu_milli <= 13_000
    for j, (clone, src) in enumerate(zip(w.pods[12:], w.source_index[12:], strict=True)):
        assert clone.name == f"{trace[src].name}-tuned-{j}"


def test_tuning_keeps_fgd_multi_gpu_overshoot() -> None:
    # FGD tests total + per-GPU milli (1000) <= target but adds 8 x 1000: 8000 + 1000 <= 13000, so
    # one 8-GPU clone is added (16000 mGPU); then 16000 + 1000 > 13000 stops.
    w = tune_workload(
        [pod("big", num_gpu=8, gpu_milli=1000)], ClusterCapacity(0, 0, 10_000), 1.3, np.random.default_rng(0)
    )
    assert [p.name for p in w.pods] == ["big", "big-tuned-0"]
    assert w.total_gpu_milli == 16_000


def test_tuning_down_removes_random_trace_pods() -> None:
    trace = pods(40)  # 20,000 mGPU
    w = tune_workload(trace, ClusterCapacity(0, 0, 20_000), 0.5, np.random.default_rng(2))
    assert w.n_clones == 0
    assert w.n_original == 20
    assert w.total_gpu_milli == 10_000
    assert list(w.source_index) == sorted(w.source_index)  # survivors keep their order


@pytest.mark.parametrize(
    ("trace", "capacity"),
    [
        (pods(3, num_gpu=0, gpu_milli=0), ClusterCapacity(0, 0, 1000)),
        (pods(3), ClusterCapacity(0, 0, 0)),
    ],
    ids=["no-gpu-requests", "no-gpu-capacity"],
)
def test_tuning_needs_gpus(trace: list[TracePod], capacity: ClusterCapacity) -> None:
    with pytest.raises(ValueError, match="GPU"):
        tune_workload(trace, capacity, 1.3, np.random.default_rng(0))


@needs_data
def test_tuning_real_trace_reaches_130_percent(trace: Trace) -> None:
    trace_pods, capacity = trace
    w = tune_workload(trace_pods, capacity, 1.3, np.random.default_rng(42), shuffle=True)
    again = tune_workload(trace_pods, capacity, 1.3, np.random.default_rng(42), shuffle=True)
    assert w == again
    arrived = arrived_gpu_fraction(w.pods, capacity.gpu_milli)
    # ends within one GPU below 1.3 (the stopping draw) or up to 7 GPUs above (an 8-GPU clone)
    assert 1.3 - 1000 / capacity.gpu_milli < arrived[-1] <= 1.3 + 7000 / capacity.gpu_milli
    assert arrived[len(trace_pods) - 1] == pytest.approx(6_086_800 / 6_212_000)
    assert 2000 < w.n_clones < 3500


# ---------------------------------------------------------------------------------------------
# arrived_gpu_fraction


def test_arrived_fraction_hand_computed() -> None:
    trace = [pod("a", gpu_milli=500), pod("b", num_gpu=0, gpu_milli=0), pod("c", num_gpu=2, gpu_milli=1000)]
    want = [0.125, 0.125, 0.625]  # 500/4000, 500/4000, 2500/4000
    assert arrived_gpu_fraction(trace, 4000).tolist() == want
    assert arrived_gpu_fraction(PodTable.from_rows(trace), 4000).tolist() == want
    assert arrived_gpu_fraction(np.array([500, 0, 2000]), 4000).tolist() == want


@pytest.mark.parametrize("capacity", [0, -1, math.nan], ids=["zero", "negative", "nan"])
def test_arrived_fraction_bad_capacity(capacity: float) -> None:
    with pytest.raises(ValueError, match="cluster_gpu_milli"):
        arrived_gpu_fraction([pod("a")], capacity)
