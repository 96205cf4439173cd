"""Restart mid-run and a dead API server at start-up, with real ``qosched serve`` processes.

Faults and promises (docs/reliability.md "Restart mid-run", "Dead API server at start-up"):

* The extender is SIGKILLed while the stand-in scheduler is binding, and a new one starts: the
  new one rebuilds its cache from a list (nothing is persisted, nothing needs to be), is ready
  within seconds, binds nothing twice (a pod the old one bound is "already bound"), and no
  device ends above 1,000 milli.
* The API server is down when the extender starts: the process stays up (``/healthz`` 200, no
  crash loop, also with the profiles ConfigMap configured), ``/readyz`` answers 503 with the
  reason, the log says what failed and that it retries; once the API server listens the cache
  syncs, ``/readyz`` turns 200 and pods are placed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.faults.conftest import ExtenderProcess, free_port
from tests.faults.invariants import assert_invariants, bound_pods
from tests.faults.standin import StandInScheduler
from tests.kubefake import FakeKubeAPI

FAST_WATCH = {"WATCH_BACKOFF_S": 0.05, "WATCH_BACKOFF_MAX_S": 0.5}


def _cluster(api: FakeKubeAPI, nodes: int, pods: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    for i in range(nodes):
        api.add_node(f"gpu-{i:02d}", accelerator="nvidia-t4", gpus=2)
    created = []
    for j in range(pods):
        milli = rng.choice([250, 500, 1000])
        api.add_pod(f"p-{j:03d}", model="resnet50", slo_ms=500, rate_rps=2, gpu_milli=milli)
        created.append(f"default/p-{j:03d}")
    return created


def _drain(standin: StandInScheduler, passes: int = 6) -> None:
    """Passes until a pass binds nothing (the rest do not fit) or ``passes`` ran."""
    for _ in range(passes):
        if not standin.run_pass():
            return


def _placements(ext: ExtenderProcess) -> dict[str, Any]:
    return dict(requests.get(f"{ext.url}/placements", timeout=5).json())


@pytest.mark.slow
def test_restart_mid_run_rebuilds_the_cache_and_binds_nothing_twice(
    fault_api: FakeKubeAPI, extender: Callable[..., ExtenderProcess]
) -> None:
    created = _cluster(fault_api, nodes=10, pods=40)
    first = extender(fault_api.url, name="first", **FAST_WATCH)
    first.wait_status(200, timeout_s=30)
    standin = StandInScheduler(fault_api, first.url)

    # Kill the first extender while the stand-in is mid-run (after ~10 binds).
    stop = threading.Event()
    runner = threading.Thread(target=lambda: standin.run_pass(stop.is_set), daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while (
        fault_api.count(verb="create", subresource="binding", status=201) < 10 and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    first.kill()
    killed_at = time.monotonic()
    stop.set()
    runner.join(10)
    bound_before = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in bound_pods(fault_api)}
    assert len(bound_before) >= 10

    second = extender(fault_api.url, name="second", **FAST_WATCH)
    ready_s = second.wait_status(200, timeout_s=30)
    recovery_s = time.monotonic() - killed_at
    print(f"restart: ready {ready_s:.2f} s after the new process started ({recovery_s:.2f} s after the kill)")

    # The new process knows every bind of the old one: a retried bind of one of those pods is
    # "already bound" (same node: success without a second API call; elsewhere: an Error).
    name, node = sorted(bound_before.items())[0]
    pod = fault_api.get("pods", name)
    assert pod is not None
    other = next(n for n in (f"gpu-{i:02d}" for i in range(10)) if n != node)
    bind = {"PodName": name, "PodNamespace": "default", "PodUID": pod["metadata"]["uid"]}
    same = requests.post(f"{second.url}/bind", json={**bind, "Node": node}, timeout=5).json()
    elsewhere = requests.post(f"{second.url}/bind", json={**bind, "Node": other}, timeout=5).json()
    assert same.get("Error", "") == ""
    assert f"already bound to node {node}" in elsewhere["Error"]

    standin.url = second.url
    _drain(standin)
    placed = _placements(second)
    on_api = {f"default/{p['metadata']['name']}": p["spec"]["nodeName"] for p in bound_pods(fault_api)}
    assert {k: v["node"] for k, v in placed.items()} == on_api  # the new cache is the API's truth
    assert len(on_api) > len(bound_before)  # scheduling went on after the restart
    assert_invariants(fault_api, created=created, timer=standin.timer)


@pytest.mark.slow
def test_a_dead_api_server_at_start_up_is_retried_without_a_crash_loop(
    extender: Callable[..., ExtenderProcess],
) -> None:
    port = free_port()
    ext = extender(
        f"http://127.0.0.1:{port}",
        name="early",
        PROFILES_CONFIGMAP="qosched-system/qosched-profiles",
        **FAST_WATCH,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server comes up although the API server is down
        try:
            if requests.get(f"{ext.url}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.05)
    for _ in range(5):  # ~1 s of probes: alive, not ready, the same process throughout
        readyz = requests.get(f"{ext.url}/readyz", timeout=1)
        assert (readyz.status_code, readyz.text) == (503, "cluster cache not synced yet\n")
        assert ext.proc is not None
        assert ext.proc.poll() is None
        time.sleep(0.2)
    log = ext.log(tail_chars=None)
    assert "initial list failed" in log  # says what failed and that it retries
    assert "unreadable at start-up" in log  # the profiles ConfigMap: logged, not fatal

    with FakeKubeAPI(port=port, bookmark_interval_s=1.0) as api:  # the API server comes up
        created = _cluster(api, nodes=4, pods=8)
        ready_s = ext.wait_status(200, timeout_s=15)
        print(f"ready {ready_s:.2f} s after the API server came up")
        assert ready_s < 5.0  # within the backoff cap (0.5 s) plus a list
        standin = StandInScheduler(api, ext.url)
        _drain(standin)
        assert bound_pods(api)
        assert_invariants(api, created=created, timer=standin.timer)
