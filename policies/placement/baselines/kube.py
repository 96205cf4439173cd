r"""Kubernetes' own scoring: ``default`` (LeastAllocated, spread) and ``binpack`` (MostAllocated).

Both are the ``NodeResourcesFit`` score strategies of kube-scheduler
(``pkg/scheduler/framework/plugins/noderesources/least_allocated.go`` and
``most_allocated.go``): for each resource r with capacity Cᵣ (allocatable) and requested Rᵣ
(pods already there plus this one) and weight wᵣ,

.. math::

    \text{least} = \frac{\sum_r w_r\,(C_r - R_r)/C_r}{\sum_r w_r}, \qquad
    \text{most}  = \frac{\sum_r w_r\,R_r/C_r}{\sum_r w_r},

a resource with Cᵣ = 0 scoring 0 (upstream does the same). kube-scheduler multiplies by 100 and
truncates; the raw fraction here orders nodes identically without the ties truncation makes.

Weights: ``default`` uses upstream's default resources, CPU and memory with weight 1 (GPUs are
not scored by a stock scheduler); ``binpack`` adds the GPU (milli-GPU over the node's devices)
with weight 1, as the Kubernetes documentation's bin-packing example does for extended
resources. Devices: ``default`` takes the lowest-indexed fitting devices (what the NVIDIA device
plugin hands out), ``binpack`` the best-fitting ones. Both ignore interference.

:func:`worst_fit_evaluation` is the host choice of the ``priority`` and ``qos-driven`` policies
(da Silva et al., JISA 2020, models.md §B: "hosts are chosen worst-fit"): the node with the most
free capacity left after the pod (LeastAllocated over CPU, memory and GPU, weight 1 each), on
its least-loaded devices; optionally behind the interference-aware feasibility.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qosched.policies.placement import devices as device_choice
from qosched.policies.placement.base import Evaluation
from qosched.policies.placement.baselines.resources import NodeResources, node_resources
from qosched.policies.placement.common import AwarePolicy, BlindPolicy, Scored
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.feasible_devices import NodeVerdicts
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.placement.options import BlindOptions, check_instance
from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand

__all__ = [
    "BinpackOptions",
    "BinpackPolicy",
    "DefaultOptions",
    "DefaultPolicy",
    "ResourceWeights",
    "WorstFitPolicy",
    "allocated_fraction",
    "worst_fit_evaluation",
]


@dataclass(frozen=True, slots=True)
class ResourceWeights:
    """Weights wᵣ of the resources in the score (>= 0, not all 0)."""

    cpu: float = 1.0
    memory: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        values = (self.cpu, self.memory, self.gpu)
        if any(not np.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
            raise ValueError(f"ResourceWeights must be finite, >= 0 and not all 0 (got {values})")


def _fraction(requested: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    out = np.zeros(np.shape(capacity))
    np.divide(requested, capacity, out=out, where=capacity > 0)
    return np.clip(out, 0.0, 1.0)


def allocated_fraction(res: NodeResources, weights: ResourceWeights, *, most: bool) -> np.ndarray:
    """The weighted mean of Rᵣ/Cᵣ (``most``) or (Cᵣ − Rᵣ)/Cᵣ (least) per candidate, in [0, 1]."""
    total = np.zeros(res.cpu_cap.shape)
    for w, cap, free, req in (
        (weights.cpu, res.cpu_cap, res.cpu_free, res.cpu_req),
        (weights.memory, res.mem_cap, res.mem_free, res.mem_req),
        (weights.gpu, res.gpu_cap, res.gpu_free, res.gpu_req),
    ):
        if w == 0:
            continue
        requested = cap - free + req
        used = _fraction(requested, cap)
        total += w * (used if most else np.where(cap > 0, 1.0 - used, 0.0))
    return total / (weights.cpu + weights.memory + weights.gpu)


@dataclass(frozen=True, slots=True)
class DefaultOptions(BlindOptions):
    """Options of ``default``: :class:`~qosched.policies.placement.options.BlindOptions` and the
    LeastAllocated weights (default upstream's: CPU and memory 1, GPU 0)."""

    weights: ResourceWeights = field(default_factory=ResourceWeights)

    def __post_init__(self) -> None:
        super(DefaultOptions, self).__post_init__()
        check_instance(self, "weights", self.weights, ResourceWeights, "a ResourceWeights")


@dataclass(frozen=True, slots=True)
class BinpackOptions(DefaultOptions):
    """Options of ``binpack``: as ``default``'s, MostAllocated weights CPU, memory and GPU 1."""

    weights: ResourceWeights = field(default_factory=lambda: ResourceWeights(gpu=1.0))


class DefaultPolicy(BlindPolicy):
    """Kubernetes' default spread: LeastAllocated on CPU and memory; first-fit devices."""

    name = "default"

    def __init__(
        self,
        *,
        weights: ResourceWeights | None = None,
        predict_latency: bool = True,
        model: InterferenceModel | None = None,
    ) -> None:
        super().__init__(predict_latency=predict_latency, model=model)
        self.weights = weights if weights is not None else ResourceWeights()

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        raw = allocated_fraction(node_resources(cand), self.weights, most=False)
        devices = device_choice.first_fit(cand.free_milli, cand.device_ok, cand.need)
        return Scored(raw, devices)


class BinpackPolicy(BlindPolicy):
    """Bin packing: MostAllocated on CPU, memory and GPU; best-fit devices."""

    name = "binpack"

    def __init__(
        self,
        *,
        weights: ResourceWeights | None = None,
        predict_latency: bool = True,
        model: InterferenceModel | None = None,
    ) -> None:
        super().__init__(predict_latency=predict_latency, model=model)
        self.weights = weights if weights is not None else ResourceWeights(gpu=1.0)

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        raw = allocated_fraction(node_resources(cand), self.weights, most=True)
        devices = device_choice.best_fit(cand.free_milli, cand.device_ok, cand.need)
        return Scored(raw, devices)


_WORST_FIT_WEIGHTS = ResourceWeights(cpu=1.0, memory=1.0, gpu=1.0)


class _WorstFitBlind(BlindPolicy):
    name = "worst-fit"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        raw = allocated_fraction(node_resources(cand), _WORST_FIT_WEIGHTS, most=False)
        return Scored(raw, device_choice.worst_fit(cand.free_milli, cand.device_ok, cand.need))


class _WorstFitAware(AwarePolicy):
    name = "worst-fit"

    def device_order(self, cand: Candidates) -> np.ndarray:
        return -cand.free_milli.astype(np.float64)

    def node_score(self, cand: Candidates, verdicts: NodeVerdicts, variant: np.ndarray) -> Scored:
        return Scored(
            allocated_fraction(node_resources(cand), _WORST_FIT_WEIGHTS, most=False), verdicts.devices
        )


class WorstFitPolicy:
    """Worst-fit hosts (most free capacity after the pod; least-loaded devices).

    Not registered under a contract name: it is the host choice that ``priority`` and
    ``qos-driven`` reuse. ``interference_aware=True`` keeps only nodes where the latency models
    predict every SLO met (as ``ibis-*`` and ``qosched`` do).
    """

    def __init__(
        self,
        *,
        interference_aware: bool = False,
        model: InterferenceModel | None = None,
        name: str = "worst-fit",
    ) -> None:
        self._impl: BlindPolicy | AwarePolicy = (
            _WorstFitAware(model=model) if interference_aware else _WorstFitBlind(model=model)
        )
        self._impl.name = name
        self.name = name

    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        return self._impl.evaluate(state, pod, candidates)


def worst_fit_evaluation(
    state: ClusterState,
    pod: PodDemand,
    candidates: np.ndarray,
    *,
    interference_aware: bool = False,
    model: InterferenceModel | None = None,
    policy: str = "worst-fit",
) -> Evaluation:
    """One-call form of :class:`WorstFitPolicy` (``policy`` names the caller in the Evaluation)."""
    return WorstFitPolicy(interference_aware=interference_aware, model=model, name=policy).evaluate(
        state, pod, candidates
    )
