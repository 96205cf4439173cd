"""``qosched demo`` end to end: the real extender under gunicorn on the bundled demo cluster,
driven over HTTP like kube-scheduler, and a table of where every pending pod went."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from qosched.extender.cli.demo import demo_snapshot_path
from qosched.extender.kube.cache import load_snapshot
from qosched.extender.kube.objects import is_managed, pod_node
from tests.extender.extender_support import QOSCHED_BIN

pytestmark = pytest.mark.slow

#: Bound by qosched in the demo at the time of writing: 14 of 16. Two pods cannot fit by design
#: (resnet50-ads: SLO 10 ms at 140 rps next to the T4 services; inception4-archive: no device
#: left with the utilisation headroom). Asking for 12 leaves room for policy tuning, not for a
#: broken extender (which binds 0, or only the unmanaged pod).
MIN_BOUND = 12


def test_demo_schedules_the_bundled_cluster_over_http() -> None:
    _, pods = load_snapshot(demo_snapshot_path())
    pending = [p for p in pods if pod_node(p) is None]
    assert len(pending) >= MIN_BOUND
    env = {**os.environ, "COLUMNS": "300", "QOSCHED_LOG_LEVEL": "warning"}
    done = subprocess.run([str(QOSCHED_BIN), "demo"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Placements by policy 'qosched'" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    for p in pending:
        assert p["metadata"]["name"] in rows, f"{p['metadata']['name']} missing from the table"
    summary = re.search(r"(\d+)/(\d+) pods bound", out)
    assert summary is not None, out
    bound, total = int(summary.group(1)), int(summary.group(2))
    assert total == len(pending)
    assert MIN_BOUND <= bound <= total
    # A pod no node fits gets every node's reason with its numbers (GET /explain, issue 16).
    unplaced = [name for name, line in rows.items() if "no node fits" in line]
    assert len(unplaced) == total - bound
    for name in unplaced:
        assert f"Why no node fits {name}, node by node" in out
    if unplaced:
        assert re.search(r"utilisation \d\.\d\d > limit 0\.80|needs \d+m CPU, has \d+m free", out), out
    # An unmanaged pod is bound as the default binder would: a node, score 0, no device.
    for p in pending:
        if not is_managed(p):
            cells = [c.strip() for c in rows[p["metadata"]["name"]].split("│")[1:-1]]
            assert cells[4] not in ("-", "no node fits")
            assert cells[5] == "-"
            assert cells[7] == "0"
