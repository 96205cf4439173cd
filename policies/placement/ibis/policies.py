r"""The Ibis placement policies: interference-aware pack (DFS), spread (BFS), heterogeneity-aware.

Liang, Hanafy, Ali-Eldin, Shenoy, "Model-driven cluster resource management for AI workloads in
edge clouds", ACM TAAS 2023 (models.md §A), prototype umassos/ibis
(``ibis/control_service/placement_algorithms_edgetpu.py``, ``placement_algorithms_trt.py``,
``control_service_heter.py``; read, not copied). All three first keep only the devices where the
latency models predict the placement feasible — memory ≤ 0.8, utilisation ≤ 0.8, front end ≤ 0.8,
every co-located SLO met, the pod's included (:mod:`qosched.policies.placement.interference`) —
then choose:

``ibis-pack`` (DFS, ``choose_node_depth_first``)
    the first feasible node in a fixed order (state row order; Ibis sorts by name) and its first
    feasible device: a node fills up until the models say no, then the next one.
    score = −row index.
``ibis-spread`` (BFS, ``choose_node_breath_first``)
    an idle device if there is one, else the least utilised: the feasible device with the lowest
    utilisation ρ *before* the pod, per node, and the node whose chosen device is least
    utilised. score = −ρ_before.
``ibis-hetero`` (``ControlService.deploy`` with ``dev_method="best"``)
    the device type on which the pod costs least: the feasible device where the utilisation
    increase Δρ = ρ_after − ρ_before is smallest (for a GPU time slice that is λ·S of the pod
    there, so faster device types win; on an edge TPU it includes the extra swaps it causes).
    score = −Δρ (rounded to 10⁻⁹ so equal costs tie and the earlier node wins, DFS within a type,
    as Ibis' GPU side does).

Not reproduced: Ibis prefers a node already serving the *same model* because its prototype can
merge two services into one model instance ("MaaS"); a qosched pod is its own service, so there
is nothing to merge.

Pods without a model and SLO have no interference to judge: pack takes the first fitting node
and device, spread the least allocated node (Kubernetes LeastAllocated on CPU, memory and GPU)
and its emptiest device, hetero behaves as pack.
"""

from __future__ import annotations

import numpy as np

from qosched.policies.placement.baselines.kube import ResourceWeights, allocated_fraction
from qosched.policies.placement.baselines.resources import node_resources
from qosched.policies.placement.common import AwarePolicy, Scored
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.feasible_devices import NodeVerdicts
from qosched.policies.placement.interference import DeviceVerdicts

__all__ = ["IbisHetero", "IbisPack", "IbisSpread"]

_ALL_RESOURCES = ResourceWeights(cpu=1.0, memory=1.0, gpu=1.0)
#: Δρ is rounded to this before ranking, so float noise cannot break a tie of equal costs.
_COST_RESOLUTION = 1e-9


class IbisPack(AwarePolicy):
    """DFS: the first feasible node in state order, its first feasible device."""

    name = "ibis-pack"
    search = "first"

    def node_score(self, cand: Candidates, verdicts: NodeVerdicts, variant: np.ndarray) -> Scored:
        return Scored(-cand.row.astype(np.float64), verdicts.devices)


class IbisSpread(AwarePolicy):
    """BFS: the feasible device that is least utilised before the pod (idle first)."""

    name = "ibis-spread"
    search = "all"
    with_before = True

    def verdict_key(self, verdicts: DeviceVerdicts) -> np.ndarray:
        return verdicts.utilization_before

    def blind_order(self, cand: Candidates) -> np.ndarray:
        return -cand.free_milli.astype(np.float64)

    def node_score(self, cand: Candidates, verdicts: NodeVerdicts, variant: np.ndarray) -> Scored:
        return Scored(-verdicts.utilization_before, verdicts.devices)

    def blind_score(self, cand: Candidates, verdicts: NodeVerdicts) -> Scored:
        return Scored(allocated_fraction(node_resources(cand), _ALL_RESOURCES, most=False), verdicts.devices)


class IbisHetero(AwarePolicy):
    """Heterogeneity-aware: the feasible device where the pod adds the least utilisation."""

    name = "ibis-hetero"
    search = "all"
    with_before = True

    def verdict_key(self, verdicts: DeviceVerdicts) -> np.ndarray:
        return _cost(verdicts.utilization, verdicts.utilization_before)

    def node_score(self, cand: Candidates, verdicts: NodeVerdicts, variant: np.ndarray) -> Scored:
        cost = _cost(verdicts.utilization, verdicts.utilization_before)
        return Scored(-cost, verdicts.devices, {"utilization_increase": cost})

    def blind_score(self, cand: Candidates, verdicts: NodeVerdicts) -> Scored:
        return Scored(-cand.row.astype(np.float64), verdicts.devices)


def _cost(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    return np.round((after - before) / _COST_RESOLUTION) * _COST_RESOLUTION
