"""The extender app in live mode: ``create_app`` with a kubeconfig pointing at kubefake.

The app builds its own ``ApiClient`` (``api_client_from``), ``LiveCluster`` and ``KubeBinder``
exactly as in production; the tests drive it through Flask's test client with the JSON
kube-scheduler sends, and read the result back from the fake API server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.kube.kube_binder import KubeBinder
from qosched.extender.kube.watch import LiveCluster, api_client_from
from qosched.extender.server.app import create_app, runtime_of
from qosched.extender.server.settings import ConfigError
from tests.extender.extender_support import metric_value
from tests.extender.live_support import device_memory, lookup, wait_until
from tests.kubefake import FakeKubeAPI, make_pod, write_kubeconfig

RESULT_KEYS = ("qosched.io/device", "qosched.io/predicted-latency-ms", "qosched.io/policy")


@pytest.fixture
def live_app(kube_api: FakeKubeAPI, tmp_path: Path) -> Iterator[Flask]:
    """The production wiring on kubefake: two GPU nodes, one CPU node; the watch stopped after."""
    kube_api.add_node("gpu-0", accelerator="nvidia-t4", gpus=2)
    kube_api.add_node("gpu-1", accelerator="nvidia-t4", gpus=1)
    kube_api.add_node("cpu-0", accelerator=None)
    app = _app(kube_api, tmp_path)
    try:
        yield app
    finally:
        runtime_of(app).cache.stop()  # type: ignore[attr-defined]


def _app(api: FakeKubeAPI, tmp_path: Path, **overrides: Any) -> Flask:
    settings = {
        "KUBECONFIG": str(write_kubeconfig(api.url, tmp_path / "kubeconfig.yaml", token="test-token")),
        "POLICY": "qosched",
        "WATCH_BACKOFF_S": 0.01,
        "WATCH_BACKOFF_MAX_S": 0.05,
        **overrides,
    }
    return create_app(settings, registry=CollectorRegistry())


def _cache(app: Flask) -> LiveCluster:
    cache = runtime_of(app).cache
    assert isinstance(cache, LiveCluster)
    return cache


def _nodes_arg(api: FakeKubeAPI, full: bool, names: list[str]) -> dict[str, Any]:
    if full:  # nodeCacheCapable: false — kube-scheduler sends whole Node objects
        items = [n for n in api.list_objects("nodes") if n["metadata"]["name"] in names]
        return {"Nodes": {"metadata": {}, "items": items}, "NodeNames": None}
    return {"Nodes": None, "NodeNames": names}


def test_readyz_is_503_until_the_first_sync(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    kube_api.add_node("gpu-0", accelerator="nvidia-t4", gpus=1)
    # The first two node lists fail; backoff ≥ 0.25 s + 0.5 s before the third can succeed.
    kube_api.fail_next("^/api/v1/nodes$", 503, times=2, verb="list")
    app = _app(kube_api, tmp_path, WATCH_BACKOFF_S=0.5, WATCH_BACKOFF_MAX_S=1.0)
    try:
        http = app.test_client()
        not_ready = http.get("/readyz")
        assert (not_ready.status_code, not_ready.text) == (503, "cluster cache not synced yet\n")
        assert http.get("/healthz").status_code == 200  # alive all along
        assert _cache(app).wait_synced(10.0)
        assert http.get("/readyz").status_code == 200
        assert [r.status for r in kube_api.calls(verb="list", path="^/api/v1/nodes$")] == [503, 503, 200]
    finally:
        _cache(app).stop()


def test_readyz_follows_an_injected_live_cache(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", accelerator="nvidia-t4", gpus=1)
    api_client = kube_api.api_client()
    cache = LiveCluster(api_client, lookup, device_memory)
    app = create_app(
        {"POLICY": "qosched"}, cache=cache, binder=KubeBinder(api_client), registry=CollectorRegistry()
    )
    http = app.test_client()
    try:
        assert http.get("/readyz").status_code == 503  # not started: never synced
        cache.start()
        assert cache.wait_synced(5.0)
        assert http.get("/readyz").status_code == 200
    finally:
        cache.stop()
        api_client.close()


@pytest.mark.parametrize("full_nodes", [False, True], ids=["nodecache", "fullnodes"])
def test_filter_prioritize_bind_cycle_binds_with_result_annotations(
    live_app: Flask, kube_api: FakeKubeAPI, full_nodes: bool
) -> None:
    cache = _cache(live_app)
    assert cache.wait_synced(5.0)
    pod = kube_api.add_pod(make_pod("resnet", model="resnet50", slo_ms=100, rate_rps=5, gpu_milli=500))
    uid = pod["metadata"]["uid"]
    wait_until(lambda: cache.pod(uid) is not None, what="the pending pod in the cache")
    http = live_app.test_client()
    names = ["gpu-0", "gpu-1", "cpu-0"]
    args = {"Pod": pod, **_nodes_arg(kube_api, full_nodes, names)}

    filtered = http.post("/filter", json=args).get_json()
    assert filtered["Error"] == ""
    kept = (
        filtered["NodeNames"]
        if not full_nodes
        else [n["metadata"]["name"] for n in filtered["Nodes"]["items"]]
    )
    assert kept == ["gpu-0", "gpu-1"]
    reasons = {**(filtered["FailedNodes"] or {}), **(filtered["FailedAndUnresolvableNodes"] or {})}
    assert list(reasons) == ["cpu-0"]
    assert "qosched.io/accelerator" in reasons["cpu-0"]

    kept_args = {"Pod": pod, **_nodes_arg(kube_api, full_nodes, kept)}
    scores = {h["Host"]: h["Score"] for h in http.post("/prioritize", json=kept_args).get_json()}
    assert set(scores) == {"gpu-0", "gpu-1"}
    assert all(0 <= s <= 10 for s in scores.values())
    best = max(kept, key=lambda n: scores[n])

    kube_api.clear_requests()
    bound = http.post(
        "/bind", json={"PodName": "resnet", "PodNamespace": "default", "PodUID": uid, "Node": best}
    ).get_json()
    assert bound == {"Error": ""}
    assert kube_api.count(verb="create", subresource="binding") == 1
    assert kube_api.count(method="PATCH") == 0

    stored = kube_api.get("pods", "resnet")
    assert stored is not None
    assert stored["spec"]["nodeName"] == best
    ann = stored["metadata"]["annotations"]
    assert all(k in ann for k in RESULT_KEYS)
    assert ann["qosched.io/policy"] == "qosched"
    device = int(ann["qosched.io/device"])
    assert 0 <= device < (2 if best == "gpu-0" else 1)
    assert 0 < float(ann["qosched.io/predicted-latency-ms"]) <= 100  # feasible: within the SLO

    wait_until(lambda: not cache.is_assumed(uid), what="the watch to confirm the binding")
    with cache.lock:
        alloc = cache.state.allocation(uid)
        assert alloc is not None
        assert (alloc.node, alloc.devices) == (best, (device,))
        row = cache.state.node_index[best]
        assert int(cache.state.gpu_used_milli[row].sum()) == 500  # counted once

    # kube-scheduler retries a bind whose answer it lost: same node, no second binding.
    again = http.post(
        "/bind", json={"PodName": "resnet", "PodNamespace": "default", "PodUID": uid, "Node": best}
    )
    assert again.get_json() == {"Error": ""}
    assert kube_api.count(subresource="binding") == 1
    metrics = http.get("/metrics").text
    assert metric_value(metrics, "qosched_extender_decisions_total", outcome="bound", verb="bind") == 1.0


def test_unmanaged_pod_is_bound_as_the_default_binder_would(live_app: Flask, kube_api: FakeKubeAPI) -> None:
    cache = _cache(live_app)
    assert cache.wait_synced(5.0)
    pod = kube_api.add_pod(make_pod("plain"))
    http = live_app.test_client()
    args = {"Pod": pod, "Nodes": None, "NodeNames": ["gpu-0", "cpu-0"]}
    assert http.post("/filter", json=args).get_json()["NodeNames"] == ["gpu-0", "cpu-0"]
    assert [h["Score"] for h in http.post("/prioritize", json=args).get_json()] == [0, 0]
    uid = pod["metadata"]["uid"]
    bound = http.post(
        "/bind", json={"PodName": "plain", "PodNamespace": "default", "PodUID": uid, "Node": "cpu-0"}
    )
    assert bound.get_json() == {"Error": ""}
    stored = kube_api.get("pods", "plain")
    assert stored is not None
    assert stored["spec"]["nodeName"] == "cpu-0"
    assert not any(k.startswith("qosched.io/") for k in stored["metadata"].get("annotations", {}))


# ------------------------------------------------------------------------------------ api_client_from


def test_api_client_from_kubeconfig_talks_to_the_server(kube_api: FakeKubeAPI, tmp_path: Path) -> None:
    kube_api.add_node("n1", accelerator=None)
    api_client = api_client_from(
        {"KUBECONFIG": str(write_kubeconfig(kube_api.url, tmp_path / "kc.yaml", token="test-token"))}
    )
    try:
        from kubernetes import client

        assert [n.metadata.name for n in client.CoreV1Api(api_client).list_node().items] == ["n1"]
        cfg = api_client.configuration
        assert cfg.auth_settings()["BearerToken"]["value"] == "Bearer test-token"
        assert cfg.keep_alive
        assert cfg.connection_pool_maxsize >= 32
    finally:
        api_client.close()


def test_api_client_from_errors_name_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=f"kubeconfig {tmp_path / 'missing.yaml'}"):
        api_client_from({"KUBECONFIG": str(tmp_path / "missing.yaml")})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(ConfigError, match="pass --kubeconfig outside a cluster"):
        api_client_from({"IN_CLUSTER": True})
