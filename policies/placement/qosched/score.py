r"""The ``qosched`` score of a candidate node: plain functions of the inputs the policy gathers.

As scheduler-plugins' ``computeScore``: the policy (:mod:`.policy`) gathers, per candidate node,
the fragmentation increase of its chosen devices, their latency slack, whether the node is
feasible and the fairness term; these functions turn them into the raw score, and nothing else
goes in. The score of a feasible node (higher is better) is

.. math::

    s = \underbrace{w_f\,f(\Delta F) + w_s\,\sigma + w_b\,\beta}_{b\ \text{(base)}} + w_q\,\phi,
    \qquad f(\Delta F) = \frac{\lfloor 100\,\mathrm{sigmoid}(-\Delta F/1000)\rfloor - 50}{25}

- ΔF [milli-GPU]: increase of the node's expected fragmentation with the pod on its chosen
  devices (FGD, models.md §F). f is FGD's own integer node score (the simulator's
  ``fgd_score.go``, :func:`~qosched.policies.placement.fgd.policy.simulator_score`) rescaled so
  that f ≈ −ΔF/1000 GPUs near 0, in steps of 0.04: placements whose ΔF differ by less than about
  40 milli-GPU tie on it (float differences below that mean nothing for the workload to come,
  and breaking them consistently packs; docs/fgd-reproduction.md);
- β ∈ [0, 1]: balance of what the node has left after the pod, 1 − (max − min) of its free
  CPU, memory and GPU fractions (GPU left out on nodes without GPU capacity): a node left with
  GPUs but no CPU or memory for the pods that need them strands those GPUs, which the
  fragmentation measure does not see for memory (FGD's measure has no memory) and sees only
  through the typical shapes' CPU. The policy gives it to pods without a latency target only
  (services keep σ as their tie-breaker);
- σ ∈ (0, 1]: latency slack of the chosen device after placement, min over its services of
  (SLO − latency)/SLO; unknown (no SLO on the device: NaN) counts 0;
- φ: the fairness hook's term (higher = fairer; unknown/NaN counts 0; 0 without a hook). The
  hook sees the base b (it re-ranks the leaders of b), so b is computed first;
- w_f, w_s, w_b, w_q: :class:`~.config.QoschedConfig` ``frag_weight``, ``slack_weight``,
  ``balance_weight``, ``fairness_weight``.

An infeasible node, or one whose b is not finite, scores −∞.
"""

from __future__ import annotations

import numpy as np

from qosched.policies.placement.fgd.policy import simulator_score

__all__ = ["balance", "base_score", "frag_term", "nan_to_zero", "qosched_score"]

#: One integer step of FGD's node score, in GPUs of f: 100·sigmoid'(0) = 25 steps per GPU.
_STEPS_PER_GPU = 25.0


def frag_term(frag_delta_milli: np.ndarray) -> np.ndarray:
    """f(ΔF) = (⌊100·sigmoid(−ΔF/1000)⌋ − 50)/25 [GPUs]; −∞ where ΔF is +∞.

    >>> frag_term(np.array([0.0, 40.0, -1000.0, 500.0])).tolist()
    [0.0, -0.04, 0.92, -0.52]
    """
    return (simulator_score(frag_delta_milli) - 50.0) / _STEPS_PER_GPU


def balance(cpu_free_frac: np.ndarray, mem_free_frac: np.ndarray, gpu_free_frac: np.ndarray) -> np.ndarray:
    """β = 1 − (max − min) of the free fractions per node; NaN fractions (no such resource on the
    node) are left out, and a node with at most one known fraction is balanced (β = 1).

    >>> balance(np.array([0.5, 0.25]), np.array([0.5, 0.75]), np.array([0.5, np.nan])).tolist()
    [1.0, 0.5]
    """
    stacked = np.stack([cpu_free_frac, mem_free_frac, gpu_free_frac]).astype(np.float64)
    known = ~np.isnan(stacked)
    hi = np.where(known, stacked, -np.inf).max(axis=0)
    lo = np.where(known, stacked, np.inf).min(axis=0)
    return np.where(known.sum(axis=0) >= 2, 1.0 - (hi - lo), 1.0)


def base_score(
    frag_delta_milli: np.ndarray,
    slack_frac: np.ndarray,
    feasible: np.ndarray,
    *,
    frag_weight: float,
    slack_weight: float,
    balance_frac: np.ndarray | None = None,
    balance_weight: float = 0.0,
) -> np.ndarray:
    """b = w_f·f(ΔF) + w_s·σ + w_b·β per candidate (σ NaN → 0; no β given → 0); −∞ where
    infeasible or b is not finite."""
    base = frag_weight * frag_term(frag_delta_milli) + slack_weight * nan_to_zero(slack_frac)
    if balance_frac is not None and balance_weight > 0:
        base = base + balance_weight * balance_frac
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
