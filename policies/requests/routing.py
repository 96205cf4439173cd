"""The request-routing policy interface of the request-level what-if, and its fixed baselines.

A routing policy sees one request at a time and answers where and with what to serve it::

    choose(ctx: RequestContext) -> Action | None     # None: the request is not served (dropped)
    observe(outcome: Outcome) -> None                # called when a served request completes

``observe`` is called at the request's completion time (delayed feedback, as in a live system:
an outcome is known only once the reply is back), always before the ``choose`` of any request
arriving later. Both the online learner (``qosched.policies.online``) and allocation policies
(INFIDA: an :class:`Action` may pin a ``node``) plug in here.

The context carries, per allowed action, what a live system can know at decision time: the
variant's accuracy, the current link (RTT, bandwidth) of the tier, the transfer time, the load
of the tier and the latency qosched's interference models predict for the variant on the tier's
least-loaded device (:func:`qosched.policies.latency.sharing.predict` on the dispatch rates
measured over a sliding window, refreshed every ``estimate_interval_s``).

Objective (:class:`Objective`, one source of truth for the learner's reward, ``best-static`` and
the regret plots)::

    reward = 1[response_ms <= slo_ms] - latency_weight * min(response_ms / slo_ms, cap)
             - accuracy_weight * accuracy_loss_pts

with ``latency_weight = 0.5``, ``cap = 2`` and ``accuracy_weight = 0.1`` per accuracy point by
default: meeting the SLO is worth 1, finishing in half the SLO rather than at it 0.25, and
one point of top-1 accuracy 0.1 (so a 4.3-point cheaper variant must save more than 86 % of the
SLO in latency, or turn a miss into a hit, to be preferred).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from qosched.policies.requests.scenario import Action, Scenario, ServiceDef

__all__ = [
    "ActionView",
    "AlwaysTier",
    "Greedy",
    "Objective",
    "Outcome",
    "RequestContext",
    "RoutingPolicy",
    "StaticRouting",
]


@dataclass(frozen=True, slots=True)
class Objective:
    """Reward of one served request (see the module docstring for the formula and weights)."""

    latency_weight: float = 0.5
    latency_cap: float = 2.0
    accuracy_weight: float = 0.1

    def reward(self, response_ms: float, slo_ms: float, accuracy_loss_pts: float) -> float:
        ratio = (
            min(response_ms / slo_ms, self.latency_cap) if math.isfinite(response_ms) else self.latency_cap
        )
        met = 1.0 if response_ms <= slo_ms else 0.0
        return met - self.latency_weight * ratio - self.accuracy_weight * accuracy_loss_pts

    @property
    def unserved_reward(self) -> float:
        """Reward of a dropped request: as bad as a miss at the cap."""
        return -self.latency_weight * self.latency_cap


@dataclass(frozen=True, slots=True)
class ActionView:
    """What is known of one action when a request arrives (see the module docstring)."""

    action: Action
    accuracy: float | None
    accuracy_loss_pts: float
    rtt_ms: float
    bandwidth_mbps: float
    transfer_ms: float
    device_ms: float
    utilization: float

    @property
    def predicted_ms(self) -> float:
        """Predicted response time: transfer + predicted time on the device [ms]."""
        return self.transfer_ms + self.device_ms


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One arriving request and its options (allowed actions only, in scenario order)."""

    index: int
    time_s: float
    service: ServiceDef
    input_kb: float
    options: tuple[ActionView, ...]

    def view(self, action: Action) -> ActionView | None:
        for v in self.options:
            if v.action.tier == action.tier and v.action.variant == action.variant:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A served request, reported to ``observe`` at its completion."""

    context: RequestContext
    action: Action
    node: str
    response_ms: float
    transfer_ms: float
    wait_ms: float
    service_ms: float
    accuracy: float | None
    accuracy_loss_pts: float
    reward: float

    @property
    def met(self) -> bool:
        return self.response_ms <= self.context.service.slo_ms

    @property
    def completion_s(self) -> float:
        return self.context.time_s + self.response_ms / 1000.0


@runtime_checkable
class RoutingPolicy(Protocol):
    """Per request: context → action; per completion: outcome → learning (see the module docstring)."""

    name: str

    def choose(self, ctx: RequestContext) -> Action | None: ...

    def observe(self, outcome: Outcome) -> None: ...


@dataclass
class StaticRouting:
    """Each service always takes one fixed action (``best-static`` is one of these)."""

    mapping: Mapping[str, Action]
    name: str = "static"

    def choose(self, ctx: RequestContext) -> Action | None:
        return self.mapping.get(ctx.service.name)

    def observe(self, outcome: Outcome) -> None:
        return None


@dataclass
class AlwaysTier:
    """``always-<tier>``: every request on one tier, most accurate allowed variant (no model choice)."""

    scenario: Scenario
    tier: str
    name: str = ""
    _cache: dict[str, Action | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or f"always-{self.tier}"

    def choose(self, ctx: RequestContext) -> Action | None:
        s = ctx.service.name
        if s not in self._cache:
            self._cache[s] = self.scenario.most_accurate(s, self.tier)
        return self._cache[s]

    def observe(self, outcome: Outcome) -> None:
        return None


@dataclass
class Greedy:
    """``greedy``: the option with the smallest predicted response (ties: more accurate).

    Every option already meets the accuracy floor; the prediction is the current estimate of the
    context (interference model on measured rates + transfer time). No learning.
    """

    name: str = "greedy"

    def choose(self, ctx: RequestContext) -> Action | None:
        if not ctx.options:
            return None
        best = min(ctx.options, key=lambda v: (v.predicted_ms, v.accuracy_loss_pts))
        return best.action

    def observe(self, outcome: Outcome) -> None:
        return None
