"""Knobs of the ``qosched`` placement policy, in one frozen dataclass with documented defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qosched.policies.placement.interference import InterferenceModel

__all__ = ["QoschedConfig"]


@dataclass(frozen=True, slots=True)
class QoschedConfig:
    r"""Weights of the ``qosched`` score and the interference model it judges with.

    The raw score of a feasible node (higher is better) is

    .. math::

        s = -w_f\,\frac{\Delta F}{1000} + w_s\,\sigma + w_q\,\phi

    with ΔF the increase of expected fragmentation [milli-GPU] (FGD, models.md §F), σ the
    latency slack of the chosen device after placement, min over its services of
    (SLO − latency)/SLO ∈ (0, 1], and φ the QoS-fairness term of the fairness hook (higher =
    fairer; 0 without a hook).

    Attributes
    ----------
    frag_weight : float
        w_f, per GPU of expected fragmentation added. Default 1.0: avoiding one GPU's worth of
        stranded capacity is worth as much as the whole slack range, so packing decides between
        nodes with similar headroom and headroom decides between equally fragmenting ones.
    slack_weight : float
        w_s, per unit of relative slack. Default 1.0. Raising it spreads load (more headroom
        against rate bursts and model error); 0 gives FGD restricted to feasible nodes.
    fairness_weight : float
        w_q, per unit of the fairness term. Default 0.5: the fairness hook's values (change of
        min normalised QoS minus change of within-class Gini) are small differences, and
        fairness should break ties between good placements rather than override feasibility-
        preserving packing.
    popularity_threshold : float
        When the policy learns the workload mix itself (no ``mix``/``learner`` given), keep the
        shapes covering this fraction of pods seen (FGD simulator default for its experiments).
    interference : InterferenceModel
        Thresholds (0.8 each, the paper's) and latency-model parameters.
    """

    frag_weight: float = 1.0
    slack_weight: float = 1.0
    fairness_weight: float = 0.5
    popularity_threshold: float = 0.95
    interference: InterferenceModel = field(default_factory=InterferenceModel)

    def __post_init__(self) -> None:
        for name in ("frag_weight", "slack_weight", "fairness_weight"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"QoschedConfig.{name} must be a finite number >= 0 (got {value!r})")
        if not 0.0 < self.popularity_threshold <= 1.0:
            raise ValueError(
                f"QoschedConfig.popularity_threshold must be in (0, 1] (got {self.popularity_threshold!r})"
            )
