"""SLA credits: tier table, resource prices, violated time, credit amounts and their properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qosched.policies.fairness.penalty import (
    CreditTier,
    ResourcePrices,
    SlaTiers,
    price_per_hour_usd,
    sla_credit_usd,
    violated_time_s,
)

TOL = 1e-12


@pytest.mark.parametrize(
    ("ratio", "want"),
    [
        (1.2, 0.0),
        (1.0, 0.0),
        (0.9999, 0.10),
        (0.99, 0.10),
        (0.9899, 0.30),
        (0.95, 0.30),
        (0.9499, 1.00),
        (0.0, 1.00),
    ],
    ids=["above", "at-target", "just-below", "tier1-floor", "tier2-top", "tier2-floor", "tier3-top", "zero"],
)
def test_credit_fraction_ec2_shape(ratio: float, want: float) -> None:
    assert float(SlaTiers().credit_fraction(ratio)) == want


def test_credit_fraction_custom_and_empty() -> None:
    tiers = SlaTiers((CreditTier(1.0, 0.1), CreditTier(0.5, 0.25)))
    np.testing.assert_array_equal(tiers.credit_fraction([1.0, 0.7, 0.4]), [0.0, 0.1, 0.25])
    np.testing.assert_array_equal(SlaTiers(()).credit_fraction([0.1, 2.0]), [0.0, 0.0])


@pytest.mark.parametrize(
    ("tiers", "match"),
    [
        ((CreditTier(1.1, 0.1),), "below_ratio"),
        ((CreditTier(1.0, 1.5),), "credit_frac"),
        ((CreditTier(0.9, 0.1), CreditTier(0.95, 0.3)), "strictly decrease"),
        ((CreditTier(1.0, 0.3), CreditTier(0.9, 0.1)), "must not decrease"),
    ],
    ids=["threshold-above-1", "credit-above-1", "thresholds-increase", "credits-decrease"],
)
def test_tiers_rejected(tiers: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SlaTiers(tiers)


@pytest.mark.parametrize(
    ("cpu_milli", "memory_mib", "gpu_milli", "factor", "want"),
    [
        (1000, 0, 0, 1.0, 0.031611),
        (0, 1024, 0, 1.0, 0.004237),
        (0, 0, 1000, 1.0, 0.35),
        (0, 0, 250, 1.0, 0.0875),  # a quarter GPU
        (12000, 16384, 1000, 1.0, 12 * 0.031611 + 16 * 0.004237 + 0.35),  # openb-pod-0000
        (1000, 1024, 1000, 0.0, 0.0),  # a class without SLA
    ],
    ids=["one-core", "one-gib", "one-gpu", "quarter-gpu", "trace-pod", "factor-zero"],
)
def test_price_per_hour(cpu_milli: int, memory_mib: int, gpu_milli: int, factor: float, want: float) -> None:
    assert float(price_per_hour_usd(cpu_milli, memory_mib, gpu_milli, price_factor=factor)) == pytest.approx(
        want, abs=TOL
    )


def test_price_custom_and_rejects() -> None:
    prices = ResourcePrices(cpu_core_hour_usd=1.0, memory_gib_hour_usd=0.0, gpu_hour_usd=10.0)
    np.testing.assert_allclose(price_per_hour_usd([500, 0], 0, [0, 2000], prices), [0.5, 20.0], atol=TOL)
    with pytest.raises(ValueError, match="gpu_hour_usd"):
        ResourcePrices(gpu_hour_usd=-1.0)
    with pytest.raises(ValueError, match="memory_mib: NaN"):
        price_per_hour_usd(1, float("nan"), 1)


@pytest.mark.parametrize(
    ("delivered", "elapsed_s", "target", "want"),
    [(0.8, 1000.0, 0.9, 100.0), (0.95, 1000.0, 0.9, 0.0), (0.0, 3600.0, 1.0, 3600.0)],
    ids=["short-100s", "met", "never-ran"],
)
def test_violated_time(delivered: float, elapsed_s: float, target: float, want: float) -> None:
    assert float(violated_time_s(delivered, elapsed_s, target)) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize(
    ("delivered", "elapsed_s", "target", "price", "want"),
    [
        (1.0, 36000.0, 1.0, 1.0, 0.0),  # met
        (0.995, 36000.0, 1.0, 1.0, 0.05 * 0.10),  # 0.05 h violated, 10 % tier
        (0.97, 36000.0, 1.0, 1.0, 0.3 * 0.30),  # 0.3 h, 30 %
        (0.5, 36000.0, 1.0, 2.0, 5.0 * 2.0 * 1.0),  # 5 h at $2/h, 100 %
        (0.89, 3600.0, 0.9, 1.0, 0.01 * 0.30),  # batch: ratio 0.98889 < 0.99 -> 30 %, 0.01 h
        (0.4975, 7200.0, 0.5, 1.0, 0.005 * 0.10),  # free: ratio 0.995 -> 10 %
        (0.4, 7200.0, 0.5, 1.0, 0.2 * 1.0),  # free: ratio 0.8 -> 100 %
    ],
    ids=["met", "prod-10pct", "prod-30pct", "prod-100pct", "batch-30pct", "free-10pct", "free-100pct"],
)
def test_sla_credit_table(
    delivered: float, elapsed_s: float, target: float, price: float, want: float
) -> None:
    assert float(sla_credit_usd(delivered, elapsed_s, target, price)) == pytest.approx(
        want, rel=1e-9, abs=1e-15
    )


def test_sla_credit_vectorised() -> None:
    got = sla_credit_usd([1.0, 0.97, 0.4], 36000.0, [1.0, 1.0, 0.5], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(got, [0.0, 0.09, 1.0], atol=1e-12)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1.2, 10.0, 1.0, 1.0), "delivered: QoS above 1"),
        ((0.5, 10.0, 0.0, 1.0), "target"),
        ((0.5, -1.0, 1.0, 1.0), "elapsed_s: negative"),
        ((0.5, 10.0, 1.0, float("inf")), "price_hour_usd: infinite"),
    ],
    ids=["qos-above-1", "target-0", "negative-elapsed", "inf-price"],
)
def test_sla_credit_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sla_credit_usd(*args)


@given(
    q1=st.floats(0.0, 1.0),
    q2=st.floats(0.0, 1.0),
    elapsed=st.floats(0.0, 1e7),
    target=st.floats(0.01, 1.0),
    price=st.floats(0.0, 100.0),
)
def test_credit_nonnegative_and_monotone(
    q1: float, q2: float, elapsed: float, target: float, price: float
) -> None:
    lo, hi = min(q1, q2), max(q1, q2)
    c_lo = float(sla_credit_usd(lo, elapsed, target, price))
    c_hi = float(sla_credit_usd(hi, elapsed, target, price))
    assert c_lo >= 0.0
    assert c_hi >= 0.0
    assert c_lo >= c_hi - 1e-12  # more QoS never earns a larger credit
    if hi >= target:
        assert c_hi == 0.0


@given(
    q=st.floats(0.0, 1.0),
    elapsed=st.floats(0.0, 1e7),
    target=st.floats(0.01, 1.0),
    p1=st.floats(0.0, 100.0),
    p2=st.floats(0.0, 100.0),
)
def test_credit_grows_with_price(q: float, elapsed: float, target: float, p1: float, p2: float) -> None:
    lo, hi = sorted((p1, p2))
    assert (
        float(sla_credit_usd(q, elapsed, target, lo)) <= float(sla_credit_usd(q, elapsed, target, hi)) + 1e-12
    )
