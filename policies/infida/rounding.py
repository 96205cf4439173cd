r"""From the fractional allocation to the models actually loaded: dependent rounding (INFIDA §IV).

INFIDA samples the integral allocation :math:`x_t` from the fractional :math:`y_t` with DepRound
(Gandhi, Khuller, Parthasarathy, Srinivasan, J. ACM 2006), adapted to the memory-weighted budget:
take two fractional entries ``i, j`` of a node and move memory between them,

.. math::

    \alpha = \min\{1 - y_i,\ \tfrac{s_j}{s_i} y_j\}, \qquad
    \beta = \min\{y_i,\ \tfrac{s_j}{s_i}(1 - y_j)\},

    (y_i, y_j) \leftarrow
    \begin{cases}
      (y_i + \alpha,\ y_j - \tfrac{s_i}{s_j}\alpha) & \text{with probability } \beta/(\alpha+\beta) \\
      (y_i - \beta,\ y_j + \tfrac{s_i}{s_j}\beta) & \text{with probability } \alpha/(\alpha+\beta)
    \end{cases}

Each step keeps :math:`s_i y_i + s_j y_j` (so the node's memory :math:`\sum s y \le b`), keeps
:math:`E[y_i]` and :math:`E[y_j]` (``α·β/(α+β) − β·α/(α+β) = 0``), and makes at least one of the
two integral, so at most ``n − 1`` steps leave at most one fractional entry ``k``. The marginals
of the pairs are negatively correlated, which is what the paper's (1 − 1/e) bound on the expected
gain of :math:`x_t` against :math:`G(y_t)` rests on.

The last fractional entry
-------------------------
With equal sizes and a budget that is a multiple of them (the paper's experiments), the last entry
always fits when rounded up, and is rounded up with probability :math:`y_k`: the rounding is then
exact in expectation, :math:`E[x] = y`, and never exceeds the budget. With unequal sizes no
rounding can do both in general: budget 4 MiB, two slots of 3 MiB, ``y = (2/3, 2/3)`` is feasible
but any integral allocation holds at most one slot, so :math:`E[x_1 + x_2] \le 1 < 4/3`. We keep
the budget always (a model that does not fit cannot be loaded): the last entry is rounded up with
probability :math:`y_k` when it fits beside the others and down otherwise, so the only bias is on
that one entry, downwards, and only on the draws where it does not fit.

Across nodes
------------
The paper rounds every node on its own. Two nodes holding the same slots (two T4s of the edge)
then load a service's copy independently, and a fractional allocation spread over both (½ each)
loads none of them a quarter of the time. With ``antithetic=True`` the nodes of a tier read one
shared stream of uniforms, every other node as ``1 − u``: each node's draws are still uniform (its
marginals and budget are unchanged), but identical nodes take opposite decisions (½ and ½ → exactly
one copy). On the shipped scenarios it adds 6–8 % to INFIDA's served gain (docs/infida.md).
"""

from __future__ import annotations

import numpy as np

from qosched.policies.infida.catalog import Catalog

__all__ = ["EPS", "dep_round_allocation", "dep_round_node"]

#: Entries within EPS of 0 or 1 count as integral (float rounding of the pair steps).
EPS = 1e-9


def _pair_step(y: np.ndarray, s: np.ndarray, i: int, j: int, u: float) -> None:
    alpha = min(1.0 - y[i], s[j] / s[i] * y[j])
    beta = min(y[i], s[j] / s[i] * (1.0 - y[j]))
    if alpha + beta <= 0.0:
        return
    if u < beta / (alpha + beta):
        y[i] += alpha
        y[j] -= s[i] / s[j] * alpha
    else:
        y[i] -= beta
        y[j] += s[i] / s[j] * beta
    for k in (i, j):
        if y[k] < EPS:
            y[k] = 0.0
        elif y[k] > 1.0 - EPS:
            y[k] = 1.0


def _fractional(y: np.ndarray) -> list[int]:
    return [int(k) for k in np.flatnonzero((y > 0.0) & (y < 1.0))]


class _Uniforms:
    """Uniform draws for one node: its own stream, or a shared one read antithetically (1 − u)."""

    def __init__(self, draws: np.ndarray | None, antithetic: bool, rng: np.random.Generator) -> None:
        self.draws, self.antithetic, self.rng, self.n = draws, antithetic, rng, 0

    def random(self) -> float:
        if self.draws is None or self.n >= len(self.draws):
            return float(self.rng.random())
        u = float(self.draws[self.n])
        self.n += 1
        return 1.0 - u if self.antithetic else u


def dep_round_node(
    y: np.ndarray, sizes_mib: np.ndarray, budget_mib: float, rng: np.random.Generator | _Uniforms
) -> np.ndarray:
    """An integral allocation (bool per slot) of one node drawn from ``y`` (module docstring)."""
    y = np.clip(np.asarray(y, dtype=float).copy(), 0.0, 1.0)
    y[y < EPS] = 0.0
    y[y > 1.0 - EPS] = 1.0
    s = np.asarray(sizes_mib, dtype=float)
    frac = _fractional(y)
    while len(frac) >= 2:
        i, j = frac[0], frac[1]
        _pair_step(y, s, i, j, float(rng.random()))
        frac = [k for k in frac if 0.0 < y[k] < 1.0]
    x = y >= 1.0
    if frac:
        k = frac[0]
        fits = float(s[x].sum()) + s[k] <= budget_mib * (1.0 + 1e-12)
        x[k] = bool(fits and rng.random() < y[k])
    return x


def dep_round_allocation(
    y: np.ndarray, catalog: Catalog, rng: np.random.Generator, *, antithetic: bool = False
) -> np.ndarray:
    """:func:`dep_round_node` on every node's block.

    ``antithetic``: nodes of one tier read one shared stream of uniforms, every other node as
    ``1 − u``. Each node still sees uniform draws (its marginals and budget are those of its own
    DepRound), but two nodes holding the same slots in the same order tend to take opposite
    decisions, so a service's copies on them are negatively correlated — the node-level DepRound
    is otherwise independent across nodes.
    """
    x = np.zeros(catalog.n_slots, dtype=bool)
    shared: dict[str, np.ndarray] = {}
    seen: dict[str, int] = {}
    for v, node in enumerate(catalog.nodes):
        idx = catalog.slots_of(v)
        if not idx.size:
            continue
        source: np.random.Generator | _Uniforms = rng
        if antithetic:
            draws = shared.setdefault(node.tier, rng.random(catalog.n_slots + 1))
            k = seen.get(node.tier, 0)
            seen[node.tier] = k + 1
            source = _Uniforms(draws, k % 2 == 1, rng)
        x[idx] = dep_round_node(y[idx], catalog.sizes_mib[idx], node.budget_mib, source)
    return x
