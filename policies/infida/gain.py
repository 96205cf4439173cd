r"""The gain of an allocation for the requests of one window, and its subgradient (INFIDA §III–IV).

For a request type ρ (a service and its path) the slots on the path that can serve it are sorted
by cost, :math:`\gamma_1 \le \gamma_2 \le \dots \le \gamma_{K}`, and the repository closes the
list with :math:`\gamma_{K+1} = \gamma_{\text{repo}}` (slots no cheaper than the repository are
dropped: a request would never be sent to them). Requests are served by the cheapest allocated
slot that still has capacity, then the next, and what is left by the repository. With
:math:`r_\rho` requests of type ρ in the window and :math:`l_k` the capacity of the k-th slot for
them, the cost saved against serving everything at the repository is (the paper's gain, its
eq. (9) in the closed form of its Lemma on the sorted costs):

.. math::

    G(r, y) = \sum_\rho \sum_{k=1}^{K_\rho} (\gamma_{k+1} - \gamma_k)
              \min\Big\{ r_\rho,\; \sum_{k' \le k} l_{k'} y_{k'} \Big\}

For an integral allocation ``x`` this is exactly the cost saved; for a fractional ``y`` it is the
concave relaxation INFIDA optimises (a sum of minima of linear functions, so concave, and
piecewise linear). A supergradient, the one INFIDA computes locally at each node (§IV):

.. math::

    \frac{\partial G}{\partial y_{k'}} = l_{k'} \sum_{k \ge k'} (\gamma_{k+1} - \gamma_k)\,
    \mathbf{1}\Big\{\sum_{k'' \le k} l_{k''} y_{k''} < r_\rho\Big\}

summed over the request types whose path holds the slot. At a kink (``Z_k = r``) the indicator
is 0, a valid element of the superdifferential.

Potential available capacity
----------------------------
:math:`l_k` is the paper's *potential available capacity* of the k-th slot for the type: what it
could serve of these requests, never more than there are, :math:`l_k = \min\{c_k, r_\rho\}`
with :math:`c_k` the slot's capacity for the type. Capping at :math:`r_\rho` matters twice: the
relaxation is then tight for a single slot (:math:`G` linear in its ``y``, instead of saturating
at :math:`y = r/c`), and the weights :math:`l_k / r_\rho \le 1` are what the (1 − 1/e) bound
of the rounding needs (:mod:`.rounding`).

A slot on an edge node is on the path of several request types. Its capacity in the window,
``capacity_rps · window_s``, is split among them in proportion to their request counts
(:func:`window_capacity`), so each :math:`l` is fixed for the window and :math:`G` stays concave
in ``y``. This is our choice where the paper leaves capacity sharing to its load model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qosched.policies.infida.catalog import Catalog, CostModel, RequestType

__all__ = ["RequestTable", "build_table", "gain", "subgradient", "window_capacity"]


@dataclass(frozen=True)
class RequestTable:
    """Each request type's usable slots on its path, sorted by cost (padded with ``-1``).

    slot : (R, K) int — slot index of the k-th cheapest option of type ρ, ``-1`` padding.
    cost_ms : (R, K) float — its cost γ_k (``inf`` on padding).
    repo_cost_ms : (R,) float — γ of the repository.
    delta_ms : (R, K) float — γ_{k+1} − γ_k with γ_{K_ρ+1} = γ_repo (0 on padding), all ≥ 0.
    """

    types: tuple[RequestType, ...]
    slot: np.ndarray
    cost_ms: np.ndarray
    repo_cost_ms: np.ndarray
    delta_ms: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.slot >= 0

    def type_index(self) -> dict[tuple[str, str], int]:
        """``(service, entry node)`` → row."""
        return {(t.service, t.entry): r for r, t in enumerate(self.types)}


def _options(
    catalog: Catalog, cost: CostModel, rtype: RequestType, repo_ms: float
) -> list[tuple[float, int]]:
    on_path = set(rtype.path)
    out = []
    for i, s in enumerate(catalog.slots):
        if s.node in on_path and s.model in rtype.variants:
            c = cost.slot_cost_ms(rtype, s)
            if c < repo_ms:
                out.append((c, i))
    out.sort()
    return out


def build_table(catalog: Catalog, types: Sequence[RequestType], cost: CostModel) -> RequestTable:
    """Sort every request type's options by cost (ties by slot index) and pad them to one width."""
    repo = np.array([cost.repository_cost_ms(t) for t in types], dtype=float)
    options = [_options(catalog, cost, t, float(repo[r])) for r, t in enumerate(types)]
    width = max((len(o) for o in options), default=0)
    slot = np.full((len(types), width), -1, dtype=np.int64)
    cost_ms = np.full((len(types), width), np.inf)
    for r, opts in enumerate(options):
        for k, (c, i) in enumerate(opts):
            slot[r, k] = i
            cost_ms[r, k] = c
    nxt = np.concatenate([cost_ms[:, 1:], np.full((len(types), 1), np.inf)], axis=1)
    nxt = np.where(np.isfinite(nxt), nxt, repo[:, None])
    delta = np.where(slot >= 0, nxt - np.where(slot >= 0, cost_ms, 0.0), 0.0)
    return RequestTable(tuple(types), slot, cost_ms, repo, delta)


def window_capacity(table: RequestTable, catalog: Catalog, counts: np.ndarray, window_s: float) -> np.ndarray:
    """(R, K) potential available capacity :math:`l` of each option for its type in a window.

    ``capacity_rps·window_s`` of the slot, split among the request types through it in
    proportion to their counts, and capped at the type's own count (module docstring).
    """
    counts = np.asarray(counts, dtype=float)
    valid = table.valid
    idx = np.where(valid, table.slot, 0)
    through = np.zeros(catalog.n_slots)
    np.add.at(through, idx[valid], np.broadcast_to(counts[:, None], idx.shape)[valid])
    total = catalog.capacity_rps[idx] * window_s
    share = np.where(through[idx] > 0, counts[:, None] / np.where(through[idx] > 0, through[idx], 1.0), 1.0)
    return np.where(valid, np.minimum(total * share, counts[:, None]), 0.0)


def _cumulative(table: RequestTable, y: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    ys = np.where(table.valid, np.asarray(y, dtype=float)[np.where(table.valid, table.slot, 0)], 0.0)
    return np.cumsum(capacity * ys, axis=1)


def gain(table: RequestTable, counts: np.ndarray, y: np.ndarray, capacity: np.ndarray) -> float:
    """:math:`G(r, y)` of the module docstring [ms·requests] (exact saved cost when ``y`` is 0/1)."""
    r = np.asarray(counts, dtype=float)[:, None]
    z = _cumulative(table, y, capacity)
    return float(np.sum(table.delta_ms * np.minimum(r, z)))


def subgradient(table: RequestTable, counts: np.ndarray, y: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """A supergradient of :math:`G(r, \\cdot)` at ``y``, one entry per slot (≥ 0)."""
    r = np.asarray(counts, dtype=float)[:, None]
    z = _cumulative(table, y, capacity)
    open_ = table.delta_ms * (z < r)
    tail = np.cumsum(open_[:, ::-1], axis=1)[:, ::-1]
    g = np.zeros(len(y))
    valid = table.valid
    np.add.at(g, table.slot[valid], (capacity * tail)[valid])
    return g
