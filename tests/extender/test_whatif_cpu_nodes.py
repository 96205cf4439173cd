"""Issue 18 on the shipped edge cluster: services on its two CPU nodes are judged alike by the
analytic model and the request simulation (they used to be saturated in the simulation only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import main

EDGE = Path(__file__).resolve().parents[2] / "extender" / "demo" / "edge-cluster.yaml"


@pytest.mark.slow
def test_cpu_node_checkpoints_agree_on_the_edge_cluster(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["whatif", "--cluster", str(EDGE), "--rate-scale", "0.25", "--quiet", "--out", str(out)]
    result = CliRunner().invoke(
        main, [*args, "--policies", "knapsack-worst-fit,qosched,ibis-spread"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    for name, policy in summary["policies"].items():
        cpu = policy["latency_model"]["by_mode"]["cpu"]
        assert cpu["service_observations"] >= 10, name
        assert cpu["simulated_saturated"] == 0, name  # was every one of them
        assert cpu["disagree"] == 0, (name, cpu)  # measured: 0 of 78, 16 and 23
        assert cpu["analytic_met"] == cpu["simulated_met"] == cpu["service_observations"], name
