"""``qosched whatif --requests``: the shipped end-edge-cloud scenario (a slice), outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "extender" / "demo" / "edge-cloud"
KEYS = {
    "total",
    "served",
    "mean_response_ms",
    "p95_response_ms",
    "slo_attainment",
    "mean_accuracy",
    "accuracy_loss",
}
ALL = "online,always-end,always-edge,always-cloud,best-static,greedy"


def _run(*args: str) -> object:
    return CliRunner().invoke(main, ["whatif", *args], catch_exceptions=False)


@pytest.fixture
def slice_csv(tmp_path: Path) -> Path:
    """The first 40 s of the shipped requests (about 2,500 requests)."""
    lines = (DEMO / "requests.csv").read_text().splitlines()
    kept = [lines[0], *(ln for ln in lines[1:] if float(ln.split(",")[0]) < 40.0)]
    path = tmp_path / "requests.csv"
    path.write_text("\n".join(kept) + "\n")
    return path


@pytest.mark.slow
def test_shipped_scenario_slice_writes_summary_plots_and_report(tmp_path: Path, slice_csv: Path) -> None:
    out = tmp_path / "out"
    network = tmp_path / "network.csv"
    network.write_text("time_s,tier,rtt_ms,bandwidth_mbps\n0,edge,10,100\n20,edge,60,12\n")
    res = _run(
        "--cluster", str(DEMO / "cluster.yaml"), "--requests", str(slice_csv), "--network", str(network),
        "--policies", ALL, "--out", str(out), "--quiet",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["policies"]) == ALL.split(",")
    total = summary["workload"]["requests"]
    for name, entry in summary["policies"].items():
        r = entry["requests"]
        assert set(r) == KEYS, name
        assert r["total"] == total
        assert 0.0 <= r["slo_attainment"] <= 1.0
        assert r["accuracy_loss"] >= 0.0
        assert (out / f"requests-{name}.csv").is_file()
    # always-<tier> serves the most accurate allowed variant: no accuracy loss
    for tier in ("end", "edge", "cloud"):
        assert summary["policies"][f"always-{tier}"]["requests"]["accuracy_loss"] == 0.0
    assert summary["policies"]["online"]["stats"]["decisions"] == total
    assert summary["speedup"]["learner"] == "online"
    for png in ("response_over_time.png", "regret_over_time.png", "actions_per_tier.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time_s,service\n1,classify\nx,classify\n", "requests.csv:3: column time_s"),
        ("time_s,service\n1,unknown-service\n", "unknown-service are not defined by any pod"),
        ("when,what\n1,a\n", "missing column(s) time_s, service"),
    ],
    ids=["bad-number", "unknown-service", "header"],
)
def test_bad_requests_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "requests.csv"
    path.write_text(content)
    res = _run("--cluster", str(DEMO / "cluster.yaml"), "--requests", str(path), "--out", str(tmp_path / "o"))
    assert res.exit_code == 1
    assert message in res.output
    assert not (tmp_path / "o" / "summary.json").exists()


def test_bad_network_file(tmp_path: Path, slice_csv: Path) -> None:
    net = tmp_path / "network.csv"
    net.write_text("time_s,tier,rtt_ms,bandwidth_mbps\n0,edge,10,-1\n")
    res = _run(
        "--cluster",
        str(DEMO / "cluster.yaml"),
        "--requests",
        str(slice_csv),
        "--network",
        str(net),
        "--out",
        str(tmp_path / "o"),
    )
    assert res.exit_code == 1
    assert "network.csv:2: column bandwidth_mbps" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "n.csv"], "--network and --window-s apply with --requests"),
        (["--requests", "r.csv", "--nodes", "n.csv", "--pods", "p.csv"], "--requests needs --cluster"),
        (
            ["--requests", "r.csv", "--cluster", str(DEMO / "cluster.yaml"), "--policies", "nope"],
            "unknown request policy nope",
        ),
    ],
    ids=["network-alone", "trace", "unknown-policy"],
)
def test_option_errors(tmp_path: Path, args: list[str], message: str) -> None:
    res = _run(*args, "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert message in res.output
