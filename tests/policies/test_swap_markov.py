"""The edge-TPU ``"markov"`` wait: Pollaczek–Khinchine plus the dependence the swap creates
between consecutive service times (queueing.edgetpu_swap_queue, Notes).

Checked against a simulated FCFS queue (Lindley's recursion, Poisson arrivals, swap on model
change) where P-K is measurably low, and reduced to P-K where there is no dependence.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.latency.queueing import edgetpu_swap_queue
from qosched.policies.latency.sharing import DeviceServices, ModelParams, predict


def simulated_wait_ms(
    rates_rps: list[float], service_ms: list[float], swap_ms: list[float], n: int, seed: int
) -> float:
    """Mean wait of a FCFS edge TPU, Poisson arrivals, deterministic S, swap O on model change
    (the first tenth dropped as warm-up)."""
    rng = np.random.default_rng(seed)
    lam = np.asarray(rates_rps) / 1000.0
    cls = rng.choice(len(lam), size=n, p=lam / lam.sum())
    gaps = rng.exponential(1.0 / lam.sum(), size=n)
    svc = np.asarray(service_ms)[cls]
    svc[1:] += np.where(cls[1:] != cls[:-1], np.asarray(swap_ms)[cls[1:]], 0.0)
    wait = np.empty(n)
    w = 0.0
    for k in range(n):
        wait[k] = w
        w = max(0.0, w + svc[k] - gaps[(k + 1) % n])
    return float(wait[n // 10 :].mean())


# Ibis-like points: a long model with a fast, frequent one (inception_v4 + mobilenet_v2 at
# vary_rho 0.2 and 0.4) and inception_v3 + ssd_mobilenet_v2 at 0.3. Simulated means (seed 3,
# 300,000 requests) vs P-K: P-K is 4-7 % low, the Markov wait within 2 %.
CASES = [
    ([1.382, 16.62], [125.13, 4.91], [19.43, 10.43]),
    ([2.764, 16.62], [125.13, 4.91], [19.43, 10.43]),
    ([3.642, 7.149], [62.95, 19.23], [19.39, 24.63]),
]


@pytest.mark.parametrize(
    ("rates", "service", "swap"), CASES, ids=["v4-mnet-0.2", "v4-mnet-0.4", "v3-ssd-0.3"]
)
def test_markov_wait_matches_simulation(rates: list[float], service: list[float], swap: list[float]) -> None:
    sim = simulated_wait_ms(rates, service, swap, 300_000, seed=3)
    markov = float(edgetpu_swap_queue(rates, service, swap, swap_moment="markov").wait_ms[0])
    pk = float(edgetpu_swap_queue(rates, service, swap, swap_moment="bernoulli").wait_ms[0])
    assert markov == pytest.approx(sim, rel=0.02)
    assert pk < sim * 0.975  # P-K is low here: the check can tell the two apart
    assert abs(markov - sim) < abs(pk - sim)


def test_hand_computed_two_models() -> None:
    """λ = (10, 10) rps, S = (20, 30), O = (10, 20) ms, λ = 0.02/ms, p = q = ½.

    E[D | c_k = b] = (25, 40), E[D] = 32.5, ρ = 0.65; E[D²] = ½(½·20² + ½·30²) + ½(½·30² + ½·50²)
    = 1175; the request after a model-b request: m = 40 − ½O = (35, 30);
    L_b = e^{−λd_b}(½ + ½e^{−λO_b}), D* = ½(L_1 + L_2), W*(λ) = 0.35/D*;
    Δ = (−7.5, 7.5) + (W*/λ)(L − D*); Cov = ½Δ_1·2.5 − ½Δ_2·2.5; W = λ(1175 + 2·Cov)/(2·0.35).
    """
    lam = 0.02
    lb = np.exp(-lam * np.array([20.0, 30.0])) * (0.5 + 0.5 * np.exp(-lam * np.array([10.0, 20.0])))
    dstar = lb.mean()
    delta = np.array([-7.5, 7.5]) + (0.35 / dstar / lam) * (lb - dstar)
    cov = 0.5 * delta[0] * 2.5 - 0.5 * delta[1] * 2.5
    expected = lam * (1175.0 + 2.0 * cov) / 0.7
    got = edgetpu_swap_queue([10, 10], [20, 30], [10, 20], swap_moment="markov")
    pk = edgetpu_swap_queue([10, 10], [20, 30], [10, 20], swap_moment="bernoulli")
    assert float(pk.wait_ms[0]) == pytest.approx(lam * 1175.0 / 0.7, rel=1e-12)
    assert float(got.wait_ms[0]) == pytest.approx(expected, rel=1e-12)
    assert cov < 0.0  # here the long model is the one that swaps more: a shorter wait than P-K


def test_symmetric_swaps_leave_pk() -> None:
    """Equal swap costs and rates: the request after any request has the same mean (30 ms), so
    the covariance is 0 and the wait is P-K's λE[D²]/(2(1 − ρ)) = 0.02·950/0.8 = 23.75."""
    got = edgetpu_swap_queue([10, 10], [20, 30], [10, 10], swap_moment="markov")
    assert float(got.wait_ms[0]) == pytest.approx(23.75, rel=1e-12)


@pytest.mark.parametrize(
    ("rates", "service", "swap"),
    [
        ([5.0], [50.0], [20.0]),  # one model: no swap, M/D/1
        ([5.0, 7.0], [50.0, 20.0], [0.0, 0.0]),  # no swap cost: i.i.d. service
        ([0.0, 7.0], [50.0, 20.0], [10.0, 10.0]),  # one active model
        ([0.0, 0.0], [50.0, 20.0], [10.0, 10.0]),  # no load
    ],
    ids=["single", "no-swap-cost", "one-active", "no-load"],
)
def test_reduces_to_pk_without_dependence(
    rates: list[float], service: list[float], swap: list[float]
) -> None:
    markov = edgetpu_swap_queue(rates, service, swap, swap_moment="markov")
    bern = edgetpu_swap_queue(rates, service, swap, swap_moment="bernoulli")
    np.testing.assert_allclose(markov.latency_ms, bern.latency_ms, rtol=1e-12)


@pytest.mark.parametrize("rate", [1.1e-308, 1e-12, 1e-3], ids=["denormal", "tiny", "small"])
def test_vanishing_load_is_finite(rate: float) -> None:
    """The transform is evaluated without dividing by λ (hypothesis found NaN at λ = 1e-308)."""
    m = edgetpu_swap_queue([rate, 2 * rate], [1.0, 30.0], [5.0, 5.0], swap_moment="markov")
    assert np.isfinite(m.latency_ms).all()
    # no wait: S' = S + (1 − λᵢ/λ)O = (1 + ⅔·5, 30 + ⅓·5)
    np.testing.assert_allclose(m.latency_ms, [1.0 + 10.0 / 3.0, 30.0 + 5.0 / 3.0], rtol=1e-3)


def test_unbounded_and_masked() -> None:
    over = edgetpu_swap_queue([10.0, 10.0], [60.0, 60.0], [10.0, 10.0], swap_moment="markov")
    assert np.isinf(over.latency_ms).all()
    padded = edgetpu_swap_queue(
        [1.4, 16.6, 99.0],
        [125.0, 4.9, 1e6],
        [19.4, 10.4, 1e6],
        swap_moment="markov",
        mask=[True, True, False],
    )
    plain = edgetpu_swap_queue([1.4, 16.6], [125.0, 4.9], [19.4, 10.4], swap_moment="markov")
    np.testing.assert_allclose(padded.latency_ms[:2], plain.latency_ms, rtol=1e-12)
    assert padded.latency_ms[2] == 0.0


def test_model_params_default_is_markov() -> None:
    services = DeviceServices.build([2.764, 16.62], [125.13, 4.91], swap_ms=[19.43, 10.43])
    default = predict("edgetpu", services, ModelParams()).latency_ms
    markov = predict("edgetpu", services, ModelParams(swap_moment="markov")).latency_ms
    np.testing.assert_array_equal(default, markov)
    with pytest.raises(ValueError, match="swap_moment must be one of paper, bernoulli, markov"):
        ModelParams(swap_moment="poisson")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    rates=st.lists(st.floats(0.0, 30.0), min_size=2, max_size=5),
    service=st.floats(1.0, 150.0),
    spread=st.floats(0.05, 1.0),
    swap=st.floats(0.0, 30.0),
)
def test_never_nan_and_at_least_the_service(
    rates: list[float], service: float, spread: float, swap: float
) -> None:
    k = len(rates)
    s = service * np.linspace(spread, 1.0, k)
    m = edgetpu_swap_queue(rates, s, [swap] * k, swap_moment="markov")
    assert not np.isnan(m.latency_ms).any()
    assert (m.latency_ms >= m.service_ms - 1e-9).all()
    assert (m.wait_ms >= 0.0).all()
