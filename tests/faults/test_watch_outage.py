"""A long watch outage, compaction during it, and writes behind the extender's back (issue 12).

Fault: every list and watch of nodes and pods fails (HTTP 503, open streams cut) for longer than
``unready_after_s``; meanwhile another scheduler binds pods and etcd compacts. Promise
(docs/reliability.md "Long watch outage"): ``/readyz`` stays 200 through a short blip, turns 503
once the watch has been broken longer than the bound, verbs keep answering within the budget
from the last known state, and when the API server is back the cache relists (410), re-watches,
``/readyz`` returns to 200, and the cache matches the API again (nothing lost).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.kube.kube_binder import KubeBinder
from qosched.extender.kube.watch import LiveCluster
from qosched.extender.server.app import create_app
from tests.extender.live_support import FAST, device_memory, lookup, wait_until
from tests.faults.invariants import VerbTimer, assert_invariants, check_cache_matches_api
from tests.kubefake import FakeKubeAPI

UNREADY_AFTER_S = 1.0
WATCH = dataclasses.replace(FAST, unready_after_s=UNREADY_AFTER_S, backoff_initial_s=0.02, backoff_max_s=0.1)


@pytest.fixture
def live(fault_api: FakeKubeAPI) -> Iterator[tuple[Flask, LiveCluster]]:
    for i in range(4):
        fault_api.add_node(f"gpu-{i}", accelerator="nvidia-t4", gpus=2)
    for j in range(6):
        fault_api.add_pod(f"p-{j}", model="resnet50", slo_ms=200, rate_rps=5, gpu_milli=500)
    client = fault_api.api_client()
    cache = LiveCluster(client, lookup, device_memory, watch=WATCH)
    app = create_app(
        {"POLICY": "qosched"}, cache=cache, binder=KubeBinder(client), registry=CollectorRegistry()
    )
    cache.start()
    assert cache.wait_synced(5.0)
    assert fault_api.wait_for_watches(2)
    try:
        yield app, cache
    finally:
        cache.stop()
        client.close()


def _filter(app: Flask, api: FakeKubeAPI, name: str, timer: VerbTimer) -> Any:
    pod = api.get("pods", name)
    nodes = [n["metadata"]["name"] for n in api.list_objects("nodes")]
    with timer.timing("filter"):
        answer = app.test_client().post("/filter", json={"Pod": pod, "Nodes": None, "NodeNames": nodes})
    assert answer.status_code == 200
    return answer.get_json()


def test_readyz_drops_after_a_long_watch_outage_and_returns_after_the_relist(
    live: tuple[Flask, LiveCluster], fault_api: FakeKubeAPI
) -> None:
    app, cache = live
    http = app.test_client()
    timer = VerbTimer()
    assert http.get("/readyz").status_code == 200
    lists_before = dict(cache.lists)

    # The outage begins: every list/watch of nodes and pods fails, open streams are cut.
    fault_api.fail_next("^/api/v1/(nodes|pods)$", 503, times=10**6)
    fault_api.drop_watches()
    wait_until(lambda: cache.broken_for_s("pods") > 0, what="the pods watch to notice the outage")
    blip_s = max(cache.broken_for_s("nodes"), cache.broken_for_s("pods"))
    status = http.get("/readyz").status_code
    if blip_s < UNREADY_AFTER_S / 2:  # (a loaded machine may have slept past the bound meanwhile)
        assert status == 200  # a blip shorter than the bound: still ready
    wait_until(lambda: http.get("/readyz").status_code == 503, timeout_s=5.0, what="/readyz 503")
    broken_s = max(cache.broken_for_s("nodes"), cache.broken_for_s("pods"))
    assert UNREADY_AFTER_S <= broken_s <= UNREADY_AFTER_S + 3.0  # flipped at the bound, not before
    assert "watch broken for" in http.get("/readyz").text
    assert http.get("/healthz").status_code == 200  # alive: the probe must not restart it

    # During the outage: another scheduler binds, etcd compacts; verbs still answer in budget.
    fault_api.bind_behind("p-0", "gpu-0", annotations={"qosched.io/device": "0"})
    fault_api.bind_behind("p-1", "gpu-0", annotations={"qosched.io/device": "1"})
    fault_api.compact()
    _filter(app, fault_api, "p-2", timer)

    # The API server is back: 410 (the version was compacted) -> relist -> re-watch -> ready.
    t_back = time.monotonic()
    fault_api.clear_failures()
    wait_until(lambda: http.get("/readyz").status_code == 200, timeout_s=5.0, what="/readyz 200 again")
    recovery_s = time.monotonic() - t_back
    print(f"readiness back {recovery_s * 1e3:.0f} ms after the API server returned")
    assert recovery_s < WATCH.backoff_max_s + 2.0
    wait_until(lambda: not check_cache_matches_api(fault_api, cache), what="the cache to match the API")
    assert cache.lists["pods"] > lists_before["pods"]  # relisted (the version it had was compacted)
    assert_invariants(fault_api, cache=cache, created=[f"default/p-{j}" for j in range(6)], timer=timer)


def test_error_410_on_an_open_watch_relists_only_that_resource_and_stays_ready(
    live: tuple[Flask, LiveCluster], fault_api: FakeKubeAPI
) -> None:
    app, cache = live
    lists_before = dict(cache.lists)
    fault_api.bind_behind("p-3", "gpu-1", annotations={"qosched.io/device": "0"})
    assert fault_api.expire_watches() == 2  # ERROR 410 on both open streams
    fault_api.bind_behind("p-4", "gpu-1", annotations={"qosched.io/device": "1"})
    wait_until(lambda: fault_api.open_watches >= 2, what="watches to reopen")
    wait_until(lambda: not check_cache_matches_api(fault_api, cache), what="the cache to match the API")
    assert cache.lists["pods"] == lists_before["pods"] + 1
    assert cache.lists["nodes"] == lists_before["nodes"] + 1
    assert app.test_client().get("/readyz").status_code == 200  # a compaction is no outage
    assert_invariants(fault_api, cache=cache, created=[f"default/p-{j}" for j in range(6)])


def test_assumptions_do_not_expire_while_the_pods_watch_is_broken(fault_api: FakeKubeAPI) -> None:
    """Expiry and relist: a bind committed during a pods-watch outage keeps its devices past
    ``assume_ttl_s`` (nothing could confirm it), and the relist that ends the outage confirms it.
    Before: the reservation expired, the device looked free, and a second 1,000-milli pod was
    bound onto it (2,000 milli on one GPU)."""
    fault_api.add_node("gpu-0", accelerator="nvidia-t4", gpus=1)
    for name in ("a", "b"):
        fault_api.add_pod(name, model="resnet50", slo_ms=500, rate_rps=1, gpu_milli=1000)
    client = fault_api.api_client()
    cache = LiveCluster(client, lookup, device_memory, watch=WATCH, assume_ttl_s=0.3)
    app = create_app(
        {"POLICY": "qosched"}, cache=cache, binder=KubeBinder(client), registry=CollectorRegistry()
    )
    http = app.test_client()
    timer = VerbTimer()
    try:
        cache.start()
        assert cache.wait_synced(5.0)
        fault_api.fail_next("^/api/v1/pods$", 503, times=10**6)  # the pods list/watch only
        fault_api.drop_watches()
        wait_until(lambda: cache.broken_for_s("pods") > 0, what="the pods watch to break")
        for name in ("a", "b"):
            pod = fault_api.get("pods", name)
            assert pod is not None
            bind = {
                "PodName": name,
                "PodNamespace": "default",
                "PodUID": pod["metadata"]["uid"],
                "Node": "gpu-0",
            }
            with timer.timing("bind"):
                answer = http.post("/bind", json=bind).get_json()
            if name == "a":
                assert answer["Error"] == ""  # committed; the watch cannot confirm it
                time.sleep(0.6)  # twice the TTL
                with timer.timing("filter"):
                    kept = _filter(app, fault_api, "b", VerbTimer())["NodeNames"]
                assert kept == []  # the device is still held by a
            else:
                assert "gpu-0" in answer["Error"]  # refused: no double booking
        fault_api.clear_failures()
        wait_until(lambda: cache.broken_for_s("pods") == 0, what="the pods watch to resync")
        wait_until(lambda: not check_cache_matches_api(fault_api, cache), what="the cache to match the API")
        uid_a = str(fault_api.get("pods", "a")["metadata"]["uid"])  # type: ignore[index]

        def confirmed() -> bool:
            # An assumed pod already counts as placed, so the cache can match the API a moment
            # before the resynced watch's event confirms the assumption: wait for that event.
            with cache.lock:
                return not cache.is_assumed_locked(uid_a)

        wait_until(confirmed, what="the resynced watch to confirm a's assumption")
        assert_invariants(fault_api, cache=cache, created=["default/a", "default/b"], timer=timer)
    finally:
        cache.stop()
        client.close()
