"""What the webhook changes in a qosched pod, as RFC 6902 operations (pure: pod in, ops out).

A pod is *managed* when it carries a qosched user annotation (contract §1, ``is_managed``); any
other pod gets no operation at all. For a managed pod, after validating its request with the
extender's own parser (``checked_demand``: the same errors, the same messages):

1. ``spec.schedulerName`` becomes ``qosched`` when it is unset or ``default-scheduler`` (the API
   server has already defaulted it when the webhook sees the pod).
2. With the device plugin (``WebhookOptions.device_plugin``), the serving container requests
   ``qosched.io/gpu-share`` = devices x ceil(min(milli, 1000) / 10) units in both ``requests``
   and ``limits`` (extended resources must be equal in both), so the kubelet and every
   scheduler account the share. Only for pods that ask with ``qosched.io/gpu-milli``: a pod
   requesting ``nvidia.com/gpu`` keeps NVIDIA's device plugin.
3. The serving container gets, through the downward API, ``QOSCHED_VARIANT`` (the variant
   qosched chose) and, without the device plugin, ``NVIDIA_VISIBLE_DEVICES`` (the device
   indexes) and, for pods that select MPS nodes (``nodeSelector qosched.io/sharing: mps``), the
   MPS share and memory limit. With the plugin, ``Allocate`` sets the device environment.

The serving container is the one named by ``kubectl.kubernetes.io/default-container``, else the
first. Every operation is conditional on the pod not already having what it adds, so the
result of a second invocation (``reinvocationPolicy: IfNeeded``) on the patched pod is ``[]``.
Variables the user set are never overwritten; the one exception is a ``NVIDIA_VISIBLE_DEVICES``
read from ``qosched.io/device`` in a container the device plugin serves (``stale_device_env_ops``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qosched.extender.kube.objects import (
    A_DEVICE,
    A_GPU_MEMORY_LIMIT_MIB,
    A_GPU_MILLI,
    A_GPU_SHARE_PCT,
    A_VARIANT,
    GPU_RESOURCE,
    GPU_SHARE_RESOURCE,
    L_SHARING,
    ClassMapper,
    annotations_of,
    checked_demand,
    default_class_of,
    gpu_share_units,
    is_managed,
)

SCHEDULER_NAME = "qosched"
DEFAULT_SCHEDULER = "default-scheduler"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
#: Variables set from bind annotations: (name, annotation).
VARIANT_ENV = ("QOSCHED_VARIANT", A_VARIANT)
DEVICES_ENV = ("NVIDIA_VISIBLE_DEVICES", A_DEVICE)
MPS_ENV = (
    ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", A_GPU_SHARE_PCT),
    ("QOSCHED_GPU_MEMORY_LIMIT_MIB", A_GPU_MEMORY_LIMIT_MIB),
)

Op = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """``device_plugin``: the cluster runs ``qosched device-plugin`` on its qosched GPU nodes."""

    device_plugin: bool = True
    scheduler_name: str = SCHEDULER_NAME


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _containers(pod: Mapping[str, Any]) -> list[Any]:
    containers = _mapping(pod.get("spec")).get("containers")
    return containers if isinstance(containers, list) else []


def pointer_token(key: str) -> str:
    """RFC 6901 escaping of one path segment (``qosched.io/gpu-share`` -> ``qosched.io~1gpu-share``)."""
    return key.replace("~", "~0").replace("/", "~1")


def serving_container_index(pod: Mapping[str, Any]) -> int:
    """Index of the container that serves the model (see the module docstring)."""
    containers = _containers(pod)
    wanted = annotations_of(pod).get(DEFAULT_CONTAINER_ANNOTATION)
    for i, c in enumerate(containers):
        if isinstance(c, Mapping) and wanted and c.get("name") == wanted:
            return i
    return 0


def _selects_mps(pod: Mapping[str, Any]) -> bool:
    return _mapping(_mapping(pod.get("spec")).get("nodeSelector")).get(L_SHARING) == "mps"


def wanted_env(pod: Mapping[str, Any], options: WebhookOptions) -> list[tuple[str, str]]:
    """(variable, annotation) pairs the serving container should read through the downward API."""
    env = [VARIANT_ENV]
    if not options.device_plugin:
        env.append(DEVICES_ENV)
        if _selects_mps(pod):
            env.extend(MPS_ENV)
    return env


def _scheduler_ops(spec: Mapping[str, Any], options: WebhookOptions) -> list[Op]:
    if spec.get("schedulerName") in (None, "", DEFAULT_SCHEDULER):
        return [{"op": "add", "path": "/spec/schedulerName", "value": options.scheduler_name}]
    return []


def resource_ops(container: Mapping[str, Any], base: str, units: int) -> list[Op]:
    """Set ``qosched.io/gpu-share: units`` in the container's requests and limits."""
    want = str(units)
    resources = container.get("resources")
    if not isinstance(resources, Mapping):
        value = {"limits": {GPU_SHARE_RESOURCE: want}, "requests": {GPU_SHARE_RESOURCE: want}}
        return [{"op": "add", "path": f"{base}/resources", "value": value}]
    ops: list[Op] = []
    for section in ("limits", "requests"):
        current = resources.get(section)
        if not isinstance(current, Mapping):
            ops.append(
                {"op": "add", "path": f"{base}/resources/{section}", "value": {GPU_SHARE_RESOURCE: want}}
            )
        elif str(current.get(GPU_SHARE_RESOURCE)) != want:
            path = f"{base}/resources/{section}/{pointer_token(GPU_SHARE_RESOURCE)}"
            ops.append({"op": "add", "path": path, "value": want})
    return ops


def env_ops(container: Mapping[str, Any], base: str, wanted: Sequence[tuple[str, str]]) -> list[Op]:
    """Add the downward-API variables the container does not define yet."""
    env = container.get("env")
    present = {e.get("name") for e in env if isinstance(e, Mapping)} if isinstance(env, list) else set()
    entries = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"}}}
        for name, annotation in wanted
        if name not in present
    ]
    if not entries:
        return []
    if not isinstance(env, list):
        return [{"op": "add", "path": f"{base}/env", "value": entries}]
    return [{"op": "add", "path": f"{base}/env/-", "value": e} for e in entries]


def stale_device_env_ops(container: Mapping[str, Any], base: str) -> list[Op]:
    """Remove ``NVIDIA_VISIBLE_DEVICES`` read from ``qosched.io/device`` (the manual setup before
    the device plugin): it names indexes, and the plugin's Allocate sets the UUIDs; two values
    of one variable would leave the runtime to pick one. A literal value is the user's: kept."""
    env = container.get("env")
    if not isinstance(env, list):
        return []
    downward = {"fieldRef": {"fieldPath": f"metadata.annotations['{A_DEVICE}']"}}
    stale = [
        j
        for j, e in enumerate(env)
        if isinstance(e, Mapping)
        and e.get("name") == DEVICES_ENV[0]
        and _mapping(e.get("valueFrom")) == downward
    ]
    return [{"op": "remove", "path": f"{base}/env/{j}"} for j in reversed(stale)]


def _requests_whole_gpus(pod: Mapping[str, Any]) -> bool:
    for c in _containers(pod):
        res = c.get("resources") if isinstance(c, Mapping) else None
        for section in ("requests", "limits"):
            if isinstance(res, Mapping) and GPU_RESOURCE in (res.get(section) or {}):
                return True
    return False


def pod_patch(
    pod: Mapping[str, Any], options: WebhookOptions, class_of: ClassMapper = default_class_of
) -> list[Op]:
    """The JSONPatch of one pod; ``[]`` for an unmanaged or complete pod.

    Raises ``DemandError`` (the extender's message) when the qosched annotations are invalid.
    """
    if not is_managed(pod):
        return []
    demand = checked_demand(pod, class_of)
    if not isinstance(pod.get("spec"), Mapping):
        return []  # nothing to patch (the API server always sends a spec)
    ops = _scheduler_ops(pod["spec"], options)
    containers = _containers(pod)
    if not containers or not isinstance(containers[serving_container_index(pod)], Mapping):
        return ops
    i = serving_container_index(pod)
    container, base = containers[i], f"/spec/containers/{i}"
    units = gpu_share_units(demand.gpu_milli)
    asked_share = A_GPU_MILLI in annotations_of(pod) and not _requests_whole_gpus(pod)
    if options.device_plugin and units > 0 and asked_share:
        ops += resource_ops(container, base, units) + stale_device_env_ops(container, base)
    return ops + env_ops(container, base, wanted_env(pod, options))
