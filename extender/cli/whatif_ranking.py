"""Which policy did best in a what-if run: the run's own objective, stated as a rule.

A what-if run is about one thing, and the report ranks the policies by it (never by a figure the
run is not about):

* **services** — the workload has inference services (some policy placed one): rank by the
  services that met their SLO at every checkpoint (more is better), ties by the SLA penalty
  (lower is better);
* **allocation** — FGD mode (``--inflate`` without ``--departures``: pods never leave): rank by
  the GPU allocation ratio at the horizon (higher is better; FGD's figure), ties by pods pending
  at the end (fewer is better);
* **qos** — pods come and go (contention mode, the trace's own times, a snapshot with
  durations) and there is no service: rank by the SLA penalty (lower is better), ties by the
  mean QoS of the highest class (higher is better).

Ties on both keys share a rank (``1, 1, 3``); only rank 1 is highlighted, so a policy that is
worse on the objective is never highlighted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Objective", "objective_of", "rank_policies"]

#: Relative tolerance under which two values of a key count as equal (float noise).
_REL_TOL = 1e-9


@dataclass(frozen=True)
class Objective:
    """A ranking rule: a name, the sentence the report shows, and the sort key (smaller is better)."""

    name: str
    rule: str
    key: Callable[[Mapping[str, Any]], tuple[float, float]]


def _top_class_qos(order: Sequence[str]) -> Callable[[Mapping[str, Any]], float]:
    def qos(entry: Mapping[str, Any]) -> float:
        by_class = entry.get("mean_qos_by_class", {})
        for cls in order:
            if cls in by_class and isinstance(by_class[cls], int | float) and math.isfinite(by_class[cls]):
                return float(by_class[cls])
        return 0.0

    return qos


def objective_of(summary: Mapping[str, Any], class_order: Sequence[str] | None = None) -> Objective:
    """The objective of the run whose ``summary.json`` is ``summary`` (see the module docstring).

    ``class_order``: classes highest first (default: as the summary lists them, sorted).
    """
    policies = summary["policies"]
    workload = summary.get("workload", {})
    if any(s.get("services_total", 0) > 0 for s in policies.values()):
        return Objective(
            "services",
            "Ranked by services meeting their SLO at every checkpoint (more is better), "
            "ties broken by the SLA penalty (lower is better).",
            lambda s: (-float(s["services_slo_met"]), float(s["penalty"])),
        )
    if workload.get("mode") == "fgd-inflation":
        return Objective(
            "allocation",
            "FGD mode (pods never leave): ranked by the GPU allocation ratio at the horizon "
            "(higher is better), ties broken by pods pending at the end (fewer is better).",
            lambda s: (-float(s["gpu_allocation_ratio"]), float(s.get("pods_pending_end", 0))),
        )
    order = (
        list(class_order)
        if class_order
        else sorted({c for s in policies.values() for c in s.get("mean_qos_by_class", {})})
    )
    top = _top_class_qos(order)
    first = f" ({order[0]})" if order else ""
    return Objective(
        "qos",
        "Pods come and go: ranked by the SLA penalty (lower is better), ties broken by the mean "
        f"QoS of the highest class{first} (higher is better).",
        lambda s: (float(s["penalty"]), -top(s)),
    )


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=_REL_TOL, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


def rank_policies(summary: Mapping[str, Any], objective: Objective) -> dict[str, int]:
    """Rank of every policy (1 = best) under ``objective``; equal keys share a rank."""
    keys = {name: objective.key(s) for name, s in summary["policies"].items()}
    ordered = sorted(keys, key=lambda n: keys[n])
    ranks: dict[str, int] = {}
    for position, name in enumerate(ordered, start=1):
        previous = ordered[position - 2] if position > 1 else None
        tied = previous is not None and _same(keys[previous], keys[name])
        ranks[name] = ranks[previous] if tied and previous is not None else position
    return ranks
