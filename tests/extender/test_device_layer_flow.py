"""One pod through the whole device layer, each step the real code: the webhook's patch, the
extender's filter and bind (which write the device layer's annotations), then the device
plugin's Allocate plan for the pod as the kubelet would see it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from qosched.extender.deviceplugin.allocation import plan_for
from qosched.extender.deviceplugin.inventory import Device
from qosched.extender.deviceplugin.pods import PodMatcher
from qosched.extender.kube.cache import StaticCluster
from qosched.extender.kube.objects import (
    A_GPU_MEMORY_LIMIT_MIB,
    A_GPU_SHARE_PCT,
    GPU_SHARE_RESOURCE,
    default_class_of,
    mps_memory_limit_mib,
    node_view,
)
from qosched.extender.server.runtime import Runtime
from qosched.extender.webhook.admission import mutate_review
from qosched.extender.webhook.mutation import WebhookOptions
from qosched.policies.placement.base import make_policy
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.profiles.store import bundled_profiles
from tests.extender.extender_support import RecordingBinder, node, write_snapshot

PROFILES = bundled_profiles()
LOOKUP, DEVICE_MEMORY = lookup_from_profiles(PROFILES)
UUIDS = ("GPU-aaaaaaaa-0000-4000-8000-000000000000", "GPU-bbbbbbbb-1111-4000-8000-000000000001")


def _created_pod() -> dict[str, Any]:
    """What a user applies; then what the API server stores after the webhook's patch."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "svc-0",
            "namespace": "default",
            "uid": "uid-svc-0",
            "annotations": {
                "qosched.io/model": "resnet50",
                "qosched.io/slo-ms": "100",
                "qosched.io/rate-rps": "10",
                "qosched.io/gpu-milli": "250",
            },
        },
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [{"name": "server", "image": "x", "resources": {"requests": {"cpu": "100m"}}}],
        },
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "r1",
            "kind": {"kind": "Pod"},
            "operation": "CREATE",
            "namespace": "default",
            "object": pod,
        },
    }
    response = mutate_review(review, WebhookOptions(device_plugin=True), default_class_of)["response"]
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))


def plugin_node(sharing: str) -> dict[str, Any]:
    """A node of qosched's device plugin: no nvidia.com/gpu, 100 qosched.io/gpu-share per GPU."""
    n = node("gpu-0", "nvidia-t4", gpus=0, sharing=sharing)
    for key in ("allocatable", "capacity"):
        n["status"][key][GPU_SHARE_RESOURCE] = "200"
    return n


def test_plugin_nodes_count_their_gpus_from_the_share_capacity() -> None:
    n = plugin_node("mps")
    n["status"]["allocatable"][GPU_SHARE_RESOURCE] = "100"  # one GPU unhealthy: still two devices
    assert node_view(n).device_count == 2
    assert node_view(node("cpu-0", "nvidia-t4", gpus=0)).device_count == 1


@pytest.mark.parametrize("sharing", ["mps", "time-slicing"])
def test_webhook_extender_and_plugin_agree(tmp_path: Path, sharing: str) -> None:
    pod = _created_pod()
    assert pod["spec"]["schedulerName"] == "qosched"
    units = int(pod["spec"]["containers"][0]["resources"]["limits"][GPU_SHARE_RESOURCE])
    assert units == 25
    snapshot = write_snapshot(tmp_path / "c.json", [plugin_node(sharing), pod])
    cache = StaticCluster.from_file(snapshot, LOOKUP, DEVICE_MEMORY)
    binder = RecordingBinder()
    runtime = Runtime(cache, make_policy("qosched"), binder)  # type: ignore[arg-type]
    assert runtime.filter(pod, ["gpu-0"]).kept == ["gpu-0"]
    outcome = runtime.bind("default", "svc-0", "uid-svc-0", "gpu-0")
    assert outcome.error == ""
    annotations = outcome.annotations
    assert annotations[A_GPU_SHARE_PCT] == str(units)
    memory_mib = PROFILES.get("nvidia-t4", "resnet50").memory_mib
    if sharing == "mps":
        assert annotations[A_GPU_MEMORY_LIMIT_MIB] == str(mps_memory_limit_mib(memory_mib))
    else:
        assert A_GPU_MEMORY_LIMIT_MIB not in annotations
    # The kubelet's view: the pod bound with those annotations, still Pending.
    bound = {
        **pod,
        "metadata": {**pod["metadata"], "annotations": {**pod["metadata"]["annotations"], **annotations}},
        "spec": {**pod["spec"], "nodeName": "gpu-0"},
        "status": {"phase": "Pending"},
    }
    inventory = [Device(0, UUIDS[0]), Device(1, UUIDS[1])]
    matcher = PodMatcher(lambda: [bound], "gpu-0")
    _, plan = matcher.match(
        units, lambda p: plan_for(p, inventory, sharing, mps_pipe_host_dir="/run/nvidia/mps")
    )
    device = int(annotations["qosched.io/device"])
    assert plan.envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[device]
    if sharing == "mps":
        assert plan.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
        assert plan.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={annotations[A_GPU_MEMORY_LIMIT_MIB]}M"
    else:
        assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in plan.envs
