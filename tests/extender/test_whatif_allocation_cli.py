"""``qosched whatif --requests ... --policies infida,greedy-allocation,static-allocation``: the
shipped INFIDA scenario (a slice), the ``allocation`` objects and the two plots."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from qosched.extender.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "extender" / "demo" / "infida"
POLICIES = ("infida", "greedy-allocation", "static-allocation")


def test_adversarial_slice_writes_allocation_objects_and_plots(tmp_path: Path) -> None:
    lines = (DEMO / "requests-adversarial.csv").read_text().splitlines()
    kept = [lines[0], *(ln for ln in lines[1:] if float(ln.split(",")[0]) < 40.0)]
    requests = tmp_path / "requests.csv"
    requests.write_text("\n".join(kept) + "\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        ["whatif", "--cluster", str(DEMO / "cluster.yaml"), "--requests", str(requests),
         "--policies", ",".join(POLICIES), "--window-s", "10", "--out", str(out), "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    total = summary["workload"]["requests"]
    for name in POLICIES:
        entry = summary["policies"][name]
        alloc = entry["allocation"]
        assert {"gain", "mean_response_ms", "served_by_tier", "reallocations"} <= set(alloc)
        assert sum(alloc["served_by_tier"].values()) == total == entry["requests"]["served"]
        assert alloc["windows"] == 4
        assert "allocation_series" not in entry
    # greedy and static load nothing in the first window; INFIDA loads from its first y
    assert summary["policies"]["static-allocation"]["allocation"]["reallocations"] > 0
    series = json.loads((out / "allocation_series.json").read_text())
    assert set(series) == set(POLICIES)
    for png in ("allocation_gain.png", "allocation_over_time.png"):
        assert (out / png).stat().st_size > 10_000
