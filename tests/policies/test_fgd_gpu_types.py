"""FGD with GPU-type-constrained shapes: the vectorised measure against the simulator's definition.

The simulator (hkust-adsl/kubernetes-scheduler-simulator ``pkg/utils/frag.go``,
``GetNodePodFrag``) keys its typical pods by GPU type too, and a GPU shape whose type list does
not name the node's GPU model counts all of the node's free GPU as fragment (``NoAccess``),
as does a node without a GPU model. A CPU-only shape never looks at the type.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.placement.fgd.mix import PodShape, WorkloadLearner, WorkloadMix, shape_of
from qosched.policies.placement.fgd.score import fragmentation_delta, node_fragmentation
from qosched.policies.placement.qosched.policy import QoschedPolicy
from qosched.policies.placement.testing import plain_gpu_pod

MODELS = ("A", "B", "C")
NODE_MODELS = ("A", "B", "D", "")  # "" = no GPU model; "D" is named by no shape


def reference_fragmentation(
    free: list[int], cpu_free: int, model: str, shapes: list[PodShape], p: list[float]
) -> float:
    """``NodeGpuShareFragAmountScore`` shape by shape, ``NoAccess`` included."""
    total = float(sum(free))
    out = 0.0
    for shape, weight in zip(shapes, p, strict=True):
        access = not shape.gpu_spec or model in shape.gpu_spec
        fits = (
            shape.gpu_milli > 0
            and access
            and cpu_free >= shape.cpu_milli
            and sum(1 for f in free if f >= shape.gpu_milli) >= shape.num_gpu
        )
        out += weight * (sum(f for f in free if f < shape.gpu_milli) if fits else total)
    return out


spec_st = st.one_of(
    st.just(()),
    st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True).map(lambda xs: tuple(sorted(xs))),
)
shape_st = st.one_of(
    st.builds(PodShape, st.integers(0, 16_000), st.just(0), st.just(0)),
    st.builds(PodShape, st.integers(0, 16_000), st.integers(1, 1000), st.just(1), spec_st),
    st.builds(PodShape, st.integers(0, 16_000), st.just(1000), st.integers(2, 4), spec_st),
)


def _tables(mix: WorkloadMix, models: list[str]) -> np.ndarray | None:
    names = sorted({m for m in models if m})
    codes = np.array([names.index(m) if m else -1 for m in models])
    return mix.tables_of(names, codes)


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(shape_st, min_size=1, max_size=6),
    weights=st.lists(st.floats(0.01, 1.0), min_size=6, max_size=6),
    free=st.lists(st.lists(st.integers(0, 1000), min_size=4, max_size=4), min_size=1, max_size=5),
    cpu_free=st.lists(st.integers(0, 40_000), min_size=5, max_size=5),
    models=st.lists(st.sampled_from(NODE_MODELS), min_size=5, max_size=5),
    milli=st.integers(1, 1000),
)
def test_typed_fragmentation_matches_the_definition(shapes, weights, free, cpu_free, models, milli) -> None:
    mix = WorkloadMix.of(shapes, weights[: len(shapes)])
    p = list(mix.popularity)
    m = len(free)
    free_arr, cpu_arr = np.array(free), np.array(cpu_free[:m])
    table = _tables(mix, models[:m])
    got = node_fragmentation(mix, free_arr, cpu_arr, table)
    want = [reference_fragmentation(free[i], cpu_free[i], models[i], list(mix.shapes), p) for i in range(m)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)
    # A fractional pod of 1 CPU on each device it fits: ΔF is the definition's difference.
    ok = free_arr >= milli
    delta = fragmentation_delta(
        mix, free_arr, cpu_arr, cpu_milli=1000, milli=milli, count=1, device_ok=ok, table=table
    )
    for i, d in zip(*np.nonzero(ok), strict=True):
        after = list(free[i])
        after[d] -= milli
        expect = reference_fragmentation(after, cpu_free[i] - 1000, models[i], list(mix.shapes), p) - want[i]
        assert delta[i, d] == pytest.approx(expect, rel=1e-9, abs=1e-6)


def test_typed_shape_on_a_model_it_does_not_accept() -> None:
    # Half 500-milli pods for any GPU, half for model "A" only. One GPU with 600 free: on an A
    # node both fit (F = 0); on a B node the typed half cannot use it (F = 600/2).
    mix = WorkloadMix.of([(1000, 500, 1), (1000, 500, 1, ("A",))], [1, 1])
    assert mix.models == ("A",)
    table = mix.tables_of(["A", "B"], np.array([0, 1, -1]))
    got = node_fragmentation(mix, np.array([[600], [600], [600]]), np.array([8000] * 3), table)
    np.testing.assert_allclose(got, [0.0, 300.0, 300.0])


def test_untyped_mix_has_one_table() -> None:
    mix = WorkloadMix.of([(1000, 500, 1), (0, 0, 0)], [1, 1])
    assert mix.models == ()
    assert mix.tables_of(["A"], np.array([0])) is None


TYPED_POD = dataclasses.replace(
    plain_gpu_pod("t", gpu_milli=500, cpu_milli=2000), gpu_spec=("V100M32", "V100M16")
)


@pytest.mark.parametrize(
    ("pod", "shape"),
    [
        pytest.param(TYPED_POD, PodShape(2000, 500, 1, ("V100M16", "V100M32")), id="typed-sorted"),
        pytest.param(
            dataclasses.replace(plain_gpu_pod("c", cpu_milli=300), gpu_spec=("T4",)),
            PodShape(300, 0, 0),
            id="cpu-untyped",
        ),
    ],
)
def test_shape_of_typed_pods(pod, shape: PodShape) -> None:
    assert shape_of(pod) == shape


def test_learner_keeps_types_apart() -> None:
    learner = WorkloadLearner(popularity_threshold=1.0)
    for i in range(3):
        learner.observe(dataclasses.replace(TYPED_POD, name=f"t{i}"))
    learner.observe(plain_gpu_pod("u", gpu_milli=500, cpu_milli=2000))
    mix = learner.mix()
    assert mix.shapes == (PodShape(2000, 500, 1, ("V100M16", "V100M32")), PodShape(2000, 500, 1))
    np.testing.assert_allclose(mix.popularity, [0.75, 0.25])
    assert mix.models == ("V100M16", "V100M32")
    assert mix.typed_share == pytest.approx(0.75)


GPU_POD = plain_gpu_pod("g", gpu_milli=500, cpu_milli=2000)
CPU_POD = plain_gpu_pod("c", cpu_milli=2000)
UNTYPED_MIX = WorkloadMix.from_pods([GPU_POD, CPU_POD])
TYPED_MIX = WorkloadMix.from_pods([GPU_POD, CPU_POD, TYPED_POD])


@pytest.mark.parametrize(
    ("mix", "pod", "applies"),
    [
        pytest.param(UNTYPED_MIX, GPU_POD, True, id="untyped-workload-gpu-pod"),
        pytest.param(UNTYPED_MIX, CPU_POD, True, id="untyped-workload-cpu-pod"),
        pytest.param(TYPED_MIX, GPU_POD, True, id="typed-workload-gpu-pod"),
        pytest.param(TYPED_MIX, CPU_POD, False, id="typed-workload-cpu-pod"),
        pytest.param(TYPED_MIX, TYPED_POD, False, id="typed-pod"),
    ],
)
def test_balance_term_on_typed_workloads(mix: WorkloadMix, pod, applies: bool) -> None:
    # qosched's β: on a workload with GPU-type-constrained pods only the untyped GPU pods get it
    # (CPU-only pods and typed pods are left to ΔF; QoschedPolicy._balance_applies).
    assert QoschedPolicy(mix=mix)._balance_applies(SimpleNamespace(pod=pod)) is applies
