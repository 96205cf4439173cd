r"""What can be allocated where, and what serving a request with it costs (INFIDA §III).

The inference delivery network of the paper (models.md §E) has nodes ``v`` across tiers, each
with a memory budget :math:`b_v`; a node may hold a set of model variants ``m`` of size
:math:`s_v^m` with :math:`\sum_m s_v^m x_v^m \le b_v` (the paper's budget constraint). Here a
*slot* is one (node, variant) pair the allocator may load: its size [MiB], its accuracy, its
inference delay and the request rate it can take.

The repository
--------------
The paper keeps, at the end of every path, a *repository* node whose models are fixed and always
able to serve (so every request is served, and the gain is measured against it). In qosched the
repository of a service is its most accurate allowed variant on the cloud tier, which the live
controller never scales below one replica (``docs/infida.md``). It is not a slot: it is not
learned and costs nothing of a budget.

Cost of serving
---------------
A request of service ``i`` entering at node ``e`` and served by slot ``(v, m)`` costs, in
milliseconds-equivalent,

.. math:: \gamma(v, m) = T_{e \to v} + D_v^m + w \cdot 100\,(a_i^{\max} - a^m)

- :math:`T_{e\to v}` the network transfer time to reach ``v`` (RTT + size / bandwidth; the
  caller passes the function, the request-level what-if and the live controller share one),
- :math:`D_v^m` the inference delay on ``v``: the latency model of qosched (models.md §A:
  M/G/1 by Pollaczek–Khinchine, M/D/1 for deterministic service) evaluated at the utilisation
  at which the slot's capacity is set (:data:`CAPACITY_UTILIZATION`, the §A feasibility
  threshold 0.8), so it is the delay of a slot loaded to its capacity — an upper bound of the
  delay a request sees there,
- :math:`w` ``accuracy_weight_ms_per_pp``: how many milliseconds one percentage point of
  top-1 accuracy is worth (the paper's trade-off weight between accuracy and delay), against
  the service's most accurate allowed variant :math:`a_i^{\max}`.

The *gain* of a slot for that request is :math:`\gamma_{\text{repo}} - \gamma(v, m)`: how much
cheaper than the repository it is (paper eq. (6)–(8)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from qosched.policies.latency.queueing import MS_PER_S, mg1_wait_ms

__all__ = [
    "CAPACITY_UTILIZATION",
    "Catalog",
    "CatalogError",
    "CostModel",
    "NodeBudget",
    "RequestType",
    "Slot",
    "capacity_rps",
    "inference_ms_at_capacity",
]

#: Utilisation at which a slot's capacity is set: the device-utilisation threshold of the
#: feasibility rule of models.md §A (ρ ≤ 0.8).
CAPACITY_UTILIZATION: Final = 0.8


class CatalogError(ValueError):
    """A catalog that cannot be used (the message names the node or slot)."""


def capacity_rps(service_ms: float, devices: int = 1, utilization: float = CAPACITY_UTILIZATION) -> float:
    """Requests per second a variant can take on a node: ``devices · ρ_max / S`` (S in s)."""
    if not (math.isfinite(service_ms) and service_ms > 0):
        raise CatalogError(f"service_ms must be a finite number > 0, got {service_ms}")
    return devices * utilization * MS_PER_S / service_ms


def inference_ms_at_capacity(
    service_ms: float, second_moment_ms2: float | None = None, utilization: float = CAPACITY_UTILIZATION
) -> float:
    r"""Mean latency of one device at utilisation ``ρ``: :math:`S + \lambda E[S^2] / (2(1-\rho))`.

    With ``λ = ρ/S`` (Pollaczek–Khinchine, :func:`~qosched.policies.latency.queueing.mg1_wait_ms`);
    deterministic service (``second_moment_ms2=None``) gives M/D/1, ``S(1 + ρ/(2(1−ρ)))`` = 3S
    at ρ = 0.8.
    """
    m2 = service_ms * service_ms if second_moment_ms2 is None else second_moment_ms2
    rate = utilization * MS_PER_S / service_ms
    return float(service_ms + mg1_wait_ms(rate, service_ms, m2))


@dataclass(frozen=True, slots=True)
class NodeBudget:
    """A node of the network: its name, tier and the memory the allocator may fill [MiB]."""

    name: str
    tier: str
    budget_mib: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget_mib) and self.budget_mib >= 0):
            raise CatalogError(f"node {self.name}: budget_mib must be a finite number >= 0")


@dataclass(frozen=True, slots=True)
class Slot:
    """One (node, variant) the allocator may load.

    ``inference_ms`` is the delay on the node (see the module docstring) and ``capacity_rps``
    the rate the loaded variant can take; ``memory_mib`` is :math:`s_v^m`.
    """

    node: str
    model: str
    memory_mib: float
    accuracy: float
    inference_ms: float
    capacity_rps: float

    def __post_init__(self) -> None:
        for name in ("memory_mib", "inference_ms", "capacity_rps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise CatalogError(f"slot {self.node}/{self.model}: {name} must be a finite number > 0")
        if not 0.0 <= self.accuracy <= 1.0:
            raise CatalogError(f"slot {self.node}/{self.model}: accuracy must be within 0..1")


@dataclass(frozen=True, slots=True)
class RequestType:
    """A request type ρ of the paper: a service and the path from its entry node to the repository.

    ``path`` lists node names from the entry point towards the cloud; ``repository`` is the node
    holding the service's fixed model (the last hop); ``variants`` the allowed variants with
    their accuracy (the most accurate is the repository's model).
    """

    service: str
    path: tuple[str, ...]
    repository: str
    repository_model: str
    repository_inference_ms: float
    variants: Mapping[str, float]

    @property
    def entry(self) -> str:
        return self.path[0]

    @property
    def best_accuracy(self) -> float:
        return max(self.variants.values())


#: ``transfer_ms(service, node)`` → time to carry one request of the service to the node [ms].
TransferFn = Callable[[str, str], float]


@dataclass(frozen=True, slots=True)
class CostModel:
    """γ(v, m) of the module docstring: transfer + inference + ``w``·100·(accuracy gap)."""

    transfer_ms: TransferFn
    accuracy_weight_ms_per_pp: float = 10.0

    def slot_cost_ms(self, rtype: RequestType, slot: Slot) -> float:
        gap_pp = 100.0 * (rtype.best_accuracy - slot.accuracy)
        return (
            self.transfer_ms(rtype.service, slot.node)
            + slot.inference_ms
            + self.accuracy_weight_ms_per_pp * gap_pp
        )

    def repository_cost_ms(self, rtype: RequestType) -> float:
        gap_pp = 100.0 * (rtype.best_accuracy - rtype.variants[rtype.repository_model])
        return (
            self.transfer_ms(rtype.service, rtype.repository)
            + rtype.repository_inference_ms
            + self.accuracy_weight_ms_per_pp * gap_pp
        )


@dataclass(frozen=True)
class Catalog:
    """The nodes and the slots, flattened to arrays indexed by slot (``i``) and node (``v``).

    Slots whose size exceeds their node's budget can never be loaded: :meth:`build` leaves them
    out (listed in ``unfit``), so every slot of a catalog fits its node alone.
    """

    nodes: tuple[NodeBudget, ...]
    slots: tuple[Slot, ...]
    unfit: tuple[Slot, ...] = ()
    sizes_mib: np.ndarray = field(init=False, repr=False)
    node_of: np.ndarray = field(init=False, repr=False)
    budgets_mib: np.ndarray = field(init=False, repr=False)
    capacity_rps: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index = {n.name: v for v, n in enumerate(self.nodes)}
        if len(index) != len(self.nodes):
            raise CatalogError("node names must be unique")
        seen: set[tuple[str, str]] = set()
        for s in self.slots:
            if s.node not in index:
                raise CatalogError(f"slot {s.node}/{s.model}: unknown node {s.node!r}")
            if (s.node, s.model) in seen:
                raise CatalogError(f"slot {s.node}/{s.model} appears twice")
            seen.add((s.node, s.model))
        object.__setattr__(self, "sizes_mib", np.array([s.memory_mib for s in self.slots], dtype=float))
        object.__setattr__(self, "node_of", np.array([index[s.node] for s in self.slots], dtype=np.int64))
        object.__setattr__(self, "budgets_mib", np.array([n.budget_mib for n in self.nodes], dtype=float))
        object.__setattr__(self, "capacity_rps", np.array([s.capacity_rps for s in self.slots], dtype=float))
        too_big = self.sizes_mib > self.budgets_mib[self.node_of] if self.slots else np.zeros(0, bool)
        if too_big.any():
            bad = self.slots[int(np.argmax(too_big))]
            raise CatalogError(f"slot {bad.node}/{bad.model} is larger than its node's budget")

    @classmethod
    def build(cls, nodes: Sequence[NodeBudget], slots: Iterable[Slot]) -> Catalog:
        """A catalog of the slots that fit their node's budget (the rest go to ``unfit``)."""
        budget = {n.name: n.budget_mib for n in nodes}
        fit: list[Slot] = []
        unfit: list[Slot] = []
        for s in slots:
            (fit if s.memory_mib <= budget.get(s.node, math.inf) else unfit).append(s)
        return cls(tuple(nodes), tuple(fit), tuple(unfit))

    @property
    def n_slots(self) -> int:
        return len(self.slots)

    def slots_of(self, v: int) -> np.ndarray:
        """Indices of node ``v``'s slots."""
        return np.flatnonzero(self.node_of == v)

    def index(self) -> dict[tuple[str, str], int]:
        """``(node, model)`` → slot index."""
        return {(s.node, s.model): i for i, s in enumerate(self.slots)}

    def memory_used_mib(self, y: np.ndarray) -> np.ndarray:
        """Per node: :math:`\\sum_m s_v^m y_v^m` [MiB]."""
        return np.bincount(self.node_of, weights=self.sizes_mib * y, minlength=len(self.nodes))
