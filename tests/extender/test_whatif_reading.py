"""Reading the what-if's results (issue 16): ranking by the run's objective, the report's
template, the terminal tables at 100 columns, plots that scale to 17 policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from qosched.extender.cli.whatif_console import TABLE_WIDTH, print_summary
from qosched.extender.cli.whatif_plots import (
    FAMILIES,
    Curve,
    _zoom_limits,
    plot_allocation_curves,
    plot_fairness_by_class,
    policy_styles,
)
from qosched.extender.cli.whatif_ranking import objective_of, rank_policies
from qosched.extender.cli.whatif_report import Row, Section, Table, render_report, summary_table

ALL_POLICIES = [name for _, _, members in FAMILIES for name in members]


def _entry(**over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "pods_total": 100,
        "pods_scheduled": 90,
        "pods_failed": 10,
        "gpu_allocation_ratio": 0.5,
        "services_total": 0,
        "services_slo_met": 0,
        "mean_qos_by_class": {"prod": 0.9, "batch": 0.8},
        "gini_by_class": {"prod": 0.1, "batch": 0.2},
        "penalty": 10.0,
        "runtime_s": 1.0,
        "pods_running_end": 80,
        "pods_completed": 10,
        "pods_pending_end": 10,
        "preemptions": 0,
        "allocation_curve": {"arrived": [0.0, 1.0], "allocated": [0.0, 0.9]},
        "horizon_s": 100.0,
    }
    entry.update(over)
    return entry


# ------------------------------------------------------------------------------------ ranking

# The cases: on the demo every policy but qosched had the highest allocation while
# meeting fewer SLOs; under contention qos-driven had the highest allocation and a 321 USD
# penalty against qosched's 5.3 USD.
CASES = [
    pytest.param(
        {"mode": "snapshot"},
        {
            "knapsack-first-fit": _entry(gpu_allocation_ratio=0.9, services_total=15, services_slo_met=0),
            "qosched": _entry(gpu_allocation_ratio=0.6, services_total=15, services_slo_met=14),
        },
        "services",
        "qosched",
        id="services-slo-beats-allocation",
    ),
    pytest.param(
        {"mode": "fgd-inflation-with-departures"},
        {
            "qos-driven": _entry(gpu_allocation_ratio=0.3696, penalty=321.0),
            "qosched": _entry(gpu_allocation_ratio=0.33, penalty=5.3),
        },
        "qos",
        "qosched",
        id="contention-penalty-beats-allocation",
    ),
    pytest.param(
        {"mode": "fgd-inflation"},
        {
            "random": _entry(gpu_allocation_ratio=0.876, penalty=1.0),
            "fgd": _entry(gpu_allocation_ratio=0.942),
        },
        "allocation",
        "fgd",
        id="fgd-mode-allocation",
    ),
]


@pytest.mark.parametrize(("workload", "policies", "objective", "best"), CASES)
def test_rank_one_is_best_on_the_runs_own_objective(
    workload: dict[str, Any], policies: dict[str, Any], objective: str, best: str
) -> None:
    summary = {"workload": workload, "policies": policies}
    obj = objective_of(summary, ["prod", "batch"])
    assert obj.name == objective
    ranks = rank_policies(summary, obj)
    assert [n for n, r in ranks.items() if r == 1] == [best]
    table = summary_table(summary, obj)
    highlighted = [row.cells[0] for row in table.rows if row.css == "best"]
    assert highlighted == [best]


def test_ties_share_rank_and_both_are_highlighted() -> None:
    summary = {
        "workload": {"mode": "fgd-inflation"},
        "policies": {
            "fgd": _entry(gpu_allocation_ratio=0.94),
            "qosched": _entry(gpu_allocation_ratio=0.94),
            "random": _entry(gpu_allocation_ratio=0.88),
        },
    }
    obj = objective_of(summary)
    assert rank_policies(summary, obj) == {"fgd": 1, "qosched": 1, "random": 3}
    assert sum(row.css == "best" for row in summary_table(summary, obj).rows) == 2


def test_summary_table_columns_say_what_happened_to_the_pods() -> None:
    summary = {"workload": {"mode": "fgd-inflation"}, "policies": {"qos-driven": _entry()}}
    header = summary_table(summary, objective_of(summary)).header
    for column in ("scheduled", "running at end", "pending at end", "preemptions"):
        assert column in header
    assert "failed" not in header
    assert "GPU alloc. at horizon" in header
    assert "GPU alloc. at end of arrivals" in header


# ----------------------------------------------------------------------------------- template


def test_report_template_escapes_every_value() -> None:
    evil = '<script>alert("x")</script>'
    section = Section(evil, notes=[evil], tables=[Table([evil, "b"], [Row([evil, "1 < 2 & 3"])])])
    html = render_report([section], warnings=[evil])
    assert "<script>" not in html
    assert html.count("&lt;script&gt;") == 5  # title, note, header, cell, warning
    assert "1 &lt; 2 &amp; 3" in html


# ------------------------------------------------------------------------------------ console


def _many(n: int) -> dict[str, Any]:
    names = ALL_POLICIES[:n]
    big = {
        "pods_total": 10_825,
        "pods_scheduled": 10_787,
        "pods_running_end": 8_504,
        "pods_pending_end": 2_283,
        "preemptions": 5_386,
        "penalty": 1060.123456,
        "services_total": 1000,
        "services_slo_met": 999,
        "mean_qos_by_class": {"prod": 0.99, "batch": 9.59e-05, "free": 0.5},
        "gini_by_class": {"prod": 0.01, "batch": 0.5, "free": 0.4},
        "runtime_s": 1234.5,
    }
    return {"workload": {"mode": "fgd-inflation"}, "policies": {p: _entry(**big) for p in names}}


@pytest.mark.parametrize("n", [3, 8, 17])
@pytest.mark.parametrize("width", [80, 100])
def test_terminal_tables_fit_without_truncation(n: int, width: int) -> None:
    console = Console(width=width, record=True, force_terminal=False)
    print_summary(_many(n), ["prod", "batch", "free"], console=console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= min(width, TABLE_WIDTH)
    assert "…" not in text
    assert "e+" not in text
    assert "e-" not in text
    assert "1,060.12" in text  # one format per column: USD with two decimals
    assert "0.000" in text  # QoS with three decimals, not 9.59e-05


# -------------------------------------------------------------------------------------- plots


def test_policy_styles_tell_17_policies_apart() -> None:
    styles = policy_styles(ALL_POLICIES)
    pairs = {(tuple(np.round(s.color, 3)), str(s.linestyle)) for s in styles.values()}
    assert len(pairs) == len(ALL_POLICIES)
    assert styles["qosched"].linewidth > styles["fgd"].linewidth


@pytest.mark.parametrize("top", [0.953, 0.99, 1.0])
def test_allocation_zoom_shows_every_line(top: float) -> None:
    x = np.linspace(0, 1.3, 131)
    curves = {
        f"p{k}": Curve(x, np.minimum(x, 0.80 + (top - 0.80) * k / 16)) for k in range(17)
    }  # 17 plateaus from 80 % to `top`
    (x0, x1), (y0, y1) = _zoom_limits(curves)
    for c in curves.values():
        inside = (100 * c.arrived >= x0) & (100 * c.arrived <= x1)
        values = 100 * c.allocated[inside]
        assert values.min() >= y0
        assert values.max() <= y1


@pytest.mark.parametrize("n", [3, 8, 17])
def test_plots_render_at_3_8_17_policies(tmp_path: Path, n: int) -> None:
    x = np.linspace(0, 1.3, 131)
    names = ALL_POLICIES[:n] if n < 17 else ALL_POLICIES
    curves = {p: Curve(x, np.minimum(x, 0.85 + 0.1 * k / n)) for k, p in enumerate(names)}
    assert plot_allocation_curves(curves, tmp_path / "curve.png")
    summary = {
        "policies": {
            p: _entry(
                penalty_by_class={"prod": 1.0 + k, "batch": 2.0},
                below_target_by_class={"prod": k, "batch": 1},
                gini_by_class={"prod": 0.1, "batch": 0.2},
            )
            for k, p in enumerate(names)
        }
    }
    assert plot_fairness_by_class(summary, tmp_path / "fair.png", ["prod", "batch"])
    assert (tmp_path / "fair.png").stat().st_size > 10_000
