"""Gini coefficient: hand-computed values, the O(n log n) form against the definition, bounds,
per-class grouping and the incremental summary used by the placement score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qosched.policies.fairness.gini import GiniSummary, gini, gini_by_class, gini_pairwise

TOL = 1e-12
qos_values = st.lists(st.floats(0.0, 1.0, allow_subnormal=False), min_size=0, max_size=40)


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([], 0.0),
        ([0.7], 0.0),
        ([1, 1, 1], 0.0),
        ([0, 0, 0], 0.0),  # all zero: defined as perfectly equal, no division by zero
        ([0, 0, 1], 2 / 3),  # Σ|xi-xj| = 4, 2 n² x̄ = 2·9·1/3 = 6
        ([0, 1], 0.5),  # = 1 - 1/n, the maximum for n = 2
        ([1, 2, 3], 2 / 9),  # Σ|xi-xj| = 8, 2·9·2 = 36
        ([0.5, 0.5, 1.0, 1.0], 1 / 6),  # Σ = 8·0.5 = 4, 2·16·0.75 = 24
        ([0.25, 0.25, 0.25, 0.25, 1.0], 0.3),  # Σ = 8·0.75 = 6, 2·25·0.4 = 20
    ],
    ids=[
        "empty",
        "single",
        "all-equal",
        "all-zero",
        "one-has-all",
        "pair-max",
        "one-two-three",
        "two-levels",
        "outlier",
    ],
)
def test_gini_table(values: list[float], want: float) -> None:
    assert gini(values) == pytest.approx(want, abs=TOL)
    assert gini_pairwise(values) == pytest.approx(want, abs=TOL)


@pytest.mark.parametrize(
    ("values", "match"),
    [([0.5, float("nan")], "NaN at index 1"), ([1.0, -0.1], "negative"), ([float("inf")], "infinite")],
    ids=["nan", "negative", "inf"],
)
def test_gini_rejects(values: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gini(values)


def test_gini_all_equal_is_exactly_zero() -> None:
    # 0.7 is not representable: the plain Σ(2k-n-1)·x is +5.6e-12 here, not 0
    assert gini([0.7] * 1001) == 0.0


@given(qos_values)
def test_sorted_form_equals_definition(values: list[float]) -> None:
    assert gini(values) == pytest.approx(gini_pairwise(values), rel=1e-9, abs=1e-12)


@given(qos_values)
def test_bounds(values: list[float]) -> None:
    g = gini(values)
    n = len(values)
    assert 0.0 <= g <= (1.0 - 1.0 / n if n else 0.0) + 1e-12


@given(qos_values, st.floats(1e-3, 1e3))
def test_scale_invariant(values: list[float], scale: float) -> None:
    assert gini(np.asarray(values) * scale) == pytest.approx(gini(values), rel=1e-9, abs=1e-12)


@given(qos_values)
def test_permutation_invariant(values: list[float]) -> None:
    assert gini(values[::-1]) == pytest.approx(gini(values), rel=1e-12, abs=1e-15)


def test_gini_by_class() -> None:
    values = [0, 0, 1, 0.5, 0.5, 1, 1, 0.3]
    classes = ["free", "free", "free", "batch", "batch", "prod", "prod", "solo"]
    got = gini_by_class(values, classes, include=["gold"])
    assert got == pytest.approx({"free": 2 / 3, "batch": 0.0, "prod": 0.0, "solo": 0.0, "gold": 0.0}, abs=TOL)
    assert gini_by_class([], [], include=["prod"]) == {"prod": 0.0}
    with pytest.raises(ValueError, match="lengths differ"):
        gini_by_class([1.0], ["a", "b"])


@given(st.lists(st.tuples(st.floats(0, 1), st.sampled_from(["a", "b", "c"])), max_size=40))
def test_gini_by_class_equals_per_group(rows: list[tuple[float, str]]) -> None:
    values = [v for v, _ in rows]
    classes = [c for _, c in rows]
    got = gini_by_class(values, classes)
    for c in set(classes):
        assert got[c] == pytest.approx(gini([v for v, k in rows if k == c]), abs=1e-12)
    assert set(got) == set(classes)


# --------------------------------------------------------------------------- GiniSummary
def test_summary_matches_gini_and_abs_diff() -> None:
    s = GiniSummary.from_values([0.2, 1.0, 0.6, 0.6])
    assert s.gini() == pytest.approx(gini([0.2, 1.0, 0.6, 0.6]), abs=TOL)
    # Σ|y - x_j| for y = 0.6: 0.4 + 0.4 + 0 + 0 = 0.8; for y = 0: 2.4; for y = 2: 8 - 2.4 = 5.6
    np.testing.assert_allclose(s.abs_diff_to([0.6, 0.0, 2.0]), [0.8, 2.4, 5.6], atol=TOL)
    assert s.min() == 0.2
    assert GiniSummary.from_values([]).min() == float("inf")


@pytest.mark.parametrize(
    ("base", "removed", "added"),
    [
        ([0.2, 1.0, 0.6], [], [0.0]),
        ([0.2, 1.0, 0.6], [1.0], []),
        ([0.2, 1.0, 0.6, 0.6], [0.6, 0.2], [0.9, 0.1, 0.5]),
        ([], [], [0.3, 0.9]),
        ([0.5], [0.5], []),
        ([0.5, 0.5], [0.5, 0.5], [0.0, 0.0]),
        ([0.0, 1.0, 0.0, 1e-150], [1.0], [0.0, 0.0]),  # the update cancels: exact recompute
    ],
    ids=["add-one", "remove-one", "replace-several", "from-empty", "to-empty", "to-all-zero", "cancellation"],
)
def test_summary_after_table(base: list[float], removed: list[float], added: list[float]) -> None:
    rest = list(base)
    for r in removed:
        rest.remove(r)
    final = rest + added
    s = GiniSummary.from_values(base)
    assert s.gini_after(removed, added) == pytest.approx(gini(final), abs=1e-12)
    assert s.min_after(removed, added) == (min(final) if final else float("inf"))


def test_summary_rejects_removing_absent_values() -> None:
    s = GiniSummary.from_values([0.5, 0.7])
    with pytest.raises(ValueError, match="not in the summary"):
        s.gini_after(removed=[0.6])
    with pytest.raises(ValueError, match="not in the summary"):
        s.min_after(removed=[0.5, 0.5])


@given(
    st.lists(st.floats(0, 1, allow_subnormal=False), min_size=0, max_size=30),
    st.data(),
)
def test_summary_after_equals_recompute(base: list[float], data: st.DataObject) -> None:
    n_remove = data.draw(st.integers(0, len(base)))
    idx = data.draw(st.permutations(range(len(base))))[:n_remove]
    removed = [base[i] for i in idx]
    added = data.draw(st.lists(st.floats(0, 1, allow_subnormal=False), max_size=6))
    rest = [v for i, v in enumerate(base) if i not in set(idx)]
    final = rest + added
    s = GiniSummary.from_values(base)
    assert s.gini_after(removed, added) == pytest.approx(gini(final), rel=1e-7, abs=1e-9)
    assert s.min_after(removed, added) == (min(final) if final else float("inf"))
