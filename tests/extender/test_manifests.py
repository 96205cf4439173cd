"""The Kubernetes manifests against the API models, the RBAC the code needs, and the contract.

- Every document round-trips through the official client's models unchanged: a misspelt or
  misplaced key (which ``kubectl apply`` might drop or the API reject) shows up as a difference.
- RBAC: the rules are exactly the expected table below, and a fake apiserver that enforces them
  accepts every API call the extender makes and refuses what it must not do.
- The embedded KubeSchedulerConfiguration uses kubescheduler.config.k8s.io/v1 field names
  (kube-scheduler decodes it strictly), verbs that are the contract's HTTP paths, and values
  kube-scheduler's validation accepts.
- The Deployment, Service and example workloads agree with each other, with
  ``qosched.extender.config`` and with the contract's annotations.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from qosched.extender import config as extender_config
from qosched.extender.objects import A_POLICY, USER_ANNOTATIONS, pod_demand
from qosched.policies.fairness.classes import DEFAULT_CLASSES
from qosched.profiles.store import bundled_profiles
from tests.kubefake import FakeKubeAPI, RbacAuthorizer, load_snapshot
from tests.kubefake.objects import BIND_ANNOTATIONS

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SHARED = ROOT / ".." / "shared"
CONTRACT = SHARED / "spec" / "contract.md"
CLUSTER_YAML = SHARED / "fixtures" / "kube-scheduler" / "cluster.yaml"

NAMESPACE = "qosched-system"
SERVICE_ACCOUNT = "qosched"
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


def _load() -> list[tuple[str, int, dict[str, Any]]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((path.name, i, doc))
    return docs


DOCS = _load()
OBJECTS = [d for _, _, d in DOCS]


def _one(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [
        o
        for o in OBJECTS
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _deployment() -> dict[str, Any]:
    return _one("Deployment", "qosched", NAMESPACE)


def _container(name: str) -> dict[str, Any]:
    (c,) = [c for c in _deployment()["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def _scheduler_config() -> dict[str, Any]:
    cm = _one("ConfigMap", "qosched-scheduler-config", NAMESPACE)
    return yaml.safe_load(cm["data"]["scheduler-config.yaml"])


def _extender() -> dict[str, Any]:
    (ext,) = _scheduler_config()["extenders"]
    return ext


# ------------------------------------------------------------------------------------ object models


def _model_name(doc: dict[str, Any]) -> str:
    version = doc["apiVersion"].rsplit("/", 1)[-1]
    name = version.capitalize() + doc["kind"]
    assert hasattr(client.models, name), f"no client model {name} for {doc['apiVersion']}/{doc['kind']}"
    return name


def _round_trip(doc: dict[str, Any]) -> dict[str, Any]:
    api = client.ApiClient()
    model = api.deserialize(json.dumps(doc), _model_name(doc), "application/json")
    return api.sanitize_for_serialization(model)


def _differences(want: Any, got: Any, path: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        return [
            d
            for k in sorted(set(want) | set(got))
            for d in _differences(want.get(k), got.get(k), f"{path}.{k}")
        ]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [
            d
            for i, (a, b) in enumerate(zip(want, got, strict=True))
            for d in _differences(a, b, f"{path}[{i}]")
        ]
    return [] if want == got else [f"{path}: {want!r} -> {got!r}"]


@pytest.mark.parametrize(
    "doc", [d for _, _, d in DOCS], ids=[f"{f}#{i}-{d['kind']}-{d['metadata']['name']}" for f, i, d in DOCS]
)
def test_document_round_trips_through_the_official_models(doc: dict[str, Any]) -> None:
    assert _differences(doc, _round_trip(doc)) == []


def test_round_trip_catches_misspelt_and_mistyped_keys() -> None:
    doc = copy.deepcopy(_deployment())
    pod = doc["spec"]["template"]["spec"]
    pod["serviceAcountName"] = pod.pop("serviceAccountName")
    assert _differences(doc, _round_trip(doc)) == [".spec.template.spec.serviceAcountName: 'qosched' -> None"]
    pod["containers"][1]["ports"][0]["containerPort"] = "nine-thousand"
    with pytest.raises(ValueError, match=r"container_port|containerPort"):
        _round_trip(doc)


def test_objects_live_in_qosched_system() -> None:
    elsewhere = {
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
        for f, _, o in DOCS
        if f != "example-inference.yaml"
        and o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")
        and o["metadata"].get("namespace") != NAMESPACE
    }
    # kube-scheduler's delegated authentication reads a ConfigMap in kube-system.
    assert elsewhere == {("RoleBinding", "qosched-extension-apiserver-authentication-reader", "kube-system")}
    assert (
        _one("Namespace", NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def test_kustomization_installs_everything_but_the_example() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert "namespace" not in kustomization  # would move the kube-system RoleBinding
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "example-inference.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


# ------------------------------------------------------------------------------------ RBAC rules

#: What the code needs, as (apiGroup, resource, verb, resourceName or ""). Cluster-wide:
EXPECTED_CLUSTER_RULES = {
    ("", "nodes", "get", ""),  # cluster cache: list, then watch from the list's version
    ("", "nodes", "list", ""),
    ("", "nodes", "watch", ""),
    ("", "pods", "get", ""),
    ("", "pods", "list", ""),
    ("", "pods", "watch", ""),
    ("", "pods", "patch", ""),  # qosched.io/* annotations
    ("", "pods/binding", "create", ""),  # the bind verb
    ("", "pods/resize", "patch", ""),  # QoE controller, in-place resize
    ("", "events", "create", ""),
    ("events.k8s.io", "events", "create", ""),
}
#: ... and in qosched-system only:
EXPECTED_NAMESPACE_RULES = {
    ("", "configmaps", "list", ""),  # profile store: watch for hot reload
    ("", "configmaps", "watch", ""),
    ("", "configmaps", "create", ""),  # create the store when missing
    ("", "configmaps", "get", "qosched-profiles"),
    ("", "configmaps", "update", "qosched-profiles"),
    ("", "secrets", "get", "qosched-upload-token"),
    ("coordination.k8s.io", "leases", "create", ""),
    ("coordination.k8s.io", "leases", "get", "qosched-scheduler"),
    ("coordination.k8s.io", "leases", "update", "qosched-scheduler"),
    ("coordination.k8s.io", "leases", "get", "qosched-controller"),
    ("coordination.k8s.io", "leases", "update", "qosched-controller"),
}


def _flatten(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def test_cluster_role_grants_exactly_what_the_extender_needs() -> None:
    assert _flatten(_one("ClusterRole", "qosched-extender")["rules"]) == EXPECTED_CLUSTER_RULES


def test_namespace_role_grants_exactly_what_the_extender_needs() -> None:
    assert _flatten(_one("Role", "qosched", NAMESPACE)["rules"]) == EXPECTED_NAMESPACE_RULES


@pytest.mark.parametrize(
    ("kind", "name", "namespace", "role_kind", "role"),
    [
        ("ClusterRoleBinding", "qosched-extender", None, "ClusterRole", "qosched-extender"),
        ("RoleBinding", "qosched", NAMESPACE, "Role", "qosched"),
        ("ClusterRoleBinding", "qosched-as-kube-scheduler", None, "ClusterRole", "system:kube-scheduler"),
        ("ClusterRoleBinding", "qosched-as-volume-scheduler", None, "ClusterRole", "system:volume-scheduler"),
        (
            "RoleBinding",
            "qosched-extension-apiserver-authentication-reader",
            "kube-system",
            "Role",
            "extension-apiserver-authentication-reader",
        ),
    ],
    ids=["extender-cluster", "extender-namespace", "kube-scheduler", "volume-scheduler", "auth-reader"],
)
def test_bindings_give_the_service_account_its_roles(
    kind: str, name: str, namespace: str | None, role_kind: str, role: str
) -> None:
    binding = _one(kind, name, namespace)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
    ]
    _one("ServiceAccount", SERVICE_ACCOUNT, NAMESPACE)


def test_no_wildcards_anywhere() -> None:
    for obj in OBJECTS:
        for rule in obj.get("rules") or []:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (obj["metadata"]["name"], rule)


# ------------------------------------------------------------------------------------ RBAC enforced


@pytest.fixture
def rbac_api() -> Iterator[tuple[FakeKubeAPI, Any, Any, Any]]:
    """A fake apiserver enforcing manifests/rbac.yaml for the qosched ServiceAccount."""
    with FakeKubeAPI(authorizer=RbacAuthorizer(OBJECTS, user=USER)) as api:
        api.add_node("gpu-0", gpus=2)
        api.add_pod("p", model="resnet50", slo_ms=50, rate_rps=10)
        api.add_pod("r", model="resnet50", node_name="gpu-0", cpu="500m", memory="256Mi")
        api.add_configmap("qosched-profiles", NAMESPACE)
        api.add_configmap("qosched-scheduler-config", NAMESPACE, {"scheduler-config.yaml": "{}"})
        api.add_secret("qosched-upload-token", NAMESPACE, {"token": "t"})
        api.add_secret("other", NAMESPACE, {"password": "x"})
        api.add_secret("qosched-upload-token", "default", {"token": "t"})
        api_client = api.api_client()
        try:
            yield (
                api,
                client.CoreV1Api(api_client),
                client.CoordinationV1Api(api_client),
                client.EventsV1Api(api_client),
            )
        finally:
            api_client.close()


def _watch(list_fn: Callable[..., Any], *args: Any) -> None:
    """Open a watch (authorised like any request) and hang up at once."""
    resp = list_fn(*args, watch=True, timeout_seconds=1, _preload_content=False)
    assert resp.status == 200
    resp.close()


def _lease_cycle(coord: Any, name: str) -> None:
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1LeaseSpec(holder_identity="a")
    )
    coord.create_namespaced_lease(NAMESPACE, lease)
    current = coord.read_namespaced_lease(name, NAMESPACE)
    current.spec.holder_identity = "b"
    coord.replace_namespaced_lease(name, NAMESPACE, current)


def _replace_profiles(core: Any) -> None:
    cm = core.read_namespaced_config_map("qosched-profiles", NAMESPACE)
    cm.data = {"nvidia-t4__resnet50.json": "{}"}
    core.replace_namespaced_config_map("qosched-profiles", NAMESPACE, cm)


def _recreate_profiles(api: FakeKubeAPI, core: Any) -> None:
    api.delete("configmaps", "qosched-profiles", NAMESPACE)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="qosched-profiles"), data={})
    core.create_namespaced_config_map(NAMESPACE, body)


def _core_event(core: Any) -> None:
    core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="p."),
            involved_object=client.V1ObjectReference(kind="Pod", name="p", namespace="default"),
            reason="Scheduled",
            message="placed by qosched",
        ),
    )


def _events_v1_event(events: Any) -> None:
    events.create_namespaced_event(
        "default",
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name="p."),
            event_time=datetime(2026, 1, 1, tzinfo=UTC),
            reporting_controller="qosched.io/scheduler",
            reporting_instance="qosched-0",
            action="Binding",
            reason="Scheduled",
            regarding=client.V1ObjectReference(kind="Pod", name="p", namespace="default"),
        ),
    )


ALLOWED_CALLS: list[tuple[str, Callable[[FakeKubeAPI, Any, Any, Any], Any]]] = [
    ("list-nodes", lambda api, core, coord, ev: core.list_node()),
    ("watch-nodes", lambda api, core, coord, ev: _watch(core.list_node)),
    ("list-pods", lambda api, core, coord, ev: core.list_pod_for_all_namespaces()),
    ("watch-pods", lambda api, core, coord, ev: _watch(core.list_pod_for_all_namespaces)),
    ("get-pod", lambda api, core, coord, ev: core.read_namespaced_pod("p", "default")),
    (
        "annotate-pod",
        lambda api, core, coord, ev: core.patch_namespaced_pod(
            "p", "default", {"metadata": {"annotations": {A_POLICY: "qosched"}}}
        ),
    ),
    (
        "bind",
        lambda api, core, coord, ev: core.create_namespaced_pod_binding(
            "p",
            "default",
            client.V1Binding(
                metadata=client.V1ObjectMeta(name="p"),
                target=client.V1ObjectReference(kind="Node", name="gpu-0"),
            ),
            _preload_content=False,
        ),
    ),
    (
        "resize",
        lambda api, core, coord, ev: core.patch_namespaced_pod_resize(
            "r",
            "default",
            {
                "spec": {
                    "containers": [
                        {"name": "server", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}
                    ]
                }
            },
        ),
    ),
    (
        "get-profiles",
        lambda api, core, coord, ev: core.read_namespaced_config_map("qosched-profiles", NAMESPACE),
    ),
    ("list-configmaps", lambda api, core, coord, ev: core.list_namespaced_config_map(NAMESPACE)),
    ("watch-configmaps", lambda api, core, coord, ev: _watch(core.list_namespaced_config_map, NAMESPACE)),
    ("update-profiles", lambda api, core, coord, ev: _replace_profiles(core)),
    ("create-profiles", lambda api, core, coord, ev: _recreate_profiles(api, core)),
    (
        "get-upload-token",
        lambda api, core, coord, ev: core.read_namespaced_secret("qosched-upload-token", NAMESPACE),
    ),
    ("scheduler-lease", lambda api, core, coord, ev: _lease_cycle(coord, "qosched-scheduler")),
    ("controller-lease", lambda api, core, coord, ev: _lease_cycle(coord, "qosched-controller")),
    ("core-event", lambda api, core, coord, ev: _core_event(core)),
    ("events-v1-event", lambda api, core, coord, ev: _events_v1_event(ev)),
]


@pytest.mark.parametrize("call", [c for _, c in ALLOWED_CALLS], ids=[i for i, _ in ALLOWED_CALLS])
def test_rbac_allows_every_call_the_extender_makes(
    rbac_api: tuple[FakeKubeAPI, Any, Any, Any], call: Callable[[FakeKubeAPI, Any, Any, Any], Any]
) -> None:
    api, core, coord, events = rbac_api
    call(api, core, coord, events)
    assert api.count(status=403) == 0


#: Refused by these roles AND not granted by system:kube-scheduler / system:volume-scheduler either,
#: so the pod's identity cannot do them at all.
FORBIDDEN_CALLS: list[tuple[str, Callable[[Any, Any], Any], str]] = [
    (
        "patch-node",
        lambda core, coord: core.patch_node("gpu-0", {"metadata": {"labels": {"x": "y"}}}),
        'nodes "gpu-0" is forbidden: User "{user}" cannot patch resource "nodes" in API group "" at the '
        "cluster scope",
    ),
    (
        "create-pod",
        lambda core, coord: core.create_namespaced_pod(
            "default",
            client.V1Pod(metadata=client.V1ObjectMeta(name="x"), spec=client.V1PodSpec(containers=[])),
        ),
        'pods is forbidden: User "{user}" cannot create resource "pods" in API group "" in the namespace '
        '"default"',
    ),
    (
        "list-secrets",
        lambda core, coord: core.list_namespaced_secret(NAMESPACE),
        'secrets is forbidden: User "{user}" cannot list resource "secrets" in API group "" in the namespace '
        '"qosched-system"',
    ),
    (
        "read-other-secret",
        lambda core, coord: core.read_namespaced_secret("other", NAMESPACE),
        'secrets "other" is forbidden: User "{user}" cannot get resource "secrets" in API group "" in the '
        'namespace "qosched-system"',
    ),
    (
        "read-token-in-other-namespace",
        lambda core, coord: core.read_namespaced_secret("qosched-upload-token", "default"),
        'secrets "qosched-upload-token" is forbidden: User "{user}" cannot get resource "secrets" in API group "" '
        'in the namespace "default"',
    ),
    (
        "rewrite-scheduler-config",
        lambda core, coord: core.patch_namespaced_config_map(
            "qosched-scheduler-config", NAMESPACE, {"data": {}}
        ),
        'configmaps "qosched-scheduler-config" is forbidden: User "{user}" cannot patch resource "configmaps" in '
        'API group "" in the namespace "qosched-system"',
    ),
    (
        "take-another-lease",
        lambda core, coord: coord.read_namespaced_lease("someone-else", NAMESPACE),
        'leases.coordination.k8s.io "someone-else" is forbidden: User "{user}" cannot get resource "leases" in '
        'API group "coordination.k8s.io" in the namespace "qosched-system"',
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in FORBIDDEN_CALLS], ids=[i for i, _, _ in FORBIDDEN_CALLS]
)
def test_rbac_refuses_what_the_extender_must_not_do(
    rbac_api: tuple[FakeKubeAPI, Any, Any, Any], call: Callable[[Any, Any], Any], message: str
) -> None:
    _, core, coord, _ = rbac_api
    with pytest.raises(client.ApiException) as err:
        call(core, coord)
    assert err.value.status == 403
    body = json.loads(err.value.body or "{}")
    assert (body["reason"], body["message"]) == ("Forbidden", message.format(user=USER))


# ------------------------------------------------------------------------------------ scheduler config

_LEADER_ELECTION = dict.fromkeys(
    (
        "leaderElect",
        "leaseDuration",
        "renewDeadline",
        "retryPeriod",
        "resourceLock",
        "resourceName",
        "resourceNamespace",
    )
)
_PLUGIN_SET: dict[str, Any] = {
    "enabled": [dict.fromkeys(("name", "weight"))],
    "disabled": [dict.fromkeys(("name", "weight"))],
}
_EXTENSION_POINTS = (
    "preEnqueue",
    "queueSort",
    "preFilter",
    "filter",
    "postFilter",
    "preScore",
    "score",
    "reserve",
    "permit",
    "preBind",
    "bind",
    "postBind",
    "multiPoint",
)
#: kubescheduler.config.k8s.io/v1 field names (k8s.io/kube-scheduler/config/v1 types.go); None = a leaf.
SCHEDULER_CONFIG_SCHEMA: dict[str, Any] = {
    **dict.fromkeys(
        (
            "apiVersion",
            "kind",
            "parallelism",
            "healthzBindAddress",
            "metricsBindAddress",
            "enableProfiling",
            "enableContentionProfiling",
            "percentageOfNodesToScore",
            "podInitialBackoffSeconds",
            "podMaxBackoffSeconds",
            "delayCacheUntilActive",
        )
    ),
    "leaderElection": _LEADER_ELECTION,
    "clientConnection": dict.fromkeys(("kubeconfig", "acceptContentTypes", "contentType", "qps", "burst")),
    "profiles": [
        {
            "schedulerName": None,
            "percentageOfNodesToScore": None,
            "plugins": dict.fromkeys(_EXTENSION_POINTS, _PLUGIN_SET),
            "pluginConfig": [{"name": None, "args": None}],
        }
    ],
    "extenders": [
        {
            **dict.fromkeys(
                (
                    "urlPrefix",
                    "filterVerb",
                    "preemptVerb",
                    "prioritizeVerb",
                    "weight",
                    "bindVerb",
                    "enableHTTPS",
                    "httpTimeout",
                    "nodeCacheCapable",
                    "ignorable",
                )
            ),
            "tlsConfig": dict.fromkeys(
                ("insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData")
            ),
            "managedResources": [dict.fromkeys(("name", "ignoredByScheduler"))],
        }
    ],
}


def _unknown_keys(value: Any, schema: Any, path: str = "") -> list[str]:
    """Keys strict decoding would reject (kube-scheduler fails to start on them)."""
    if schema is None:
        return []
    if isinstance(schema, list):
        return [
            u for i, item in enumerate(value or []) for u in _unknown_keys(item, schema[0], f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    out = [f"{path}.{k}" for k in value if k not in schema]
    return out + [
        u for k, v in value.items() if k in schema for u in _unknown_keys(v, schema[k], f"{path}.{k}")
    ]


def _go_duration_s(text: str) -> float:
    """``time.ParseDuration`` for the units a config uses (``1m30s``, ``10s``, ``500ms``)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def test_scheduler_config_uses_only_v1_field_names() -> None:
    cfg = _scheduler_config()
    assert (cfg["apiVersion"], cfg["kind"]) == (
        "kubescheduler.config.k8s.io/v1",
        "KubeSchedulerConfiguration",
    )
    assert _unknown_keys(cfg, SCHEDULER_CONFIG_SCHEMA) == []


def test_strict_field_check_catches_the_legacy_spelling() -> None:
    cfg = _scheduler_config()
    cfg["extenders"][0]["enableHttps"] = cfg["extenders"][0].pop("enableHTTPS")  # the old Policy API name
    assert _unknown_keys(cfg, SCHEDULER_CONFIG_SCHEMA) == [".extenders[0].enableHttps"]


def _contract_verbs() -> set[str]:
    if not CONTRACT.is_file():
        pytest.skip(f"contract not found at {CONTRACT}")
    return set(re.findall(r"`POST /(\w+)`", CONTRACT.read_text()))


def test_extender_verbs_are_the_contract_paths() -> None:
    ext = _extender()
    verbs = {ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"], ext["preemptVerb"]}
    assert verbs == _contract_verbs() == {"filter", "prioritize", "bind", "preempt"}
    assert (ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"], ext["preemptVerb"]) == (
        "filter",
        "prioritize",
        "bind",
        "preempt",
    )


def _loopback_bind_port() -> int:
    binds = [a.split("=", 1)[1] for a in _container("extender")["args"] if a.startswith("--bind=")]
    (loopback,) = [b for b in binds if b.startswith("127.0.0.1:")]
    return int(loopback.rsplit(":", 1)[1])


def test_extender_endpoint_and_values_pass_kube_scheduler_validation() -> None:
    ext = _extender()
    assert ext["urlPrefix"] == f"http://127.0.0.1:{_loopback_bind_port()}"  # same pod, loopback only
    assert isinstance(ext["weight"], int) and ext["weight"] > 0  # validation: prioritizeVerb needs weight > 0
    assert ext["nodeCacheCapable"] is True and ext["ignorable"] is False and ext["enableHTTPS"] is False
    bind_timeout_s = float(
        {e["name"]: e["value"] for e in _container("extender")["env"]}.get(
            "QOSCHED_BIND_TIMEOUT_S", extender_config.DEFAULTS["BIND_TIMEOUT_S"]
        )
    )
    assert _go_duration_s(ext["httpTimeout"]) > bind_timeout_s  # the bind's API call must fit in the verb


def test_no_managed_resources_so_annotated_pods_reach_the_extender() -> None:
    """kube-scheduler's ``HTTPExtender.IsInterested``: with ``managedResources`` a pod is sent only if
    it requests one of them. The captured qosched pods ask for ``qosched.io/gpu-milli`` and request
    no ``nvidia.com/gpu``: a list would hide them from qosched."""

    def interested(extender: dict[str, Any], pod: dict[str, Any]) -> bool:
        managed = {r["name"] for r in extender.get("managedResources") or []}
        if not managed:
            return True
        containers = pod["spec"].get("containers", []) + pod["spec"].get("initContainers", [])
        return any(
            managed & set((c.get("resources") or {}).get(section) or {})
            for c in containers
            for section in ("requests", "limits")
        )

    if not CLUSTER_YAML.is_file():
        pytest.skip(f"shared fixtures not found at {CLUSTER_YAML}")
    annotated = [
        o
        for o in load_snapshot(CLUSTER_YAML)
        if o["kind"] == "Pod" and any(k in USER_ANNOTATIONS for k in (o["metadata"].get("annotations") or {}))
    ]
    assert len(annotated) == 9
    assert all(interested(_extender(), p) for p in annotated)
    with_gpu_list = {
        **_extender(),
        "managedResources": [{"name": "nvidia.com/gpu", "ignoredByScheduler": False}],
    }
    assert not any(interested(with_gpu_list, p) for p in annotated)


def test_leader_election_lease_is_one_the_role_allows() -> None:
    le = _scheduler_config()["leaderElection"]
    assert le["leaderElect"] is True and le["resourceLock"] == "leases"
    assert le["resourceNamespace"] == _deployment()["metadata"]["namespace"]
    assert ("coordination.k8s.io", "leases", "update", le["resourceName"]) in EXPECTED_NAMESPACE_RULES
    lease_s, renew_s, retry_s = (
        _go_duration_s(le[k]) for k in ("leaseDuration", "renewDeadline", "retryPeriod")
    )
    # component-base validation: leaseDuration > renewDeadline > retryPeriod x JitterFactor (1.2)
    assert lease_s > renew_s > 1.2 * retry_s


def test_profile_is_the_qosched_scheduler_name() -> None:
    assert [p["schedulerName"] for p in _scheduler_config()["profiles"]] == ["qosched"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0)],
    ids=["seconds", "compound", "millis", "hours"],
)
def test_go_duration(text: str, seconds: float) -> None:
    assert _go_duration_s(text) == pytest.approx(seconds)


def test_go_duration_rejects_bare_numbers() -> None:
    with pytest.raises(ValueError, match="not a Go duration"):
        _go_duration_s("10")


# ------------------------------------------------------------------------------------ Deployment


def test_images_and_scheduler_config_mount() -> None:
    sched = _container("kube-scheduler")
    assert sched["image"] == "registry.k8s.io/kube-scheduler:v1.36.0"
    assert _container("extender")["image"] == "qosched:0.1.0"
    (config_arg,) = [a for a in sched["command"] if a.startswith("--config=")]
    config_path = Path(config_arg.split("=", 1)[1])
    (mount,) = [m for m in sched["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    (volume,) = [
        v for v in _deployment()["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    ]
    cm = _one("ConfigMap", volume["configMap"]["name"], NAMESPACE)
    assert config_path.name in cm["data"]


def test_extender_runs_one_gunicorn_worker_on_two_addresses() -> None:
    ext = _container("extender")
    assert ext["command"] == ["gunicorn"]
    args = ext["args"]
    (conf,) = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    module = importlib.import_module(conf.removeprefix("python:"))
    assert module.workers == 1 and module.preload_app is False  # one cache owner, threads not forked
    assert not any(a.startswith(("--workers", "-w", "--preload")) for a in args)
    app_module, factory = args[-1].split(":")
    assert callable(getattr(importlib.import_module(app_module), factory.removesuffix("()")))
    metrics_port = {p["name"]: p["containerPort"] for p in ext["ports"]}["http-metrics"]
    binds = sorted(a.split("=", 1)[1] for a in args if a.startswith("--bind="))
    assert binds == [f"0.0.0.0:{metrics_port}", f"127.0.0.1:{_loopback_bind_port()}"]


def test_extender_env_names_are_known_settings() -> None:
    gunicorn_env = set(
        re.findall(
            r'os\.environ\.get\("QOSCHED_(\w+)"',
            Path(importlib.import_module("qosched.extender.gunicorn_conf").__file__ or "").read_text(),
        )
    )
    names = {e["name"] for e in _container("extender")["env"] if e["name"].startswith("QOSCHED_")}
    unknown = {
        n for n in names if n.removeprefix("QOSCHED_") not in set(extender_config.DEFAULTS) | gunicorn_env
    }
    assert unknown == set()
    settings = extender_config.load_config(
        environ={e["name"]: e["value"] for e in _container("extender")["env"]}
    )
    assert settings["IN_CLUSTER"] is True
    assert settings["PROFILES_CONFIGMAP"] == f"{NAMESPACE}/qosched-profiles"


def test_probes_use_the_contract_health_paths() -> None:
    ext = _container("extender")
    assert ext["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert ext["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    sched = _container("kube-scheduler")
    assert sched["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert sched["livenessProbe"]["httpGet"]["port"] == 10259


@pytest.mark.parametrize("name", ["kube-scheduler", "extender"])
def test_containers_meet_pod_security_restricted(name: str) -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = _container(name)
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]


def test_mounts_volumes_and_referenced_objects_exist() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for c in pod["containers"]:
        for m in c["volumeMounts"]:
            assert m["name"] in volumes, (c["name"], m)
    for v in volumes.values():
        if "configMap" in v:
            _one("ConfigMap", v["configMap"]["name"], NAMESPACE)
        if "secret" in v:  # created by the operator, never committed
            assert v["secret"]["optional"] is True
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    env = {e["name"]: e["value"] for e in _container("extender")["env"] if "value" in e}
    mounts = {m["mountPath"] for m in _container("extender")["volumeMounts"]}
    assert env["QOSCHED_PROFILES_DIR"] in mounts
    assert str(Path(env["QOSCHED_UPLOAD_TOKEN_FILE"]).parent) in mounts


def test_service_reaches_the_metrics_port() -> None:
    svc = _one("Service", "qosched", NAMESPACE)
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    (port,) = svc["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in _container("extender")["ports"]}
    assert port["targetPort"] in container_ports
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(port["port"])
    assert svc["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


# ------------------------------------------------------------------------------------ example workloads

EXAMPLES = [d for f, _, d in DOCS if f == "example-inference.yaml"]


@pytest.mark.parametrize("deployment", EXAMPLES, ids=[d["metadata"]["name"] for d in EXAMPLES])
def test_example_pods_carry_valid_contract_annotations(deployment: dict[str, Any]) -> None:
    template = deployment["spec"]["template"]
    assert template["spec"]["schedulerName"] == "qosched"
    annotations = template["metadata"]["annotations"]
    assert set(annotations) <= USER_ANNOTATIONS
    demand = pod_demand({"metadata": {"name": "x", **template["metadata"]}, "spec": template["spec"]})
    assert demand.managed
    assert demand.slo_ms is not None and demand.slo_ms > 0
    assert demand.rate_rps >= 0
    assert demand.qos_class in {c.name for c in DEFAULT_CLASSES}
    assert 1 <= demand.gpu_milli <= 1000 or demand.gpu_milli % 1000 == 0
    profiles = bundled_profiles()
    for variant in demand.variants:
        assert profiles.find("nvidia-t4", variant) is not None, variant
    if demand.min_accuracy is not None:
        accuracies = [profiles.get("nvidia-t4", v).accuracy or 0.0 for v in demand.variants]
        assert max(accuracies) >= demand.min_accuracy  # some variant is acceptable


def test_examples_cover_variants_and_read_bind_annotations() -> None:
    offered = [
        d for d in EXAMPLES if "qosched.io/variants" in d["spec"]["template"]["metadata"]["annotations"]
    ]
    assert offered and "qosched.io/min-accuracy" in offered[0]["spec"]["template"]["metadata"]["annotations"]
    refs = {
        e["valueFrom"]["fieldRef"]["fieldPath"]
        for d in EXAMPLES
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "valueFrom" in e
    }
    keys = {re.fullmatch(r"metadata\.annotations\['([^']+)'\]", r).group(1) for r in refs}  # type: ignore[union-attr]
    assert keys and keys <= BIND_ANNOTATIONS
    assert "qosched.io/variant" in keys
