"""The incremental ``WorkloadLearner`` against the full rebuild it replaced, bit for bit.

The reference below is the previous implementation, kept verbatim: rank every shape seen by
(−count, shape), keep the most popular until they cover the threshold, and build the dense
tables with ``np.add.at`` + two ``cumsum`` over all 1001 milli-GPU columns. The learner must
give the same shapes, popularities and tables (``np.array_equal``, no tolerance) after every
observation, so FGD's and qosched's decisions cannot change.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.placement.fgd.mix import PodShape, WorkloadLearner, WorkloadMix, shape_of
from qosched.policies.placement.testing import plain_gpu_pod
from qosched.policies.types import GPU_MILLI_PER_DEVICE, PodDemand


def reference_tables(shapes: tuple[PodShape, ...], weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """The previous ``WorkloadMix.__post_init__``: (popularity, cpu_breaks, g_table, h_table)."""
    p = np.asarray(weights, dtype=np.float64).ravel()
    if p.size:
        p = p / p.sum()
    cpu = np.array([s.cpu_milli for s in shapes], dtype=np.int64)
    milli = np.array([s.gpu_milli for s in shapes], dtype=np.int64)
    num = np.array([s.num_gpu for s in shapes], dtype=np.int64)
    breaks = np.unique(cpu)
    rank = np.searchsorted(breaks, cpu)
    rows = breaks.shape[0] + 1
    g = np.zeros((rows, GPU_MILLI_PER_DEVICE + 1))
    single = num == 1
    np.add.at(g, (rank[single] + 1, milli[single]), p[single])
    g = g.cumsum(axis=0).cumsum(axis=1)
    k_max = int(max(1, num.max(initial=1)))
    h = np.zeros((rows, k_max + 1))
    multi = num > 1
    np.add.at(h, (rank[multi] + 1, num[multi]), p[multi])
    h = h.cumsum(axis=0).cumsum(axis=1)
    return p, breaks, g, h


def reference_mix(
    counts: Counter[PodShape], threshold: float
) -> tuple[tuple[PodShape, ...], tuple[np.ndarray, ...]]:
    """The previous ``WorkloadLearner.mix``: full sort and cut, then the dense tables."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    total = sum(count for _, count in ranked)
    kept: list[tuple[PodShape, int]] = []
    covered = 0
    for shape, count in ranked:
        if kept and covered >= threshold * total:
            break
        kept.append((shape, count))
        covered += count
    shapes = tuple(s for s, _ in kept)
    return shapes, reference_tables(shapes, np.array([c for _, c in kept], dtype=float))


def assert_same(mix: WorkloadMix, shapes: tuple[PodShape, ...], tables: tuple[np.ndarray, ...]) -> None:
    assert mix.shapes == shapes
    for got, want in zip((mix.popularity, mix.cpu_breaks, mix.g_table, mix.h_table), tables, strict=True):
        assert got.shape == want.shape
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)  # exact: no tolerance
        assert not got.flags.writeable


def _pod(i: int, cpu: int, milli: int, count: int) -> PodDemand:
    gpu = 0 if count == 0 else (milli if count == 1 else GPU_MILLI_PER_DEVICE * count)
    return plain_gpu_pod(f"p{i}", gpu_milli=gpu, cpu_milli=cpu)


# Skewed draws, as in the trace: a few shapes dominate, a long tail of rare ones.
CPUS = [0, 1000, 2000, 4000, 6000, 8000, 12000, 16000, 32000]
MILLIS = [50, 100, 200, 250, 300, 500, 700, 1000]


def _random_pods(rng: np.random.Generator, n: int) -> list[PodDemand]:
    pods = []
    for i in range(n):
        kind = rng.choice(3, p=[0.2, 0.65, 0.15])
        cpu = int(CPUS[min(int(rng.geometric(0.35)) - 1, len(CPUS) - 1)])
        if kind == 0:
            pods.append(_pod(i, cpu, 0, 0))
        elif kind == 1:
            pods.append(_pod(i, cpu, int(MILLIS[min(int(rng.geometric(0.3)) - 1, len(MILLIS) - 1)]), 1))
        else:
            pods.append(_pod(i, cpu, 1000, int(rng.integers(2, 9))))
    return pods


@pytest.mark.parametrize(
    ("seed", "threshold"),
    [(0, 0.95), (1, 0.95), (2, 0.8), (3, 0.5), (4, 1.0), (5, 0.999)],
    ids=["s0-95", "s1-95", "s2-80", "s3-50", "s4-all", "s5-999"],
)
def test_every_step_equals_the_full_rebuild(seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    learner = WorkloadLearner(popularity_threshold=threshold)
    counts: Counter[PodShape] = Counter()
    assert_same(learner.mix(), *reference_mix(counts, threshold))  # empty
    for pod in _random_pods(rng, 400):
        learner.observe(pod)
        counts[shape_of(pod)] += 1
        assert_same(learner.mix(), *reference_mix(counts, threshold))
    assert learner.seen == 400


@settings(max_examples=60, deadline=None)
@given(
    draws=st.lists(
        st.tuples(st.sampled_from(CPUS), st.sampled_from([0, *MILLIS]), st.integers(2, 4), st.booleans()),
        min_size=1,
        max_size=60,
    ),
    threshold=st.floats(0.05, 1.0),
    every=st.integers(1, 5),
)
def test_lazy_mix_equals_the_full_rebuild(
    draws: list[tuple[int, int, int, bool]], threshold: float, every: int
) -> None:
    """Observations in bursts (mix asked for every few pods only), any threshold."""
    learner = WorkloadLearner(popularity_threshold=threshold)
    counts: Counter[PodShape] = Counter()
    for i, (cpu, milli, many, multi) in enumerate(draws):
        count = 0 if milli == 0 else (many if multi else 1)
        pod = _pod(i, cpu, milli, count)
        learner.observe(pod)
        counts[shape_of(pod)] += 1
        if i % every == 0:
            assert_same(learner.mix(), *reference_mix(counts, threshold))
    assert_same(learner.mix(), *reference_mix(counts, threshold))


def test_a_rare_shape_outside_the_cut_keeps_the_same_mix_object() -> None:
    learner = WorkloadLearner(popularity_threshold=0.5)
    common = [_pod(i, 1000, 500, 1) for i in range(10)]
    for pod in common:
        learner.observe(pod)
    learner.observe(_pod(99, 2000, 100, 1))
    mix = learner.mix()
    assert mix.shapes == (PodShape(1000, 500, 1),)
    learner.observe(_pod(100, 4000, 100, 1))  # rare: 10 of 12 pods still cover 50 %
    assert learner.mix() is mix
    learner.observe(common[0])  # the one kept shape again: popularity still (1.0,), same tables
    assert learner.mix() is mix


def test_the_mix_object_changes_exactly_when_the_kept_proportions_do() -> None:
    learner = WorkloadLearner(popularity_threshold=1.0)
    a, b = _pod(0, 1000, 500, 1), _pod(1, 2000, 250, 1)
    for pod in (a, a, b):
        learner.observe(pod)
    mix = learner.mix()
    np.testing.assert_allclose(mix.popularity, [2 / 3, 1 / 3])
    learner.observe(a)  # 3:1, renormalised: new tables
    changed = learner.mix()
    assert changed is not mix
    np.testing.assert_allclose(changed.popularity, [3 / 4, 1 / 4])
    for pod in (a, b, a, a, b):  # 6:3, the proportions of 2:1 again but not of 3:1
        learner.observe(pod)
    again = learner.mix()
    assert again is not changed
    np.testing.assert_array_equal(again.popularity, mix.popularity)
    for name in ("g_table", "h_table"):
        np.testing.assert_array_equal(getattr(again, name), getattr(mix, name))


@pytest.mark.parametrize(
    ("shapes", "weights"),
    [
        ([(1000, 500, 1), (1000, 500, 1), (0, 0, 0)], [0.3, 0.2, 0.5]),
        ([(4000, 1000, 2), (4000, 1000, 2), (2000, 250, 1)], [1, 2, 3]),
        ([(0, 1000, 1)], [1.0]),
        ([], []),
    ],
    ids=["repeated-single", "repeated-multi", "one-whole-gpu", "empty"],
)
def test_constructor_tables_equal_the_dense_computation(shapes: list, weights: list) -> None:
    """Repeated shapes (a caller's mix) are summed in order, as ``np.add.at`` on the dense grid."""
    mix = WorkloadMix.of(shapes, weights)
    assert_same(mix, mix.shapes, reference_tables(mix.shapes, np.asarray(weights, dtype=float)))
