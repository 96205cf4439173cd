"""INFIDA's pure core: projection (hand cases, cvxpy, optimality), rounding (budget, expectation),
gain and subgradient (hand case, finite differences), the mirror-ascent step and step size (hand
computed), the baselines and the hindsight optimum (brute force)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.infida.allocators import (
    GreedyAllocator,
    InfidaAllocator,
    StateError,
    StaticAllocator,
    greedy_allocation,
)
from qosched.policies.infida.catalog import (
    Catalog,
    CatalogError,
    CostModel,
    NodeBudget,
    RequestType,
    Slot,
    capacity_rps,
    inference_ms_at_capacity,
)
from qosched.policies.infida.gain import build_table, gain, subgradient, window_capacity
from qosched.policies.infida.hindsight import best_fixed_allocation
from qosched.policies.infida.oma import (
    AdaptiveStep,
    initial_allocation,
    mirror_ascent_step,
    mirror_diameter,
    negative_entropy,
    stabilized_mirror_ascent_step,
    step_size,
)
from qosched.policies.infida.projection import bregman_divergence, project_node
from qosched.policies.infida.rounding import dep_round_allocation, dep_round_network, dep_round_node

# --------------------------------------------------------------------------------------------
# projection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yhat", "sizes", "budget", "want"),
    [
        # slack: Σ s·min(1, ŷ) = 0.6 ≤ 1, entries above 1 capped
        ([0.3, 0.3], [1, 1], 1.0, [0.3, 0.3]),
        ([2.0, 0.1], [1, 1], 5.0, [1.0, 0.1]),
        # Σ = 2 > 1, no cap: c = 1/2
        ([0.5, 0.5, 1.0], [1, 1, 1], 1.0, [0.25, 0.25, 0.5]),
        # ŷ₁ = 4 capped: c = (2 − 1)/(1 + 1) = 1/2
        ([4.0, 1.0, 1.0], [1, 1, 1], 2.0, [1.0, 0.5, 0.5]),
        # weighted: 2·c + 1·c = 2 → c = 2/3
        ([1.0, 1.0], [2, 1], 2.0, [2 / 3, 2 / 3]),
        # zero mass stays zero
        ([0.0, 3.0, 3.0], [1, 1, 1], 1.0, [0.0, 0.5, 0.5]),
    ],
    ids=["slack", "slack-capped", "scale", "cap-one", "weighted", "zero-stays"],
)
def test_projection_hand_cases(
    yhat: list[float], sizes: list[float], budget: float, want: list[float]
) -> None:
    y = project_node(np.array(yhat), np.array(sizes, dtype=float), budget)
    assert y == pytest.approx(want, abs=1e-12)


def _cvxpy_projection(yhat: np.ndarray, sizes: np.ndarray, budget: float) -> np.ndarray:
    import cvxpy as cp

    y = cp.Variable(len(yhat))
    objective = cp.sum(cp.multiply(sizes, cp.rel_entr(y, yhat) - y + yhat))
    problem = cp.Problem(cp.Minimize(objective), [y >= 0, y <= 1, sizes @ y <= budget])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    return np.asarray(y.value)


@pytest.mark.parametrize("seed", range(6), ids=[f"seed-{s}" for s in range(6)])
def test_projection_matches_cvxpy(seed: int) -> None:
    """The closed form equals the convex solver's answer on small random cases (tol 1e-5)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    sizes = rng.uniform(100.0, 2000.0, n)
    budget = float(rng.uniform(sizes.max(), sizes.sum()))
    yhat = rng.lognormal(mean=0.0, sigma=1.5, size=n)
    ours = project_node(yhat, sizes, budget)
    ref = _cvxpy_projection(yhat, sizes, budget)
    assert ours == pytest.approx(ref, abs=1e-5)
    assert bregman_divergence(ours, yhat, sizes) <= bregman_divergence(np.clip(ref, 0, 1), yhat, sizes) + 1e-6


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.01, 50.0), min_size=2, max_size=8),
    st.lists(st.floats(50.0, 2000.0), min_size=8, max_size=8),
    st.floats(0.05, 1.0),
    st.integers(0, 2**31),
)
def test_projection_feasible_and_optimal(
    yhat: list[float], sizes: list[float], frac: float, seed: int
) -> None:
    """Feasible, and no feasible point is closer in D_Φ (Bregman optimality, sampled)."""
    n = len(yhat)
    s = np.array(sizes[:n])
    budget = max(float(s.max()), frac * float(s.sum()))
    yh = np.array(yhat)
    y = project_node(yh, s, budget)
    assert np.all((y >= 0) & (y <= 1 + 1e-12))
    assert s @ y <= budget * (1 + 1e-9)
    d_star = bregman_divergence(y, yh, s)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        z = rng.uniform(0, 1, n)
        z *= min(1.0, budget / float(s @ z))
        assert bregman_divergence(z, yh, s) >= d_star - 1e-9 * max(1.0, d_star)


# --------------------------------------------------------------------------------------------
# rounding
# --------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
    st.lists(st.floats(10.0, 3000.0), min_size=8, max_size=8),
    st.floats(0.1, 1.0),
    st.integers(0, 2**31),
)
def test_rounding_keeps_budget_every_time(y: list[float], sizes: list[float], frac: float, seed: int) -> None:
    n = len(y)
    s = np.array(sizes[:n])
    budget = max(float(s.max()), frac * float(s.sum()))
    yy = np.array(y)
    yy *= min(1.0, budget / max(float(s @ yy), 1e-12))
    rng = np.random.default_rng(seed)
    for _ in range(5):
        x = dep_round_node(yy, s, budget, rng)
        assert float(s[x].sum()) <= budget * (1 + 1e-9)
        assert not np.any(x & (yy == 0))
        assert np.all(x[yy == 1.0])


#: Draws of the statistical tests; with seed 7 fixed, each mean is compared with a tolerance of
#: 4 standard errors sqrt(y(1−y)/N) (+1e-3), so a correct rounding fails with probability < 1e-4.
DRAWS = 20_000


def _mean_of_draws(y: np.ndarray, sizes: np.ndarray, budget: float) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.mean([dep_round_node(y, sizes, budget, rng) for _ in range(DRAWS)], axis=0)


@pytest.mark.parametrize(
    ("y", "sizes", "budget"),
    [
        ([0.5, 0.5, 0.5, 0.5], [1, 1, 1, 1], 2.0),  # equal sizes, tight
        ([0.9, 0.3, 0.2, 0.6, 0.25], [1, 1, 1, 1, 1], 3.0),  # equal sizes, Σy = 2.25 < 3
        ([0.7, 0.2, 0.4], [965, 930, 1130], 4000.0),  # unequal sizes, slack ≥ the largest
    ],
    ids=["equal-tight", "equal-slack", "unequal-slack"],
)
def test_rounding_matches_fractional_in_expectation(
    y: list[float], sizes: list[float], budget: float
) -> None:
    yy, s = np.array(y), np.array(sizes, dtype=float)
    mean = _mean_of_draws(yy, s, budget)
    tol = 4 * np.sqrt(yy * (1 - yy) / DRAWS) + 1e-3
    assert np.all(np.abs(mean - yy) <= tol), (mean, yy, tol)


def test_rounding_equal_sizes_loads_floor_or_ceil() -> None:
    rng = np.random.default_rng(3)
    y = np.array([0.9, 0.3, 0.2, 0.6, 0.25])
    counts = {int(dep_round_node(y, np.ones(5), 3.0, rng).sum()) for _ in range(500)}
    assert counts <= {2, 3}


def test_rounding_unequal_tight_is_biased_down_only_where_it_cannot_fit() -> None:
    """The documented impossibility: budget 4, sizes 3 and 3, y = 2/3 each → at most one loaded."""
    rng = np.random.default_rng(5)
    draws = np.array(
        [dep_round_node(np.array([2 / 3, 2 / 3]), np.array([3.0, 3.0]), 4.0, rng) for _ in range(4000)]
    )
    assert draws.sum(axis=1).max() == 1
    assert np.all(draws.mean(axis=0) <= 2 / 3 + 0.03)


# --------------------------------------------------------------------------------------------
# catalog, gain, subgradient
# --------------------------------------------------------------------------------------------


def _line_catalog() -> tuple[Catalog, RequestType, CostModel]:
    """One entry node e, one edge node v and a cloud repository: slots A (on e) and B (on v)."""
    nodes = [NodeBudget("e", "end", 1000.0), NodeBudget("v", "edge", 2000.0)]
    slots = [
        Slot("e", "small", 500.0, 0.70, inference_ms=10.0, capacity_rps=5.0),
        Slot("v", "big", 1000.0, 0.76, inference_ms=20.0, capacity_rps=10.0),
    ]
    transfer = {"e": 0.0, "v": 30.0, "cloud": 70.0}
    rtype = RequestType("svc", ("e", "v", "cloud"), "cloud", "big", 30.0, {"small": 0.70, "big": 0.76})
    # costs with w = 1 ms per pp: A = 0 + 10 + 6 = 16, B = 30 + 20 = 50, repo = 70 + 30 = 100
    return Catalog.build(nodes, slots), rtype, CostModel(lambda _svc, node: transfer[node], 1.0)


def test_table_sorts_by_cost_and_closes_with_the_repository() -> None:
    cat, rtype, cost = _line_catalog()
    table = build_table(cat, [rtype], cost)
    assert table.slot.tolist() == [[0, 1]]
    assert table.cost_ms.tolist() == [[pytest.approx(16.0), pytest.approx(50.0)]]
    assert table.repo_cost_ms.tolist() == [100.0]
    assert table.delta_ms.tolist() == [[pytest.approx(34.0), pytest.approx(50.0)]]


def test_table_drops_options_no_cheaper_than_the_repository() -> None:
    cat, rtype, _ = _line_catalog()
    cost = CostModel(lambda _svc, node: {"e": 0.0, "v": 300.0, "cloud": 70.0}[node], 1.0)
    assert build_table(cat, [rtype], cost).slot.tolist() == [[0]]


@pytest.mark.parametrize(
    ("y", "r", "want_gain", "want_grad"),
    [
        # capacities (5, 10) requests in 1 s, capped at r = 8: l = (5, 8). y = (1, 1): Z = (5, 13)
        # G = 34·min(8,5) + 50·min(8,13) = 170 + 400; g_A = 5·34 (Z₁ < 8; Z₂ ≥ 8), g_B = 0
        ((1.0, 1.0), 8.0, 570.0, (170.0, 0.0)),
        # y = (0, 0): G = 0; every threshold open: g_A = 5·(34 + 50), g_B = 8·50
        ((0.0, 0.0), 8.0, 0.0, (420.0, 400.0)),
        # y = (0.4, 0.5): Z = (2, 6) → G = 34·2 + 50·6 = 368; g_A = 5·84, g_B = 8·50
        ((0.4, 0.5), 8.0, 368.0, (420.0, 400.0)),
        # r = 3 caps both: l = (3, 3), y = (1, 0): Z = (3, 3) → G = 34·3 + 50·3 = 252 = 3·84
        ((1.0, 0.0), 3.0, 252.0, (0.0, 0.0)),
    ],
    ids=["both-loaded", "empty", "fractional", "capped-by-requests"],
)
def test_gain_and_subgradient_hand_computed(
    y: tuple[float, float], r: float, want_gain: float, want_grad: tuple[float, float]
) -> None:
    cat, rtype, cost = _line_catalog()
    table = build_table(cat, [rtype], cost)
    cap = window_capacity(table, cat, np.array([r]), 1.0)
    assert cap.tolist() == [[min(5.0, r), min(10.0, r)]]
    assert gain(table, np.array([r]), np.array(y), cap) == pytest.approx(want_gain)
    assert subgradient(table, np.array([r]), np.array(y), cap) == pytest.approx(want_grad)


def test_integral_gain_is_the_cost_saved_request_by_request() -> None:
    """x = (1, 1), 8 requests: 5 served by A (saves 84 each), 3 by B (saves 50 each)."""
    cat, rtype, cost = _line_catalog()
    table = build_table(cat, [rtype], cost)
    cap = window_capacity(table, cat, np.array([8.0]), 1.0)
    assert gain(table, np.array([8.0]), np.array([1.0, 1.0]), cap) == pytest.approx(5 * 84 + 3 * 50)


def test_capacity_is_shared_in_proportion_to_counts() -> None:
    cat, rtype, cost = _line_catalog()
    other = RequestType("svc", ("v", "cloud"), "cloud", "big", 30.0, {"small": 0.70, "big": 0.76})
    table = build_table(cat, [rtype, other], cost)
    cap = window_capacity(table, cat, np.array([30.0, 10.0]), 2.0)
    # slot B (20 requests in 2 s) split 3:1 between the two types
    b_col = [int(np.flatnonzero(table.slot[r] == 1)[0]) for r in range(2)]
    assert cap[0, b_col[0]] == pytest.approx(15.0)
    assert cap[1, b_col[1]] == pytest.approx(5.0)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 0.99), st.floats(0.01, 0.99), st.floats(0.5, 30.0))
def test_subgradient_matches_finite_differences(ya: float, yb: float, r: float) -> None:
    cat, rtype, cost = _line_catalog()
    table = build_table(cat, [rtype], cost)
    cap = window_capacity(table, cat, np.array([r]), 1.0)
    y = np.array([ya, yb])
    z = np.cumsum(cap[0] * y)
    if np.any(np.abs(z - r) < 1e-3):  # at a kink the derivative is one-sided
        return
    g = subgradient(table, np.array([r]), y, cap)
    h = 1e-6
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        fd = (gain(table, np.array([r]), y + e, cap) - gain(table, np.array([r]), y - e, cap)) / (2 * h)
        assert g[i] == pytest.approx(fd, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"memory_mib": 0.0}, "memory_mib"),
        ({"accuracy": 1.5}, "accuracy"),
        ({"capacity_rps": math.inf}, "capacity_rps"),
    ],
    ids=["zero-memory", "accuracy", "capacity"],
)
def test_slot_rejects_bad_values(kwargs: dict[str, float], match: str) -> None:
    base = {"memory_mib": 1.0, "accuracy": 0.7, "inference_ms": 1.0, "capacity_rps": 1.0}
    with pytest.raises(CatalogError, match=match):
        Slot("n", "m", **{**base, **kwargs})


def test_catalog_build_leaves_out_slots_larger_than_the_budget() -> None:
    cat = Catalog.build([NodeBudget("n", "end", 900.0)], [Slot("n", "big", 965.0, 0.76, 3.0, 10.0)])
    assert cat.n_slots == 0
    assert [s.model for s in cat.unfit] == ["big"]


def test_inference_delay_at_capacity_is_md1_at_rho_08() -> None:
    assert inference_ms_at_capacity(10.0) == pytest.approx(30.0)  # S(1 + 0.8/(2·0.2)) = 3S
    assert capacity_rps(10.0, devices=2) == pytest.approx(160.0)


# --------------------------------------------------------------------------------------------
# mirror ascent, step size
# --------------------------------------------------------------------------------------------


def _one_node(sizes: list[float], budget: float) -> Catalog:
    return Catalog.build(
        [NodeBudget("n", "edge", budget)],
        [Slot("n", f"m{i}", s, 0.7, 1.0, 10.0) for i, s in enumerate(sizes)],
    )


def test_initial_allocation_minimises_the_entropy() -> None:
    assert initial_allocation(_one_node([1, 1], 1.0)).tolist() == pytest.approx([1 / math.e] * 2)
    assert initial_allocation(_one_node([1, 1, 1, 1], 1.0)).tolist() == pytest.approx([0.25] * 4)


def test_mirror_ascent_step_hand_computed() -> None:
    """y₁ = 1/e each; g = (1, 0), η = ln 2 → ŷ = (2/e, 1/e), Σ = 3/e > 1 → c = e/3 → (2/3, 1/3)."""
    cat = _one_node([1.0, 1.0], 1.0)
    y = mirror_ascent_step(initial_allocation(cat), np.array([1.0, 0.0]), math.log(2.0), cat)
    assert y == pytest.approx([2 / 3, 1 / 3])


def test_step_size_hand_computed() -> None:
    """3 slots of 1 MiB, b = 2: y₁ = 1/e, Φ(y₁) = −3/e, D = 3/e; L = 5, T = 100."""
    cat = _one_node([1.0, 1.0, 1.0], 2.0)
    assert negative_entropy(initial_allocation(cat), cat.sizes_mib) == pytest.approx(-3 / math.e)
    assert mirror_diameter(cat) == pytest.approx(3 / math.e)
    st_ = step_size(cat, grad_bound_per_mib=5.0, horizon=100)
    assert st_.eta == pytest.approx(math.sqrt(2 * (3 / math.e) / (2 * 100)) / 5)
    assert st_.regret_bound == pytest.approx(5 * math.sqrt(2 * (3 / math.e) * 2 * 100))


def _alternating(t_windows: int) -> tuple[Catalog, list, list, list]:
    """Two services, one node that fits one model: the hot one alternates every window."""
    cat = Catalog.build(
        [NodeBudget("e", "edge", 1000.0)],
        [Slot("e", "a", 1000.0, 0.7, 5.0, 100.0), Slot("e", "b", 1000.0, 0.7, 5.0, 100.0)],
    )
    cost = CostModel(lambda _svc, node: {"e": 0.0, "cloud": 50.0}[node], 0.0)
    types = [
        RequestType("a", ("e", "cloud"), "cloud", "a", 5.0, {"a": 0.7}),
        RequestType("b", ("e", "cloud"), "cloud", "b", 5.0, {"b": 0.7}),
    ]
    table = build_table(cat, types, cost)
    counts = [np.array([10.0, 0.0]) if t % 2 == 0 else np.array([0.0, 10.0]) for t in range(t_windows)]
    caps = [window_capacity(table, cat, c, 1.0) for c in counts]
    return cat, [table] * t_windows, counts, caps


@pytest.mark.parametrize("horizon", [16, 64, 256], ids=["T16", "T64", "T256"])
def test_fractional_regret_within_the_theorem_bound(horizon: int) -> None:
    cat, tables, counts, caps = _alternating(horizon)
    bound_l = 50.0 * 10.0 / 1000.0  # Δmax·R / s
    eta = step_size(cat, bound_l, horizon)
    alloc = InfidaAllocator(cat, eta.eta, np.random.default_rng(0))
    y_gain = 0.0
    for t in range(horizon):
        y_gain += gain(tables[t], counts[t], alloc.y, caps[t])
        alloc.observe(tables[t], counts[t], caps[t])
    best = best_fixed_allocation(cat, tables, counts, caps, integral=False)
    regret = best.total_gain - y_gain
    assert regret <= eta.regret_bound
    # l = min(capacity 100, 10 requests) = 10: any y_a + y_b = 1 earns 500·y of the hot one, so
    # the best fixed fractional and integral allocations both earn 250 per window on average
    assert best.total_gain == pytest.approx(horizon * 500 / 2)
    integral = best_fixed_allocation(cat, tables, counts, caps, integral=True)
    assert integral.total_gain == pytest.approx(horizon * 500 / 2)


# --------------------------------------------------------------------------------------------
# baselines, hindsight, persisted state
# --------------------------------------------------------------------------------------------


def test_greedy_takes_the_best_value_per_mib_that_fits() -> None:
    """Budget 1000: slot A (500 MiB) saves 84·5 = 420 → 0.84/MiB; B (1000 MiB) on node v."""
    cat, rtype, cost = _line_catalog()
    table = build_table(cat, [rtype], cost)
    cap = window_capacity(table, cat, np.array([8.0]), 1.0)
    assert greedy_allocation(cat, table, np.array([8.0]), cap).tolist() == [True, True]
    assert greedy_allocation(cat, table, np.array([0.0]), cap).tolist() == [False, False]


def test_greedy_and_static_allocators() -> None:
    cat, tables, counts, caps = _alternating(3)
    greedy = GreedyAllocator(cat)
    assert not greedy.first().integral.any()
    assert greedy.observe(tables[0], counts[0], caps[0]).integral.tolist() == [True, False]
    assert greedy.observe(tables[1], counts[1], caps[1]).integral.tolist() == [False, True]
    static = StaticAllocator(cat)
    assert not static.first().integral.any()
    assert static.observe(tables[0], counts[0], caps[0]).integral.tolist() == [True, False]
    assert static.observe(tables[1], counts[1], caps[1]).integral.tolist() == [True, False]


@pytest.mark.parametrize("integral", [True, False], ids=["milp", "lp"])
def test_hindsight_matches_brute_force(integral: bool) -> None:
    rng = np.random.default_rng(11)
    nodes = [NodeBudget("e", "end", 1500.0), NodeBudget("v", "edge", 2000.0)]
    slots = [
        Slot(n, m, float(rng.uniform(400, 1100)), 0.7, 5.0, 4.0) for n in ("e", "v") for m in ("a", "b", "c")
    ]
    cat = Catalog.build(nodes, slots)
    cost = CostModel(lambda _svc, node: {"e": 0.0, "v": 20.0, "cloud": 60.0}[node], 0.0)
    types = [RequestType(m, ("e", "v", "cloud"), "cloud", m, 5.0, {m: 0.7}) for m in ("a", "b", "c")]
    table = build_table(cat, types, cost)
    counts = [rng.integers(0, 10, 3).astype(float) for _ in range(4)]
    caps = [window_capacity(table, cat, c, 1.0) for c in counts]
    best = best_fixed_allocation(cat, [table] * 4, counts, caps, integral=integral)
    brute = 0.0
    for bits in itertools.product([0, 1], repeat=cat.n_slots):
        x = np.array(bits, dtype=float)
        if np.all(cat.memory_used_mib(x) <= cat.budgets_mib):
            brute = max(brute, sum(gain(table, c, x, cap) for c, cap in zip(counts, caps, strict=True)))
    if integral:
        assert best.total_gain == pytest.approx(brute, rel=1e-7)
    else:
        assert best.total_gain >= brute - 1e-6


def test_state_round_trip_and_bad_states() -> None:
    cat, tables, counts, caps = _alternating(4)
    a = InfidaAllocator(cat, 0.05, np.random.default_rng(0))
    for t in range(4):
        a.observe(tables[t], counts[t], caps[t])
    b = InfidaAllocator(cat, 0.05, np.random.default_rng(0))
    b.resume(a.state())
    assert b.y == pytest.approx(a.y)
    assert b.windows == 4
    for bad in (
        {"version": 99},
        {"version": 1, "windows": -1, "y": {}},
        {"version": 1, "windows": 0, "y": {"e": {"a": 3}}},
    ):
        with pytest.raises(StateError):
            b.resume(bad)


def test_antithetic_rounding_couples_identical_nodes_and_keeps_marginals() -> None:
    """Two edge nodes with one slot each at y = ½: independent rounding loads none (or both) half
    the time; antithetic rounding loads exactly one every time, each node still at ½ (4 s.e.)."""
    cat = Catalog.build(
        [NodeBudget("a", "edge", 1000.0), NodeBudget("b", "edge", 1000.0)],
        [Slot("a", "m", 1000.0, 0.7, 5.0, 10.0), Slot("b", "m", 1000.0, 0.7, 5.0, 10.0)],
    )
    y = np.array([0.5, 0.5])
    rng = np.random.default_rng(7)
    draws = np.array([dep_round_allocation(y, cat, rng, antithetic=True) for _ in range(DRAWS)])
    assert np.all(draws.sum(axis=1) == 1)
    assert np.all(np.abs(draws.mean(axis=0) - 0.5) <= 4 * np.sqrt(0.25 / DRAWS))
    independent = np.array([dep_round_allocation(y, cat, rng) for _ in range(4000)])
    assert 0.2 < float(np.mean(independent.sum(axis=1) != 1)) < 0.8


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6), st.integers(0, 2**31))
def test_antithetic_rounding_keeps_every_budget(y: list[float], seed: int) -> None:
    nodes = [NodeBudget(n, "edge", 2000.0) for n in ("a", "b", "c")]
    slots = [
        Slot(n, m, s, 0.7, 5.0, 10.0) for n in ("a", "b", "c") for m, s in (("r50", 965.0), ("mob", 1130.0))
    ]
    cat = Catalog.build(nodes, slots)
    yy = np.array(y)
    used = cat.memory_used_mib(yy)
    yy = yy * np.minimum(1.0, cat.budgets_mib / np.maximum(used, 1e-12))[cat.node_of]
    x = dep_round_allocation(yy, cat, np.random.default_rng(seed), antithetic=True)
    assert np.all(cat.memory_used_mib(x.astype(float)) <= cat.budgets_mib * (1 + 1e-9))


def test_coupled_rounding_keeps_x_while_y_stays_and_marginals_over_seeds() -> None:
    """Common random numbers across windows: the same y gives the same x window after window (no
    load), and over allocators (seeds) each slot is loaded with probability y (4 s.e.)."""
    cat = Catalog.build(
        [NodeBudget("n", "edge", 2.0)], [Slot("n", f"m{i}", 1.0, 0.7, 5.0, 10.0) for i in range(4)]
    )
    y = np.array([0.9, 0.5, 0.4, 0.2])
    a = InfidaAllocator(cat, 0.0, np.random.default_rng(1), coupled=True)
    a.y = y.copy()
    first = a._round()
    assert all(np.array_equal(first, a._round()) for _ in range(5))
    draws = []
    for seed in range(4000):
        b = InfidaAllocator(cat, 0.0, np.random.default_rng(seed), coupled=True)
        b.y = y.copy()
        draws.append(b._round())
    mean = np.mean(draws, axis=0)
    assert np.all(np.abs(mean - y) <= 4 * np.sqrt(y * (1 - y) / 4000) + 1e-3), mean


# --------------------------------------------------------------------------------------------
# adaptive step (DS-OMD with AdaGrad-norm), network rounding (nodes × services)
# --------------------------------------------------------------------------------------------


def test_adaptive_step_hand_computed() -> None:
    """3 slots of 1 MiB, b = 2: D = 3/e, ‖b‖₁ = 2 → scale = √(2D/‖b‖₁) = √(3/e); L = 5."""
    cat = _one_node([1.0, 1.0, 1.0], 2.0)
    step = AdaptiveStep.for_catalog(cat, 5.0)
    assert step.scale == pytest.approx(math.sqrt(3 / math.e))
    assert step.eta(0.0) == pytest.approx(math.sqrt(3 / math.e) / 5)  # η₁ = η*(T = 1)
    assert step.eta(11.0) == pytest.approx(math.sqrt(3 / math.e) / 6)  # √(25 + 11) = 6
    assert step.regret_bound(11.0) == pytest.approx(3 / math.sqrt(2) * math.sqrt(3 / math.e * 2 * 36))
    # worst case S_T = L²T: 1.5 × the fixed-η* bound for T + 1 windows
    fixed = step_size(cat, 5.0, 101).regret_bound
    assert step.regret_bound(25.0 * 100) == pytest.approx(1.5 * fixed)


@pytest.mark.parametrize(
    ("eta_next", "want"),
    [
        # γ = 1: the paper's step, ŷ = (2/e, 1/e), Σ = 3/e > 1 → c = e/3 → (2/3, 1/3)
        (math.log(2.0), [2 / 3, 1 / 3]),
        # γ = ½: log ŷ = ½(log 2 − 1, −1) + ½(−1, −1) → (√2/e, 1/e), Σ ≈ 0.888 ≤ 1: no projection
        (math.log(2.0) / 2, [math.sqrt(2) / math.e, 1 / math.e]),
        # γ = 0: back to y₁
        (0.0, [1 / math.e, 1 / math.e]),
    ],
    ids=["gamma-1", "gamma-half", "gamma-0"],
)
def test_stabilized_step_hand_computed(eta_next: float, want: list[float]) -> None:
    cat = _one_node([1.0, 1.0], 1.0)
    y1 = initial_allocation(cat)
    y = stabilized_mirror_ascent_step(y1, np.array([1.0, 0.0]), math.log(2.0), eta_next, y1, cat)
    assert y == pytest.approx(want)


@pytest.mark.parametrize("horizon", [16, 64, 256], ids=["T16", "T64", "T256"])
def test_adaptive_fractional_regret_within_its_bound(horizon: int) -> None:
    """No horizon given: the regret at every T is within 3/√2·√(D‖b‖₁(L² + S_T))."""
    cat, tables, counts, caps = _alternating(horizon)
    step = AdaptiveStep.for_catalog(cat, 50.0 * 10.0 / 1000.0)
    alloc = InfidaAllocator(cat, 0.0, np.random.default_rng(0), adaptive=step)
    assert alloc.eta == pytest.approx(step.eta(0.0))
    y_gain = 0.0
    for t in range(horizon):
        y_gain += gain(tables[t], counts[t], alloc.y, caps[t])
        alloc.observe(tables[t], counts[t], caps[t])
    best = best_fixed_allocation(cat, tables, counts, caps, integral=False)
    assert 0.0 < alloc.grad_sq_sum <= horizon * step.gradient_bound_per_mib**2
    assert best.total_gain - y_gain <= step.regret_bound(alloc.grad_sq_sum)
    assert alloc.eta == pytest.approx(step.eta(alloc.grad_sq_sum))


def test_adaptive_state_round_trip() -> None:
    cat, tables, counts, caps = _alternating(4)
    step = AdaptiveStep.for_catalog(cat, 0.5)
    a = InfidaAllocator(cat, 0.0, np.random.default_rng(0), adaptive=step)
    for t in range(4):
        a.observe(tables[t], counts[t], caps[t])
    b = InfidaAllocator(cat, 0.0, np.random.default_rng(0), adaptive=step)
    b.resume(a.state())
    assert b.grad_sq_sum == pytest.approx(a.grad_sq_sum)
    assert b.eta == pytest.approx(a.eta)
    with pytest.raises(StateError, match="grad_sq_sum"):
        b.resume({**a.state(), "grad_sq_sum": -1.0})


def _grid(
    budget: float, sizes: tuple[float, ...], services: int, nodes: int = 2
) -> tuple[Catalog, np.ndarray]:
    """``nodes`` nodes, each with one slot per (service, size) pair; groups = the service."""
    names = [f"n{v}" for v in range(nodes)]
    slots = [
        Slot(n, f"s{g}/v{k}", s, 0.7, 5.0, 10.0)
        for n in names
        for g in range(services)
        for k, s in enumerate(sizes)
    ]
    cat = Catalog.build([NodeBudget(n, "edge", budget) for n in names], slots)
    return cat, np.array([int(s.model[1 : s.model.index("/")]) for s in cat.slots])


def test_network_rounding_loads_each_half_spread_service_exactly_once() -> None:
    """Two nodes holding one model each, two services at ½ everywhere: every draw loads each
    service exactly once and fills each node (per-node rounding loads one service twice half the
    time); marginals ½ within 4 s.e."""
    cat, groups = _grid(1000.0, (1000.0,), services=2)
    y = np.full(4, 0.5)
    rng = np.random.default_rng(7)
    draws = np.array([dep_round_network(y, cat, groups, rng) for _ in range(4000)])
    per_service = np.stack([draws[:, groups == g].sum(axis=1) for g in range(2)], axis=1)
    assert np.all(per_service == 1)
    assert np.all(cat.memory_used_mib(draws[0].astype(float)) == 1000.0)
    assert np.all(np.abs(draws.mean(axis=0) - 0.5) <= 4 * np.sqrt(0.25 / 4000))
    independent = np.array([dep_round_allocation(y, cat, rng) for _ in range(4000)])
    twice = np.stack([independent[:, groups == g].sum(axis=1) for g in range(2)], axis=1)
    assert 0.2 < float(np.mean(np.any(twice != 1, axis=1))) < 0.8


def test_network_rounding_merges_substitutes_on_one_node() -> None:
    """One node with room for one model; a service's two variants at 0.6 and 0.4: always one."""
    cat, groups = _grid(1000.0, (1000.0, 1000.0), services=1, nodes=1)
    rng = np.random.default_rng(3)
    draws = np.array([dep_round_network(np.array([0.6, 0.4]), cat, groups, rng) for _ in range(2000)])
    assert np.all(draws.sum(axis=1) == 1)
    assert abs(draws[:, 0].mean() - 0.6) <= 4 * np.sqrt(0.24 / 2000)


@pytest.mark.slow
def test_network_rounding_matches_fractional_in_expectation() -> None:
    """Unequal sizes, three nodes, three services; budgets with slack ≥ the largest slot so every
    node's last entry fits: E[x] = y (6,000 draws, seed 7, 4 s.e. + 1e-3); and for every
    service P(no copy loaded) ≤ Π(1 − y) over its slots (negative correlation, what the
    (1 − 1/e) bound uses), within 4 s.e."""
    cat, groups = _grid(3500.0, (965.0, 1130.0, 930.0), services=3, nodes=3)
    y = np.random.default_rng(1).uniform(0.0, 1.0, cat.n_slots)
    used = cat.memory_used_mib(y)
    y *= np.minimum(1.0, (cat.budgets_mib - 1130.0) / used)[cat.node_of]
    n = 6_000
    rng = np.random.default_rng(7)
    draws = np.array([dep_round_network(y, cat, groups, rng) for _ in range(n)])
    tol = 4 * np.sqrt(y * (1 - y) / n) + 1e-3
    assert np.all(np.abs(draws.mean(axis=0) - y) <= tol)
    for g in range(3):
        none = float(np.mean(~draws[:, groups == g].any(axis=1)))
        independent = float(np.prod(1.0 - y[groups == g]))
        assert none <= independent + 4 * np.sqrt(independent * (1 - independent) / n) + 1e-3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=12, max_size=12), st.floats(0.3, 1.0), st.integers(0, 2**31))
def test_network_rounding_keeps_every_budget(y: list[float], frac: float, seed: int) -> None:
    cat, groups = _grid(2500.0, (965.0, 1130.0), services=3)
    yy = np.array(y) * frac
    used = cat.memory_used_mib(yy)
    yy = yy * np.minimum(1.0, cat.budgets_mib / np.maximum(used, 1e-12))[cat.node_of]
    x = dep_round_network(yy, cat, groups, np.random.default_rng(seed))
    assert np.all(cat.memory_used_mib(x.astype(float)) <= cat.budgets_mib * (1 + 1e-9))
    assert not np.any(x & (yy == 0))
    assert np.all(x[yy == 1.0])


def test_network_rounding_rejects_wrong_groups() -> None:
    cat, groups = _grid(1000.0, (1000.0,), services=2)
    with pytest.raises(ValueError, match="one entry per slot"):
        dep_round_network(np.full(4, 0.5), cat, groups[:3], np.random.default_rng(0))
