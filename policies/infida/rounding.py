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

Across nodes × services
-----------------------
:func:`dep_round_network` (the what-if's default) goes further: the slots are the edges of the
bipartite graph nodes × services, and each step moves mass along a walk through several nodes and
services (Gandhi et al.'s bipartite dependent rounding, with memory weights), so a service's copies
on different nodes and tiers are negatively correlated and their number is kept where the walk
passes through the service. Budgets always hold and :math:`E[x] = y` up to each full node's last
entry; it recovers most of what the per-node rounding loses (docs/infida.md), at the price of more
model loads from window to window.
"""

from __future__ import annotations

import numpy as np

from qosched.policies.infida.catalog import Catalog

__all__ = ["EPS", "dep_round_allocation", "dep_round_network", "dep_round_node"]

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


# -- coordinated rounding across nodes × services (bipartite dependent rounding) ---------------


class _Graph:
    """The fractional entries as edges of the bipartite graph nodes × groups (services), with the
    fractional edges of every node and group kept in lists, largest ``y`` first (an edge leaves
    them once integral)."""

    def __init__(self, y: np.ndarray, node_of: np.ndarray, group_of: np.ndarray) -> None:
        self.y, self.node_of, self.group_of = y, node_of, group_of
        self.nodes: dict[int, list[int]] = {}
        self.groups: dict[int, list[int]] = {}
        frac = np.flatnonzero((y > 0.0) & (y < 1.0))
        for i in frac[np.argsort(-y[frac], kind="stable")]:
            self.nodes.setdefault(int(node_of[i]), []).append(int(i))
            self.groups.setdefault(int(group_of[i]), []).append(int(i))

    def at_node(self, v: int) -> list[int]:
        return self.nodes.get(v, [])

    def at_group(self, g: int) -> list[int]:
        return self.groups.get(g, [])

    def start(self) -> int | None:
        """The first node with two fractional edges (None: every node has at most one)."""
        return next((v for v in sorted(self.nodes) if len(self.nodes[v]) >= 2), None)

    def settle(self, edges: list[int]) -> None:
        """Drop the edges of a walk that became integral."""
        for i in edges:
            if not 0.0 < self.y[i] < 1.0:
                self.nodes[int(self.node_of[i])].remove(i)
                self.groups[int(self.group_of[i])].remove(i)


def _walk(graph: _Graph, start_node: int) -> list[int]:
    """A walk ``g₀ –e₁– v₁ –e₂– g₁ –e₃– v₂ –e₄– g₂ …`` of fractional edges, groups at both ends.

    It starts with the first two fractional edges of ``start_node`` (the largest ``y``) and extends from its right-hand
    group through another of the group's edges to a node, and on through a second edge of that
    node to a group not yet on the walk (or back to the first group, closing a cycle, which ends
    it). No edge is used twice and no group is entered twice, so the walk holds at most two edges
    of any group, one going up and one down; a node may be passed more than once, each pass by
    two of its edges, so its memory is kept exactly.
    """
    first = graph.at_node(start_node)
    edges = [first[0], first[1]]
    used = set(edges)
    left = int(graph.group_of[first[0]])
    right = int(graph.group_of[first[1]])
    groups = {left, right}
    while right != left:
        step = _next_pair(graph, right, used, groups, left)
        if step is None:
            break
        edges += step
        used.update(step)
        right = int(graph.group_of[step[1]])
        groups.add(right)
    return edges


def _next_pair(graph: _Graph, group: int, used: set[int], groups: set[int], left: int) -> list[int] | None:
    """From ``group``: an unused edge ``f`` to a node and that node's unused edge ``h`` to a new
    group (or back to the walk's first group, closing it)."""
    for f in graph.at_group(group):
        if f in used:
            continue
        for h in graph.at_node(int(graph.node_of[f])):
            g = int(graph.group_of[h])
            if h != f and h not in used and (g not in groups or g == left):
                return [f, h]
    return None


def _direction(edges: list[int], sizes: np.ndarray) -> np.ndarray:
    """Signed rates along the walk: opposite at a node, weighted by size (memory kept); opposite
    and equal at a group (its number of loaded copies kept)."""
    d = np.empty(len(edges))
    d[0] = 1.0
    for k in range(1, len(edges)):
        at_node = k % 2 == 1  # e₁e₂ meet at a node, e₂e₃ at a group, …
        d[k] = -d[k - 1] * (sizes[edges[k - 1]] / sizes[edges[k]] if at_node else 1.0)
    return d


def _walk_step(y: np.ndarray, edges: list[int], d: np.ndarray, u: float) -> None:
    ye = y[edges]
    up = np.where(d > 0, (1.0 - ye) / d, ye / -d)  # how far +t can go
    down = np.where(d > 0, ye / d, (1.0 - ye) / -d)  # how far −t can go
    t_up, t_down = float(up.min()), float(down.min())
    if u < t_down / (t_up + t_down):
        ye, k = ye + t_up * d, int(np.argmin(up))
        ye[k] = 1.0 if d[k] > 0 else 0.0  # the entry that set the move lands on its bound exactly
    else:
        ye, k = ye - t_down * d, int(np.argmin(down))
        ye[k] = 0.0 if d[k] > 0 else 1.0
    ye[ye < EPS] = 0.0
    ye[ye > 1.0 - EPS] = 1.0
    y[edges] = ye


class _KeyedUniforms:
    """The uniforms of one network rounding, drawn up front and keyed by the slot a walk starts
    from (and how many walks started there before) instead of by their order. Every key is read
    once, so each step still gets a fresh uniform independent of the past; but with the same
    generator state (common random numbers across windows) a walk that starts from the same slot
    reads the same number even when earlier walks changed — a small change of ``y`` changes few
    decisions."""

    KEYS_PER_SLOT = 4

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng = rng
        self.table = rng.random((n, self.KEYS_PER_SLOT))
        self.final = rng.random(n)
        self.used: dict[int, int] = {}

    def walk(self, slot: int) -> float:
        k = self.used.get(slot, 0)
        self.used[slot] = k + 1
        return float(self.table[slot, k]) if k < self.KEYS_PER_SLOT else float(self.rng.random())

    def last(self, slot: int) -> float:
        return float(self.final[slot])


def dep_round_network(
    y: np.ndarray, catalog: Catalog, groups: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    r"""Dependent rounding on the bipartite graph nodes × groups (Gandhi et al. 2006, §2, with
    memory weights), an integral allocation (bool per slot).

    ``groups[i]`` names the substitutes of slot ``i`` (here: the service whose model it holds).
    Each step takes a walk (:func:`_walk`) and moves ``y`` along its signed direction ``d`` by
    ``+t_up`` with probability ``t_down/(t_up+t_down)``, else by ``−t_down`` — the largest moves
    that keep every entry in [0, 1], so at least one entry becomes integral:

    * every node on the walk keeps :math:`\sum s y` exactly (its two edges move by
      :math:`s_a \Delta_a = -s_b \Delta_b`), so **no budget is ever exceeded**;
    * :math:`E[\Delta] = 0` in every step, so :math:`E[x] = y` (a martingale), up to the last
      fractional entry of a node, rounded up with probability ``y`` when it fits and down otherwise
      (as in :func:`dep_round_node`; exact when it fits);
    * a walk holds at most two edges of a group, moving in opposite directions, so the copies of
      one service — on one node or across nodes — are **negatively correlated** (Gandhi et al.'s
      property (P3) at the group's vertex): what the paper's (1 − 1/e) bound on
      :math:`E[G(x)]` needs of the slots of one request type (its proof bounds
      :math:`P(\text{none of a set of its slots}) \le \prod (1 - y)`). The paper's per-node
      DepRound has this within a node and independence across nodes; here a node may be passed
      twice by one walk, so two slots of *different* services on one node may move together — the
      bound does not use those pairs.
    * a group inside a walk keeps its number of copies (one goes up where another goes down):
      a service spread as ½ + ½ over two nodes ends with exactly one copy, and a service whose
      copies sum to at most 1 is loaded at most once — the coverage
      :math:`\min\{r, \sum l x\}` is then what :math:`G(y)` counted, in expectation, instead of
      the :math:`1 - \prod(1 - y)` of independent nodes.

    **Order.** Any choice of walk keeps the three properties (each step is a martingale step
    whatever the history), so the walks take the largest fractional entries first (every node's
    and group's edges sorted by ``y``, decreasing). That matters because the projection fills
    every budget exactly (:math:`\sum s y = b`) and, with unequal sizes, the last fractional
    entry of a node then never fits: it is always rounded down — the knapsack's integrality gap,
    which no rounding avoids (:func:`dep_round_node`'s example). Taking the large entries first
    leaves the smallest one for last, usually a redundant copy of a service already covered: on
    a converged allocation of the 180-window unshipped scenario, index order lost 8.6 % of
    :math:`G(y)` in expectation, this order 1.0 % (docs/infida.md).
    """
    y = np.clip(np.asarray(y, dtype=float).copy(), 0.0, 1.0)
    y[y < EPS] = 0.0
    y[y > 1.0 - EPS] = 1.0
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != y.shape:
        raise ValueError(f"groups must have one entry per slot ({y.size}), got {groups.size}")
    graph = _Graph(y, catalog.node_of, groups)
    sizes = catalog.sizes_mib
    uniforms = _KeyedUniforms(rng, catalog.n_slots)
    while (start := graph.start()) is not None:
        edges = _walk(graph, start)
        _walk_step(y, edges, _direction(edges, sizes), uniforms.walk(edges[0]))
        graph.settle(edges)
    x = y >= 1.0
    for v, node in enumerate(catalog.nodes):
        for k in graph.at_node(v):  # at most one left per node
            fits = float(sizes[x & (catalog.node_of == v)].sum()) + sizes[k] <= node.budget_mib * (
                1.0 + 1e-12
            )
            x[k] = bool(fits and uniforms.last(k) < y[k])
    return x
