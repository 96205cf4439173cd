r"""``qosched``'s target workload for ΔF: shapes whose remainders nothing refills keep no GPU whole.

FGD's expected fragmentation (:mod:`qosched.policies.placement.fgd.score`) counts a device's free
milli f as usable by a single-GPU shape t wherever it fits (f ≥ mₜ), so it keeps whole GPUs for
every shape that needs one. A shape whose remainder 1000 − mₜ the rest of the workload cannot
refill wastes that remainder on every GPU it opens: on the Alibaba openb traces the 810-milli pod
(13 % of the default trace's pods, 30 % of ``gpushare100``'s) leaves 190 milli that only the
rare 160- and 110-milli pods fit. Keeping GPUs whole for it keeps them for waste; when capacity
runs short, it is better that such a pod finds no whole GPU and a mid-size pod (470, 320, 650:
remainders the workload refills) opened it.

The rule, per size class m (the single-GPU shapes with 0 < m < 1000 milli, whatever their CPU):
the class is **unrefillable** when fewer pods fit in its remainder than it leaves remainders,

.. math::

    \sum_{u:\ n_u = 1,\ m_u \le 1000 - m} p_u \;<\; \sum_{t:\ n_t = 1,\ m_t = m} p_t,

(popularities p, u over the single-GPU shapes, the class itself included when it fits its own
remainder: a 470-milli class refills itself). Most GPUs such a class opens keep their remainder
empty however the others are placed. On the six openb workloads only the 810-milli class is
unrefillable (its 190 milli fit the 160- and 110-milli pods, 1-3 % of the pods, against 13-30 %
for the 810s). An unrefillable
shape stays in the target workload with its popularity, but counts only through its CPU: it is
taken as satisfied on a node where its CPU fits and some GPU is free, i.e. its shape becomes
(cₜ, 1 milli, 1 GPU). FGD's CPU test for it stays (a node whose CPU falls below cₜ strands its
free GPU for it, as before); only the preference for keeping ≥ mₜ milli together goes. Dropping
the shape instead (renormalising the rest) or making it CPU-only (no CPU test) was worse
on ``gpushare80`` (docs/fgd-reproduction.md).

Where no shape is unrefillable, the mix is returned as it is (the same object: the same
decisions, bit for bit). Typed mixes (shapes constrained to GPU models) are left as they are.
"""

from __future__ import annotations

import copy

import numpy as np

from qosched.policies.placement.fgd.mix import PodShape, WorkloadMix
from qosched.policies.types import GPU_MILLI_PER_DEVICE

__all__ = ["refill_target", "unrefillable"]


def unrefillable(mix: WorkloadMix) -> np.ndarray:
    """Boolean mask over ``mix.shapes``: the single-GPU shapes of an unrefillable size class
    (module docstring's inequality).

    >>> mix = WorkloadMix.of(
    ...     [(3000, 810, 1), (4000, 810, 1), (1000, 160, 1), (8000, 470, 1)], [0.25, 0.05, 0.03, 0.67]
    ... )
    >>> unrefillable(mix).tolist()
    [True, True, False, False]
    """
    milli = np.fromiter((s.gpu_milli if s.num_gpu == 1 else 0 for s in mix.shapes), np.int64, len(mix.shapes))
    p = np.asarray(mix.popularity, dtype=np.float64)
    single = milli > 0
    # Σ p of the single-GPU shapes of at most x milli, for x = each shape's remainder.
    order = np.sort(milli[single])
    below = np.concatenate(([0.0], np.cumsum(p[single][np.argsort(milli[single], kind="stable")])))
    fits = below[np.searchsorted(order, GPU_MILLI_PER_DEVICE - milli, side="right")]
    classes, inverse = np.unique(milli, return_inverse=True)
    per_class = np.bincount(inverse, weights=p, minlength=classes.shape[0])[inverse]
    return single & (milli < GPU_MILLI_PER_DEVICE) & (fits < per_class)


def refill_target(mix: WorkloadMix) -> WorkloadMix:
    """``mix`` with each unrefillable shape counted through its CPU only, as (cₜ, 1, 1) with its
    popularity; ``mix`` itself where none is, or where the mix has typed shapes.

    Built from ``mix``'s tables, not from scratch (a learned mix changes with every pod, and
    rebuilding its tables cost about 1 ms): shape t's part of the g table, pₜ in the rows of
    CPU ≥ cₜ and the columns x ≥ mₜ, becomes pₜ in the columns x ≥ 1, i.e. pₜ is added to
    the columns 1..mₜ − 1 of those rows. The h table and the CPU rows are unchanged (same CPU
    requests). The same tables as :class:`WorkloadMix` builds for the new shapes, up to float
    rounding (``tests/policies/test_qosched_refill.py``).

    >>> mix = WorkloadMix.of([(3000, 810, 1), (1000, 160, 1), (8000, 470, 1)], [0.3, 0.03, 0.67])
    >>> [(s.cpu_milli, s.gpu_milli) for s in refill_target(mix).shapes]
    [(3000, 1), (1000, 160), (8000, 470)]
    >>> refill_target(WorkloadMix.of([(8000, 470, 1), (1000, 0, 0)], [1, 1])).shapes[0].gpu_milli
    470
    """
    if mix.empty or mix.models:
        return mix
    mask = unrefillable(mix)
    if not mask.any():
        return mix
    g = np.array(mix.g_table)  # a writable copy
    for i in np.flatnonzero(mask):
        shape = mix.shapes[i]
        first_row = int(np.searchsorted(mix.cpu_breaks, shape.cpu_milli)) + 1
        g[first_row:, 1 : shape.gpu_milli] += mix.popularity[i]
    g.setflags(write=False)
    target = copy.copy(mix)
    shapes = tuple(PodShape(s.cpu_milli, 1, 1) if bad else s for s, bad in zip(mix.shapes, mask, strict=True))
    object.__setattr__(target, "shapes", shapes)  # (a frozen dataclass: its own tables, set once)
    object.__setattr__(target, "g_table", g)
    return target
