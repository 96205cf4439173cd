"""Fair-share optimiser: model helpers, feasibility, max-min optimality against a bisection
reference, within-class spread against the proportional split, statuses and fallbacks, compile
once, and the closed-form placement term."""

from __future__ import annotations

import logging
from collections.abc import Callable

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosched.policies.fairness.gini import gini
from qosched.policies.fairness.shares import (
    FairnessSnapshot,
    FairnessWeights,
    FairShareSolver,
    FairShareSolverCache,
    ShareSettings,
    SharesResult,
    fairness_term,
    min_share_meeting_slo,
    proportional_shares,
    qos_at_share,
    within_class_spread,
)

FEAS_TOL = 1e-7  # bound/capacity violations allowed after projection (float rounding only)
OPT_TOL = 1e-5  # solver accuracy on the max-min level (stage-2 floor tolerance is 1e-6 relative)

CACHE = FairShareSolverCache(maxsize=256)


# --------------------------------------------------------------------------- reference
def maxmin_reference(
    demand: np.ndarray, target: np.ndarray, lo: np.ndarray, hi: np.ndarray, capacity: float
) -> float:
    """max over allocations of min over movable services of min(1, x/d)/T, by bisection on the
    level t: t is reachable iff every movable service can reach it within its maximum and the
    shares it needs, max(lo, t·T·d), fit next to the fixed services' minimum shares."""
    fixed = ~np.isfinite(demand) | (lo >= demand) | (hi <= lo)
    free = ~fixed
    if not free.any():
        return float("inf")
    d, t_, l_ = demand[free], target[free], lo[free]
    ceiling = np.minimum(1.0, hi[free] / d) / t_

    def reachable(level: float) -> bool:
        return bool(lo[fixed].sum() + np.maximum(l_, level * t_ * d).sum() <= capacity + 1e-12)

    top = float(ceiling.min())
    if reachable(top):
        return top
    a, b = 0.0, top
    for _ in range(200):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if reachable(mid) else (a, mid)
    return a


def movable(demand: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.isfinite(demand) & (lo < demand) & (hi > lo)


# --------------------------------------------------------------------------- model helpers
@pytest.mark.parametrize(
    ("share", "demand", "want"),
    [(0.2, 0.4, 0.5), (0.5, 0.4, 1.0), (0.0, 0.0, 1.0), (0.9, np.inf, 0.0), (0.0, 0.3, 0.0)],
    ids=["half", "capped", "zero-demand", "hopeless", "no-share"],
)
def test_qos_at_share(share: float, demand: float, want: float) -> None:
    assert float(qos_at_share(share, demand)) == pytest.approx(want, abs=1e-12)


def mm1_latency_ms(rate_rps: float, full_service_rate_rps: float) -> Callable[[float], float]:
    """M/M/1 mean latency with the service rate scaled by the share (processor sharing)."""

    def latency(share: float) -> float:
        mu = full_service_rate_rps * share
        return 1000.0 / (mu - rate_rps) if mu > rate_rps else float("inf")

    return latency


@pytest.mark.parametrize(
    ("rate_rps", "mu_rps", "slo_ms", "want"),
    [
        (50.0, 200.0, 20.0, (50.0 + 50.0) / 200.0),  # 1/(μx-λ) = 0.02 s -> x = (λ + 50)/μ = 0.5
        (0.0, 100.0, 100.0, 0.1),  # no load: x = (1/0.1 s)/μ
        (150.0, 100.0, 50.0, float("inf")),  # more load than the whole device serves
    ],
    ids=["mm1-half", "no-load", "overloaded"],
)
def test_min_share_meeting_slo(rate_rps: float, mu_rps: float, slo_ms: float, want: float) -> None:
    got = min_share_meeting_slo(mm1_latency_ms(rate_rps, mu_rps), slo_ms, rel_tol=1e-9)
    if np.isinf(want):
        assert got == float("inf")
    else:
        assert got == pytest.approx(want, rel=1e-6)
        assert mm1_latency_ms(rate_rps, mu_rps)(got) <= slo_ms  # the returned share meets the SLO


def test_min_share_meeting_slo_edges() -> None:
    assert min_share_meeting_slo(lambda x: 1.0, 10.0, lo=0.2) == 0.2  # even the minimum meets it
    with pytest.raises(ValueError, match="slo_ms"):
        min_share_meeting_slo(lambda x: 1.0, 0.0)
    with pytest.raises(ValueError, match="lo, hi"):
        min_share_meeting_slo(lambda x: 1.0, 1.0, lo=0.5, hi=0.1)
    with pytest.raises(ValueError, match="NaN"):
        min_share_meeting_slo(lambda x: float("nan"), 1.0)


@pytest.mark.parametrize(
    ("demand", "lo", "hi", "capacity", "want"),
    [
        ([0.4, 0.3, 0.5, 0.2], 0.0, 1.0, 1.0, np.array([0.4, 0.3, 0.5, 0.2]) / 1.4),  # C·d/Σd
        ([0.4, 0.4], [0.3, 0.0], 1.0, 0.5, [0.3 + 0.2 / 0.5 * 0.1, 0.2 / 0.5 * 0.4]),
        ([0.2, 0.2], 0.0, 1.0, 1.0, [0.2, 0.2]),  # uncontended: never more than the demand
        ([0.5, 0.5], [0.4, 0.4], 1.0, 0.4, [0.2, 0.2]),  # minimums exceed capacity: scaled
        ([np.inf, 0.5], 0.1, 1.0, 0.5, [0.1, 0.4]),  # hopeless service keeps its minimum only
    ],
    ids=["proportional-to-demand", "with-minimum", "uncontended", "infeasible-minimums", "hopeless"],
)
def test_proportional_shares(demand: list, lo: object, hi: object, capacity: float, want: list) -> None:
    np.testing.assert_allclose(proportional_shares(demand, lo, hi, capacity), want, atol=1e-12)


@pytest.mark.parametrize(
    ("nq", "classes", "want"),
    [
        ([1.0, 0.5, 0.25], ["a", "a", "a"], 0.5 + 0.75 + 0.25),
        ([1.0, 0.5, 0.25, 0.0], ["a", "b", "a", "b"], 0.75 + 0.5),
        ([0.3], ["a"], 0.0),
    ],
    ids=["one-class", "two-classes", "single"],
)
def test_within_class_spread(nq: list, classes: list, want: float) -> None:
    assert within_class_spread(nq, classes) == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------- solver: tables
def solve(classes: list, demand: list, target: list, lo: object, hi: object, capacity: float) -> SharesResult:
    return CACHE.solve(classes, demand, target, lo, hi, capacity)


def test_two_classes_equalised_at_the_max_min_level() -> None:
    # Σ T·d·t = (0.4 + 0.3 + 0.9·0.5 + 0.9·0.2)·t = 1.33·t = 1  ->  t = 1/1.33 for everyone
    r = solve(["p", "p", "b", "b"], [0.4, 0.3, 0.5, 0.2], [1, 1, 0.9, 0.9], 0.0, 1.0, 1.0)
    assert r.status == "optimal"
    assert r.solver_status == ("optimal", "optimal")
    np.testing.assert_allclose(r.normalised_qos, 1 / 1.33, atol=OPT_TOL)
    assert r.shares.sum() == pytest.approx(1.0, abs=FEAS_TOL)
    assert r.within_class_spread == pytest.approx(0.0, abs=OPT_TOL)
    assert r.solve_ms is not None
    assert r.solve_ms > 0


def test_capped_service_does_not_pull_its_class_down() -> None:
    """prod service 1 can use at most 0.1 (q ≤ 1/3). Pure within-class equality would starve its
    class-mate toward 1/3; it is pinned instead, and the rest share the capacity evenly:
    (0.4 + 0.45 + 0.18)·t = 0.9 -> t = 0.8738 for services 0, 2, 3."""
    r = solve(["p", "p", "b", "b"], [0.4, 0.3, 0.5, 0.2], [1, 1, 0.9, 0.9], 0.0, [1, 0.1, 1, 1], 1.0)
    assert r.status == "optimal"
    np.testing.assert_allclose(r.shares[1], 0.1, atol=FEAS_TOL)
    np.testing.assert_allclose(r.normalised_qos[[0, 2, 3]], 0.9 / 1.03, atol=OPT_TOL)


def test_lower_within_class_spread_than_proportional() -> None:
    """Service 0 has a reserved minimum: the proportional split hands it more than its class-mates
    (normalised 0.917 vs 0.667, spread 0.5); the optimiser gives all three 0.3 (spread 0) and a
    higher minimum."""
    args = (["p", "p", "p"], [0.4, 0.4, 0.4], [1, 1, 1], [0.3, 0, 0], 1.0, 0.9)
    r = solve(*args)
    prop = proportional_shares(args[1], args[3], args[4], args[5])
    prop_nq = qos_at_share(prop, args[1]) / np.asarray(args[2])
    assert within_class_spread(prop_nq, args[0]) == pytest.approx(0.5, abs=1e-9)
    np.testing.assert_allclose(r.shares, [0.3, 0.3, 0.3], atol=1e-5)
    assert r.within_class_spread < 1e-5
    assert r.min_normalised_qos > prop_nq.min() + 0.08


def test_lower_spread_than_proportional_two_classes() -> None:
    # batch service 2 has a minimum share; proportional keeps it above its class-mate
    args = (["p", "p", "b", "b"], [0.3, 0.3, 0.4, 0.4], [1, 1, 0.9, 0.9], [0, 0, 0.3, 0], 1.0, 1.0)
    r = solve(*args)
    prop = proportional_shares(args[1], args[3], args[4], args[5])
    prop_spread = within_class_spread(qos_at_share(prop, args[1]) / np.asarray(args[2]), args[0])
    assert r.status == "optimal"
    assert r.within_class_spread < prop_spread - 0.05


@pytest.mark.parametrize(
    ("demand", "lo", "hi", "capacity", "want_shares", "want_status"),
    [
        ([0.2, 0.3], 0.0, 1.0, 1.0, [0.2, 0.3], "uncontended"),  # useful maximum fits: no solve
        ([0.2, 0.3], 0.0, [0.1, 1.0], 1.0, [0.1, 0.3], "uncontended"),
        ([0.0, np.inf], 0.05, 1.0, 0.2, [0.05, 0.05], "uncontended"),  # neither benefits from more
        ([0.5, 0.5], [0.3, 0.3], 1.0, 0.5, [0.25, 0.25], "infeasible"),
    ],
    ids=["fits", "fits-with-max", "zero-and-inf-demand", "minimums-exceed-capacity"],
)
def test_status_without_solver(
    demand: list, lo: object, hi: object, capacity: float, want_shares: list, want_status: str
) -> None:
    r = solve(["a", "b"], demand, [1.0, 1.0], lo, hi, capacity)
    assert r.status == want_status
    assert r.solver_status == ()
    assert r.solve_ms is None
    np.testing.assert_allclose(r.shares, want_shares, atol=1e-12)


def test_unallocated_capacity_is_reported() -> None:
    r = solve(["a", "b"], [0.2, 0.3], [1.0, 1.0], 0.0, 1.0, 1.0)
    assert r.unallocated == pytest.approx(0.5, abs=1e-12)


def test_empty() -> None:
    r = CACHE.solve([], [], [], [], [], 1.0)
    assert r.status == "empty"
    assert r.shares.size == 0
    assert r.unallocated == 1.0


def test_fallback_when_solver_fails(caplog: pytest.LogCaptureFixture) -> None:
    if "ECOS" in cp.installed_solvers():
        pytest.skip("needs a solver name that is not installed")
    solver = FairShareSolver(3, ["a", "a", "b"], ShareSettings(solver="ECOS"))
    args = ([0.4, 0.3, 0.5], [1.0, 1.0, 0.9], 0.0, 1.0, 0.6)
    with caplog.at_level(logging.WARNING, logger="qosched.policies.fairness.shares"):
        r = solver.solve(*args)
    assert r.status == "fallback"
    assert r.solver_status[0].startswith("error:")
    np.testing.assert_allclose(r.shares, proportional_shares(args[0], args[2], args[3], args[4]), atol=1e-12)
    assert "proportional split" in caplog.text


def test_stage1_only_when_stage2_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    solver = FairShareSolver(3, ["a", "a", "b"])
    stage2 = solver.problems[1]

    def fail(*args: object, **kwargs: object) -> None:
        raise cp.error.SolverError("injected")

    monkeypatch.setattr(stage2, "solve", fail)
    args = ([0.4, 0.3, 0.5], [1.0, 1.0, 0.9], 0.0, 1.0, 0.6)
    with caplog.at_level(logging.WARNING, logger="qosched.policies.fairness.shares"):
        r = solver.solve(*args)
    assert r.status == "stage1-only"
    assert r.solver_status[0] == "optimal"
    want = maxmin_reference(np.array(args[0]), np.array(args[1]), np.zeros(3), np.ones(3), args[4])
    assert r.min_normalised_qos == pytest.approx(want, abs=OPT_TOL)
    assert "stage-1" in caplog.text


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0.1, 0.2], [1, 1], 0, 1, 1), "expected 3 values"),
        (([0.1, 0.2, np.nan], [1, 1, 1], 0, 1, 1), "demand: NaN"),
        (([0.1, 0.2, 0.3], [1, 1, 0], 0, 1, 1), "target"),
        (([0.1, 0.2, 0.3], [1, 1, 1], [0, 0.5, 0], [1, 0.2, 1], 1), "lo > hi for service 1"),
        (([0.1, 0.2, 0.3], [1, 1, 1], 0, [1, np.inf, 1], 1), "hi: infinite"),
        (([0.1, 0.2, 0.3], [1, 1, 1], 0, 1, -1.0), "capacity: negative"),
    ],
    ids=["wrong-length", "nan-demand", "zero-target", "lo-above-hi", "inf-hi", "negative-capacity"],
)
def test_solve_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CACHE.get(["a", "a", "b"]).solve(*args)


def test_solver_constructor_rejects() -> None:
    with pytest.raises(ValueError, match="n_services"):
        FairShareSolver(0, [])
    with pytest.raises(ValueError, match="class_ids"):
        FairShareSolver(2, ["a"])


# --------------------------------------------------------------------------- solver: properties
@st.composite
def share_problems(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(1, 6))
    classes = draw(st.lists(st.sampled_from(["prod", "batch", "free"]), min_size=n, max_size=n))
    target = np.array([{"prod": 1.0, "batch": 0.9, "free": 0.5}[c] for c in classes])
    demand = np.array(
        draw(st.lists(st.one_of(st.floats(0.01, 0.8), st.just(0.0), st.just(np.inf)), min_size=n, max_size=n))
    )
    lo = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.2)), min_size=n, max_size=n)))
    hi = lo + np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)))
    capacity = float(lo.sum() + draw(st.floats(0.0, 1.5)))
    return classes, demand, target, lo, hi, capacity


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(share_problems())
def test_feasible_and_max_min_optimal(problem: tuple) -> None:
    classes, demand, target, lo, hi, capacity = problem
    r = CACHE.solve(classes, demand, target, lo, hi, capacity)
    assert r.status in ("optimal", "uncontended")
    assert np.all(r.shares >= lo - FEAS_TOL)
    assert np.all(r.shares <= hi + FEAS_TOL)
    assert r.shares.sum() <= capacity + FEAS_TOL
    assert np.all(r.shares <= np.where(np.isfinite(demand), np.maximum(demand, lo), lo) + FEAS_TOL)
    free = movable(demand, lo, hi)
    if free.any():
        want = maxmin_reference(demand, target, lo, hi, capacity)
        assert r.normalised_qos[free].min() == pytest.approx(want, abs=OPT_TOL)
        # the max-min level is at least what the proportional split reaches
        prop = proportional_shares(demand, lo, hi, capacity)
        prop_nq = qos_at_share(prop, demand) / target
        assert r.normalised_qos[free].min() >= prop_nq[free].min() - OPT_TOL
    # work-conserving: capacity is left free only when every service has its useful maximum
    useful = np.where(
        np.isfinite(demand), np.minimum(hi, np.maximum(lo, np.nan_to_num(demand, posinf=0))), lo
    )
    assert r.unallocated == pytest.approx(max(0.0, capacity - useful.sum()), abs=1e-6)


# --------------------------------------------------------------------------- compile once
def test_resolve_reuses_the_compiled_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    """cvxpy builds a solving chain (canonicalisation) only on a cache miss: count those calls."""
    calls = {"chain": 0}
    real_chain = cp.Problem._construct_chain

    def counting_chain(self: cp.Problem, *args: object, **kwargs: object) -> object:
        calls["chain"] += 1
        return real_chain(self, *args, **kwargs)

    monkeypatch.setattr(cp.Problem, "_construct_chain", counting_chain)
    solver = FairShareSolver(6, ["p", "p", "b", "b", "f", "f"])
    problems = solver.problems
    assert solver.problems_built == 2
    assert all(p.is_dpp() for p in problems)
    rng = np.random.default_rng(7)
    target = np.array([1, 1, 0.9, 0.9, 0.5, 0.5])
    r = solver.solve(rng.uniform(0.2, 0.5, 6), target, 0.0, 1.0, 1.0)
    assert r.status == "optimal"
    assert calls["chain"] == 2  # each stage compiled on its first solve
    compiled = [p._cache.param_prog for p in problems]
    for _ in range(10):
        r = solver.solve(
            rng.uniform(0.2, 0.5, 6), target, rng.uniform(0, 0.05, 6), 1.0, rng.uniform(0.8, 1.2)
        )
        assert r.status == "optimal"
    assert calls["chain"] == 2
    assert solver.problems == problems
    assert solver.problems_built == 2
    assert [p._cache.param_prog for p in problems] == compiled


def test_cache_by_class_structure() -> None:
    cache = FairShareSolverCache(maxsize=2)
    s1 = cache.get(["prod", "prod", "free"])
    assert cache.get(["x", "x", "y"]) is s1  # same partition, other labels
    s2 = cache.get(["prod", "free", "prod"])
    assert s2 is not s1
    assert len(cache) == 2
    cache.get(["a"])  # evicts the least recently used (s1)
    assert cache.get(["prod", "free", "prod"]) is s2
    assert cache.get(["prod", "prod", "free"]) is not s1
    with pytest.raises(ValueError, match="maxsize"):
        FairShareSolverCache(maxsize=0)


# --------------------------------------------------------------------------- placement term
def test_fairness_term_table() -> None:
    # cluster: prod services at normalised QoS 1.0, 1.0, 0.8; batch 0.9
    snap = FairnessSnapshot.from_values([1.0, 1.0, 0.8, 0.9], ["prod", "prod", "prod", "batch"])
    # node hosts one prod at 1.0; with the candidate (batch, 0.6) it would drop to 0.7
    delta = fairness_term(snap, "batch", 0.6, ["prod"], [1.0], [0.7])
    assert delta.min_normalised_qos_after == pytest.approx(0.6)
    assert delta.delta_min_normalised_qos == pytest.approx(0.6 - 0.8)
    prod_before, prod_after = gini([1.0, 1.0, 0.8]), gini([1.0, 0.8, 0.7])
    batch_after = gini([0.9, 0.6])  # 0.3·2 / (2·4·0.75) = 0.1
    assert batch_after == pytest.approx(0.1)
    assert dict(delta.delta_gini_by_class) == pytest.approx(
        {"prod": prod_after - prod_before, "batch": batch_after - 0.0}
    )
    want_value = (0.6 - 0.8) - ((prod_after - prod_before) + batch_after)
    assert delta.value == pytest.approx(want_value)
    weighted = fairness_term(
        snap, "batch", 0.6, ["prod"], [1.0], [0.7], FairnessWeights(min_qos=0.0, gini=2.0)
    )
    assert weighted.value == pytest.approx(-2.0 * ((prod_after - prod_before) + batch_after))


def test_fairness_term_empty_cluster_and_rejects() -> None:
    snap = FairnessSnapshot.from_values([], [])
    delta = fairness_term(snap, "prod", 0.9)
    assert delta.delta_min_normalised_qos == 0.0
    assert delta.min_normalised_qos_after == 0.9
    assert dict(delta.delta_gini_by_class) == {"prod": 0.0}
    with pytest.raises(ValueError, match="lengths differ"):
        fairness_term(snap, "prod", 0.9, ["prod"], [], [0.5])
    with pytest.raises(ValueError, match="not in the summary"):
        fairness_term(snap, "prod", 0.9, ["prod"], [0.5], [0.5])


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_fairness_term_equals_recompute(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12))
    values = data.draw(st.lists(st.floats(0, 2, allow_subnormal=False), min_size=n, max_size=n))
    classes = data.draw(st.lists(st.sampled_from(["prod", "batch", "free"]), min_size=n, max_size=n))
    on_node = sorted(set(data.draw(st.lists(st.integers(0, n - 1), max_size=4))))
    after = data.draw(
        st.lists(st.floats(0, 2, allow_subnormal=False), min_size=len(on_node), max_size=len(on_node))
    )
    cand_class = data.draw(st.sampled_from(["prod", "batch", "free"]))
    cand = data.draw(st.floats(0, 2, allow_subnormal=False))
    snap = FairnessSnapshot.from_values(values, classes)
    delta = fairness_term(
        snap, cand_class, cand, [classes[i] for i in on_node], [values[i] for i in on_node], after
    )
    new_values = list(values)
    for i, v in zip(on_node, after, strict=True):
        new_values[i] = v
    new_values.append(cand)
    new_classes = [*classes, cand_class]
    assert delta.min_normalised_qos_after == pytest.approx(min(new_values))
    assert delta.delta_min_normalised_qos == pytest.approx(min(new_values) - min(values))
    for c, dg in delta.delta_gini_by_class.items():
        old = gini([v for v, k in zip(values, classes, strict=True) if k == c])
        new = gini([v for v, k in zip(new_values, new_classes, strict=True) if k == c])
        assert dg == pytest.approx(new - old, abs=1e-9)
