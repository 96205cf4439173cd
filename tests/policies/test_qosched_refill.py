"""``qosched``'s refill target (:mod:`qosched.policies.placement.qosched.refill`, issue 18).

A size class whose remainder fewer pods fit than it leaves remainders (the openb traces' 810-milli
pods: 190 milli, which only the rare 160- and 110-milli pods fit) counts in ΔF's target workload
through its CPU only, so qosched no longer keeps whole GPUs for it. The decision test below
flips with ``config.refill_target``; services and typed pods keep FGD's mix.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.placement.base import best_candidate, make_policy
from qosched.policies.placement.fgd.mix import PodShape, WorkloadMix
from qosched.policies.placement.fgd.score import fragmentation_delta
from qosched.policies.placement.qosched.config import QoschedConfig
from qosched.policies.placement.qosched.refill import refill_target, unrefillable
from qosched.policies.placement.testing import ProfileTable, gpu_node, plain_gpu_pod, state_with

EMPTY = ProfileTable({}, {})
#: 810-milli pods (half the pods) leave 190 milli that nothing in this workload fits.
MIX = WorkloadMix.of([(1000, 810, 1), (1000, 320, 1), (1000, 650, 1)], [0.5, 0.3, 0.2])


def test_only_the_class_nothing_refills_is_marked() -> None:
    assert unrefillable(MIX).tolist() == [True, False, False]
    target = refill_target(MIX)
    assert [(s.cpu_milli, s.gpu_milli, s.num_gpu) for s in target.shapes] == [
        (1000, 1, 1),
        (1000, 320, 1),
        (1000, 650, 1),
    ]
    np.testing.assert_array_equal(target.popularity, MIX.popularity)


def test_fillers_make_a_class_refillable() -> None:
    # 160-milli pods as many as the 810s: every 190-milli remainder can take one.
    mix = WorkloadMix.of([(1000, 810, 1), (1000, 160, 1)], [0.5, 0.5])
    assert not unrefillable(mix).any()
    assert refill_target(mix) is mix
    # A class that fits its own remainder refills itself.
    alone = WorkloadMix.of([(1000, 470, 1)], [1.0])
    assert refill_target(alone) is alone


def test_whole_gpu_and_typed_mixes_are_left_as_they_are() -> None:
    whole = WorkloadMix.of([(1000, 1000, 1), (8000, 1000, 8), (1000, 0, 0)], [1, 1, 1])
    assert refill_target(whole) is whole
    typed = WorkloadMix.of([(1000, 810, 1, ("T4",)), (1000, 320, 1)], [0.5, 0.5])
    assert refill_target(typed) is typed


def _reference_mask(mix: WorkloadMix) -> list[bool]:
    """The module docstring's inequality, class by class."""
    out = []
    for s in mix.shapes:
        m = s.gpu_milli if s.num_gpu == 1 else 0
        if not 0 < m < 1000:
            out.append(False)
            continue
        single = [(t.gpu_milli, p) for t, p in zip(mix.shapes, mix.popularity, strict=True) if t.num_gpu == 1]
        fits = sum(p for mt, p in single if mt <= 1000 - m)
        same = sum(p for mt, p in single if mt == m)
        out.append(bool(fits < same))
    return out


SHAPES = st.one_of(
    st.tuples(
        st.sampled_from([0, 1000, 3152, 8000]),
        st.sampled_from([110, 160, 320, 470, 650, 810, 950, 1000]),
        st.just(1),
    ),
    st.tuples(st.sampled_from([0, 8000]), st.just(1000), st.sampled_from([2, 8])),
    st.tuples(st.sampled_from([500, 4000]), st.just(0), st.just(0)),
)


@settings(max_examples=80, deadline=None)
@given(
    shapes=st.lists(SHAPES, min_size=1, max_size=8, unique=True),
    weights=st.lists(st.integers(1, 50), min_size=8, max_size=8),
)
def test_target_tables_are_those_of_the_rewritten_shapes(
    shapes: list[tuple[int, int, int]], weights: list[int]
) -> None:
    """The mask follows the inequality, and the patched tables are the ones WorkloadMix builds
    for the rewritten shapes (each unrefillable shape as (c, 1, 1), same popularity)."""
    mix = WorkloadMix.of(shapes, weights[: len(shapes)])
    mask = unrefillable(mix)
    assert mask.tolist() == _reference_mask(mix)
    target = refill_target(mix)
    if not mask.any():
        assert target is mix
        return
    rewritten = [
        PodShape(c, 1, 1) if bad else PodShape(c, m, n) for (c, m, n), bad in zip(shapes, mask, strict=True)
    ]
    built = WorkloadMix(tuple(rewritten), mix.popularity)
    assert target.shapes == built.shapes
    np.testing.assert_allclose(target.g_table, built.g_table, rtol=0, atol=1e-12)
    np.testing.assert_allclose(target.h_table, built.h_table, rtol=0, atol=1e-12)  # (p renormalised)
    np.testing.assert_array_equal(target.cpu_breaks, built.cpu_breaks)
    np.testing.assert_array_equal(target.popularity, mix.popularity)  # the same p, shared
    assert not mix.g_table.flags.writeable
    assert not target.g_table.flags.writeable


@settings(max_examples=60, deadline=None)
@given(
    free=st.lists(st.integers(0, 1000), min_size=1, max_size=4),
    cpu_free=st.integers(0, 4000),
    milli=st.integers(1, 999),
)
def test_the_marked_class_counts_through_its_cpu_only(free: list[int], cpu_free: int, milli: int) -> None:
    """ΔF against the target = ΔF against the mix without the 810 class's GPU preference: its
    part is 0 where its CPU fits after the pod (all free GPU usable), else the node's free GPU."""
    target = refill_target(MIX)
    rest = WorkloadMix.of([(1000, 320, 1), (1000, 650, 1)], [0.3, 0.2])
    free_arr = np.array([free])
    ok = free_arr >= milli

    def delta(mix: WorkloadMix) -> np.ndarray:
        return fragmentation_delta(
            mix, free_arr, np.array([cpu_free]), cpu_milli=500, milli=milli, count=1, device_ok=ok
        )

    got = delta(target)
    others = 0.5 * delta(rest)  # the rest's popularities are renormalised from 0.5 to 1
    before = sum(free) if cpu_free < 1000 else 0
    after = sum(free) - milli if cpu_free - 500 < 1000 else 0
    own = 0.5 * (after - before)
    expect = np.where(ok, others + own, np.inf)
    np.testing.assert_allclose(got, expect, rtol=1e-9, atol=1e-6)


def _two_gpus(model: str | None = None):
    """n0: one GPU with a 320-milli pod on it (680 free); n1: one idle GPU. Plenty of CPU."""
    nodes = [gpu_node(f"n{i}", cpu_milli=64_000, gpu_model=model) for i in range(2)]
    running = [(plain_gpu_pod("old", gpu_milli=320, cpu_milli=1000), "n0", (0,))]
    return state_with(nodes, EMPTY, running)


@pytest.mark.parametrize(("refill", "node"), [(True, 1), (False, 0)])
def test_a_mid_size_pod_opens_the_idle_gpu_only_with_the_refill_target(refill: bool, node: int) -> None:
    """A 320-milli pod: on n0 (680 → 360 free) it ends the 680 milli a 650 pod could take; on n1
    (1000 → 680) it ends the idle GPU an 810 pod could take. FGD's mix: ΔF(n0) = 0.2·360 −
    0.5·320 = −88, ΔF(n1) = 0.5·680 = +340 → n0. With the 810 class counted through its CPU
    only: ΔF(n0) = +72, ΔF(n1) = 0 → n1, and n0's 680 stays for a 650 pod (30 milli left, not
    the 190 an 810 pod leaves). β off, so ΔF alone decides."""
    config = QoschedConfig(balance_weight=0.0, refill_target=refill)
    policy = make_policy("qosched", mix=MIX, config=config)
    pod = plain_gpu_pod("new", gpu_milli=320, cpu_milli=1000)
    ev = policy.evaluate(_two_gpus(), pod, np.arange(2))
    expect = [72.0, 0.0] if refill else [-88.0, 340.0]
    np.testing.assert_allclose(ev.extras["frag_delta_milli"], expect, atol=1e-6)
    assert best_candidate(ev) == node


def test_typed_pods_keep_fgd_mix() -> None:
    """A pod with a GPU type is left to FGD's measure (as β leaves it): the same ΔF either way."""
    pod = plain_gpu_pod("new", gpu_milli=320, cpu_milli=1000, gpu_spec=("T4",))
    deltas = []
    for refill in (True, False):
        policy = make_policy(
            "qosched", mix=MIX, config=QoschedConfig(balance_weight=0.0, refill_target=refill)
        )
        deltas.append(policy.evaluate(_two_gpus("T4"), pod, np.arange(2)).extras["frag_delta_milli"])
    np.testing.assert_array_equal(deltas[0], deltas[1])
    np.testing.assert_allclose(deltas[0], [-88.0, 340.0], atol=1e-6)  # FGD's, and feasible


def test_config_checks_the_flag() -> None:
    with pytest.raises(ValueError, match="refill_target"):
        QoschedConfig(refill_target=1)  # type: ignore[arg-type]
