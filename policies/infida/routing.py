r"""INFIDA and its baselines as request-level policies of the what-if (``docs/request-whatif.md``).

The request-level what-if (:mod:`qosched.policies.requests`) has tiers of nodes (end, edge,
cloud), each reached over the client's link, and services with allowed variants. Here that
scenario becomes an inference delivery network (:mod:`.catalog`):

- **Slots**: every (end/edge node, service, allowed variant) with a profile on the node's
  accelerator. A slot's model is the service's own copy of the variant (``service/variant``):
  two services using ResNet-50 hold two different fine-tuned models.
- **Budgets**: ``devices × device memory × 0.8`` of each end/edge node (the memory threshold of
  the feasibility rule, models.md §A).
- **Capacity** of a slot: the node's throughput for the variant at ρ = 0.8
  (:func:`~.catalog.capacity_rps`, edge-TPU swap included) times the slot's share of the
  node's memory budget, ``s/b`` (compute follows memory, so the slots a full node holds never
  promise more than the device serves).
- **Repository**: the cloud tier serving the service's most accurate allowed variant (not learned,
  not budgeted; the live controller never scales it below one replica).
- Slots no cheaper than the repository under the nodes' own links are left out (they would
  never serve, yet take budget and churn the rounding).
- **Path**: every request of a service reaches every end node, then every edge node, then the
  cloud, over its tier's current link (the what-if's clients reach all nodes of a tier), so there
  is one request type per service.

Per request, the policy serves with the cheapest loaded slot on the path whose capacity in the
current second is not used up (:math:`\gamma` of :mod:`.catalog`), else with the repository; it
pins the slot's node in the :class:`~qosched.policies.requests.scenario.Action`, and the engine
simulates the real queueing there. Every ``window_s`` seconds the allocator gets the window's
request counts and returns the next allocation (INFIDA: mirror ascent + DepRound; greedy: by
observed value per MiB; static: greedy on the first window, then frozen).

``extra()`` returns the contract's ``allocation`` object (``gain``: total modelled cost saved
against the repository [ms], ``mean_response_ms`` and ``served_by_tier`` from the simulated
completions, ``reallocations``: model loads, the first window's included) and the per-window
series the report plots.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qosched.policies.infida.allocators import (
    Allocator,
    GreedyAllocator,
    InfidaAllocator,
    StaticAllocator,
)
from qosched.policies.infida.catalog import (
    Catalog,
    CostModel,
    NodeBudget,
    RequestType,
    Slot,
    capacity_rps,
    inference_ms_at_capacity,
)
from qosched.policies.infida.gain import RequestTable, build_table, window_capacity
from qosched.policies.infida.oma import AdaptiveStep, gradient_bound_per_mib, step_size
from qosched.policies.requests.routing import Outcome, RequestContext
from qosched.policies.requests.scenario import Action, Link, Scenario, TierNode

__all__ = [
    "DEFAULT_ACCURACY_WEIGHT_MS_PER_PP",
    "DEFAULT_WINDOW_S",
    "AllocationModel",
    "AllocationRouting",
    "allocation_model",
    "make_allocation_policy",
]

#: One point of top-1 accuracy is worth this many milliseconds of response in γ (docs/infida.md).
DEFAULT_ACCURACY_WEIGHT_MS_PER_PP = 2.0
#: Allocation window when ``--window-s`` is not given [s].
DEFAULT_WINDOW_S = 10.0
#: Memory of a node the allocation may fill (models.md §A: memory use ≤ 0.8 of the device).
MEMORY_FRACTION = 0.8

DeviceMemory = Callable[[str], float]


@dataclass(frozen=True)
class AllocationModel:
    """The scenario as an inference delivery network (module docstring)."""

    scenario: Scenario
    catalog: Catalog
    types: tuple[RequestType, ...]
    node_tier: Mapping[str, str]
    slot_key: tuple[tuple[str, str], ...]  # (service, variant) of each slot
    repository: Mapping[str, Action]
    accuracy_weight_ms_per_pp: float

    def base_links(self) -> dict[str, Link]:
        """The tier links of the nodes' annotations (first node of each tier)."""
        return {t: self.scenario.nodes_of(t)[0].link for t in self.scenario.tiers}

    def cost_model(self, links: Mapping[str, Link]) -> CostModel:
        services = self.scenario.services

        def transfer(service: str, node: str) -> float:
            return links[self.node_tier[node]].transfer_ms(services[service].input_kb)

        return CostModel(transfer, self.accuracy_weight_ms_per_pp)

    def table(self, links: Mapping[str, Link]) -> RequestTable:
        """The request table with the costs under the given tier links."""
        return build_table(self.catalog, self.types, self.cost_model(links))

    def gap_ms(self) -> np.ndarray:
        """Per slot, its largest cost gap to the repository under the nodes' own links (≥ 0)."""
        t = self.table(self.base_links())
        gap = np.zeros(self.catalog.n_slots)
        valid = t.valid
        np.maximum.at(gap, t.slot[valid], (t.repo_cost_ms[:, None] - np.where(valid, t.cost_ms, 0.0))[valid])
        return gap

    def slot_groups(self) -> np.ndarray:
        """Per slot, the index of the service (request type) whose model it holds: the substitutes
        the network rounding coordinates."""
        row = {t.service: r for r, t in enumerate(self.types)}
        return np.array([row[k[0]] for k in self.slot_key], dtype=np.int64)

    def requests_per_slot(self, per_service: Mapping[str, float] | float) -> np.ndarray:
        """``R_i``: the bound of requests per window of the service slot ``i`` serves."""
        if isinstance(per_service, int | float):
            return np.full(self.catalog.n_slots, float(per_service))
        return np.array([float(per_service.get(k[0], 0.0)) for k in self.slot_key])


def _service_time_ms(scenario: Scenario, node: TierNode, variant: str) -> tuple[float, float] | None:
    p = scenario.catalog.params(node.accelerator, variant)
    if p is None:
        return None
    swap = p.swap_ms if node.mode == "edgetpu" else 0.0
    mean = p.service_ms + swap
    return mean, max(p.second_moment_ms2, p.service_ms**2) + 2 * p.service_ms * swap + swap * swap


def _node_slots(scenario: Scenario, node: TierNode, budget_mib: float) -> list[tuple[Slot, tuple[str, str]]]:
    out = []
    for service in scenario.services:
        for variant in scenario.allowed_variants(service):
            p = scenario.catalog.params(node.accelerator, variant)
            times = _service_time_ms(scenario, node, variant)
            acc = scenario.catalog.accuracy(variant)
            if p is None or times is None or acc is None or p.memory_mib <= 0:
                continue
            share = min(1.0, p.memory_mib / budget_mib)
            slot = Slot(
                node=node.name,
                model=f"{service}/{variant}",
                memory_mib=p.memory_mib,
                accuracy=acc,
                inference_ms=inference_ms_at_capacity(times[0], times[1]),
                capacity_rps=capacity_rps(times[0], node.devices) * share,
            )
            out.append((slot, (service, variant)))
    return out


def _repository(scenario: Scenario, service: str) -> tuple[TierNode, Action, float]:
    tier = "cloud" if "cloud" in scenario.tiers else scenario.tiers[-1]
    action = scenario.most_accurate(service, tier)
    if action is None:
        raise ValueError(f"service {service}: no variant can be served on the {tier} tier (the repository)")
    node = next(n for n in scenario.nodes_of(tier) if scenario.catalog.params(n.accelerator, action.variant))
    times = _service_time_ms(scenario, node, action.variant)
    assert times is not None
    return node, action, inference_ms_at_capacity(times[0], times[1])


def allocation_model(
    scenario: Scenario,
    device_memory_mib: DeviceMemory,
    *,
    accuracy_weight_ms_per_pp: float = DEFAULT_ACCURACY_WEIGHT_MS_PER_PP,
) -> AllocationModel:
    """Build the network of the module docstring from a request-level scenario."""
    repo_tier = "cloud" if "cloud" in scenario.tiers else scenario.tiers[-1]
    nodes = [n for t in scenario.tiers if t != repo_tier for n in scenario.nodes_of(t)]
    budgets, pairs = [], []
    for n in nodes:
        memory = device_memory_mib(n.accelerator)
        if not (math.isfinite(memory) and memory > 0):
            continue
        budget = n.devices * memory * MEMORY_FRACTION
        budgets.append(NodeBudget(n.name, n.tier, budget))
        pairs.extend(_node_slots(scenario, n, budget))
    catalog = Catalog.build(budgets, [s for s, _ in pairs])
    key_of = {(s.node, s.model): k for s, k in pairs}
    types, repository = [], {}
    path = tuple(b.name for b in budgets)
    for service in scenario.services:
        repo_node, action, repo_ms = _repository(scenario, service)
        repository[service] = action
        variants = {
            f"{service}/{v}": acc
            for v in scenario.allowed_variants(service)
            if (acc := scenario.catalog.accuracy(v)) is not None
        }
        variants.setdefault(f"{service}/{action.variant}", scenario.catalog.accuracy(action.variant) or 0.0)
        types.append(
            RequestType(
                service,
                (*path, repo_node.name),
                repo_node.name,
                f"{service}/{action.variant}",
                repo_ms,
                variants,
            )
        )
    model = AllocationModel(
        scenario=scenario,
        catalog=catalog,
        types=tuple(types),
        node_tier={n.name: n.tier for n in scenario.nodes},
        slot_key=tuple(key_of[(s.node, s.model)] for s in catalog.slots),
        repository=repository,
        accuracy_weight_ms_per_pp=accuracy_weight_ms_per_pp,
    )
    return _useful_only(model)


def _useful_only(model: AllocationModel) -> AllocationModel:
    """Drop the slots no cheaper than the repository under the nodes' own links.

    They would never serve (the gain of such a slot is 0 for every request), yet hold a share of
    the fractional budget and be loaded now and then by the rounding: a model load for nothing.
    """
    table = model.table(model.base_links())
    useful = np.zeros(model.catalog.n_slots, dtype=bool)
    useful[table.slot[table.valid]] = True
    keep = [i for i in range(model.catalog.n_slots) if useful[i]]
    catalog = Catalog.build(model.catalog.nodes, [model.catalog.slots[i] for i in keep])
    return dataclasses.replace(model, catalog=catalog, slot_key=tuple(model.slot_key[i] for i in keep))


@dataclass
class _Window:
    """What one window leaves for the report and the regret analysis."""

    start_s: float
    table: RequestTable
    counts: np.ndarray
    fractional: np.ndarray
    integral: np.ndarray
    gain_ms: float = 0.0


@dataclass
class AllocationRouting:
    """A :class:`~qosched.policies.requests.routing.RoutingPolicy` driven by an :class:`Allocator`."""

    model: AllocationModel
    allocator: Allocator
    window_s: float
    name: str
    eta: float | None = None
    windows: list[_Window] = field(default_factory=list)
    loads: int = 0
    _links: dict[str, Link] = field(default_factory=dict)
    _row: dict[str, int] = field(default_factory=dict)
    _second: int = -1
    _used: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _responses: list[float] = field(default_factory=list)
    _by_tier: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._links = self.model.base_links()
        self._row = {t.service: r for r, t in enumerate(self.model.types)}
        self._used = np.zeros(self.model.catalog.n_slots)

    # -- windows ----------------------------------------------------------------------------------

    def _open(self, start_s: float, fractional: np.ndarray, integral: np.ndarray) -> None:
        previous = self.windows[-1].integral if self.windows else np.zeros_like(integral)
        self.loads += int(np.count_nonzero(integral & ~previous))
        table = self.model.table(self._links)
        self.windows.append(_Window(start_s, table, np.zeros(len(self.model.types)), fractional, integral))

    def _close(self) -> None:
        w = self.windows[-1]
        cap = window_capacity(w.table, self.model.catalog, w.counts, self.window_s)
        decision = self.allocator.observe(w.table, w.counts, cap)
        self._open(w.start_s + self.window_s, decision.fractional, decision.integral)

    def _advance(self, time_s: float) -> None:
        if not self.windows:
            d = self.allocator.first()
            self._open(time_s, d.fractional, d.integral)
        while time_s >= self.windows[-1].start_s + self.window_s:
            self._close()

    # -- one request ------------------------------------------------------------------------------

    def _seen_links(self, ctx: RequestContext) -> None:
        for view in ctx.options:
            self._links[view.action.tier] = Link(view.rtt_ms, view.bandwidth_mbps)

    def _pick(self, r: int, time_s: float) -> tuple[int, int]:
        second = math.floor(time_s)
        if second != self._second:
            self._second = second
            self._used[:] = 0.0
        w = self.windows[-1]
        for k, i in enumerate(w.table.slot[r]):
            if i < 0:
                break
            if w.integral[i] and self._used[i] < self.model.catalog.capacity_rps[i]:
                return int(i), k
        return -1, -1

    def choose(self, ctx: RequestContext) -> Action | None:
        self._seen_links(ctx)
        self._advance(ctx.time_s)
        r = self._row[ctx.service.name]
        w = self.windows[-1]
        w.counts[r] += 1.0
        i, k = self._pick(r, ctx.time_s)
        if i < 0:
            return self.model.repository[ctx.service.name]
        self._used[i] += 1.0
        w.gain_ms += float(w.table.repo_cost_ms[r] - w.table.cost_ms[r, k])
        slot = self.model.catalog.slots[i]
        return Action(self.model.node_tier[slot.node], self.model.slot_key[i][1], slot.node)

    def observe(self, outcome: Outcome) -> None:
        self._responses.append(outcome.response_ms)
        self._by_tier[outcome.action.tier] = self._by_tier.get(outcome.action.tier, 0) + 1

    # -- results ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        return {
            "allocation_gain_ms": float(sum(w.gain_ms for w in self.windows)),
            "allocation_loads": float(self.loads),
            "allocation_windows": float(len(self.windows)),
        }

    def extra(self) -> dict[str, Any]:
        """``{"allocation": {...}, "allocation_series": {...}}`` (module docstring)."""
        allocation = {
            "gain": float(sum(w.gain_ms for w in self.windows)),
            "mean_response_ms": float(np.mean(self._responses)) if self._responses else None,
            "served_by_tier": {t: self._by_tier.get(t, 0) for t in self.model.scenario.tiers},
            "reallocations": self.loads,
            "window_s": self.window_s,
            "windows": len(self.windows),
            "slots": self.model.catalog.n_slots,
            "accuracy_weight_ms_per_pp": self.model.accuracy_weight_ms_per_pp,
        }
        if self.eta is not None:
            allocation["eta"] = self.eta
        return {"allocation": allocation, "allocation_series": self.series()}

    def series(self) -> dict[str, Any]:
        """Per window: start, gain, and per service the loaded copies (Σ x) and Σ y over nodes."""
        services = [t.service for t in self.model.types]
        col = {s: j for j, s in enumerate(services)}
        owner = np.array([col[k[0]] for k in self.model.slot_key], dtype=np.int64)

        def per_service(values: np.ndarray) -> list[float]:
            return np.bincount(owner, weights=values.astype(float), minlength=len(services)).round(4).tolist()

        return {
            "services": services,
            "start_s": [w.start_s for w in self.windows],
            "gain_ms": [round(w.gain_ms, 3) for w in self.windows],
            "requests": [w.counts.astype(int).tolist() for w in self.windows],
            "loaded": [per_service(w.integral) for w in self.windows],
            "fractional": [per_service(w.fractional) for w in self.windows],
        }


def _device_memory(options: Mapping[str, Any]) -> DeviceMemory:
    fn = options.get("device_memory_mib")
    if not callable(fn):
        raise ValueError("allocation policies need options['device_memory_mib'] (accelerator -> MiB)")
    return fn


def make_allocation_policy(
    name: str,
    scenario: Scenario,
    rng: np.random.Generator,
    *,
    window_s: float | None,
    options: Mapping[str, Any],
    horizon_s: float | None = None,
) -> AllocationRouting:
    """``infida``, ``greedy-allocation`` or ``static-allocation`` on a scenario.

    INFIDA's step (``options["step"]``): ``"adaptive"`` (default) the horizon-free AdaGrad-norm
    step in DS-OMD form (:class:`~.oma.AdaptiveStep`), or ``"theorem"`` the constant
    :func:`~.oma.step_size` η* for ``T = horizon / window`` windows. Both use the gradient bound
    of :func:`~.oma.gradient_bound_per_mib` with ``R`` the most requests of a service in one
    window: ``options["max_requests_per_window"]``, a number or a mapping service → number (the
    shell passes each service's busiest window of the trace; a live controller states it).
    The rounding (``options["rounding"]``): ``"network"`` (default) the bipartite dependent
    rounding over nodes × services (:func:`~.rounding.dep_round_network`), or ``"node"`` the
    paper's per-node DepRound, with the nodes of a tier coupled antithetically
    (``options["antithetic"]=False`` for independent nodes). The windows share their random
    numbers (``options["coupled"]=False`` for a fresh draw each window;
    :class:`~.allocators.InfidaAllocator`).
    """
    window = float(window_s or DEFAULT_WINDOW_S)
    weight = float(options.get("accuracy_weight_ms_per_pp", DEFAULT_ACCURACY_WEIGHT_MS_PER_PP))
    model = allocation_model(scenario, _device_memory(options), accuracy_weight_ms_per_pp=weight)
    if name == "greedy-allocation":
        return AllocationRouting(model, GreedyAllocator(model.catalog), window, name)
    if name == "static-allocation":
        return AllocationRouting(model, StaticAllocator(model.catalog), window, name)
    if name != "infida":
        raise KeyError(name)
    horizon = float(options.get("horizon_s", horizon_s or 3600.0))
    windows = max(1, math.ceil(horizon / window))
    max_requests = model.requests_per_slot(options.get("max_requests_per_window", math.inf))
    bound = gradient_bound_per_mib(model.catalog, model.gap_ms(), max_requests, window)
    step, rounding = options.get("step", "adaptive"), options.get("rounding", "network")
    if step not in ("adaptive", "theorem") or rounding not in ("network", "node"):
        raise ValueError(
            f"infida: step must be adaptive|theorem and rounding network|node, got {step}/{rounding}"
        )
    allocator = infida_allocator(
        model,
        rng,
        bound=bound,
        windows=windows,
        step=step,
        rounding=rounding,
        eta_scale=float(options.get("eta_scale", 1.0)),
        antithetic=bool(options.get("antithetic", True)),
        coupled=bool(options.get("coupled", True)),
    )
    return AllocationRouting(model, allocator, window, name, eta=allocator.eta)


def infida_allocator(
    model: AllocationModel,
    rng: np.random.Generator,
    *,
    bound: float,
    windows: int,
    step: str = "adaptive",
    rounding: str = "network",
    eta_scale: float = 1.0,
    antithetic: bool = True,
    coupled: bool = True,
    round_seed: int | None = None,
) -> InfidaAllocator:
    """INFIDA's allocator as both the what-if and the live controller run it (one source of truth).

    ``step="adaptive"``: the horizon-free AdaGrad-norm step in dual-stabilised form
    (:class:`~.oma.AdaptiveStep`); ``"theorem"``: the constant η* of the regret bound for
    ``windows`` windows, times ``eta_scale``. ``rounding="network"``: dependent rounding over
    nodes × services (:func:`~.rounding.dep_round_network`); ``"node"``: the paper's per-node
    rounding. ``bound`` is the gradient bound per MiB (:func:`~.oma.gradient_bound_per_mib`).
    """
    eta = step_size(model.catalog, bound, windows).eta * eta_scale
    return InfidaAllocator(
        model.catalog,
        eta,
        rng,
        antithetic=antithetic,
        coupled=coupled,
        adaptive=AdaptiveStep.for_catalog(model.catalog, bound) if step == "adaptive" else None,
        groups=model.slot_groups() if rounding == "network" else None,
        round_seed=round_seed,
    )
