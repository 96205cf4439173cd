r"""Gini coefficient of delivered QoS inside a service class (``models.md`` §B).

.. math:: G = \frac{\sum_i \sum_j |x_i - x_j|}{2 n^2 \bar x}

over the delivered QoS :math:`x_i \ge 0` of the class's :math:`n` pods; 0 is perfect equality,
:math:`1 - 1/n` the most unequal (one pod has everything). Lower is fairer.

Computed in :math:`O(n \log n)`: with :math:`x_{(1)} \le \dots \le x_{(n)}` sorted,

.. math:: \sum_i \sum_j |x_i - x_j| = 2 \sum_{k=1}^{n} (2k - n - 1)\, x_{(k)},

because :math:`x_{(k)}` is the larger element of its pair with the :math:`k-1` elements before
it and the smaller with the :math:`n-k` after it. Hence
:math:`G = \sum_k (2k - n - 1) x_{(k)} / (n \sum_i x_i)`.

Edge cases are defined, never a division by zero: an empty set, a single pod, all-equal or
all-zero values give 0. NaN, infinite and negative values are rejected (the formula's bounds
hold only for non-negative values). The Gini coefficient is scale invariant, so within one class
(one target) the Gini of QoS and of normalised QoS (QoS / target) are the same number.

:class:`GiniSummary` keeps the sorted values and prefix sums so the Gini after adding and
removing a few values is :math:`O(k \log n)`: the placement score uses it on the request path
(:func:`qosched.policies.fairness.shares.fairness_term`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.fairness._validate import FloatArray, as_float_array

# Below this fraction of the magnitudes it was computed from, an incrementally updated sum has
# lost too many digits to cancellation (float64 keeps ~16): recompute instead.
_CANCEL_REL = 1e-8


def gini(values: ArrayLike) -> float:
    r"""Gini coefficient of non-negative ``values`` (see the module docstring for the formula).

    Parameters
    ----------
    values : array_like
        Delivered QoS (or any non-negative quantity) of the pods of one class.

    Returns
    -------
    float
        :math:`G \in [0, 1 - 1/n]`; 0 for empty, all-equal or all-zero input.

    Examples
    --------
    >>> gini([0.0, 0.0, 1.0])  # 2 * (|0-1| + |0-1|) / (2 * 9 * 1/3)
    0.6666666666666666
    """
    x = np.sort(as_float_array("values", values).ravel())
    return _gini_sorted(x)


def gini_pairwise(values: ArrayLike) -> float:
    """The :math:`O(n^2)` definition, for tests and as the reference of :func:`gini`."""
    x = as_float_array("values", values).ravel()
    total = x.sum()
    if x.size == 0 or total == 0.0:
        return 0.0
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2.0 * x.size * total))


def gini_by_class(
    values: ArrayLike, classes: ArrayLike, include: Iterable[str] | None = None
) -> dict[str, float]:
    """Gini coefficient of ``values`` within each class label.

    Parameters
    ----------
    values : array_like
        Delivered QoS of each pod.
    classes : array_like
        Class label of each pod (same length).
    include : iterable of str, optional
        Class names to report even when no pod has them (their Gini is 0).

    Returns
    -------
    dict
        ``{class name: Gini}`` for every class present (and every name in ``include``).
    """
    x = as_float_array("values", values).ravel()
    c = np.asarray(classes).ravel()
    if x.shape != c.shape:
        raise ValueError(f"values, classes: lengths differ ({x.size} vs {c.size})")
    out: dict[str, float] = {str(name): 0.0 for name in include or ()}
    if x.size == 0:
        return out
    uniq, inverse = np.unique(c, return_inverse=True)
    # Sort by (class, value) once; each class is then a contiguous sorted run.
    order = np.lexsort((x, inverse))
    xs, gs = x[order], inverse[order]
    bounds = np.flatnonzero(np.diff(gs)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [xs.size]))
    for s, e in zip(starts, ends, strict=True):
        out[str(uniq[gs[s]])] = _gini_sorted(xs[s:e])
    return out


@dataclass(frozen=True, slots=True)
class GiniSummary:
    """Sorted values and prefix sums of one population, for fast "what if" Gini and minimum.

    Build it once (off the request path) with :meth:`from_values`; then :meth:`gini_after` and
    :meth:`min_after` answer, in :math:`O(k \\log n)` for :math:`k` changed values, what the
    Gini and the minimum would be if some values were removed and others added.

    Attributes
    ----------
    sorted_values : numpy.ndarray
        The values in ascending order (read-only).
    prefix : numpy.ndarray
        ``prefix[k] = sum(sorted_values[:k])``, length ``n + 1``.
    abs_diff_sum : float
        :math:`D = \\sum_i \\sum_j |x_i - x_j|` over ordered pairs.
    """

    sorted_values: FloatArray
    prefix: FloatArray
    abs_diff_sum: float

    @classmethod
    def from_values(cls, values: ArrayLike) -> GiniSummary:
        """Summarise non-negative ``values``."""
        x = np.sort(as_float_array("values", values).ravel())
        prefix = np.concatenate(([0.0], np.cumsum(x)))
        x.setflags(write=False)
        prefix.setflags(write=False)
        return cls(x, prefix, _abs_diff_sum_sorted(x))

    @property
    def n(self) -> int:
        """Number of values."""
        return int(self.sorted_values.size)

    @property
    def total(self) -> float:
        """Sum of the values."""
        return float(self.prefix[-1])

    def gini(self) -> float:
        """Gini coefficient of the summarised values (equal to :func:`gini`)."""
        return _gini_from_parts(self.abs_diff_sum, self.n, self.total)

    def abs_diff_to(self, y: ArrayLike) -> FloatArray:
        """:math:`\\sum_j |y - x_j|` for each ``y``, by binary search and prefix sums."""
        yy = as_float_array("y", y).ravel()
        k = np.searchsorted(self.sorted_values, yy, side="right")
        below = k * yy - self.prefix[k]
        above = (self.total - self.prefix[k]) - (self.n - k) * yy
        return below + above

    def gini_after(self, removed: ArrayLike = (), added: ArrayLike = ()) -> float:
        r"""Gini of :math:`F = (A \setminus R) \cup N`, the summarised multiset :math:`A` with the
        values :math:`R` removed and :math:`N` added.

        With :math:`C(X, Y) = \sum_{x \in X, y \in Y} |x - y|` and :math:`D(X) = C(X, X)`:

        .. math::

            D(A \setminus R) &= D(A) + D(R) - 2\,C(A, R) \\
            D(F) &= D(A \setminus R) + D(N) + 2\,(C(A, N) - C(R, N))

        Parameters
        ----------
        removed : array_like
            Values to remove; each must be present in the summary (exact float equality, so pass
            the very values the summary was built from).
        added : array_like
            Non-negative values to add.
        """
        r = np.sort(as_float_array("removed", removed).ravel())
        a = as_float_array("added", added).ravel()
        self._check_subset(r)
        d_r = _abs_diff_sum_sorted(r)
        d_a = _abs_diff_sum_sorted(np.sort(a))
        c_ar = 2.0 * float(self.abs_diff_to(r).sum())
        c_an = 2.0 * float(self.abs_diff_to(a).sum())
        c_rn = 2.0 * float(np.abs(r[:, None] - a[None, :]).sum())
        d_new = self.abs_diff_sum + d_r - c_ar + d_a + c_an - c_rn
        n_new = self.n - r.size + a.size
        total_new = self.total - float(r.sum()) + float(a.sum())
        # The update subtracts large terms; when little is left (e.g. the biggest values removed,
        # or the result nearly equal) rounding could dominate, so recompute exactly, in O(n).
        d_scale = self.abs_diff_sum + d_r + c_ar + d_a + c_an + c_rn
        t_scale = self.total + float(r.sum()) + float(a.sum())
        if d_new <= _CANCEL_REL * d_scale or total_new <= _CANCEL_REL * t_scale:
            return gini(np.concatenate((self._remaining(r), a)))
        return _gini_from_parts(d_new, n_new, total_new)

    def min(self) -> float:
        """Smallest value; ``inf`` for an empty summary."""
        return float(self.sorted_values[0]) if self.n else float("inf")

    def min_after(self, removed: ArrayLike = (), added: ArrayLike = ()) -> float:
        """Smallest value of :math:`(A \\setminus R) \\cup N`; ``inf`` if that set is empty."""
        r = np.sort(as_float_array("removed", removed).ravel())
        a = as_float_array("added", added).ravel()
        self._check_subset(r)
        # R is a sub-multiset of sorted A: the removed values are consumed from the front while
        # they match, and the first A value not consumed is the remaining minimum.
        i = 0
        for value in r:
            if i < self.n and self.sorted_values[i] == value:
                i += 1
            else:
                break
        rest_min = float(self.sorted_values[i]) if i < self.n else float("inf")
        return min(rest_min, float(a.min())) if a.size else rest_min

    def _remaining(self, r_sorted: FloatArray) -> FloatArray:
        """The summarised values with the multiset ``r_sorted`` removed (must be a subset)."""
        keep = np.ones(self.n, dtype=bool)
        uniq, counts = np.unique(r_sorted, return_counts=True)
        starts = np.searchsorted(self.sorted_values, uniq, side="left")
        for start, count in zip(starts, counts, strict=True):
            keep[start : start + count] = False
        return self.sorted_values[keep]

    def _check_subset(self, r_sorted: FloatArray) -> None:
        if r_sorted.size == 0:
            return
        uniq, counts = np.unique(r_sorted, return_counts=True)
        present = np.searchsorted(self.sorted_values, uniq, side="right") - np.searchsorted(
            self.sorted_values, uniq, side="left"
        )
        missing = present < counts
        if missing.any():
            raise ValueError(
                f"removed: value {float(uniq[missing][0])!r} is not in the summary (as often as given)"
            )


def _abs_diff_sum_sorted(x: FloatArray) -> float:
    """:math:`\\sum_i\\sum_j |x_i - x_j| = 2\\sum_k (2k - n - 1) x_{(k)}` for sorted ``x``."""
    n = x.size
    if n < 2 or x[0] == x[-1]:
        return 0.0
    coef = 2.0 * np.arange(1, n + 1, dtype=np.float64) - n - 1.0
    return max(2.0 * float(coef @ x), 0.0)


def _gini_from_parts(abs_diff_sum: float, n: int, total: float) -> float:
    if n == 0 or total <= 0.0 or abs_diff_sum <= 0.0:
        return 0.0
    return abs_diff_sum / (2.0 * n * total)


def _gini_sorted(x: FloatArray) -> float:
    return _gini_from_parts(_abs_diff_sum_sorted(x), int(x.size), float(x.sum()))
