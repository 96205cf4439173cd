"""The end–edge–cloud scenario of the request-level what-if: tiers, nodes, links and services.

A request of a service is sent by a client to one tier (``end``: the device next to the client,
``edge``: a nearby GPU site, ``cloud``: a remote GPU pool), travels over the client's link to
that tier, waits for a replica of the chosen model variant on one of the tier's accelerators,
and is served there. This module holds the pure shapes of that situation; the shell
(``qosched.extender.cli.whatif_requests``) builds them from a snapshot (node label
``qosched.io/tier``, node annotations ``qosched.io/rtt-ms`` / ``qosched.io/bandwidth-mbps``, pod
annotations ``qosched.io/service`` / ``qosched.io/variants`` / ``qosched.io/min-accuracy`` /
``qosched.io/slo-ms`` / ``qosched.io/input-kb``; contract §4).

Transfer time (one source of truth: :func:`transfer_ms`)::

    transfer_ms = rtt_ms + input_kb * 8 / bandwidth_mbps

(1 kB = 8 kbit and 1 Mbit/s = 1 kbit/ms, so ``kbit / Mbps`` is milliseconds). The reply is
assumed small (a label or a few boxes), its serialisation time is folded into the RTT.

Accuracy of a variant (:meth:`VariantCatalog.accuracy`): the ``accuracy`` of its profile on
that accelerator; when that profile states none, the accuracy its profiles on other
accelerators state (accuracy is a property of the weights; a quantised edge-TPU build loses
typically < 1 point, which this ignores and the docs say so); unknown everywhere → ``None``,
and such a variant is only allowed for a service without ``qosched.io/min-accuracy``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qosched.policies.state import ServiceLookup, ServiceParams
from qosched.policies.types import TIERS

__all__ = [
    "DEFAULT_INPUT_KB",
    "Action",
    "Link",
    "Scenario",
    "ScenarioError",
    "ServiceDef",
    "TierNode",
    "VariantCatalog",
    "transfer_ms",
]

#: Request payload when neither the REQUESTS row nor ``qosched.io/input-kb`` says [kB]
#: (a 224x224 JPEG image is 20-150 kB; 100 kB is a conservative middle).
DEFAULT_INPUT_KB = 100.0


class ScenarioError(ValueError):
    """The scenario is inconsistent (the message names the node or service)."""


def transfer_ms(rtt_ms: float, input_kb: float, bandwidth_mbps: float) -> float:
    """Network time of one request: ``rtt_ms + input_kb * 8 / bandwidth_mbps`` [ms].

    >>> transfer_ms(10.0, 100.0, 100.0)  # 10 ms RTT + 800 kbit at 100 kbit/ms
    18.0
    """
    if bandwidth_mbps <= 0:
        return math.inf
    return rtt_ms + input_kb * 8.0 / bandwidth_mbps


@dataclass(frozen=True, slots=True)
class Link:
    """The client's link to a node or tier: round trip [ms] and uplink bandwidth [Mbit/s]."""

    rtt_ms: float
    bandwidth_mbps: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rtt_ms) and self.rtt_ms >= 0):
            raise ScenarioError(f"rtt_ms must be a finite number >= 0, got {self.rtt_ms!r}")
        if not (math.isfinite(self.bandwidth_mbps) and self.bandwidth_mbps > 0):
            raise ScenarioError(f"bandwidth_mbps must be a finite number > 0, got {self.bandwidth_mbps!r}")

    def transfer_ms(self, input_kb: float) -> float:
        """:func:`transfer_ms` over this link."""
        return transfer_ms(self.rtt_ms, input_kb, self.bandwidth_mbps)


@dataclass(frozen=True, slots=True)
class TierNode:
    """A node of one tier: its accelerators and the client's link to it.

    ``mode`` is the request simulator's queue (``qosched.policies.simulator.requests.mode_for``
    of its accelerator and sharing label): ``edgetpu`` swaps models, ``cpu`` is the CPU node's
    discipline (:class:`~qosched.policies.latency.cpu_node.CpuNode`: one FCFS server per model,
    the busy ones sharing ``cores`` whole cores; see ``engine``), the GPU modes are one FCFS queue
    per device. ``cores`` matters to ``cpu`` only (``cpu_cores`` of the node's CPU).
    """

    name: str
    tier: str
    accelerator: str
    devices: int
    link: Link
    mode: str = "time-slicing"
    cores: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise ScenarioError(f"node {self.name}: cores must be an integer >= 1, got {self.cores!r}")
        if self.tier not in TIERS:
            raise ScenarioError(f"node {self.name}: tier {self.tier!r} is not one of {', '.join(TIERS)}")
        if self.devices < 1:
            raise ScenarioError(f"node {self.name}: needs at least one device, got {self.devices}")


@dataclass(frozen=True, slots=True)
class ServiceDef:
    """An inference service whose requests are routed: its variants, floor, SLO and payload."""

    name: str
    variants: tuple[str, ...]
    slo_ms: float
    min_accuracy: float | None = None
    input_kb: float = DEFAULT_INPUT_KB

    def __post_init__(self) -> None:
        if not self.variants:
            raise ScenarioError(f"service {self.name}: no model variant (qosched.io/variants)")
        if not (math.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise ScenarioError(f"service {self.name}: slo_ms must be > 0 (qosched.io/slo-ms)")
        if not (math.isfinite(self.input_kb) and self.input_kb >= 0):
            raise ScenarioError(f"service {self.name}: input_kb must be >= 0 (qosched.io/input-kb)")


@dataclass(frozen=True, slots=True, order=True)
class Action:
    """Where and with what to serve a request: a tier and a model variant.

    ``node`` optionally pins one node of the tier (allocation policies); None lets the engine
    dispatch to the node/device of the tier whose queue frees first (join the shortest queue).
    """

    tier: str
    variant: str
    node: str | None = None

    @property
    def key(self) -> str:
        """``tier/variant`` (the learner's and the report's name of the action)."""
        return f"{self.tier}/{self.variant}"


@dataclass(frozen=True)
class VariantCatalog:
    """Which (tier, variant) actions exist and what the profiles say about them.

    Built from a profile ``lookup(accelerator, model) -> ServiceParams | None`` (the same lookup
    ``ClusterState`` takes, so the latency models and this simulator read one set of numbers).
    """

    lookup: ServiceLookup
    accelerators: tuple[str, ...]
    _accuracy: dict[str, float | None] = field(default_factory=dict, repr=False)

    def params(self, accelerator: str, variant: str) -> ServiceParams | None:
        return self.lookup(accelerator, variant)

    def accuracy(self, variant: str, accelerator: str | None = None) -> float | None:
        """Top-1 accuracy of a variant (see the module docstring for the fallback)."""
        if accelerator is not None:
            p = self.lookup(accelerator, variant)
            if p is not None and p.accuracy is not None:
                return p.accuracy
        if variant not in self._accuracy:
            known = [
                p.accuracy
                for a in self.accelerators
                if (p := self.lookup(a, variant)) is not None and p.accuracy is not None
            ]
            self._accuracy[variant] = max(known) if known else None
        return self._accuracy[variant]


@dataclass(frozen=True)
class Scenario:
    """Nodes (with tiers and links) and services, validated against the profiles."""

    nodes: tuple[TierNode, ...]
    services: Mapping[str, ServiceDef]
    catalog: VariantCatalog

    @classmethod
    def build(
        cls, nodes: Sequence[TierNode], services: Iterable[ServiceDef], lookup: ServiceLookup
    ) -> Scenario:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ScenarioError("node names must be unique")
        if not nodes:
            raise ScenarioError("the scenario has no node with a qosched.io/tier label")
        by_name: dict[str, ServiceDef] = {}
        for s in services:
            if s.name in by_name and by_name[s.name] != s:
                raise ScenarioError(f"service {s.name}: defined twice with different annotations")
            by_name[s.name] = s
        catalog = VariantCatalog(lookup, tuple(sorted({n.accelerator for n in nodes})))
        scenario = cls(tuple(nodes), by_name, catalog)
        for s in by_name.values():
            if not scenario.actions(s.name):
                raise ScenarioError(
                    f"service {s.name}: no tier has a profile for any variant meeting its accuracy floor"
                )
        return scenario

    @property
    def tiers(self) -> tuple[str, ...]:
        """Tiers present, in the order end, edge, cloud."""
        present = {n.tier for n in self.nodes}
        return tuple(t for t in TIERS if t in present)

    def nodes_of(self, tier: str) -> tuple[TierNode, ...]:
        return tuple(n for n in self.nodes if n.tier == tier)

    def allowed_variants(self, service: str) -> tuple[str, ...]:
        """Variants meeting ``min_accuracy`` (unknown accuracy passes only without a floor)."""
        s = self.services[service]
        if s.min_accuracy is None:
            return s.variants
        out = []
        for v in s.variants:
            acc = self.catalog.accuracy(v)
            if acc is not None and acc >= s.min_accuracy:
                out.append(v)
        return tuple(out)

    def actions(self, service: str) -> tuple[Action, ...]:
        """(tier, variant) pairs: allowed variant, and a node of the tier with its profile."""
        out = []
        for tier in self.tiers:
            accels = {n.accelerator for n in self.nodes_of(tier)}
            for v in self.allowed_variants(service):
                if any(self.catalog.params(a, v) is not None for a in accels):
                    out.append(Action(tier, v))
        return tuple(out)

    def best_accuracy(self, service: str) -> float | None:
        """Accuracy of the most accurate allowed variant (the reference of ``accuracy_loss``)."""
        accs = [a for v in self.allowed_variants(service) if (a := self.catalog.accuracy(v)) is not None]
        return max(accs) if accs else None

    def most_accurate(self, service: str, tier: str) -> Action | None:
        """The most accurate allowed variant servable on ``tier`` (``always-<tier>``)."""
        cands = [a for a in self.actions(service) if a.tier == tier]
        if not cands:
            return None
        return max(cands, key=lambda a: (self.catalog.accuracy(a.variant) or -1.0, -cands.index(a)))
