r"""How much of β ``qosched`` gives CPU-only pods: less the more of the GPU demand is multi-GPU.

β (:func:`.score.balance`) scores how balanced a node's free CPU, memory and GPU fractions are
after the pod. For a CPU-only pod that means: go where the GPUs are used more than the CPU, and
use that CPU. On a workload of single-GPU pods this keeps CPU from being left on nodes whose
GPUs are gone (the default trace: +0.30 point over ``fgd``). But β measures balance against the
node's own capacity, not against what the pods still to come need per GPU: a multi-GPU pod asks
for a whole node's worth of GPUs *and* its CPU. On the upstream ``multigpu50`` variant (half of
the GPU demand in 2-, 4- and 8-GPU pods, seeds 42-45), with β on every pod the 8-GPU G2 nodes
ended with 3.1-3.3 of their 52.7 thousand cores free and 97-108 of their 4,392 GPUs (6-21
whole) stranded beside them; with β for the GPU pods only, 6.3-7.0 thousand cores and 83-93
GPUs: 97.44 % allocated against 97.15 % (``fgd``: 97.22 %; β for the CPU-only pods only:
96.78 %; docs/fgd-reproduction.md).

The multi-GPU share of the mix's GPU demand,

.. math::

    g = \frac{\sum_{t:\ n_t \ge 2} p_t\, n_t\, m_t}{\sum_{t:\ n_t \ge 1} p_t\, n_t\, m_t}

(popularity p, GPUs n and milli per GPU m of each shape t), sets the weight of β for CPU-only
pods to w_b·s with

.. math::

    s = \max(0,\ 1 - 2g):

β in full on a workload without multi-GPU pods (g = 0), off once multi-GPU pods carry half the
GPU demand (g ≥ 0.5); the factor 2 was chosen on ``multigpu50`` seeds 42-45, where β's weight
for CPU-only pods moved the mean monotonically (0.4, as before: 97.15 %; 0.2: 97.33; 0.1: 97.38;
0: 97.44; `fgd` 97.22).
On the trace pods g is 0.07 (default, cpu050), 0.07 / 0.03 / 0.03 / 0 (gpushare40 / 60 / 80 /
100), 0.20 (multigpu20) and 0.50 (multigpu50); the mix ``fgd`` and ``qosched`` hold keeps only
the popular shapes (``popularity_threshold``), and in it g is 0 on the six openb workloads of
this repo and on ``gpushare20`` and ``cpu200`` (their multi-GPU shapes are each rare: the same
decisions as before, bit for bit), 0.15 on ``multigpu20`` (s = 0.71) and 0.49 on
``multigpu50`` (s = 0.02). GPU pods keep β in full (β for them only: 97.44 % on ``multigpu50``).
"""

from __future__ import annotations

import numpy as np

from qosched.policies.placement.fgd.mix import WorkloadMix

__all__ = ["cpu_balance_scale", "multi_gpu_share"]


def multi_gpu_share(mix: WorkloadMix) -> float:
    """g: the share of the mix's GPU demand (Σ p·n·m) in shapes of two or more GPUs; 0 for a
    mix without GPU shapes.

    >>> multi_gpu_share(WorkloadMix.of([(4000, 1000, 8), (8000, 500, 1), (1000, 0, 0)], [0.1, 0.8, 0.1]))
    0.6666666666666666
    """
    if mix.empty:
        return 0.0
    n = np.fromiter((s.num_gpu for s in mix.shapes), np.float64, len(mix.shapes))
    m = np.fromiter((s.gpu_milli for s in mix.shapes), np.float64, len(mix.shapes))
    demand = np.asarray(mix.popularity, dtype=np.float64) * n * m
    total = float(demand.sum())
    return float(demand[n >= 2].sum()) / total if total > 0 else 0.0


def cpu_balance_scale(mix: WorkloadMix | None) -> float:
    """s = max(0, 1 − 2g), the factor on β's weight for CPU-only pods; 1 without a mix.

    >>> cpu_balance_scale(WorkloadMix.of([(8000, 500, 1), (1000, 0, 0)], [0.9, 0.1]))
    1.0
    >>> cpu_balance_scale(WorkloadMix.of([(4000, 1000, 2), (8000, 1000, 1)], [0.25, 0.5]))
    0.0
    """
    if mix is None:
        return 1.0
    return max(0.0, 1.0 - 2.0 * multi_gpu_share(mix))
