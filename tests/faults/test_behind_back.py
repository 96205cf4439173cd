"""Binds made behind the extender's back (another scheduler, kube-scheduler's default binder).

Promise (docs/reliability.md "Binds behind its back"): a pod another scheduler binds is accounted
as soon as its watch event arrives — on the devices its ``qosched.io/device`` names, or first-fit
when it names none — so qosched never places a pod onto those devices afterwards; a pod deleted
frees its devices the same way; the cache matches the API throughout.
"""

from __future__ import annotations

from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.kube.kube_binder import KubeBinder
from qosched.extender.kube.watch import LiveCluster
from qosched.extender.server.app import create_app
from tests.extender.live_support import FAST, device_memory, lookup, wait_until
from tests.faults.invariants import VerbTimer, assert_invariants, check_cache_matches_api
from tests.kubefake import FakeKubeAPI

NODES = ["gpu-0", "gpu-1"]


def _verbs(app: Flask, api: FakeKubeAPI, name: str, timer: VerbTimer) -> list[str]:
    """filter, then bind to the first node kept; the nodes kept."""
    pod = api.get("pods", name)
    assert pod is not None
    http = app.test_client()
    with timer.timing("filter"):
        kept = http.post("/filter", json={"Pod": pod, "Nodes": None, "NodeNames": NODES}).get_json()[
            "NodeNames"
        ]
    if kept:
        bind = {"PodName": name, "PodNamespace": "default", "PodUID": pod["metadata"]["uid"], "Node": kept[0]}
        with timer.timing("bind"):
            assert http.post("/bind", json=bind).get_json()["Error"] == ""
    return list(kept or [])


def test_binds_behind_its_back_are_accounted_and_never_overbooked(fault_api: FakeKubeAPI) -> None:
    for name in NODES:
        fault_api.add_node(name, accelerator="nvidia-t4", gpus=1)
    names = ["other-0", "other-1", "ours-0", "ours-1"]
    for name in names:
        fault_api.add_pod(name, model="resnet50", slo_ms=500, rate_rps=1, gpu_milli=1000)
    client = fault_api.api_client()
    cache = LiveCluster(client, lookup, device_memory, watch=FAST)
    app = create_app(
        {"POLICY": "qosched"}, cache=cache, binder=KubeBinder(client), registry=CollectorRegistry()
    )
    timer = VerbTimer()
    try:
        cache.start()
        assert cache.wait_synced(5.0)
        # Another scheduler takes both GPUs: one names its device, one (default binder) does not.
        fault_api.bind_behind("other-0", "gpu-0", annotations={"qosched.io/device": "0"})
        fault_api.bind_behind("other-1", "gpu-1")
        wait_until(
            lambda: not check_cache_matches_api(fault_api, cache), what="the foreign binds in the cache"
        )
        assert _verbs(app, fault_api, "ours-0", timer) == []  # nothing left: no overbooking
        # One of them goes away: its GPU is ours again, exactly once.
        fault_api.delete_pod("other-1")
        wait_until(lambda: not check_cache_matches_api(fault_api, cache), what="the deletion in the cache")
        assert _verbs(app, fault_api, "ours-0", timer) == ["gpu-1"]
        assert _verbs(app, fault_api, "ours-1", timer) == []
        wait_until(lambda: not check_cache_matches_api(fault_api, cache), what="our bind confirmed")
        assert_invariants(
            fault_api, cache=cache, created=[f"default/{n}" for n in names if n != "other-1"], timer=timer
        )
    finally:
        cache.stop()
        client.close()
