"""The fake kube-apiserver, driven through the official ``kubernetes`` client (v37) unmodified.

Each test states the kube-apiserver behaviour it pins (codes, reasons, messages, event order), so a
failure here means the fake no longer speaks the protocol qosched's cache and binder will meet.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import urllib3
from kubernetes import client, watch

from tests.kubefake import FakeKubeAPI, load_snapshot, make_node, make_pod
from tests.kubefake.patch import apply_json_patch, apply_merge_patch, apply_patch, apply_strategic_merge_patch
from tests.kubefake.pods import compute_qos_class, parse_quantity
from tests.kubefake.selectors import parse_field_selector, parse_label_selector
from tests.kubefake.status import ApiError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
CLUSTER_YAML = SHARED / "fixtures" / "kube-scheduler" / "cluster.yaml"


def _binding(
    name: str, node: str, *, uid: str | None = None, annotations: dict[str, str] | None = None
) -> Any:
    return client.V1Binding(
        metadata=client.V1ObjectMeta(name=name, uid=uid, annotations=annotations),
        target=client.V1ObjectReference(kind="Node", name=node),
    )


def _body(exc: client.ApiException) -> dict[str, Any]:
    return json.loads(exc.body or "null")


def _collect(events: Iterator[dict[str, Any]], w: watch.Watch, n: int) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the first ``n`` events, then stop the stream."""
    out = []
    for ev in events:
        raw = ev["raw_object"]
        out.append((ev["type"], raw["metadata"].get("name", ""), raw["metadata"]["resourceVersion"]))
        if len(out) == n:
            w.stop()
    return out


def _in_thread(api: FakeKubeAPI, action: Callable[[], object], watches: int = 1) -> threading.Thread:
    """Run ``action`` once ``watches`` watch streams are open (so no event races the watch)."""

    def run() -> None:
        assert api.wait_for_watches(watches, timeout_s=5)
        action()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# ------------------------------------------------------------------------------------------ LIST / GET


def test_list_reports_global_resource_version_and_items_without_kind(
    kube_api: FakeKubeAPI, core_v1: Any
) -> None:
    kube_api.add_node("gpu-0", gpus=2)
    kube_api.add_pod("p0", model="resnet50", slo_ms=50, rate_rps=20)
    kube_api.add_configmap("cm", "default")  # another resource still takes the next global version
    listed = core_v1.list_node()
    assert listed.metadata.resource_version == "3" == str(kube_api.resource_version)
    assert [n.metadata.resource_version for n in listed.items] == ["1"]
    raw = json.loads(core_v1.list_pod_for_all_namespaces(_preload_content=False).data)
    assert raw["kind"] == "PodList"
    assert raw["apiVersion"] == "v1"
    assert "kind" not in raw["items"][0]
    assert "apiVersion" not in raw["items"][0]
    single = json.loads(core_v1.read_namespaced_pod("p0", "default", _preload_content=False).data)
    assert (single["kind"], single["apiVersion"]) == ("Pod", "v1")
    assert single["metadata"]["annotations"]["qosched.io/slo-ms"] == "50"


def test_get_missing_pod_is_404_not_found(core_v1: Any) -> None:
    with pytest.raises(client.ApiException) as err:
        core_v1.read_namespaced_pod("nope", "default")
    assert err.value.status == 404
    assert _body(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        ({"field_selector": "spec.nodeName="}, ["pending-a", "pending-b"]),
        ({"field_selector": "spec.nodeName=gpu-0"}, ["bound-a"]),
        ({"field_selector": "spec.nodeName!=gpu-0"}, ["pending-a", "pending-b"]),
        ({"field_selector": "metadata.name=pending-b"}, ["pending-b"]),
        (
            {"field_selector": "status.phase!=Succeeded,status.phase!=Failed"},
            ["bound-a", "pending-a", "pending-b"],
        ),
        ({"label_selector": "app=web"}, ["bound-a", "pending-a"]),
        ({"label_selector": "app!=web"}, ["pending-b"]),
        ({"label_selector": "app in (web,db),tier=gold"}, ["pending-a"]),
        ({"label_selector": "!tier"}, ["bound-a", "pending-b"]),
    ],
    ids=[
        "unscheduled",
        "on-node",
        "not-on-node",
        "by-name",
        "scheduler-informer",
        "label-eq",
        "label-ne",
        "label-set-and",
        "label-absent",
    ],
)
def test_list_selectors(kube_api: FakeKubeAPI, core_v1: Any, kwargs: dict[str, str], want: list[str]) -> None:
    kube_api.add_pod("bound-a", node_name="gpu-0", labels={"app": "web"})
    kube_api.add_pod("pending-a", labels={"app": "web", "tier": "gold"})
    kube_api.add_pod("pending-b")
    names = [p.metadata.name for p in core_v1.list_namespaced_pod("default", **kwargs).items]
    assert names == want


def test_unsupported_field_selector_is_400(core_v1: Any) -> None:
    with pytest.raises(client.ApiException) as err:
        core_v1.list_pod_for_all_namespaces(field_selector="spec.priority=5")
    assert err.value.status == 400
    assert _body(err.value)["message"] == "field label not supported: spec.priority"


def test_list_pages_with_limit_and_continue(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    for i in range(5):
        kube_api.add_pod(f"p{i}")
    first = core_v1.list_namespaced_pod("default", limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3
    kube_api.add_pod("p9")  # written after the first page: a consistent list must not show it
    second = core_v1.list_namespaced_pod("default", limit=10, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["p2", "p3", "p4"]
    assert second.metadata.resource_version == first.metadata.resource_version
    kube_api.compact()
    with pytest.raises(client.ApiException) as err:
        core_v1.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
    assert err.value.status == 410
    assert _body(err.value)["reason"] == "Expired"


def test_exact_list_rebuilds_old_state_and_expires_after_compaction(
    kube_api: FakeKubeAPI, core_v1: Any
) -> None:
    kube_api.add_pod("a")
    rv_one = core_v1.list_namespaced_pod("default").metadata.resource_version
    kube_api.add_pod("b")
    kube_api.update("pods", "a", lambda p: p["metadata"].update(labels={"x": "1"}))
    kube_api.delete_pod("a")
    old = core_v1.list_namespaced_pod("default", resource_version=rv_one, resource_version_match="Exact")
    assert [(p.metadata.name, p.metadata.labels) for p in old.items] == [("a", None)]
    kube_api.compact()
    with pytest.raises(client.ApiException) as err:
        core_v1.list_namespaced_pod("default", resource_version=rv_one, resource_version_match="Exact")
    assert err.value.status == 410
    assert _body(err.value)["message"] == f"too old resource version: {rv_one} (4)"


# ------------------------------------------------------------------------------------------ WATCH


def test_watch_streams_added_modified_deleted_in_order(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("old")
    rv = core_v1.list_pod_for_all_namespaces().metadata.resource_version

    def writes() -> None:
        kube_api.add_pod("p")
        kube_api.update("pods", "p", lambda pod: pod["metadata"].update(annotations={"k": "v"}))
        kube_api.delete_pod("p")

    _in_thread(kube_api, writes)
    w = watch.Watch()
    got = _collect(
        w.stream(core_v1.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5), w, 3
    )
    assert got == [("ADDED", "p", "2"), ("MODIFIED", "p", "3"), ("DELETED", "p", "4")]


def test_watch_without_resource_version_starts_with_synthetic_added(
    kube_api: FakeKubeAPI, core_v1: Any
) -> None:
    kube_api.add_node("n1")
    kube_api.add_node("n0")
    w = watch.Watch()
    got = _collect(w.stream(core_v1.list_node, timeout_seconds=5), w, 2)
    assert got == [("ADDED", "n0", "2"), ("ADDED", "n1", "1")]  # key order, each at its own version


def test_watch_event_objects_deserialise_to_models(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    rv = core_v1.list_pod_for_all_namespaces().metadata.resource_version
    _in_thread(kube_api, lambda: kube_api.add_pod("m", model="resnet50", slo_ms=50, node_name="gpu-0"))
    w = watch.Watch()
    for ev in w.stream(core_v1.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
        assert isinstance(ev["object"], client.V1Pod)
        pod: Any = ev["object"]
        assert ev["raw_object"]["kind"] == "Pod"  # watch event objects carry their kind
        assert pod.spec.node_name == "gpu-0"
        assert pod.metadata.annotations["qosched.io/model"] == "resnet50"
        w.stop()


def test_field_selected_watch_turns_binding_into_deleted(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    """kube-scheduler's pending-pod informer watches ``spec.nodeName=``: a bind leaves the selection."""
    kube_api.add_pod("p")
    rv = core_v1.list_pod_for_all_namespaces().metadata.resource_version

    def bind_then_add() -> None:
        core_v1.create_namespaced_pod_binding("p", "default", _binding("p", "gpu-0"), _preload_content=False)
        kube_api.add_pod("q")

    _in_thread(kube_api, bind_then_add)
    w = watch.Watch()
    stream = w.stream(
        core_v1.list_pod_for_all_namespaces,
        resource_version=rv,
        field_selector="spec.nodeName=",
        timeout_seconds=5,
    )
    assert _collect(stream, w, 2) == [("DELETED", "p", "2"), ("ADDED", "q", "3")]


@pytest.mark.parametrize(
    "client_timeout", [True, False], ids=["timeout-set-no-retry", "no-timeout-retries-once"]
)
def test_watch_from_compacted_version_raises_410(
    kube_api: FakeKubeAPI, core_v1: Any, client_timeout: bool
) -> None:
    """The server answers 200 + one ERROR event (Status 410 Expired); the client raises ApiException(410).

    Without ``timeout_seconds`` the client retries once from the same version before raising.
    """
    kube_api.add_pod("a")
    kube_api.add_pod("b")
    kube_api.compact()
    kwargs: dict[str, Any] = {"resource_version": "1"}
    if client_timeout:
        kwargs["timeout_seconds"] = 5
    with pytest.raises(client.ApiException) as err:
        list(watch.Watch().stream(core_v1.list_pod_for_all_namespaces, **kwargs))
    assert err.value.status == 410
    assert err.value.reason == "Expired: too old resource version: 1 (2)"
    watches = kube_api.calls(verb="watch")
    assert len(watches) == (1 if client_timeout else 2)
    assert all(r.status == 200 for r in watches)  # the 410 travels inside the stream


def test_rolling_history_limit_expires_old_versions() -> None:
    with FakeKubeAPI(history_limit=2) as api:
        v1 = client.CoreV1Api(api.api_client())
        for i in range(4):
            api.add_pod(f"p{i}")
        with pytest.raises(client.ApiException) as err:
            list(
                watch.Watch().stream(v1.list_pod_for_all_namespaces, resource_version="1", timeout_seconds=5)
            )
        assert err.value.status == 410
        w = watch.Watch()  # version 2 is the oldest still served: events 3 and 4 are retained
        got = _collect(
            w.stream(v1.list_pod_for_all_namespaces, resource_version="2", timeout_seconds=5), w, 2
        )
        assert got == [("ADDED", "p2", "3"), ("ADDED", "p3", "4")]


def test_compaction_does_not_cut_an_established_watch(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    rv = core_v1.list_pod_for_all_namespaces().metadata.resource_version

    def writes() -> None:
        kube_api.add_pod("a")
        kube_api.compact()
        kube_api.add_pod("b")

    _in_thread(kube_api, writes)
    w = watch.Watch()
    got = _collect(
        w.stream(core_v1.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5), w, 2
    )
    assert [name for _, name, _ in got] == ["a", "b"]


def test_watch_ends_after_timeout_seconds_with_a_bookmark(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("a")
    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            core_v1.list_pod_for_all_namespaces,
            resource_version="1",
            timeout_seconds=1,
            allow_watch_bookmarks=True,
        )
    )
    elapsed_s = time.monotonic() - started
    assert 0.9 <= elapsed_s < 3.0
    assert [(e["type"], e["raw_object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("BOOKMARK", "1")
    ]


def test_send_bookmarks_reports_current_version(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("a")
    kube_api.add_configmap("cm", "default")  # version 2, not a pod event

    _in_thread(kube_api, kube_api.send_bookmarks)
    w = watch.Watch()
    stream = w.stream(
        core_v1.list_pod_for_all_namespaces,
        resource_version="1",
        timeout_seconds=5,
        allow_watch_bookmarks=True,
    )
    assert _collect(stream, w, 1) == [("BOOKMARK", "", "2")]
    assert w.resource_version == "2"  # the client resumes from a bookmark's version


def test_abrupt_drop_breaks_the_stream_and_rewatch_loses_nothing(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    rv = core_v1.list_pod_for_all_namespaces().metadata.resource_version

    def add_then_drop() -> None:
        kube_api.add_pod("a")
        time.sleep(0.1)  # usually lets "a" through first; the assertions hold either way
        assert kube_api.drop_watches() == 1
        kube_api.add_pod("b")  # written while nobody watches

    _in_thread(kube_api, add_then_drop)
    seen: list[str] = []
    w = watch.Watch()

    def read_until_dropped() -> None:
        for ev in w.stream(core_v1.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
            seen.append(ev["raw_object"]["metadata"]["name"])

    with pytest.raises(urllib3.exceptions.ProtocolError):  # how a dead connection surfaces in the client
        read_until_dropped()
    assert seen in ([], ["a"])
    w2 = watch.Watch()  # re-watch from the newest version seen: every missed event is replayed, in order
    stream = w2.stream(
        core_v1.list_pod_for_all_namespaces, resource_version=w.resource_version, timeout_seconds=5
    )
    again = _collect(stream, w2, 2 - len(seen))
    assert seen + [name for _, name, _ in again] == ["a", "b"]


def test_graceful_drop_ends_the_stream_cleanly(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    _in_thread(kube_api, lambda: kube_api.drop_watches(graceful=True))
    started = time.monotonic()
    assert (
        list(
            watch.Watch().stream(
                core_v1.list_pod_for_all_namespaces, resource_version="0", timeout_seconds=30
            )
        )
        == []
    )
    assert time.monotonic() - started < 5


def test_namespaced_watch_sees_only_its_namespace(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    def writes() -> None:
        kube_api.add_pod("other", namespace="kube-system")
        kube_api.add_pod("mine", namespace="ml")

    _in_thread(kube_api, writes)
    w = watch.Watch()
    got = _collect(w.stream(core_v1.list_namespaced_pod, "ml", resource_version="0", timeout_seconds=5), w, 1)
    assert got == [("ADDED", "mine", "2")]


def test_send_initial_events_ends_with_the_marked_bookmark(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    """Watch-list (``sendInitialEvents``): the state as ADDED events, then a bookmark annotated
    ``k8s.io/initial-events-end`` at the version of that state."""
    kube_api.add_pod("a")
    kube_api.add_pod("b")
    w = watch.Watch()
    events: list[dict[str, Any]] = []
    for ev in w.stream(
        core_v1.list_pod_for_all_namespaces,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        events.append(ev["raw_object"])
        if ev["type"] == "BOOKMARK":
            w.stop()
    assert [e["metadata"].get("name") for e in events] == ["a", "b", None]
    assert events[-1]["metadata"] == {
        "resourceVersion": "2",
        "annotations": {"k8s.io/initial-events-end": "true"},
    }


# ------------------------------------------------------------------------------------------ BINDING


def test_bind_sets_node_merges_annotations_and_marks_scheduled(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    pod = kube_api.add_pod("p", model="resnet50", slo_ms=50)
    kube_api.update("pods", "p", lambda p: p["status"].update(nominatedNodeName="gpu-1"))
    kube_api.clear_requests()
    resp = core_v1.create_namespaced_pod_binding(
        "p",
        "default",
        _binding("p", "gpu-0", uid=pod["metadata"]["uid"], annotations={"qosched.io/device": "1"}),
        _preload_content=False,
    )
    assert resp.status == 201
    assert json.loads(resp.data) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201,
    }  # fmt: skip
    assert kube_api.count() == 1
    assert kube_api.count(verb="create", subresource="binding") == 1
    bound = kube_api.get("pods", "p")
    assert bound is not None
    assert bound["spec"]["nodeName"] == "gpu-0"
    assert bound["metadata"]["annotations"] == {
        "qosched.io/model": "resnet50", "qosched.io/slo-ms": "50", "qosched.io/device": "1",
    }  # fmt: skip
    assert "nominatedNodeName" not in bound["status"]
    assert [(c["type"], c["status"]) for c in bound["status"]["conditions"]] == [("PodScheduled", "True")]
    assert bound["metadata"]["resourceVersion"] == str(kube_api.resource_version)


def _setup_pending(api: FakeKubeAPI) -> dict[str, Any]:
    return api.add_pod("p")


@pytest.mark.parametrize(
    ("prepare", "binding", "status", "reason", "message"),
    [
        (
            lambda api: api.update("pods", "p", lambda p: p["spec"].update(nodeName="gpu-1")),
            lambda pod: _binding("p", "gpu-0"),
            409,
            "Conflict",
            'Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "gpu-1"',
        ),
        (
            lambda api: api.update("pods", "p", lambda p: p["spec"].update(nodeName="gpu-0")),
            lambda pod: _binding("p", "gpu-0"),
            409,
            "Conflict",
            'Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "gpu-0"',
        ),
        (
            lambda api: None,
            lambda pod: _binding("p", "gpu-0", uid="not-" + pod["metadata"]["uid"]),
            409,
            "Conflict",
            'Operation cannot be fulfilled on pods "p": StorageError: invalid object, Code: 4, Key: '
            "/registry/pods/default/p, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in "
            "precondition: not-{uid}, UID in object meta: {uid}",
        ),
        (
            lambda api: api.delete_pod("p"),
            lambda pod: _binding("p", "gpu-0"),
            404,
            "NotFound",
            'pods "p" not found',
        ),
        (
            lambda api: None,
            lambda pod: _binding("other", "gpu-0"),
            400,
            "BadRequest",
            "name in URL does not match name in Binding object",
        ),
        (
            lambda api: api.update("pods", "p", lambda p: p["spec"].update(schedulingGates=[{"name": "g"}])),
            lambda pod: _binding("p", "gpu-0"),
            409,
            "Conflict",
            'Operation cannot be fulfilled on pods/binding "p": pod p has non-empty .spec.schedulingGates',
        ),
        (
            lambda api: api.update(
                "pods", "p", lambda p: p["metadata"].update(deletionTimestamp="2026-01-01T00:00:00Z")
            ),
            lambda pod: _binding("p", "gpu-0"),
            409,
            "Conflict",
            'Operation cannot be fulfilled on pods/binding "p": '
            "pod p is being deleted, cannot be assigned to a host",
        ),
    ],
    ids=[
        "already-bound-elsewhere",
        "already-bound-same-node",
        "uid-mismatch",
        "pod-missing",
        "name-mismatch",
        "scheduling-gated",
        "being-deleted",
    ],
)
def test_bind_failures_match_kube_apiserver(
    kube_api: FakeKubeAPI,
    core_v1: Any,
    prepare: Callable[[FakeKubeAPI], Any],
    binding: Callable[[dict[str, Any]], Any],
    status: int,
    reason: str,
    message: str,
) -> None:
    pod = _setup_pending(kube_api)
    prepare(kube_api)
    before = kube_api.resource_version
    with pytest.raises(client.ApiException) as err:
        core_v1.create_namespaced_pod_binding("p", "default", binding(pod), _preload_content=False)
    assert err.value.status == status
    body = _body(err.value)
    assert (body["reason"], body["code"]) == (reason, status)
    assert body["message"] == message.format(uid=pod["metadata"]["uid"])
    assert kube_api.resource_version == before  # nothing written


def test_second_bind_conflicts(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("p")
    core_v1.create_namespaced_pod_binding("p", "default", _binding("p", "gpu-0"), _preload_content=False)
    with pytest.raises(client.ApiException) as err:
        core_v1.create_namespaced_pod_binding("p", "default", _binding("p", "gpu-1"), _preload_content=False)
    assert err.value.status == 409
    assert _body(err.value)["details"] == {"name": "p", "kind": "pods/binding"}


def test_legacy_bindings_collection_binds_by_body_name(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("p", namespace="ml")
    resp = core_v1.create_namespaced_binding("ml", _binding("p", "gpu-2"), _preload_content=False)
    assert resp.status == 201
    assert kube_api.calls(verb="create")[0].path == "/api/v1/namespaces/ml/bindings"
    assert kube_api.get("pods", "p", "ml")["spec"]["nodeName"] == "gpu-2"  # type: ignore[index]


def test_bind_with_default_preload_binds_but_client_fails_to_parse_status(
    kube_api: FakeKubeAPI, core_v1: Any
) -> None:
    """Known client bug: the 201 body is a ``Status``, the client deserialises it as ``V1Binding``
    (``target`` required) and raises pydantic's ValidationError after the pod *was* bound.
    Workaround: call with ``_preload_content=False`` and check ``resp.status``."""
    kube_api.add_pod("p")
    with pytest.raises(pydantic.ValidationError, match="target"):
        core_v1.create_namespaced_pod_binding("p", "default", _binding("p", "gpu-0"))
    assert kube_api.get("pods", "p")["spec"]["nodeName"] == "gpu-0"  # type: ignore[index]


def test_bind_target_without_name_is_500_like_upstream(kube_api: FakeKubeAPI) -> None:
    """``ValidatePodBinding`` returns a plain aggregate error, which the handler turns into a 500."""
    kube_api.add_pod("p")
    http = urllib3.PoolManager()
    resp = http.request(
        "POST",
        f"{kube_api.url}/api/v1/namespaces/default/pods/p/binding",
        body=json.dumps(
            {"kind": "Binding", "apiVersion": "v1", "metadata": {"name": "p"}, "target": {"kind": "Pod"}}
        ),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 500
    assert json.loads(resp.data)["message"] == (
        '[target.kind: Unsupported value: "Pod": supported values: "Node", "<empty>", '
        "target.name: Required value]"
    )


# ------------------------------------------------------------------------------------------ PATCH / RESIZE


def test_patch_annotations_emits_modified(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("p", model="resnet50")
    rv = core_v1.list_pod_for_all_namespaces().metadata.resource_version
    _in_thread(
        kube_api,
        lambda: core_v1.patch_namespaced_pod(
            "p", "default", {"metadata": {"annotations": {"qosched.io/policy": "qosched"}}}
        ),
    )
    w = watch.Watch()
    for ev in w.stream(core_v1.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5):
        assert ev["type"] == "MODIFIED"
        assert ev["object"].metadata.annotations == {
            "qosched.io/model": "resnet50",
            "qosched.io/policy": "qosched",
        }
        w.stop()
    assert kube_api.calls(verb="patch")[0].status == 200


@pytest.mark.parametrize(
    ("content_type", "patch", "want"),
    [
        ("application/merge-patch+json", {"metadata": {"annotations": {"a": None, "b": "2"}}}, {"b": "2"}),
        ("application/json-patch+json", [{"op": "remove", "path": "/metadata/annotations/a"}], {}),
        (
            "application/json-patch+json",
            [{"op": "add", "path": "/metadata/annotations/qosched.io~1device", "value": "0,1"}],
            {"a": "1", "qosched.io/device": "0,1"},
        ),
        (
            "application/strategic-merge-patch+json",
            {"metadata": {"annotations": {"c": "3"}}},
            {"a": "1", "c": "3"},
        ),
    ],
    ids=["merge-null-deletes", "json-remove", "json-add-escaped-slash", "strategic-adds"],
)
def test_patch_content_types(
    kube_api: FakeKubeAPI, core_v1: Any, content_type: str, patch: Any, want: dict[str, str]
) -> None:
    kube_api.add_pod("p", annotations={"a": "1"})
    out = core_v1.patch_namespaced_pod("p", "default", patch, _content_type=content_type)
    assert (out.metadata.annotations or {}) == want


def test_patch_with_stale_resource_version_conflicts(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("p")
    kube_api.update("pods", "p", lambda p: p["metadata"].update(labels={"x": "1"}))
    with pytest.raises(client.ApiException) as err:
        core_v1.patch_namespaced_pod(
            "p", "default", {"metadata": {"resourceVersion": "1", "annotations": {"a": "b"}}}
        )
    assert err.value.status == 409
    assert _body(err.value)["message"].endswith(
        "the object has been modified; please apply your changes to the latest version and try again"
    )


def test_patching_resources_through_the_pod_is_forbidden(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("p", cpu="500m", memory="128Mi")
    patch = {
        "spec": {
            "containers": [
                {"name": "server", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}
            ]
        }
    }
    with pytest.raises(client.ApiException) as err:
        core_v1.patch_namespaced_pod("p", "default", patch)
    assert err.value.status == 422
    assert (
        "pod updates may not change fields other than `spec.containers[*].image`"
        in _body(err.value)["message"]
    )


@pytest.mark.parametrize(
    ("patch", "want_resources", "error"),
    [
        (
            {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}},
            {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
            None,
        ),
        (
            {"requests": {"cpu": "250m"}},
            None,
            'Pod "p" is invalid: spec: Invalid value: "Guaranteed": '
            "Pod QOS Class may not change as a result of resizing",
        ),
        (
            {"limits": {"memory": None}},
            None,
            'Pod "p" is invalid: spec.containers[0].resources.limits[memory]: '
            "Forbidden: resource limits cannot be removed",
        ),
        (
            {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2"}},
            None,
            "only cpu and memory resources are mutable",
        ),
    ],
    ids=["guaranteed-stays-guaranteed", "qos-change-refused", "limit-removal-refused", "gpu-not-resizable"],
)
def test_resize_subresource(
    kube_api: FakeKubeAPI,
    core_v1: Any,
    patch: dict[str, Any],
    want_resources: dict[str, Any] | None,
    error: str | None,
) -> None:
    kube_api.add_pod("p", cpu="500m", memory="128Mi", node_name="gpu-0")
    body = {"spec": {"containers": [{"name": "server", "resources": patch}]}}
    if error is None:
        assert want_resources is not None
        out = core_v1.patch_namespaced_pod_resize("p", "default", body)
        assert out.spec.containers[0].resources.to_dict() | {"claims": None} == want_resources | {
            "claims": None
        }
        assert out.metadata.generation == 2
        assert kube_api.calls(subresource="resize")[0].path == "/api/v1/namespaces/default/pods/p/resize"
    else:
        before = kube_api.resource_version
        with pytest.raises(client.ApiException) as err:
            core_v1.patch_namespaced_pod_resize("p", "default", body)
        assert err.value.status == 422
        assert _body(err.value)["reason"] == "Invalid"
        assert error in _body(err.value)["message"]
        assert kube_api.resource_version == before


def test_resize_keeps_other_spec_changes_out(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    """``dropNonResizeUpdates``: a resize patch touching the image changes only resources."""
    kube_api.add_pod("p", cpu="500m", memory="128Mi")
    body = {
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "evil",
                    "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}},
                }
            ]
        }
    }
    out = core_v1.patch_namespaced_pod_resize("p", "default", body)
    assert out.spec.containers[0].image == "registry.invalid/none"
    assert out.spec.containers[0].resources.limits["cpu"] == "1"


def test_status_subresource_changes_only_status(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("p", node_name="gpu-0", phase="Pending")
    out = core_v1.patch_namespaced_pod_status(
        "p", "default", {"status": {"phase": "Running"}, "metadata": {"labels": {"x": "y"}}}
    )
    assert out.status.phase == "Running"
    assert out.metadata.labels is None
    out = core_v1.patch_namespaced_pod("p", "default", {"status": {"phase": "Failed"}})  # main resource
    assert out.status.phase == "Running"  # status is a subresource: ignored here


# ------------------------------------------------------------------------ CONFIGMAPS, SECRETS, LEASES


def test_configmap_create_get_replace_patch_and_conflicts(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="qosched-profiles"), data={"a.json": "{}"})
    created = core_v1.create_namespaced_config_map("qosched-system", cm)
    assert created.metadata.uid
    assert created.metadata.resource_version == "1"
    with pytest.raises(client.ApiException) as err:
        core_v1.create_namespaced_config_map("qosched-system", cm)
    assert err.value.status == 409
    assert _body(err.value)["reason"] == "AlreadyExists"
    assert _body(err.value)["message"] == 'configmaps "qosched-profiles" already exists'
    created.data["b.json"] = "[]"
    replaced = core_v1.replace_namespaced_config_map("qosched-profiles", "qosched-system", created)
    assert replaced.metadata.resource_version == "2"
    with pytest.raises(client.ApiException) as err:
        core_v1.replace_namespaced_config_map("qosched-profiles", "qosched-system", created)  # still at "1"
    assert err.value.status == 409
    assert _body(err.value)["reason"] == "Conflict"
    patched = core_v1.patch_namespaced_config_map(
        "qosched-profiles", "qosched-system", {"data": {"c.json": "1"}}
    )
    assert sorted(patched.data) == ["a.json", "b.json", "c.json"]
    got = core_v1.read_namespaced_config_map("qosched-profiles", "qosched-system")
    assert got.metadata.resource_version == "3"


def test_delete_configmap_answers_status_and_emits_deleted(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    created = kube_api.add_configmap("cm", "qosched-system", {"k": "v"})
    _in_thread(kube_api, lambda: core_v1.delete_namespaced_config_map("cm", "qosched-system"))
    w = watch.Watch()
    got = _collect(
        w.stream(
            core_v1.list_namespaced_config_map, "qosched-system", resource_version="1", timeout_seconds=5
        ),
        w,
        1,
    )
    assert got == [("DELETED", "cm", "2")]
    (delete,) = kube_api.calls(verb="delete")
    assert delete.status == 200
    with pytest.raises(client.ApiException) as err:
        core_v1.delete_namespaced_config_map("cm", "qosched-system")
    assert err.value.status == 404
    assert created["metadata"]["uid"]


def test_secret_read_returns_base64_data(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_secret("qosched-upload-token", "qosched-system", {"token": "s3cret"})
    secret = core_v1.read_namespaced_secret("qosched-upload-token", "qosched-system")
    assert secret.data == {"token": "czNjcmV0"}


def test_lease_leader_election_cycle(kube_api: FakeKubeAPI, kube_client: Any) -> None:
    coord = client.CoordinationV1Api(kube_client)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="qosched"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
    )
    mine: Any = coord.create_namespaced_lease("qosched-system", lease)
    theirs: Any = coord.read_namespaced_lease("qosched", "qosched-system")
    theirs.spec.holder_identity = "b"
    coord.replace_namespaced_lease("qosched", "qosched-system", theirs)  # b renews first
    mine.spec.holder_identity = "a"
    with pytest.raises(client.ApiException) as err:
        coord.replace_namespaced_lease("qosched", "qosched-system", mine)  # a's copy is stale
    assert err.value.status == 409
    assert _body(err.value)["details"] == {
        "name": "qosched",
        "group": "coordination.k8s.io",
        "kind": "leases",
    }
    current: Any = coord.read_namespaced_lease("qosched", "qosched-system")
    assert current.spec.holder_identity == "b"
    with pytest.raises(client.ApiException) as err:
        coord.replace_namespaced_lease(
            "missing", "qosched-system", client.V1Lease(metadata=client.V1ObjectMeta(name="missing"))
        )
    assert err.value.status == 404


def test_events_can_be_recorded(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="p."),
        involved_object=client.V1ObjectReference(kind="Pod", name="p", namespace="default"),
        reason="Scheduled",
        message="placed by qosched",
        type="Normal",
    )
    created = core_v1.create_namespaced_event("default", ev)
    assert created.metadata.name.startswith("p.")
    assert len(created.metadata.name) == len("p.") + 5
    listed = core_v1.list_namespaced_event("default", field_selector="involvedObject.name=p")
    assert [e.reason for e in listed.items] == ["Scheduled"]


# ------------------------------------------------------------------------------------------ FAULTS AND LOG


def test_fail_next_injects_then_recovers(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.fail_next(r"^/api/v1/nodes$", 503, times=2)
    for _ in range(2):
        with pytest.raises(client.ApiException) as err:
            core_v1.list_node()
        assert err.value.status == 503
        assert _body(err.value)["reason"] == "ServiceUnavailable"
    assert core_v1.list_node().items == []
    assert [r.status for r in kube_api.calls(path="/api/v1/nodes")] == [503, 503, 200]


def test_fail_next_429_carries_retry_after(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.fail_next(r"/binding$", 429, method="POST")
    kube_api.add_pod("p")
    with pytest.raises(client.ApiException) as err:
        core_v1.create_namespaced_pod_binding("p", "default", _binding("p", "n"), _preload_content=False)
    assert err.value.status == 429
    assert err.value.headers is not None
    assert err.value.headers["Retry-After"] == "1"
    assert _body(err.value)["details"] == {"retryAfterSeconds": 1}
    assert kube_api.get("pods", "p")["spec"].get("nodeName") is None  # type: ignore[index]


def test_fail_next_by_verb_spares_lists(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.fail_next(r"/pods$", 500, verb="watch")
    core_v1.list_pod_for_all_namespaces()  # a list of the same path is not hit
    with pytest.raises(client.ApiException) as err:
        list(
            watch.Watch().stream(core_v1.list_pod_for_all_namespaces, resource_version="0", timeout_seconds=1)
        )
    assert err.value.status == 500


def test_fail_next_rejects_non_error_codes(kube_api: FakeKubeAPI) -> None:
    with pytest.raises(ValueError, match="HTTP error code"):
        kube_api.fail_next(".", 200)


def test_stalled_binding_commits_after_the_client_gave_up(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.add_pod("p")
    kube_api.stall(r"/binding$", 0.6, times=1, verb="create")
    t0 = time.perf_counter()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core_v1.create_namespaced_pod_binding(
            "p", "default", _binding("p", "n"), _preload_content=False, _request_timeout=0.2
        )
    assert time.perf_counter() - t0 < 0.5
    assert kube_api.get("pods", "p")["spec"].get("nodeName") is None  # type: ignore[index]
    deadline = time.monotonic() + 5
    while kube_api.get("pods", "p")["spec"].get("nodeName") is None and time.monotonic() < deadline:  # type: ignore[index]
        time.sleep(0.02)
    assert kube_api.get("pods", "p")["spec"]["nodeName"] == "n"  # type: ignore[index]
    assert [r.status for r in kube_api.calls(subresource="binding")] == [201]


def test_stall_spares_other_verbs_and_clear_releases_holds(kube_api: FakeKubeAPI, core_v1: Any) -> None:
    kube_api.stall(r"/nodes$", 30.0, verb="list")
    kube_api.add_node("n")
    result: list[Any] = []
    lister = threading.Thread(target=lambda: result.append(core_v1.list_node()))
    lister.start()
    core_v1.read_node("n")  # a get of the same resource is not held
    time.sleep(0.1)
    assert lister.is_alive()
    t0 = time.perf_counter()
    kube_api.clear_stalls()
    lister.join(5)
    assert time.perf_counter() - t0 < 2
    assert [n.metadata.name for n in result[0].items] == ["n"]


@pytest.mark.parametrize(("seconds", "times"), [(-1.0, None), (1.0, 0)], ids=["negative", "zero-times"])
def test_stall_rejects_bad_arguments(kube_api: FakeKubeAPI, seconds: float, times: int | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        kube_api.stall(".", seconds, times)


# ------------------------------------------------------------------------ SNAPSHOTS AND BUILDERS


def test_load_shared_snapshot_keeps_identity(snapshot_kube_api: FakeKubeAPI, core_v1: Any) -> None:
    nodes = core_v1.list_node().items
    pods = core_v1.list_pod_for_all_namespaces().items
    assert sorted(n.metadata.name for n in nodes) == ["gpu-0", "gpu-1", "gpu-2", "tpu-0"]
    assert len(pods) == 10
    high = core_v1.read_namespaced_pod("high-0", "default")
    assert high.metadata.uid == "5148ebd1-cc02-45a9-a0ba-19c4a3f359c4"  # from the file
    assert high.status.nominated_node_name == "gpu-2"
    assert sum(1 for p in pods if p.spec.node_name) == 9


def test_load_snapshot_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: List\nitems:\n- {metadata: {name: x}}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: document 0 item 0 is not a Kubernetes object"):
        load_snapshot(bad)


def test_unknown_kind_is_refused(kube_api: FakeKubeAPI) -> None:
    with pytest.raises(ValueError, match="kubefake stores no apps/v1/StatefulSet"):
        kube_api.add({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "d"}})


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        ({"slo_ms": 20.0, "rate_rps": 12.5}, {"qosched.io/slo-ms": "20", "qosched.io/rate-rps": "12.5"}),
        (
            {"variants": ["resnet50", "resnet18"], "min_accuracy": 0.7},
            {"qosched.io/variants": "resnet50,resnet18", "qosched.io/min-accuracy": "0.7"},
        ),
        (
            {"gpu_milli": 250, "service_class": "batch"},
            {"qosched.io/gpu-milli": "250", "qosched.io/class": "batch"},
        ),
        ({"rate_rps": 1e-7}, {"qosched.io/rate-rps": "0.0000001"}),
    ],
    ids=["floats", "variants", "gpu-and-class", "tiny-no-exponent"],
)
def test_make_pod_annotations(kwargs: dict[str, Any], want: dict[str, str]) -> None:
    assert make_pod("p", **kwargs)["metadata"]["annotations"] == want


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"slo_ms": 0}, "slo_ms"),
        ({"rate_rps": -1}, "rate_rps"),
        ({"min_accuracy": 1.5}, "min_accuracy"),
        ({"slo_percentile": 40}, "slo_percentile"),
        ({"gpu_milli": 0}, "gpu_milli"),
    ],
    ids=["zero-slo", "negative-rate", "accuracy-above-1", "percentile-below-50", "zero-milli"],
)
def test_make_pod_rejects_out_of_contract_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_pod("p", **kwargs)


def test_make_node_labels_and_gpu_capacity() -> None:
    node = make_node("gpu-0", accelerator="nvidia-a100", gpus=4, sharing="mig", tier="cloud")
    assert node["metadata"]["labels"]["qosched.io/accelerator"] == "nvidia-a100"
    assert node["metadata"]["labels"]["qosched.io/sharing"] == "mig"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert "nvidia.com/gpu" not in make_node("tpu", accelerator="edgetpu")["status"]["capacity"]
    with pytest.raises(ValueError, match="sharing"):
        make_node("n", sharing="spatial")


# ------------------------------------------------------------------------------------------ UNITS


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("250m", 0.25),
        ("2", 2),
        ("1Gi", 2**30),
        ("128Mi", 128 * 2**20),
        ("1e3", 1000),
        ("1.5k", 1500),
        ("0.5", 0.5),
    ],
    ids=["milli", "plain", "gibi", "mebi", "exponent", "decimal-kilo", "fraction"],
)
def test_parse_quantity(text: str, want: float) -> None:
    assert parse_quantity(text) == want


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="quantities must match"):
        parse_quantity("12 cores")


@pytest.mark.parametrize(
    ("resources", "want"),
    [
        ([{}], "BestEffort"),
        (
            [{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}],
            "Guaranteed",
        ),
        (
            [{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}}],
            "Burstable",
        ),
        ([{"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}], "Burstable"),
        (
            [{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}, {}],
            "Burstable",
        ),
        ([{"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}], "BestEffort"),
    ],
    ids=[
        "none",
        "equal-cpu-mem",
        "cpu-request-below-limit",
        "no-memory-limit",
        "one-unlimited-container",
        "gpu-only-does-not-count",
    ],
)
def test_compute_qos_class(resources: list[dict[str, Any]], want: str) -> None:
    pod = {"spec": {"containers": [{"name": f"c{i}", "resources": r} for i, r in enumerate(resources)]}}
    assert compute_qos_class(pod) == want


@pytest.mark.parametrize(
    ("doc", "patch", "want"),
    [
        (
            {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}},
            {"spec": {"containers": [{"name": "b", "image": "z"}]}},
            {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "z"}]}},
        ),
        (
            {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}},
            {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}},
            {"spec": {"containers": [{"name": "b"}]}},
        ),
        (
            {"spec": {"tolerations": [{"key": "a"}]}},
            {"spec": {"tolerations": [{"key": "b"}]}},
            {"spec": {"tolerations": [{"key": "b"}]}},
        ),
        (
            {"metadata": {"finalizers": ["a"]}},
            {"metadata": {"finalizers": ["b"]}},
            {"metadata": {"finalizers": ["a", "b"]}},
        ),
        ({"data": {"a": "1", "b": "2"}}, {"data": {"$patch": "replace", "c": "3"}}, {"data": {"c": "3"}}),
        ({"data": {"a": "1"}}, {"data": {"a": None}}, {"data": {}}),
    ],
    ids=[
        "containers-merge-by-name",
        "delete-directive",
        "other-lists-replace",
        "finalizers-union",
        "replace-directive",
        "null-deletes",
    ],
)
def test_strategic_merge_patch(doc: dict[str, Any], patch: dict[str, Any], want: dict[str, Any]) -> None:
    assert apply_strategic_merge_patch(doc, patch) == want


def test_json_patch_operations_and_failures() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "replace", "path": "/b/c", "value": 2},
        {"op": "move", "from": "/b/c", "path": "/d"},
        {"op": "copy", "from": "/d", "path": "/e"},
        {"op": "test", "path": "/e", "value": 2},
        {"op": "remove", "path": "/a/0"},
    ]
    assert apply_json_patch(doc, ops) == {"a": [2, 3], "b": {}, "d": 2, "e": 2}
    assert doc == {"a": [1, 2], "b": {"c": 1}}  # the input is not modified
    with pytest.raises(ApiError) as err:
        apply_json_patch(doc, [{"op": "test", "path": "/b/c", "value": 9}])
    assert err.value.code == 422
    with pytest.raises(ApiError) as err:
        apply_json_patch(doc, [{"op": "remove", "path": "/zz"}])
    assert err.value.code == 422
    assert "missing" in str(err.value)


def test_merge_patch_replaces_lists() -> None:
    assert apply_merge_patch({"a": [1, 2], "b": 1}, {"a": [3], "b": None}) == {"a": [3]}


def test_server_side_apply_is_unsupported_media_type() -> None:
    with pytest.raises(ApiError) as err:
        apply_patch("application/apply-patch+yaml", {}, {})
    assert err.value.code == 415


@pytest.mark.parametrize(
    ("selector", "labels", "want"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a in (1, 2),b", {"a": "2", "b": ""}, True),
        ("a notin (1,2)", {"a": "1"}, False),
        ("!a", {"b": "1"}, True),
        ("qosched.io/accelerator=edgetpu", {"qosched.io/accelerator": "edgetpu"}, True),
    ],
    ids=[
        "eq",
        "double-eq-miss",
        "ne-absent-matches",
        "set-and-exists",
        "notin",
        "not-exists",
        "prefixed-key",
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], want: bool) -> None:
    requirements = parse_label_selector(selector)
    assert all(r.matches(labels) for r in requirements) is want


def test_field_selector_errors() -> None:
    with pytest.raises(ApiError, match=r"field label not supported: spec\.foo"):
        parse_field_selector("spec.foo=1", frozenset({"metadata.name"}))
    with pytest.raises(ApiError, match="invalid selector"):
        parse_field_selector("metadata.name", frozenset({"metadata.name"}))
