"""Feasibility rule (models.md §A) and the percentile (tail) approximation."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from qosched.policies.latency import colocation_rule, queueing
from qosched.policies.latency.colocation_rule import ReasonCode, Thresholds, feasible
from qosched.policies.latency.sharing import DeviceServices, Prediction, predict
from qosched.policies.latency.tail import latency_quantile_ms, percentile_latency_ms, wait_quantile_ms

INF = math.inf


def _pred(latency: list[float], rho: float, service_rho: list[float] | None = None) -> Prediction:
    lat = np.array(latency, dtype=float)
    s_rho = np.full(lat.shape, rho) if service_rho is None else np.array(service_rho, dtype=float)
    return Prediction(lat, np.zeros_like(lat), lat, s_rho, np.array(rho))


# Each row: prediction, slo_ms, memory used, capacity, frontend util, new_mask, expected reason.
ROWS = [
    pytest.param(_pred([45, 55], 0.5), [100, 100], 100, 1000, 0.1, [True, False], ReasonCode.OK, id="fits"),
    pytest.param(
        _pred([45, 55], 0.5),
        [100, 100],
        800,
        1000,
        0.1,
        [True, False],
        ReasonCode.OK,
        id="memory-at-threshold",
    ),  # 800 ≤ 0.8·1000
    pytest.param(
        _pred([45, 55], 0.5), [100, 100], 801, 1000, 0.1, [True, False], ReasonCode.MEMORY, id="memory-over"
    ),
    pytest.param(
        _pred([45, 55], 0.5), [100, 100], 1, 0, 0.1, [True, False], ReasonCode.MEMORY, id="zero-capacity"
    ),
    pytest.param(
        _pred([45, 55], 0.5),
        [100, 100],
        1e9,
        INF,
        0.1,
        [True, False],
        ReasonCode.OK,
        id="unknown-capacity-passes",
    ),
    pytest.param(
        _pred([45, 55], 0.81),
        [100, 100],
        1,
        1000,
        0.1,
        [True, False],
        ReasonCode.UTILIZATION,
        id="device-utilisation",
    ),
    pytest.param(
        _pred([45, 55], 0.4, [0.2, 0.85]),
        [100, 100],
        1,
        1000,
        0.1,
        [True, False],
        ReasonCode.UTILIZATION,
        id="partition-utilisation",
    ),  # an MPS partition at 0.85
    pytest.param(
        _pred([INF, INF], INF),
        [INF, INF],
        1,
        1000,
        0.1,
        [True, False],
        ReasonCode.UTILIZATION,
        id="unbounded-without-slo",
    ),
    pytest.param(
        _pred([45, 55], 0.5), [100, 100], 1, 1000, 0.9, [True, False], ReasonCode.FRONTEND, id="frontend"
    ),
    pytest.param(
        _pred([45, 55], 0.5),
        [40, 100],
        1,
        1000,
        0.1,
        [True, False],
        ReasonCode.SLO_VIOLATION_NEW,
        id="slo-new",
    ),
    pytest.param(
        _pred([45, 55], 0.5),
        [100, 50],
        1,
        1000,
        0.1,
        [True, False],
        ReasonCode.SLO_VIOLATION_EXISTING,
        id="slo-existing",
    ),
    pytest.param(
        _pred([45, 55], 0.5),
        [40, 50],
        1,
        1000,
        0.1,
        [True, False],
        ReasonCode.SLO_VIOLATION_NEW,
        id="both-slos-new-first",
    ),
    pytest.param(
        _pred([45, 55], 0.9),
        [40, 50],
        900,
        1000,
        0.9,
        [True, False],
        ReasonCode.MEMORY,
        id="everything-fails-memory-first",
    ),
    pytest.param(_pred([45, 55], 0.5), [45, 55], 1, 1000, 0.1, None, ReasonCode.OK, id="slo-equal-is-met"),
    pytest.param(
        _pred([45, 55], 0.5),
        [100, 54],
        1,
        1000,
        0.1,
        None,
        ReasonCode.SLO_VIOLATION_EXISTING,
        id="no-new-mask",
    ),
]


@pytest.mark.parametrize(("pred", "slo", "used", "cap", "fe", "new", "want"), ROWS)
def test_feasibility_table(pred, slo, used, cap, fe, new, want: ReasonCode) -> None:
    ok, reason = feasible(pred, slo, used, cap, fe, new_mask=new)
    assert ReasonCode(int(reason)) is want
    assert bool(ok) == (want is ReasonCode.OK)


def test_masked_entries_never_fail() -> None:
    ds = DeviceServices.build([10.0, 0.0], [20.0, 0.0], mask=[True, False])
    pred = predict("time-slicing", ds)  # latency (27.5, 0): M/D/1 with ρ = 0.2
    ok, reason = feasible(pred, [30.0, 1e-9], 1, 1000, 0.0)
    assert bool(ok)
    assert reason == ReasonCode.OK


def test_custom_thresholds() -> None:
    pred = _pred([45, 55], 0.85)
    assert not bool(feasible(pred, [100, 100], 1, 1000, 0.1)[0])
    ok, _ = feasible(pred, [100, 100], 1, 1000, 0.1, Thresholds(utilization=0.9))
    assert bool(ok)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(memory_frac=0.0),
        dict(utilization=1.2),
        dict(frontend_utilization=float("nan")),
        dict(utilization=True),
    ],
    ids=["zero", "over-one", "nan", "bool"],
)
def test_thresholds_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="Thresholds"):
        Thresholds(**kwargs)


def test_every_reason_has_a_message() -> None:
    assert Thresholds() == Thresholds(0.8, 0.8, 0.8)  # the paper's thresholds
    for code in ReasonCode:
        assert code.message
        assert code.message != code.name


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((_pred([1], 0.1), [float("nan")], 1, 1, 0), "slo_ms"),
        ((_pred([1], 0.1), [0.0], 1, 1, 0), "slo_ms"),
        ((_pred([1], 0.1), [1.0], -1, 1, 0), "memory_used_mib"),
        ((_pred([1], 0.1), [1.0], 1, float("nan"), 0), "memory_capacity_mib"),
    ],
    ids=["nan-slo", "zero-slo", "negative-memory", "nan-capacity"],
)
def test_bad_input(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        feasible(*args)


def test_vectorised_matches_scalar_loop() -> None:
    rng = np.random.default_rng(3)
    shape = (200, 4, 3)
    ds = DeviceServices.build(
        rng.uniform(0, 20, shape), rng.uniform(1, 30, shape), mask=rng.random(shape) < 0.8
    )
    pred = predict("time-slicing", ds)
    slo = rng.uniform(20, 150, shape)
    used = rng.uniform(0, 1000, shape[:-1])
    fe = rng.uniform(0, 1, shape[:-1])
    new = np.zeros(shape, bool)
    new[..., 0] = True
    ok, reason = feasible(pred, slo, used, 1000.0, fe, new_mask=new)
    assert ok.shape == reason.shape == shape[:-1]
    for n in range(shape[0]):
        for d in range(shape[1]):
            v = ds.mask[n, d]
            lat = pred.latency_ms[n, d][v]
            want = ReasonCode.OK
            if not used[n, d] <= 800:
                want = ReasonCode.MEMORY
            elif not pred.utilization[n, d] <= 0.8:
                want = ReasonCode.UTILIZATION
            elif not fe[n, d] <= 0.8:
                want = ReasonCode.FRONTEND
            elif v[0] and lat[0] > slo[n, d, 0]:
                want = ReasonCode.SLO_VIOLATION_NEW
            elif np.any(lat[~new[n, d][v]] > slo[n, d][v][~new[n, d][v]]):
                want = ReasonCode.SLO_VIOLATION_EXISTING
            assert reason[n, d] == want, (n, d)
    assert {int(r) for r in np.unique(reason)} >= {0, 1, 2}


def test_percentile_slo() -> None:
    # Time-sliced (45, 55) ms, ρ = 0.5, W = 25: t_95 = (25/0.5)·ln(0.5/0.05) = 50·ln 10 = 115.13,
    # so the p95 latencies are 135.13 and 145.13 ms.
    pred = predict("time-slicing", DeviceServices.build([10.0, 10.0], [20.0, 30.0]))
    np.testing.assert_allclose(
        percentile_latency_ms(pred, 95.0), [20 + 50 * math.log(10), 30 + 50 * math.log(10)]
    )
    ok, reason = feasible(pred, [140.0, 140.0], 1, 1000, 0.1, new_mask=[False, True], slo_percentile=95.0)
    assert not bool(ok)
    assert reason == ReasonCode.SLO_VIOLATION_NEW
    # NaN percentile = the SLO of the second service is on its mean (55 ms)
    ok, _ = feasible(pred, [140.0, 60.0], 1, 1000, 0.1, slo_percentile=[95.0, np.nan])
    assert bool(ok)  # 135.13 ≤ 140 and 55 ≤ 60
    ok, _ = feasible(pred, [130.0, 60.0], 1, 1000, 0.1, slo_percentile=[95.0, np.nan])
    assert not bool(ok)  # 135.13 > 130
    ok, _ = feasible(pred, [140.0, 50.0], 1, 1000, 0.1, slo_percentile=[95.0, np.nan])
    assert not bool(ok)  # mean 55 > 50


@pytest.mark.parametrize(
    ("wait", "rho", "pct", "want"),
    [
        (20.0, 0.5, 95.0, 40 * math.log(10)),  # (20/0.5)·ln(0.5/0.05)
        (20.0, 0.5, 50.0, 0.0),  # ρ ≤ 1 − p: the median request does not wait
        (20.0, 0.5, 99.9, 40 * math.log(500)),  # ln(0.5/0.001)
        (0.0, 0.0, 99.0, 0.0),  # idle queue
        (INF, 1.0, 95.0, INF),
        (20.0, 1.0, 95.0, INF),
    ],
    ids=["p95", "p50", "p99.9", "idle", "unbounded-wait", "saturated"],
)
def test_wait_quantile_table(wait: float, rho: float, pct: float, want: float) -> None:
    assert wait_quantile_ms(wait, rho, pct) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9], ids=["rho-0.3", "rho-0.6", "rho-0.9"])
@pytest.mark.parametrize("pct", [90.0, 99.0], ids=["p90", "p99"])
def test_wait_quantile_is_exact_for_mm1(rho: float, pct: float) -> None:
    # M/M/1 FCFS waiting time: P(W > t) = ρ·exp(−(μ − λ)t) exactly, so t_p = ln(ρ/(1 − p))/(μ − λ).
    service_ms = 10.0
    rate_rps = rho / service_ms * 1000.0
    wait = queueing.mm1_wait_ms(rate_rps, service_ms)
    exact = math.log(rho / (1 - pct / 100)) / (1 / service_ms - rate_rps / 1000.0)
    assert wait_quantile_ms(wait, rho, pct) == pytest.approx(max(exact, 0.0), rel=1e-9)


@pytest.mark.parametrize("pct", [49.9, 100.0, -1.0], ids=["below-50", "100", "negative"])
def test_percentile_range(pct: float) -> None:
    with pytest.raises(ValueError, match=r"percentile must be in 50\.\.99\.9"):
        latency_quantile_ms(20.0, 20.0, 0.5, pct)


def test_doctests() -> None:
    result = doctest.testmod(colocation_rule)
    assert result.attempted > 0
    assert result.failed == 0
