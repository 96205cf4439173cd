"""``KubeBinder``: one ``pods/binding`` POST that binds and annotates atomically, errors mapped.

Against kubefake over loopback with the official client's configuration and pool; the runtime
tests drive ``Runtime.bind`` (reserve → bind → confirm or release) on a ``LiveCluster``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client, watch

from qosched.extender.kube import kube_binder
from qosched.extender.kube.binding import BindError
from qosched.extender.kube.kube_binder import KubeBinder, conflict_node_of
from qosched.extender.server.runtime import Runtime
from tests.extender.live_support import FirstFitPolicy, live_cluster, used_milli, wait_until
from tests.kubefake import FakeKubeAPI, make_pod

RESULT = {
    "qosched.io/device": "1",
    "qosched.io/predicted-latency-ms": "12.500",
    "qosched.io/policy": "qosched",
}


def _pod(name: str, milli: int = 250, **kw: Any) -> dict[str, Any]:
    return make_pod(name, model="resnet50", slo_ms=50, rate_rps=10, gpu_milli=milli, **kw)


def _uid(api: FakeKubeAPI, name: str) -> str:
    pod = api.get("pods", name)
    assert pod is not None
    return str(pod["metadata"]["uid"])


# ------------------------------------------------------------------------------------ the call


def test_one_request_binds_and_annotates_atomically(kube_api: FakeKubeAPI, kube_client: Any) -> None:
    kube_api.add_node("gpu-0", gpus=2)
    kube_api.add_pod(_pod("p"))
    uid = _uid(kube_api, "p")
    rv = str(kube_api.resource_version)
    events: list[dict[str, Any]] = []
    v1 = client.CoreV1Api(kube_client)
    w = watch.Watch()

    def collect() -> None:
        for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5):
            events.append(ev["raw_object"])
            w.stop()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    assert kube_api.wait_for_watches(1)
    kube_api.clear_requests()
    KubeBinder(kube_client, timeout_s=5).bind("default", "p", uid, "gpu-0", RESULT)
    reader.join(5)
    [record] = kube_api.requests
    assert (record.method, record.path, record.status) == (
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        201,
    )
    assert record.body == {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p", "namespace": "default", "uid": uid, "annotations": RESULT},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "gpu-0"},
    }
    # The one and only change the watch saw carries node AND annotations together.
    [changed] = events
    assert changed["spec"]["nodeName"] == "gpu-0"
    assert {k: changed["metadata"]["annotations"][k] for k in RESULT} == RESULT
    assert changed["metadata"]["annotations"]["qosched.io/model"] == "resnet50"  # merged, not replaced


def test_unmanaged_bind_sends_no_annotations(kube_api: FakeKubeAPI, kube_client: Any) -> None:
    kube_api.add_pod("plain")
    KubeBinder(kube_client).bind("default", "plain", "", "node-a", {})
    [record] = kube_api.calls(subresource="binding")
    assert record.body["metadata"] == {"name": "plain", "namespace": "default"}
    pod = kube_api.get("pods", "plain")
    assert pod is not None
    assert pod["spec"]["nodeName"] == "node-a"


def _bound_to(node: str) -> Callable[[FakeKubeAPI], None]:
    return lambda api: api.update("pods", "p", lambda p: p["spec"].update(nodeName=node))


@pytest.mark.parametrize(
    ("prepare", "uid_of", "reason", "conflict_node", "message"),
    [
        (_bound_to("gpu-1"), None, "conflict", "gpu-1", 'already assigned to node "gpu-1"'),
        (_bound_to("gpu-0"), None, "conflict", "gpu-0", 'already assigned to node "gpu-0"'),
        (
            lambda api: None,
            lambda uid: "not-" + uid,
            "conflict",
            None,
            "Precondition failed: UID in precondition",
        ),
        (lambda api: api.delete_pod("p"), None, "not_found", None, 'HTTP 404: pods "p" not found'),
        (
            lambda api: api.update(
                "pods", "p", lambda p: p["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z")
            ),
            None,
            "conflict",
            None,
            "being deleted",
        ),
        (
            lambda api: api.fail_next("/binding$", 500, method="POST"),
            None,
            "api",
            None,
            "HTTP 500: Internal error",
        ),
        (lambda api: api.fail_next("/binding$", 429, method="POST"), None, "api", None, "HTTP 429: Too many"),
        (
            lambda api: api.fail_next("/binding$", 403, method="POST", message="forbidden: RBAC"),
            None,
            "api",
            None,
            "RBAC",
        ),
        (lambda api: api.fail_next("/binding$", 504, method="POST"), None, "timeout", None, "HTTP 504"),
    ],
    ids=[
        "bound-elsewhere",
        "bound-same-node",
        "uid-mismatch",
        "pod-gone",
        "being-deleted",
        "server-error",
        "throttled",
        "forbidden",
        "apiserver-timeout",
    ],
)
def test_api_errors_become_bind_errors(
    kube_api: FakeKubeAPI,
    kube_client: Any,
    prepare: Callable[[FakeKubeAPI], None],
    uid_of: Callable[[str], str] | None,
    reason: str,
    conflict_node: str | None,
    message: str,
) -> None:
    kube_api.add_pod(_pod("p"))
    uid = _uid(kube_api, "p")
    prepare(kube_api)
    with pytest.raises(BindError, match=message) as err:
        KubeBinder(kube_client).bind("default", "p", uid_of(uid) if uid_of else uid, "gpu-0", RESULT)
    assert (err.value.reason, err.value.conflict_node) == (reason, conflict_node)


@pytest.mark.parametrize(
    ("message", "node"),
    [
        (
            'Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "gpu-1"',
            "gpu-1",
        ),
        ('pod p is already assigned to node "ip-10-0-0-1.ec2.internal"', "ip-10-0-0-1.ec2.internal"),
        ("pod p is being deleted, cannot be assigned to a host", None),
        ("", None),
    ],
    ids=["upstream", "dotted-name", "other-conflict", "empty"],
)
def test_conflict_node_parsing(message: str, node: str | None) -> None:
    assert conflict_node_of(message) == node


# ------------------------------------------------------------------------------------ transport


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str | None, int]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.path, self.headers.get("authorization"), self.client_address[1]))  # type: ignore[attr-defined]
        body = b'{"kind":"Status","apiVersion":"v1","status":"Success","code":201}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_auth_header_is_reused_within_the_refresh_window() -> None:
    """The refresh hook (for a kubeconfig: the whole loader) runs at most once per
    ``AUTH_REFRESH_S``, not per bind (issue 19: ~1/8 of a bind's CPU)."""
    calls = []
    with _server(_Recorder) as server:
        cfg = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
        cfg.api_key = {"BearerToken": "t0"}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        cfg.refresh_api_key_hook = calls.append
        with client.ApiClient(cfg) as api_client:
            binder = KubeBinder(api_client)
            for name in ("a", "b", "c"):
                binder.bind("ns", name, "", "n", {})
    assert len(calls) == 1
    assert {auth for _, auth, _ in server.seen} == {"Bearer t0"}  # type: ignore[attr-defined]


def test_auth_header_is_refreshed_per_call_and_connection_is_kept_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kube_binder, "AUTH_REFRESH_S", 0.0)  # every call past the window
    tokens = iter(["t1", "t2", "t3"])
    with _server(_Recorder) as server:
        cfg = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
        cfg.api_key = {"BearerToken": "t0"}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}

        def rotate(c: client.Configuration) -> None:  # what in-cluster config does with the token file
            c.api_key["BearerToken"] = next(tokens)

        cfg.refresh_api_key_hook = rotate
        with client.ApiClient(cfg) as api_client:
            binder = KubeBinder(api_client)
            for name in ("a", "b", "c"):
                binder.bind("ns 1", name, "", "n", {})
        seen = server.seen  # type: ignore[attr-defined]
    assert [(path, auth) for path, auth, _ in seen] == [
        ("/api/v1/namespaces/ns%201/pods/a/binding", "Bearer t1"),
        ("/api/v1/namespaces/ns%201/pods/b/binding", "Bearer t2"),
        ("/api/v1/namespaces/ns%201/pods/c/binding", "Bearer t3"),
    ]
    assert len({port for _, _, port in seen}) == 1  # one kept-alive connection for all three


def test_unanswered_bind_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (kernel backlog), never answers
    try:
        cfg = client.Configuration(host=f"http://127.0.0.1:{listener.getsockname()[1]}")
        with client.ApiClient(cfg) as api_client, pytest.raises(BindError, match="timed out") as err:
            KubeBinder(api_client, timeout_s=0.2).bind("default", "p", "", "n", {})
        assert err.value.reason == "timeout"
    finally:
        listener.close()


def test_refused_connection_is_an_api_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    cfg = client.Configuration(host=f"http://127.0.0.1:{port}")
    cfg.retries = False
    with client.ApiClient(cfg) as api_client, pytest.raises(BindError) as err:
        KubeBinder(api_client).bind("default", "p", "", "n", {})
    assert err.value.reason == "api"
    assert err.value.conflict_node is None


def test_rejects_non_positive_timeout(kube_client: Any) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        KubeBinder(kube_client, timeout_s=0)


# ------------------------------------------------------------------------------------ through the runtime


def test_retried_bind_to_the_same_node_succeeds_without_a_second_binding(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_node("gpu-1", gpus=1)
    kube_api.add_pod(_pod("p", 500))
    with live_cluster(kube_api) as cache:
        runtime = Runtime(cache, FirstFitPolicy(), KubeBinder(cache.api.api_client))
        uid = _uid(kube_api, "p")
        first = runtime.bind("default", "p", uid, "gpu-0")
        assert first.error == ""
        assert first.annotations["qosched.io/device"] == "0"
        again = runtime.bind("default", "p", uid, "gpu-0")
        assert again.error == ""
        assert again.node == "gpu-0"
        elsewhere = runtime.bind("default", "p", uid, "gpu-1")
        assert elsewhere.error == "pod default/p is already bound to node gpu-0"
        assert kube_api.count(subresource="binding") == 1
        assert used_milli(cache, "gpu-0") == [500]
        assert used_milli(cache, "gpu-1") == [0]


@pytest.mark.parametrize(
    ("node", "bound"),
    [("gpu-0", True), ("gpu-1", False)],
    ids=["same-node-is-success", "other-node-is-error"],
)
def test_bind_the_cache_had_not_seen_yet(kube_api: FakeKubeAPI, node: str, bound: bool) -> None:
    """A first attempt went through but its answer was lost; the cache had not seen it either."""
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_node("gpu-1", gpus=1)
    kube_api.add_pod(_pod("p", 500))
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()  # no watch runs: the cache still thinks p is pending
        uid = _uid(kube_api, "p")
        KubeBinder(cache.api.api_client).bind("default", "p", uid, "gpu-0", {"qosched.io/device": "0"})
        outcome = Runtime(cache, FirstFitPolicy(), KubeBinder(cache.api.api_client)).bind(
            "default", "p", uid, node
        )
        if not bound:
            assert outcome.error.startswith("qosched: binding default/p to gpu-1 failed: HTTP 409")
            assert 'already assigned to node "gpu-0"' in outcome.error
        else:
            assert outcome.error == ""
        assert cache.is_assumed(uid) is bound  # kept until the watch confirms, or released
        assert used_milli(cache, node) == ([500] if bound else [0])


def test_uid_mismatch_is_an_error_and_releases_the_reservation(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_pod(_pod("p", 500))
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()
        old_uid = _uid(kube_api, "p")
        kube_api.delete_pod("p")
        kube_api.add_pod(_pod("p", 500))  # recreated: new UID; the cache (no watch) has the old one
        outcome = Runtime(cache, FirstFitPolicy(), KubeBinder(cache.api.api_client)).bind(
            "default", "p", old_uid, "gpu-0"
        )
        assert "Precondition failed: UID in precondition" in outcome.error
        assert not cache.is_assumed(old_uid)
        assert used_milli(cache, "gpu-0") == [0]
        pod = kube_api.get("pods", "p")
        assert pod is not None
        assert "nodeName" not in pod["spec"]


def test_failed_bind_releases_the_reservation(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_pod(_pod("p", 700))
    with live_cluster(kube_api) as cache:
        runtime = Runtime(cache, FirstFitPolicy(), KubeBinder(cache.api.api_client))
        uid = _uid(kube_api, "p")
        kube_api.fail_next("/binding$", 503, method="POST")
        outcome = runtime.bind("default", "p", uid, "gpu-0")
        assert outcome.error.startswith("qosched: binding default/p to gpu-0 failed: HTTP 503")
        assert not cache.is_assumed(uid)
        assert used_milli(cache, "gpu-0") == [0]
        retry = runtime.bind("default", "p", uid, "gpu-0")  # kube-scheduler retries the pod
        assert retry.error == ""
        assert used_milli(cache, "gpu-0") == [700]


def test_concurrent_binds_never_double_book_a_device(kube_api: FakeKubeAPI) -> None:
    """12 pods of 300 milli on 2 GPUs (3 fit per GPU): 12 threads bind at once."""
    kube_api.add_node("gpu-0", gpus=2)
    names = [f"p{i:02d}" for i in range(12)]
    for name in names:
        kube_api.add_pod(_pod(name, 300))
    with live_cluster(kube_api) as cache:
        runtime = Runtime(cache, FirstFitPolicy(), KubeBinder(cache.api.api_client))
        uids = {name: _uid(kube_api, name) for name in names}
        barrier = threading.Barrier(len(names))

        def bind(name: str) -> str:
            barrier.wait()
            return runtime.bind("default", name, uids[name], "gpu-0").error

        with ThreadPoolExecutor(len(names)) as pool:
            errors = dict(zip(names, pool.map(bind, names), strict=True))
        bound = [n for n, e in errors.items() if not e]
        assert 1 <= len(bound) <= 6
        assert all("cannot reserve" in e or "no longer fits" in e for e in errors.values() if e)
        per_device = [0, 0]
        for name in names:
            pod = kube_api.get("pods", name)
            assert pod is not None
            if name in bound:
                assert pod["spec"]["nodeName"] == "gpu-0"
                per_device[int(pod["metadata"]["annotations"]["qosched.io/device"])] += 300
            else:
                assert "nodeName" not in pod["spec"]
                assert not cache.is_assumed(uids[name])
        assert max(per_device) <= 900
        wait_until(lambda: cache.stats().assumed == 0, what="watch confirmations")
        assert used_milli(cache, "gpu-0") == per_device
        # What failed can be retried one by one until the GPUs are full (3 × 300 per GPU).
        for name in names:
            if name not in bound:
                runtime.bind("default", name, uids[name], "gpu-0")
        assert used_milli(cache, "gpu-0") == [900, 900]
        assert kube_api.count(subresource="binding") == 6


def test_binding_body_is_valid_json() -> None:
    body = KubeBinder.body("ns", "p", "u-1", "n", {"qosched.io/device": "0,1"})
    assert json.loads(body)["metadata"] == {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "annotations": {"qosched.io/device": "0,1"},
    }
