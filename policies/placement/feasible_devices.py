"""Which device(s) each candidate node takes, judging only what a decision needs.

The search drivers of the interference-aware policies, on top of
:func:`~qosched.policies.placement.interference.judge` (through a
:class:`~qosched.policies.placement.verdict_cache.VerdictCache` when the policy has one).
Predicting every device of every candidate would dominate decision time, so:

- :func:`first_feasible` walks each node's devices in the policy's preference order and stops at
  the first feasible one (a pass evaluates one device per unresolved node; most nodes resolve in
  the first pass). It returns exactly what "the most preferred feasible device" means.
- :func:`best_feasible` evaluates every eligible device, for policies that rank devices by their
  own prediction (least utilised, least utilisation added).
- :func:`all_devices` judges every eligible device and indexes the verdicts by (node, device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qosched.policies.placement.base import Reason
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.interference import DeviceVerdicts, InterferenceModel, NewService
from qosched.policies.placement.rows import row_any
from qosched.policies.placement.verdict_cache import VerdictCache, judge_with

__all__ = ["NodeVerdicts", "all_devices", "best_feasible", "first_feasible"]


@dataclass(frozen=True, slots=True)
class NodeVerdicts:
    """Per candidate (arrays (m,)): the outcome of choosing devices on each node.

    reason:  OK, or the reason of the device that came closest (the largest Reason code among
             the node's judged devices: the checks run memory → utilisation → front end → SLO).
    devices: (m, G) chosen devices, -1 where infeasible.
    latency_ms, utilization, utilization_before, slack_frac: of the chosen device (the worst
             over the chosen devices of a multi-device pod); NaN where infeasible.
    """

    reason: np.ndarray
    devices: np.ndarray
    latency_ms: np.ndarray
    utilization: np.ndarray
    utilization_before: np.ndarray
    slack_frac: np.ndarray


def _empty_nodes(m: int, g: int) -> NodeVerdicts:
    nan = np.full(m, np.nan)
    return NodeVerdicts(
        reason=np.zeros(m, dtype=np.int8),
        devices=np.full((m, g), -1, dtype=np.int64),
        latency_ms=nan.copy(),
        utilization=nan.copy(),
        utilization_before=nan.copy(),
        slack_frac=nan.copy(),
    )


def first_feasible(
    cand: Candidates,
    new: NewService,
    order_key: np.ndarray,
    eligible: np.ndarray,
    model: InterferenceModel,
    *,
    with_before: bool = False,
    cache: VerdictCache | None = None,
) -> NodeVerdicts:
    """Per node, the most preferred feasible device (smallest ``order_key``, ties → lower index).

    Parameters
    ----------
    order_key : (m, D) float
        The policy's device preference, lower first; finite where ``eligible``.
    eligible : (m, D) bool
        Devices that may be judged (rows of nodes already rejected: all False).

    Notes
    -----
    A node with G > 1 devices to occupy (a multi-GPU inference pod) is judged on all its eligible
    devices and takes the G most preferred feasible ones (each device carries rate/G).
    """
    m, d = eligible.shape
    g = max(1, cand.need)
    out = _empty_nodes(m, g)
    if g > 1:
        return _pick_from_all(cand, new, eligible, model, g, with_before, lambda v, where: order_key, cache)
    remaining = eligible.copy()
    any_eligible = row_any(eligible)
    unresolved = any_eligible.copy()
    worst_reason = np.zeros(m, dtype=np.int8)
    masked = np.array(order_key, dtype=np.float64)  # a copy: misses are struck out below
    if not remaining.all():
        np.copyto(masked, np.inf, where=~remaining)
    devices = out.devices[:, 0]  # a view (G = 1)
    for _ in range(d):
        rows = np.flatnonzero(unresolved)
        if rows.size == 0:
            break
        # (np.take, not fancy indexing: on (m, D) rows it is several times faster.)
        dev = np.argmin(masked if rows.size == m else masked.take(rows, axis=0), axis=1)
        v = judge_with(cache, cand, new, rows, dev, model, with_before=with_before)
        ok = v.reason == 0
        if ok.all():  # the usual case: every node fits on its preferred device
            devices[rows] = dev
            out.latency_ms[rows] = v.latency_ms
            out.utilization[rows] = v.utilization
            out.utilization_before[rows] = v.utilization_before
            out.slack_frac[rows] = v.slack_frac
            unresolved[rows] = False
            break
        hit = rows[ok]
        devices[hit] = dev[ok]
        out.latency_ms[hit] = v.latency_ms[ok]
        out.utilization[hit] = v.utilization[ok]
        out.utilization_before[hit] = v.utilization_before[ok]
        out.slack_frac[hit] = v.slack_frac[ok]
        miss = rows[~ok]
        worst_reason[miss] = np.maximum(worst_reason[miss], v.reason[~ok])
        masked[miss, dev[~ok]] = np.inf
        remaining[miss, dev[~ok]] = False
        unresolved[hit] = False
        unresolved[miss] = row_any(remaining.take(miss, axis=0))
    failed = any_eligible & (devices < 0)
    out.reason[failed] = worst_reason[failed]
    return out


def all_devices(
    cand: Candidates,
    new: NewService,
    eligible: np.ndarray,
    model: InterferenceModel,
    *,
    with_before: bool = False,
    cache: VerdictCache | None = None,
) -> tuple[DeviceVerdicts, np.ndarray]:
    """Judge every eligible device; returns the verdicts and a (m, D) index into them (-1: not judged)."""
    pos, dev = np.nonzero(eligible)
    v = judge_with(cache, cand, new, pos, dev, model, with_before=with_before)
    where = np.full(eligible.shape, -1, dtype=np.int64)
    where[pos, dev] = np.arange(pos.shape[0])
    return v, where


def best_feasible(
    cand: Candidates,
    new: NewService,
    eligible: np.ndarray,
    model: InterferenceModel,
    key: Callable[[DeviceVerdicts], np.ndarray],
    *,
    with_before: bool = False,
    cache: VerdictCache | None = None,
) -> NodeVerdicts:
    """Judge every eligible device; per node take the feasible one(s) with the smallest ``key``.

    ``key(verdicts) -> (E,)`` ranks judged devices from their own prediction (e.g. the device's
    utilisation before the pod, for least-loaded choice); ties go to the lower device index.
    """
    g = max(1, cand.need)

    def key_of(v: DeviceVerdicts, where: np.ndarray) -> np.ndarray:
        values = key(v) if v.pos.size else np.zeros(0)
        grid = np.full(where.shape, np.inf)
        judged = where >= 0
        grid[judged] = values[where[judged]]
        return grid

    return _pick_from_all(cand, new, eligible, model, g, with_before, key_of, cache)


def _pick_from_all(
    cand: Candidates,
    new: NewService,
    eligible: np.ndarray,
    model: InterferenceModel,
    g: int,
    with_before: bool,
    key_of: Callable[[DeviceVerdicts, np.ndarray], np.ndarray],
    cache: VerdictCache | None = None,
) -> NodeVerdicts:
    m = eligible.shape[0]
    out = _empty_nodes(m, g)
    v, where = all_devices(cand, new, eligible, model, with_before=with_before, cache=cache)
    reason_grid = np.where(where >= 0, v.reason[np.maximum(where, 0)] if v.pos.size else 0, 0)
    ok_grid = (where >= 0) & (reason_grid == 0)
    masked = np.where(ok_grid, key_of(v, where), np.inf)
    order = np.argsort(masked, axis=1, kind="stable")[:, :g]
    enough = ok_grid.sum(axis=1) >= g
    out.devices[:] = np.where(enough[:, None], order, -1)
    chosen_idx = np.take_along_axis(where, order, axis=1)
    for name, worst in (
        ("latency_ms", np.max),
        ("utilization", np.max),
        ("utilization_before", np.max),
        ("slack_frac", np.min),
    ):
        values = getattr(v, name)
        picked = values[np.maximum(chosen_idx, 0)] if values.size else np.full(chosen_idx.shape, np.nan)
        getattr(out, name)[:] = np.where(enough, worst(picked, axis=1), np.nan)
    failed = eligible.any(axis=1) & ~enough
    # With some devices feasible but fewer than G, report the worst reason among the others.
    worst_reason = reason_grid[failed].max(axis=1) if failed.any() else np.zeros(0, dtype=np.int8)
    out.reason[failed] = np.where(worst_reason == 0, int(Reason.INSUFFICIENT_GPU), worst_reason)
    return out
