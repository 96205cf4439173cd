"""Skeletons shared by the policies: the interference-blind and the interference-aware flow.

Every policy is a small class with a ``name`` and an ``evaluate(state, pod, candidates)``; the
two flows below hold everything that is not the policy's own score, so each policy module is
its formula and its device order, nothing else.

Interference-blind flow (:class:`BlindPolicy`; ``default``, ``binpack``, ``knapsack-*``,
``random``, ``dot-product``, ``gpu-*``, ``best-fit``, ``fgd``):

1. :func:`~qosched.policies.placement.constraints.gather` — the common hard constraints;
2. the variant: the first of the pod's variants with a profile meeting ``min_accuracy`` (no SLO
   check: ignoring interference is what these baselines stand for);
3. ``score(cand, reason)`` — the policy's raw score and devices (it may reject more nodes, e.g.
   the knapsack baselines on device memory);
4. for inference pods, the latency the model predicts on the chosen device(s), for the
   ``qosched.io/predicted-latency-ms`` annotation (``predict_latency=False`` skips it).

Interference-aware flow (:class:`AwarePolicy`; ``ibis-*``, ``qosched``): the same, but for
inference pods each variant in preference order is judged with the latency models
(:mod:`~qosched.policies.placement.interference`) and a node takes the first variant that fits
there with every SLO met; pods without a model or SLO fall back to the blind flow with the
policy's own device order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qosched.policies.placement.base import Evaluation, Reason
from qosched.policies.placement.constraints import Candidates, evaluation, gather
from qosched.policies.placement.devices import by_key
from qosched.policies.placement.feasible_devices import NodeVerdicts, best_feasible, first_feasible
from qosched.policies.placement.interference import DeviceVerdicts, InterferenceModel, judge, new_service
from qosched.policies.placement.verdict_cache import VerdictCache
from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand

__all__ = [
    "AwarePolicy",
    "BlindPolicy",
    "Scored",
    "predicted_latency_ms",
]


@dataclass(frozen=True, slots=True)
class Scored:
    """A policy's answer for the candidates: raw score (m,), devices (m, G), extra arrays."""

    raw_score: np.ndarray
    devices: np.ndarray
    extras: dict[str, np.ndarray] | None = None


def predicted_latency_ms(
    cand: Candidates,
    devices: np.ndarray,
    variant: np.ndarray,
    ok: np.ndarray,
    model: InterferenceModel,
    cache: VerdictCache | None = None,
) -> np.ndarray:
    """Predicted latency of the pod on its chosen devices (worst over them), NaN where not ok."""
    out = np.full(cand.m, np.nan)
    if not cand.pod.is_inference or cand.variants is None:
        return out
    rows = np.flatnonzero(ok & (variant >= 0) & (devices[:, 0] >= 0))
    if rows.size == 0:
        return out
    new = new_service(cand, variant)
    worst = np.full(rows.size, -np.inf)
    for col in range(devices.shape[1]):
        v = (
            judge(cand, new, rows, devices[rows, col], model, screen_memory=False)
            if cache is None
            else cache.judge(cand, new, rows, devices[rows, col], model, screen_memory=False)
        )
        worst = np.maximum(worst, v.latency_ms)
    out[rows] = worst
    return out


class BlindPolicy:
    """Base of the interference-blind policies (see the module docstring)."""

    name: str = ""

    def __init__(self, *, predict_latency: bool = True, model: InterferenceModel | None = None) -> None:
        self.predict_latency = predict_latency
        self.model = model if model is not None else InterferenceModel()
        self.cache = VerdictCache()

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        cand = gather(state, pod, candidates)
        reason = cand.reason.copy()
        scored = self.score(cand, reason)
        ok = reason == 0
        # A policy must have found devices for every node it keeps.
        if cand.need > 0:
            reason[ok & (scored.devices[:, : cand.need] < 0).any(axis=1)] = int(Reason.INSUFFICIENT_GPU)
            ok = reason == 0
        variant = cand.first_variant
        latency = (
            predicted_latency_ms(cand, scored.devices, variant, ok, self.model, self.cache)
            if self.predict_latency
            else None
        )
        return evaluation(
            cand,
            policy=self.name,
            reason=reason,
            raw_score=scored.raw_score,
            devices=scored.devices,
            latency_ms=latency,
            variant=variant,
            extras=scored.extras,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class AwarePolicy:
    """Base of the interference-aware policies (see the module docstring).

    A subclass chooses how a node's device is picked among the feasible ones:

    - ``search = "first"``: ``device_order(cand) -> (m, D)`` ranks devices before any prediction
      (lower first); the node takes its most preferred feasible device, and devices after it are
      never predicted;
    - ``search = "all"``: every eligible device is predicted and ``verdict_key(verdicts) -> (E,)``
      ranks the feasible ones from their own prediction (e.g. least utilised);

    and scores nodes with ``node_score(cand, verdicts, variant) -> Scored`` from the outcome on
    each node's chosen devices. ``with_before`` asks the judge for the device utilisation
    without the pod too. Pods without a model and SLO have no interference to judge: they take
    ``blind_order`` and ``blind_score``.
    """

    name: str = ""
    search: str = "first"
    with_before: bool = False

    def __init__(self, *, model: InterferenceModel | None = None) -> None:
        self.model = model if model is not None else InterferenceModel()
        self.cache = VerdictCache()

    def device_order(self, cand: Candidates) -> np.ndarray:
        """(m, D) device preference, lower first (default: device index)."""
        return np.broadcast_to(np.arange(cand.device_ok.shape[1], dtype=np.float64), cand.device_ok.shape)

    def verdict_key(self, verdicts: DeviceVerdicts) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def blind_order(self, cand: Candidates) -> np.ndarray:
        return self.device_order(cand)

    def node_score(self, cand: Candidates, verdicts: NodeVerdicts, variant: np.ndarray) -> Scored:
        raise NotImplementedError  # pragma: no cover - abstract

    def blind_score(self, cand: Candidates, verdicts: NodeVerdicts) -> Scored:
        """Score of a pod without a model and SLO (``verdicts`` carry devices, no prediction)."""
        return self.node_score(cand, verdicts, cand.first_variant)

    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        cand = gather(state, pod, candidates)
        if not pod.is_inference or cand.variants is None:
            return self._blind(cand)
        verdicts, variant, reason = self.judge_variants(cand)
        scored = self.node_score(cand, verdicts, variant)
        extras = {
            "utilization": verdicts.utilization,
            "slack_frac": verdicts.slack_frac,
            **(scored.extras or {}),
        }
        if self.with_before:
            extras["utilization_before"] = verdicts.utilization_before
        return evaluation(
            cand,
            policy=self.name,
            reason=reason,
            raw_score=scored.raw_score,
            devices=verdicts.devices,
            latency_ms=verdicts.latency_ms,
            variant=variant,
            extras=extras,
        )

    def _choose(
        self, cand: Candidates, variant: int, nodes: np.ndarray, order: np.ndarray | None
    ) -> NodeVerdicts:
        eligible = cand.device_ok & nodes[:, None]
        new = new_service(cand, np.full(cand.m, variant, dtype=np.int64))
        if self.search == "all":
            return best_feasible(
                cand,
                new,
                eligible,
                self.model,
                self.verdict_key,
                with_before=self.with_before,
                cache=self.cache,
            )
        assert order is not None
        return first_feasible(
            cand, new, order, eligible, self.model, with_before=self.with_before, cache=self.cache
        )

    def judge_variants(self, cand: Candidates) -> tuple[NodeVerdicts, np.ndarray, np.ndarray]:
        """Per node, the first variant (preference order) with a feasible device; its verdicts.

        A node where no variant fits reports the reason of its first usable variant.
        """
        assert cand.variants is not None
        m = cand.m
        table = cand.variants
        order = self.device_order(cand) if self.search == "first" else None
        reason = cand.reason.copy()
        variant = np.full(m, -1, dtype=np.int64)
        pending = cand.ok.copy()
        first_reason = np.zeros(m, dtype=np.int8)
        tried = np.zeros(m, dtype=bool)
        combined: NodeVerdicts | None = None
        for v in range(table.n_variants):
            nodes = pending & table.usable(v)
            if not nodes.any():
                continue
            verdicts = self._choose(cand, v, nodes, order)
            combined = _first(verdicts) if combined is None else _merge(combined, verdicts, nodes)
            hit = nodes & (verdicts.devices[:, 0] >= 0)
            variant[hit] = v
            fresh = nodes & ~tried
            first_reason[fresh] = verdicts.reason[fresh]
            tried |= nodes
            pending &= ~hit
        failed = cand.ok & (variant < 0)
        reason[failed] = np.where(first_reason[failed] == 0, int(Reason.UTILIZATION), first_reason[failed])
        return (_no_verdicts(m, cand.columns) if combined is None else combined), variant, reason

    def _blind(self, cand: Candidates) -> Evaluation:
        """Pods without a model or SLO: hard constraints, the policy's device order, its score."""
        reason = cand.reason.copy()
        devices = by_key(self.blind_order(cand), cand.device_ok & cand.ok[:, None], cand.need)
        verdicts = _no_verdicts(cand.m, cand.columns)
        verdicts = NodeVerdicts(
            reason=verdicts.reason,
            devices=devices,
            latency_ms=verdicts.latency_ms,
            utilization=verdicts.utilization,
            utilization_before=verdicts.utilization_before,
            slack_frac=verdicts.slack_frac,
        )
        scored = self.blind_score(cand, verdicts)
        if cand.need > 0:
            reason[(reason == 0) & (devices[:, : cand.need] < 0).any(axis=1)] = int(Reason.INSUFFICIENT_GPU)
        return evaluation(
            cand,
            policy=self.name,
            reason=reason,
            raw_score=scored.raw_score,
            devices=devices,
            latency_ms=None,
            variant=cand.first_variant,
            extras=scored.extras,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _no_verdicts(m: int, g: int) -> NodeVerdicts:
    nan = np.full(m, np.nan)
    return NodeVerdicts(
        reason=np.zeros(m, dtype=np.int8),
        devices=np.full((m, g), -1, dtype=np.int64),
        latency_ms=nan,
        utilization=nan.copy(),
        utilization_before=nan.copy(),
        slack_frac=nan.copy(),
    )


def _first(b: NodeVerdicts) -> NodeVerdicts:
    """``_merge(_no_verdicts(...), b, nodes)`` for the first variant judged, without the copies.

    ``b`` already holds devices -1 and NaN values on every row where it found no device (rows
    outside ``nodes`` had nothing eligible), so only the reason differs: 0 on every row.
    """
    return NodeVerdicts(
        reason=np.zeros(b.reason.shape, dtype=np.int8),
        devices=b.devices,
        latency_ms=b.latency_ms,
        utilization=b.utilization,
        utilization_before=b.utilization_before,
        slack_frac=b.slack_frac,
    )


def _merge(a: NodeVerdicts, b: NodeVerdicts, take_b: np.ndarray) -> NodeVerdicts:
    """Rows ``take_b`` from ``b`` (those judged with a later variant), the rest from ``a``."""
    hit = take_b & (b.devices[:, 0] >= 0)
    keep = ~hit
    return NodeVerdicts(
        reason=np.where(keep, a.reason, b.reason),
        devices=np.where(keep[:, None], a.devices, b.devices),
        latency_ms=np.where(keep, a.latency_ms, b.latency_ms),
        utilization=np.where(keep, a.utilization, b.utilization),
        utilization_before=np.where(keep, a.utilization_before, b.utilization_before),
        slack_frac=np.where(keep, a.slack_frac, b.slack_frac),
    )
