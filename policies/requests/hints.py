"""Placement hints: what an online policy recommends for new pods of each service (pure, shared).

The controller process writes them (versioned JSON in a ConfigMap, key :data:`CONFIGMAP_KEY`);
the extender reads them and, for a pod of a hinted service, adds a bonus to the prioritize score
of nodes of the hinted tier and, at bind, writes the hinted variant into ``qosched.io/variant``
when the pod offers it. Both the online learner (issue 13) and INFIDA's allocation (issue 14,
``node`` weights) produce this one type, so the extender has one reader.

Document (``kind: qosched.placement-hints``, ``version: 1``)::

    {"kind": "qosched.placement-hints", "version": 1, "source": "online", "time_s": 1733590000.0,
     "services": {"classify": {"tier": "edge", "variant": "resnet50",
                               "weights": {"edge/resnet50": 0.95, "end/resnet50": 0.05},
                               "nodes": {}}}}

``weights`` are the shares of the service's requests the policy sends to each ``tier/variant``
(they sum to 1); ``nodes`` optionally weights nodes (allocation policies). Hints older than
``max_age_s`` are ignored by the reader (a dead controller must not steer placement for ever).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONFIGMAP_KEY",
    "HINTS_KIND",
    "HINTS_VERSION",
    "NODE_BONUS",
    "TIER_BONUS",
    "HintsError",
    "PlacementHints",
    "ServiceHint",
    "hinted_variant",
    "node_bonus",
    "tier_bonus",
]

HINTS_KIND = "qosched.placement-hints"
HINTS_VERSION = 1
CONFIGMAP_KEY = "hints.json"
#: Prioritize points (of 0..10) added to nodes of the hinted tier, scaled by the tier's weight.
TIER_BONUS = 3
#: Prioritize points added to a node the hint's ``nodes`` name (INFIDA loaded a variant of the
#: service there: a new replica lands next to its allocated model).
NODE_BONUS = 2


class HintsError(ValueError):
    """A hints document that cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class ServiceHint:
    """The recommendation for one service."""

    tier: str
    variant: str
    weights: Mapping[str, float] = field(default_factory=dict)
    nodes: Mapping[str, float] = field(default_factory=dict)

    def tier_weight(self, tier: str) -> float:
        """Share of the service's requests sent to ``tier`` (1 for the hinted tier without weights)."""
        if not self.weights:
            return 1.0 if tier == self.tier else 0.0
        return sum(w for key, w in self.weights.items() if key.split("/", 1)[0] == tier)


@dataclass(frozen=True, slots=True)
class PlacementHints:
    """Hints per service, with the time they were computed [s since the epoch] and their source."""

    services: Mapping[str, ServiceHint]
    time_s: float
    source: str = "online"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": HINTS_KIND,
            "version": HINTS_VERSION,
            "source": self.source,
            "time_s": self.time_s,
            "services": {
                name: {
                    "tier": h.tier,
                    "variant": h.variant,
                    "weights": dict(h.weights),
                    "nodes": dict(h.nodes),
                }
                for name, h in sorted(self.services.items())
            },
        }

    @classmethod
    def from_json(cls, doc: Any) -> PlacementHints:
        """Parse a document; raises :class:`HintsError` naming the problem."""
        if not isinstance(doc, Mapping):
            raise HintsError("placement hints: not a JSON object")
        if doc.get("kind") != HINTS_KIND or doc.get("version") != HINTS_VERSION:
            raise HintsError(
                f"placement hints: kind/version {doc.get('kind')!r}/{doc.get('version')!r} "
                f"is not {HINTS_KIND!r}/{HINTS_VERSION}"
            )
        try:
            time_s = float(doc["time_s"])
            services = {
                str(name): ServiceHint(
                    str(entry["tier"]),
                    str(entry["variant"]),
                    _weights(entry.get("weights") or {}),
                    _weights(entry.get("nodes") or {}),
                )
                for name, entry in dict(doc["services"]).items()
            }
        except (KeyError, TypeError, ValueError) as err:
            raise HintsError(f"placement hints: unreadable ({type(err).__name__}: {err})") from None
        if not math.isfinite(time_s):
            raise HintsError("placement hints: time_s is not a finite number")
        return cls(services, time_s, str(doc.get("source") or "online"))

    def fresh(self, now_s: float, max_age_s: float) -> bool:
        return now_s - self.time_s <= max_age_s


def _weights(raw: Any) -> dict[str, float]:
    out = {str(k): float(v) for k, v in dict(raw).items()}
    if any(not (math.isfinite(v) and v >= 0) for v in out.values()):
        raise ValueError("weights must be finite numbers >= 0")
    return out


def tier_bonus(hints: PlacementHints | None, service: str | None, node_tier: str | None) -> int:
    """Prioritize points to add for a node: ``round(TIER_BONUS × weight of its tier)`` (0 without a hint)."""
    if hints is None or service is None or node_tier is None:
        return 0
    hint = hints.services.get(service)
    if hint is None:
        return 0
    return round(TIER_BONUS * min(max(hint.tier_weight(node_tier), 0.0), 1.0))


def node_bonus(hints: PlacementHints | None, service: str | None, node: str | None) -> int:
    """``NODE_BONUS`` for a node with a positive weight in the service's ``nodes``, else 0."""
    if hints is None or service is None or node is None:
        return 0
    hint = hints.services.get(service)
    return NODE_BONUS if hint is not None and hint.nodes.get(node, 0.0) > 0 else 0


def hinted_variant(hints: PlacementHints | None, service: str | None, variants: Sequence[str]) -> str | None:
    """The hinted variant when the pod offers it, else None (the placement policy's choice stands)."""
    if hints is None or service is None:
        return None
    hint = hints.services.get(service)
    if hint is None or hint.variant not in variants:
        return None
    return hint.variant
