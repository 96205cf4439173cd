"""The one policy interface behind `filter`, `prioritize`, `bind` and the what-if replay.

A policy *evaluates* a pod against a set of candidate nodes in one vectorised call and returns,
per candidate: feasible or not (and why), a raw score (higher is better), the devices it would
use there and the latency it predicts. Everything else derives from that one evaluation:

- ``filter``     keeps the feasible candidates, and gives every other one its reason;
- ``prioritize`` maps raw scores to the integers 0..10 kube-scheduler wants (:func:`scheduler_scores`);
- ``bind``       writes the devices/latency/variant of the node kube-scheduler chose;
- the simulator  places the pod on :func:`best_candidate`.

So no policy exists twice, and the extender and the simulator cannot disagree.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand

#: Scores kube-scheduler accepts from an extender (extender/v1: MaxExtenderPriority = 10).
MAX_SCHEDULER_SCORE = 10


class Reason(enum.IntEnum):
    """Why a node was rejected. Codes are stable (they label metrics); messages are for people."""

    OK = 0
    UNSCHEDULABLE = 1
    NO_ACCELERATOR = 2
    NO_PROFILE = 3
    ACCELERATOR_NOT_ALLOWED = 4
    TOO_FEW_DEVICES = 5
    INSUFFICIENT_GPU = 6
    INSUFFICIENT_CPU = 7
    INSUFFICIENT_MEMORY = 8
    DEVICE_MEMORY = 9
    UTILIZATION = 10
    FRONTEND = 11
    SLO_NEW = 12
    SLO_EXISTING = 13
    EXCLUSIVE_BUSY = 14
    ACCURACY = 15
    UNKNOWN_NODE = 16

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def resolvable_by_preemption(self) -> bool:
        """False when removing pods from the node cannot make it fit (FailedAndUnresolvableNodes)."""
        return self not in _UNRESOLVABLE


_MESSAGES: dict[Reason, str] = {
    Reason.OK: "fits",
    Reason.UNSCHEDULABLE: "node is not ready or is cordoned",
    Reason.NO_ACCELERATOR: "node has no qosched.io/accelerator label",
    Reason.NO_PROFILE: "no profile for this model on the node's accelerator",
    Reason.ACCELERATOR_NOT_ALLOWED: "the pod does not allow this accelerator type",
    Reason.TOO_FEW_DEVICES: "node has fewer devices than the pod asks for",
    Reason.INSUFFICIENT_GPU: "not enough free milli-GPU on any device",
    Reason.INSUFFICIENT_CPU: "not enough free CPU",
    Reason.INSUFFICIENT_MEMORY: "not enough free memory",
    Reason.DEVICE_MEMORY: "device memory would exceed its threshold",
    Reason.UTILIZATION: "device utilisation would exceed its threshold",
    Reason.FRONTEND: "front-end (CPU pre-processing) utilisation would exceed its threshold",
    Reason.SLO_NEW: "predicted latency of this pod would exceed its SLO",
    Reason.SLO_EXISTING: "a service already on the device would miss its SLO",
    Reason.EXCLUSIVE_BUSY: "device is exclusive and already in use",
    Reason.ACCURACY: "no model variant meets the minimum accuracy here",
    Reason.UNKNOWN_NODE: "node is not in the extender's cache",
}
_UNRESOLVABLE = frozenset(
    {
        Reason.UNSCHEDULABLE,
        Reason.NO_ACCELERATOR,
        Reason.NO_PROFILE,
        Reason.ACCELERATOR_NOT_ALLOWED,
        Reason.TOO_FEW_DEVICES,
        Reason.ACCURACY,
        Reason.UNKNOWN_NODE,
    }
)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A policy's verdict on every candidate node, as parallel arrays of length ``m``.

    node_idx:   indexes into the ``ClusterState`` rows of the candidates, in input order.
    reason:     ``Reason`` code per candidate (``Reason.OK`` where feasible).
    raw_score:  higher is better; compared only between feasible candidates.
    devices:    (m, G) device indexes chosen on each candidate, -1 padded (G = GPUs asked, ≥ 1).
    latency_ms: predicted latency of the pod there (inf/NaN where not predicted).
    variant:    index into ``pod.variants`` of the model chosen there (-1 when none).
    """

    node_idx: np.ndarray
    reason: np.ndarray
    raw_score: np.ndarray
    devices: np.ndarray
    latency_ms: np.ndarray
    variant: np.ndarray
    policy: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def feasible(self) -> np.ndarray:
        return self.reason == 0  # Reason.OK (a plain int compares several times faster)

    def __len__(self) -> int:
        return int(self.node_idx.shape[0])

    def take(self, pos: np.ndarray) -> Evaluation:
        """The evaluation at positions ``pos`` (in that order, repeats allowed); ``extras`` are
        dropped (they are the policy's per-call side outputs)."""
        return Evaluation(
            node_idx=self.node_idx[pos],
            reason=self.reason[pos],
            raw_score=self.raw_score[pos],
            devices=self.devices[pos],
            latency_ms=self.latency_ms[pos],
            variant=self.variant[pos],
            policy=self.policy,
        )


@runtime_checkable
class PlacementPolicy(Protocol):
    """What every placement policy and baseline provides (see the module docstring)."""

    name: str

    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        """Judge ``pod`` on the nodes ``candidates`` (int array of state row indexes). Pure."""
        ...


def scheduler_scores(evaluation: Evaluation) -> np.ndarray:
    """Map raw scores to kube-scheduler's integers 0..10, across the candidates of one call.

    score = round(10 · (raw − min) / (max − min)) over the feasible candidates; infeasible
    candidates score 0; when every feasible candidate ties they all score 10 (a scheduler
    summing weighted extender scores should not see "no preference" as "bad"). Deterministic.
    """
    out = np.zeros(len(evaluation), dtype=np.int64)
    ok = evaluation.feasible & np.isfinite(evaluation.raw_score)
    if not ok.any():
        return out
    raw = evaluation.raw_score[ok]
    lo, hi = float(raw.min()), float(raw.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        out[ok] = MAX_SCHEDULER_SCORE
    else:
        out[ok] = np.rint(MAX_SCHEDULER_SCORE * (raw - lo) / (hi - lo)).astype(np.int64)
    return out


def best_candidate(evaluation: Evaluation) -> int | None:
    """Position (in the evaluation) of the best feasible candidate; ties → the earliest. None if none."""
    ok = evaluation.feasible & np.isfinite(evaluation.raw_score)
    if not ok.any():
        return None
    masked = np.where(ok, evaluation.raw_score, -np.inf)
    return int(np.argmax(masked))


def policy_names() -> list[str]:
    """Every policy name (the table is :data:`qosched.policies.registry.POLICIES`)."""
    from qosched.policies import registry  # above this module: it imports every policy

    return registry.policy_names()


def make_policy(name: str, options: object = None, /, **fields: object) -> PlacementPolicy:
    """:func:`qosched.policies.registry.make_policy` (the one table of policies), reached lazily."""
    from qosched.policies import registry

    return registry.make_policy(name, options, **fields)
