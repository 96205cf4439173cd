r"""The best fixed allocation in hindsight, the comparator of INFIDA's regret.

.. math:: \max_{y \in \mathcal Y} \sum_{t=1}^T G(r_t, y)

is a linear program once each :math:`\min\{r, Z\}` of :mod:`.gain` gets its own variable
:math:`w_{t,\rho,k} \le r_{t,\rho}`, :math:`w_{t,\rho,k} \le \sum_{k' \le k} l_{t,\rho,k'}
y_{\rho,k'}`, maximising :math:`\sum \delta\, w` (the δ are ≥ 0, so the optimum puts each ``w``
at its minimum). With ``y`` binary it is the best fixed *integral* allocation (a MILP). Both are
solved exactly by HiGHS through :func:`scipy.optimize.milp`.

Regret of a run: :math:`\sum_t G(r_t, y^*) - \sum_t G(r_t, x_t)`; the paper's bound is
:math:`O(\sqrt T)` for the fractional iterates against the fractional :math:`y^*`, and for the
integral allocation against :math:`(1-1/e)` of the integral optimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from qosched.policies.infida.catalog import Catalog
from qosched.policies.infida.gain import RequestTable

__all__ = ["Hindsight", "best_fixed_allocation"]


@dataclass(frozen=True, slots=True)
class Hindsight:
    """The best fixed allocation (per slot) and its total gain over the windows."""

    allocation: np.ndarray
    total_gain: float
    integral: bool


def _window_rows(
    table: RequestTable, counts: np.ndarray, capacity: np.ndarray, total: int, offset: int
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """Rows ``w_k − Σ_{k'≤k} l_{k'} y_{k'} ≤ 0`` for one window; returns (A, ub on w, δ)."""
    valid = table.valid
    rows, cols, vals = [], [], []
    cells = np.argwhere(valid)
    for n, (r, k) in enumerate(cells):
        rows.append(n)
        cols.append(offset + n)
        vals.append(1.0)
        for kk in range(k + 1):
            rows.append(n)
            cols.append(int(table.slot[r, kk]))
            vals.append(-float(capacity[r, kk]))
    a = sparse.csr_matrix((vals, (rows, cols)), shape=(len(cells), total))
    ub = np.asarray(counts, dtype=float)[cells[:, 0]] if len(cells) else np.zeros(0)
    delta = table.delta_ms[valid]
    return a, ub, delta


def best_fixed_allocation(
    catalog: Catalog,
    tables: Sequence[RequestTable],
    counts: Sequence[np.ndarray],
    capacities: Sequence[np.ndarray],
    *,
    integral: bool,
    weights: Sequence[float] | None = None,
) -> Hindsight:
    """Solve the LP (``integral=False``) or MILP (``integral=True``) of the module docstring.

    ``weights`` (default all 1) repeats a window: a sequence whose windows take few distinct
    values (an adversary alternating two patterns) is solved as the distinct windows, each
    weighted by how often it occurs — the same objective with far fewer variables.
    """
    n = catalog.n_slots
    total = n + sum(int(np.count_nonzero(t.valid)) for t in tables)
    blocks, ubs, deltas = [], [], []
    offset = n
    repeat = [1.0] * len(tables) if weights is None else [float(w) for w in weights]
    for table, c, cap, weight in zip(tables, counts, capacities, repeat, strict=True):
        a, ub, delta = _window_rows(table, c, cap, total, offset)
        blocks.append(a)
        ubs.append(ub)
        deltas.append(weight * delta)
        offset += len(ub)
    link = sparse.vstack(blocks, format="csr") if blocks else None
    budget = sparse.csr_matrix(
        (catalog.sizes_mib, (catalog.node_of, np.arange(n))), shape=(len(catalog.nodes), total)
    )
    cons = [LinearConstraint(budget, -np.inf, catalog.budgets_mib)]
    if link is not None and link.shape[0]:
        cons.append(LinearConstraint(link, -np.inf, 0.0))
    w_ub = np.concatenate(ubs) if ubs else np.zeros(0)
    objective = -np.concatenate([np.zeros(n), *deltas]) if deltas else -np.zeros(n)
    lower = np.zeros(total)
    upper = np.concatenate([np.ones(n), w_ub])
    integrality = np.concatenate([np.full(n, 1 if integral else 0), np.zeros(total - n)])
    res = milp(objective, constraints=cons, bounds=Bounds(lower, upper), integrality=integrality)
    if not res.success:
        raise RuntimeError(f"hindsight optimum: HiGHS failed: {res.message}")
    y = np.asarray(res.x[:n])
    return Hindsight(np.round(y) if integral else y, float(-res.fun), integral)
