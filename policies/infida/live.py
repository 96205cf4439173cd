r"""INFIDA live (pure part): from observed request counts to the allocation document, hints and replicas.

The controller process (``extender/controller/allocation.py``) reads the cluster and Prometheus,
then calls this module, and writes what it returns:

- :func:`window_counts` — the request counts of one window per request type (service), from the
  counts per (node, service, variant) that Prometheus gave per serving pod;
- :func:`allocation_document` — the JSON kept in a ConfigMap and served by ``GET /allocation``:
  per node, per ``service/variant``, the fractional value ``y`` and the integral ``x``, the window
  (index, length, end time), the counts, and the allocator's state (so a restart resumes:
  :meth:`~.allocators.InfidaAllocator.resume`);
- :func:`allocation_hints` — the shared placement hints (:mod:`qosched.policies.requests.hints`):
  for each service, the nodes holding one of its variants (``nodes`` weights: the node's share of
  the service's loaded slots) and the tier/variant of its cheapest loaded slot; merged into the
  hints the online learner writes (:func:`merge_hints`), so the extender has one reader;
- :func:`replica_plan` — the optional scaling of per-variant Deployments to the integral
  allocation: replicas = end/edge nodes holding the variant (plus one, the cloud's, for the
  service's most accurate allowed variant: the repository of the paper), clamped to the user's
  bounds, and never below one replica of that most accurate variant.

Document (``kind: qosched.allocation``, ``version: 1``)::

    {"kind": "qosched.allocation", "version": 1, "window": 12, "window_s": 600.0,
     "time_s": 1733590000.0, "eta": 0.05,
     "nodes": {"edge-t4-0": {"classify/resnet50": {"fractional": 0.93, "integral": 1}, ...}},
     "counts": {"classify": 5400.0}, "state": {...}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from qosched.policies.infida.allocators import Decision
from qosched.policies.infida.routing import AllocationModel
from qosched.policies.requests.hints import PlacementHints, ServiceHint

__all__ = [
    "ALLOCATION_KEY",
    "ALLOCATION_KIND",
    "ALLOCATION_VERSION",
    "AllocationDocumentError",
    "ReplicaBounds",
    "allocation_document",
    "allocation_hints",
    "check_allocation_document",
    "merge_hints",
    "replica_plan",
    "window_counts",
]

ALLOCATION_KIND = "qosched.allocation"
ALLOCATION_VERSION = 1
ALLOCATION_KEY = "allocation.json"


class AllocationDocumentError(ValueError):
    """An allocation document that cannot be used (the message says why)."""


def window_counts(model: AllocationModel, served: Mapping[tuple[str, str, str], float]) -> np.ndarray:
    """Requests per request type in the window: ``served[(node, service, variant)]`` summed per service.

    Whoever served a request, it was a request of its service: INFIDA's gradient needs how many
    requests of each type arrived, not where they went.
    """
    row = {t.service: r for r, t in enumerate(model.types)}
    counts = np.zeros(len(model.types))
    for (_node, service, _variant), n in served.items():
        if service in row and math.isfinite(n) and n > 0:
            counts[row[service]] += n
    return counts


def allocation_document(
    model: AllocationModel,
    decision: Decision,
    *,
    window: int,
    window_s: float,
    time_s: float,
    counts: np.ndarray,
    state: Mapping[str, Any] | None = None,
    eta: float | None = None,
) -> dict[str, Any]:
    """The ConfigMap / ``GET /allocation`` document (module docstring)."""
    nodes: dict[str, dict[str, dict[str, float | int]]] = {n.name: {} for n in model.catalog.nodes}
    for i, slot in enumerate(model.catalog.slots):
        nodes[slot.node][slot.model] = {
            "fractional": round(float(decision.fractional[i]), 6),
            "integral": int(bool(decision.integral[i])),
        }
    doc: dict[str, Any] = {
        "kind": ALLOCATION_KIND,
        "version": ALLOCATION_VERSION,
        "window": int(window),
        "window_s": float(window_s),
        "time_s": float(time_s),
        "nodes": nodes,
        "counts": {t.service: float(counts[r]) for r, t in enumerate(model.types)},
    }
    if eta is not None:
        doc["eta"] = float(eta)
    if state is not None:
        doc["state"] = dict(state)
    return doc


def check_allocation_document(doc: Any) -> dict[str, Any]:
    """The document if its kind, version and shape are right; raises :class:`AllocationDocumentError`."""
    if not isinstance(doc, Mapping):
        raise AllocationDocumentError("allocation: not a JSON object")
    if doc.get("kind") != ALLOCATION_KIND or doc.get("version") != ALLOCATION_VERSION:
        raise AllocationDocumentError(
            f"allocation: kind/version {doc.get('kind')!r}/{doc.get('version')!r} is not {ALLOCATION_KIND!r}/{ALLOCATION_VERSION}"
        )
    nodes = doc.get("nodes")
    if not isinstance(nodes, Mapping) or not all(isinstance(v, Mapping) for v in nodes.values()):
        raise AllocationDocumentError("allocation: 'nodes' must map node -> {service/variant: {...}}")
    for field in ("window", "window_s", "time_s"):
        value = doc.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AllocationDocumentError(f"allocation: {field!r} must be a finite number")
    return dict(doc)


def allocation_hints(model: AllocationModel, decision: Decision, time_s: float) -> PlacementHints:
    """Hints of the integral allocation (module docstring); services with nothing loaded get none."""
    table = model.table(model.base_links())
    hints: dict[str, ServiceHint] = {}
    for r, rtype in enumerate(model.types):
        loaded = [int(i) for i in table.slot[r] if i >= 0 and decision.integral[i]]
        if not loaded:
            continue
        best = model.catalog.slots[loaded[0]]  # the table is sorted by cost
        per_node: dict[str, float] = {}
        per_action: dict[str, float] = {}
        for i in loaded:
            slot = model.catalog.slots[i]
            per_node[slot.node] = per_node.get(slot.node, 0.0) + 1.0 / len(loaded)
            key = f"{model.node_tier[slot.node]}/{model.slot_key[i][1]}"
            per_action[key] = per_action.get(key, 0.0) + 1.0 / len(loaded)
        hints[rtype.service] = ServiceHint(
            tier=model.node_tier[best.node],
            variant=model.slot_key[loaded[0]][1],
            weights=per_action,
            nodes=per_node,
        )
    return PlacementHints(hints, time_s, source="infida")


def merge_hints(existing: PlacementHints | None, ours: PlacementHints) -> PlacementHints:
    """Our ``nodes`` weights into the hints another writer (the online learner) keeps.

    A service the other writer hints keeps its tier, variant and weights and gets our nodes; a
    service only we hint takes ours whole; the other writer's services we do not hint are kept.
    """
    if existing is None:
        return ours
    merged = dict(existing.services)
    for name, hint in ours.services.items():
        other = merged.get(name)
        merged[name] = (
            hint if other is None else ServiceHint(other.tier, other.variant, other.weights, hint.nodes)
        )
    source = existing.source if existing.source == ours.source else f"{existing.source}+{ours.source}"
    return PlacementHints(merged, max(existing.time_s, ours.time_s), source)


@dataclass(frozen=True, slots=True)
class ReplicaBounds:
    """A per-variant Deployment the controller may scale, and the user's bounds for it."""

    namespace: str
    name: str
    service: str
    variant: str
    min_replicas: int = 0
    max_replicas: int = 1 << 30
    replicas: int = 0


def replica_plan(
    model: AllocationModel, decision: Decision, deployments: list[ReplicaBounds]
) -> dict[str, int]:
    """``"namespace/name"`` → desired replicas (module docstring); unchanged ones are left out."""
    held: dict[tuple[str, str], int] = {}
    for i, (service, variant) in enumerate(model.slot_key):
        if decision.integral[i]:
            held[(service, variant)] = held.get((service, variant), 0) + 1
    plan: dict[str, int] = {}
    for d in deployments:
        repo = model.repository.get(d.service)
        is_repo = repo is not None and repo.variant == d.variant
        want = held.get((d.service, d.variant), 0) + (1 if is_repo else 0)
        want = min(max(want, d.min_replicas), d.max_replicas)
        if is_repo:
            want = max(want, 1)
        if want != d.replicas:
            plan[f"{d.namespace}/{d.name}"] = want
    return plan
