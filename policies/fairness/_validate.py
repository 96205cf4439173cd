"""Input checks shared by the fairness modules: bad input raises ``ValueError`` naming the field.

Every public function of :mod:`qosched.policies.fairness` converts its array inputs through
:func:`as_float_array`, so a NaN, a negative time or an infinite price is reported with the
argument's name and the first offending index instead of propagating into a result.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def as_float_array(
    name: str,
    values: ArrayLike,
    *,
    nonneg: bool = True,
    allow_inf: bool = False,
) -> FloatArray:
    """Return ``values`` as a float64 array, or raise ``ValueError`` naming ``name``.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    values : array_like
        Scalar or array of numbers.
    nonneg : bool
        Reject values below 0.
    allow_inf : bool
        Accept ``+inf`` (``-inf`` is always rejected when ``nonneg``).
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected numbers, got {values!r}") from exc
    bad = np.isnan(arr)
    if bad.any():
        raise ValueError(f"{name}: NaN at index {_first(bad)}")
    if not allow_inf:
        bad = np.isinf(arr)
        if bad.any():
            raise ValueError(f"{name}: infinite value at index {_first(bad)}")
    if nonneg:
        bad = arr < 0
        if bad.any():
            raise ValueError(f"{name}: negative value {arr[bad].flat[0]!r} at index {_first(bad)}")
    return arr


def check_fraction(name: str, arr: FloatArray) -> FloatArray:
    """Require every value of ``arr`` in (0, 1] (a QoS target); return it unchanged."""
    bad = (arr <= 0) | (arr > 1)
    if bad.any():
        raise ValueError(f"{name}: must be in (0, 1], got {arr[bad].flat[0]!r} at index {_first(bad)}")
    return arr


def _first(mask: NDArray[np.bool_]) -> str:
    """Index of the first True in ``mask`` as text (``"0"``, ``"(1, 2)"``; ``"()"`` for a scalar)."""
    if mask.ndim == 0:
        return "()"
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return str(idx[0]) if len(idx) == 1 else str(idx)
