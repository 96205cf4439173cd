"""The terminal summary of ``qosched whatif``: two rich tables that fit 100 columns.

* **outcome**, ranked by the run's objective (:mod:`qosched.extender.cli.whatif_ranking`, rule
  printed under the table, rank 1 in bold): scheduled, running at end, pending at end,
  preemptions, GPU allocation at the horizon [%], services SLO met / placed (when there are
  services), SLA penalty [USD];
* **QoS per class**: mean delivered QoS and Gini per class (highest class first), replay time [s].

One number format per column, with its unit in the header: counts as ``12,345``, percentages
with one decimal, USD with two, QoS and Gini with three, seconds with two. Wider figures (the
allocation at the end of arrivals, completed pods, time-averaged allocation) are in the report.
When stdout is not a terminal the tables are laid out for 100 columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qosched.extender.cli.whatif_ranking import objective_of, rank_policies

__all__ = ["TABLE_WIDTH", "print_summary", "summary_tables"]

#: Width the tables are laid out for when stdout is not a terminal (and at most on one).
TABLE_WIDTH = 100


def _classes(summary: Mapping[str, Any], order: Sequence[str] | None) -> list[str]:
    present = {c for s in summary["policies"].values() for c in s.get("mean_qos_by_class", {})}
    ranked = [c for c in (order or []) if c in present]
    return ranked + sorted(present - set(ranked))


def _num(value: Any, fmt: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return fmt.format(value)
    return "–"


def summary_tables(summary: Mapping[str, Any], class_order: Sequence[str] | None = None) -> list[Any]:
    """The two rich tables (outcome ranked by the objective; QoS per class)."""
    from rich import box
    from rich.table import Table

    policies = summary["policies"]
    class_order = class_order or summary.get("workload", {}).get("classes")
    objective = objective_of(summary, class_order)
    ranks = rank_policies(summary, objective)
    names = sorted(policies, key=lambda n: (ranks[n], n))
    services = any(s["services_total"] for s in policies.values())
    outcome = Table(
        title="qosched what-if: outcome", box=box.SIMPLE_HEAD, pad_edge=False, caption=objective.rule
    )
    outcome.add_column("policy", overflow="fold", min_width=10, max_width=20)
    columns = [
        "rank",
        "sched-\nuled",
        "running\nat end",
        "pending\nat end",
        "preemp-\ntions",
    ]
    gpus = any(s["gpu_allocation_ratio"] for s in policies.values())
    columns += ["GPU %\nhorizon"] if gpus else []
    columns += ["SLO met\n/ placed"] if services else []
    columns += ["penalty\n\\[USD]"]
    for column in columns:
        outcome.add_column(column, justify="right", no_wrap=True)
    for name in names:
        s = policies[name]
        row = [name, str(ranks[name])]
        row += [
            _num(s.get(k), "{:,}")
            for k in ("pods_scheduled", "pods_running_end", "pods_pending_end", "preemptions")
        ]
        row += [_num(100 * s["gpu_allocation_ratio"], "{:.1f}")] if gpus else []
        row += [f"{s['services_slo_met']:,}/{s['services_total']:,}"] if services else []
        row += [_num(s["penalty"], "{:,.2f}")]
        outcome.add_row(*row, style="bold green" if ranks[name] == 1 else None)
    classes = _classes(summary, class_order)
    qos = Table(title="QoS per class (mean, Gini: lower is fairer)", box=box.SIMPLE_HEAD, pad_edge=False)
    qos.add_column("policy", overflow="fold", min_width=10, max_width=20)
    for c in classes:
        qos.add_column(f"QoS\n{c}", justify="right", no_wrap=True)
    for c in classes:
        qos.add_column(f"Gini\n{c}", justify="right", no_wrap=True)
    qos.add_column("replay\n\\[s]", justify="right", no_wrap=True)
    for name in names:
        s = policies[name]
        row = [name, *(_num(s["mean_qos_by_class"].get(c), "{:.3f}") for c in classes)]
        row += [_num(s["gini_by_class"].get(c), "{:.3f}") for c in classes]
        qos.add_row(*row, _num(s["runtime_s"], "{:.2f}"))
    return [outcome, qos]


def print_summary(
    summary: Mapping[str, Any], class_order: Sequence[str] | None = None, console: Any = None
) -> None:
    """Print :func:`summary_tables` on ``console`` (default: stdout, at most 100 columns wide)."""
    from rich.console import Console

    if console is None:
        console = Console()
        console = Console(width=min(console.width, TABLE_WIDTH) if console.is_terminal else TABLE_WIDTH)
    for table in summary_tables(summary, class_order):
        console.print(table)
