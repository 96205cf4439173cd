"""Using the what-if with other tools and with bad input (issue 16): every surprise gets a line.

A pod whose model no profile covers, a Deployment in a snapshot, a huge --inflate, a reused
--out, progress without a terminal, and Ctrl-C in the middle of a run.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from qosched.extender.cli import whatif_run
from qosched.extender.cli.main import main
from qosched.extender.cli.whatif_run import (
    LARGE_OUTPUT_BYTES,
    RunProgress,
    clear_stale_outputs,
    ignored_objects,
    input_warnings,
)

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "extender" / "demo" / "edge-cluster.yaml"


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, ["whatif", *args], catch_exceptions=False)


def _edge(
    tmp_path: Path, *, pods: int = 12, extra: list[dict[str, Any]] | None = None, model: str = ""
) -> Path:
    doc = yaml.safe_load(EDGE.read_text())
    nodes = [i for i in doc["items"] if i["kind"] == "Node"]
    items = [i for i in doc["items"] if i["kind"] == "Pod"][:pods]
    if model:
        items[0]["metadata"]["annotations"]["qosched.io/model"] = model
    doc["items"] = nodes + items + (extra or [])
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_pod_without_profile_gets_a_reason_and_a_warning(tmp_path: Path) -> None:
    snap = _edge(tmp_path, model="no_such_model")
    result = _run(
        "--cluster", str(snap), "--policies", "ibis-spread", "--out", str(tmp_path / "o"), "--quiet"
    )
    assert result.exit_code == 0, result.output
    assert "no profile covers" in result.output
    assert "no_such_model (1 pod)" in result.output
    with (tmp_path / "o" / "ibis-spread.csv").open() as handle:
        rows = {r["model"]: r for r in csv.DictReader(handle)}
    assert rows["no_such_model"]["status"] == "pending"
    assert rows["no_such_model"]["reason"].startswith("no profile for model no_such_model")
    assert "Run cut short" not in (tmp_path / "o" / "report.html").read_text()
    assert "no profile covers" in (tmp_path / "o" / "report.html").read_text()


def test_deployment_in_a_snapshot_is_named(tmp_path: Path) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    snap = _edge(tmp_path, pods=4, extra=[deployment])
    assert ignored_objects(snap) == {"Deployment": 1}
    result = _run("--cluster", str(snap), "--policies", "random", "--out", str(tmp_path / "o"), "--quiet")
    assert result.exit_code == 0, result.output
    assert "ignored 1 Deployment" in result.output
    assert "Nodes and Pods only" in result.output
    assert "ignored 1 Deployment" in (tmp_path / "o" / "report.html").read_text()


@pytest.mark.parametrize(
    ("pods", "policies", "warned"),
    [(10_825, 14, False), (8_000_000, 1, True), (500_000, 17, True)],
    ids=["fgd-protocol", "inflate-1000", "many-policies"],
)
def test_large_output_is_announced(pods: int, policies: int, warned: bool) -> None:
    fake = type("W", (), {"__len__": lambda self: pods, "nodes": [], "pods": []})()
    lines = input_warnings(fake, policies, None)
    assert bool(lines) == warned
    if warned:
        assert "MiB" in lines[0]
        assert pods * policies * whatif_run.CSV_ROW_BYTES > LARGE_OUTPUT_BYTES


def test_reused_out_loses_the_earlier_runs_files(tmp_path: Path) -> None:
    out = tmp_path / "o"
    snap = _edge(tmp_path, pods=6)
    assert (
        _run("--cluster", str(snap), "--policies", "random,best-fit", "--out", str(out), "--quiet").exit_code
        == 0
    )
    (out / "notes.csv").write_text("mine,not,a,what-if\n")
    result = _run("--cluster", str(snap), "--policies", "random", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert "removed" in result.output
    assert "best-fit.csv" in result.output
    assert not (out / "best-fit.csv").exists()
    assert (out / "random.csv").exists()
    assert (out / "notes.csv").exists()  # not a what-if output: left alone
    assert list(json.loads((out / "summary.json").read_text())["policies"]) == ["random"]


def test_clear_stale_outputs_touches_only_whatif_files(tmp_path: Path) -> None:
    header = "pod,namespace,class,status,node\n"
    (tmp_path / "old.csv").write_text(header)
    (tmp_path / "keep.csv").write_text(header)
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "report.html").write_text("x")
    removed = clear_stale_outputs(tmp_path, ["keep"])
    assert removed == ["old.csv"]  # keep.csv and report.html are written again by this run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_progress_without_a_terminal_prints_a_line_every_interval() -> None:
    stream = io.StringIO()
    with RunProgress(3, stream=stream, tty=False, every_s=0.05) as progress:
        progress.start_policy("qos-driven")
        progress.advance(0.5)
        time.sleep(0.3)  # a long retry round: no callback, the timer still prints
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("whatif: policy 1 of 3 (qos-driven)")
    assert "50 % of its work" in lines[-1]
    assert "run 17 %" in lines[-1]
    assert "ETA" in lines[-1]


def test_progress_counts_simulated_time_not_arrivals() -> None:
    progress = RunProgress(1, stream=io.StringIO(), tty=False)
    workload = SimpleNamespace(arrival_s=[0.0, 1.0, 2.0, 3.0])
    on_time, on_arrivals = whatif_run._work_meter(workload, 100.0, 1.0, progress)
    on_arrivals(4, 4)  # every pod arrived by t = 3 s of a 100 s horizon
    assert progress.fraction == pytest.approx(0.03)
    on_time(60.0)  # a retry round at t = 60 s
    assert progress.fraction == pytest.approx(0.6)


def test_ctrl_c_keeps_finished_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = whatif_run._replay_one
    calls: list[str] = []

    def interrupted(name: str, *args: Any) -> Any:
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(name, *args)

    monkeypatch.setattr(whatif_run, "_replay_one", interrupted)
    out = tmp_path / "o"
    snap = _edge(tmp_path, pods=6)
    result = _run("--cluster", str(snap), "--policies", "random,best-fit,fgd", "--out", str(out), "--quiet")
    assert result.exit_code == 130
    assert "cut short" in result.output
    assert "1 of 3 policies finished" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["policies"]) == ["random"]
    assert summary["run"] == {"interrupted": True, "finished": ["random"], "missing": ["best-fit", "fgd"]}
    assert "Run cut short (Ctrl-C): 1 of 3 policies finished" in (out / "report.html").read_text()
    assert (out / "random.csv").exists()
    assert not (out / "best-fit.csv").exists()
