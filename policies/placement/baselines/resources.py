"""Resource arithmetic shared by the baselines: capacities, requests, free amounts per candidate.

Three resources, as the Kubernetes scheduler and the FGD simulator count them:

- ``cpu``    milli-CPU, node allocatable vs the sum of pod requests;
- ``memory`` MiB, likewise;
- ``gpu``    milli-GPU summed over the node's devices (1000 per device), the FGD simulator's
             "merged" GPU dimension (``GpuDimExtMethod = merge``).

The FGD simulator normalises by the largest node of its cluster (``MaxSpecCpu = 128000`` milli-CPU,
``MaxSpecGpu = 8000`` milli-GPU, constants of the Alibaba cluster in
``pkg/type/open-gpu-share/utils/const.go``); here the same normalisers come from the state
(:func:`max_spec`), the largest node of *this* cluster, over all nodes rather than the candidates
so that a node's score does not depend on which other nodes were asked about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qosched.policies.placement.constraints import Candidates
from qosched.policies.state import ClusterState
from qosched.policies.types import GPU_MILLI_PER_DEVICE

__all__ = ["MaxSpec", "NodeResources", "max_spec", "node_resources"]


@dataclass(frozen=True, slots=True)
class MaxSpec:
    """Largest node of the cluster: CPU [milli-CPU] and GPU [milli-GPU], both >= 1."""

    cpu_milli: float
    gpu_milli: float


def max_spec(state: ClusterState) -> MaxSpec:
    cpu = float(state.cpu_cap_milli.max(initial=0))
    gpu = float(state.dev_exists.sum(axis=1).max(initial=0)) * GPU_MILLI_PER_DEVICE
    return MaxSpec(cpu_milli=max(cpu, 1.0), gpu_milli=max(gpu, float(GPU_MILLI_PER_DEVICE)))


@dataclass(frozen=True, slots=True)
class NodeResources:
    """Capacity and free amount of each resource per candidate (arrays (m,)), and the pod's request."""

    cpu_cap: np.ndarray
    cpu_free: np.ndarray
    mem_cap: np.ndarray
    mem_free: np.ndarray
    gpu_cap: np.ndarray
    gpu_free: np.ndarray
    cpu_req: float
    mem_req: float
    gpu_req: float


def node_resources(cand: Candidates) -> NodeResources:
    """Capacities and free amounts; GPU from the devices (``cpu`` nodes have none)."""
    state, row, pod = cand.state, cand.row, cand.pod
    gpu_devices = (cand.free_milli > 0) | (state.dev_exists[row] & (state.gpu_used_milli[row] > 0))
    return NodeResources(
        cpu_cap=state.cpu_cap_milli[row].astype(np.float64),
        cpu_free=cand.cpu_free_milli.astype(np.float64),
        mem_cap=state.mem_cap_mib[row],
        mem_free=cand.mem_free_mib,
        gpu_cap=gpu_devices.sum(axis=1) * float(GPU_MILLI_PER_DEVICE),
        gpu_free=cand.free_milli.sum(axis=1).astype(np.float64),
        cpu_req=float(pod.cpu_milli),
        mem_req=float(pod.memory_mib),
        gpu_req=float(pod.gpu_milli),
    )
