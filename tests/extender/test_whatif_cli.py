"""End-to-end tests of ``qosched whatif``: inputs, errors, outputs (summary, CSV, report)."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import main
from qosched.extender.cli.whatif_report import CSV_COLUMNS
from qosched.policies.placement.base import policy_names
from qosched.policies.simulator.metrics import CONTRACT_KEYS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "alibaba-gpu-v2023"
EDGE = ROOT / "extender" / "demo" / "edge-cluster.yaml"
NODES = DATA / "openb_node_list_gpu_node.csv"
PODS = DATA / "openb_pod_list_default.csv"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"trace not found at {DATA}")


def _run(*args: str) -> object:
    return CliRunner().invoke(main, ["whatif", *args], catch_exceptions=False)


class _Links(HTMLParser):
    """Collects every src/href attribute value and <script>/<link> tags."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]


# ----------------------------------------------------------------------------------- openb slice


@needs_data
def test_openb_slice_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    policies = "random,best-fit,fgd"
    result = _run(
        "--nodes", str(NODES), "--pods", str(PODS), "--format", "openb", "--max-pods", "300",
        "--policies", policies, "--out", str(out), "--seed", "3", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"workload", "policies"}
    assert list(summary["policies"]) == policies.split(",")
    for name, entry in summary["policies"].items():
        assert list(entry)[: len(CONTRACT_KEYS)] == list(CONTRACT_KEYS), name
        assert entry["pods_total"] == 300
        assert entry["pods_scheduled"] + entry["pods_failed"] == 300
        assert 0.0 < entry["gpu_allocation_ratio"] < 1.0
        assert entry["services_total"] == 0  # trace pods have no model or SLO
        assert entry["runtime_s"] > 0
        with (out / f"{name}.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert tuple(rows[0]) == CSV_COLUMNS
        assert len(rows) == 300
        assert sum(1 for r in rows if r["node"]) == entry["pods_scheduled"]
    for png in ("allocation_curve.png", "qos_by_class.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best-fit" in result.output  # type: ignore[attr-defined]


@needs_data
def test_inflate_grows_the_arrived_workload(tmp_path: Path) -> None:
    # 200 trace pods request ~2.6 % of the GPUs; --inflate 0.05 clones them up to 5 %.
    out = tmp_path / "out"
    result = _run(
        "--nodes", str(NODES), "--pods", str(PODS), "--max-pods", "200", "--inflate", "0.05",
        "--policies", "random", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    entry = json.loads((out / "summary.json").read_text())["policies"]["random"]
    assert entry["pods_total"] > 200
    assert entry["allocation_curve"]["arrived"][-1] == pytest.approx(0.05, abs=0.002)
    assert entry["pods_running_end"] == entry["pods_scheduled"]  # no departures in FGD mode


def _node_slice(tmp_path: Path, n: int) -> Path:
    """The first ``n`` rows of the real GPU node list (read at test time, not copied into the repo)."""
    lines = NODES.read_text().splitlines()[: n + 1]
    path = tmp_path / "nodes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@needs_data
def test_departures_mode_is_fgd_inflation_with_trace_lifetimes(tmp_path: Path) -> None:
    """``--inflate X --departures``: FGD's pods (same seed, same order), 0.05 s apart, each leaving
    after deletion − scheduled of its trace row; QoS measured at 3,600 s by default."""
    nodes = _node_slice(tmp_path, 12)  # 12 nodes, 24 P100 GPUs
    common = [
        "--nodes", str(nodes), "--pods", str(PODS), "--max-pods", "150", "--inflate", "1.5",
        "--seed", "5", "--policies", "priority,best-fit", "--quiet", "--no-latency",
    ]  # fmt: skip
    fgd = _run(*common, "--out", str(tmp_path / "fgd"))
    assert fgd.exit_code == 0, fgd.output  # type: ignore[attr-defined]
    cont = _run(*common, "--departures", "--out", str(tmp_path / "cont"))
    assert cont.exit_code == 0, cont.output  # type: ignore[attr-defined]
    s_fgd = json.loads((tmp_path / "fgd" / "summary.json").read_text())
    s_cont = json.loads((tmp_path / "cont" / "summary.json").read_text())
    assert s_cont["workload"]["mode"] == "fgd-inflation-with-departures"
    assert s_cont["workload"]["interarrival_s"] == 0.05
    assert s_fgd["workload"]["interarrival_s"] == 1.0
    rows_fgd = _csv_rows(tmp_path / "fgd" / "best-fit.csv")
    rows = _csv_rows(tmp_path / "cont" / "best-fit.csv")
    assert [r["pod"] for r in rows] == [r["pod"] for r in rows_fgd]  # the same draws
    assert [float(r["submit_s"]) for r in rows[:4]] == [0.0, 0.05, 0.1, 0.15]
    with PODS.open() as handle:
        trace = {r["name"]: r for r in csv.DictReader(handle)}
    done = [r for r in rows if r["status"] == "completed"]
    assert done  # pods leave
    for r in done:
        src = trace[r["pod"].split("-clone-")[0]]
        lifetime = max(
            float(src["deletion_time"]) - float(src["scheduled_time"] or src["creation_time"]), 1.0
        )
        assert float(r["running_s"]) == pytest.approx(lifetime, abs=1e-3), r["pod"]
        assert float(r["end_s"]) <= 3600.0
    classes = {"LS": "prod", "Guaranteed": "prod", "Burstable": "batch", "BE": "free"}
    targets = {"prod": 1.0, "batch": 0.9, "free": 0.5}
    for name in ("priority", "best-fit"):
        entry = s_cont["policies"][name]
        # Per-class extras: penalties add up to the total; "below target" counts the CSV's rows.
        assert sum(entry["penalty_by_class"].values()) == pytest.approx(entry["penalty"], rel=1e-4)
        below: dict[str, int] = {}
        for r in _csv_rows(tmp_path / "cont" / f"{name}.csv"):
            below[r["class"]] = below.get(r["class"], 0) + (float(r["qos"]) < targets[r["class"]] - 5e-4)
        assert {c: n for c, n in below.items() if n} == {
            c: n for c, n in entry["below_target_by_class"].items() if n
        }
        assert set(entry["below_target_by_class"]) <= set(classes.values())
        assert s_fgd["policies"][name]["pods_completed"] == 0  # FGD mode: nobody leaves
    assert (tmp_path / "cont" / "fairness_by_class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Fairness and penalties per class" in (tmp_path / "cont" / "report.html").read_text()
    horizon = _run(*common, "--departures", "--horizon-s", "900", "--out", str(tmp_path / "h"))
    assert horizon.exit_code == 0, horizon.output  # type: ignore[attr-defined]
    s_h = json.loads((tmp_path / "h" / "summary.json").read_text())
    assert s_h["policies"]["best-fit"]["horizon_s"] == 900.0


# ----------------------------------------------------------------------------------- snapshot


def test_edge_cluster_snapshot_and_self_contained_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run(
        "--cluster", str(EDGE), "--policies", "knapsack-first-fit,ibis-spread", "--out", str(out),
        "--max-pods", "40", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    summary = json.loads((out / "summary.json").read_text())
    knap = summary["policies"]["knapsack-first-fit"]
    ibis = summary["policies"]["ibis-spread"]
    assert knap["services_total"] > 0
    assert ibis["services_total"] > 0
    assert ibis["services_slo_met"] >= knap["services_slo_met"]
    assert knap["latency_model"]["checks"] > 0
    with (out / "ibis-spread.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["node"]]
    assert rows
    assert all(r["model"] and r["slo_ms"] and r["slo_met"] in ("yes", "no") for r in rows)
    assert all(r["simulated_latency_ms"] for r in rows)

    report = (out / "report.html").read_text()
    parser = _Links()
    parser.feed(report)
    assert parser.urls, "the report embeds its plots"
    external = [u for u in parser.urls if not (u.startswith("data:") or u.startswith("#"))]
    assert external == []
    assert "script" not in parser.tags
    assert "link" not in parser.tags
    assert "url(" not in report
    assert "@import" not in report
    assert report.count("data:image/png;base64,") >= 3
    for section in ("Summary", "Services meeting their SLO", "Delivered QoS per class", "Workload"):
        assert section in report


def test_snapshot_annotation_errors_name_the_pod(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        EDGE.read_text().replace("qosched.io/duration-s: '", "qosched.io/duration-s: '-", 1),
    )
    result = _run("--cluster", str(bad), "--out", str(tmp_path / "o"), "--quiet")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "bad.yaml: pod edge/" in result.output  # type: ignore[attr-defined]
    assert "qosched.io/duration-s" in result.output
    assert "> 0" in result.output


def test_missing_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    result = _run("--cluster", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "nope.yaml: cannot read snapshot" in result.output  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------- errors


@needs_data
def test_trace_format_error_names_file_line_and_column(tmp_path: Path) -> None:
    lines = PODS.read_text().splitlines()[:4]
    cells = lines[2].split(",")
    cells[4] = "12.5"  # gpu_milli of data row 2 (file line 3)
    lines[2] = ",".join(cells)
    bad = tmp_path / "pods-bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    result = _run("--nodes", str(NODES), "--pods", str(bad), "--out", str(tmp_path / "o"), "--quiet")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "pods-bad.csv:3: column gpu_milli:" in result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


@needs_data
def test_missing_column_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "nodes.csv"
    bad.write_text("sn,cpu_milli,memory_mib,gpu\nn0,1000,1024,1\n")
    result = _run("--nodes", str(bad), "--pods", str(PODS), "--out", str(tmp_path / "o"), "--quiet")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "nodes.csv: missing column(s) model" in result.output  # type: ignore[attr-defined]


def test_unknown_policy_lists_the_known_ones(tmp_path: Path) -> None:
    result = _run("--cluster", str(EDGE), "--policies", "fgd,bogus", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    output = result.output  # type: ignore[attr-defined]
    assert "unknown policy bogus" in output
    for name in policy_names():
        assert name in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "n.csv"], "give --cluster FILE, or --nodes CSV and --pods CSV"),
        (["--cluster", "c.yaml", "--nodes", "n.csv", "--pods", "p.csv"], "not both"),
        (["--cluster", str(EDGE), "--inflate", "1.3"], "--inflate applies to a trace"),
        (["--nodes", str(NODES), "--pods", str(PODS), "--departures"], "apply with --inflate"),
        (["--nodes", str(NODES), "--pods", str(PODS), "--interarrival-s", "1"], "apply with --inflate"),
        (
            ["--nodes", str(NODES), "--pods", str(PODS), "--inflate", "1", "--interarrival-s", "0"],
            "must be a number > 0",
        ),
    ],
    ids=[
        "pods-missing",
        "both-inputs",
        "inflate-on-snapshot",
        "departures-without-inflate",
        "gap-without-inflate",
        "zero-gap",
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run(*args, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert message in result.output  # type: ignore[attr-defined]


def test_same_seed_same_summary_except_runtime(tmp_path: Path) -> None:
    summaries = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = _run(
            "--cluster", str(EDGE), "--policies", "random,qosched", "--max-pods", "30", "--seed", "9",
            "--out", str(out), "--quiet",
        )  # fmt: skip
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        summary = json.loads((out / "summary.json").read_text())
        for entry in summary["policies"].values():
            entry.pop("runtime_s")
        summaries.append(summary)
        assert (out / "random.csv").read_bytes() == (tmp_path / "a" / "random.csv").read_bytes()
    assert summaries[0] == summaries[1]


def test_profiles_dir_is_layered_over_the_bundled_ones(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    bundled = ROOT / "profiles" / "bundled" / "edgetpu__mobilenet_v2.json"
    shutil.copy(bundled, profiles / bundled.name)
    result = _run(
        "--cluster", str(EDGE), "--policies", "ibis-pack", "--max-pods", "10", "--profiles", str(profiles),
        "--out", str(tmp_path / "o"), "--quiet", "--no-latency",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    bad = tmp_path / "badprofiles"
    bad.mkdir()
    (bad / "edgetpu__mobilenet_v2.json").write_text("{}")
    result = _run("--cluster", str(EDGE), "--profiles", str(bad), "--out", str(tmp_path / "o2"))
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "edgetpu__mobilenet_v2.json" in result.output  # type: ignore[attr-defined]
