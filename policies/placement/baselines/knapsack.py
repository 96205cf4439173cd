r"""Knapsack baselines of the Ibis paper: first-, best- and worst-fit on memory alone.

Liang et al. (ACM TAAS 2023, models.md §A) compare their interference-aware placement with
bin-packing heuristics that see only memory: a model fits a device when the device's memory in
use plus the model's stays within the memory threshold (0.8, the same ``MEMORY_THRESHOLD`` their
prototype applies, ``ibis/control_service/placement_algorithms_trt.py``: ``is_memory_feasible``
and ``choose_node_memory`` with ``memory_first`` / ``memory_best`` / ``memory_worst``).
Interference is ignored — these are the policies that accept placements whose SLOs will fail.

With free memory after the pod :math:`r = θ·M_{dev} − U_{dev} − m_{pod}` (θ = 0.8):

- ``knapsack-first-fit``  the first node (state order) with a device where r ≥ 0; its first such device;
- ``knapsack-best-fit``   the device with the smallest r ≥ 0 (score −r);
- ``knapsack-worst-fit``  the device with the largest r (score r).

The item and the knapsack depend on what the pod declares: a pod with a model uses the model's
memory on the device (profile ``memory_mib``) against the device's memory; a GPU pod without a
model uses its milli-GPU against the device's 1000; a plain pod its memory request against the
node's memory. A pod on G devices sums r over its devices. A device of unknown memory (no profile
states it) counts as 10¹⁸ MiB: it always fits and ranks last for best-fit, first for worst-fit.
"""

from __future__ import annotations

import numpy as np

from qosched.policies.placement import devices as device_choice
from qosched.policies.placement.base import Reason
from qosched.policies.placement.common import BlindPolicy, Scored
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.interference import InterferenceModel

__all__ = ["KnapsackBestFit", "KnapsackFirstFit", "KnapsackWorstFit", "free_after_mib"]

#: Stand-in for an unknown (infinite) capacity, so scores stay finite and ordered.
_UNKNOWN_CAPACITY = 1e18


def free_after_mib(cand: Candidates, memory_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Free capacity left per device after the pod, and which devices fit, both (m, D).

    For a plain pod (no device) both arrays have one column: the node's memory.
    """
    state, row, pod = cand.state, cand.row, cand.pod
    if cand.need == 0:
        left = (cand.mem_free_mib - pod.memory_mib)[:, None]
        return left, np.ones_like(left, dtype=bool)
    if cand.variants is not None:
        item = cand.variants.take("memory_mib", cand.first_variant)
        cap = memory_frac * state.dev_mem_cap_mib[row]
        cap = np.where(np.isfinite(cap), cap, _UNKNOWN_CAPACITY)
        left = cap[:, None] - state.dev_mem_used_mib[row] - item[:, None]
        return left, cand.device_ok & (left >= 0)
    left = (cand.free_milli - cand.milli).astype(np.float64)
    return left, cand.device_ok.copy()


class _Knapsack(BlindPolicy):
    def __init__(self, *, predict_latency: bool = True, model: InterferenceModel | None = None) -> None:
        super().__init__(predict_latency=predict_latency, model=model)

    def _fit(self, cand: Candidates, reason: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        left, fits = free_after_mib(cand, self.model.thresholds.memory_frac)
        if cand.need > 0:
            lacking = (reason == 0) & (fits.sum(axis=1) < cand.need)
            reason[lacking] = int(
                Reason.DEVICE_MEMORY if cand.variants is not None else Reason.INSUFFICIENT_GPU
            )
        return left, fits

    def _total(self, left: np.ndarray, devices: np.ndarray, cand: Candidates) -> np.ndarray:
        if cand.need == 0:
            return left[:, 0]
        picked = np.take_along_axis(left, np.maximum(devices, 0), axis=1)
        return np.where(devices >= 0, picked, 0.0).sum(axis=1)


class KnapsackFirstFit(_Knapsack):
    """The first node in state order with a device the item fits (memory only)."""

    name = "knapsack-first-fit"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        _, fits = self._fit(cand, reason)
        devices = device_choice.first_fit(cand.free_milli, fits, cand.need)
        return Scored(-cand.row.astype(np.float64), devices)


class KnapsackBestFit(_Knapsack):
    """The device where the least memory is left after the item."""

    name = "knapsack-best-fit"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        left, fits = self._fit(cand, reason)
        devices = device_choice.by_key(left, fits, cand.need)
        return Scored(-self._total(left, devices, cand), devices)


class KnapsackWorstFit(_Knapsack):
    """The device where the most memory is left after the item."""

    name = "knapsack-worst-fit"

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        left, fits = self._fit(cand, reason)
        devices = device_choice.by_key(-left, fits, cand.need)
        return Scored(self._total(left, devices, cand), devices)
