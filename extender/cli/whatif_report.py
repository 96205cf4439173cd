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
    readable offline.

Matplotlib runs on its ``Agg`` backend (no display needed).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CSV_COLUMNS", "write_policy_csv", "write_report"]

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
)


def _num(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def write_policy_csv(path: Path, result: Any, outcomes: Any) -> None:
    """Write one policy's per-pod outcomes (:data:`CSV_COLUMNS`)."""
    lg = result.ledger
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
                )
            )


# --------------------------------------------------------------------------------------------- plots


def _figure(width: float = 7.5, height: float = 4.2) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return fig, ax


def _save(fig: Any, path: Path) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


def _colors(n: int) -> list[Any]:
    """Distinct colours: ``tab10`` for up to 10 policies, else ``tab20``."""
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _class_order(results: Mapping[str, Any]) -> list[str]:
    """The classes of the replayed pods, highest class (rank 0) first."""
    if not results:
        return []
    ledger = next(iter(results.values())).ledger
    rank = {str(c): int(r) for c, r in zip(ledger.class_name.tolist(), ledger.rank.tolist(), strict=True)}
    return sorted(rank, key=lambda c: (rank[c], c))


def plot_allocation_curves(results: Mapping[str, Any], path: Path) -> bytes | None:
    """GPU allocation ratio [%] against arrived workload [%], one line per policy.

    Two panels: the whole curve, and a zoom on its upper part (from 60 % arrived, or where the
    first policy leaves the diagonal), where the policies differ.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {
        n: r
        for n, r in results.items()
        if r.curve_arrived_frac.size and r.workload.capacity_gpu_milli and r.curve_arrived_frac[-1] > 0
    }
    if not curves:  # no GPU request arrived (e.g. inference on edge TPUs): nothing to draw
        return None
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=110)
    top = 0.0
    low_end = 100.0
    for color, (name, r) in zip(_colors(len(curves)), curves.items(), strict=True):
        x = 100 * r.curve_arrived_frac
        y = 100 * r.curve_allocated_frac
        for a in (ax, zoom):
            a.plot(x, y, label=f"{name} ({y[-1]:.1f} %)", color=color, linewidth=1.3)
        top = max(top, float(x[-1]))
        low_end = min(low_end, float(y[-1]))
    for a in (ax, zoom):
        a.plot(
            [0, min(top, 100)],
            [0, min(top, 100)],
            color="0.6",
            linestyle=":",
            linewidth=1,
            label="placed = arrived",
        )
        a.set_xlabel("arrived workload: GPU requested / capacity [%]")
        a.grid(True, alpha=0.3)
    ax.set_ylabel("GPU allocation ratio [%]")
    ax.set_title("Allocation ratio as the workload arrives")
    x0 = min(60.0, max(low_end - 10.0, 0.0))
    zoom.set_xlim(x0, max(top, x0 + 1.0) + 1.0)
    zoom.set_ylim(max(min(low_end - 3.0, x0), 0.0), min(100.0, max(low_end, 0.0) + 10.0) + 0.5)
    zoom.set_title("upper part")
    zoom.legend(fontsize=7, ncol=1, loc="lower right")
    return _save(fig, path)


def plot_services_slo(summary: Mapping[str, Any], path: Path) -> bytes | None:
    """Bars: services placed and services with no simulated SLO violation, per policy."""
    policies = summary["policies"]
    if not any(s["services_total"] for s in policies.values()):
        return None
    names = list(policies)
    total = np.array([policies[n]["services_total"] for n in names])
    met = np.array([policies[n]["services_slo_met"] for n in names])
    fig, ax = _figure(7.5, 0.35 * len(names) + 1.5)
    y = np.arange(len(names))
    ax.barh(y, total, color="0.85", label="services placed")
    ax.barh(y, met, color="tab:green", label="no simulated SLO violation")
    for yi, m, t in zip(y, met, total, strict=True):
        ax.text(t, yi, f" {m}/{t}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15 * max(int(total.max()), 1))  # room on the right for the labels
    ax.set_xlabel("inference services")
    ax.set_title("Services meeting their SLO (request-level simulation)", pad=24)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    return _save(fig, path)


def _horizontal() -> dict[str, Any]:
    """Horizontal box plots: ``orientation`` since Matplotlib 3.10 (``vert`` is deprecated)."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def plot_qos_by_class(results: Mapping[str, Any], outcomes: Mapping[str, Any], path: Path) -> bytes | None:
    """Delivered QoS per class (one column per class), one box and one curve per policy.

    Top: box plots (quartiles, whiskers at 1.5 IQR, mean as a red diamond), the class target
    dashed. Bottom: the empirical CDF (fraction of the class's pods with QoS ≤ x), where the tails
    that the boxes hide — the pods far below target — show.
    """
    import matplotlib.pyplot as plt

    names = list(results)
    if not names:
        return None
    first = results[names[0]].ledger
    classes = _class_order(results)
    if not classes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    fig, axes = plt.subplots(
        2,
        len(classes),
        figsize=(3.2 * len(classes) + 1, 0.3 * len(names) + 5.2),
        dpi=110,
        squeeze=False,
        gridspec_kw={"height_ratios": [0.3 * len(names) + 1.2, 3.0]},
    )
    colors = _colors(len(names))
    for col, cls in enumerate(classes):
        ax, cdf = axes[0][col], axes[1][col]
        data = []
        for n in names:
            out = outcomes[n]
            mask = out.arrived & (results[n].ledger.class_name == cls)
            data.append(np.sort(out.qos[mask]))
        ax.boxplot(data, widths=0.6, showfliers=False, **_horizontal())
        means = [float(d.mean()) if d.size else math.nan for d in data]
        ax.plot(means, np.arange(1, len(names) + 1), "D", color="tab:red", markersize=3, label="mean")
        target = float(first.target[first.class_name == cls][0])
        for a in (ax, cdf):
            a.axvline(target, color="tab:blue", linestyle="--", linewidth=1, label=f"target {target:g}")
            a.set_xlim(-0.02, 1.02)
        ax.set_yticks(np.arange(1, len(names) + 1), names if col == 0 else [""] * len(names), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"class {cls}", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
        for color, name, d in zip(colors, names, data, strict=True):
            if d.size:
                cdf.step(np.r_[0.0, d], np.arange(d.size + 1) / d.size, where="post", color=color, label=name)
        cdf.set_xlabel("delivered QoS")
        cdf.set_ylim(0, 1.01)
        if col == 0:
            cdf.set_ylabel("fraction of pods with QoS ≤ x")
            cdf.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_fairness_by_class(
    summary: Mapping[str, Any], path: Path, order: list[str] | None = None
) -> bytes | None:
    """Per class, one bar per policy: Gini of delivered QoS, SLA penalty [USD], pods below target.

    Drawn only when some policy has a penalty or a pod below target (otherwise every bar is 0).
    ``order``: the classes in display order (default: alphabetical).
    """
    policies = summary["policies"]
    names = list(policies)
    present = {c for s in policies.values() for c in s.get("penalty_by_class", {})}
    classes = [c for c in order if c in present] if order else sorted(present)
    if not names or not classes:
        return None
    worth = any(
        v > 0
        for s in policies.values()
        for key in ("penalty_by_class", "below_target_by_class")
        for v in s[key].values()
    )
    if not worth:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("gini_by_class", "Gini of delivered QoS (lower: fairer)", "{:.3f}"),
        ("penalty_by_class", "SLA penalty [USD]", "{:.3g}"),
        ("below_target_by_class", "pods below their class target", "{:d}"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.6), dpi=110)
    width = 0.8 / len(names)
    x = np.arange(len(classes))
    for ax, (key, title, fmt) in zip(axes, panels, strict=True):
        for j, (color, name) in enumerate(zip(_colors(len(names)), names, strict=True)):
            values = [policies[name].get(key, {}).get(c, 0) for c in classes]
            bars = ax.bar(x + (j - (len(names) - 1) / 2) * width, values, width, color=color, label=name)
            for bar, v in zip(bars, values, strict=True):
                label = fmt.format(int(v)) if fmt == "{:d}" else fmt.format(float(v))
                ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=6, rotation=90)  # fmt: skip
        ax.set_xticks(x, classes)
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.25)
    axes[0].legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_latency_model(results: Mapping[str, Any], path: Path) -> bytes | None:
    """Scatter: analytic vs simulated latency statistic of every checkpointed service (log-log)."""
    points = []
    for name, r in results.items():
        book = r.latency
        if book is None or not book.checks:
            continue
        sim = np.concatenate([c.simulated_ms for c in book.checks])
        ana = np.concatenate([c.analytic_ms for c in book.checks])
        ok = np.isfinite(sim) & np.isfinite(ana) & (sim > 0) & (ana > 0)
        if ok.any():
            points.append((name, sim[ok], ana[ok]))
    if not points:
        return None
    fig, ax = _figure(6.0, 5.0)
    lo, hi = math.inf, 0.0
    for color, (name, sim, ana) in zip(_colors(len(points)), points, strict=True):
        ax.scatter(sim, ana, s=8, alpha=0.6, color=color, label=name)
        lo, hi = min(lo, float(sim.min()), float(ana.min())), max(hi, float(sim.max()), float(ana.max()))
    ax.plot([lo, hi], [lo, hi], color="0.4", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated latency [ms]")
    ax.set_ylabel("analytic prediction [ms]")
    ax.set_title("Latency models vs request-level simulation")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.best td { background: #eef8ee; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return ""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _summary_table(summary: Mapping[str, Any]) -> str:
    policies = summary["policies"]
    classes = sorted({c for s in policies.values() for c in s["mean_qos_by_class"]})
    best_alloc = max((s["gpu_allocation_ratio"] for s in policies.values()), default=0.0)
    head = (
        "<tr><th class=l>policy</th><th>pods</th><th>scheduled</th><th>failed</th><th>GPU allocation</th>"
        "<th>services SLO met / placed</th>"
        + "".join(f"<th>mean QoS {html.escape(c)}</th><th>Gini {html.escape(c)}</th>" for c in classes)
        + "<th>penalty [USD]</th><th>runtime [s]</th></tr>"
    )
    rows = []
    for name, s in policies.items():
        best = ' class="best"' if best_alloc and s["gpu_allocation_ratio"] == best_alloc else ""
        cells = [
            f"<td class=l>{html.escape(name)}</td>",
            f"<td>{s['pods_total']}</td>",
            f"<td>{s['pods_scheduled']}</td>",
            f"<td>{s['pods_failed']}</td>",
            f"<td>{100 * s['gpu_allocation_ratio']:.2f} %</td>",
            f"<td>{s['services_slo_met']} / {s['services_total']}</td>",
        ]
        for c in classes:
            cells.append(f"<td>{_fmt(s['mean_qos_by_class'].get(c, math.nan))}</td>")
            cells.append(f"<td>{_fmt(s['gini_by_class'].get(c, math.nan))}</td>")
        cells.append(f"<td>{s['penalty']:.4g}</td>")
        cells.append(f"<td>{s['runtime_s']:.2f}</td>")
        rows.append(f"<tr{best}>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _fairness_table(summary: Mapping[str, Any]) -> str:
    policies = summary["policies"]
    classes = sorted({c for s in policies.values() for c in s.get("penalty_by_class", {})})
    if not classes:
        return ""
    head = "<tr><th class=l>policy</th>" + "".join(
        f"<th>Gini {html.escape(c)}</th><th>penalty {html.escape(c)} [USD]</th><th>below target {html.escape(c)}</th>"
        for c in classes
    )
    head += "<th>preemptions</th></tr>"
    rows = []
    for name, s in policies.items():
        cells = "".join(
            f"<td>{_fmt(s['gini_by_class'].get(c, math.nan))}</td>"
            f"<td>{s['penalty_by_class'].get(c, 0.0):.4g}</td><td>{s['below_target_by_class'].get(c, 0)}</td>"
            for c in classes
        )
        rows.append(f"<tr><td class=l>{html.escape(name)}</td>{cells}<td>{s.get('preemptions', 0)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _latency_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for name, s in summary["policies"].items():
        lm = s.get("latency_model", {})
        if not lm.get("checks"):
            continue
        rows.append(
            "<tr>"
            f"<td class=l>{html.escape(name)}</td><td>{lm['checks']}</td><td>{lm['service_observations']}</td>"
            f"<td>{lm['simulations']}</td>"
            f"<td>{_pct(lm.get('mean_abs_rel_error'))}</td><td>{_pct(lm.get('median_abs_rel_error'))}</td>"
            f"<td>{_pct(lm.get('p90_abs_rel_error'))}</td>"
            f"<td>{lm['analytic_met_simulated_missed']}</td><td>{lm['analytic_missed_simulated_met']}</td>"
            "</tr>"
        )
    if not rows:
        return "<p class=note>No inference service was placed, so no request-level latency was simulated.</p>"
    head = (
        "<tr><th class=l>policy</th><th>device checkpoints</th><th>service observations</th>"
        "<th>distinct simulations</th><th>mean |error|</th><th>median |error|</th><th>p90 |error|</th>"
        "<th>predicted met, simulated missed</th><th>predicted missed, simulated met</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def _class_table(summary: Mapping[str, Any]) -> str:
    policies = summary["policies"]
    classes = sorted({c for s in policies.values() for c in s.get("placed_by_class", {})})
    if not classes:
        return ""
    head = "<tr><th class=l>policy</th>" + "".join(f"<th>placed {html.escape(c)}</th>" for c in classes)
    head += "<th>running at end</th><th>completed</th><th>pending at end</th><th>preemptions</th>"
    head += "<th>GPU allocation, time average</th><th>partly-used GPU free</th></tr>"
    rows = []
    for name, s in policies.items():
        cells = "".join(f"<td>{s['placed_by_class'].get(c, 0)}</td>" for c in classes)
        rows.append(
            f"<tr><td class=l>{html.escape(name)}</td>{cells}<td>{s['pods_running_end']}</td>"
            f"<td>{s['pods_completed']}</td><td>{s['pods_pending_end']}</td><td>{s['preemptions']}</td>"
            f"<td>{100 * s['gpu_allocation_time_avg']:.2f} %</td><td>{100 * s['gpu_partial_free_frac']:.2f} %</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _workload_table(workload: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class=l>{html.escape(str(k))}</td><td class=l>{html.escape(str(v))}</td></tr>"
        for k, v in workload.items()
    )
    return f"<table>{rows}</table>"


def write_report(
    out_dir: Path,
    summary: Mapping[str, Any],
    results: Mapping[str, Any],
    outcomes: Mapping[str, Any],
) -> Path:
    """Write the PNG plots and ``report.html`` (self-contained); returns the HTML path."""
    curve = plot_allocation_curves(results, out_dir / "allocation_curve.png")
    slo = plot_services_slo(summary, out_dir / "services_slo.png")
    qos = plot_qos_by_class(results, outcomes, out_dir / "qos_by_class.png")
    fair = plot_fairness_by_class(summary, out_dir / "fairness_by_class.png", _class_order(results))
    lat = plot_latency_model(results, out_dir / "latency_model.png")
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<title>qosched what-if report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>qosched what-if report</h1>",
        "<p class=note>Every policy replayed the same workload on the same cluster through the extender's "
        "own decision interface. <b>GPU allocation</b>: allocated milli-GPU over capacity at the end. "
        "<b>Services SLO met</b>: inference pods whose simulated request latency met the SLO at every "
        "checkpoint (before each departure or preemption on their device, and at the end). <b>QoS</b>: "
        "availability (time running over time since submission) times SLO attainment; Gini within a class, "
        "lower is fairer; <b>penalty</b>: SLA credits owed when QoS falls below the class target.</p>",
        "<h2>Summary</h2>",
        _summary_table(summary),
    ]
    if curve:
        parts += ["<h2>Allocation ratio vs arrived workload</h2>", _img(curve, "allocation curve")]
    if slo:
        parts += ["<h2>Services meeting their SLO</h2>", _img(slo, "services meeting SLO")]
    if qos:
        parts += ["<h2>Delivered QoS per class</h2>", _img(qos, "QoS per class")]
    parts += ["<h2>Fairness and penalties per class</h2>", _fairness_table(summary)]
    if fair:
        parts.append(_img(fair, "Gini, penalty and pods below target per class"))
    parts += ["<h2>Placements per class and at the end</h2>", _class_table(summary)]
    parts += ["<h2>Analytic latency models vs simulation</h2>", _latency_table(summary)]
    if lat:
        parts.append(_img(lat, "analytic vs simulated latency"))
    parts += ["<h2>Workload</h2>", _workload_table(summary["workload"]), "</body></html>"]
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
