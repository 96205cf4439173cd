"""Hand-computed tables, edge rows and properties of qosched.policies.latency.queueing."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.latency import queueing as q

INF = math.inf


# --------------------------------------------------------------------------------------------
# single-class formulas: (rate_rps, service_ms, expected_ms); λ/1000 is per ms
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rate_rps", "service_ms", "want_ms"),
    [
        (25.0, 20.0, 30.0),  # ρ = 0.025·20 = 0.5: 20 + 0.5·20/(2·0.5) = 30
        (10.0, 50.0, 75.0),  # ρ = 0.5: 50 + 0.5·50/1 = 75
        (40.0, 20.0, 60.0),  # ρ = 0.8: 20 + 0.8·20/(2·0.2) = 20 + 40 = 60
        (0.0, 20.0, 20.0),  # no load: bare service
        (50.0, 20.0, INF),  # ρ = 1: no steady state
        (80.0, 20.0, INF),  # ρ = 1.6
    ],
    ids=["rho-0.5", "rho-0.5-long", "rho-0.8", "rate-0", "rho-1", "rho-1.6"],
)
def test_md1_latency_table(rate_rps: float, service_ms: float, want_ms: float) -> None:
    assert q.md1_latency_ms(rate_rps, service_ms) == pytest.approx(want_ms, rel=1e-12)


@pytest.mark.parametrize(
    ("rate_rps", "service_ms", "wait_ms", "latency_ms"),
    [
        (25.0, 20.0, 20.0, 40.0),  # ρ = 0.5: W = 0.5·20/0.5 = 20, R = 20/0.5 = 40
        (10.0, 50.0, 50.0, 100.0),  # ρ = 0.5: W = 50, R = 100
        (40.0, 20.0, 80.0, 100.0),  # ρ = 0.8: W = 0.8·20/0.2 = 80, R = 20/0.2 = 100
        (0.0, 20.0, 0.0, 20.0),
        (50.0, 20.0, INF, INF),
    ],
    ids=["rho-0.5", "rho-0.5-long", "rho-0.8", "rate-0", "rho-1"],
)
def test_mm1_table(rate_rps: float, service_ms: float, wait_ms: float, latency_ms: float) -> None:
    assert q.mm1_wait_ms(rate_rps, service_ms) == pytest.approx(wait_ms, rel=1e-12)
    assert q.mm1_latency_ms(rate_rps, service_ms) == pytest.approx(latency_ms, rel=1e-12)


@pytest.mark.parametrize(
    ("rate_rps", "mean_ms", "second_ms2", "want_ms"),
    [
        (25.0, 20.0, 800.0, 20.0),  # exponential E[S²] = 2S²: 0.025·800/(2·0.5) = 20 = M/M/1 wait
        (25.0, 20.0, 400.0, 10.0),  # deterministic: 0.025·400/1 = 10 = M/D/1 wait (30 − 20)
        (10.0, 20.0, 600.0, 3.75),  # ρ = 0.2: 0.01·600/(2·0.8) = 3.75
        (0.0, 20.0, 600.0, 0.0),
        (60.0, 20.0, 600.0, INF),  # ρ = 1.2
    ],
    ids=["exponential", "deterministic", "scv-0.5", "rate-0", "overload"],
)
def test_mg1_wait_table(rate_rps: float, mean_ms: float, second_ms2: float, want_ms: float) -> None:
    assert q.mg1_wait_ms(rate_rps, mean_ms, second_ms2) == pytest.approx(want_ms, rel=1e-12)


@pytest.mark.parametrize(
    ("rate_rps", "frontend_ms", "util", "want_ms"),
    [
        (100.0, 3.0, 0.3, 3.0 / 0.7),  # ρ = 0.1·3 = 0.3: 1/(μ − λ) = 3/(1 − 0.3)
        (0.0, 3.0, 0.0, 3.0),
        (100.0, 0.0, 0.0, 0.0),  # no front end
        (400.0, 3.0, 1.2, INF),  # ρ = 1.2
    ],
    ids=["rho-0.3", "rate-0", "no-frontend", "overload"],
)
def test_frontend_table(rate_rps: float, frontend_ms: float, util: float, want_ms: float) -> None:
    assert q.frontend_utilization(rate_rps, frontend_ms) == pytest.approx(util, rel=1e-12)
    assert q.frontend_latency_ms(rate_rps, frontend_ms) == pytest.approx(want_ms, rel=1e-12)


def test_network_constant_is_the_papers() -> None:
    assert q.NETWORK_MS_DEFAULT == 10.0


@pytest.mark.parametrize(
    ("servers", "erlangs", "want"),
    [
        (1, 0.5, 0.5),  # one server: C = ρ
        (2, 1.0, 1.0 / 3.0),  # B(2,1) = 0.2; C = 0.2/(1 − 0.5·0.8)
        (3, 2.0, 4.0 / 9.0),  # B(3,2) = 4/19; C = (4/19)/(1 − (2/3)(15/19)) = 4/9
        (4, 0.0, 0.0),
        (2, 2.0, 1.0),  # a = c: saturated
    ],
    ids=["c1", "c2-a1", "c3-a2", "idle", "saturated"],
)
def test_erlang_c_table(servers: int, erlangs: float, want: float) -> None:
    assert q.erlang_c(servers, erlangs) == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------------------------
# co-located services (last axis)
# --------------------------------------------------------------------------------------------
EDGETPU_ROWS = [
    pytest.param(
        dict(rates_rps=[10, 10], service_ms=[20, 30], swap_ms=[10, 10]),
        [48.125, 58.125],
        0.6,
        # q = 0.5, S' = (25, 35), ρ = 0.01·25 + 0.01·35 = 0.6, E[S'²] = (625 + 1225)/2 = 925,
        # W = 0.02·925/(2·0.4) = 23.125
        id="paper-two-models",
    ),
    pytest.param(
        dict(rates_rps=[10, 10], service_ms=[20, 30], swap_ms=[10, 10], swap_moment="bernoulli"),
        [48.75, 58.75],
        0.6,
        # E[S'₁²] = 0.5·20² + 0.5·30² = 650, E[S'₂²] = 0.5·30² + 0.5·40² = 1250, mix 950,
        # W = 0.02·950/0.8 = 23.75
        id="bernoulli-two-models",
    ),
    pytest.param(
        dict(rates_rps=[10, 10], service_ms=[20, 30], swap_ms=[10, 10], second_moment_ms2=[500, 900]),
        [49.375, 59.375],
        0.6,
        # Var S₁ = 500 − 400 = 100 added: E[S'²] = ((625 + 100) + 1225)/2 = 975, W = 0.02·975/0.8
        id="paper-with-variance",
    ),
    pytest.param(
        dict(rates_rps=[10, 10], service_ms=[20, 30], swap_ms=[10, 10], host_tail_ms=[0, 10]),
        [37.5, 47.5],
        0.5,
        # device times D' = (25, 35 − 10) = (25, 25), ρ = 0.5, E[D²] = 625, W = 0.02·625/(2·0.5) = 12.5,
        # R = S' + W = (37.5, 47.5)
        id="host-tail",
    ),
    pytest.param(
        dict(rates_rps=[1.214, 7.149], service_ms=[62.95, 19.23], swap_ms=[19.39, 24.63]),
        [87.22074248, 30.50082738],
        0.25957929,
        # Ibis vary_rho=0.1: p = (0.145163, 0.854837), S' = (62.95 + 0.854837·19.39, 19.23 + 0.145163·24.63)
        # = (79.52529, 22.80537); ρ = 0.001214·79.52529 + 0.007149·22.80537 = 0.259579;
        # E[S'²] = 0.145163·79.52529² + 0.854837·22.80537² = 1362.639; W = 0.008363·1362.639/(2·0.740421) = 7.69546
        id="ibis-level-0.1",
    ),
    pytest.param(
        dict(rates_rps=[25, 7], service_ms=[20, 30], swap_ms=[10, 10], mask=[True, False]),
        [30.0, 0.0],
        0.5,
        # the masked model carries no load: a lone model, no swap, M/D/1 = 30; masked output 0
        id="masked-is-alone",
    ),
    pytest.param(
        dict(rates_rps=[0, 0], service_ms=[20, 30], swap_ms=[10, 10]),
        [30.0, 40.0],
        0.0,
        # no load: each of two models follows the other (q = 1): S + O, no wait
        id="rate-0",
    ),
    pytest.param(
        dict(rates_rps=[20, 20], service_ms=[20, 30], swap_ms=[10, 10]),
        [INF, INF],
        1.2,
        # ρ = 0.02·25 + 0.02·35 = 1.2
        id="overload",
    ),
]


@pytest.mark.parametrize(("kwargs", "want_ms", "want_rho"), EDGETPU_ROWS)
def test_edgetpu_swap_table(kwargs: dict, want_ms: list[float], want_rho: float) -> None:
    metrics = q.edgetpu_swap_queue(**kwargs)
    np.testing.assert_allclose(metrics.latency_ms, want_ms, rtol=1e-8)
    assert float(metrics.utilization) == pytest.approx(want_rho, rel=1e-7)
    if "host_tail_ms" not in kwargs:
        only = {k: v for k, v in kwargs.items() if k != "swap_moment"}
        np.testing.assert_allclose(
            q.edgetpu_swap_latency_ms(**only, swap_moment=kwargs.get("swap_moment", "paper")),
            want_ms,
            rtol=1e-8,
        )


@pytest.mark.parametrize(
    ("rates", "service", "want_ms", "want_rho"),
    [
        ([10, 10], [20, 30], [45.0, 55.0], 0.5),  # E[S] = 25, ρ = 0.5: W = 25·0.5/0.5 = 25
        # λ = 0.03/ms, ρ = 0.4 + 0.3 = 0.7, E[S] = 0.7/0.03 = 23.333, W = 23.333·0.7/0.3 = 54.444
        ([20, 10], [20, 30], [20 + 490 / 9, 30 + 490 / 9], 0.7),
        ([0, 0], [20, 30], [20.0, 30.0], 0.0),
        ([30, 20], [20, 30], [INF, INF], 1.2),
    ],
    ids=["equal-rates", "unequal-rates", "rate-0", "overload"],
)
def test_time_sliced_table(
    rates: list[float], service: list[float], want_ms: list[float], want_rho: float
) -> None:
    m = q.time_sliced_queue(rates, service)
    np.testing.assert_allclose(m.latency_ms, want_ms, rtol=1e-12)
    np.testing.assert_allclose(q.time_sliced_latency_ms(rates, service), want_ms, rtol=1e-12)
    assert float(m.utilization) == pytest.approx(want_rho, rel=1e-12)


@pytest.mark.parametrize(
    ("rates", "service", "cores", "want_ms"),
    [
        ([10, 10], [20, 30], 1, [40.0, 60.0]),  # ρ = 0.5: S/(1 − ρ)
        ([50], [20], 2, [80 / 3]),  # a = 1, c = 2: C = 1/3, slowdown 1 + (1/3)/1 = 4/3
        ([100], [20], 2, [INF]),  # a = 2 = c
        ([0, 0], [20, 30], 4, [20.0, 30.0]),
    ],
    ids=["one-core", "two-cores", "saturated", "rate-0"],
)
def test_processor_sharing_table(
    rates: list[float], service: list[float], cores: int, want_ms: list[float]
) -> None:
    np.testing.assert_allclose(
        q.processor_sharing_latency_ms(rates, service, cores=cores), want_ms, rtol=1e-12
    )


def test_shapes_scalar_list_ndarray_and_broadcasting() -> None:
    assert q.md1_latency_ms(25, 20).shape == ()
    np.testing.assert_allclose(q.md1_latency_ms([0, 25, 50], 20), [20, 30, INF])
    grid = q.md1_latency_ms(np.array([[0.0], [25.0]]), np.array([20.0, 10.0]))  # (2,1) x (2,) → (2,2)
    np.testing.assert_allclose(grid, [[20, 10], [30, 10 + 0.25 * 10 / 1.5]])
    # edge TPU over a batch of devices: (3 devices, 2 services), the device axis first
    lat = q.edgetpu_swap_latency_ms([[10, 10], [0, 0], [20, 20]], [20, 30], [10, 10])
    assert lat.shape == (3, 2)
    np.testing.assert_allclose(lat[0], [48.125, 58.125])
    np.testing.assert_allclose(lat[1], [30, 40])
    assert np.isinf(lat[2]).all()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: q.md1_latency_ms(-1.0, 20.0), "rate_rps"),
        (lambda: q.md1_latency_ms(float("nan"), 20.0), "rate_rps"),
        (lambda: q.md1_latency_ms(1.0, 0.0), "service_ms"),
        (lambda: q.mg1_wait_ms(1.0, 20.0, 100.0), "second_moment_ms2"),
        (lambda: q.edgetpu_swap_latency_ms([1, 1], [20, 30], [-1, 0]), "swap_ms"),
        (lambda: q.edgetpu_swap_queue([1, 1], [20, 30], [1, 1], host_tail_ms=[25, 0]), "host_tail_ms"),
        (lambda: q.edgetpu_swap_queue([1], [20], [1], swap_moment="exact"), "swap_moment"),  # type: ignore[arg-type]
        (lambda: q.time_sliced_latency_ms([1, 1], [20, 30], mask=[1, 0]), "mask"),
        (lambda: q.erlang_c(1.5, 1.0), "servers"),
        (lambda: q.processor_sharing_latency_ms([1], [2], cores=0), "cores"),
        (lambda: q.frontend_latency_ms(1.0, float("inf")), "frontend_ms"),
    ],
    ids=[
        "negative-rate",
        "nan-rate",
        "zero-service",
        "negative-variance",
        "negative-swap",
        "tail-over-service",
        "unknown-moment",
        "int-mask",
        "fractional-servers",
        "zero-cores",
        "inf-frontend",
    ],
)
def test_bad_input_names_the_field(call, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        call()


@pytest.mark.parametrize("module", [q], ids=["queueing"])
def test_doctests(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 10
    assert result.failed == 0


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------
rates = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)
services = st.floats(min_value=0.05, max_value=500.0, allow_nan=False)
scvs = st.floats(min_value=0.0, max_value=4.0)


@settings(max_examples=200, deadline=None)
@given(rate=rates, service=services, scv=scvs, extra=st.floats(min_value=0.0, max_value=100.0))
def test_single_queue_properties(rate: float, service: float, scv: float, extra: float) -> None:
    m2 = service * service * (1 + scv)
    for f in (
        lambda r: q.md1_latency_ms(r, service),
        lambda r: q.mm1_latency_ms(r, service),
        lambda r: service + q.mg1_wait_ms(r, service, m2),
        lambda r: q.processor_sharing_latency_ms([r], [service])[0],
        lambda r: service + q.frontend_latency_ms(r, service),
    ):
        low, high = float(f(rate)), float(f(rate + extra))
        assert not math.isnan(low)
        assert not math.isnan(high)
        assert low >= service * (1 - 1e-12)  # latency >= service time
        assert high >= low * (1 - 1e-12)  # monotone in rate (inf >= inf)


@settings(max_examples=200, deadline=None)
@given(
    lam=st.lists(rates, min_size=1, max_size=5),
    data=st.data(),
    scale=st.floats(min_value=1.0, max_value=5.0),
)
def test_shared_queue_properties(lam: list[float], data: st.DataObject, scale: float) -> None:
    k = len(lam)
    s = np.array(data.draw(st.lists(services, min_size=k, max_size=k)))
    o = np.array(data.draw(st.lists(st.floats(0.0, 50.0), min_size=k, max_size=k)))
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    lam_arr = np.array(lam)
    for moment in ("paper", "bernoulli"):
        base = q.edgetpu_swap_latency_ms(lam_arr, s, o, swap_moment=moment, mask=mask)
        more = q.edgetpu_swap_latency_ms(lam_arr * scale, s, o, swap_moment=moment, mask=mask)
        assert not np.isnan(base).any()
        assert not np.isnan(more).any()
        assert (base[mask] >= s[mask] * (1 - 1e-12)).all()
        assert (base[~mask] == 0).all()
        # Scaling every rate keeps the mix (and the swap probabilities): the wait can only grow.
        assert (more[mask] >= base[mask] * (1 - 1e-9)).all()
    for fn in (q.time_sliced_latency_ms, q.processor_sharing_latency_ms):
        base = fn(lam_arr, s, mask=mask)
        more = fn(lam_arr * scale, s, mask=mask)
        assert not np.isnan(base).any()
        assert (base[mask] >= s[mask] * (1 - 1e-12)).all()
        assert (more[mask] >= base[mask] * (1 - 1e-9)).all()


@settings(max_examples=200, deadline=None)
@given(lam=st.lists(rates, min_size=2, max_size=5), data=st.data(), bump=st.floats(0.0, 100.0))
def test_processor_sharing_is_monotone_in_every_rate(
    lam: list[float], data: st.DataObject, bump: float
) -> None:
    k = len(lam)
    s = np.array(data.draw(st.lists(services, min_size=k, max_size=k)))
    j = data.draw(st.integers(0, k - 1))
    more = np.array(lam)
    more[j] += bump
    base = q.processor_sharing_latency_ms(lam, s)
    after = q.processor_sharing_latency_ms(more, s)
    assert (after >= base * (1 - 1e-12)).all()


def test_paper_time_slicing_is_not_monotone_documented_counterexample() -> None:
    # λ = 5 rps of S = 100 ms alone: ρ = 0.5, W = 100 → 200 ms. Adding 100 rps of 0.1 ms:
    # ρ = 0.51, E[S] = 0.51/0.105 = 4.857, W = 4.857·0.51/0.49 = 5.055 → 105.06 ms (see sharing.ModelParams).
    alone = q.time_sliced_latency_ms([5.0, 0.0], [100.0, 0.1])
    crowded = q.time_sliced_latency_ms([5.0, 100.0], [100.0, 0.1])
    assert alone[0] == pytest.approx(200.0)
    assert crowded[0] == pytest.approx(100 + (0.51 / 0.105) * 0.51 / 0.49)
    assert crowded[0] < alone[0]
