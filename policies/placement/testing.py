"""Small builders for hand-checked placement scenarios (tests, benchmarks, docs examples).

A scenario is a few nodes, a table of service parameters, and the pods already running, written
as plain literals so that every expected number can be worked out by hand next to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from qosched.policies.state import ClusterState, ServiceParams
from qosched.policies.types import Allocation, NodeView, PodDemand

__all__ = ["ProfileTable", "gpu_node", "inference_pod", "plain_gpu_pod", "state_with"]


@dataclass(frozen=True)
class ProfileTable:
    """``lookup``/``device_memory`` for ``ClusterState`` from literal dicts.

    params: (accelerator, model) → ServiceParams; device_memory_mib: accelerator → MiB.
    """

    params: Mapping[tuple[str, str], ServiceParams]
    device_memory_mib: Mapping[str, float]

    def lookup(self, accelerator: str, model: str) -> ServiceParams | None:
        return self.params.get((accelerator, model))

    def device_memory(self, accelerator: str) -> float:
        return self.device_memory_mib.get(accelerator, math.inf)


def gpu_node(
    name: str,
    *,
    accelerator: str | None = "nvidia-t4",
    gpus: int = 1,
    cpu_milli: int = 32_000,
    memory_mib: float = 64_000.0,
    sharing: str = "time-slicing",
    gpu_model: str | None = None,
    schedulable: bool = True,
) -> NodeView:
    return NodeView(
        name=name,
        accelerator=accelerator,
        device_count=gpus,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        sharing=sharing,
        gpu_model=gpu_model,
        schedulable=schedulable,
    )


def inference_pod(
    uid: str,
    *variants: str,
    rate_rps: float,
    slo_ms: float,
    gpu_milli: int = 0,
    cpu_milli: int = 0,
    memory_mib: float = 0.0,
    min_accuracy: float | None = None,
    slo_percentile: float | None = None,
    qos_class: str = "batch",
) -> PodDemand:
    return PodDemand(
        uid=uid,
        name=uid,
        variants=tuple(variants),
        slo_ms=slo_ms,
        rate_rps=rate_rps,
        gpu_milli=gpu_milli,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        min_accuracy=min_accuracy,
        slo_percentile=slo_percentile,
        qos_class=qos_class,
    )


def plain_gpu_pod(
    uid: str, *, gpu_milli: int = 0, cpu_milli: int = 0, memory_mib: float = 0.0, gpu_spec: Sequence[str] = ()
) -> PodDemand:
    return PodDemand(
        uid=uid,
        name=uid,
        gpu_milli=gpu_milli,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        gpu_spec=tuple(gpu_spec),
    )


def state_with(
    nodes: Sequence[NodeView],
    table: ProfileTable,
    running: Iterable[tuple[PodDemand, str, tuple[int, ...]]] = (),
) -> ClusterState:
    """A state with ``nodes`` and the ``running`` pods ``(pod, node name, devices)`` added."""
    state = ClusterState(nodes, table.lookup, table.device_memory)
    for pod, node, devices in running:
        state.add(Allocation(pod, node, devices))
    return state
