"""``qosched whatif sweep`` (issue 16): the grid, aggregation over seeds, resumability,
determinism per cell, and the executors — a local process pool and a real Dask cluster
(a ``dask scheduler`` and two ``dask worker`` processes started here on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from qosched.extender.cli.main import main
from qosched.extender.cli.whatif_sweep import (
    Cell,
    _seeds,
    aggregate,
    grid,
    mean_ci,
    print_sweep_tables,
)

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "extender" / "demo" / "edge-cluster.yaml"
WORKLOAD = f"edge=--cluster {EDGE} --max-pods 16"
POLICIES = "random,ibis-spread"


def _sweep(out: Path, *extra: str) -> Any:
    args = ["whatif", "sweep", "--workload", WORKLOAD, "--param", "rate-scale=0.25,1.0", "--seeds", "0-1"]
    args += ["--policies", POLICIES, "--out", str(out), "--quiet", *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _cells(out: Path) -> dict[str, dict[str, Any]]:
    """Every cell's summary entry without its wall time, by its folder."""
    found = {}
    for path in sorted((out / "runs").rglob("cell.json")):
        record = json.loads(path.read_text())
        record["summary"].pop("runtime_s")
        found[str(path.parent.relative_to(out))] = record["summary"]
    return found


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0", [0]), ("0,1,2", [0, 1, 2]), ("42-45", [42, 43, 44, 45]), ("1,0-2", [1, 0, 2])],
    ids=["one", "list", "range", "mixed-dedup"],
)
def test_seed_lists(text: str, seeds: list[int]) -> None:
    assert _seeds(text) == seeds


def test_grid_is_workloads_x_params_x_seeds_x_policies() -> None:
    cells = grid(
        {"a": ["--cluster", "x"], "b": ["--cluster", "y"]}, {"inflate": ["1.3", "2"]}, [0, 1], ["p", "q"]
    )
    assert len(cells) == 2 * 2 * 2 * 2
    assert len({c.rel_dir for c in cells}) == len(cells)
    cell = Cell("a", ("--cluster", "x"), (("inflate", "2"),), 1, "q")
    assert cell in cells
    assert cell.args() == ["--cluster", "x", "--inflate", "2", "--seed", "1", "--policies", "q"]
    assert cell.rel_dir == "runs/a/inflate=2/seed-1/q"


@pytest.mark.parametrize(
    ("values", "mean", "half"),
    [([5.0], 5.0, 0.0), ([1.0, 3.0], 2.0, 12.706 * 1.0), ([1.0, 2.0, 3.0], 2.0, 4.303 * 1.0 / 3**0.5)],
    ids=["one-seed", "two-seeds", "three-seeds"],
)
def test_mean_and_95_percent_t_interval(values: list[float], mean: float, half: float) -> None:
    m, h = mean_ci(values)
    assert m == pytest.approx(mean)
    assert h == pytest.approx(half, rel=1e-3)


def test_aggregate_ranks_on_means_and_the_table_fits_100_columns() -> None:
    def record(policy: str, seed: int, alloc: float) -> dict[str, Any]:
        entry = {k: 0 for k in ("services_total", "services_slo_met", "pods_scheduled", "pods_pending_end")}
        entry.update(preemptions=12_345, penalty=1234.5, runtime_s=1.0, gpu_allocation_ratio=alloc)
        entry["mean_qos_by_class"] = {"prod": 0.5}
        spec = {
            "workload": "w",
            "workload_args": [],
            "params": [["inflate", "1.3"]],
            "seed": seed,
            "policy": policy,
        }
        return {"spec": spec, "workload": {"mode": "fgd-inflation"}, "summary": entry}

    names = [f"knapsack-worst-fit{i:02d}" for i in range(17)]  # 20 characters: kept unfolded
    records = [record(p, s, 0.9 + 0.001 * i + 0.0001 * s) for i, p in enumerate(names) for s in range(3)]
    groups = aggregate(records)
    stats_ = groups["w/inflate=1.3"]["policies"][names[16]]
    assert stats_["n"] == 3
    assert stats_["gpu_allocation_ratio"]["mean"] == pytest.approx(0.9161)
    console = Console(width=100, record=True)
    print_sweep_tables(groups, console=console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text
    first = next(line for line in text.splitlines() if line.strip().startswith("knapsack-worst-fit16"))
    assert " 1 " in first  # the best mean allocation ranks first


@pytest.mark.slow
def test_local_pool_sweep_resumes_and_matches_single_whatif_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = _sweep(out, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "8 cell(s) run, 0 skipped" in result.output
    cells = _cells(out)
    assert len(cells) == 2 * 2 * 2
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert set(summary["groups"]) == {"edge/rate-scale=0.25", "edge/rate-scale=1.0"}
    assert summary["run"]["workers"] == 2
    assert (out / "report.html").read_text().count("<table>") == 2
    # Deterministic per cell: the cell is `qosched whatif` with that seed and policy.
    single = tmp_path / "single"
    args = ["whatif", "--cluster", str(EDGE), "--max-pods", "16", "--rate-scale", "1.0", "--seed", "1"]
    assert (
        CliRunner().invoke(main, [*args, "--policies", "random", "--out", str(single), "--quiet"]).exit_code
        == 0
    )
    entry = json.loads((single / "summary.json").read_text())["policies"]["random"]
    entry.pop("runtime_s")
    assert cells["runs/edge/rate-scale=1.0/seed-1/random"] == entry
    # Resumable: a re-run skips every finished cell; a removed cell is run again.
    shutil.rmtree(out / "runs" / "edge" / "rate-scale=0.25" / "seed-0" / "random")
    again = _sweep(out, "--workers", "1")
    assert again.exit_code == 0, again.output
    assert "1 cell(s) run, 7 skipped" in again.output
    assert _cells(out) == cells


def _wait_for(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout_s} s")
        time.sleep(0.2)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A real Dask scheduler and two single-threaded worker processes on 127.0.0.1."""
    pytest.importorskip("distributed")
    dask = Path(sys.executable).with_name("dask")
    if not dask.exists():
        pytest.skip(f"{dask} not installed")
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [
        subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
    ]  # fmt: skip
    try:
        _wait_for(scheduler_file)
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [str(dask), "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                     "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
                )
            )  # fmt: skip
        address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow
def test_dask_cluster_runs_the_same_cells(tmp_path: Path, dask_cluster: str) -> None:
    local = tmp_path / "local"
    assert _sweep(local, "--workers", "1").exit_code == 0
    remote = tmp_path / "dask"
    result = _sweep(remote, "--cluster-address", dask_cluster)
    assert result.exit_code == 0, result.output
    assert "8 cell(s) run" in result.output
    assert "on 2 worker(s)" in result.output
    hosts = {json.loads(p.read_text())["host"] for p in (remote / "runs").rglob("cell.json")}
    assert hosts
    assert _cells(remote) == _cells(local)  # same seed, same cell, wherever it ran


@pytest.mark.slow  # the client waits out its connect timeout (20 s)
def test_unreachable_cluster_address_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _sweep(tmp_path / "o", "--cluster-address", f"tcp://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert f"--cluster-address tcp://127.0.0.1:{port}: no Dask scheduler there" in result.output
