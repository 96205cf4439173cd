"""Plots and the HTML report section of the request-level what-if (matplotlib ``Agg``).

* ``response_over_time.png`` — mean response time per 5 s window, one line per policy, the SLO of
  each service dashed, the network changes shaded (the instants of NETWORK.csv);
* ``regret_over_time.png`` — cumulative regret against ``best-static`` (when it ran) per request;
* ``actions_per_tier.png`` — share of each window's requests served on end / edge / cloud, one
  panel per policy that chooses per request (``online``, ``greedy`` and any registered other),
  and ``best-static`` for reference;
* ``report.html`` — the table and the three plots, self-contained (plots inlined as base64).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report"]

TIER_COLOURS = {"end": "#4c72b0", "edge": "#55a868", "cloud": "#c44e52"}
FIXED = ("always-end", "always-edge", "always-cloud")
WINDOW_S = 5.0


def _shade_network(ax: Any, network: Any, t_end: float) -> None:
    for tier, times in network.times_s.items():
        links = network.links[tier]
        base = links[0].bandwidth_mbps
        for i, (t, link) in enumerate(zip(times, links, strict=True)):
            if link.bandwidth_mbps < 0.5 * base:
                stop = times[i + 1] if i + 1 < len(times) else t_end
                ax.axvspan(t, stop, color=TIER_COLOURS.get(tier, "grey"), alpha=0.08, lw=0)
                if stop - t < 0.08 * t_end:  # label only the long spells (no clutter)
                    continue
                ax.text(
                    t,
                    1.0,
                    f"{tier} link\n{link.bandwidth_mbps:.0f} Mbit/s",
                    transform=ax.get_xaxis_transform(),
                    fontsize=7,
                    va="top",
                    color=TIER_COLOURS.get(tier, "grey"),
                )


def plot_response(path: Path, records: Mapping[str, Any], scenario: Any, network: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qosched.policies.requests.evaluate import windowed_mean

    fig, ax = plt.subplots(figsize=(10, 4.5))
    t_end = 0.0
    for name, rec in records.items():
        x, y = windowed_mean(rec.time_s, np.where(rec.served, rec.response_ms, np.nan), WINDOW_S)
        t_end = max(t_end, float(rec.time_s[-1]))
        ax.plot(x, y, label=name, lw=2.2 if name == "online" else 1.2, zorder=3 if name == "online" else 2)
    for s in scenario.services.values():
        ax.axhline(s.slo_ms, ls="--", lw=0.8, color="grey")
        ax.text(t_end, s.slo_ms, f" SLO {s.name}", fontsize=7, va="bottom", ha="right", color="grey")
    _shade_network(ax, network, t_end)
    ax.set_yscale("log")
    ax.set_xlabel("time [s]")
    ax.set_ylabel(f"mean response per {WINDOW_S:g} s [ms] (log)")
    ax.set_title("Response time over time (transfer + queueing + service)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_regret(path: Path, records: Mapping[str, Any]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qosched.policies.requests.evaluate import regret_series

    ref = records.get("best-static")
    if ref is None:
        return False
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, rec in records.items():
        if name == "best-static":
            continue
        ax.plot(rec.time_s, regret_series(rec, ref), label=name, lw=2.2 if name == "online" else 1.2)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_yscale("symlog", linthresh=100.0)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("cumulative regret vs best-static [reward units, symlog]")
    ax.set_title(
        "Regret over time (negative: better than the best fixed (tier, variant) per service in hindsight)"
    )
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_actions(path: Path, records: Mapping[str, Any], scenario: Any, network: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qosched.policies.requests.evaluate import tier_share_series

    shown = [n for n in records if n not in FIXED] or list(records)
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 1.9 * len(shown) + 0.6), sharex=True, squeeze=False)
    tiers = scenario.tiers
    for ax, name in zip(axes[:, 0], shown, strict=True):
        rec = records[name]
        x, shares = tier_share_series(rec, tiers, WINDOW_S)
        ax.stackplot(
            x,
            *(np.nan_to_num(shares[t]) for t in tiers),
            labels=tiers,
            colors=[TIER_COLOURS.get(t, "grey") for t in tiers],
            alpha=0.85,
        )
        variants = sorted({v for v in rec.variant if v})
        share_text = ", ".join(f"{v} {np.mean(np.asarray(rec.variant) == v):.0%}" for v in variants)
        ax.set_ylim(0, 1)
        ax.set_ylabel(name, fontsize=8)
        ax.text(
            0.01,
            0.06,
            share_text,
            transform=ax.transAxes,
            fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
        )
        _shade_network(ax, network, float(rec.time_s[-1]))
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="tier")
    axes[0, 0].set_title("Share of each 5 s window's requests served per tier (variants: whole run)")
    axes[-1, 0].set_xlabel("time [s]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def write_report(
    out: Path, summary: Mapping[str, Any], records: Mapping[str, Any], scenario: Any, network: Any
) -> None:
    """Write the three PNGs and ``report.html`` into ``out``."""
    from qosched.extender.cli.whatif_requests import report_rows

    plot_response(out / "response_over_time.png", records, scenario, network)
    has_regret = plot_regret(out / "regret_over_time.png", records)
    plot_actions(out / "actions_per_tier.png", records, scenario, network)
    head = (
        "policy",
        "served",
        "mean response [ms]",
        "p95 [ms]",
        "SLO attainment",
        "mean accuracy",
        "accuracy loss [pts]",
    )
    table = (
        "<tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + "".join(
            "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
            for row in report_rows(summary["policies"])
        )
    )
    sp = summary.get("speedup") or {}
    notes = []
    for key, label in (
        ("best_baseline", "best baseline"),
        ("best_baseline_within_0.9_points", "best baseline within 0.9 accuracy points"),
    ):
        b = sp.get(key)
        if b:
            notes.append(
                f"<li>online vs {label} ({html.escape(b['baseline'])}, {b['baseline_mean_response_ms']:.1f} ms): "
                f"{100 * b['speedup']:.1f} % faster, accuracy loss difference {b['accuracy_loss_difference']:+.2f} points</li>"
            )
    parts = [
        "<!doctype html><meta charset='utf-8'><title>qosched request-level what-if</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}</style>",
        "<h1>Request-level what-if (end / edge / cloud)</h1>",
        f"<p>{summary['workload']['requests']} requests over {summary['workload']['horizon_s']:.0f} s; "
        f"cluster {html.escape(str(summary['workload']['cluster']))}; seed {summary['workload']['seed']}.</p>",
        f"<table>{table}</table><ul>{''.join(notes)}</ul>",
        "<h2>Response time over time</h2>",
        _img(out / "response_over_time.png"),
    ]
    if has_regret:
        parts += ["<h2>Regret against best-static</h2>", _img(out / "regret_over_time.png")]
    parts += ["<h2>Actions per tier over time</h2>", _img(out / "actions_per_tier.png")]
    (out / "report.html").write_text("\n".join(parts))
