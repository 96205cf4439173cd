"""What a container gets from ``Allocate``: the devices qosched bound the pod to, and the MPS
settings of its share. Pure: pod + inventory + node sharing mode in, plan out.

- ``NVIDIA_VISIBLE_DEVICES``: the UUIDs of the devices named by ``qosched.io/device`` (GPU
  UUIDs, MIG instance UUIDs on MIG nodes), never indexes (indexes depend on the runtime's view).
- On MPS nodes (``qosched.io/sharing: mps``):
  ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` = ``qosched.io/gpu-share-pct`` (the share in 1/100 GPU is
  the percentage of SMs the client may use); ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` =
  ``<ordinal>=<qosched.io/gpu-memory-limit-mib>M`` for each visible device (ordinals 0.. as the
  container sees them); ``CUDA_MPS_PIPE_DIRECTORY`` and the pipe directory mounted from the host
  (the MPS control daemon's ``CUDA_MPS_PIPE_DIRECTORY`` there).

Any missing or unreadable annotation, a device index the node does not have, or an unhealthy
device is an :class:`AllocationError` naming the pod: the kubelet fails the pod's admission
with that message; no other device is ever handed out instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qosched.extender.deviceplugin.inventory import Device
from qosched.extender.kube.objects import (
    A_DEVICE,
    A_GPU_MEMORY_LIMIT_MIB,
    A_GPU_SHARE_PCT,
    GPU_SHARE_UNITS_PER_DEVICE,
    annotations_of,
    pod_key,
)

MPS_PIPE_CONTAINER_DIR = "/tmp/nvidia-mps"
#: Annotation on the container (CRI), so ``crictl inspect`` shows which pod a plan was made for.
ALLOCATED_FOR = "qosched.io/allocated-for"


class AllocationError(RuntimeError):
    """Allocate must fail: the message reaches the pod's events (UnexpectedAdmissionError)."""


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer for one container."""

    pod: str
    devices: tuple[Device, ...]
    envs: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)


def bound_indexes(pod: Mapping[str, Any]) -> tuple[int, ...]:
    """Device indexes of ``qosched.io/device``; AllocationError when absent or unreadable."""
    raw = annotations_of(pod).get(A_DEVICE)
    if raw is None or not str(raw).strip():
        raise AllocationError(f"pod {pod_key(pod)} has no {A_DEVICE} annotation: it was not bound by qosched")
    try:
        indexes = tuple(int(p) for p in str(raw).split(","))
    except ValueError:
        raise AllocationError(
            f"pod {pod_key(pod)}: {A_DEVICE}={raw!r} is not a list of device indexes"
        ) from None
    if len(set(indexes)) != len(indexes) or min(indexes) < 0:
        raise AllocationError(f"pod {pod_key(pod)}: {A_DEVICE}={raw!r} is not a list of distinct indexes")
    return indexes


def _positive_int(pod: Mapping[str, Any], key: str, hi: int) -> int:
    raw = annotations_of(pod).get(key)
    try:
        value = int(str(raw))
    except ValueError:
        raise AllocationError(f"pod {pod_key(pod)}: {key}={raw!r} is not an integer") from None
    if not 1 <= value <= hi:
        raise AllocationError(f"pod {pod_key(pod)}: {key}={raw!r} is outside 1..{hi}")
    return value


def _devices(pod: Mapping[str, Any], inventory: Sequence[Device]) -> tuple[Device, ...]:
    chosen = []
    for i in bound_indexes(pod):
        if i >= len(inventory):
            raise AllocationError(
                f"pod {pod_key(pod)}: {A_DEVICE} names device {i}, this node has {len(inventory)} "
                f"({', '.join(str(d.index) for d in inventory) or 'none'})"
            )
        device = inventory[i]
        if not device.healthy:
            raise AllocationError(f"pod {pod_key(pod)}: device {i} ({device.uuid}) is unhealthy")
        chosen.append(device)
    return tuple(chosen)


def _mps(
    pod: Mapping[str, Any], n_devices: int, pipe_host_dir: str
) -> tuple[dict[str, str], tuple[Mount, ...]]:
    ann = annotations_of(pod)
    if A_GPU_SHARE_PCT not in ann:
        raise AllocationError(
            f"pod {pod_key(pod)} is on an MPS node but has no {A_GPU_SHARE_PCT} annotation "
            "(bound by a qosched without the device layer?)"
        )
    envs = {
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(
            _positive_int(pod, A_GPU_SHARE_PCT, GPU_SHARE_UNITS_PER_DEVICE)
        ),
        "CUDA_MPS_PIPE_DIRECTORY": MPS_PIPE_CONTAINER_DIR,
    }
    if A_GPU_MEMORY_LIMIT_MIB in ann:
        limit_mib = _positive_int(pod, A_GPU_MEMORY_LIMIT_MIB, 10 * 2**20)
        envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = ",".join(f"{i}={limit_mib}M" for i in range(n_devices))
    return envs, (Mount(MPS_PIPE_CONTAINER_DIR, pipe_host_dir),)


def plan_for(
    pod: Mapping[str, Any], inventory: Sequence[Device], sharing: str, *, mps_pipe_host_dir: str
) -> Plan:
    """The allocation of ``pod`` on this node (see the module docstring)."""
    devices = _devices(pod, inventory)
    envs = {"NVIDIA_VISIBLE_DEVICES": ",".join(d.uuid for d in devices)}
    mounts: tuple[Mount, ...] = ()
    if sharing == "mps":
        mps_envs, mounts = _mps(pod, len(devices), mps_pipe_host_dir)
        envs.update(mps_envs)
    return Plan(
        pod=pod_key(pod), devices=devices, envs=envs, mounts=mounts, annotations={ALLOCATED_FOR: pod_key(pod)}
    )
