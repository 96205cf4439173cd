"""Domain types of qosched: what a pod asks for, what a node offers, where a pod runs.

These are the only shapes that cross from the I/O shell (`qosched.extender`) into the pure core
(`qosched.policies`): the shell parses Kubernetes objects (annotations of
``../shared/spec/contract.md`` §1) into them once, at the boundary, and policies never see a
Kubernetes object. Units are in the field names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Sharing modes of a node's accelerators (node label ``qosched.io/sharing``).
SHARING_MODES: tuple[str, ...] = ("time-slicing", "mps", "mig", "exclusive")
DEFAULT_SHARING = "time-slicing"

#: Tiers of a node (node label ``qosched.io/tier``).
TIERS: tuple[str, ...] = ("end", "edge", "cloud")

#: One whole GPU in milli-GPU units.
GPU_MILLI_PER_DEVICE = 1000

#: Accelerator key of a plain CPU node: its "device" is the node's CPU (processor sharing).
CPU_ACCELERATOR = "cpu"
#: Accelerator keys of edge TPUs: one model resident at a time, swap on model change.
EDGETPU_ACCELERATORS: frozenset[str] = frozenset({"edgetpu"})


class DemandError(ValueError):
    """A pod's qosched request is invalid (the message names the annotation)."""


@dataclass(frozen=True, slots=True)
class PodDemand:
    """What one pod asks of the cluster, parsed from its spec and ``qosched.io/*`` annotations.

    ``gpu_milli`` is the *total* request: 250 is a quarter of one GPU, 1000 one whole GPU,
    2000 two whole GPUs (values above 1000 must be whole GPUs, see the contract).
    ``variants`` lists the profile keys the pod can serve, the preferred one first; a pod with
    ``qosched.io/model`` and no variants has ``variants == (model,)``.
    """

    uid: str
    name: str
    namespace: str = "default"
    managed: bool = True
    variants: tuple[str, ...] = ()
    slo_ms: float | None = None
    slo_percentile: float | None = None
    rate_rps: float = 0.0
    qos_class: str = "batch"
    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mib: float = 0.0
    min_accuracy: float | None = None
    priority: int = 0
    gpu_spec: tuple[str, ...] = ()
    creation_s: float = 0.0

    def __post_init__(self) -> None:
        if self.gpu_milli < 0 or (
            self.gpu_milli > GPU_MILLI_PER_DEVICE and self.gpu_milli % GPU_MILLI_PER_DEVICE
        ):
            raise DemandError(
                f"qosched.io/gpu-milli: {self.gpu_milli} is neither 1..1000 nor a whole number of GPUs"
            )
        if self.slo_ms is not None and not (math.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise DemandError(f"qosched.io/slo-ms: must be a finite number > 0, got {self.slo_ms}")
        if not (math.isfinite(self.rate_rps) and self.rate_rps >= 0):
            raise DemandError(f"qosched.io/rate-rps: must be a finite number >= 0, got {self.rate_rps}")
        if self.slo_percentile is not None and not 50.0 <= self.slo_percentile <= 99.9:
            raise DemandError(
                f"qosched.io/slo-percentile: must be within 50..99.9, got {self.slo_percentile}"
            )
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise DemandError(f"qosched.io/min-accuracy: must be within 0..1, got {self.min_accuracy}")
        if self.cpu_milli < 0 or not (math.isfinite(self.memory_mib) and self.memory_mib >= 0):
            raise DemandError("cpu and memory requests must be >= 0")

    @property
    def model(self) -> str | None:
        """The preferred model (first variant), or None for a pod with no model."""
        return self.variants[0] if self.variants else None

    @property
    def gpu_count(self) -> int:
        """Number of devices the pod occupies (a fractional request occupies one)."""
        if self.gpu_milli <= 0:
            return 0
        return max(1, self.gpu_milli // GPU_MILLI_PER_DEVICE)

    @property
    def milli_per_device(self) -> int:
        """Milli-GPU taken on each device it occupies."""
        return min(self.gpu_milli, GPU_MILLI_PER_DEVICE)

    @property
    def is_inference(self) -> bool:
        """True when the pod names a model and a latency target: interference applies to it."""
        return bool(self.variants) and self.slo_ms is not None


@dataclass(frozen=True, slots=True)
class NodeView:
    """What a node offers: its accelerator type and count, its sharing mode and its allocatable.

    ``accelerator`` is the profile key of the device type (label ``qosched.io/accelerator``);
    a node without accelerators that still runs inference on its CPU uses ``"cpu"``; a node with
    no label at all has ``accelerator=None`` and only plain pods can go there.
    """

    name: str
    accelerator: str | None = None
    device_count: int = 0
    sharing: str = DEFAULT_SHARING
    tier: str | None = None
    cpu_milli: int = 0
    memory_mib: float = 0.0
    schedulable: bool = True
    gpu_model: str | None = None

    def __post_init__(self) -> None:
        if self.sharing not in SHARING_MODES:
            raise ValueError(f"node {self.name}: sharing {self.sharing!r} is not one of {SHARING_MODES}")
        if self.device_count < 0:
            raise ValueError(f"node {self.name}: device count {self.device_count} < 0")


@dataclass(frozen=True, slots=True)
class Allocation:
    """A pod placed on a node: which devices, and which model variant it serves there.

    ``assumed`` marks an allocation the extender recorded at bind time before the watch
    confirmed it (it expires at ``assumed_until_s`` if nothing confirms it).
    """

    pod: PodDemand
    node: str
    devices: tuple[int, ...] = ()
    model: str | None = None
    assumed: bool = False
    assumed_until_s: float = field(default=math.inf, compare=False)

    @property
    def uid(self) -> str:
        return self.pod.uid
