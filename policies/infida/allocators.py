r"""INFIDA and its two baselines behind one interface: an allocation per window from the last one's requests.

Every allocator answers :meth:`Allocator.first` (the allocation of the first window, before any
request was seen) and :meth:`Allocator.observe` (given the request counts of the window that just
ended, the allocation of the next one). A :class:`Decision` carries the fractional allocation
(for the baselines, the integral one as floats) and the integral one (bool per slot).

- :class:`InfidaAllocator` — mirror ascent + projection + DepRound (:mod:`.oma`), the paper's
  Algorithm 1; optionally with the adaptive, horizon-free step (``adaptive``: DS-OMD with an
  AdaGrad-norm η_t, :class:`~.oma.AdaptiveStep`) and the rounding coordinated across nodes
  (``groups``: :func:`~.rounding.dep_round_network`).
- :class:`GreedyAllocator` — the baseline of similar cost the paper compares with: fill the
  budgets by the *observed value per MiB* of each slot on the last window's requests, i.e. the
  marginal gain :math:`G(r_{t}, x + e_i) - G(r_{t}, x)` divided by :math:`s_i`, best first, as
  long as it is positive and the slot fits (lazy greedy: :math:`G(r, \cdot)` is submodular on
  integral allocations, a weighted sum of concave functions of modular ones, so a stale marginal
  gain is an upper bound and need not be recomputed until it reaches the top).
- :class:`StaticAllocator` — the greedy allocation of the first window's requests, kept for the
  rest of the run (the best fixed allocation one could pick after one window).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from qosched.policies.infida.catalog import Catalog
from qosched.policies.infida.gain import RequestTable, gain, subgradient
from qosched.policies.infida.oma import (
    AdaptiveStep,
    dual_norm_per_mib,
    initial_allocation,
    mirror_ascent_step,
    stabilized_mirror_ascent_step,
)
from qosched.policies.infida.projection import project_allocation
from qosched.policies.infida.rounding import dep_round_allocation, dep_round_network

__all__ = [
    "Allocator",
    "Decision",
    "GreedyAllocator",
    "InfidaAllocator",
    "StateError",
    "StaticAllocator",
    "greedy_allocation",
]

STATE_VERSION = 1


class StateError(ValueError):
    """A persisted INFIDA state that cannot be resumed (the message says why)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The allocation of one window: fractional ``y`` and integral ``x`` (one entry per slot)."""

    fractional: np.ndarray
    integral: np.ndarray


class Allocator(Protocol):
    name: str

    def first(self) -> Decision: ...

    def observe(self, table: RequestTable, counts: np.ndarray, capacity: np.ndarray) -> Decision: ...


def greedy_allocation(
    catalog: Catalog, table: RequestTable, counts: np.ndarray, capacity: np.ndarray
) -> np.ndarray:
    """Greedy by marginal gain per MiB on the given requests (lazy evaluation, see module doc)."""
    x = np.zeros(catalog.n_slots, dtype=bool)
    free = catalog.budgets_mib.astype(float).copy()
    base = gain(table, counts, x, capacity)
    heap = [(-np.inf, i) for i in range(catalog.n_slots)]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        v, s = catalog.node_of[i], catalog.sizes_mib[i]
        if s > free[v]:
            continue
        x[i] = True
        up = gain(table, counts, x, capacity) - base
        x[i] = False
        ratio = up / s
        if heap and ratio < -heap[0][0] - 1e-12:
            heapq.heappush(heap, (-ratio, i))
            continue
        if up <= 0:
            break
        x[i] = True
        free[v] -= s
        base += up
    return x


@dataclass
class GreedyAllocator:
    """Re-runs :func:`greedy_allocation` on every window's requests (nothing in the first window)."""

    catalog: Catalog
    name: str = "greedy-allocation"

    def first(self) -> Decision:
        x = np.zeros(self.catalog.n_slots, dtype=bool)
        return Decision(x.astype(float), x)

    def observe(self, table: RequestTable, counts: np.ndarray, capacity: np.ndarray) -> Decision:
        x = greedy_allocation(self.catalog, table, counts, capacity)
        return Decision(x.astype(float), x)


@dataclass
class StaticAllocator:
    """The greedy allocation of the first window's requests, kept for every later window.

    Nothing is loaded during the first window (nothing was observed yet), as for the greedy one.
    """

    catalog: Catalog
    name: str = "static-allocation"
    _x: np.ndarray | None = field(default=None, init=False, repr=False)

    def first(self) -> Decision:
        x = np.zeros(self.catalog.n_slots, dtype=bool) if self._x is None else self._x.copy()
        return Decision(x.astype(float), x)

    def observe(self, table: RequestTable, counts: np.ndarray, capacity: np.ndarray) -> Decision:
        if self._x is None:
            self._x = greedy_allocation(self.catalog, table, counts, capacity)
        return self.first()


@dataclass
class InfidaAllocator:
    """Algorithm 1 of the paper (:mod:`.oma`): one mirror-ascent step and one DepRound per window.

    ``eta``: the constant step (the theorem's η*), or, with ``adaptive``, the step of the next
    window (DS-OMD, η_t from the squared gradient norms seen, ``grad_sq_sum``). ``groups`` (one
    entry per slot: the service whose model it holds) switches the rounding from the paper's
    per-node DepRound to the bipartite one over nodes × services.
    """

    catalog: Catalog
    eta: float
    rng: np.random.Generator
    name: str = "infida"
    antithetic: bool = False
    #: Common random numbers across windows: every window's rounding reads the same uniforms
    #: (from ``round_seed``; drawn from ``rng`` when None). Each window's draw is still uniform, so
    #: its marginals are exact, but a small change of y changes few loaded models (fewer loads).
    coupled: bool = False
    round_seed: int | None = None
    adaptive: AdaptiveStep | None = None
    groups: np.ndarray | None = None
    grad_sq_sum: float = 0.0
    y: np.ndarray = field(init=False)
    y_start: np.ndarray = field(init=False, repr=False)
    windows: int = 0

    def __post_init__(self) -> None:
        self.y = initial_allocation(self.catalog)
        self.y_start = self.y.copy()
        if self.adaptive is not None:
            self.eta = self.adaptive.eta(self.grad_sq_sum)
        if self.coupled and self.round_seed is None:
            self.round_seed = int(self.rng.integers(2**63))

    def _round(self) -> np.ndarray:
        rng = np.random.default_rng(self.round_seed) if self.coupled else self.rng
        if self.groups is not None:
            return dep_round_network(self.y, self.catalog, self.groups, rng)
        return dep_round_allocation(self.y, self.catalog, rng, antithetic=self.antithetic)

    def _step(self, g: np.ndarray) -> None:
        if self.adaptive is None:
            self.y = mirror_ascent_step(self.y, g, self.eta, self.catalog)
            return
        eta_t = self.adaptive.eta(self.grad_sq_sum)
        self.grad_sq_sum += dual_norm_per_mib(g, self.catalog.sizes_mib) ** 2
        self.eta = self.adaptive.eta(self.grad_sq_sum)
        self.y = stabilized_mirror_ascent_step(self.y, g, eta_t, self.eta, self.y_start, self.catalog)

    def first(self) -> Decision:
        return Decision(self.y.copy(), self._round())

    def observe(self, table: RequestTable, counts: np.ndarray, capacity: np.ndarray) -> Decision:
        self._step(subgradient(table, counts, self.y, capacity))
        self.windows += 1
        return Decision(self.y.copy(), self._round())

    # -- persisted state (a plain dict; the shell writes it to a ConfigMap) --------------------

    def state(self) -> dict[str, Any]:
        """``{"version", "windows", "eta", "grad_sq_sum", "y": {node: {model: value}}}``."""
        y: dict[str, dict[str, float]] = {}
        for i, s in enumerate(self.catalog.slots):
            y.setdefault(s.node, {})[s.model] = float(self.y[i])
        return {
            "version": STATE_VERSION,
            "windows": self.windows,
            "eta": self.eta,
            "grad_sq_sum": self.grad_sq_sum,
            "y": y,
        }

    def resume(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state`. Slots the state does not know start at :math:`y_1`;
        the result is projected again (budgets may have changed). Raises :class:`StateError`."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise StateError(f"INFIDA state: version must be {STATE_VERSION}")
        y_in, windows = state.get("y"), state.get("windows")
        if not isinstance(y_in, Mapping) or not isinstance(windows, int) or windows < 0:
            raise StateError("INFIDA state: 'y' must be a mapping and 'windows' an int >= 0")
        y = initial_allocation(self.catalog)
        for i, s in enumerate(self.catalog.slots):
            value = y_in.get(s.node, {}).get(s.model) if isinstance(y_in.get(s.node), Mapping) else None
            if value is None:
                continue
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise StateError(f"INFIDA state: y[{s.node}][{s.model}] must be a number in 0..1")
            y[i] = float(value)
        sq = state.get("grad_sq_sum", 0.0)
        if not isinstance(sq, int | float) or not sq >= 0.0:
            raise StateError("INFIDA state: 'grad_sq_sum' must be a number >= 0")
        with np.errstate(divide="ignore"):
            self.y = project_allocation(np.log(y), self.catalog)
        self.windows = windows
        self.grad_sq_sum = float(sq)
        if self.adaptive is not None:
            self.eta = self.adaptive.eta(self.grad_sq_sum)
