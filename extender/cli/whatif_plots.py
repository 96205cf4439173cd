"""Plots of ``qosched whatif`` and ``qosched whatif sweep``, readable from 1 to 17+ policies.

Readability rules (checked by looking at every plot at 3, 8 and 17 policies):

* **Colour by policy family.** One hue per family (Kubernetes, knapsack, Ibis, FGD and its
  baselines, queue/preemption, qosched) and shades plus line styles within a family, so 17
  lines stay distinguishable and related policies look related (:func:`policy_styles`).
* **Names on the axis, not in a legend**, wherever the policy is a category (bars, boxes):
  horizontal bars with the policy names as tick labels, small multiples (one panel per class
  and metric) instead of 17 bars side by side.
* **Legends outside the data** (beside or below the axes) where lines need one; the allocation
  zoom's limits come from the data it shows, so no line is cut.

Matplotlib runs on its ``Agg`` backend (no display needed).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Curve",
    "PolicyStyle",
    "plot_allocation_curves",
    "plot_fairness_by_class",
    "plot_latency_model",
    "plot_qos_by_class",
    "plot_services_slo",
    "policy_styles",
]

#: Policy families: (family label, colormap, members in display order). Unknown names fall
#: into "other". The order of this table is the order of the legends.
FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Kubernetes", "Greys", ("default", "binpack")),
    ("knapsack", "Oranges", ("knapsack-first-fit", "knapsack-best-fit", "knapsack-worst-fit")),
    ("Ibis", "Purples", ("ibis-pack", "ibis-spread", "ibis-hetero")),
    (
        "FGD and baselines",
        "Blues",
        ("random", "dot-product", "gpu-clustering", "gpu-packing", "best-fit", "fgd"),
    ),
    ("queue / preemption", "Greens", ("priority", "qos-driven")),
    ("qosched", "Reds", ("qosched",)),
)
_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P")


@dataclass(frozen=True)
class PolicyStyle:
    """How one policy is drawn: colour, line style, marker, and its family."""

    color: Any
    linestyle: Any
    marker: str
    family: str
    linewidth: float


def _family_of(name: str) -> tuple[int, int, str, str]:
    for f, (family, cmap, members) in enumerate(FAMILIES):
        if name in members:
            return f, members.index(name), family, cmap
    return len(FAMILIES), 0, "other", "tab10"


def policy_styles(names: Sequence[str]) -> dict[str, PolicyStyle]:
    """A style per policy: the family's colormap shaded over its members present in ``names``.

    Shades run from 0.45 to 0.9 of the colormap (light shades vanish on white); ``qosched`` is
    drawn thicker. Unknown policies take ``tab10`` colours in turn.
    """
    import matplotlib

    present: dict[str, list[str]] = {}
    for name in names:
        present.setdefault(_family_of(name)[2], []).append(name)
    styles: dict[str, PolicyStyle] = {}
    others = 0
    for name in names:
        _, _, family, cmap_name = _family_of(name)
        members = sorted(present[family], key=lambda n: _family_of(n)[1])
        k = members.index(name)
        if family == "other":
            color = matplotlib.colormaps["tab10"](others % 10)
            others += 1
        else:
            cmap = matplotlib.colormaps[cmap_name]
            shade = 0.7 if len(members) == 1 else 0.45 + 0.45 * k / (len(members) - 1)
            color = cmap(0.85 if family == "qosched" else shade)
        styles[name] = PolicyStyle(
            color=color,
            linestyle=_LINESTYLES[k % len(_LINESTYLES)],
            marker=_MARKERS[k % len(_MARKERS)],
            family=family,
            linewidth=2.2 if family == "qosched" else 1.3,
        )
    return styles


def display_order(names: Sequence[str]) -> list[str]:
    """Policies grouped by family (table order of :data:`FAMILIES`), stable otherwise."""
    return sorted(names, key=lambda n: _family_of(n)[:2])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> bytes:
    """Save as PNG (``bbox_inches="tight"`` keeps legends placed outside the axes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    _pyplot().close(fig)
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


# --------------------------------------------------------------------------------- allocation


@dataclass(frozen=True)
class Curve:
    """An allocation curve [fractions]; ``low``/``high``: a band (e.g. a 95 % CI over seeds)."""

    arrived: np.ndarray
    allocated: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def curves_from_results(results: Mapping[str, Any]) -> dict[str, Curve]:
    """The FGD curves of replays that requested GPUs (``ReplayResult.curve_*``)."""
    return {
        n: Curve(r.curve_arrived_frac, r.curve_allocated_frac)
        for n, r in results.items()
        if r.curve_arrived_frac.size and r.workload.capacity_gpu_milli and r.curve_arrived_frac[-1] > 0
    }


def _zoom_limits(curves: Mapping[str, Curve]) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y limits [%] of the zoom: x from 5 points before the median policy falls 2 points
    below the diagonal (placed = arrived) to the end; y spans every value of every line (and band) in
    that x range, so no line is cut."""
    end = max(100 * float(c.arrived[-1]) for c in curves.values())
    leaves = []
    for c in curves.values():
        off = np.flatnonzero(c.allocated < c.arrived - 0.02)
        leaves.append(100 * float(c.arrived[off[0]]) if off.size else 100 * float(c.arrived[-1]))
    x0 = max(0.0, float(np.median(leaves)) - 5.0)
    lo, hi = math.inf, -math.inf
    for c in curves.values():
        inside = 100 * c.arrived >= x0
        for arr in (c.allocated, c.low, c.high):
            if arr is not None and inside.any():
                lo, hi = min(lo, 100 * float(arr[inside].min())), max(hi, 100 * float(arr[inside].max()))
    pad = max(0.5, 0.05 * (hi - lo))
    return (x0, end + 0.01 * max(end - x0, 1.0)), (max(0.0, lo - pad), hi + pad)


def plot_allocation_curves(curves: Mapping[str, Curve], path: Path, *, band_label: str = "") -> bytes | None:
    """GPU allocation ratio [%] against arrived workload [%], one line per policy (FGD's curve).

    Two panels: the whole curve and a zoom on the part where the policies differ; the zoom's
    limits contain every line. The legend (beside the zoom) gives each policy's value at the
    curve's last point, i.e. **when the last pod arrived** — not at the horizon, where the
    summary table's figure is taken (after departures and retries they can differ).
    """
    if not curves:  # no GPU request arrived (e.g. inference on edge TPUs): nothing to draw
        return None
    plt = _pyplot()
    names = display_order(list(curves))
    styles = policy_styles(names)
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(12.0, 4.6), dpi=110)
    top = max(100 * float(c.arrived[-1]) for c in curves.values())
    for name in names:
        c, st = curves[name], styles[name]
        x, y = 100 * c.arrived, 100 * c.allocated
        for a in (ax, zoom):
            a.plot(x, y, color=st.color, linestyle=st.linestyle, linewidth=st.linewidth,
                   label=f"{name}: {y[-1]:.1f} %" if a is zoom else None)  # fmt: skip
            if c.low is not None and c.high is not None:
                a.fill_between(x, 100 * c.low, 100 * c.high, color=st.color, alpha=0.15, linewidth=0)
    for a in (ax, zoom):
        diag = min(top, 100.0)
        a.plot([0, diag], [0, diag], color="0.6", linestyle=":", linewidth=1,
               label="placed = arrived" if a is zoom else None)  # fmt: skip
        a.set_xlabel("arrived workload: GPU requested / capacity [%]")
        a.grid(True, alpha=0.3)
    ax.set_ylabel("GPU allocation ratio [%]")
    ax.set_title("Allocation ratio as the workload arrives", fontsize=10)
    (x0, x1), (y0, y1) = _zoom_limits(curves)
    zoom.set_xlim(x0, x1)
    zoom.set_ylim(y0, y1)
    zoom.set_title("zoom: where the policies differ (all lines shown)", fontsize=10)
    title = "at the end of arrivals" + (f" ({band_label})" if band_label else "")
    zoom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title=title,
                title_fontsize=7, frameon=False, ncol=1 if len(names) <= 12 else 2)  # fmt: skip
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------- services


def plot_services_slo(summary: Mapping[str, Any], path: Path) -> bytes | None:
    """Bars: services placed and services with no simulated SLO violation, per policy."""
    policies = summary["policies"]
    if not any(s["services_total"] for s in policies.values()):
        return None
    plt = _pyplot()
    names = display_order(list(policies))
    total = np.array([policies[n]["services_total"] for n in names])
    met = np.array([policies[n]["services_slo_met"] for n in names])
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(names) + 1.4), dpi=110)
    y = np.arange(len(names))
    ax.barh(y, total, color="0.85", label="services placed")
    ax.barh(y, met, color="tab:green", label="no simulated SLO violation")
    for yi, m, t in zip(y, met, total, strict=True):
        ax.text(t, yi, f" {m}/{t}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15 * max(int(total.max()), 1))  # room on the right for the labels
    ax.set_xlabel("inference services")
    ax.set_title("Services meeting their SLO (request-level simulation)", pad=24, fontsize=10)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- QoS


def _horizontal() -> dict[str, Any]:
    """Horizontal box plots: ``orientation`` since Matplotlib 3.10 (``vert`` is deprecated)."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


@dataclass(frozen=True)
class ClassQoS:
    """Delivered QoS of one class's pods under each policy (sorted arrays), and the class target."""

    name: str
    target: float
    by_policy: dict[str, np.ndarray]


def plot_qos_by_class(classes: Sequence[ClassQoS], path: Path) -> bytes | None:
    """Delivered QoS per class (one column per class), one box and one curve per policy.

    Top: box plots (quartiles, whiskers at 1.5 IQR, mean as a red diamond), the class target
    dashed, policy names on the axis. Bottom: the empirical CDF (fraction of the class's pods
    with QoS ≤ x), where the tails that the boxes hide — the pods far below target — show; its
    legend sits below the figure, clear of the low-QoS corner.
    """
    if not classes or not classes[0].by_policy:
        return None
    plt = _pyplot()
    names = display_order(list(classes[0].by_policy))
    styles = policy_styles(names)
    n = len(names)
    fig, axes = plt.subplots(2, len(classes), figsize=(3.4 * len(classes) + 1.2, 0.28 * n + 5.4), dpi=110,
                             squeeze=False, gridspec_kw={"height_ratios": [0.28 * n + 1.2, 3.0]})  # fmt: skip
    for col, cls in enumerate(classes):
        ax, cdf = axes[0][col], axes[1][col]
        data = [cls.by_policy[p] for p in names]
        ax.boxplot(data, widths=0.6, showfliers=False, **_horizontal())
        means = [float(d.mean()) if d.size else math.nan for d in data]
        ax.plot(means, np.arange(1, n + 1), "D", color="tab:red", markersize=3, label="mean")
        for a in (ax, cdf):
            a.axvline(cls.target, color="tab:blue", linestyle="--", linewidth=1, label="class target")
            a.set_xlim(-0.02, 1.02)
        ax.set_yticks(np.arange(1, n + 1), names if col == 0 else [""] * n, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"class {cls.name} (target {cls.target:g})", fontsize=9)
        if col == 0:
            ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.06), ncol=2, frameon=False)
        for name, d in zip(names, data, strict=True):
            st = styles[name]
            if d.size:
                cdf.step(np.r_[0.0, d], np.arange(d.size + 1) / d.size, where="post", color=st.color,
                         linestyle=st.linestyle, linewidth=st.linewidth, label=name)  # fmt: skip
        cdf.set_xlabel("delivered QoS")
        cdf.set_ylim(0, 1.01)
        cdf.grid(True, alpha=0.3)
        if col == 0:
            cdf.set_ylabel("fraction of pods with QoS ≤ x")
    handles, labels = axes[1][0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles[1:], labels[1:], loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7,
               ncol=min(n, 6), frameon=False, title="CDF lines", title_fontsize=7)  # fmt: skip
    return _save(fig, path)


# -------------------------------------------------------------------------------------- fairness


_FAIRNESS_PANELS: tuple[tuple[str, str, str], ...] = (
    ("gini_by_class", "Gini of delivered QoS (lower: fairer)", "{:.3f}"),
    ("penalty_by_class", "SLA penalty [USD]", "{:,.2f}"),
    ("below_target_by_class", "pods below class target", "{:,.0f}"),
)


def plot_fairness_by_class(
    summary: Mapping[str, Any], path: Path, order: list[str] | None = None
) -> bytes | None:
    """Small multiples: one row per metric (Gini, SLA penalty [USD], pods below target), one
    column per class, one horizontal bar per policy (names on the axis, value at the bar's end).

    Drawn only when some policy has a penalty or a pod below target (otherwise every bar is 0).
    ``order``: the classes in display order (default: alphabetical).
    """
    policies = summary["policies"]
    names = display_order(list(policies))
    present = {c for s in policies.values() for c in s.get("penalty_by_class", {})}
    classes = [c for c in order if c in present] if order else sorted(present)
    if not names or not classes:
        return None
    keys = ("penalty_by_class", "below_target_by_class")
    if not any(v > 0 for s in policies.values() for key in keys for v in s.get(key, {}).values()):
        return None
    plt = _pyplot()
    styles = policy_styles(names)
    n = len(names)
    rows = len(_FAIRNESS_PANELS)
    fig, axes = plt.subplots(rows, len(classes), figsize=(3.6 * len(classes) + 1.4, rows * (0.2 * n + 1.0)),
                             dpi=110, squeeze=False)  # fmt: skip
    y = np.arange(n)
    colors = [styles[p].color for p in names]
    for r, (key, title, fmt) in enumerate(_FAIRNESS_PANELS):
        for col, cls in enumerate(classes):
            ax = axes[r][col]
            values = np.array([float(policies[p].get(key, {}).get(cls, 0) or 0) for p in names])
            ax.barh(y, values, color=colors, height=0.7)
            top = float(values.max()) if values.size else 0.0
            for yi, v in zip(y, values, strict=True):
                ax.text(v + 0.01 * max(top, 1e-9), yi, fmt.format(v), va="center", fontsize=6)
            ax.set_xlim(0, 1.3 * top if top > 0 else 1.0)
            ax.set_yticks(y, names if col == 0 else [""] * n, fontsize=7)
            ax.invert_yaxis()
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(f"{title} — {cls}", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------- latency


def plot_latency_model(points: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> bytes | None:
    """Scatter: analytic vs simulated latency [ms] of every checkpointed service (log-log), per
    policy (``points[name] = (simulated_ms, analytic_ms)``); legend beside the axes."""
    if not points:
        return None
    plt = _pyplot()
    names = display_order(list(points))
    styles = policy_styles(names)
    fig, ax = plt.subplots(figsize=(6.0, 5.0), dpi=110)
    lo, hi = math.inf, 0.0
    for name in names:
        sim, ana = points[name]
        st = styles[name]
        ax.scatter(sim, ana, s=9, alpha=0.6, color=st.color, marker=st.marker, label=name)
        lo, hi = min(lo, float(sim.min()), float(ana.min())), max(hi, float(sim.max()), float(ana.max()))
    ax.plot([lo, hi], [lo, hi], color="0.4", linestyle=":", linewidth=1, label="prediction = simulation")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated latency [ms]")
    ax.set_ylabel("analytic prediction [ms]")
    ax.set_title("Latency models vs request-level simulation", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, path)
