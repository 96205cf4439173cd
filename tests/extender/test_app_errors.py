"""Bad requests, absurd pods, failing policies and binders: clear answers, never a 5xx or a trace.

The cluster (``cluster`` fixture): ``gpu-0`` and ``gpu-1`` (``nvidia-t4``, 2 GPUs, 8 CPUs) and
``cpu-0`` (no accelerator). Unless a test says otherwise pods ask for resnet50, 250 milli-GPU,
100m CPU, 10 rps, a 100 ms SLO: they fit on either GPU node.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.kube.cache import StaticCluster
from qosched.extender.server.app import create_app, runtime_of
from qosched.policies.placement.base import Evaluation
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand
from qosched.profiles.store import bundled_profiles
from tests.extender.extender_support import (
    JSON_CT,
    BindError,
    RecordingBinder,
    SlowBinder,
    args,
    bind_args,
    make_app,
    metric_value,
    node,
    pod,
    write_snapshot,
)

NAMES = ["gpu-0", "gpu-1", "cpu-0"]
GOOD = pod("good")
RUNNING = pod("running", node_name="gpu-0", annotations={"qosched.io/device": "0"})
VERBS = ("filter", "prioritize", "bind", "preempt")


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    objects = [node("gpu-0"), node("gpu-1"), node("cpu-0", None, gpus=0), GOOD, RUNNING]
    return write_snapshot(tmp_path / "cluster.json", objects)


@pytest.fixture
def app(cluster: Path) -> Flask:
    return make_app(cluster, MAX_CONTENT_LENGTH=64 * 1024)


def app_with(cluster: Path, binder: Any) -> Flask:
    cache = StaticCluster.from_file(cluster, *lookup_from_profiles(bundled_profiles()))
    return create_app({}, cache=cache, binder=binder, registry=CollectorRegistry())


def raw(app: Flask, verb: str, body: bytes, content_type: str | None = JSON_CT) -> Any:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return app.test_client().post("/" + verb, data=body, headers=headers)


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


PREEMPT_OK: dict[str, Any] = {"Pod": GOOD, "NodeNameToVictims": None, "NodeNameToMetaVictims": {}}
BIND_OK = bind_args(GOOD, "gpu-0")

# ----------------------------------------------------------------------------- malformed requests

# (verb, body, content type, status, text the message must contain)
BAD_REQUESTS = [
    pytest.param("filter", b'{"Pod":', JSON_CT, 400, "invalid JSON", id="filter-truncated-json"),
    pytest.param("prioritize", b"{'Pod': 1}", JSON_CT, 400, "invalid JSON", id="prioritize-single-quotes"),
    pytest.param("bind", b"", JSON_CT, 400, "body: empty", id="bind-empty-body"),
    pytest.param("preempt", b"[]", JSON_CT, 400, "body", id="preempt-array-body"),
    pytest.param(
        "filter", dumps({"Nodes": None, "NodeNames": NAMES}), JSON_CT, 400, "Pod", id="filter-no-pod"
    ),
    pytest.param(
        "filter",
        dumps(
            {"Pod": {**GOOD, "metadata": {**GOOD["metadata"], "uid": 7}}, "Nodes": None, "NodeNames": NAMES}
        ),
        JSON_CT,
        400,
        "Pod.metadata.uid",
        id="filter-uid-not-string",
    ),
    pytest.param(
        "prioritize",
        dumps({"Pod": GOOD, "Nodes": None, "NodeNames": "gpu-0"}),
        JSON_CT,
        400,
        "NodeNames",
        id="prioritize-names-not-array",
    ),
    pytest.param(
        "filter",
        dumps({"Pod": GOOD, "Nodes": None, "NodeNames": ["gpu-0", 3]}),
        JSON_CT,
        400,
        "NodeNames[1]",
        id="filter-name-not-string",
    ),
    pytest.param(
        "filter",
        dumps(args(pod("p", annotations={"qosched.io/slo-ms": 5}), NAMES)),  # type: ignore[dict-item]
        JSON_CT,
        400,
        "Pod.metadata.annotations",
        id="filter-annotation-not-string",
    ),
    pytest.param(
        "bind",
        dumps({k: v for k, v in BIND_OK.items() if k != "PodUID"}),
        JSON_CT,
        400,
        "PodUID",
        id="bind-no-uid",
    ),
    pytest.param("bind", dumps({**BIND_OK, "Node": 1}), JSON_CT, 400, "Node", id="bind-node-not-string"),
    pytest.param(
        "preempt",
        dumps({**PREEMPT_OK, "NodeNameToMetaVictims": {"gpu-0": {"Pods": [], "NumPDBViolations": -1}}}),
        JSON_CT,
        400,
        "NumPDBViolations",
        id="preempt-negative-pdb",
    ),
    pytest.param(
        "filter", dumps(args(GOOD, NAMES)), "text/plain", 415, "Content-Type", id="filter-text-plain"
    ),
    pytest.param("bind", dumps(BIND_OK), "application/xml", 415, "Content-Type", id="bind-xml"),
    pytest.param(
        "prioritize",
        dumps(args(GOOD, NAMES)),
        "application/json; charset=latin-1",
        415,
        "charset",
        id="prioritize-latin1",
    ),
    pytest.param("filter", dumps(args(GOOD, NAMES)) + b" " * 70_000, JSON_CT, 413, "", id="filter-too-large"),
    pytest.param("preempt", b"{" + b" " * 70_000 + b"}", JSON_CT, 413, "", id="preempt-too-large"),
]


@pytest.mark.parametrize(("verb", "body", "content_type", "status", "text"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(
    app: Flask, verb: str, body: bytes, content_type: str, status: int, text: str
) -> None:
    response = raw(app, verb, body, content_type)
    assert response.status_code == status
    assert response.mimetype == JSON_CT
    error = response.get_json()["error"]
    assert text in error
    assert "Traceback" not in response.text
    metrics = app.test_client().get("/metrics").text
    assert metric_value(metrics, "qosched_extender_requests_total", code=str(status), verb=verb) == 1.0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/filter", 405), ("POST", "/nope", 404), ("DELETE", "/profiles", 405)],
    ids=["get-filter", "unknown-path", "delete-profiles"],
)
def test_flask_errors_are_json_too(app: Flask, method: str, path: str, status: int) -> None:
    response = app.test_client().open(path, method=method)
    assert response.status_code == status
    assert response.mimetype == JSON_CT
    assert response.get_json()["error"]


# ----------------------------------------------------------------------------- unknown nodes


def test_unknown_nodes_are_unresolvable_and_score_0(app: Flask) -> None:
    body = dumps(args(GOOD, ["gpu-0", "ghost"]))
    answer = raw(app, "filter", body).get_json()
    assert answer["NodeNames"] == ["gpu-0"]
    assert answer["FailedAndUnresolvableNodes"] == {
        "ghost": "qosched (qosched): node is not in the extender's cache (e.g. ghost)"
    }
    scores = raw(app, "prioritize", body).get_json()
    assert [h["Host"] for h in scores] == ["gpu-0", "ghost"]
    assert scores[1]["Score"] == 0
    assert scores[0]["Score"] == 10


def test_bind_to_an_unknown_node_is_refused(app: Flask) -> None:
    answer = raw(app, "bind", dumps(bind_args(GOOD, "ghost"))).get_json()
    assert answer == {"Error": "qosched: node ghost is not in the cache"}
    metrics = app.test_client().get("/metrics").text
    assert metric_value(metrics, "qosched_extender_bind_failures_total", reason="not_found") == 1.0
    assert metric_value(metrics, "qosched_extender_bind_failures_total", reason="no_longer_fits") in (
        None,
        0.0,
    )


# ----------------------------------------------------------------------------- absurd pods

ABSURD = [
    pytest.param({"qosched.io/rate-rps": "1e12"}, "qosched.io/rate-rps", id="rate-1e12"),
    pytest.param({"qosched.io/slo-ms": "-5"}, "qosched.io/slo-ms", id="slo-negative"),
    pytest.param({"qosched.io/slo-ms": "fast"}, "qosched.io/slo-ms", id="slo-not-a-number"),
    pytest.param({"qosched.io/slo-ms": "nan"}, "qosched.io/slo-ms", id="slo-nan"),
    pytest.param({"qosched.io/gpu-milli": "1500"}, "qosched.io/gpu-milli", id="gpu-milli-1500"),
    pytest.param({"qosched.io/gpu-milli": "0"}, "qosched.io/gpu-milli", id="gpu-milli-0"),
    pytest.param({"qosched.io/gpu-milli": "2.5"}, "qosched.io/gpu-milli", id="gpu-milli-fraction"),
    pytest.param({"qosched.io/slo-percentile": "120"}, "qosched.io/slo-percentile", id="percentile-120"),
    pytest.param({"qosched.io/min-accuracy": "2"}, "qosched.io/min-accuracy", id="accuracy-2"),
]


@pytest.mark.parametrize(("annotations", "field"), ABSURD)
def test_absurd_annotations_reject_every_node_naming_the_annotation(
    app: Flask, annotations: dict[str, str], field: str
) -> None:
    bad = pod("bad", annotations=annotations)
    filtered = raw(app, "filter", dumps(args(bad, NAMES)))
    assert filtered.status_code == 200
    answer = filtered.get_json()
    assert answer["NodeNames"] == []
    assert answer["FailedNodes"] is None
    assert set(answer["FailedAndUnresolvableNodes"]) == set(NAMES)
    assert all(
        r.startswith("qosched: invalid request: " + field)
        for r in answer["FailedAndUnresolvableNodes"].values()
    )
    scored = raw(app, "prioritize", dumps(args(bad, NAMES)))
    assert scored.status_code == 200
    assert [h["Score"] for h in scored.get_json()] == [0, 0, 0]
    preempted = raw(app, "preempt", dumps({**PREEMPT_OK, "Pod": bad}))
    assert preempted.status_code == 200
    assert preempted.get_json() == {"NodeNameToMetaVictims": {}}


# ----------------------------------------------------------------------------- failing policy


class RaisingPolicy:
    name = "raising"

    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        raise RuntimeError("secret internals /etc/passwd")


@pytest.mark.parametrize(
    ("verb", "body", "expected"),
    [
        pytest.param(
            "filter",
            dumps(args(GOOD, NAMES)),
            {
                "Nodes": None,
                "NodeNames": [],
                "FailedNodes": None,
                "FailedAndUnresolvableNodes": None,
                "Error": "qosched: internal error: RuntimeError",
            },
            id="filter",
        ),
        pytest.param(
            "prioritize", dumps(args(GOOD, NAMES)), [{"Host": n, "Score": 0} for n in NAMES], id="prioritize"
        ),
        pytest.param("bind", dumps(BIND_OK), {"Error": "qosched: internal error: RuntimeError"}, id="bind"),
        pytest.param(
            "preempt",
            dumps(
                {
                    **PREEMPT_OK,
                    "NodeNameToMetaVictims": {
                        "gpu-0": {"Pods": [{"UID": "uid-running"}], "NumPDBViolations": 0}
                    },
                }
            ),
            {"NodeNameToMetaVictims": {"gpu-0": {"Pods": [{"UID": "uid-running"}], "NumPDBViolations": 0}}},
            id="preempt-keeps-the-proposal",
        ),
    ],
)
def test_a_raising_policy_is_answered_200_logged_with_the_pod_and_no_trace(
    app: Flask, caplog: pytest.LogCaptureFixture, verb: str, body: bytes, expected: Any
) -> None:
    runtime_of(app).policy = RaisingPolicy()
    with caplog.at_level(logging.ERROR, logger="qosched.extender.server.routes"):
        response = raw(app, verb, body)
    assert response.status_code == 200
    assert response.get_json() == expected
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    records = [r for r in caplog.records if r.name == "qosched.extender.server.routes"]
    assert [r.getMessage() for r in records] == [f"{verb} failed for pod default/good"]
    assert records[0].exc_info is not None  # the trace goes to the log, not to the client
    metrics = app.test_client().get("/metrics").text
    assert metric_value(metrics, "qosched_extender_decisions_total", outcome="error", verb=verb) == 1.0
    assert not runtime_of(app).cache.is_assumed("uid-good")


# ----------------------------------------------------------------------------- bind


def test_bind_of_an_unknown_pod_is_refused(app: Flask) -> None:
    ghost = pod("ghost")
    answer = raw(app, "bind", dumps(bind_args(ghost, "gpu-0"))).get_json()
    assert answer == {"Error": 'binding default/ghost to gpu-0 failed: pods "ghost" not found'}


def test_a_retried_bind_to_the_same_node_succeeds_and_binds_once(cluster: Path) -> None:
    binder = RecordingBinder()
    app = app_with(cluster, binder)
    assert raw(app, "filter", dumps(args(GOOD, NAMES))).get_json()["NodeNames"] == ["gpu-0", "gpu-1"]
    first = raw(app, "bind", dumps(BIND_OK)).get_json()
    again = raw(app, "bind", dumps(BIND_OK)).get_json()
    assert first == again == {"Error": ""}
    assert len(binder.calls) == 1
    namespace, name, uid, node_name, annotations = binder.calls[0]
    assert (namespace, name, uid, node_name) == ("default", "good", "uid-good", "gpu-0")
    assert annotations["qosched.io/policy"] == "qosched"
    assert annotations["qosched.io/device"] in {"0", "1"}
    assert float(annotations["qosched.io/predicted-latency-ms"]) > 0


def test_bind_of_a_pod_bound_elsewhere_is_refused(cluster: Path) -> None:
    binder = RecordingBinder()
    app = app_with(cluster, binder)
    assert raw(app, "bind", dumps(BIND_OK)).get_json() == {"Error": ""}
    elsewhere = raw(app, "bind", dumps(bind_args(GOOD, "gpu-1"))).get_json()
    assert elsewhere == {"Error": "pod default/good is already bound to node gpu-0"}
    assert len(binder.calls) == 1


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (
            BindError("the server is on fire", reason="api"),
            "qosched: binding default/good to gpu-0 failed: the server is on fire",
        ),
        (RuntimeError("boom"), "qosched: binding default/good to gpu-0 failed: RuntimeError"),
        (TimeoutError(), "qosched: binding default/good to gpu-0 failed: TimeoutError"),
    ],
    ids=["bind-error", "unexpected-exception", "timeout"],
)
def test_a_failed_bind_releases_its_reservation(cluster: Path, failure: Exception, message: str) -> None:
    binder = RecordingBinder(fail=failure)
    app = app_with(cluster, binder)
    cache = runtime_of(app).cache
    free_before = cache.state.free_gpu_milli().copy()
    assert raw(app, "bind", dumps(BIND_OK)).get_json() == {"Error": message}
    assert not cache.is_assumed("uid-good")
    assert "uid-good" not in cache.state
    assert np.array_equal(cache.state.free_gpu_milli(), free_before)
    binder.fail = None
    assert raw(app, "bind", dumps(BIND_OK)).get_json() == {"Error": ""}  # and it can be bound later
    assert cache.is_assumed("uid-good")


def test_a_conflict_that_says_already_on_this_node_is_a_success(cluster: Path) -> None:
    binder = RecordingBinder(fail=BindError("already assigned", conflict_node="gpu-0", reason="conflict"))
    app = app_with(cluster, binder)
    assert raw(app, "bind", dumps(BIND_OK)).get_json() == {"Error": ""}


def test_concurrent_binds_of_different_pods_never_overbook_a_device(tmp_path: Path) -> None:
    # One node, 2 GPUs: room for exactly 8 pods of 250 milli-GPU; 12 bind at once.
    pods = [pod(f"p{i}", rate_rps=1, slo_ms=1000) for i in range(12)]
    cluster = write_snapshot(tmp_path / "one.json", [node("gpu-0", gpus=2, cpu="64"), *pods])
    binder = SlowBinder(0.02)  # widens the window between reservation and confirmation
    app = app_with(cluster, binder)
    barrier = threading.Barrier(12)

    def bind(p: dict[str, Any]) -> str:
        barrier.wait(5)
        return str(raw(app, "bind", dumps(bind_args(p, "gpu-0"))).get_json()["Error"])

    with ThreadPoolExecutor(12) as pool:
        errors = list(pool.map(bind, pods))
    assert sum(e == "" for e in errors) == 8
    assert all("no longer fits" in e or "cannot reserve" in e for e in errors if e)
    state = runtime_of(app).cache.state
    used = state.gpu_used_milli[state.node_index["gpu-0"], :2]
    assert used.tolist() == [1000, 1000]
    placed = [state.allocation(p["metadata"]["uid"]) for p in pods]
    per_device = [sum(1 for a in placed if a is not None and a.devices == (d,)) for d in (0, 1)]
    assert per_device == [4, 4]
    assert len(binder.calls) == 8


def test_binds_of_one_pod_from_two_threads_bind_it_once(cluster: Path) -> None:
    binder = SlowBinder(0.05)
    app = app_with(cluster, binder)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: raw(app, "bind", dumps(BIND_OK)).get_json(), range(2)))
    assert answers == [{"Error": ""}, {"Error": ""}]
    assert len(binder.calls) == 1


# ----------------------------------------------------------------------------- serve start-up


@pytest.mark.parametrize(
    ("extra", "snapshot", "message"),
    [
        ([], "garbage: [\n", "not valid YAML/JSON"),
        ([], '{"kind": "List", "items": []}', "no Node objects found"),
        (["--policy", "nope"], None, "unknown policy 'nope'; known: "),
    ],
    ids=["broken-yaml", "no-nodes", "unknown-policy"],
)
def test_serve_fails_fast_with_one_clear_line(
    tmp_path: Path, cluster: Path, extra: list[str], snapshot: str | None, message: str
) -> None:
    from click.testing import CliRunner

    from qosched.extender.cli.main import main

    path = cluster
    if snapshot is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(snapshot)
    result = CliRunner().invoke(main, ["serve", "--cluster", str(path), "--port", "1", *extra])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------- settings that shape decisions
def _cluster_file() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2] / "extender" / "demo" / "demo-cluster.yaml")


def _filter_body(annotations: dict[str, str], names: list[str]) -> dict:
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "u-settings", "annotations": annotations},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }
    return {"Pod": pod, "Nodes": None, "NodeNames": names}


def test_scheduler_verbs_refuse_non_loopback_callers() -> None:
    from qosched.extender.server.app import create_app

    app = create_app({"CLUSTER_FILE": _cluster_file()})
    client = app.test_client()
    body = _filter_body({}, ["t4-0"])
    remote = client.post("/filter", json=body, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 403
    assert "loopback" in remote.get_json()["error"]
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.post("/filter", json=body).status_code == 200  # the test client is 127.0.0.1
    opened = create_app(
        {"CLUSTER_FILE": _cluster_file(), "SCHEDULER_VERBS_LOOPBACK_ONLY": False}
    ).test_client()
    assert opened.post("/filter", json=body, environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


def test_unknown_class_annotation_is_an_invalid_request_not_an_error() -> None:
    from qosched.extender.server.app import create_app

    client = create_app({"CLUSTER_FILE": _cluster_file()}).test_client()
    ann = {"qosched.io/model": "resnet50", "qosched.io/slo-ms": "50", "qosched.io/class": "gold"}
    out = client.post("/filter", json=_filter_body(ann, ["t4-0", "t4-1"])).get_json()
    assert out["NodeNames"] == []
    assert not out["Error"]
    assert all("gold" in msg for msg in out["FailedAndUnresolvableNodes"].values())


def test_configured_classes_and_thresholds_reach_the_decision() -> None:
    from qosched.extender.server.app import create_app

    classes = {
        "classes": [
            {"name": "gold", "qos_target": 1.0, "rank": 0},
            {"name": "prod", "qos_target": 1.0, "rank": 1},
            {"name": "batch", "qos_target": 0.9, "rank": 2},
            {"name": "free", "qos_target": 0.5, "rank": 3},
        ]
    }
    ann = {
        "qosched.io/model": "resnet50",
        "qosched.io/slo-ms": "50",
        "qosched.io/rate-rps": "150",
        "qosched.io/class": "gold",
        "qosched.io/gpu-milli": "250",
    }
    strict = create_app(
        {"CLUSTER_FILE": _cluster_file(), "CLASSES": classes, "THRESHOLD_UTILIZATION": 0.3}
    ).test_client()
    loose = create_app({"CLUSTER_FILE": _cluster_file(), "CLASSES": classes}).test_client()
    # ResNet-50 on a T4 is ~3 ms a request: 150 rps is ρ ≈ 0.45, over 0.3 but under the default 0.8.
    body = _filter_body(ann, ["t4-0"])
    assert loose.post("/filter", json=body).get_json()["NodeNames"] == ["t4-0"]
    refused = strict.post("/filter", json=body).get_json()
    assert refused["NodeNames"] == []
    assert "utilisation" in refused["FailedNodes"]["t4-0"]
