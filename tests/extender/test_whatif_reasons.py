"""The what-if's reason column says why a pod is pending with numbers (issue 16).

A pod that no node fits gets, after ``no node fits (N failed attempts)``, what the policy sees
at the horizon: per reason code, how many nodes and the numbers of the node closest to fitting
(``policies/placement/explain.py``), for each policy of the run.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import main
from tests.extender.extender_support import node, pod, write_snapshot


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {r["pod"]: r for r in csv.DictReader(handle)}


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    # Two T4 nodes with 2 and 3 CPUs; "big" asks 4 CPUs (fits nowhere, the 3-CPU node is the
    # closest), "fast" asks a 2 ms SLO of resnet50 (3.0 ms on a T4: the SLO fails everywhere).
    objects: list[dict[str, Any]] = [node("small", cpu="2"), node("medium", cpu="3")]
    objects += [
        pod("big", cpu="4", slo_ms=1000, rate_rps=1),
        pod("fast", cpu="100m", slo_ms=2, rate_rps=1),
    ]
    return write_snapshot(tmp_path / "snap.json", objects)


@pytest.mark.slow  # ~5 s: two policies replayed through the CLI
def test_pending_reasons_carry_numbers(snapshot: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main,
        ["whatif", "--cluster", str(snapshot), "--policies", "qosched,default", "--out", str(out), "--quiet"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    # default is blind to latency: it places "fast" (100m) on medium, which then has 2900m free.
    for policy, free in (("qosched", "3000m"), ("default", "2900m")):
        big = _rows(out / f"{policy}.csv")["big"]
        assert big["status"] == "pending"
        assert big["reason"].startswith("no node fits (")
        assert big["reason"].endswith(
            "; at the horizon: 2 node(s): not enough free CPU"
            f" (closest: medium: needs 4000m CPU, has {free} free)"
        ), big["reason"]
    fast = _rows(out / "qosched.csv")["fast"]
    assert fast["status"] == "pending"
    # Alone on a device at 1 rps: W = 0.001 × E[S²] / (2 (1 − ρ)), well under 0.1 ms.
    assert fast["reason"].endswith(
        "; at the horizon: 2 node(s): predicted latency of this pod would exceed its SLO"
        " (e.g. small: device 0: predicted latency 3.0 ms > SLO 2.0 ms)"
    ), fast["reason"]
    assert _rows(out / "default.csv")["fast"]["node"] == "medium"


def test_the_report_lists_why_pods_are_pending(snapshot: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main, ["whatif", "--cluster", str(snapshot), "--policies", "qosched", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "Why pods are pending at the horizon" in html
    # The attempts count is left out so that identical reasons add up; the numbers stay.
    assert (
        "1 pod(s): no node fits; at the horizon: 2 node(s): not enough free CPU"
        " (closest: medium: needs 4000m CPU, has 3000m free)"
    ) in html
