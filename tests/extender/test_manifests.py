"""The Kubernetes manifests against the API models, the RBAC the code needs, and the contract.

- Every document round-trips through the official client's models unchanged: a misspelt or
  misplaced key (which ``kubectl apply`` might drop or the API reject) shows up as a difference.
- RBAC: the rules are exactly the expected tables below, and a fake apiserver that enforces them
  accepts every API call the extender makes and refuses what it must not do; the same for the QoE
  controller's own ServiceAccount, down to running the real ``qosched controller`` command with
  the Deployment's flags against it.
- The embedded KubeSchedulerConfiguration uses kubescheduler.config.k8s.io/v1 field names
  (kube-scheduler decodes it strictly), verbs that are the contract's HTTP paths, and values
  kube-scheduler's validation accepts.
- The Deployments, Service and example workloads agree with each other, with
  ``qosched.extender.server.settings``, with the options of the ``qosched controller`` click command and
  with the contract's annotations.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import json
import re
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from qosched.extender.cli.controller import controller as controller_command
from qosched.extender.controller import loop as controller_module
from qosched.extender.controller.loop import A_GPU_SHARE_MILLI
from qosched.extender.controller.prom import PromReader
from qosched.extender.kube.leader import LeaderElector, LeaseSettings, default_identity
from qosched.extender.kube.objects import A_POLICY, USER_ANNOTATIONS, pod_demand
from qosched.extender.server import settings as extender_config
from qosched.policies.fairness.classes import DEFAULT_CLASSES
from qosched.profiles.store import bundled_profiles
from tests.extender.controller_support import add_two_pools
from tests.extender.kustomize_support import (
    COMPONENTS,
    components,
    is_crd,
    kustomization,
    patch_files,
    resource_files,
    rule_tuples,
    source_docs,
)
from tests.extender.test_prom import FakePrometheus, vector
from tests.kubefake import FakeKubeAPI, RbacAuthorizer, load_snapshot, write_kubeconfig
from tests.kubefake.objects import BIND_ANNOTATIONS

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SHARED = ROOT / ".." / "shared"
CONTRACT = SHARED / "spec" / "contract.md"
CLUSTER_YAML = SHARED / "fixtures" / "kube-scheduler" / "cluster.yaml"

NAMESPACE = "qosched-system"
SERVICE_ACCOUNT = "qosched"
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
CONTROLLER = "qosched-controller"  # Deployment, ServiceAccount, roles and lease of the QoE controller
CONTROLLER_USER = f"system:serviceaccount:{NAMESPACE}:{CONTROLLER}"


def _load() -> list[tuple[str, int, dict[str, Any]]]:
    """The resources of the base and of every component (kustomize_support.source_docs), by file name."""
    return [(path.name, i, doc) for path, i, doc in source_docs()]


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


def _deployment(name: str = "qosched") -> dict[str, Any]:
    return _one("Deployment", name, NAMESPACE)


def _container(name: str, deployment: str = "qosched") -> dict[str, Any]:
    (c,) = [c for c in _deployment(deployment)["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def _controller_container() -> dict[str, Any]:
    return _container("controller", CONTROLLER)


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


MODELLED = [(f, i, d) for f, i, d in DOCS if not is_crd(d)]  # cert-manager and Operator kinds have no model


@pytest.mark.parametrize(
    "doc",
    [d for _, _, d in MODELLED],
    ids=[f"{f}#{i}-{d['kind']}-{d['metadata']['name']}" for f, i, d in MODELLED],
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
        if f not in ("example-inference.yaml", "device-plugin.yaml")  # the node agent: qosched-node
        and o["kind"]
        not in (
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        )
        and o["metadata"].get("namespace") != NAMESPACE
    }
    # kube-scheduler's delegated authentication reads a ConfigMap in kube-system.
    assert elsewhere == {("RoleBinding", "qosched-extension-apiserver-authentication-reader", "kube-system")}
    assert (
        _one("Namespace", NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def test_kustomization_installs_everything_but_the_example() -> None:
    base = kustomization(MANIFESTS)
    assert base["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert base["kind"] == "Kustomization"
    assert "namespace" not in base  # would move the kube-system RoleBinding
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "example-inference.yaml"}
    assert sorted(base["resources"]) == sorted(files)


@pytest.mark.parametrize("name", components())
def test_component_lists_every_file_of_its_directory(name: str) -> None:
    """A component is a kustomize Component whose files are each a resource or a patch, once."""
    directory = COMPONENTS / name
    component = kustomization(directory)
    assert (component["apiVersion"], component["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component")
    assert "namespace" not in component
    listed = [p.name for p in (*resource_files(directory), *patch_files(directory))]
    assert sorted(listed) == sorted({p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"})


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
    ("", "events", "create", ""),
    ("events.k8s.io", "events", "create", ""),
}
#: ... and in qosched-system only:
EXPECTED_NAMESPACE_RULES = {
    ("", "configmaps", "list", ""),  # profile store: watch for hot reload
    ("", "configmaps", "watch", ""),
    ("", "configmaps", "create", ""),  # create the store when missing
    ("", "configmaps", "get", "qosched-profiles"),
    ("", "configmaps", "get", "qosched-placement-hints"),  # placement hints (online learner)
    ("", "configmaps", "get", "qosched-allocation"),  # GET /allocation (INFIDA)
    ("", "configmaps", "update", "qosched-profiles"),
    ("", "secrets", "get", "qosched-upload-token"),
    ("coordination.k8s.io", "leases", "create", ""),
    ("coordination.k8s.io", "leases", "get", "qosched-scheduler"),
    ("coordination.k8s.io", "leases", "update", "qosched-scheduler"),
}
#: The QoE controller's own ServiceAccount: what qosched.extender.controller.loop and .leader call.
EXPECTED_CONTROLLER_CLUSTER_RULES = {
    ("", "nodes", "list", ""),  # every cycle: allocatable CPU
    ("", "pods", "list", ""),  # every cycle: pools and capacity
    ("", "pods", "patch", ""),  # qosched.io/gpu-share-milli
    ("", "pods/resize", "patch", ""),  # in-place CPU resize
    ("gateway.networking.k8s.io", "httproutes", "get", ""),  # online learner: route weights
    ("gateway.networking.k8s.io", "httproutes", "update", ""),
    (
        "apps",
        "deployments",
        "list",
        "",
    ),  # INFIDA --allocation-scale: Deployments labelled qosched.io/allocation
    ("apps", "deployments", "patch", ""),  # ... their spec.replicas
}
EXPECTED_CONTROLLER_NAMESPACE_RULES = {
    ("coordination.k8s.io", "leases", "create", ""),
    ("coordination.k8s.io", "leases", "get", CONTROLLER),
    ("coordination.k8s.io", "leases", "update", CONTROLLER),
    ("", "configmaps", "create", ""),  # online learner: state and placement hints
    ("", "configmaps", "get", "qosched-online-state"),
    ("", "configmaps", "update", "qosched-online-state"),
    ("", "configmaps", "get", "qosched-placement-hints"),
    ("", "configmaps", "update", "qosched-placement-hints"),
    ("", "configmaps", "get", "qosched-allocation"),  # INFIDA: the allocation and its state
    ("", "configmaps", "update", "qosched-allocation"),
}


def test_cluster_role_grants_exactly_what_the_extender_needs() -> None:
    assert rule_tuples(_one("ClusterRole", "qosched-extender")["rules"]) == EXPECTED_CLUSTER_RULES


def test_namespace_role_grants_exactly_what_the_extender_needs() -> None:
    assert rule_tuples(_one("Role", "qosched", NAMESPACE)["rules"]) == EXPECTED_NAMESPACE_RULES


def test_controller_roles_grant_exactly_what_the_controller_needs() -> None:
    assert rule_tuples(_one("ClusterRole", CONTROLLER)["rules"]) == EXPECTED_CONTROLLER_CLUSTER_RULES
    assert rule_tuples(_one("Role", CONTROLLER, NAMESPACE)["rules"]) == EXPECTED_CONTROLLER_NAMESPACE_RULES


@pytest.mark.parametrize(
    ("kind", "name", "namespace", "role_kind", "role", "account"),
    [
        ("ClusterRoleBinding", "qosched-extender", None, "ClusterRole", "qosched-extender", SERVICE_ACCOUNT),
        ("RoleBinding", "qosched", NAMESPACE, "Role", "qosched", SERVICE_ACCOUNT),
        (
            "ClusterRoleBinding",
            "qosched-as-kube-scheduler",
            None,
            "ClusterRole",
            "system:kube-scheduler",
            SERVICE_ACCOUNT,
        ),
        (
            "ClusterRoleBinding",
            "qosched-as-volume-scheduler",
            None,
            "ClusterRole",
            "system:volume-scheduler",
            SERVICE_ACCOUNT,
        ),
        (
            "RoleBinding",
            "qosched-extension-apiserver-authentication-reader",
            "kube-system",
            "Role",
            "extension-apiserver-authentication-reader",
            SERVICE_ACCOUNT,
        ),
        ("ClusterRoleBinding", CONTROLLER, None, "ClusterRole", CONTROLLER, CONTROLLER),
        ("RoleBinding", CONTROLLER, NAMESPACE, "Role", CONTROLLER, CONTROLLER),
    ],
    ids=[
        "extender-cluster",
        "extender-namespace",
        "kube-scheduler",
        "volume-scheduler",
        "auth-reader",
        "controller-cluster",
        "controller-namespace",
    ],
)
def test_bindings_give_the_service_accounts_their_roles(
    kind: str, name: str, namespace: str | None, role_kind: str, role: str, account: str
) -> None:
    binding = _one(kind, name, namespace)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    _one("ServiceAccount", account, NAMESPACE)


def test_only_the_scheduler_pod_holds_the_scheduler_roles() -> None:
    """The controller's identity is bound to its own two roles and nothing else."""
    bound = {
        (b["kind"], b["metadata"]["name"])
        for b in OBJECTS
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s.get("name") == CONTROLLER for s in b["subjects"])
    }
    assert bound == {("ClusterRoleBinding", CONTROLLER), ("RoleBinding", CONTROLLER)}


def test_no_wildcards_anywhere() -> None:
    for obj in OBJECTS:
        for rule in obj.get("rules") or []:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (obj["metadata"]["name"], rule)


# ------------------------------------------------------------------------------------ RBAC enforced


def _rbac_server(user: str) -> Iterator[tuple[FakeKubeAPI, Any, Any, Any]]:
    with FakeKubeAPI(authorizer=RbacAuthorizer(OBJECTS, user=user)) as api:
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


@pytest.fixture
def rbac_api() -> Iterator[tuple[FakeKubeAPI, Any, Any, Any]]:
    """A fake apiserver enforcing manifests/rbac.yaml for the qosched ServiceAccount."""
    yield from _rbac_server(USER)


@pytest.fixture
def controller_rbac_api() -> Iterator[tuple[FakeKubeAPI, Any, Any, Any]]:
    """The same, for the QoE controller's ServiceAccount."""
    yield from _rbac_server(CONTROLLER_USER)


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


def _resize(core: Any) -> Any:
    body = {
        "spec": {
            "containers": [
                {"name": "server", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}
            ]
        }
    }
    return core.patch_namespaced_pod_resize("r", "default", body)


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
    # The QoE controller's grants are its own ServiceAccount's, not the scheduler pod's.
    (
        "resize",
        lambda core, coord: _resize(core),
        'pods "r" is forbidden: User "{user}" cannot patch resource "pods/resize" in API group "" in the '
        'namespace "default"',
    ),
    (
        "take-the-controller-lease",
        lambda core, coord: coord.read_namespaced_lease(CONTROLLER, NAMESPACE),
        'leases.coordination.k8s.io "qosched-controller" is forbidden: User "{user}" cannot get resource '
        '"leases" in API group "coordination.k8s.io" in the namespace "qosched-system"',
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


# ------------------------------------------------------------------------------------ controller RBAC

CONTROLLER_ALLOWED_CALLS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("list-nodes", lambda core, coord: core.list_node()),
    ("list-pods", lambda core, coord: core.list_pod_for_all_namespaces()),
    (
        "gpu-share-annotation",
        lambda core, coord: core.patch_namespaced_pod(
            "p", "default", {"metadata": {"annotations": {A_GPU_SHARE_MILLI: "300"}}}
        ),
    ),
    ("resize", lambda core, coord: _resize(core)),
    ("controller-lease", lambda core, coord: _lease_cycle(coord, CONTROLLER)),
]


@pytest.mark.parametrize(
    "call", [c for _, c in CONTROLLER_ALLOWED_CALLS], ids=[i for i, _ in CONTROLLER_ALLOWED_CALLS]
)
def test_rbac_allows_every_call_the_controller_makes(
    controller_rbac_api: tuple[FakeKubeAPI, Any, Any, Any], call: Callable[[Any, Any], Any]
) -> None:
    api, core, coord, _ = controller_rbac_api
    call(core, coord)
    assert api.count(status=403) == 0


def _forbidden(verb: str, resource: str, where: str, name: str = "", group: str = "") -> str:
    """The apiserver's 403 message for the controller's identity."""
    gr = f"{resource.split('/')[0]}.{group}" if group else resource.split("/")[0]
    scope = f'in the namespace "{where}"' if where else "at the cluster scope"
    subject = f'{gr} "{name}"' if name else gr
    return (
        f'{subject} is forbidden: User "{CONTROLLER_USER}" cannot {verb} resource "{resource}" '
        f'in API group "{group}" {scope}'
    )


#: What the scheduler pod may do and the controller may not.
CONTROLLER_FORBIDDEN_CALLS: list[tuple[str, Callable[[Any, Any], Any], str]] = [
    (
        "bind",
        lambda core, coord: core.create_namespaced_pod_binding(
            "p",
            "default",
            client.V1Binding(
                metadata=client.V1ObjectMeta(name="p"),
                target=client.V1ObjectReference(kind="Node", name="gpu-0"),
            ),
            _preload_content=False,
        ),
        _forbidden("create", "pods/binding", "default", "p"),
    ),
    (
        "get-pod",
        lambda core, coord: core.read_namespaced_pod("p", "default"),
        _forbidden("get", "pods", "default", "p"),
    ),
    (
        "watch-pods",
        lambda core, coord: _watch(core.list_pod_for_all_namespaces),
        _forbidden("watch", "pods", ""),
    ),
    (
        "delete-pod",
        lambda core, coord: core.delete_namespaced_pod("p", "default"),
        _forbidden("delete", "pods", "default", "p"),
    ),
    (
        "patch-node",
        lambda core, coord: core.patch_node("gpu-0", {"metadata": {"labels": {"x": "y"}}}),
        _forbidden("patch", "nodes", "", "gpu-0"),
    ),
    (
        "read-profiles",
        lambda core, coord: core.read_namespaced_config_map("qosched-profiles", NAMESPACE),
        _forbidden("get", "configmaps", NAMESPACE, "qosched-profiles"),
    ),
    (
        "read-upload-token",
        lambda core, coord: core.read_namespaced_secret("qosched-upload-token", NAMESPACE),
        _forbidden("get", "secrets", NAMESPACE, "qosched-upload-token"),
    ),
    (
        "take-the-scheduler-lease",
        lambda core, coord: coord.read_namespaced_lease("qosched-scheduler", NAMESPACE),
        _forbidden("get", "leases", NAMESPACE, "qosched-scheduler", "coordination.k8s.io"),
    ),
    (
        "its-lease-elsewhere",
        lambda core, coord: coord.read_namespaced_lease(CONTROLLER, "default"),
        _forbidden("get", "leases", "default", CONTROLLER, "coordination.k8s.io"),
    ),
]


@pytest.mark.parametrize(
    ("call", "message"),
    [(c, m) for _, c, m in CONTROLLER_FORBIDDEN_CALLS],
    ids=[i for i, _, _ in CONTROLLER_FORBIDDEN_CALLS],
)
def test_rbac_refuses_what_the_controller_must_not_do(
    controller_rbac_api: tuple[FakeKubeAPI, Any, Any, Any], call: Callable[[Any, Any], Any], message: str
) -> None:
    _, core, coord, _ = controller_rbac_api
    with pytest.raises(client.ApiException) as err:
        call(core, coord)
    assert err.value.status == 403
    body = json.loads(err.value.body or "{}")
    assert (body["reason"], body["message"]) == ("Forbidden", message)


def _prometheus_answer(query: str) -> tuple[int, Any]:
    """Mean latency [s] and request rate [1/s] per pod: two pods miss their 10 ms, two beat it."""
    latency_s = {"miss": "0.020", "beat": "0.002", "gpu-miss": "0.020", "gpu-beat": "0.002"}
    if "_sum" in query:  # the mean: rate(_sum) / rate(_count)
        return 200, vector(*(({"namespace": "default", "pod": p}, s) for p, s in latency_s.items()))
    if "_count" in query:  # the request rate
        return 200, vector(*(({"namespace": "default", "pod": p}, "10") for p in latency_s))
    return 200, vector()


def test_controller_command_runs_with_the_manifest_flags_under_its_rbac(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``qosched controller`` with the Deployment's arguments and POD_NAME, against a fake
    apiserver enforcing rbac.yaml for qosched-controller: only ``--prometheus-url`` (the in-cluster
    placeholder) and ``--kubeconfig`` (in-cluster config needs a pod) are swapped for the fakes.
    One loop iteration: win the election, one cycle (two resizes, two GPU-share patches), release."""
    elections: list[LeaderElector] = []
    cycles: list[int] = []
    real_run_loop = controller_module.run_loop

    def one_iteration(
        qoe: Any, stop: threading.Event, *, elector: LeaderElector | None = None, **kw: Any
    ) -> int:
        assert elector is not None  # --leader-elect
        elections.append(elector)
        give_up = threading.Timer(10.0, stop.set)  # a replica that never leads never cycles
        give_up.start()
        try:
            cycles.append(real_run_loop(qoe, stop, elector=elector, iterations=1, **kw))
        finally:
            give_up.cancel()
        return cycles[-1]

    monkeypatch.setattr(controller_module, "run_loop", one_iteration)
    # --metrics-port too: a fixed port in the test process could be taken (tested in test_dashboard.py).
    args = [
        a for a in _controller_container()["args"] if not a.startswith(("--prometheus-url=", "--metrics-"))
    ]
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}  # the command sets both
    with (
        FakeKubeAPI(authorizer=RbacAuthorizer(OBJECTS, user=CONTROLLER_USER)) as api,
        FakePrometheus(_prometheus_answer) as prom,
    ):
        add_two_pools(api)
        command = [
            *_controller_container()["command"][1:],
            *args,
            f"--prometheus-url={prom.url}",
            f"--kubeconfig={write_kubeconfig(api.url, tmp_path / 'kubeconfig')}",
        ]
        try:
            result = CliRunner().invoke(
                _console_script(), command, env={"POD_NAME": "qosched-controller-5d8f9-x2x7q"}
            )
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        assert result.exit_code == 0, result.output
        assert api.count(status=403) == 0
        assert cycles == [1]
        assert api.count(method="PATCH", resource="pods", subresource="resize") == 2
        gpu_share = {
            p: (api.get("pods", p) or {})["metadata"]["annotations"] for p in ("gpu-miss", "gpu-beat")
        }
        # The pod missing its target got more of the GPU, the other one less (both started at 500).
        assert (
            int(gpu_share["gpu-miss"][A_GPU_SHARE_MILLI])
            > 500
            > int(gpu_share["gpu-beat"][A_GPU_SHARE_MILLI])
        )
        lease = api.get("leases", CONTROLLER, NAMESPACE)
        assert lease is not None
        assert lease["spec"].get("holderIdentity") is None
    (elector,) = elections
    assert elector.identity.startswith("qosched-controller-5d8f9-x2x7q_")
    assert (elector.settings.namespace, elector.settings.name) == (NAMESPACE, CONTROLLER)


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
    assert _contract_verbs() == {"filter", "prioritize", "bind", "preempt"}
    assert (ext["filterVerb"], ext["bindVerb"], ext["preemptVerb"]) == ("filter", "bind", "preempt")
    # prioritize stays served (the contract); the manifests leave it out (next test).
    assert ext.get("prioritizeVerb", "prioritize") == "prioritize"


def test_the_protocol_the_scheduler_uses_matches_the_extender_setting() -> None:
    """No ``prioritizeVerb`` exactly when the extender's filter keeps the best nodes only
    (``QOSCHED_FILTER_KEEPS_BEST_ONLY``): without it kube-scheduler would pick among every feasible
    node with no qosched preference at all; with both, qosched's scores would count twice for
    nothing. The manifests run the best-only protocol (docs/extender.md, "Behind kube-scheduler")."""
    ext = _extender()
    env = {e["name"]: e["value"] for e in _container("extender")["env"]}
    settings = extender_config.load_settings(environ=env)
    assert settings.filter_keeps_best_only is True
    assert "prioritizeVerb" not in ext
    assert "weight" not in ext  # only meaningful with prioritizeVerb (kube-scheduler defaults it to 1)


def _loopback_bind_port() -> int:
    binds = [a.split("=", 1)[1] for a in _container("extender")["args"] if a.startswith("--bind=")]
    (loopback,) = [b for b in binds if b.startswith("127.0.0.1:")]
    return int(loopback.rsplit(":", 1)[1])


def test_extender_endpoint_and_values_pass_kube_scheduler_validation() -> None:
    ext = _extender()
    assert ext["urlPrefix"] == f"http://127.0.0.1:{_loopback_bind_port()}"  # same pod, loopback only
    # kube-scheduler refuses a prioritizeVerb without a positive weight.
    assert "prioritizeVerb" not in ext or (isinstance(ext.get("weight"), int) and ext["weight"] > 0)
    assert ext["nodeCacheCapable"] is True
    assert ext["ignorable"] is False
    assert ext["enableHTTPS"] is False
    env = {e["name"]: e["value"] for e in _container("extender")["env"]}
    settings = extender_config.load_settings(environ=env)  # refuses an inconsistent pair
    http_timeout_s = _go_duration_s(ext["httpTimeout"])
    # The extender knows the scheduler's httpTimeout, and the bind answers before it with margin.
    assert settings.scheduler_http_timeout_s == http_timeout_s
    assert settings.bind_api_timeout_s + settings.bind_deadline_margin_s <= http_timeout_s


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
    assert le["leaderElect"] is True
    assert le["resourceLock"] == "leases"
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
    assert module.workers == 1
    assert module.preload_app is False
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
            Path(importlib.import_module("qosched.extender.server.gunicorn_conf").__file__ or "").read_text(),
        )
    )
    names = {e["name"] for e in _container("extender")["env"] if e["name"].startswith("QOSCHED_")}
    unknown = {
        n
        for n in names
        if n.removeprefix("QOSCHED_")
        not in set(extender_config.DEFAULTS) | gunicorn_env | extender_config.PROCESS_VARIABLES
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


@pytest.mark.parametrize(
    ("deployment", "name"),
    [("qosched", "kube-scheduler"), ("qosched", "extender"), (CONTROLLER, "controller")],
    ids=["kube-scheduler", "extender", "controller"],
)
def test_containers_meet_pod_security_restricted(deployment: str, name: str) -> None:
    pod = _deployment(deployment)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = _container(name, deployment)
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "memory" in c["resources"]["limits"]


@pytest.mark.parametrize(
    ("deployment", "account"),
    [("qosched", SERVICE_ACCOUNT), (CONTROLLER, CONTROLLER)],
    ids=["scheduler", "controller"],
)
def test_every_mount_has_a_volume_and_the_service_account_exists(deployment: str, account: str) -> None:
    pod = _deployment(deployment)["spec"]["template"]["spec"]
    volumes = {v["name"] for v in pod["volumes"]}
    for c in pod["containers"]:
        for m in c["volumeMounts"]:
            assert m["name"] in volumes, (c["name"], m)
    assert pod["serviceAccountName"] == account
    _one("ServiceAccount", account, NAMESPACE)
    assert pod.get("automountServiceAccountToken", True) is True  # in-cluster config needs the token


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


# ------------------------------------------------------------------------------------ controller Deployment


def _console_script() -> click.Group:
    """``qosched``, resolved as the image resolves its console script."""
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name="qosched")
    script = entry_point.load()
    assert isinstance(script, click.Group)
    return script


def _controller_option_names() -> set[str]:
    return {o for p in controller_command.params for o in (*p.opts, *p.secondary_opts)}


def test_controller_runs_the_qosched_controller_subcommand() -> None:
    c = _controller_container()
    assert c["image"] == _container("extender")["image"]  # one image for both pods
    program, subcommand = c["command"]
    assert program == "qosched"
    script = _console_script()
    assert script.get_command(click.Context(script), subcommand) is controller_command
    # It serves only /metrics (--metrics-port), on the port its container and Service name; no
    # probes: a hung cycle is what the QoschedControllerStalled alert is for, not a restart.
    assert not {"--port", "--bind", "--listen"} & _controller_option_names()
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(c)
    (metrics_port,) = [int(a.split("=", 1)[1]) for a in c["args"] if a.startswith("--metrics-port=")]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http-metrics": metrics_port}
    svc = _one("Service", CONTROLLER, NAMESPACE)
    (port,) = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (metrics_port, "http-metrics")
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    assert (
        svc["spec"]["selector"].items()
        <= _deployment(CONTROLLER)["spec"]["template"]["metadata"]["labels"].items()
    )


def test_controller_flags_are_options_of_the_command() -> None:
    args = _controller_container()["args"]
    assert {a.split("=", 1)[0] for a in args} <= _controller_option_names()
    params = controller_command.make_context("controller", list(args)).params  # click's own parsing
    assert params["kubeconfig"] is None  # in-cluster config
    assert (params["leader_elect"], params["once"], params["dry_run"]) == (True, False, False)
    lease = LeaseSettings(
        namespace=params["lease_namespace"],
        name=params["lease_name"],
        lease_duration_s=params["lease_duration_s"],
        renew_deadline_s=params["renew_deadline_s"],
        retry_period_s=params["retry_period_s"],
    )
    assert lease.namespace == _deployment(CONTROLLER)["metadata"]["namespace"]
    assert {("coordination.k8s.io", "leases", v, lease.name) for v in ("get", "update")} <= (
        EXPECTED_CONTROLLER_NAMESPACE_RULES
    )
    assert params["interval_s"] >= _go_duration_s(params["window"])  # each cycle sees the last one's effect
    url = urlsplit(params["prometheus_url"])
    assert url.scheme == "http"
    assert (url.hostname or "").endswith(".svc")
    assert url.port
    PromReader(params["prometheus_url"]).close()  # the reader accepts it


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ("--interval=60", click.NoSuchOption),
        ("--leader-election", click.NoSuchOption),
        ("--rate-source=prometheus", click.BadParameter),
        ("--interval-s=0", click.BadParameter),
        ("--kubeconfig=/nonexistent/kubeconfig", click.BadParameter),
    ],
    ids=["misspelt", "invented", "bad-choice", "out-of-range", "missing-file"],
)
def test_flag_check_rejects_invented_and_invalid_flags(extra: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        controller_command.make_context("controller", [*_controller_container()["args"], extra])


def test_controller_lease_identity_is_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {e["name"]: e for e in _controller_container()["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "--identity" not in {a.split("=", 1)[0] for a in _controller_container()["args"]}
    monkeypatch.setenv("POD_NAME", "qosched-controller-5d8f9-x2x7q")
    first, second = default_identity(), default_identity()
    assert first.startswith("qosched-controller-5d8f9-x2x7q_")
    assert first != second


def test_controller_is_highly_available_and_apart_from_the_scheduler() -> None:
    dep = _deployment(CONTROLLER)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = _one("PodDisruptionBudget", CONTROLLER, NAMESPACE)
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1 < dep["spec"]["replicas"]
    (term,) = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    # Neither the scheduler Deployment nor its Service select the controller's pods.
    assert not _deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not _one("Service", "qosched", NAMESPACE)["spec"]["selector"].items() <= labels.items()


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
    assert demand.slo_ms is not None
    assert demand.slo_ms > 0
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
    assert offered
    assert "qosched.io/min-accuracy" in offered[0]["spec"]["template"]["metadata"]["annotations"]
    refs = {
        e["valueFrom"]["fieldRef"]["fieldPath"]
        for d in EXAMPLES
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "valueFrom" in e
    }
    keys = {re.fullmatch(r"metadata\.annotations\['([^']+)'\]", r).group(1) for r in refs}  # type: ignore[union-attr]
    assert keys
    assert keys <= BIND_ANNOTATIONS
    assert "qosched.io/variant" in keys
