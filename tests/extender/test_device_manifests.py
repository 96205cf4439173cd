"""The device layer's manifests (components/device-layer: webhook.yaml, webhook-certs.yaml,
device-plugin.yaml; components/cert-manager/certificate.yaml) against the code they run and the
API they call.

- RBAC: exactly the rules the code needs, enforced by the fake API server while the real code
  runs (``ensure_certs`` with the Job's flags; the plugin's pod list and node read), and the
  403 for what it must not do.
- The webhook configurations point at the Service, port and paths the app serves, with the
  chosen failure policies, timeouts and selectors; the TLS Secret, the certificate's names
  and the volume mounts agree; every container's arguments parse with the real click command.
- The base with the device-layer component builds with ``kubectl kustomize`` (when installed).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from qosched.extender.cli.device_plugin import device_plugin as device_plugin_command
from qosched.extender.cli.webhook import certs as certs_command
from qosched.extender.cli.webhook import serve as serve_command
from qosched.extender.deviceplugin.kube import pod_lister, sharing_reader
from qosched.extender.deviceplugin.server import DEFAULT_PLUGIN_DIR
from qosched.extender.kube.objects import GPU_SHARE_RESOURCE
from qosched.extender.server.settings import load_config
from qosched.extender.webhook.admission import TEMPLATE_PATHS
from qosched.extender.webhook.app import create_app
from qosched.extender.webhook.certs import dns_names, ensure_certs, make_bundle
from tests.extender.kustomize_support import build, load, resource_files, rule_tuples
from tests.kubefake import FakeKubeAPI, RbacAuthorizer

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
NAMESPACE = "qosched-system"
NODE_NAMESPACE = "qosched-node"
CERTS_USER = f"system:serviceaccount:{NAMESPACE}:qosched-webhook-certs"
PLUGIN_USER = f"system:serviceaccount:{NODE_NAMESPACE}:qosched-device-plugin"


def _docs(*names: str) -> list[dict[str, Any]]:
    return [d for n in names for d in yaml.safe_load_all((MANIFESTS / n).read_text()) if d]


LAYER = "components/device-layer"
OBJECTS = _docs(f"{LAYER}/webhook.yaml", f"{LAYER}/webhook-certs.yaml", f"{LAYER}/device-plugin.yaml")
ALL = [d for p in resource_files(MANIFESTS) for d in load(p)] + OBJECTS
CERT_MANAGER = _docs("components/cert-manager/certificate.yaml")


def _one(kind: str, name: str, objects: list[dict[str, Any]] = OBJECTS) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _container(kind: str, name: str) -> dict[str, Any]:
    (c,) = _one(kind, name)["spec"]["template"]["spec"]["containers"]
    return c


# ------------------------------------------------------------------------------------ RBAC tables

EXPECTED = {
    ("Role", "qosched-webhook-certs"): {
        ("", "secrets", "create", ""),
        ("", "secrets", "get", "qosched-webhook-tls"),
        ("", "secrets", "update", "qosched-webhook-tls"),
    },
    ("ClusterRole", "qosched-webhook-certs"): {
        ("admissionregistration.k8s.io", r, v, "qosched")
        for r in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
        for v in ("get", "patch")
    },
    ("ClusterRole", "qosched-device-plugin"): {("", "pods", "list", ""), ("", "nodes", "get", "")},
}


@pytest.mark.parametrize(("kind", "name"), list(EXPECTED), ids=[f"{k}-{n}" for k, n in EXPECTED])
def test_roles_grant_exactly_what_the_code_calls(kind: str, name: str) -> None:
    assert rule_tuples(_one(kind, name)["rules"]) == EXPECTED[(kind, name)]


def test_the_webhook_itself_has_no_api_access() -> None:
    bound = [
        b
        for b in ALL
        if b["kind"].endswith("Binding") and any(s["name"] == "qosched-webhook" for s in b["subjects"])
    ]
    assert bound == []
    spec = _one("Deployment", "qosched-webhook")["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False


def _webhook_configurations(api: FakeKubeAPI) -> None:
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        api.add(_one(kind, "qosched"))
        other = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "someone-else"},
        }
        api.add({**other, "webhooks": []})


def _job_params() -> dict[str, Any]:
    c = _container("Job", "qosched-webhook-certs")
    assert c["command"] == ["qosched"]
    assert c["args"][:2] == ["webhook", "certs"]
    return certs_command.make_context("certs", c["args"][2:]).params


def test_certs_job_runs_under_its_rbac() -> None:
    params = _job_params()
    with FakeKubeAPI(authorizer=RbacAuthorizer(ALL, user=CERTS_USER)) as api:
        _webhook_configurations(api)
        api_client = api.api_client()
        try:
            kwargs = {
                k: params[k] for k in ("namespace", "service", "secret", "mutating", "validating", "days")
            }
            first = ensure_certs(api_client, **kwargs, renew_before_days=params["renew_before_days"])
            assert first.issued
            assert first.patched == ("mutating/qosched", "validating/qosched")
            # Renewal path (get + update of the Secret): force it with a nearly expired certificate.
            names = dns_names(params["service"], params["namespace"])
            soon = make_bundle(names, days=5)
            data = {"ca.crt": soon.ca_pem, "tls.crt": soon.cert_pem, "tls.key": soon.key_pem}
            api.update(
                "secrets",
                params["secret"],
                lambda s: {**s, "data": {k: base64.b64encode(v).decode() for k, v in data.items()}},
                params["namespace"],
            )
            second = ensure_certs(api_client, **kwargs, renew_before_days=params["renew_before_days"])
            assert second.issued
            assert ensure_certs(api_client, **kwargs).patched == ()
        finally:
            api_client.close()
        assert api.count(status=403) == 0


CERTS_FORBIDDEN = [
    ("list-secrets", lambda core, adm: core.list_namespaced_secret(NAMESPACE)),
    ("read-other-secret", lambda core, adm: core.read_namespaced_secret("qosched-upload-token", NAMESPACE)),
    ("patch-other-webhook", lambda core, adm: adm.patch_mutating_webhook_configuration("someone-else", [])),
    ("list-webhooks", lambda core, adm: adm.list_mutating_webhook_configuration()),
    ("read-pods", lambda core, adm: core.list_pod_for_all_namespaces()),
]


@pytest.mark.parametrize("call", [c for _, c in CERTS_FORBIDDEN], ids=[i for i, _ in CERTS_FORBIDDEN])
def test_certs_job_cannot_do_more(call: Any) -> None:
    with FakeKubeAPI(authorizer=RbacAuthorizer(ALL, user=CERTS_USER)) as api:
        _webhook_configurations(api)
        api.add_secret("qosched-upload-token", NAMESPACE, {"token": "t"})
        api_client = api.api_client()
        try:
            with pytest.raises(client.ApiException) as err:
                call(client.CoreV1Api(api_client), client.AdmissionregistrationV1Api(api_client))
        finally:
            api_client.close()
        assert err.value.status == 403


def test_device_plugin_reads_its_node_under_its_rbac() -> None:
    with FakeKubeAPI(authorizer=RbacAuthorizer(ALL, user=PLUGIN_USER)) as api:
        api.add_node("gpu-0", gpus=0, labels={"qosched.io/sharing": "mps"})
        api.add_node("gpu-1", gpus=0)
        api.add_pod("mine", model="resnet50", node_name="gpu-0")
        api.add_pod("theirs", model="resnet50", node_name="gpu-1")
        api_client = api.api_client()
        try:
            pods = pod_lister(api_client, "gpu-0")()
            assert [p["metadata"]["name"] for p in pods] == ["mine"]  # field selector spec.nodeName
            assert sharing_reader(api_client, "gpu-0")() == "mps"
            core = client.CoreV1Api(api_client)
            for forbidden in (
                lambda: core.read_namespaced_pod("mine", "default"),
                lambda: core.patch_namespaced_pod("mine", "default", {"metadata": {"labels": {"a": "b"}}}),
                lambda: core.list_namespaced_secret("default"),
                lambda: core.patch_node("gpu-0", {"metadata": {"labels": {"a": "b"}}}),
            ):
                with pytest.raises(client.ApiException) as err:
                    forbidden()
                assert err.value.status == 403
        finally:
            api_client.close()
        calls = api.calls(verb="list")
        assert calls
        assert api.count(status=403) == 4


# ------------------------------------------------------------------------------------ webhook wiring


def _hook(kind: str) -> dict[str, Any]:
    (hook,) = _one(kind, "qosched")["webhooks"]
    return hook


@pytest.mark.parametrize(
    ("kind", "path", "failure_policy"),
    [
        ("MutatingWebhookConfiguration", "/mutate", "Fail"),
        ("ValidatingWebhookConfiguration", "/validate", "Ignore"),
    ],
    ids=["mutating", "validating"],
)
def test_webhook_configuration(kind: str, path: str, failure_policy: str) -> None:
    hook = _hook(kind)
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == failure_policy
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["namespaceSelector"] == {"matchLabels": {"qosched.io/enabled": "true"}}
    svc_ref = hook["clientConfig"]["service"]
    assert svc_ref["path"] == path
    routes = {r.rule for r in create_app(load_config(environ={})).url_map.iter_rules()}
    assert path in routes
    service = _one("Service", svc_ref["name"])
    assert service["metadata"]["namespace"] == svc_ref["namespace"] == NAMESPACE
    (port,) = service["spec"]["ports"]
    assert port["port"] == svc_ref["port"]
    (container_port,) = _container("Deployment", "qosched-webhook")["ports"]
    assert port["targetPort"] == container_port["name"]
    bind = next(a for a in _container("Deployment", "qosched-webhook")["args"] if a.startswith("--bind="))
    assert bind.endswith(f":{container_port['containerPort']}")
    annotation = _one(kind, "qosched")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert (
        annotation
        == f"{NAMESPACE}/{_one('Certificate', 'qosched-webhook', CERT_MANAGER)['metadata']['name']}"
    )


def test_pods_are_mutated_on_create_only_and_workloads_cover_the_template_kinds() -> None:
    (rule,) = _hook("MutatingWebhookConfiguration")["rules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == ([""], ["pods"], ["CREATE"])
    plural = {"Deployment": "deployments", "ReplicaSet": "replicasets", "StatefulSet": "statefulsets"}
    plural |= {"DaemonSet": "daemonsets", "Job": "jobs", "CronJob": "cronjobs"}
    covered = {r for rule in _hook("ValidatingWebhookConfiguration")["rules"] for r in rule["resources"]}
    assert covered == {plural[k] for k in TEMPLATE_PATHS}


def test_webhook_serve_arguments_and_tls_files(tmp_path: Path) -> None:
    c = _container("Deployment", "qosched-webhook")
    assert c["args"][:2] == ["webhook", "serve"]
    args = dict(a.split("=", 1) for a in c["args"][2:] if "=" in a)
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
    assert Path(args["--cert-file"]).parent == Path(args["--key-file"]).parent == Path(mount["mountPath"])
    assert {Path(args["--cert-file"]).name, Path(args["--key-file"]).name} == {"tls.crt", "tls.key"}
    (volume,) = [
        v
        for v in _one("Deployment", "qosched-webhook")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "tls"
    ]
    secret = volume["secret"]["secretName"]
    assert (
        secret
        == _job_params()["secret"]
        == _one("Certificate", "qosched-webhook", CERT_MANAGER)["spec"]["secretName"]
    )
    # The arguments parse with the real command (files swapped for existing ones).
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("x")
    swapped = [
        f"{a.split('=')[0]}={tmp_path / Path(a.split('=')[1]).name}"
        if a.startswith(("--cert-file", "--key-file"))
        else a
        for a in c["args"][2:]
    ]
    params = serve_command.make_context("serve", swapped).params
    assert params["device_plugin"] is True


def test_certificate_names_are_the_services() -> None:
    cert = _one("Certificate", "qosched-webhook", CERT_MANAGER)
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["dnsNames"] == dns_names("qosched-webhook", NAMESPACE)
    assert cert["metadata"]["namespace"] == NAMESPACE
    issuer = _one("Issuer", cert["spec"]["issuerRef"]["name"], CERT_MANAGER)
    assert issuer["spec"] == {"selfSigned": {}}
    params = _job_params()
    assert dns_names(params["service"], params["namespace"]) == cert["spec"]["dnsNames"]


# ------------------------------------------------------------------------------------ device plugin


def test_daemonset_runs_on_labelled_nodes_with_the_kubelet_directory() -> None:
    ds = _one("DaemonSet", "qosched-device-plugin")
    spec = ds["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"qosched.io/device-plugin": "true"}
    assert spec["serviceAccountName"] == "qosched-device-plugin"
    c = _container("DaemonSet", "qosched-device-plugin")
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert c["args"][0] == "device-plugin"
    params = device_plugin_command.make_context("device-plugin", [*c["args"][1:], "--node-name=gpu-0"]).params
    (volume,) = [v for v in spec["volumes"] if v["name"] == "device-plugins"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "device-plugins"]
    assert str(params["plugin_dir"]) == volume["hostPath"]["path"] == mount["mountPath"] == DEFAULT_PLUGIN_DIR
    ns = _one("Namespace", ds["metadata"]["namespace"])
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_scheduler_config_leaves_the_share_to_kube_scheduler() -> None:
    """No managedResources: pods reach the extender whatever they request, and kube-scheduler's
    NodeResourcesFit accounts qosched.io/gpu-share like any extended resource (ignoredByScheduler
    would switch that off)."""
    cm = _one("ConfigMap", "qosched-scheduler-config", ALL)
    (extender,) = yaml.safe_load(cm["data"]["scheduler-config.yaml"])["extenders"]
    assert "managedResources" not in extender
    assert GPU_SHARE_RESOURCE == "qosched.io/gpu-share"


def test_kustomization_builds() -> None:
    built = {(d["kind"], d["metadata"]["name"]) for d in build(("device-layer", "cert-manager"))}
    assert {(o["kind"], o["metadata"]["name"]) for o in OBJECTS + CERT_MANAGER} <= built


def test_webhook_and_extender_use_the_same_service_classes() -> None:
    """One source of truth also in deployment: the settings that decide whether a
    ``qosched.io/class`` is valid are the same in the webhook and the extender containers."""
    keys = ("QOSCHED_CLASSES", "QOSCHED_PRIORITY_CLASS_MAP", "QOSCHED_CONFIG_FILE")
    (scheduler,) = [d for d in ALL if d["kind"] == "Deployment" and d["metadata"]["name"] == "qosched"]
    (extender,) = [c for c in scheduler["spec"]["template"]["spec"]["containers"] if c["name"] == "extender"]
    webhook = _container("Deployment", "qosched-webhook")

    def class_env(c: dict[str, Any]) -> dict[str, Any]:
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", []) if e["name"] in keys}

    assert class_env(webhook) == class_env(extender)
    assert not any(a.startswith("--config") for a in webhook["args"]) or any(
        a.startswith("--config") for a in extender.get("args", [])
    )
