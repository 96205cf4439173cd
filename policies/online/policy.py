r"""``online``: the LinUCB learner as a request-routing policy, with safe and bounded exploration.

Per request (:meth:`OnlineRouting.choose`):

1. **Safe set.** Options whose predicted response (transfer + qosched's interference model on
   the measured load) exceeds ``safety_factor × SLO`` (default 1.5: a miss by a wide margin) are
   never explored. If every option is unsafe, the one with the smallest prediction is taken
   (no choice left; counted as ``forced``).
2. **Exploit / explore.** Among the safe options, ``exploit`` maximises the estimated objective
   :math:`\hat\theta_a^\top x_a - w_a \cdot \text{loss}_a` and ``ucb`` adds the width
   :math:`\alpha\sqrt{x_a^\top A_a^{-1}x_a}`. When they differ the UCB choice is an exploration
   step; it is taken only while the exploration budget has a token.
3. **Bounded exploration.** A token bucket: ``explore_rate`` tokens per request (default 0.05),
   at most ``explore_burst`` (default 20) saved; an exploration step spends one. Over T requests
   at most ``explore_rate·T + explore_burst`` are exploratory, so at worst that share of requests
   go to an action the estimates do not favour, and those are still within 1.5× the SLO by the
   model. The SLO attainment of the first ``learning_requests`` (default 2,000) is reported in
   :meth:`stats` as ``learning_slo_attainment``.

On each completion (:meth:`observe`) the latency part of the reward (:class:`~qosched.policies.
requests.routing.Objective`) updates the chosen action's statistics with the context the
decision saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qosched.policies.online.linucb import LinUCB, feature_vector
from qosched.policies.requests.routing import ActionView, Objective, Outcome, RequestContext
from qosched.policies.requests.scenario import Action

__all__ = ["OnlineRouting", "SafetyParams"]


@dataclass(frozen=True, slots=True)
class SafetyParams:
    """Safe-exploration knobs (see the module docstring)."""

    safety_factor: float = 1.5
    explore_rate: float = 0.05
    explore_burst: float = 20.0
    learning_requests: int = 2000


def option_features(view: ActionView, slo_ms: float) -> np.ndarray:
    """The learner's context of one option (``linucb.FEATURES``)."""
    return feature_vector(view.predicted_ms, view.transfer_ms, view.utilization, slo_ms)


@dataclass
class OnlineRouting:
    """Routing policy around a :class:`LinUCB` learner (see the module docstring)."""

    learner: LinUCB = field(default_factory=LinUCB)
    objective: Objective = field(default_factory=Objective)
    safety: SafetyParams = field(default_factory=SafetyParams)
    name: str = "online"
    tokens: float = 0.0
    decisions: int = 0
    explored: int = 0
    forced: int = 0
    learning_met: int = 0
    learning_seen: int = 0
    _features: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.tokens = self.safety.explore_burst

    def rank(self, ctx: RequestContext) -> tuple[list[ActionView], np.ndarray, np.ndarray]:
        """Safe options with their estimated objective and UCB width (no state change)."""
        slo = ctx.service.slo_ms
        safe = [v for v in ctx.options if v.predicted_ms <= self.safety.safety_factor * slo]
        if not safe:
            return [], np.zeros(0), np.zeros(0)
        x = np.stack([option_features(v, slo) for v in safe])
        mean, width = self.learner.scores(ctx.service.name, [v.action.key for v in safe], x)
        known = np.array([self.objective.accuracy_weight * v.accuracy_loss_pts for v in safe])
        return safe, mean - known, width

    def choose(self, ctx: RequestContext) -> Action | None:
        if not ctx.options:
            return None
        self.decisions += 1
        self.tokens = min(self.tokens + self.safety.explore_rate, self.safety.explore_burst)
        safe, value, width = self.rank(ctx)
        if not safe:
            self.forced += 1
            view = min(ctx.options, key=lambda v: v.predicted_ms)
        else:
            exploit = int(np.argmax(value))
            ucb = int(np.argmax(value + width))
            pick = exploit
            if ucb != exploit and self.tokens >= 1.0:
                self.tokens -= 1.0
                self.explored += 1
                pick = ucb
            view = safe[pick]
        self._features[ctx.index] = option_features(view, ctx.service.slo_ms)
        return view.action

    def observe(self, outcome: Outcome) -> None:
        ctx = outcome.context
        x = self._features.pop(ctx.index, None)
        if x is None:
            x = option_features(ctx.view(outcome.action) or ctx.options[0], ctx.service.slo_ms)
        latency_part = outcome.reward + self.objective.accuracy_weight * outcome.accuracy_loss_pts
        self.learner.update(ctx.service.name, outcome.action.key, x, latency_part)
        if ctx.index < self.safety.learning_requests:
            self.learning_seen += 1
            self.learning_met += int(outcome.met)

    def stats(self) -> dict[str, float]:
        """Exploration and learning-phase figures (reported in summary.json)."""
        return {
            "decisions": float(self.decisions),
            "explored": float(self.explored),
            "explored_share": self.explored / self.decisions if self.decisions else 0.0,
            "forced": float(self.forced),
            "learning_requests": float(self.learning_seen),
            "learning_slo_attainment": self.learning_met / self.learning_seen
            if self.learning_seen
            else float("nan"),
        }
