"""FGD: fragmentation against a direct transcription of the definition, the mix, the learner."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.placement.fgd.mix import PodShape, WorkloadLearner, WorkloadMix, shape_of
from qosched.policies.placement.fgd.score import fragmentation_delta, node_fragmentation
from qosched.policies.placement.testing import plain_gpu_pod


def reference_fragmentation(free: list[int], cpu_free: int, shapes: list[PodShape], p: list[float]) -> float:
    """The simulator's definition, shape by shape (pkg/utils/frag.go, NodeGpuShareFragAmount):
    a shape that fits (GPU milli on enough devices and CPU) fragments the devices it cannot use;
    one that does not fit (or asks for no GPU) fragments all free GPU."""
    total = float(sum(free))
    out = 0.0
    for shape, weight in zip(shapes, p, strict=True):
        fits = (
            shape.gpu_milli > 0
            and cpu_free >= shape.cpu_milli
            and sum(1 for f in free if f >= shape.gpu_milli) >= shape.num_gpu
        )
        out += weight * (sum(f for f in free if f < shape.gpu_milli) if fits else total)
    return out


def reference_place(free: list[int], cpu_free: int, cpu: int, milli: int, count: int, device: int) -> tuple:
    after = list(free)
    if count == 0 or milli == 0:
        return after, cpu_free - cpu
    if milli < 1000:
        after[device] -= milli
    else:
        taken = 0
        for i, f in enumerate(after):
            if f == 1000 and taken < count:
                after[i] = 0
                taken += 1
    return after, cpu_free - cpu


shape_st = st.one_of(
    st.builds(PodShape, st.integers(0, 16_000), st.just(0), st.just(0)),
    st.builds(PodShape, st.integers(0, 16_000), st.integers(1, 1000), st.just(1)),
    st.builds(PodShape, st.integers(0, 16_000), st.just(1000), st.integers(2, 4)),
)


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(shape_st, min_size=1, max_size=6),
    weights=st.lists(st.floats(0.01, 1.0), min_size=6, max_size=6),
    free=st.lists(st.lists(st.integers(0, 1000), min_size=4, max_size=4), min_size=1, max_size=5),
    cpu_free=st.lists(st.integers(0, 40_000), min_size=5, max_size=5),
    pod=shape_st,
)
def test_vectorised_fragmentation_matches_the_definition(shapes, weights, free, cpu_free, pod) -> None:
    w = weights[: len(shapes)]
    mix = WorkloadMix.of(shapes, w)
    p = list(mix.popularity)
    m = len(free)
    free_arr = np.array(free)
    cpu_arr = np.array(cpu_free[:m])
    got = node_fragmentation(mix, free_arr, cpu_arr)
    want = [reference_fragmentation(free[i], cpu_free[i], list(mix.shapes), p) for i in range(m)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)

    ok = free_arr >= (pod.gpu_milli if pod.num_gpu else 0)
    if pod.gpu_milli >= 1000:
        ok = free_arr >= 1000
    delta = fragmentation_delta(
        mix, free_arr, cpu_arr, cpu_milli=pod.cpu_milli, milli=pod.gpu_milli, count=pod.num_gpu, device_ok=ok
    )
    for i in range(m):
        for d in range(4):
            if pod.gpu_milli >= 1000 and ok[i].sum() < pod.num_gpu:
                assert np.isinf(delta[i, d])
                continue
            if 0 < pod.gpu_milli < 1000 and not ok[i, d]:
                assert np.isinf(delta[i, d])
                continue
            after, cpu_after = reference_place(
                free[i], cpu_free[i], pod.cpu_milli, pod.gpu_milli, pod.num_gpu, d
            )
            expect = reference_fragmentation(after, cpu_after, list(mix.shapes), p) - want[i]
            assert delta[i, d] == pytest.approx(expect, rel=1e-9, abs=1e-6)


def test_hand_example() -> None:
    # One GPU, 300 milli free; half 500-milli pods (cannot use it: F = 300), half whole-GPU pods
    # (cannot either: 300); F = 300. With 600 free: the 500 pod fits (fragment 0), the whole-GPU
    # pod does not (600): F = 300.
    mix = WorkloadMix.of([(1000, 500, 1), (1000, 1000, 1)], [1, 1])
    got = node_fragmentation(mix, np.array([[300], [600], [1000]]), np.array([8000, 8000, 8000]))
    np.testing.assert_allclose(got, [300.0, 300.0, 0.0])
    # Not enough CPU left for either shape: everything is fragment.
    assert node_fragmentation(mix, np.array([[1000]]), np.array([500]))[0] == 1000.0


BAD_SHAPES = [
    ((-1, 0, 0), "cpu_milli"),
    ((0, 1200, 1), "gpu_milli"),
    ((0, 500, 0), "num_gpu"),
    ((0, 0, 1), "num_gpu"),
    ((0, 500, 2), "whole GPUs"),
]


@pytest.mark.parametrize(
    ("shape", "message"), BAD_SHAPES, ids=[b[1] + str(i) for i, b in enumerate(BAD_SHAPES)]
)
def test_bad_shapes_are_named(shape, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PodShape(*shape)


@pytest.mark.parametrize(
    ("weights", "message"),
    [([1.0, -1.0], "popularity"), ([0.0, 0.0], "popularity"), ([1.0], "2 shapes but 1")],
    ids=["negative", "all-zero", "length"],
)
def test_bad_popularity(weights, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkloadMix.of([(0, 0, 0), (0, 100, 1)], weights)


def test_learner_keeps_the_popular_shapes() -> None:
    learner = WorkloadLearner(popularity_threshold=0.8)
    assert learner.mix().empty
    pods = (
        [plain_gpu_pod(f"a{i}", gpu_milli=500, cpu_milli=4000) for i in range(6)]
        + [plain_gpu_pod(f"b{i}", gpu_milli=2000, cpu_milli=8000) for i in range(3)]
        + [plain_gpu_pod("c", cpu_milli=1000)]
    )
    for pod in pods:
        learner.observe(pod)
    mix = learner.mix()
    # 6 + 3 of 10 pods = 90 % ≥ 80 %: the rare CPU-only shape is dropped, the rest renormalised.
    assert mix.shapes == (PodShape(4000, 500, 1), PodShape(8000, 1000, 2))
    np.testing.assert_allclose(mix.popularity, [6 / 9, 3 / 9])
    assert learner.mix() is mix  # cached until the next observation
    learner.observe(pods[0])
    assert learner.mix() is not mix
    assert learner.seen == 11


def test_learner_tie_order_is_deterministic() -> None:
    a, b = WorkloadLearner(popularity_threshold=1.0), WorkloadLearner(popularity_threshold=1.0)
    x, y = plain_gpu_pod("x", gpu_milli=100), plain_gpu_pod("y", gpu_milli=900)
    for pod in (x, y):
        a.observe(pod)
    for pod in (y, x):
        b.observe(pod)
    assert a.mix().shapes == b.mix().shapes


def test_shape_of_pods() -> None:
    assert shape_of(plain_gpu_pod("s", gpu_milli=250, cpu_milli=10)) == PodShape(10, 250, 1)
    assert shape_of(plain_gpu_pod("w", gpu_milli=3000)) == PodShape(0, 1000, 3)
    assert shape_of(plain_gpu_pod("c", cpu_milli=5)) == PodShape(5, 0, 0)


def test_from_pods_equals_learning() -> None:
    pods = [plain_gpu_pod(f"p{i}", gpu_milli=100 * (1 + i % 3)) for i in range(9)]
    mix = WorkloadMix.from_pods(pods, popularity_threshold=1.0)
    assert len(mix.shapes) == 3
    np.testing.assert_allclose(mix.popularity, [1 / 3] * 3)


@pytest.mark.parametrize("threshold", [0.0, 1.5], ids=["zero", "above-one"])
def test_learner_threshold_is_checked(threshold: float) -> None:
    with pytest.raises(ValueError, match="popularity_threshold"):
        WorkloadLearner(popularity_threshold=threshold)
