r"""The ``qosched`` score of a candidate node: plain functions of the inputs the policy gathers.

As scheduler-plugins' ``computeScore``: the policy (:mod:`.policy`) gathers, per candidate node,
the fragmentation increase of its chosen devices, their latency slack, whether the node is
feasible and the fairness term; these functions turn them into the raw score, and nothing else
goes in. The score of a feasible node (higher is better) is

.. math::

    s = \underbrace{-w_f\,\frac{\Delta F}{1000} + w_s\,\sigma}_{b\ \text{(base)}} + w_q\,\phi

- ΔF [milli-GPU]: increase of the node's expected fragmentation with the pod on its chosen
  devices (FGD, models.md §F); ÷ 1000 makes it GPUs;
- σ ∈ (0, 1]: latency slack of the chosen device after placement, min over its services of
  (SLO − latency)/SLO; unknown (no SLO on the device: NaN) counts 0;
- φ: the fairness hook's term (higher = fairer; unknown/NaN counts 0; 0 without a hook). The
  hook sees the base b (it re-ranks the leaders of b), so b is computed first;
- w_f, w_s, w_q: :class:`~.config.QoschedConfig` ``frag_weight``, ``slack_weight``,
  ``fairness_weight``.

An infeasible node, or one whose b is not finite, scores −∞.
"""

from __future__ import annotations

import numpy as np

__all__ = ["base_score", "nan_to_zero", "qosched_score"]


def base_score(
    frag_delta_milli: np.ndarray,
    slack_frac: np.ndarray,
    feasible: np.ndarray,
    *,
    frag_weight: float,
    slack_weight: float,
) -> np.ndarray:
    """b = −w_f·ΔF/1000 + w_s·σ per candidate (σ NaN → 0); −∞ where infeasible or b is not finite."""
    base = -frag_weight * frag_delta_milli / 1000.0 + slack_weight * nan_to_zero(slack_frac)
    return np.where(feasible & np.isfinite(base), base, -np.inf)


def qosched_score(base: np.ndarray, fairness: np.ndarray, *, fairness_weight: float) -> np.ndarray:
    """s = b + w_q·φ per candidate, from :func:`base_score` and the fairness term φ (NaN → 0 first)."""
    return base + fairness_weight * fairness


def nan_to_zero(x: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(x, nan=0.0)`` for float arrays, in one pass where ``x`` has no infinity."""
    out = np.where(np.isnan(x), 0.0, x)
    if np.isinf(out).any():  # nan_to_num also clips ±inf to the largest finite floats
        return np.nan_to_num(x, nan=0.0)
    return out
