"""Device choice per node and the short-axis reductions, on hand-written rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qosched.policies.placement import devices, rows
from qosched.policies.placement.base import Reason
from qosched.policies.placement.baselines.kube import worst_fit_evaluation
from qosched.policies.placement.testing import (
    ProfileTable,
    gpu_node,
    inference_pod,
    plain_gpu_pod,
    state_with,
)
from qosched.policies.state import ServiceParams

FREE = np.array([[300, 1000, 500, 0], [1000, 1000, 1000, 1000], [200, 100, 0, 0]])
OK_250 = FREE >= 250

CHOICES = [
    # rows: node 0 fits devices 0, 1, 2; node 1 all; node 2 none.
    ("first-fit", devices.first_fit, 1, [[0], [0], [-1]]),
    ("best-fit", devices.best_fit, 1, [[0], [0], [-1]]),  # least free that fits: 300
    ("worst-fit", devices.worst_fit, 1, [[1], [0], [-1]]),  # most free: 1000; ties → lower index
    ("best-fit-two", devices.best_fit, 2, [[0, 2], [0, 1], [-1, -1]]),
    ("worst-fit-two", devices.worst_fit, 2, [[1, 2], [0, 1], [-1, -1]]),
    ("four-of-three", devices.first_fit, 4, [[-1] * 4, [0, 1, 2, 3], [-1] * 4]),
    ("none-asked", devices.first_fit, 0, [[-1], [-1], [-1]]),
]


@pytest.mark.parametrize(("fn", "count", "want"), [c[1:] for c in CHOICES], ids=[c[0] for c in CHOICES])
def test_device_choice(fn, count: int, want: list[list[int]]) -> None:
    np.testing.assert_array_equal(fn(FREE, OK_250, count), want)


def test_by_key_takes_the_smallest_key_and_breaks_ties_low() -> None:
    key = np.array([[3.0, 1.0, 1.0, 0.0]])
    ok = np.array([[True, True, True, False]])
    assert devices.by_key(key, ok, 1).tolist() == [[1]]
    assert devices.by_key(key, ok, 3).tolist() == [[1, 2, 0]]


@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 20)), elements=st.floats(-1e6, 1e6)))
def test_short_axis_reductions_equal_numpy(x: np.ndarray) -> None:
    b = x > 0
    np.testing.assert_allclose(rows.row_sum(x), x.sum(axis=-1), rtol=1e-12, atol=1e-6)
    np.testing.assert_array_equal(rows.row_min(x), x.min(axis=-1))
    np.testing.assert_array_equal(rows.row_max(x), x.max(axis=-1))
    np.testing.assert_array_equal(rows.row_any(b), b.any(axis=-1))
    np.testing.assert_array_equal(rows.row_all(b), b.all(axis=-1))
    np.testing.assert_array_equal(rows.row_count(b), b.sum(axis=-1))


def test_single_column_reduction_is_a_copy() -> None:
    x = np.array([[1.0], [2.0]])
    out = rows.row_sum(x)
    out[0] = 99.0
    assert x[0, 0] == 1.0


TABLE = ProfileTable(
    {("nvidia-t4", "m"): ServiceParams(service_ms=10.0, second_moment_ms2=100.0, memory_mib=100.0)},
    {"nvidia-t4": 16_000.0},
)


def test_worst_fit_hosts_for_the_preemption_policies() -> None:
    nodes = [gpu_node("a", gpus=2), gpu_node("b", gpus=2)]
    running = [(plain_gpu_pod("x", gpu_milli=500, cpu_milli=16_000), "a", (1,))]
    st = state_with(nodes, TABLE, running)
    pod = plain_gpu_pod("p", gpu_milli=300, cpu_milli=1000)
    ev = worst_fit_evaluation(st, pod, np.arange(2), policy="qos-driven")
    # Free after, as fractions (cpu, memory, gpu): a (15/32, 1, 1200/2000), b (31/32, 1, 1700/2000).
    np.testing.assert_allclose(ev.raw_score, [(15 / 32 + 1 + 0.6) / 3, (31 / 32 + 1 + 0.85) / 3])
    assert ev.policy == "qos-driven"
    assert ev.devices[0, 0] == 0  # the emptier device of a
    # Interference-aware: an inference pod that would overload the only GPU is refused.
    busy = [(inference_pod("s", "m", rate_rps=70.0, slo_ms=100.0, gpu_milli=100), "a", (0,))]
    st2 = state_with([gpu_node("a")], TABLE, busy)
    heavy = inference_pod("h", "m", rate_rps=20.0, slo_ms=100.0, gpu_milli=100)  # ρ = 0.9
    assert worst_fit_evaluation(st2, heavy, np.array([0])).feasible[0]
    aware = worst_fit_evaluation(st2, heavy, np.array([0]), interference_aware=True)
    assert Reason(int(aware.reason[0])) == Reason.UTILIZATION
