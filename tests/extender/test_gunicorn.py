"""The real server: ``qosched serve --cluster`` under gunicorn on 127.0.0.1, driven over HTTP.

Checks what only a real server shows: the worker model (one worker process, gthread threads),
keep-alive HTTP with ``requests``, /readyz, /metrics as Prometheus scrapes it, a request served
while a bind is blocked in the binder, and a clean shutdown on SIGTERM.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.extender.extender_support import (
    JSON_CT,
    args,
    bind_args,
    free_port,
    metric_value,
    node,
    pod,
    serving,
    write_snapshot,
)

pytestmark = pytest.mark.slow

NAMES = ["t4-0", "t4-1", "cpu-0"]
P = pod("p", rate_rps=5, slo_ms=100)


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    running = pod("r", node_name="t4-0", annotations={"qosched.io/device": "0"})
    return write_snapshot(
        tmp_path / "cluster.json", [node("t4-0"), node("t4-1"), node("cpu-0", None, gpus=0), running, P]
    )


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def post(session: requests.Session, url: str, body: Any) -> Any:
    response = session.post(url, data=orjson.dumps(body), headers={"Content-Type": JSON_CT}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def metric(text: str, series: str) -> float:
    """The value of ``series`` (written as in the exposition: ``name{label="v",...}``) in a
    ``/metrics`` answer parsed by prometheus_client's parser."""
    name, _, rest = series.partition("{")
    return metric_value(text, name, **dict(re.findall(r'(\w+)="([^"]*)"', rest)))


def test_one_cycle_over_http_with_metrics_and_a_clean_shutdown(cluster: Path) -> None:
    with serving("--cluster", str(cluster)) as (base, proc), requests.Session() as http:
        assert http.get(base + "/healthz", timeout=5).text == "ok\n"
        assert http.get(base + "/readyz", timeout=5).text == "ready\n"
        filtered = post(http, base + "/filter", args(P, NAMES))
        assert filtered["NodeNames"] == ["t4-0", "t4-1"]
        assert list(filtered["FailedAndUnresolvableNodes"]) == ["cpu-0"]
        scores = post(http, base + "/prioritize", args(P, filtered["NodeNames"]))
        assert [h["Host"] for h in scores] == ["t4-0", "t4-1"]
        assert all(0 <= h["Score"] <= 10 for h in scores)
        best = max(scores, key=lambda h: h["Score"])["Host"]
        assert post(http, base + "/bind", bind_args(P, best)) == {"Error": ""}
        placed = http.get(base + "/placements", timeout=5).json()
        assert placed["default/p"]["node"] == best
        assert placed["default/p"]["policy"] == "qosched"

        text = http.get(base + "/metrics", timeout=5).text
        for verb in ("filter", "prioritize", "bind"):
            assert metric(text, f'qosched_extender_requests_total{{code="200",verb="{verb}"}}') == 1.0
            assert metric(text, f'qosched_extender_request_duration_seconds_count{{verb="{verb}"}}') == 1.0
            assert (
                metric(text, f'qosched_extender_request_duration_seconds_bucket{{le="+Inf",verb="{verb}"}}')
                == 1.0
            )
        assert metric(text, 'qosched_extender_request_duration_seconds_bucket{le="1.0",verb="filter"}') == 1.0
        assert metric(text, 'qosched_extender_decisions_total{outcome="bound",verb="bind"}') == 1.0
        assert metric(text, "qosched_cache_nodes") == 3.0
        assert metric(text, "qosched_cache_pods") == 2.0
        assert metric(text, "qosched_cache_placed_pods") == 2.0  # the running pod and the new one
        assert metric(text, "qosched_cache_assumed_pods") == 0.0  # the snapshot binder confirmed it
        assert metric(text, "qosched_cache_synced") == 1.0

        workers = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not any(
            Path(f"/proc/{w}").exists() and "zombie" not in Path(f"/proc/{w}/status").read_text()
            for w in workers
        )


def test_one_worker_process_with_threads_serves_concurrent_requests(cluster: Path) -> None:
    with serving("--cluster", str(cluster)) as (base, proc):
        workers = children(proc.pid)
        assert len(workers) == 1, workers  # the cache and its assumptions live in one process

        def hammer() -> None:
            with requests.Session() as http:
                for _ in range(20):
                    post(http, base + "/filter", args(P, NAMES))

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert threads_of(workers[0]) >= 2  # gthread: the main loop plus pool threads
        assert children(proc.pid) == workers  # no worker restarted under load
        text = requests.get(base + "/metrics", timeout=5).text
        assert metric(text, 'qosched_extender_requests_total{code="200",verb="filter"}') == 120.0


# The same server (ExtenderServer + gunicorn_conf, as ``qosched serve`` runs it) with a binder
# that blocks until the test creates a file: proves other requests are served meanwhile.
LAUNCHER = """
import pathlib, sys, time
from qosched.extender.server.app import create_app
from qosched.extender.kube.binding import SnapshotBinder
from qosched.extender.kube.cache import StaticCluster
from qosched.extender.cli.serve import ExtenderServer
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.profiles.store import bundled_profiles

cluster_file, port, gate = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])

class GatedBinder(SnapshotBinder):
    def bind(self, *args, **kwargs):
        (gate / "entered").touch()
        deadline = time.monotonic() + 30
        while not (gate / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        super().bind(*args, **kwargs)

def factory():
    cache = StaticCluster.from_file(cluster_file, *lookup_from_profiles(bundled_profiles()))
    return create_app({}, cache=cache, binder=GatedBinder(cache))

ExtenderServer(factory, {"bind": f"127.0.0.1:{port}"}).run()
"""


def test_requests_are_served_while_a_bind_is_blocked(cluster: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(cluster), str(port), str(gate)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "server did not start"
            assert proc.poll() is None, "server did not start"
            time.sleep(0.1)
        answer: dict[str, Any] = {}

        def bind() -> None:
            with requests.Session() as http:
                answer.update(post(http, base + "/bind", bind_args(P, "t4-1")))

        binding = threading.Thread(target=bind)
        binding.start()
        deadline = time.monotonic() + 20
        while not (gate / "entered").exists():
            assert time.monotonic() < deadline, "the bind never reached the binder"
            time.sleep(0.01)
        with requests.Session() as http:
            t0 = time.monotonic()
            assert http.get(base + "/healthz", timeout=5).status_code == 200
            other = pod("other", rate_rps=5, slo_ms=100)
            filtered = post(http, base + "/filter", args(other, NAMES))
            served_s = time.monotonic() - t0
        assert filtered["NodeNames"] == ["t4-0", "t4-1"]
        assert binding.is_alive()
        assert not answer
        assert served_s < 5.0  # ...and the others were served meanwhile (not after its 30 s)
        (gate / "release").touch()
        binding.join(20)
        assert answer == {"Error": ""}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
