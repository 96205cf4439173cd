"""The QoS-fairness term of ``qosched``: a hook, and an adapter to ``qosched.policies.fairness``.

INTEGRATION POINT. The placement policy takes any :class:`FairnessHook`, a vectorised callable
that scores every candidate at once (higher = fairer). Without one, fairness contributes 0.

:class:`SnapshotFairness` adapts :func:`qosched.policies.fairness.shares.fairness_term` — a
closed-form, per-node function of a :class:`~qosched.policies.fairness.shares.FairnessSnapshot`
(the delivered, normalised QoS of every placed service, built off the request path by the
controller or the simulator). Being per node, it is evaluated on the ``top_k`` candidates of
the rest of the score only (a re-ranking stage, ``top_k`` Python calls, never one per node of a
5,000-node cluster); every other feasible candidate gets the lowest value found among them, so
fairness can reorder the leaders but never lift an unexamined node above an examined one.

Inputs the adapter derives for a candidate node (from the state and the caller's maps):

- the classes and current normalised QoS of the services on the device(s) the pod would take
  (``normalised_qos`` by pod uid; a service missing from it counts as meeting its target,
  1.0/target);
- their predicted normalised QoS with the pod there, and the pod's own: the current value (the
  pod's: 1/target) scaled by a headroom factor a(σ) = min(1, σ/σ_ref), σ the latency slack of
  the device after placement (min over its services of (SLO − latency)/SLO) and σ_ref
  (``headroom_frac``, default 0.2). *Approximation:* a feasible placement meets every SLO on
  average, but a device left with little headroom misses more requests under bursts and model
  error, so its services' QoS is discounted; without the discount every feasible node would get
  the same fairness term (the placement would not change any predicted QoS).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand

__all__ = ["FairnessHook", "FairnessInputs", "SnapshotFairness"]


@dataclass(frozen=True, slots=True)
class FairnessInputs:
    """What a fairness hook sees for the candidates of one call (arrays of length m).

    rows: state rows; devices (m, G) chosen devices (-1: infeasible); latency_ms and slack_frac
    of the pod on them; base_score: the rest of qosched's score (fragmentation and slack), -inf
    where infeasible.
    """

    state: ClusterState
    pod: PodDemand
    rows: np.ndarray
    devices: np.ndarray
    latency_ms: np.ndarray
    slack_frac: np.ndarray
    base_score: np.ndarray


class FairnessHook(Protocol):
    """Vectorised fairness term: ``hook(inputs) -> (m,)`` float, higher = fairer, NaN = unknown."""

    def __call__(self, inputs: FairnessInputs) -> np.ndarray: ...


class SnapshotFairness:
    """:class:`FairnessHook` over ``qosched.policies.fairness.fairness_term`` (see the module doc).

    Parameters
    ----------
    snapshot : FairnessSnapshot
        Normalised QoS of all placed services (``FairnessSnapshot.from_values``).
    normalised_qos : mapping of str to float
        Current normalised QoS of each placed pod, by uid (the values the snapshot summarises).
    target_of : callable
        Class name → QoS target (e.g. ``ClassConfig.get(name).qos_target``).
    top_k : int
        Candidates examined per call (default 16).
    weights : FairnessWeights, optional
        Passed to ``fairness_term``.
    """

    def __init__(
        self,
        snapshot: Any,
        normalised_qos: Mapping[str, float],
        target_of: Callable[[str], float],
        *,
        top_k: int = 16,
        headroom_frac: float = 0.2,
        weights: Any = None,
    ) -> None:
        from qosched.policies.fairness.shares import fairness_term

        if top_k < 1:
            raise ValueError(f"SnapshotFairness.top_k must be >= 1 (got {top_k})")
        if not 0.0 < headroom_frac <= 1.0:
            raise ValueError(f"SnapshotFairness.headroom_frac must be in (0, 1] (got {headroom_frac})")
        self._term = fairness_term
        self.snapshot = snapshot
        self.normalised_qos = normalised_qos
        self.target_of = target_of
        self.top_k = top_k
        self.headroom_frac = headroom_frac
        self.weights = weights

    def headroom(self, slack_frac: float) -> float:
        """a(σ) = min(1, max(σ, 0)/σ_ref); 1 when the slack is unknown (no SLO on the device)."""
        if not np.isfinite(slack_frac):
            return 1.0
        return min(1.0, max(float(slack_frac), 0.0) / self.headroom_frac)

    def __call__(self, inputs: FairnessInputs) -> np.ndarray:
        m = inputs.rows.shape[0]
        out = np.full(m, np.nan)
        feasible = np.isfinite(inputs.base_score)
        if not feasible.any():
            return out
        order = np.argsort(-np.where(feasible, inputs.base_score, -np.inf), kind="stable")
        top = [int(i) for i in order[: min(self.top_k, int(feasible.sum()))]]
        state = inputs.state
        pod_class = inputs.pod.qos_class
        for i in top:
            classes: list[str] = []
            before: list[float] = []
            row = int(inputs.rows[i])
            factor = self.headroom(float(inputs.slack_frac[i]))
            for dev in inputs.devices[i]:
                if dev < 0:
                    continue
                for k in np.flatnonzero(state.svc_mask[row, dev]):
                    uid = state.svc_uid[row][dev][k] or ""
                    cls = state.svc_class[row][dev][k] or pod_class
                    classes.append(cls)
                    before.append(float(self.normalised_qos.get(uid, 1.0 / self.target_of(cls))))
            delta = self._term(
                self.snapshot,
                pod_class,
                factor / self.target_of(pod_class),
                classes,
                before,
                [b * factor for b in before],
                self.weights,
            )
            out[i] = float(delta.value)
        floor = np.nanmin(out[top])
        out[feasible & np.isnan(out)] = floor
        return out
