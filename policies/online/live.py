"""The learner's live step in the controller process (pure): observations → update → decisions.

Each controller cycle, per service:

1. **Observe.** For each (tier, variant) with traffic in the Prometheus window the controller
   passes an :class:`ActionObservation`: the request rate and the rate-weighted mean latency of
   the pods serving it (time in the pod, from the serving histogram), plus the transfer time of
   the tier's link (``qosched.io/rtt-ms``, ``qosched.io/bandwidth-mbps``, ``qosched.io/input-kb``).
   The response is ``transfer_ms + latency_ms``; the learner is updated once per action and cycle
   with the latency part of the objective for that mean response, against the context the
   previous cycle's decision saw (:attr:`LiveDecision.contexts`, fed back by the caller).
2. **Decide.** The current context of each action uses the latest observation as its device
   latency (no observation: the caller's ``expected_device_ms``, e.g. the profile's service time).
   The ranking is :meth:`OnlineRouting.rank` (the offline policy's code: the same safe set, the
   same estimates). The exploit action gets ``1 − explore_share`` of the service's traffic and
   the UCB choice, when it differs, ``explore_share`` (default 5 %): exploration stays bounded
   by a fixed share of requests, the live counterpart of the token bucket.
3. **Act** (the shell): placement hints (the exploit tier and variant, with the weights) and
   HTTPRoute backend weights (the same weights, in integer percent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from qosched.policies.online.policy import OnlineRouting, option_features
from qosched.policies.requests.hints import PlacementHints, ServiceHint
from qosched.policies.requests.routing import ActionView, RequestContext
from qosched.policies.requests.scenario import Action, ServiceDef

__all__ = ["ActionObservation", "LiveAction", "LiveDecision", "live_step", "percent_weights"]


@dataclass(frozen=True, slots=True)
class LiveAction:
    """A (tier, variant) of a service that has serving pods, with what is known before observing."""

    tier: str
    variant: str
    accuracy: float | None
    transfer_ms: float
    expected_device_ms: float
    rtt_ms: float = 0.0
    bandwidth_mbps: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.tier}/{self.variant}"


@dataclass(frozen=True, slots=True)
class ActionObservation:
    """Prometheus' window for one action: request rate [1/s], mean latency in the pod [ms], utilisation."""

    service: str
    tier: str
    variant: str
    rate_rps: float
    latency_ms: float
    utilization: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.tier}/{self.variant}"


@dataclass
class LiveDecision:
    """What one step decided: hints, per-service weights, the contexts to feed back, a report."""

    hints: PlacementHints
    weights: dict[str, dict[str, float]]
    contexts: dict[tuple[str, str], np.ndarray]
    updates: list[dict[str, float | str]] = field(default_factory=list)


def _views(
    service: ServiceDef, actions: Sequence[LiveAction], seen: Mapping[str, ActionObservation]
) -> tuple[ActionView, ...]:
    accs = [a.accuracy for a in actions if a.accuracy is not None]
    best = max(accs) if accs else None
    views = []
    for a in actions:
        obs = seen.get(a.key)
        device = obs.latency_ms if obs is not None and math.isfinite(obs.latency_ms) else a.expected_device_ms
        loss = 0.0 if best is None or a.accuracy is None else max(best - a.accuracy, 0.0) * 100.0
        util = obs.utilization if obs is not None else 0.0
        views.append(
            ActionView(
                Action(a.tier, a.variant),
                a.accuracy,
                loss,
                a.rtt_ms,
                a.bandwidth_mbps,
                a.transfer_ms,
                device,
                util,
            )
        )
    return tuple(views)


def live_step(
    policy: OnlineRouting,
    services: Mapping[str, ServiceDef],
    actions: Mapping[str, Sequence[LiveAction]],
    observations: Sequence[ActionObservation],
    previous: Mapping[tuple[str, str], np.ndarray],
    now_s: float,
    explore_share: float = 0.05,
) -> LiveDecision:
    """One cycle (see the module docstring). ``policy.learner`` is updated in place."""
    by_service: dict[str, dict[str, ActionObservation]] = {}
    for obs in observations:
        if obs.rate_rps > 0 and not math.isnan(obs.latency_ms):
            by_service.setdefault(obs.service, {})[obs.key] = obs
    hints: dict[str, ServiceHint] = {}
    weights: dict[str, dict[str, float]] = {}
    contexts: dict[tuple[str, str], np.ndarray] = {}
    updates: list[dict[str, float | str]] = []
    for name, svc in sorted(services.items()):
        acts = list(actions.get(name, ()))
        if not acts:
            continue
        seen = by_service.get(name, {})
        for a in acts:
            seen_obs = seen.get(a.key)
            if seen_obs is None:
                continue
            response = a.transfer_ms + seen_obs.latency_ms
            u = policy.objective.reward(response, svc.slo_ms, 0.0)
            x = previous.get((name, a.key))
            if x is None:
                x = option_features(_views(svc, [a], seen)[0], svc.slo_ms)
            policy.learner.update(name, a.key, x, u)
            updates.append({"service": name, "action": a.key, "response_ms": response, "latency_part": u})
        ctx = RequestContext(0, now_s, svc, svc.input_kb, _views(svc, acts, seen))
        w = _weights(policy, ctx, explore_share)
        for v in ctx.options:
            contexts[(name, v.action.key)] = option_features(v, svc.slo_ms)
        top = max(w, key=w.__getitem__)
        tier, variant = top.split("/", 1)
        hints[name] = ServiceHint(tier, variant, w)
        weights[name] = w
    return LiveDecision(PlacementHints(hints, now_s, "online"), weights, contexts, updates)


def _weights(policy: OnlineRouting, ctx: RequestContext, explore_share: float) -> dict[str, float]:
    safe, value, width = policy.rank(ctx)
    if not safe:
        best = min(ctx.options, key=lambda v: v.predicted_ms)
        return {best.action.key: 1.0}
    exploit = int(np.argmax(value))
    ucb = int(np.argmax(value + width))
    if ucb == exploit or explore_share <= 0:
        return {safe[exploit].action.key: 1.0}
    return {safe[exploit].action.key: 1.0 - explore_share, safe[ucb].action.key: explore_share}


def percent_weights(weights: Mapping[str, float]) -> dict[str, int]:
    """Integer percentages summing to 100 (largest remainder), as HTTPRoute ``weight`` values."""
    total = sum(weights.values())
    if total <= 0:
        return {}
    raw = {k: 100.0 * v / total for k, v in weights.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    short = 100 - sum(out.values())
    for k in sorted(raw, key=lambda k: raw[k] - out[k], reverse=True)[:short]:
        out[k] += 1
    return out
