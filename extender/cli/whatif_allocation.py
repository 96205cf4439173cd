"""The allocation policies (``infida``, ``greedy-allocation``, ``static-allocation``) in ``qosched whatif --requests``.

Two jobs for the request-level what-if (``extender/cli/whatif_requests.py``):

* :func:`allocation_options` — what the policies need besides the scenario: the memory of one
  device of each accelerator (``device_memory_mib``, from the profiles), the horizon of the trace
  (INFIDA's step size is the regret theorem's for ``T = horizon / window`` windows) and ``R``, per
  service the largest number of its requests in one window of the trace (the gradient bound;
  docs/infida.md);
* :func:`pop_allocation_series` / :func:`write_allocation_outputs` — the per-window series of
  each allocation policy leave ``summary.json`` (which keeps the contract's ``allocation``
  object) for ``allocation_series.json`` and two plots:

  - ``allocation_gain.png`` — modelled gain (cost saved against the repository, ms) per window,
    one line per policy, and its running total;
  - ``allocation_over_time.png`` — per policy, the number of loaded copies of each service's
    models over the windows (INFIDA: also its fractional allocation), services sorted by total
    requests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["allocation_options", "pop_allocation_series", "write_allocation_outputs"]

DEFAULT_WINDOW_S = 10.0


def allocation_options(
    time_s: np.ndarray,
    services: Sequence[str],
    window_s: float | None,
    device_memory_mib: Callable[[str], float],
) -> dict[str, Any]:
    """Options for the allocation policies' factories (see the module docstring)."""
    window = float(window_s or DEFAULT_WINDOW_S)
    t = np.asarray(time_s, dtype=float)
    start = float(t[0]) if t.size else 0.0
    horizon = float(t[-1] - start) if t.size else window
    bins = ((t - start) // window).astype(np.int64)
    peak: dict[str, float] = {}
    for name in sorted(set(services)):
        mine = bins[np.asarray([s == name for s in services], dtype=bool)]
        peak[name] = float(np.bincount(mine).max()) if mine.size else 0.0
    return {
        "device_memory_mib": device_memory_mib,
        "horizon_s": max(horizon, window),
        "max_requests_per_window": peak,
    }


def pop_allocation_series(policies: dict[str, Any]) -> dict[str, Any]:
    """Take every policy's ``allocation_series`` out of the summary's policies."""
    return {name: p.pop("allocation_series") for name, p in policies.items() if "allocation_series" in p}


def write_allocation_outputs(out: Path, series: Mapping[str, Any]) -> list[str]:
    """``allocation_series.json`` and the two plots; returns the files written (none without series)."""
    if not series:
        return []
    (out / "allocation_series.json").write_text(json.dumps(series, allow_nan=False))
    plot_gain(out / "allocation_gain.png", series)
    plot_allocation(out / "allocation_over_time.png", series)
    return ["allocation_series.json", "allocation_gain.png", "allocation_over_time.png"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gain(path: Path, series: Mapping[str, Any]) -> None:
    plt = _pyplot()
    fig, (ax, ax_total) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, s in series.items():
        start = np.asarray(s["start_s"], dtype=float)
        gain_s = np.asarray(s["gain_ms"], dtype=float) / 1000.0
        ax.plot(start, gain_s, label=name, lw=1.2)
        ax_total.plot(start, np.cumsum(gain_s), label=name, lw=1.2)
    ax.set_xlabel("window start [s]")
    ax.set_ylabel("gain per window [s saved vs. repository]")
    ax.set_title("Served gain per allocation window")
    ax_total.set_xlabel("window start [s]")
    ax_total.set_ylabel("cumulative gain [s]")
    ax_total.set_title("Cumulative served gain")
    for a in (ax, ax_total):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _order(s: Mapping[str, Any]) -> np.ndarray:
    requests = np.asarray(s["requests"], dtype=float)
    return np.argsort(-requests.sum(axis=0), kind="stable")


def plot_allocation(path: Path, series: Mapping[str, Any]) -> None:
    plt = _pyplot()
    panels = [(name, "loaded") for name in series]
    panels += [(name, "fractional") for name in series if name == "infida"]
    panels.append((next(iter(series)), "requests"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.4 * len(panels) + 0.6), squeeze=False)
    for ax, (name, key) in zip(axes[:, 0], panels, strict=True):
        s = series[name]
        order = _order(s)
        data = np.asarray(s[key], dtype=float)[:, order].T
        start = np.asarray(s["start_s"], dtype=float)
        width = float(start[1] - start[0]) if len(start) > 1 else 1.0
        extent = (float(start[0]), float(start[-1] + width), len(order) - 0.5, -0.5)
        im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap="viridis", extent=extent)
        title = {
            "loaded": f"{name}: loaded copies per service (integral allocation)",
            "fractional": f"{name}: fractional allocation Σ y per service",
            "requests": "requests per service and window",
        }[key]
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("service (by popularity)", fontsize=8)
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("time [s]")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
