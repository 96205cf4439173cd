r"""Regret of an allocator against the best fixed allocation in hindsight, at the model level.

For a request sequence :math:`r_1, \dots, r_T` (counts per window, one request table: the links
do not change), an allocator produces :math:`y_t, x_t` from :math:`r_1..r_{t-1}` and earns
:math:`G(r_t, x_t)` (integral; what is served) — and, for INFIDA, :math:`G(r_t, y_t)` on its
fractional iterates, the quantity the mirror-ascent theorem bounds. The regret is

.. math:: R_T = \max_{x \text{ fixed}} \sum_t G(r_t, x) - \sum_t G(r_t, x_t)

(:mod:`.hindsight`; the fractional comparator for the fractional iterates). Identical windows
are merged with weights before the hindsight solve, so a long adversarial sequence that
alternates a few patterns costs a small MILP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qosched.policies.infida.allocators import Allocator, InfidaAllocator
from qosched.policies.infida.catalog import Catalog
from qosched.policies.infida.gain import RequestTable, gain, window_capacity
from qosched.policies.infida.hindsight import best_fixed_allocation

__all__ = ["SequenceRun", "best_fixed_gain", "run_sequence"]


@dataclass(frozen=True, slots=True)
class SequenceRun:
    """Per-window gains of one allocator on a sequence (``fractional`` only for INFIDA)."""

    integral: np.ndarray
    fractional: np.ndarray | None
    loads: int


def run_sequence(
    allocator: Allocator, catalog: Catalog, table: RequestTable, counts: Sequence[np.ndarray], window_s: float
) -> SequenceRun:
    """Play the sequence: window ``t`` is served with the allocation decided after window ``t−1``."""
    decision = allocator.first()
    integral, fractional = [], []
    loads = int(decision.integral.sum())
    for c in counts:
        cap = window_capacity(table, catalog, c, window_s)
        integral.append(gain(table, c, decision.integral.astype(float), cap))
        fractional.append(gain(table, c, decision.fractional, cap))
        previous = decision.integral
        decision = allocator.observe(table, c, cap)
        loads += int(np.count_nonzero(decision.integral & ~previous))
    frac = np.array(fractional) if isinstance(allocator, InfidaAllocator) else None
    return SequenceRun(np.array(integral), frac, loads)


def best_fixed_gain(
    catalog: Catalog, table: RequestTable, counts: Sequence[np.ndarray], window_s: float, *, integral: bool
) -> float:
    """:math:`\\max_x \\sum_t G(r_t, x)` over fixed allocations (identical windows merged)."""
    distinct: dict[bytes, tuple[np.ndarray, int]] = {}
    for c in counts:
        key = np.asarray(c, dtype=float).tobytes()
        arr, n = distinct.get(key, (np.asarray(c, dtype=float), 0))
        distinct[key] = (arr, n + 1)
    cs = [a for a, _ in distinct.values()]
    weights = [float(n) for _, n in distinct.values()]
    caps = [window_capacity(table, catalog, c, window_s) for c in cs]
    return best_fixed_allocation(
        catalog, [table] * len(cs), cs, caps, integral=integral, weights=weights
    ).total_gain
