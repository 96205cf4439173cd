"""The admission webhook as a real TLS server on 127.0.0.1, driven with AdmissionReview v1 bodies.

The returned JSONPatch is applied with ``jsonpatch`` (the RFC 6902 implementation, not ours) and
the resulting pod is checked; a second review of the patched pod must return no patch.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonpatch
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from qosched.extender.kube.objects import GPU_SHARE_RESOURCE
from qosched.extender.server.app import class_mapper
from qosched.extender.server.runtime import Runtime
from qosched.extender.server.settings import load_config
from qosched.extender.webhook.app import create_app, options_from_env
from qosched.extender.webhook.certs import make_bundle
from qosched.extender.webhook.mutation import WebhookOptions


class TlsWebhook:
    """``create_app`` behind werkzeug's TLS server on an ephemeral loopback port."""

    def __init__(self, tmp: Path, options: WebhookOptions) -> None:
        bundle = make_bundle(["localhost"], ip_addresses=["127.0.0.1"])
        (tmp / "tls.crt").write_bytes(bundle.cert_pem)
        (tmp / "tls.key").write_bytes(bundle.key_pem)
        self.ca_file = tmp / "ca.crt"
        self.ca_file.write_bytes(bundle.ca_pem)
        app = create_app(load_config(environ={}), options)
        self.server = make_server(
            "127.0.0.1", 0, app, threaded=True, ssl_context=(str(tmp / "tls.crt"), str(tmp / "tls.key"))
        )
        self.url = f"https://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA
        self.session.verify = str(self.ca_file)

    def post(self, path: str, body: Any) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.session.post(
            self.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=10
        )

    def close(self) -> None:
        self.session.close()
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsWebhook]:
    server = TlsWebhook(tmp_path_factory.mktemp("tls"), WebhookOptions(device_plugin=True))
    yield server
    server.close()


@pytest.fixture(scope="module")
def hook_without_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsWebhook]:
    server = TlsWebhook(tmp_path_factory.mktemp("tls"), WebhookOptions(device_plugin=False))
    yield server
    server.close()


def pod(
    annotations: dict[str, str] | None = None,
    *,
    scheduler: str = "default-scheduler",
    containers: list[dict[str, Any]] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod as the API server hands it to a mutating webhook (defaults applied, no namespace)."""
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": containers
        if containers is not None
        else [
            {"name": "server", "image": "registry.invalid/server:1", "resources": {"requests": {"cpu": "1"}}}
        ],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "svc-", "annotations": annotations or {}},
        "spec": spec,
    }


SERVICE = {"qosched.io/model": "resnet50", "qosched.io/slo-ms": "50", "qosched.io/gpu-milli": "250"}


def review(
    obj: dict[str, Any], *, uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002", kind: str = "Pod"
) -> dict[str, Any]:
    group, version = ("apps", "v1") if kind == "Deployment" else ("", "v1")
    resource = {"Pod": "pods", "Deployment": "deployments", "CronJob": "cronjobs"}[kind]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "namespace": "inference",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": obj,
            "dryRun": False,
        },
    }


def admit(
    hook: TlsWebhook, obj: dict[str, Any], path: str = "/mutate"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(response, the object after applying the returned patch)."""
    uid = "uid-" + str(id(obj))
    resp = hook.post(path, review(obj, uid=uid, kind=obj.get("kind", "Pod")))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = body["response"]
    assert response["uid"] == uid
    if "patch" not in response:
        assert "patchType" not in response
        return response, obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return response, jsonpatch.apply_patch(obj, ops)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container.get("env", [])
        if "valueFrom" in e
    }


def test_fractional_pod_gets_scheduler_share_and_variant(hook: TlsWebhook) -> None:
    response, patched = admit(hook, pod(SERVICE))
    assert response["allowed"] is True
    assert patched["spec"]["schedulerName"] == "qosched"
    (server,) = patched["spec"]["containers"]
    assert server["resources"] == {
        "requests": {"cpu": "1", GPU_SHARE_RESOURCE: "25"},
        "limits": {GPU_SHARE_RESOURCE: "25"},
    }
    # With the device plugin, Allocate sets the devices: no NVIDIA_VISIBLE_DEVICES here.
    assert env_of(server) == {"QOSCHED_VARIANT": "metadata.annotations['qosched.io/variant']"}


@pytest.mark.parametrize(
    ("annotations", "units"),
    [
        ({**SERVICE, "qosched.io/gpu-milli": "2000"}, "200"),
        ({**SERVICE, "qosched.io/gpu-milli": "125"}, "13"),
        ({**SERVICE, "qosched.io/gpu-milli": "1000"}, "100"),
    ],
    ids=["two-gpus", "rounded-up", "one-gpu"],
)
def test_share_units_are_hundredths_of_a_gpu(
    hook: TlsWebhook, annotations: dict[str, str], units: str
) -> None:
    _, patched = admit(hook, pod(annotations))
    limits = patched["spec"]["containers"][0]["resources"]["limits"]
    assert limits[GPU_SHARE_RESOURCE] == units


def test_whole_gpu_pod_keeps_nvidia_device_plugin(hook: TlsWebhook) -> None:
    containers = [{"name": "s", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
    _, patched = admit(hook, pod({"qosched.io/model": "resnet50"}, containers=containers))
    assert patched["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert patched["spec"]["schedulerName"] == "qosched"


def test_default_container_annotation_picks_the_serving_container(hook: TlsWebhook) -> None:
    containers = [
        {"name": "sidecar", "image": "proxy"},
        {"name": "model", "image": "server", "env": [{"name": "QOSCHED_VARIANT", "value": "mine"}]},
    ]
    annotations = {**SERVICE, "kubectl.kubernetes.io/default-container": "model"}
    _, patched = admit(hook, pod(annotations, containers=containers, scheduler="qosched"))
    sidecar, model = patched["spec"]["containers"]
    assert sidecar == containers[0]
    assert model["resources"]["requests"] == {GPU_SHARE_RESOURCE: "25"}
    assert model["env"] == [{"name": "QOSCHED_VARIANT", "value": "mine"}]  # the user's value is kept


def test_manual_device_variable_gives_way_to_the_plugin(
    hook: TlsWebhook, hook_without_plugin: TlsWebhook
) -> None:
    manual = {
        "name": "NVIDIA_VISIBLE_DEVICES",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['qosched.io/device']"}},
    }
    literal = {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}
    keep = {"name": "MODEL_DIR", "value": "/models"}
    for env, expected in (([keep, manual], [keep]), ([literal], [literal])):
        obj = pod(SERVICE, containers=[{"name": "s", "image": "x", "env": env}])
        _, patched = admit(hook, obj)
        names = [e for e in patched["spec"]["containers"][0]["env"] if e["name"] != "QOSCHED_VARIANT"]
        assert names == expected
        second, _ = admit(hook, patched)
        assert "patch" not in second
    # Without the plugin that variable is exactly what the webhook would inject: kept.
    _, patched = admit(
        hook_without_plugin, pod(SERVICE, containers=[{"name": "s", "image": "x", "env": [manual]}])
    )
    assert patched["spec"]["containers"][0]["env"][0] == manual


def test_other_scheduler_is_respected(hook: TlsWebhook) -> None:
    _, patched = admit(hook, pod(SERVICE, scheduler="my-scheduler"))
    assert patched["spec"]["schedulerName"] == "my-scheduler"


def test_without_device_plugin_devices_come_from_the_bind_annotation(hook_without_plugin: TlsWebhook) -> None:
    _, patched = admit(hook_without_plugin, pod(SERVICE))
    (server,) = patched["spec"]["containers"]
    assert server["resources"] == {"requests": {"cpu": "1"}}  # no plugin resource to request
    assert env_of(server) == {
        "QOSCHED_VARIANT": "metadata.annotations['qosched.io/variant']",
        "NVIDIA_VISIBLE_DEVICES": "metadata.annotations['qosched.io/device']",
    }
    _, mps = admit(hook_without_plugin, pod(SERVICE, node_selector={"qosched.io/sharing": "mps"}))
    assert env_of(mps["spec"]["containers"][0])["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == (
        "metadata.annotations['qosched.io/gpu-share-pct']"
    )


@pytest.mark.parametrize(
    "obj",
    [
        pod({**SERVICE, "kubectl.kubernetes.io/default-container": "server"}, scheduler="qosched"),
        pod(SERVICE),
        pod(SERVICE, containers=[{"name": "s", "image": "x"}]),
        pod(SERVICE, containers=[{"name": "s", "image": "x", "env": [{"name": "A", "value": "1"}]}]),
    ],
    ids=["plain", "default-scheduler", "no-resources", "with-env"],
)
@pytest.mark.parametrize("plugin", [True, False], ids=["plugin", "no-plugin"])
def test_reinvocation_is_idempotent(
    hook: TlsWebhook, hook_without_plugin: TlsWebhook, obj: dict[str, Any], plugin: bool
) -> None:
    server = hook if plugin else hook_without_plugin
    first, patched = admit(server, obj)
    assert "patch" in first
    second, again = admit(server, patched)
    assert "patch" not in second
    assert again == patched


@pytest.mark.parametrize(
    "obj",
    [
        pod(),
        pod({"app": "x", "prometheus.io/scrape": "true"}),
        pod({"qosched.io/device": "0"}),  # a bind annotation alone does not make a pod managed
    ],
    ids=["no-annotations", "other-annotations", "bind-annotation-only"],
)
def test_unmanaged_pods_are_untouched(hook: TlsWebhook, obj: dict[str, Any]) -> None:
    before = copy.deepcopy(obj)
    response, after = admit(hook, obj)
    assert response == {"uid": response["uid"], "allowed": True}
    assert after == before


BAD = [
    ({**SERVICE, "qosched.io/slo-ms": "fast"}, "qosched.io/slo-ms: 'fast' is not a number"),
    ({**SERVICE, "qosched.io/gpu-milli": "1500"}, "qosched.io/gpu-milli: 1500 is neither 1..1000"),
    ({**SERVICE, "qosched.io/gpu-milli": "0.5"}, "qosched.io/gpu-milli: '0.5' must be an integer >= 1"),
    ({**SERVICE, "qosched.io/slo-percentile": "12"}, "qosched.io/slo-percentile: '12' is outside 50..99.9"),
    ({**SERVICE, "qosched.io/class": "gold"}, "gold"),
]


@pytest.mark.parametrize(
    ("annotations", "fragment"),
    BAD,
    ids=["nan-slo", "gpu-milli-1500", "gpu-milli-fraction", "percentile", "class"],
)
def test_invalid_annotations_are_denied_with_the_extenders_message(
    hook: TlsWebhook, annotations: dict[str, str], fragment: str
) -> None:
    obj = pod(annotations)
    response, after = admit(hook, obj)
    assert response["allowed"] is False
    assert after == obj
    message = response["status"]["message"]
    assert response["status"]["code"] == 422
    assert fragment in message
    # One source of truth: exactly what the extender's filter answers for the same pod.
    # The verb returns before the policy or the cluster state is consulted: only "synced" is read.
    cache = SimpleNamespace(synced=True)
    runtime = Runtime(cache, None, None, class_of=class_mapper(load_config(environ={})))  # type: ignore[arg-type]
    names = ["n1"]
    outcome = runtime.filter(
        {**obj, "metadata": {**obj["metadata"], "name": "p", "namespace": "inference"}}, names
    )
    assert outcome.unresolvable == {"n1": message}


def test_malformed_spec_is_denied_not_crashed(hook: TlsWebhook) -> None:
    obj = pod(SERVICE, containers=[{"name": "s", "resources": {"requests": "lots"}}])
    response, _ = admit(hook, obj)
    assert response["allowed"] is False
    assert response["status"]["message"].startswith("qosched: invalid request: pod spec is malformed")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body is not JSON"),
        (b"[]", "body is not a JSON object"),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}).encode(),
            "expected apiVersion",
        ),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}
            ).encode(),
            "uid",
        ),
    ],
    ids=["not-json", "array", "v1beta1", "no-uid"],
)
def test_bad_reviews_get_a_400_with_one_line(hook: TlsWebhook, body: bytes, error: str) -> None:
    resp = hook.post("/mutate", body)
    assert resp.status_code == 400
    assert error in resp.json()["error"]


def deployment(annotations: dict[str, str]) -> dict[str, Any]:
    template = pod(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "svc", "namespace": "inference"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }


@pytest.mark.parametrize(
    ("annotations", "allowed"),
    [(SERVICE, True), ({}, True), (BAD[0][0], False), (BAD[4][0], False)],
    ids=["valid", "unmanaged", "bad-slo", "bad-class"],
)
def test_workloads_are_validated_at_apply_time(
    hook: TlsWebhook, annotations: dict[str, str], allowed: bool
) -> None:
    obj = deployment(annotations)
    response, after = admit(hook, obj, "/validate")
    assert response["allowed"] is allowed
    assert after == obj  # validation never patches
    if not allowed:
        assert response["status"]["message"].startswith("qosched: invalid request: ")


def test_cronjob_template_is_found(hook: TlsWebhook) -> None:
    template = deployment(BAD[0][0])["spec"]["template"]
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "c", "namespace": "inference"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
    }
    response, _ = admit(hook, cron, "/validate")
    assert response["allowed"] is False


def test_healthz(hook: TlsWebhook) -> None:
    assert hook.session.get(hook.url + "/healthz", timeout=5).json() == {"ok": True}


@pytest.mark.parametrize(
    ("value", "plugin"), [("true", True), ("false", False), ("0", False)], ids=["true", "false", "zero"]
)
def test_options_from_env(value: str, plugin: bool) -> None:
    assert options_from_env({"QOSCHED_WEBHOOK_DEVICE_PLUGIN": value}).device_plugin is plugin


def test_options_from_env_rejects_typos() -> None:
    with pytest.raises(ValueError, match="expected true or false"):
        options_from_env({"QOSCHED_WEBHOOK_DEVICE_PLUGIN": "yes please"})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
ANNOTATION_VALUES = st.sampled_from(["50", "0", "-1", "abc", "1e400", "250", "", "prod", "nan"])


@st.composite
def odd_pods(draw: st.DrawFn) -> Any:
    """Managed pods with odd shapes and values in every field the webhook reads."""
    annotations = draw(
        st.dictionaries(
            st.sampled_from(
                [*sorted(SERVICE), "qosched.io/class", "kubectl.kubernetes.io/default-container"]
            ),
            ANNOTATION_VALUES,
            min_size=1,
        )
    )
    spec = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "schedulerName": JSON,
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.text(max_size=3)}, optional={"resources": JSON, "env": JSON}
                    )
                    | JSON,
                    max_size=2,
                ),
                "nodeSelector": JSON,
            },
        )
    )
    return {"metadata": {"annotations": annotations}, "spec": draw(st.one_of(st.just(spec), JSON))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=st.one_of(odd_pods(), JSON), plugin=st.booleans())
def test_any_body_gets_an_answer_never_a_5xx(obj: Any, plugin: bool) -> None:
    """Whatever the object, the answer is an AdmissionReview (200) or a one-line 400; a patch,
    when there is one, applies to the object."""
    app = create_app(load_config(environ={}), WebhookOptions(device_plugin=plugin))
    body = (
        review(obj)
        if isinstance(obj, dict)
        else {**review({}), "request": {**review({})["request"], "object": obj}}
    )
    for path in ("/mutate", "/validate"):
        resp = app.test_client().post(path, data=json.dumps(body), content_type="application/json")
        assert resp.status_code in (200, 400), resp.get_data(as_text=True)
        if resp.status_code == 200 and "patch" in resp.get_json()["response"]:
            ops = json.loads(base64.b64decode(resp.get_json()["response"]["patch"]))
            jsonpatch.apply_patch(obj, ops)
