"""Every install docs/install.md names, built by ``kubectl kustomize`` and checked as installed.

For each variant of :data:`~tests.extender.kustomize_support.VARIANTS` (the base plus components):

- it builds, and no object is defined twice;
- every object with an official client model round-trips through it unchanged (custom resources
  of cert-manager and the Prometheus Operator: the required fields only);
- references hold: ServiceAccounts, ConfigMaps and Secrets of pod templates (a non-optional
  Secret is written by a Job or a Certificate of the same variant), Service selectors and named
  target ports, PDB and ServiceMonitor selectors, RoleBinding roles and subjects;
- RBAC: composing components never changes an identity's grants (each ServiceAccount's rules equal
  those of its own component's files, which tests/extender/test_manifests.py and
  test_device_manifests.py hold to the code's calls), and the real code runs under the built
  variant's RBAC through the fake API server with no 403: the extender (list/watch, filter, bind),
  the QoE controller (a cycle) where the variant has it, the TLS certificate Job where it has one;
- the TLS scheduler configuration equals the base's except the three HTTPS fields.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from flask import Flask
from kubernetes import client

from qosched.extender.cli.webhook import certs as certs_command
from qosched.extender.controller.loop import ControllerSettings, QoEController
from qosched.extender.controller.prom import PromSnapshot
from qosched.extender.server.app import runtime_of
from tests.extender.extender_support import JSON_CT, args, bind_args
from tests.extender.kustomize_support import (
    COMPONENTS,
    MANIFESTS,
    VARIANTS,
    build,
    is_crd,
    load,
    one,
    require_kubectl,
    resource_files,
)
from tests.extender.live_support import wait_until
from tests.kubefake import FakeKubeAPI, RbacAuthorizer, write_kubeconfig

NAMESPACE = "qosched-system"
IDS = list(VARIANTS)
COMPONENT_FILES = {
    "": resource_files(MANIFESTS),
    **{n: resource_files(COMPONENTS / n) for n in ("controller", "device-layer", "tls")},
}
#: Built-in roles the base binds (kube-scheduler's own grants).
SYSTEM_ROLES = {
    "system:kube-scheduler",
    "system:volume-scheduler",
    "extension-apiserver-authentication-reader",
}


@pytest.fixture(params=IDS, ids=IDS, scope="module")
def variant(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, build(VARIANTS[request.param])


def _key(o: dict[str, Any]) -> tuple[str, str, str]:
    return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]


# ------------------------------------------------------------------------------------ objects


def _model_differences(doc: dict[str, Any]) -> list[str]:
    version = doc["apiVersion"].rsplit("/", 1)[-1]
    name = version.capitalize() + doc["kind"]
    assert hasattr(client.models, name), f"no client model {name}"
    api = client.ApiClient()
    got = api.sanitize_for_serialization(api.deserialize(json.dumps(doc), name, "application/json"))

    def diff(want: Any, have: Any, path: str) -> list[str]:
        if isinstance(want, dict) and isinstance(have, dict):
            return [
                d
                for k in sorted(set(want) | set(have))
                for d in diff(want.get(k), have.get(k), f"{path}.{k}")
            ]
        if isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
            return [
                d for i, (a, b) in enumerate(zip(want, have, strict=True)) for d in diff(a, b, f"{path}[{i}]")
            ]
        return [] if want == have else [f"{path}: {want!r} -> {have!r}"]

    return diff(doc, got, "")


def test_builds_without_duplicates_and_objects_fit_the_models(
    variant: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = variant
    keys = [_key(o) for o in objects]
    assert len(keys) == len(set(keys))
    for o in objects:
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qosched", _key(o)
        if is_crd(o):
            assert {"apiVersion", "kind", "metadata", "spec"} <= set(o), _key(o)
            assert o["metadata"]["namespace"] == NAMESPACE, _key(o)
        else:
            assert _model_differences(o) == [], _key(o)


def _templates(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) of every Deployment, DaemonSet and Job."""
    return [(o, o["spec"]["template"]) for o in objects if o["kind"] in ("Deployment", "DaemonSet", "Job")]


def _written_secrets(objects: list[dict[str, Any]]) -> set[str]:
    """Secrets a Job (``--secret=``) or a cert-manager Certificate of the variant writes."""
    out = {o["spec"]["secretName"] for o in objects if o["kind"] == "Certificate"}
    for workload, template in _templates(objects):
        if workload["kind"] == "Job":
            for c in template["spec"]["containers"]:
                out |= {a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--secret=")}
    return out


def test_pod_templates_reference_what_exists(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = variant
    keys = {_key(o) for o in objects}
    written = _written_secrets(objects)
    for workload, template in _templates(objects):
        ns = workload["metadata"]["namespace"]
        spec = template["spec"]
        assert ("ServiceAccount", ns, spec["serviceAccountName"]) in keys, _key(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            assert {m["name"] for m in c.get("volumeMounts", [])} <= set(volumes), (_key(workload), c["name"])
        for v in volumes.values():
            if "configMap" in v:
                assert ("ConfigMap", ns, v["configMap"]["name"]) in keys, v
            if "secret" in v and not v["secret"].get("optional"):
                assert v["secret"]["secretName"] in written, v


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_selectors_and_ports_match(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = variant
    templates = _templates(objects)
    services = [o for o in objects if o["kind"] == "Service"]
    for svc in services:
        pods = [t for w, t in templates if _selects(svc["spec"]["selector"], t["metadata"]["labels"])]
        assert pods, f"Service {svc['metadata']['name']} selects no pod template"
        names = {p["name"] for t in pods for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        assert any(
            _selects(pdb["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]) for _, t in templates
        )
    for sm in (o for o in objects if o["kind"] == "ServiceMonitor"):
        port = sm["spec"]["endpoints"][0]["port"]
        matched = [
            s for s in services if _selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert any(port in {p["name"] for p in s["spec"]["ports"]} for s in matched), sm["metadata"]["name"]


def test_bindings_name_roles_and_accounts_that_exist(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = variant
    keys = {_key(o) for o in objects}
    for b in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        assert (ref["kind"], ns, ref["name"]) in keys or ref["name"] in SYSTEM_ROLES, b["metadata"]["name"]
        for s in b["subjects"]:
            assert ("ServiceAccount", s["namespace"], s["name"]) in keys, b["metadata"]["name"]


# ------------------------------------------------------------------------------------ RBAC


def grants(objects: list[dict[str, Any]]) -> dict[str, set[tuple[str, ...]]]:
    """ServiceAccount -> its (binding namespace, group, resource, verb, name) grants."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
    out: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for b in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace", "")
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"]))
        rules = role["rules"] if role else [{"builtin": ref["name"]}]
        for s in b["subjects"]:
            for r in rules:
                if "builtin" in r:
                    out[f"{s['namespace']}/{s['name']}"].add((ns, "builtin", r["builtin"]))
                    continue
                for g in r["apiGroups"]:
                    for res in r["resources"]:
                        for verb in r["verbs"]:
                            for name in r.get("resourceNames") or [""]:
                                out[f"{s['namespace']}/{s['name']}"].add((ns, g, res, verb, name))
    return dict(out)


SOURCE_GRANTS = grants([d for files in COMPONENT_FILES.values() for f in files for d in load(f)])


def test_composition_keeps_every_identitys_grants(variant: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = variant
    for account, rules in grants(objects).items():
        assert rules == SOURCE_GRANTS[account], account


@pytest.fixture
def variant_api(
    kube_api: FakeKubeAPI, variant: tuple[str, list[dict[str, Any]]]
) -> tuple[FakeKubeAPI, list[dict[str, Any]]]:
    kube_api.add_node("t4-0", accelerator="nvidia-t4", gpus=1)
    kube_api.add_node("n1", accelerator="cpu", cpu="2", gpus=0)
    return kube_api, variant[1]


def _extender_settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The Deployment's QOSCHED_* settings that name API objects (not in-pod file paths)."""
    dep = one(objects, "Deployment", "qosched")
    (c,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "extender"]
    env = {e["name"].removeprefix("QOSCHED_"): e["value"] for e in c["env"] if "value" in e}
    return {k: v for k, v in env.items() if k.endswith("_CONFIGMAP") or k == "POLICY"}


def test_extender_runs_under_the_variants_rbac(
    variant_api: tuple[FakeKubeAPI, list[dict[str, Any]]], live_app_factory: Any
) -> None:
    api, objects = variant_api
    api.authorizer = RbacAuthorizer(objects, user=f"system:serviceaccount:{NAMESPACE}:qosched")
    pod = api.add_pod("p", model="resnet50", slo_ms=500, rate_rps=2, gpu_milli=500)
    app: Flask = live_app_factory(**_extender_settings(objects))
    wait_until(lambda: runtime_of(app).cache.stats().synced, 10, "cache synced")
    http = app.test_client()
    kept = http.post("/filter", data=json.dumps(args(pod, ["t4-0", "n1"])), content_type=JSON_CT).get_json()
    assert kept["NodeNames"] == ["t4-0"]
    assert http.post("/bind", data=json.dumps(bind_args(pod, "t4-0")), content_type=JSON_CT).get_json() == {
        "Error": ""
    }
    assert (api.get("pods", "p") or {})["spec"]["nodeName"] == "t4-0"
    assert api.count(status=403) == 0


class _Canned:
    def read(self, percentiles: Any, *, with_rate: bool = True) -> PromSnapshot | None:
        return PromSnapshot({None: {("default", "miss"): 20.0, ("default", "beat"): 2.0}})


def test_controller_runs_under_the_variants_rbac(
    variant_api: tuple[FakeKubeAPI, list[dict[str, Any]]], variant: tuple[str, list[dict[str, Any]]]
) -> None:
    api, objects = variant_api
    if "controller" not in VARIANTS[variant[0]]:
        assert not [o for o in objects if o["metadata"]["name"] == "qosched-controller"]
        return
    api.authorizer = RbacAuthorizer(objects, user=f"system:serviceaccount:{NAMESPACE}:qosched-controller")
    for name in ("miss", "beat"):
        api.add_pod(name, slo_ms=10, node_name="n1", cpu="1", memory="128Mi")
    with api.api_client() as c:
        report = QoEController(client.CoreV1Api(c), _Canned(), ControllerSettings(rate_source="none")).cycle()
    assert report.applied == 2
    assert api.count(status=403) == 0


def test_tls_certificate_job_runs_under_the_variants_rbac(
    variant_api: tuple[FakeKubeAPI, list[dict[str, Any]]],
    variant: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    api, objects = variant_api
    if "tls" not in VARIANTS[variant[0]]:
        return
    api.authorizer = RbacAuthorizer(objects, user=f"system:serviceaccount:{NAMESPACE}:qosched-extender-certs")
    (c,) = one(objects, "Job", "qosched-extender-certs")["spec"]["template"]["spec"]["containers"]
    kubeconfig = write_kubeconfig(api.url, tmp_path / "kubeconfig")
    result = CliRunner().invoke(certs_command, [*c["args"][2:], f"--kubeconfig={kubeconfig}"])
    assert result.exit_code == 0, result.output
    assert api.get("secrets", "qosched-extender-tls", NAMESPACE) is not None
    assert api.count(status=403) == 0


# ------------------------------------------------------------------------------------ TLS config


def test_tls_scheduler_config_differs_from_the_base_only_in_https() -> None:
    def config(names: tuple[str, ...]) -> dict[str, Any]:
        cm = one(build(names), "ConfigMap", "qosched-scheduler-config")
        return dict(yaml.safe_load(cm["data"]["scheduler-config.yaml"]))

    base, tls = config(()), config(("tls",))
    (b,), (t,) = base.pop("extenders"), tls.pop("extenders")
    assert base == tls
    https = {"urlPrefix", "enableHTTPS", "tlsConfig"}
    assert {k: v for k, v in b.items() if k not in https} == {k: v for k, v in t.items() if k not in https}
    assert (b["urlPrefix"], b["enableHTTPS"]) == ("http://127.0.0.1:8888", False)
    assert (t["urlPrefix"], t["enableHTTPS"]) == ("https://qosched-extender.qosched-system.svc:8888", True)


def test_ha_runs_two_scheduler_pods_on_one_lease() -> None:
    objects = build(VARIANTS["ha"])
    dep = one(objects, "Deployment", "qosched")
    assert dep["spec"]["replicas"] == 2
    cm = one(objects, "ConfigMap", "qosched-scheduler-config")
    election = yaml.safe_load(cm["data"]["scheduler-config.yaml"])["leaderElection"]
    assert election["leaderElect"] is True
    assert (election["resourceNamespace"], election["resourceName"]) == (NAMESPACE, "qosched-scheduler")
    pdb = one(objects, "PodDisruptionBudget", "qosched")
    assert pdb["spec"]["maxUnavailable"] == 1 < dep["spec"]["replicas"]


def test_docs_name_exactly_the_tested_variants() -> None:
    """docs/install.md's table of installs is VARIANTS: every named install is built above."""
    text = (MANIFESTS.parent / "docs" / "install.md").read_text()
    table = text.split("<!-- variants:", 1)[1].split("<!-- /variants -->", 1)[0]
    rows = [
        line.strip("|").split("|")
        for line in table.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    named = {
        name.strip(): tuple(c.strip() for c in comps.split(",")) if comps.strip() != "(none)" else ()
        for name, comps in rows[1:]
    }
    assert named == VARIANTS


def test_the_docs_example_kustomization_builds_as_described(tmp_path: Path) -> None:
    """The `my-qosched/kustomization.yaml` of docs/install.md, pointed at this checkout."""
    text = (MANIFESTS.parent / "docs" / "install.md").read_text()
    block = text.split("# my-qosched/kustomization.yaml\n", 1)[1].split("```", 1)[0]
    mine = tmp_path / "my-qosched"
    mine.mkdir()
    rel = os.path.relpath(MANIFESTS, mine)
    (mine / "kustomization.yaml").write_text(block.replace("../qosched/manifests", rel))
    out = subprocess.run(
        [require_kubectl(), "kustomize", str(mine)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    objects = [d for d in yaml.safe_load_all(out) if d]
    images = {
        c["image"]
        for _, t in _templates(objects)
        for c in t["spec"]["containers"]
        if not c["image"].startswith("registry.k8s.io/")
    }
    assert images == {"registry.example.com/qosched:0.1.0"}
    (c,) = one(objects, "Deployment", "qosched-controller")["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "--prometheus-url=http://prometheus-operated.monitoring.svc:9090"
    assert sum(a.startswith("--prometheus-url=") for a in c["args"]) == 1
