"""The live cache (``qosched.extender.kube.watch``): list → replace → watch → recover, against kubefake.

Every test talks real HTTP on 127.0.0.1 to the in-process fake kube-apiserver through the
official client, and checks the accounts the policies read (milli-GPU per device, pod counts)
and the requests the cache made (from the fake's request log).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest

from qosched.extender.kube.cache import ClusterCache
from qosched.extender.kube.objects import pod_demand
from qosched.extender.kube.watch import (
    LAST_APPLIED,
    Backoff,
    Gone,
    LiveCluster,
    WatchError,
    WatchSettings,
    iter_lines,
    slim_pod,
)
from qosched.extender.server.runtime import Runtime
from qosched.extender.server.settings import ConfigError
from tests.extender.live_support import (
    FAST,
    FakeClock,
    FirstFitPolicy,
    device_memory,
    live_cluster,
    lookup,
    looping,
    used_milli,
    wait_until,
    watch_queries,
)
from tests.kubefake import FakeKubeAPI, make_node, make_pod


def _pod(
    name: str, milli: int, node: str | None = None, device: str | None = None, **kw: Any
) -> dict[str, Any]:
    ann = {"qosched.io/device": device} if device is not None else None
    return make_pod(
        name, model="resnet50", slo_ms=50, rate_rps=10, gpu_milli=milli, node_name=node, annotations=ann, **kw
    )


def _uid(api: FakeKubeAPI, name: str, namespace: str = "default") -> str:
    pod = api.get("pods", name, namespace)
    assert pod is not None
    return str(pod["metadata"]["uid"])


# ------------------------------------------------------------------------------------ first sync


def test_first_sync_lists_nodes_then_pods_before_any_watch_and_only_then_is_ready(
    kube_api: FakeKubeAPI,
) -> None:
    kube_api.add_node("gpu-0", gpus=2)
    kube_api.add_node("gpu-1", gpus=1)
    kube_api.add_pod(_pod("a", 250, "gpu-0", "1"))
    kube_api.add_pod(_pod("b", 1000, "gpu-1"))  # no device annotation: first fit → device 0
    kube_api.add_pod(_pod("pending", 500))
    kube_api.add_pod(_pod("done", 500, "gpu-0", "0", phase="Succeeded"))
    with live_cluster(kube_api, start=False) as cache:
        assert not cache.synced
        cache.start()
        assert cache.wait_synced(5.0)
        assert kube_api.wait_for_watches(2)
        verbs = [(r.verb, r.path) for r in kube_api.requests]
        assert verbs[:2] == [("list", "/api/v1/nodes"), ("list", "/api/v1/pods")]
        assert {v for v, _ in verbs[2:]} == {"watch"}
        stats = cache.stats()
        # "done" is outside the field selector (finished pods are never listed).
        assert (stats.nodes, stats.pods, stats.placed, stats.assumed) == (2, 3, 2, 0)
        assert used_milli(cache, "gpu-0") == [0, 250]
        assert used_milli(cache, "gpu-1") == [1000]
        assert cache.pod_by_name("default", "pending") is not None  # /bind finds pending pods
        assert cache.resource_versions == {"nodes": "6", "pods": "6"}
        query = kube_api.calls(verb="list", path="^/api/v1/pods$")[0].query
        assert query["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed"


def test_first_list_is_paged(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=4)
    for i in range(7):
        kube_api.add_pod(_pod(f"p{i}", 100, "gpu-0", "0"))
    with live_cluster(kube_api, watch=dataclasses.replace(FAST, list_page_size=3)) as cache:
        assert kube_api.count(verb="list", path="^/api/v1/pods$") == 3  # 3 + 3 + 1
        assert used_milli(cache, "gpu-0") == [700, 0, 0, 0]


def test_list_failures_back_off_and_retry(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.fail_next("^/api/v1/nodes$", 500, times=2, verb="list")
    kube_api.fail_next("^/api/v1/pods$", 503, times=1, verb="list")
    with live_cluster(kube_api) as cache:
        lists = [(r.path, r.status) for r in kube_api.calls(verb="list")]
        assert lists == [
            ("/api/v1/nodes", 500),
            ("/api/v1/nodes", 500),
            ("/api/v1/nodes", 200),
            ("/api/v1/pods", 503),
            ("/api/v1/nodes", 200),  # a sync is one consistent attempt: both lists again
            ("/api/v1/pods", 200),
        ]
        assert cache.synced
        assert cache.stats().nodes == 1


# ------------------------------------------------------------------------------------ events


def _add_bound(api: FakeKubeAPI) -> None:
    api.add_pod(_pod("new", 500, "gpu-0", "1"))


def _bind_pending(api: FakeKubeAPI) -> None:
    def bound(pod: dict[str, Any]) -> None:
        pod["spec"]["nodeName"] = "gpu-0"
        pod["metadata"]["annotations"]["qosched.io/device"] = "0"

    api.update("pods", "waiting", bound)


def _finish(api: FakeKubeAPI) -> None:
    api.update("pods", "running", lambda p: p["status"].update(phase="Succeeded"))


def _delete(api: FakeKubeAPI) -> None:
    api.delete_pod("running")


def _delete_node(api: FakeKubeAPI) -> None:
    api.delete_node("gpu-0")


def _cordon(api: FakeKubeAPI) -> None:
    api.update("nodes", "gpu-0", lambda n: n["spec"].update(unschedulable=True))


def _add_node(api: FakeKubeAPI) -> None:
    api.add_node("gpu-9", gpus=4)


@pytest.mark.parametrize(
    ("action", "check"),
    [
        (_add_bound, lambda c: used_milli(c, "gpu-0") == [250, 500] and c.stats().placed == 2),
        (_bind_pending, lambda c: used_milli(c, "gpu-0") == [1000, 0] and c.stats().placed == 2),
        (_finish, lambda c: used_milli(c, "gpu-0") == [0, 0] and c.stats().pods == 1),
        (_delete, lambda c: used_milli(c, "gpu-0") == [0, 0] and c.stats().pods == 1),
        (_delete_node, lambda c: "gpu-0" not in c._nodes and c.stats().placed == 0),
        (
            _cordon,
            lambda c: (
                not c.state.schedulable[c.state.node_index["gpu-0"]] and used_milli(c, "gpu-0") == [250, 0]
            ),
        ),
        (_add_node, lambda c: used_milli(c, "gpu-9") == [0, 0, 0, 0] and c.stats().nodes == 2),
    ],
    ids=[
        "pod-added-bound",
        "pod-bound-later",
        "pod-finished",
        "pod-deleted",
        "node-deleted",
        "node-cordoned",
        "node-added",
    ],
)
def test_events_update_the_accounts(
    kube_api: FakeKubeAPI, action: Callable[[FakeKubeAPI], None], check: Callable[[LiveCluster], bool]
) -> None:
    kube_api.add_node("gpu-0", gpus=2)
    kube_api.add_pod(_pod("running", 250, "gpu-0", "0"))
    kube_api.add_pod(_pod("waiting", 750))
    with live_cluster(kube_api) as cache:
        assert used_milli(cache, "gpu-0") == [250, 0]
        action(kube_api)
        wait_until(lambda: check(cache), what="the event to reach the cache")
        assert cache.lists == {"nodes": 1, "pods": 1}


def test_pod_seen_before_its_node_is_accounted_when_the_node_arrives() -> None:
    cache = ClusterCache(lookup, device_memory)
    early = _pod("early", 500, "gpu-7", "1")
    early["metadata"]["uid"] = "u1"
    cache.apply_pod(early)
    assert cache.stats().placed == 0
    assert cache.stats().pods == 1
    cache.apply_node(make_node("gpu-7", gpus=2))
    assert cache.state.allocation("u1") is not None
    assert [int(x) for x in cache.state.gpu_used_milli[0, :2]] == [0, 500]
    cache.delete_node("gpu-7")
    assert cache.stats().placed == 0
    cache.apply_node(make_node("gpu-7", gpus=2))  # the node comes back (re-registered)
    assert [int(x) for x in cache.state.gpu_used_milli[0, :2]] == [0, 500]


def test_lists_freeze_the_collector_when_asked(kube_api: FakeKubeAPI) -> None:
    import gc

    kube_api.add_node("gpu-0", gpus=1)
    for i in range(5):
        kube_api.add_pod(_pod(f"p{i}", 100, "gpu-0", "0"))
    before = gc.get_freeze_count()
    try:
        watch = dataclasses.replace(FAST, gc_freeze_after_list=True, list_page_size=2)
        with live_cluster(kube_api, start=False, watch=watch) as cache:
            cache.sync()
            assert gc.get_freeze_count() > before
            assert used_milli(cache, "gpu-0") == [500]
    finally:
        gc.unfreeze()


# ------------------------------------------------------------------------------------ recovery


def test_dropped_watch_resumes_from_the_newest_version_without_a_relist(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=2)
    with live_cluster(kube_api) as cache:
        kube_api.add_pod(_pod("a", 250, "gpu-0", "0"))
        newest = str(kube_api.resource_version)
        wait_until(lambda: cache.resource_versions["pods"] == newest, what="pod event")
        assert kube_api.drop_watches() == 2
        wait_until(
            lambda: len(watch_queries(kube_api, "pods")) == 2 and kube_api.open_watches == 2, what="re-watch"
        )
        assert watch_queries(kube_api, "pods") == ["1", newest]
        assert watch_queries(kube_api, "nodes") == ["1", "1"]  # nothing happened to nodes since the list
        kube_api.add_pod(_pod("b", 500, "gpu-0", "1"))
        wait_until(lambda: used_milli(cache, "gpu-0") == [250, 500], what="event after the reconnect")
        assert kube_api.count(verb="list") == 2
        assert cache.lists == {"nodes": 1, "pods": 1}


def test_bookmark_advances_the_version_a_reconnect_uses(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    with live_cluster(kube_api) as cache:
        kube_api.add_configmap("unrelated", "default")  # moves the global version, no pod event
        newest = str(kube_api.resource_version)
        assert cache.resource_versions["pods"] != newest
        kube_api.send_bookmarks()
        wait_until(lambda: cache.resource_versions["pods"] == newest, what="bookmark")
        kube_api.drop_watches(graceful=True)  # as a server-side timeout ends a stream
        wait_until(lambda: len(watch_queries(kube_api, "pods")) == 2, what="re-watch")
        assert watch_queries(kube_api, "pods")[-1] == newest
        assert cache.lists == {"nodes": 1, "pods": 1}


def _gap(api: FakeKubeAPI) -> None:
    """Changes the pods watch misses (it is not running), then compaction: its version is gone."""
    api.add_pod(_pod("c", 500, "gpu-0", "1"))
    api.delete_pod("a")
    api.update("nodes", "gpu-0", lambda n: n["metadata"].update(labels={**n["metadata"]["labels"], "x": "y"}))
    api.compact()


@pytest.mark.parametrize("how", ["error-event", "http-410"], ids=["error-event-410", "http-410"])
def test_expired_version_relists_that_resource_only(kube_api: FakeKubeAPI, how: str) -> None:
    kube_api.add_node("gpu-0", gpus=2)
    kube_api.add_pod(_pod("a", 250, "gpu-0", "0"))
    kube_api.add_pod(_pod("b", 100, "gpu-0", "0"))
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()
        old = cache.resource_versions["pods"]
        _gap(kube_api)
        if how == "http-410":
            kube_api.fail_next("^/api/v1/pods$", 410, verb="watch")
        with looping(cache, "pods", old):
            wait_until(
                lambda: cache.lists["pods"] == 2 and kube_api.open_watches == 1, what="relist and re-watch"
            )
            assert used_milli(cache, "gpu-0") == [100, 500]
            assert {a.pod.name for a in cache.state.allocations()} == {"b", "c"}
        watches = watch_queries(kube_api, "pods")
        assert watches[0] == old
        assert watches[-1] == str(kube_api.resource_version)
        kinds = [(r.verb, r.path) for r in kube_api.requests]
        assert kinds.count(("list", "/api/v1/nodes")) == 1  # nodes were not relisted
        assert cache.lists == {"nodes": 1, "pods": 2}


def test_watch_5xx_backs_off_and_rewatches_from_the_same_version(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()
        rv = cache.resource_versions["pods"]
        kube_api.fail_next("^/api/v1/pods$", 500, times=3, verb="watch")
        with looping(cache, "pods", rv):
            wait_until(lambda: kube_api.open_watches == 1, what="watch after the failures")
        statuses = [(r.query.get("resourceVersion"), r.status) for r in kube_api.calls(verb="watch")]
        assert statuses == [(rv, 500)] * 3 + [(rv, 200)]
        assert cache.lists["pods"] == 1


def test_iterations_bound_the_loop(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()
        kube_api.fail_next("^/api/v1/pods$", 500, times=3, verb="watch")
        cache.watch_loop("pods", cache.resource_versions["pods"], iterations=2)  # returns by itself
        assert [r.status for r in kube_api.calls(verb="watch")] == [500, 500]


def test_unexpected_error_is_logged_and_the_loop_goes_on(
    kube_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_pod(_pod("a", 300, "gpu-0", "0"))
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()
        real = cache.replace_pods
        calls = []

        def flaky(pods: Any) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("bug in a relist")
            real(pods)

        cache.replace_pods = flaky  # type: ignore[method-assign]
        with (
            caplog.at_level(logging.ERROR, logger="qosched.extender.kube.watch"),
            looping(cache, "pods", None),
        ):
            wait_until(lambda: cache.lists["pods"] == 2 and kube_api.open_watches == 1, what="recovery")
        assert "pods watch failed unexpectedly" in caplog.text
        assert "bug in a relist" in caplog.text
        assert used_milli(cache, "gpu-0") == [300]


def test_stop_ends_the_threads_promptly(kube_api: FakeKubeAPI) -> None:
    import time

    kube_api.add_node("gpu-0", gpus=1)
    with live_cluster(kube_api) as cache:
        assert cache.running
        t0 = time.monotonic()
        cache.stop()
        assert time.monotonic() - t0 < 1.0
        assert not cache.running


# ------------------------------------------------------------------------------------ canned streams

STREAM_WITH_UNKNOWN_EVENT = [
    {"type": "ADDED", "object": {"metadata": {"name": "n1", "resourceVersion": "5"}}},
    {"type": "SURPRISE", "object": {"metadata": {"name": "n1", "resourceVersion": "6"}}},
    {"type": "BOOKMARK", "object": {"kind": "Node", "metadata": {"resourceVersion": "9"}}},
]
STREAM_WITH_ERROR_410GONE = [
    {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "code": 410,
            "reason": "Expired",
            "message": "too old resource version: 1 (4)",
        },
    },
]
STREAM_WITH_ERROR_CODE = [
    {
        "type": "ERROR",
        "object": {"kind": "Status", "code": 500, "reason": "InternalError", "message": "boom"},
    },
]


def _offline_cache() -> LiveCluster:
    from kubernetes import client

    return LiveCluster(
        client.ApiClient(client.Configuration(host="http://127.0.0.1:9")), lookup, device_memory, watch=FAST
    )


def test_unknown_event_is_logged_and_skipped_bookmark_moves_version(caplog: pytest.LogCaptureFixture) -> None:
    cache = _offline_cache()
    with caplog.at_level(logging.WARNING, logger="qosched.extender.kube.watch"):
        seen = []
        for event in STREAM_WITH_UNKNOWN_EVENT:
            cache.dispatch("nodes", event)
            seen.append(cache.resource_versions.get("nodes"))
    assert seen == ["5", "5", "9"]
    # Only the watch's own records: threads of other tests (urllib3 retries) may log meanwhile.
    watch_records = [r.getMessage() for r in caplog.records if r.name == "qosched.extender.kube.watch"]
    assert watch_records == ["nodes watch: unknown event type 'SURPRISE' skipped"]
    assert cache.stats().nodes == 1


@pytest.mark.parametrize(
    ("stream", "error", "match"),
    [
        (STREAM_WITH_ERROR_410GONE, Gone, "Expired: too old resource version: 1 \\(4\\)"),
        (STREAM_WITH_ERROR_CODE, WatchError, "ERROR event 500 InternalError: boom"),
    ],
    ids=["410-gone", "error-500"],
)
def test_error_events(stream: list[dict[str, Any]], error: type[Exception], match: str) -> None:
    cache = _offline_cache()
    with pytest.raises(error, match=match):
        cache.dispatch("pods", stream[0])


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b'{"a":1}\n{"b":2}\n'], [b'{"a":1}', b'{"b":2}']),
        ([b'{"a"', b":1}\n{", b'"b":2}\n'], [b'{"a":1}', b'{"b":2}']),
        ([b'{"a":1}\n\n', b"", b'{"b":2}'], [b'{"a":1}', b'{"b":2}']),
        ([], []),
    ],
    ids=["one-chunk", "split-across-chunks", "blank-and-unterminated", "empty"],
)
def test_iter_lines(chunks: list[bytes], lines: list[bytes]) -> None:
    assert list(iter_lines(chunks)) == lines


# ------------------------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("jitter", "at_least", "expected"),
    [
        (0.0, 0.0, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),
        (0.0, 3.0, [3.0, 3.0, 3.0, 4.0, 8.0, 16.0, 30.0, 30.0]),  # Retry-After floor
        (0.0, 99.0, [30.0] * 8),  # ... but never above the cap
    ],
    ids=["doubling-to-cap", "retry-after-floor", "retry-after-capped"],
)
def test_backoff_sequence(jitter: float, at_least: float, expected: list[float]) -> None:
    backoff = Backoff(WatchSettings(backoff_jitter_frac=jitter), random.Random(0))
    assert [backoff.next_s(at_least) for _ in expected] == pytest.approx(expected)
    backoff.reset()
    assert backoff.next_s() == pytest.approx(0.5)


def test_backoff_jitter_stays_in_its_band() -> None:
    backoff = Backoff(WatchSettings(backoff_jitter_frac=0.5), random.Random(3))
    for n in range(12):
        nominal = min(30.0, 0.5 * 2.0**n)
        assert nominal * 0.5 <= backoff.next_s() <= nominal


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("server_timeout_s", 0.0),
        ("client_read_timeout_s", -1.0),
        ("backoff_initial_s", 60.0),
        ("backoff_factor", 0.5),
        ("backoff_jitter_frac", 1.0),
        ("relist_interval_s", -1.0),
        ("list_page_size", -5),
    ],
    ids=["server-timeout", "read-timeout", "initial-over-max", "factor", "jitter", "relist", "page-size"],
)
def test_watch_settings_reject_bad_values(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        WatchSettings(**{field: value})


def test_watch_settings_from_extender_config() -> None:
    s = WatchSettings.from_config(
        {"WATCH_TIMEOUT_S": 120, "WATCH_BACKOFF_S": "0.25", "WATCH_BACKOFF_MAX_S": 10}
    )
    assert (s.server_timeout_s, s.backoff_initial_s, s.backoff_max_s) == (120.0, 0.25, 10.0)
    with pytest.raises(ConfigError, match="WATCH_BACKOFF_S"):
        WatchSettings.from_config({"WATCH_BACKOFF_S": "soon"})


def test_slim_pod_keeps_what_decisions_read() -> None:
    full = _pod("big", 250, "gpu-0", "0", priority=5, priority_class_name="high")
    full["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:x": {}}}]
    full["metadata"]["annotations"][LAST_APPLIED] = "{" + "x" * 5000 + "}"
    full["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    full["spec"]["containers"][0].update(env=[{"name": "A", "value": "1"}], command=["serve"])
    full["spec"]["initContainers"] = [
        {"name": "i", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}}
    ]
    full["status"]["containerStatuses"] = [{"name": "server", "ready": True}]
    slim = slim_pod(full)
    assert "managedFields" not in slim["metadata"]
    assert LAST_APPLIED not in slim["metadata"]["annotations"]
    assert "volumes" not in slim["spec"]
    assert slim["spec"]["containers"] == [
        {"name": "server", "resources": full["spec"]["containers"][0]["resources"]}
    ]
    assert slim["spec"]["initContainers"] == [
        {"name": "i", "resources": {"requests": {"cpu": "1"}}, "restartPolicy": "Always"}
    ]
    assert slim["status"] == {"phase": "Running"}
    assert pod_demand(slim) == pod_demand(full)
    assert len(str(slim)) < len(str(full)) / 4


# ------------------------------------------------------------------------------------ assumptions


class _NoApiBinder:
    """Binds nothing: the API server never confirms (expiry and relist tests)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def bind(self, namespace: str, name: str, uid: str, node: str, annotations: Any) -> None:
        self.calls.append((f"{namespace}/{name}", node))


def test_bound_pod_is_accounted_at_once_then_confirmed_without_double_counting(kube_api: FakeKubeAPI) -> None:
    from qosched.extender.kube.kube_binder import KubeBinder

    kube_api.add_node("gpu-0", gpus=2)
    kube_api.add_pod(_pod("p", 600))
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()  # the pods watch is not running yet: nothing can confirm
        runtime = Runtime(cache, FirstFitPolicy(), KubeBinder(cache.api.api_client))
        uid = _uid(kube_api, "p")
        assert runtime.bind("default", "p", uid, "gpu-0").error == ""
        assert cache.is_assumed(uid)
        assert used_milli(cache, "gpu-0") == [600, 0]
        with looping(cache, "pods", cache.resource_versions["pods"]):
            wait_until(lambda: not cache.is_assumed(uid), what="watch confirmation")
            assert used_milli(cache, "gpu-0") == [600, 0]
            assert cache.stats().placed == 1


def test_assumption_dropped_when_the_pod_is_deleted(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_pod(_pod("p", 400))
    with live_cluster(kube_api) as cache:
        runtime = Runtime(cache, FirstFitPolicy(), _NoApiBinder())
        uid = _uid(kube_api, "p")
        assert runtime.bind("default", "p", uid, "gpu-0").error == ""
        assert used_milli(cache, "gpu-0") == [400]
        kube_api.delete_pod("p")
        wait_until(lambda: used_milli(cache, "gpu-0") == [0], what="release on delete")
        assert not cache.is_assumed(uid)


def test_unconfirmed_assumption_expires_after_its_ttl(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_pod(_pod("p", 400))
    clock = FakeClock()
    with live_cluster(kube_api, clock=clock, assume_ttl_s=30.0) as cache:
        runtime = Runtime(cache, FirstFitPolicy(), _NoApiBinder())
        uid = _uid(kube_api, "p")
        assert runtime.bind("default", "p", uid, "gpu-0").error == ""
        # A pending update of the pod (older than our bind, as far as the cache knows) keeps it.
        kube_api.update("pods", "p", lambda p: p["metadata"].update(labels={"seen": "1"}))
        wait_until(
            lambda: (cache.pod(uid) or {}).get("metadata", {}).get("labels") == {"seen": "1"}, what="event"
        )
        clock.advance(29.9)
        with cache.reading():
            pass
        assert cache.is_assumed(uid)
        assert used_milli(cache, "gpu-0") == [400]
        clock.advance(0.2)
        with cache.reading():
            pass
        assert not cache.is_assumed(uid)
        assert used_milli(cache, "gpu-0") == [0]


@pytest.mark.parametrize(("delete", "kept"), [(False, True), (True, False)], ids=["listed-pending", "absent"])
def test_pod_relist_keeps_only_uncontradicted_assumptions(
    kube_api: FakeKubeAPI, delete: bool, kept: bool
) -> None:
    kube_api.add_node("gpu-0", gpus=1)
    kube_api.add_pod(_pod("p", 400))
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()
        runtime = Runtime(cache, FirstFitPolicy(), _NoApiBinder())
        uid = _uid(kube_api, "p")
        assert runtime.bind("default", "p", uid, "gpu-0").error == ""
        if delete:
            kube_api.delete_pod("p")
        cache.relist("pods")
        assert cache.is_assumed(uid) is kept
        assert used_milli(cache, "gpu-0") == ([400] if kept else [0])


def test_node_relist_keeps_pods_and_versions_only_grow(kube_api: FakeKubeAPI) -> None:
    kube_api.add_node("gpu-0", gpus=2)
    kube_api.add_node("gpu-1", gpus=1)
    kube_api.add_pod(_pod("a", 250, "gpu-0", "1"))
    kube_api.add_pod(_pod("b", 1000, "gpu-1", "0"))
    with live_cluster(kube_api, start=False) as cache:
        cache.sync()
        version = cache.state.version
        kube_api.delete_node("gpu-1")
        cache.relist("nodes")
        assert cache.state.version > version
        assert used_milli(cache, "gpu-0") == [0, 250]
        assert cache.stats().placed == 1
        kube_api.add_node("gpu-1", gpus=1)  # re-registered: its pod counts again
        cache.relist("nodes")
        assert used_milli(cache, "gpu-1") == [1000]
        assert cache.stats().placed == 2
        assert cache.lists == {"nodes": 3, "pods": 1}
