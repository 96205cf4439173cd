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
  (``normalised_qos`` by pod uid; a service missing from it counts as meeting its target, 1.0/target);
- their predicted normalised QoS with the pod there: unchanged where the device keeps positive
  latency slack (every accepted placement does: all SLOs are predicted met), 0 otherwise;
- the pod's own predicted normalised QoS: 1/target of its class when its SLO is predicted met.
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
        weights: Any = None,
    ) -> None:
        from qosched.policies.fairness.shares import fairness_term

        if top_k < 1:
            raise ValueError(f"SnapshotFairness.top_k must be >= 1 (got {top_k})")
        self._term = fairness_term
        self.snapshot = snapshot
        self.normalised_qos = normalised_qos
        self.target_of = target_of
        self.top_k = top_k
        self.weights = weights

    def __call__(self, inputs: FairnessInputs) -> np.ndarray:
        m = inputs.rows.shape[0]
        out = np.full(m, np.nan)
        feasible = np.isfinite(inputs.base_score)
        if not feasible.any():
            return out
        order = np.argsort(-np.where(feasible, inputs.base_score, -np.inf), kind="stable")
        top = [int(i) for i in order[: min(self.top_k, int(feasible.sum()))]]
        state = inputs.state
        pod_target = self.target_of(inputs.pod.qos_class)
        for i in top:
            classes: list[str] = []
            before: list[float] = []
            after: list[float] = []
            row = int(inputs.rows[i])
            kept = bool(inputs.slack_frac[i] > 0) if np.isfinite(inputs.slack_frac[i]) else True
            for dev in inputs.devices[i]:
                if dev < 0:
                    continue
                for k in np.flatnonzero(state.svc_mask[row, dev]):
                    uid = state.svc_uid[row][dev][k]
                    cls = state.svc_class[row][dev][k] or inputs.pod.qos_class
                    nq = self.normalised_qos.get(uid or "", 1.0 / self.target_of(cls))
                    classes.append(cls)
                    before.append(nq)
                    after.append(nq if kept else 0.0)
            delta = self._term(
                self.snapshot,
                inputs.pod.qos_class,
                1.0 / pod_target if kept else 0.0,
                classes,
                before,
                after,
                self.weights,
            )
            out[i] = float(delta.value)
        floor = np.nanmin(out[top])
        out[feasible & np.isnan(out)] = floor
        return out
