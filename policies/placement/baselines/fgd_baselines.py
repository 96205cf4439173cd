r"""The FGD paper's baselines, scored as its simulator scores them (interference-blind).

Source read (not copied): hkust-adsl/kubernetes-scheduler-simulator, ``pkg/simulator/plugin/``
``dot_product_score.go``, ``gpu_clustering_score.go``, ``gpu_packing_score.go``,
``best_fit_score.go``, with ``pkg/utils/utils.go`` (``GenerateSchedulingMatchGroups``) and
``pkg/type/resource.go`` (``ToResourceVec``, ``AllocateExclusiveGpuId``). Run configuration of
the paper's experiments (``experiments/run_scripts/generate_run_scripts.py``): DotProd with
``gpuSelMethod: best``, ``dimExtMethod: merge``, ``normMethod: max``; the others with their
defaults. Weng et al. report, on the Alibaba trace at 130 % arrived workload, GPU allocation
ratios DotProd 90.8 %, GpuClustering 91.9 %, GpuPacking 92.0 %, BestFit 93.1 % (models.md §F).

Notation: node free CPU c [milli-CPU], free milli-GPU on each device fᵈ and in total
F = Σ fᵈ; the pod asks q milli-CPU and g = milli × count milli-GPU; C*, G* the largest node of
the cluster (the simulator's constants ``MaxSpecCpu``/``MaxSpecGpu``, here from the state).

``dot-product`` (Tetris' alignment, as the simulator uses it)
    s = 1 − ½·((c/C*)(q/C*) + (F/G*)(g/G*)). A *larger* dot product of free and requested
    scores *lower*, so it leans towards nodes with less free capacity. Devices: best fit.
``gpu-clustering``
    Pods are tagged by GPU shape: ``share-gpu`` (milli < 1000) or ``k-gpu``. A node scores in the
    band (75, 100] when all its GPU pods share the pod's tag, (50, 75] when its tags include the
    pod's among others, (25, 50] when it has no GPU pod, (0, 25] otherwise; inside a band
    25·(G* − F)/G* (fuller first). Pods without GPU score 0 everywhere. Devices: best fit.
``gpu-packing``
    With best-fit devices: (1) only partly used GPUs taken: 100 − ⌊Σ⌊100 fᵈ/1000⌋ / 10⌋ ≥ 50;
    (2) some fully free GPU taken on a used node: max(50 − #fully free taken, 33); (3) every GPU
    of the node free: max(33 − #GPUs, #GPUs). Pods without GPU score 0. (Integer arithmetic as
    in the simulator.)
``best-fit``
    s = 1 − ½·(c − q)/C* − ½·(F − g)/G*: the node with the least free CPU and GPU left after
    the pod. Devices: best fit.

Integer scores, as the simulator's. kube-scheduler's score plugins return integers 0..100 and
the simulator's scheduler (its kubernetes fork, ``generic_scheduler.go::selectHost``) takes the
highest, ties to the lexicographically smallest node name. So every score above is truncated as
the Go code truncates it: ``dot-product`` ⌊100·s⌋, ``best-fit`` ⌊100·s⌋ (its min-max
normalisation to 0..100 is strictly increasing on integers and changes no choice),
``gpu-clustering``'s in-band term ⌊25·(G* − F)/G*⌋ in integer arithmetic; ``gpu-packing`` is
integer already. Nodes that the truncation makes equal go to the first candidate
(:func:`~qosched.policies.placement.base.best_candidate`), which is the smallest name when node
rows are in name order, as in the openb node lists. The truncation is part of what the paper
measured: scoring with the exact floats changes which node wins every tie (docs/fgd-reproduction.md).
"""

from __future__ import annotations

import numpy as np

from qosched.policies.placement import devices as device_choice
from qosched.policies.placement.baselines.resources import max_spec, node_resources
from qosched.policies.placement.common import BlindPolicy, Scored
from qosched.policies.placement.constraints import Candidates
from qosched.policies.types import GPU_MILLI_PER_DEVICE

__all__ = ["BestFitPolicy", "DotProductPolicy", "GpuClusteringPolicy", "GpuPackingPolicy"]


def _best_fit_devices(cand: Candidates) -> np.ndarray:
    return device_choice.best_fit(cand.free_milli, cand.device_ok, cand.need)


class DotProductPolicy(BlindPolicy):
    """Tetris-style dot product of free and requested (CPU, GPU), merged GPU dimension, max norm."""

    name = "dot-product"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        spec = max_spec(cand.state)
        res = node_resources(cand)
        dot = (res.cpu_free / spec.cpu_milli) * (res.cpu_req / spec.cpu_milli) + (
            res.gpu_free / spec.gpu_milli
        ) * (res.gpu_req / spec.gpu_milli)
        return Scored(np.floor(100.0 * (1.0 - dot / 2.0)), _best_fit_devices(cand))


class GpuClusteringPolicy(BlindPolicy):
    """Prefer nodes whose GPU pods have the same GPU shape as this one (see the module doc)."""

    name = "gpu-clustering"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        state, row, pod = cand.state, cand.row, cand.pod
        devices = _best_fit_devices(cand)
        if pod.gpu_milli <= 0:
            return Scored(np.zeros(cand.m), devices)
        share = state.gpu_share_pods[row]
        whole = state.gpu_whole_pods[row]
        tags = (share > 0).astype(np.int64) + (whole > 0).sum(axis=1)
        if pod.gpu_milli < GPU_MILLI_PER_DEVICE:
            same = share > 0
        else:
            col = min(pod.gpu_count, whole.shape[1]) - 1
            same = whole[:, col] > 0
        band = np.select([same & (tags == 1), same, tags == 0], [75.0, 50.0, 25.0], default=0.0)
        spec = max_spec(state)
        free_total = cand.free_milli.sum(axis=1).astype(np.int64)
        fullness = (25 * (int(spec.gpu_milli) - free_total)) // int(spec.gpu_milli)  # Go's integer division
        return Scored(band + fullness, devices)


class GpuPackingPolicy(BlindPolicy):
    """Prefer partly used GPUs, then free GPUs on used nodes, then wholly free nodes."""

    name = "gpu-packing"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        devices = _best_fit_devices(cand)
        if cand.pod.gpu_milli <= 0:
            return Scored(np.zeros(cand.m), devices)
        exists = cand.state.dev_exists[cand.row]
        free = cand.free_milli.astype(np.int64)
        n_gpu = exists.sum(axis=1)
        fully_free = (exists & (free >= GPU_MILLI_PER_DEVICE)).sum(axis=1)
        picked_free = np.take_along_axis(free, np.maximum(devices, 0), axis=1)
        picked_free = np.where(devices >= 0, picked_free, 0)
        full_taken = (picked_free >= GPU_MILLI_PER_DEVICE).sum(axis=1)
        pct_left = (picked_free * 100 // GPU_MILLI_PER_DEVICE).sum(axis=1)
        case_node_free = np.maximum(33 - fully_free, fully_free)
        case_new_gpu = np.maximum(50 - full_taken, 33)
        case_shared = np.maximum(100 - pct_left // 10, 50)
        raw = np.where(
            fully_free == n_gpu, case_node_free, np.where(full_taken > 0, case_new_gpu, case_shared)
        )
        return Scored(raw.astype(np.float64), devices)


class BestFitPolicy(BlindPolicy):
    """The node with the least free CPU and GPU left after the pod (weights ½, ½)."""

    name = "best-fit"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        spec = max_spec(cand.state)
        res = node_resources(cand)
        left = (
            0.5 * (res.cpu_free - res.cpu_req) / spec.cpu_milli
            + 0.5 * (res.gpu_free - res.gpu_req) / spec.gpu_milli
        )
        return Scored(np.floor(100.0 * (1.0 - left)), _best_fit_devices(cand))
