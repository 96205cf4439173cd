"""Outputs of ``qosched whatif``: per-policy CSV files, PNG plots and a self-contained HTML report.

Files written into the output directory:

``<policy>.csv``
    One row per pod: pod, namespace, class, status, node, devices, model, submit/start/end
    times, running time, preemptions, delivered QoS, the policy's predicted latency at placement,
    the last simulated and analytic latency (the statistic the SLO refers to), the SLO and
    whether every latency checkpoint met it.
``allocation_curve.png``
    GPU allocation ratio against the arrived workload, all policies (the FGD paper's Fig. 7
    curve; the diagonal is "everything that arrived was placed").
``services_slo.png``
    Services hosted with no simulated SLO violation, and services placed, per policy.
``qos_by_class.png``
    Distribution of delivered QoS per class and policy (box plots, and below them the empirical
    CDFs, where the pods far below target show), with the class targets.
``fairness_by_class.png``
    Per class and policy: Gini of delivered QoS, SLA penalty and pods below target (only when
    some pod fell below its target).
``latency_model.png``
    Analytic prediction against simulated latency of every checkpointed service (only when
    services were simulated).
``report.html``
    The tables and the plots above, embedded as base64 PNGs: one file, no external resource,
    readable offline. Rendered from ``templates/report.html.j2`` (Jinja2 with autoescape: every
    value is inserted as text).

Matplotlib runs on its ``Agg`` backend (no display needed).
"""

from __future__ import annotations

import base64
import csv
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qosched.extender.cli.whatif_plots import (
    ClassQoS,
    curves_from_results,
    plot_allocation_curves,
    plot_fairness_by_class,
    plot_latency_model,
    plot_qos_by_class,
    plot_services_slo,
)
from qosched.extender.cli.whatif_ranking import Objective, objective_of, rank_policies
from qosched.policies.simulator.replay import STATUS_NAMES

__all__ = ["CSV_COLUMNS", "pending_reasons", "render_report", "write_policy_csv", "write_report"]

#: Columns of ``<policy>.csv``, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "pod",
    "namespace",
    "class",
    "status",
    "node",
    "devices",
    "model",
    "submit_s",
    "start_s",
    "end_s",
    "running_s",
    "preemptions",
    "qos",
    "predicted_latency_ms",
    "simulated_latency_ms",
    "analytic_latency_ms",
    "slo_ms",
    "slo_met",
    "reason",
)


def _num(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


#: At most this many distinct pod shapes are explained per policy (:func:`pending_reasons`).
EXPLAINED_SHAPES = 256


def pending_reasons(
    result: Any, has_profile: Callable[[str, str], bool] | None = None, policy: Any = None
) -> list[str]:
    """Why each pod that never ran is still pending at the horizon ("" for the others).

    ``no profile for model M on any accelerator of the cluster (a, b)`` when ``has_profile``
    (``(accelerator, model) -> bool``) finds none of the pod's variants on the cluster's
    accelerators — no policy can place it, whatever the load; else ``no node fits (N failed
    attempts)``, followed, with ``policy`` (the replay's placement policy), by why at the
    horizon: ``at the horizon: 12 node(s): not enough free CPU (closest: n3: needs 4000m CPU,
    has 2500m free); ...`` (:func:`qosched.policies.placement.explain.why_no_node` on the final
    state, one vectorised evaluation and one explanation per reason code; pods of the same
    shape share it, at most :data:`EXPLAINED_SHAPES` shapes); a pod that ran and was evicted:
    ``preempted, waiting to run again``.
    """
    lg = result.ledger
    accelerators = sorted({v.accelerator for v in result.state.node_views if v.accelerator})
    reasons = [""] * len(lg.pods)
    at_horizon = _HorizonReasons(policy, result.state) if policy is not None else None
    for i, pod in enumerate(lg.pods):
        if STATUS_NAMES[int(lg.status[i])] != "pending":
            continue
        if not math.isnan(lg.first_start_s[i]):
            reasons[i] = "preempted, waiting to run again"
        elif (
            has_profile is not None
            and pod.variants
            and not any(has_profile(a, m) for a in accelerators for m in pod.variants)
        ):
            reasons[i] = (
                f"no profile for model {pod.variants[0]} on any accelerator of the cluster "
                f"({', '.join(accelerators) or 'none'})"
            )
        else:
            reasons[i] = f"no node fits ({int(lg.failures[i])} failed attempts)"
            why = at_horizon.of(pod) if at_horizon is not None else ""
            if why:
                reasons[i] += f"; at the horizon: {why}"
    return reasons


class _HorizonReasons:
    """Why a pod shape fits nowhere on the final state, memoised per shape (the pod's identity
    and creation time left out: they do not change where it fits)."""

    def __init__(self, policy: Any, state: Any) -> None:
        self.policy = policy
        self.state = state
        self.memo: dict[Any, str] = {}

    def of(self, pod: Any) -> str:
        from dataclasses import replace

        from qosched.policies.placement.explain import summary_text, why_no_node

        shape = replace(pod, uid="", name="", namespace="", creation_s=0.0)
        found = self.memo.get(shape)
        if found is None:
            if len(self.memo) >= EXPLAINED_SHAPES:
                return ""
            found = self.memo[shape] = summary_text(*why_no_node(self.policy, self.state, pod))
        return found


def write_policy_csv(path: Path, result: Any, outcomes: Any, reasons: Sequence[str] | None = None) -> None:
    """Write one policy's per-pod outcomes (:data:`CSV_COLUMNS`); ``reasons``: see :func:`pending_reasons`."""
    lg = result.ledger
    why = reasons if reasons is not None else pending_reasons(result)
    nodes = result.state.node_names
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for i, pod in enumerate(lg.pods):
            if not outcomes.arrived[i]:
                continue
            row = int(lg.node_row[i])
            placed = not math.isnan(lg.first_start_s[i])
            writer.writerow(
                (
                    pod.name,
                    pod.namespace,
                    pod.qos_class,
                    outcomes.status[i],
                    nodes[row] if row >= 0 else "",
                    ",".join(str(d) for d in lg.devices[i]) if placed else "",
                    lg.model[i] or (pod.model or ""),
                    _num(float(lg.submit_s[i])),
                    _num(float(lg.first_start_s[i])),
                    _num(float(lg.end_s[i])),
                    _num(float(outcomes.running_s[i])),
                    int(lg.preemptions[i]),
                    _num(float(outcomes.qos[i]), 4),
                    _num(float(lg.predicted_latency_ms[i])),
                    _num(float(outcomes.simulated_ms[i])),
                    _num(float(outcomes.analytic_ms[i])),
                    _num(float(pod.slo_ms)) if pod.slo_ms is not None else "",
                    ("yes" if outcomes.slo_met[i] else "no") if outcomes.is_service[i] and placed else "",
                    why[i],
                )
            )


# --------------------------------------------------------------------------------------------- HTML

#: The report's template, shipped as package data (``[options.package_data]`` in setup.cfg).
TEMPLATE_DIR = Path(__file__).with_name("templates")
REPORT_TEMPLATE = "report.html.j2"


@dataclass
class Row:
    """One table row: its cells as text (the template escapes them) and an optional CSS class."""

    cells: list[str]
    css: str = ""


@dataclass
class Table:
    """A table for the template: ``left_columns`` leading columns are left-aligned (names)."""

    header: list[str]
    rows: list[Row]
    caption: str = ""
    left_columns: int = 1


@dataclass
class Image:
    """A PNG embedded as base64 (the report stays one self-contained file)."""

    alt: str
    base64: str


@dataclass
class Section:
    """A titled part of the report: notes (paragraphs), tables and images, in that order."""

    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def _image(data: bytes | None, alt: str) -> list[Image]:
    return [Image(alt, base64.b64encode(data).decode("ascii"))] if data else []


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f} %"


def end_of_arrivals_allocation(entry: Mapping[str, Any]) -> float | None:
    """GPU allocation ratio when the last pod arrived: the allocation curve's last point."""
    curve = entry.get("allocation_curve", {}).get("allocated", [])
    return float(curve[-1]) if curve else None


def _classes(summary: Mapping[str, Any], key: str, order: Sequence[str] | None) -> list[str]:
    present = {c for s in summary["policies"].values() for c in s.get(key, {})}
    ranked = [c for c in (order or []) if c in present]
    return ranked + sorted(present - set(ranked))


def summary_table(summary: Mapping[str, Any], objective: Objective) -> Table:
    """The outcome per policy, in rank order; rank 1 (ties included) highlighted — the only highlight."""
    policies = summary["policies"]
    ranks = rank_policies(summary, objective)
    services = any(s["services_total"] for s in policies.values())
    gpus = any(s["gpu_allocation_ratio"] or end_of_arrivals_allocation(s) for s in policies.values())
    header = ["policy", "rank", "pods arrived", "scheduled", "running at end", "pending at end"]
    header += ["completed", "preemptions"]
    header += ["GPU alloc. at horizon", "GPU alloc. at end of arrivals"] if gpus else []
    header += ["services SLO met / placed"] if services else []
    header += ["penalty [USD]", "runtime [s]"]
    rows = []
    for name in sorted(policies, key=lambda n: (ranks[n], n)):
        s = policies[name]
        cells = [name, str(ranks[name])]
        cells += [
            f"{s[k]:,}" for k in ("pods_total", "pods_scheduled", "pods_running_end", "pods_pending_end")
        ]
        cells += [f"{s['pods_completed']:,}", f"{s['preemptions']:,}"]
        if gpus:
            cells += [_pct(s["gpu_allocation_ratio"], 2), _pct(end_of_arrivals_allocation(s), 2)]
        cells += [f"{s['services_slo_met']} / {s['services_total']}"] if services else []
        cells += [f"{s['penalty']:,.2f}", f"{s['runtime_s']:.2f}"]
        rows.append(Row(cells, "best" if ranks[name] == 1 else ""))
    return Table(header, rows, caption="Outcome")


def qos_table(
    summary: Mapping[str, Any], objective: Objective, class_order: Sequence[str] | None
) -> list[Table]:
    """Mean delivered QoS and Gini per class (highest class first), policies in rank order."""
    policies = summary["policies"]
    classes = _classes(summary, "mean_qos_by_class", class_order)
    if not classes:
        return []
    ranks = rank_policies(summary, objective)
    header = ["policy", *(f"mean QoS {c}" for c in classes), *(f"Gini {c}" for c in classes)]
    rows = []
    for name in sorted(policies, key=lambda n: (ranks[n], n)):
        s = policies[name]
        cells = [name, *(_fmt(s["mean_qos_by_class"].get(c, math.nan)) for c in classes)]
        cells += [_fmt(s["gini_by_class"].get(c, math.nan)) for c in classes]
        rows.append(Row(cells))
    return [Table(header, rows, caption="Delivered QoS per class (Gini: lower is fairer)")]


def _fairness_table(summary: Mapping[str, Any], order: Sequence[str] | None) -> list[Table]:
    policies = summary["policies"]
    classes = _classes(summary, "penalty_by_class", order)
    if not classes:
        return []
    header = ["policy"]
    for c in classes:
        header += [f"Gini {c}", f"penalty {c} [USD]", f"below target {c}"]
    header.append("preemptions")
    rows = []
    for name, s in policies.items():
        cells = [name]
        for c in classes:
            cells += [
                _fmt(s["gini_by_class"].get(c, math.nan)),
                f"{s['penalty_by_class'].get(c, 0.0):,.2f}",
                f"{s['below_target_by_class'].get(c, 0):,}",
            ]
        cells.append(f"{s.get('preemptions', 0):,}")
        rows.append(Row(cells))
    return [Table(header, rows)]


def _latency_section(summary: Mapping[str, Any], lat: bytes | None) -> Section:
    section = Section("Analytic latency models vs simulation")
    rows = []
    for name, s in summary["policies"].items():
        lm = s.get("latency_model", {})
        if not lm.get("checks"):
            continue
        cells = [name, *(f"{lm[k]:,}" for k in ("checks", "service_observations", "simulations"))]
        cells += [
            _pct(lm.get(k)) for k in ("mean_abs_rel_error", "median_abs_rel_error", "p90_abs_rel_error")
        ]
        cells += [f"{lm[k]:,}" for k in ("analytic_met_simulated_missed", "analytic_missed_simulated_met")]
        rows.append(Row(cells))
    if not rows:
        section.notes.append("No inference service was placed, so no request-level latency was simulated.")
        return section
    header = ["policy", "device checkpoints", "service observations", "distinct simulations"]
    header += ["mean |error|", "median |error|", "p90 |error|"]
    header += ["predicted met, simulated missed", "predicted missed, simulated met"]
    section.tables.append(Table(header, rows))
    section.images += _image(lat, "analytic vs simulated latency")
    return section


def _class_table(summary: Mapping[str, Any], order: Sequence[str] | None) -> list[Table]:
    policies = summary["policies"]
    classes = _classes(summary, "placed_by_class", order)
    if not classes:
        return []
    header = ["policy", *(f"placed {c}" for c in classes)]
    header += ["failed attempts", "GPU allocation, time average", "partly-used GPU free"]
    rows = []
    for name, s in policies.items():
        cells = [name, *(f"{s['placed_by_class'].get(c, 0):,}" for c in classes)]
        cells += [f"{s.get('failed_attempts', 0):,}"]
        cells += [_pct(s["gpu_allocation_time_avg"], 2), _pct(s["gpu_partial_free_frac"], 2)]
        rows.append(Row(cells))
    return [Table(header, rows)]


#: Pending reasons listed per policy in the report (the most common first).
PENDING_REASONS_SHOWN = 3
_ATTEMPTS = re.compile(r" \(\d+ failed attempts\)")


def _pending_table(out_dir: Path, results: Mapping[str, Any]) -> Table | None:
    """Per policy, its pending pods' most common reasons (read back from ``<policy>.csv``)."""
    rows: list[Row] = []
    for name in results:
        path = out_dir / f"{name}.csv"
        if not path.exists():
            continue
        with path.open(newline="") as handle:
            why = Counter(
                _ATTEMPTS.sub("", r["reason"]) for r in csv.DictReader(handle) if r["status"] == "pending"
            )
        top = [f"{n:,} pod(s): {text}" for text, n in why.most_common(PENDING_REASONS_SHOWN)]
        if len(why) > PENDING_REASONS_SHOWN:
            top.append(f"… {len(why) - PENDING_REASONS_SHOWN:,} other reason(s), see {path.name}")
        rows.extend(Row([name if i == 0 else "", line], css="wrap") for i, line in enumerate(top))
    return (
        Table(["policy", "pending pods, most common reasons first"], rows, left_columns=2) if rows else None
    )


def _workload_table(workload: Mapping[str, Any]) -> Table:
    rows = [Row([str(k), str(v)]) for k, v in workload.items()]
    return Table([], rows, left_columns=2)


_GLOSSARY: tuple[tuple[str, str], ...] = (
    (
        "Scheduled",
        "pods that ran at some point; of those and the others, running at end, pending at end "
        "(never placed, or evicted and waiting) and completed add up to the pods arrived.",
    ),
    ("Preemptions", "evictions (a pod evicted twice counts twice)."),
    (
        "GPU allocation",
        "allocated milli-GPU over GPU capacity, at the horizon (after departures and retries) and "
        "when the last pod arrived (the last point of the allocation curve).",
    ),
    (
        "Services SLO met",
        "inference pods whose simulated request latency met the SLO at every checkpoint (before each "
        "departure or preemption on their device, and at the end).",
    ),
    (
        "QoS",
        "availability (time running over time since submission) times SLO attainment; Gini within a "
        "class, lower is fairer;",
    ),
    ("penalty", "SLA credits owed when QoS falls below the class target."),
)


def render_report(
    sections: Sequence[Section], *, warnings: Sequence[str] = (), title: str = "qosched what-if report"
) -> str:
    """The report's HTML from :data:`REPORT_TEMPLATE` (Jinja2, autoescaped: values are text)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    template = env.get_template(REPORT_TEMPLATE)
    return template.render(sections=sections, glossary=_GLOSSARY, warnings=list(warnings), title=title)


def class_order(results: Mapping[str, Any]) -> list[str]:
    """The classes of the replayed pods, highest class (rank 0) first."""
    if not results:
        return []
    ledger = next(iter(results.values())).ledger
    rank = {str(c): int(r) for c, r in zip(ledger.class_name.tolist(), ledger.rank.tolist(), strict=True)}
    return sorted(rank, key=lambda c: (rank[c], c))


def _class_qos(results: Mapping[str, Any], outcomes: Mapping[str, Any]) -> list[ClassQoS]:
    if not results:
        return []
    first = next(iter(results.values())).ledger
    out = []
    for cls in class_order(results):
        by_policy = {
            n: np.sort(outcomes[n].qos[outcomes[n].arrived & (r.ledger.class_name == cls)])
            for n, r in results.items()
        }
        out.append(ClassQoS(cls, float(first.target[first.class_name == cls][0]), by_policy))
    return out


def _latency_points(results: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    points = {}
    for name, r in results.items():
        book = r.latency
        if book is None or not book.checks:
            continue
        sim = np.concatenate([c.simulated_ms for c in book.checks])
        ana = np.concatenate([c.analytic_ms for c in book.checks])
        ok = np.isfinite(sim) & np.isfinite(ana) & (sim > 0) & (ana > 0)
        if ok.any():
            points[name] = (sim[ok], ana[ok])
    return points


def _allocation_notes(summary: Mapping[str, Any]) -> list[str]:
    horizons = {s.get("horizon_s") for s in summary["policies"].values()}
    horizon = next(iter(horizons)) if len(horizons) == 1 else None
    at = f" (t = {horizon:,.0f} s)" if isinstance(horizon, int | float) else ""
    return [
        "The curve is recorded after every arrival; the legend gives each policy's allocation when "
        "the last pod arrived (the table's \u201cGPU alloc. at end of arrivals\u201d). The table's "
        f"\u201cGPU alloc. at horizon\u201d is taken at the end of the replay{at}, after departures and "
        "retries; in FGD mode the two are equal."
    ]


def write_report(
    out_dir: Path,
    summary: Mapping[str, Any],
    results: Mapping[str, Any],
    outcomes: Mapping[str, Any],
    *,
    warnings: Sequence[str] = (),
) -> Path:
    """Write the PNG plots and ``report.html`` (self-contained); returns the HTML path.

    ``warnings``: lines shown at the top of the report (e.g. a run cut short, pods no profile
    covers).
    """
    order = class_order(results)
    curve = plot_allocation_curves(curves_from_results(results), out_dir / "allocation_curve.png")
    slo = plot_services_slo(summary, out_dir / "services_slo.png")
    qos = plot_qos_by_class(_class_qos(results, outcomes), out_dir / "qos_by_class.png")
    fair = plot_fairness_by_class(summary, out_dir / "fairness_by_class.png", order)
    lat = plot_latency_model(_latency_points(results), out_dir / "latency_model.png")
    objective = objective_of(summary, order)
    sections = [
        Section(
            "Summary",
            notes=[objective.rule + " Highlighted: rank 1 (several rows when tied)."],
            tables=[summary_table(summary, objective), *qos_table(summary, objective, order)],
        )
    ]
    if curve:
        sections.append(
            Section(
                "Allocation ratio vs arrived workload",
                _allocation_notes(summary),
                images=_image(curve, "allocation curve"),
            )
        )
    if slo:
        sections.append(Section("Services meeting their SLO", images=_image(slo, "services meeting SLO")))
    if qos:
        sections.append(Section("Delivered QoS per class", images=_image(qos, "QoS per class")))
    sections.append(
        Section(
            "Fairness and penalties per class",
            tables=_fairness_table(summary, order),
            images=_image(fair, "Gini, penalty and pods below target per class"),
        )
    )
    sections.append(Section("Placements per class and at the end", tables=_class_table(summary, order)))
    pending = _pending_table(out_dir, results)
    if pending is not None:
        sections.append(
            Section(
                "Why pods are pending at the horizon",
                [
                    "From each policy's CSV reason column, identical reasons counted (the number of "
                    "failed attempts left out); the numbers are those of the final state, per reason "
                    "code the node count and the node closest to fitting."
                ],
                tables=[pending],
            )
        )
    sections.append(_latency_section(summary, lat))
    sections.append(Section("Workload", tables=[_workload_table(summary["workload"])]))
    path = out_dir / "report.html"
    path.write_text(render_report(sections, warnings=warnings), encoding="utf-8")
    return path
