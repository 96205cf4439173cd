"""Delivered QoS: availability, SLO attainment, surplus, pause slack, intervals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qosched.policies.fairness.qos import (
    availability,
    delivered_qos,
    has_slack,
    max_pause_s,
    mean_by_class,
    qos_after_pause,
    qos_surplus,
    running_s_from_intervals,
    slo_attainment,
    slo_attainment_from_latencies,
)

TOL = 1e-12


@pytest.mark.parametrize(
    ("submit_s", "running_s", "now_s", "want"),
    [
        (0.0, 50.0, 100.0, 0.5),
        (100.0, 45.0, 200.0, 0.45),
        (10.0, 0.0, 10.0, 1.0),  # no elapsed time: owed nothing yet
        (0.0, 0.0, 30.0, 0.0),  # pending since submission
        (0.0, 100.0, 100.0, 1.0),
        (-50.0, 25.0, 50.0, 0.25),  # times may be negative (relative clock)
    ],
    ids=["half", "offset-submit", "zero-elapsed", "never-ran", "always-ran", "negative-times"],
)
def test_availability_table(submit_s: float, running_s: float, now_s: float, want: float) -> None:
    assert float(availability(submit_s, running_s, now_s)) == pytest.approx(want, abs=TOL)


def test_availability_vectorised_and_broadcast() -> None:
    got = availability([0.0, 50.0, 90.0], [50.0, 25.0, 0.0], 100.0)
    np.testing.assert_allclose(got, [0.5, 0.5, 0.0], atol=TOL)


def test_availability_tolerates_rounding_only() -> None:
    # running time a hair above elapsed (float sums of intervals) clips to 1
    assert float(availability(0.0, 100.0 * (1 + 1e-12), 100.0)) == 1.0
    with pytest.raises(ValueError, match="running_s: exceeds"):
        availability(0.0, 101.0, 100.0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, float("nan"), 10.0), "running_s: NaN"),
        ((0.0, -1.0, 10.0), "running_s: negative"),
        ((20.0, 0.0, 10.0), "now_s: earlier than submit_s"),
        ((0.0, 1.0, float("inf")), "now_s: infinite"),
        ((0.0, [1.0, float("nan")], 10.0), "running_s: NaN at index 1"),
    ],
    ids=["nan", "negative-running", "now-before-submit", "inf-now", "nan-index"],
)
def test_availability_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        availability(*args)


@pytest.mark.parametrize(
    ("within", "total", "want"),
    [(90, 100, 0.9), (0, 0, 1.0), (0, 10, 0.0), (5.5, 11.0, 0.5)],
    ids=["ninety-pct", "no-requests", "all-missed", "seconds"],
)
def test_slo_attainment(within: float, total: float, want: float) -> None:
    assert float(slo_attainment(within, total)) == pytest.approx(want, abs=TOL)


def test_slo_attainment_rejects_within_above_total() -> None:
    with pytest.raises(ValueError, match="within"):
        slo_attainment(11, 10)


@pytest.mark.parametrize(
    ("latency_ms", "slo_ms", "want"),
    [([10, 20, 30, 40], 25.0, 0.5), ([], 25.0, 1.0), ([10, float("inf")], 100.0, 0.5), ([25.0], 25.0, 1.0)],
    ids=["half", "none-observed", "inf-is-miss", "boundary-meets"],
)
def test_slo_attainment_from_latencies(latency_ms: list, slo_ms: float, want: float) -> None:
    assert slo_attainment_from_latencies(latency_ms, slo_ms) == pytest.approx(want, abs=TOL)


def test_slo_attainment_from_latencies_rejects_bad_slo() -> None:
    with pytest.raises(ValueError, match="slo_ms"):
        slo_attainment_from_latencies([1.0], 0.0)


def test_delivered_qos_is_availability_times_attainment() -> None:
    # ran 80 of 100 s; met the SLO in 75 % of that: 60 good seconds of 100
    assert float(delivered_qos(0.0, 80.0, 100.0, 0.75)) == pytest.approx(0.6, abs=TOL)
    np.testing.assert_allclose(delivered_qos([0, 0], [50, 100], 100, [1.0, 0.5]), [0.5, 0.5], atol=TOL)
    with pytest.raises(ValueError, match="attainment"):
        delivered_qos(0.0, 1.0, 2.0, 1.5)


@pytest.mark.parametrize(
    ("delivered", "target", "want"),
    [(0.95, 0.9, 0.05), (0.4, 0.5, -0.1), (1.0, 1.0, 0.0)],
    ids=["above", "below", "exact"],
)
def test_qos_surplus(delivered: float, target: float, want: float) -> None:
    assert float(qos_surplus(delivered, target)) == pytest.approx(want, abs=TOL)


def test_qos_surplus_rejects_bad_target() -> None:
    with pytest.raises(ValueError, match=r"target: must be in \(0, 1\]"):
        qos_surplus(0.5, 0.0)


@pytest.mark.parametrize(
    ("running_s", "elapsed_s", "pause_s", "want"),
    [(90.0, 100.0, 0.0, 0.9), (90.0, 100.0, 50.0, 0.6), (0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 10.0, 0.0)],
    ids=["no-pause", "pause-50", "nothing-elapsed", "new-pod-paused"],
)
def test_qos_after_pause(running_s: float, elapsed_s: float, pause_s: float, want: float) -> None:
    assert float(qos_after_pause(running_s, elapsed_s, pause_s)) == pytest.approx(want, abs=TOL)


@pytest.mark.parametrize(
    ("running_s", "elapsed_s", "target", "want"),
    [
        (95.0, 100.0, 0.9, 95.0 / 0.9 - 100.0),  # 5.555... s
        (90.0, 100.0, 0.9, 0.0),  # exactly at target: no slack
        (80.0, 100.0, 0.9, 0.0),  # below target: none
        (100.0, 100.0, 1.0, 0.0),  # prod, always ran: still none
        (100.0, 100.0, 0.5, 100.0),  # free at 100 %: may pause as long as it ran
    ],
    ids=["batch-slack", "at-target", "below-target", "prod-never", "free-doubles"],
)
def test_max_pause_s(running_s: float, elapsed_s: float, target: float, want: float) -> None:
    assert float(max_pause_s(running_s, elapsed_s, target)) == pytest.approx(want, abs=1e-9)


def test_max_pause_with_attainment() -> None:
    # 100 s ran, attainment 0.6 -> 60 good seconds; target 0.5 -> 120 s allowed total, 20 s slack
    assert float(max_pause_s(100.0, 100.0, 0.5, 0.6)) == pytest.approx(20.0, abs=1e-9)


@given(
    elapsed=st.floats(1.0, 1e7),
    frac=st.floats(0.0, 1.0),
    target=st.floats(0.01, 1.0),
    attainment=st.floats(0.0, 1.0),
)
def test_max_pause_is_the_boundary(elapsed: float, frac: float, target: float, attainment: float) -> None:
    """After the maximal pause QoS equals the target (when there is slack); it never ends below."""
    running = frac * elapsed
    d = float(max_pause_s(running, elapsed, target, attainment))
    assert d >= 0.0
    after = float(qos_after_pause(running, elapsed, d, attainment))
    if d > 0:
        assert after == pytest.approx(target, rel=1e-9)
        assert bool(has_slack(running, elapsed, d * (1 - 1e-9), target, attainment))
        assert not bool(has_slack(running, elapsed, d * (1 + 1e-6) + 1e-6, target, attainment))
    else:
        assert attainment * running <= target * elapsed * (1 + 1e-12)


@given(
    elapsed=st.floats(1.0, 1e6),
    frac=st.floats(0.0, 1.0),
    pause=st.floats(0.0, 1e6),
    resume=st.floats(0.0, 1e6),
)
def test_pause_end_is_the_minimum(elapsed: float, frac: float, pause: float, resume: float) -> None:
    """Running again after the pause never lowers availability (why only the pause end is checked)."""
    running = frac * elapsed
    at_end = float(qos_after_pause(running, elapsed, pause))
    later = (running + resume) / (elapsed + pause + resume)
    assert later >= at_end - 1e-12


def test_has_slack_vectorised() -> None:
    got = has_slack([95.0, 95.0, 80.0], 100.0, [5.0, 6.0, 0.0], [0.9, 0.9, 0.9])
    assert got.tolist() == [True, False, False]


def test_pause_functions_reject_running_above_elapsed() -> None:
    for fn, args in [(qos_after_pause, (11.0, 10.0, 1.0)), (max_pause_s, (11.0, 10.0, 0.5))]:
        with pytest.raises(ValueError, match="running_s: exceeds"):
            fn(*args)


def test_running_from_intervals() -> None:
    # pod 0: [0,10) and [20, still running); pod 1: [5, 15); pod 2: none; now = 30
    got = running_s_from_intervals([0, 0, 1], [0.0, 20.0, 5.0], [10.0, np.inf, 15.0], 30.0, 3)
    np.testing.assert_allclose(got, [20.0, 10.0, 0.0], atol=TOL)
    # intervals after `now` do not count; a running interval counts only to now
    got = running_s_from_intervals([0, 0], [0.0, 40.0], [np.inf, 50.0], 12.5, 1)
    np.testing.assert_allclose(got, [12.5], atol=TOL)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0], [10.0], [5.0], 20.0, 1), "end_s: earlier than start_s"),
        (([1], [0.0], [5.0], 20.0, 1), "pod_index"),
        (([0.5], [0.0], [5.0], 20.0, 1), "pod_index"),
        (([0, 0], [0.0], [5.0], 20.0, 1), "shapes differ"),
        (([0], [float("nan")], [5.0], 20.0, 1), "start_s: NaN"),
    ],
    ids=["end-before-start", "index-out-of-range", "float-index", "shape-mismatch", "nan-start"],
)
def test_running_from_intervals_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        running_s_from_intervals(*args)


def test_mean_by_class() -> None:
    got = mean_by_class([1.0, 0.5, 0.2, 0.4], ["prod", "free", "free", "prod"])
    assert got == pytest.approx({"prod": 0.7, "free": 0.35}, abs=TOL)
    assert mean_by_class([], []) == {}
