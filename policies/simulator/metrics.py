r"""Summaries of a replay: the contract's ``summary.json`` entry per policy, and per-pod rows.

Contract keys (``../shared/spec/contract.md`` §3), per policy:

``pods_total``
    Pods that arrived by the horizon.
``pods_scheduled``
    Of those, pods placed at least once.
``pods_failed``
    ``pods_total − pods_scheduled``: never placed by the horizon.
``gpu_allocation_ratio``
    Allocated milli-GPU / accelerator capacity at the horizon (the FGD paper's metric at the
    end of the inflated workload).
``services_total``, ``services_slo_met``
    Inference pods (model and SLO) that ran; of them, those whose every request-level
    checkpoint met the SLO (simulated latency, :mod:`.latency_checks`) — the Ibis paper's
    "applications hosted with no latency violation".
``mean_qos_by_class``, ``gini_by_class``
    Mean and Gini coefficient, per class, of the delivered QoS of the class's pods
    (:func:`delivered_qos`).
``penalty``
    Total SLA credit [USD] (:func:`qosched.policies.fairness.penalty.sla_credit_usd`).
``runtime_s``
    Wall time of the replay; the caller measures it (the core never reads a clock).

Delivered QoS of a pod (models.md §B, :mod:`qosched.policies.fairness.qos`):
:math:`Q = A \cdot a`, availability :math:`A = r / (t_{end} - t_{submit})` — running time over
time since submission, measured at its departure for a pod that completed and at the horizon
otherwise — times SLO attainment :math:`a` = the fraction of its latency checkpoints that met the
SLO (1 for pods without an SLO or never checked). A pod never placed has :math:`Q = 0`.

Extras (beyond the contract): ``pods_running_end``, ``pods_completed``, ``pods_pending_end``,
``failed_attempts``, ``preemptions``, ``penalty_by_class`` (SLA credits per class [USD]),
``below_target_by_class`` (pods whose delivered QoS ended below their class target),
``gpu_allocation_time_avg`` (the allocation ratio averaged
over time from the first event to the horizon), ``gpu_partial_free_frac`` (free milli-GPU on devices that are
partly allocated, over capacity: the fragmentation you can see without a workload model),
``allocation_curve`` (the FGD curve on a grid of arrived workload), ``latency_model`` (how far
the analytic latency models were from the simulation; ``by_mode``: their SLO agreement per sharing
mode), ``placed_by_class``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.fairness.gini import gini_by_class
from qosched.policies.fairness.penalty import ResourcePrices, price_per_hour_usd, sla_credit_usd
from qosched.policies.fairness.qos import availability, mean_by_class
from qosched.policies.simulator.latency_checks import DeviceCheck
from qosched.policies.simulator.replay import (
    COMPLETED,
    NOT_ARRIVED,
    PENDING,
    RUNNING,
    STATUS_NAMES,
    ReplayResult,
)
from qosched.policies.types import CPU_ACCELERATOR, GPU_MILLI_PER_DEVICE

__all__ = [
    "CONTRACT_KEYS",
    "PodOutcomes",
    "allocation_curve",
    "fgd_discrete_curve",
    "pod_outcomes",
    "summarize",
]

#: Keys of one policy's entry in ``summary.json``, in contract order.
CONTRACT_KEYS: tuple[str, ...] = (
    "pods_total",
    "pods_scheduled",
    "pods_failed",
    "gpu_allocation_ratio",
    "services_total",
    "services_slo_met",
    "mean_qos_by_class",
    "gini_by_class",
    "penalty",
    "runtime_s",
)


@dataclass(frozen=True, slots=True, eq=False)
class PodOutcomes:
    """Per-pod results of a replay, arrays in workload order (only arrived pods are meaningful).

    Attributes
    ----------
    arrived : ndarray of bool
    status : ndarray of str
        ``pending`` (never placed or evicted and not back), ``running``, ``completed``.
    elapsed_s : ndarray
        Time since submission at which QoS is measured (departure or horizon) [s].
    running_s : ndarray
        Running time up to then [s].
    availability, attainment, qos : ndarray
        :math:`A`, :math:`a`, :math:`Q = A a` (see the module docstring).
    is_service : ndarray of bool
        Inference pods (model and SLO).
    observations, slo_met_checks : ndarray of int
        Latency checkpoints that observed the pod, and those that met its SLO.
    simulated_ms, analytic_ms : ndarray
        Last checkpoint's simulated and analytic latency statistic [ms] (NaN: none).
    slo_met : ndarray of bool
        Ran, was observed, and met the SLO at every checkpoint (False for non-services).
    penalty_usd : ndarray
        SLA credit of each pod [USD].
    """

    arrived: np.ndarray
    status: np.ndarray
    elapsed_s: np.ndarray
    running_s: np.ndarray
    availability: np.ndarray
    attainment: np.ndarray
    qos: np.ndarray
    is_service: np.ndarray
    observations: np.ndarray
    slo_met_checks: np.ndarray
    simulated_ms: np.ndarray
    analytic_ms: np.ndarray
    slo_met: np.ndarray
    penalty_usd: np.ndarray


def pod_outcomes(
    result: ReplayResult,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    prices: ResourcePrices | None = None,
) -> PodOutcomes:
    """Delivered QoS, SLO verdicts and SLA credits of every pod (see the module docstring)."""
    lg = result.ledger
    pods = result.workload.pods
    n = len(pods)
    arrived = (lg.status != NOT_ARRIVED) & (lg.submit_s <= result.horizon_s)
    done = lg.status == COMPLETED
    at = np.where(done, lg.end_s, result.horizon_s)
    at = np.maximum(at, lg.submit_s)
    running = np.minimum(result.running_end_s, at - lg.submit_s)
    running = np.maximum(running, 0.0)
    avail = np.where(arrived, availability(lg.submit_s, running, at), 0.0)

    obs = np.zeros(n, dtype=np.int64)
    met_checks = np.zeros(n, dtype=np.int64)
    sim_ms = np.full(n, np.nan)
    ana_ms = np.full(n, np.nan)
    book = result.latency
    if book is not None:
        for uid, count in book.observations.items():
            i = lg.index.get(uid)
            if i is None:
                continue
            obs[i] = count
            met_checks[i] = book.met.get(uid, 0)
            last = book.last.get(uid)
            if last is not None:
                sim_ms[i] = last[0]
                ana_ms[i] = last[3]
    attainment = np.ones(n)
    np.divide(met_checks, obs, out=attainment, where=obs > 0)
    qos = avail * attainment
    is_service = np.array([p.is_inference for p in pods], dtype=bool)
    ran = ~np.isnan(lg.first_start_s)
    slo_met = is_service & ran & (obs > 0) & (met_checks == obs)

    targets = lg.target
    factors = np.array([classes.get(c).price_factor for c in lg.class_name.tolist()]) if n else np.zeros(0)
    price = price_per_hour_usd(
        [p.cpu_milli for p in pods],
        [p.memory_mib for p in pods],
        [p.gpu_milli for p in pods],
        prices,
        factors,
    )
    elapsed = np.maximum(at - lg.submit_s, 0.0)
    penalty = np.where(arrived, sla_credit_usd(np.clip(qos, 0.0, 1.0), elapsed, targets, price), 0.0)
    status = np.array([STATUS_NAMES[s] for s in lg.status.tolist()], dtype=object)
    return PodOutcomes(
        arrived=arrived,
        status=status,
        elapsed_s=elapsed,
        running_s=running,
        availability=avail,
        attainment=attainment,
        qos=qos,
        is_service=is_service,
        observations=obs,
        slo_met_checks=met_checks,
        simulated_ms=sim_ms,
        analytic_ms=ana_ms,
        slo_met=slo_met,
        penalty_usd=penalty,
    )


def allocation_curve(result: ReplayResult, step: float = 0.01) -> dict[str, list[float]]:
    """The FGD curve on a grid: allocation ratio after the last arrival with arrived ≤ x.

    ``x`` runs over multiples of ``step`` up to the final arrived workload (and that final
    point). Values are rounded to 6 decimals for the JSON summary.
    """
    x = result.curve_arrived_frac
    y = result.curve_allocated_frac
    if x.size == 0:
        return {"arrived": [], "allocated": []}
    end = float(x[-1])
    grid = np.arange(0.0, end + 1e-12, step)
    if grid.size == 0 or grid[-1] < end:
        grid = np.append(grid, end)
    pos = np.searchsorted(x, grid, side="right") - 1
    values = np.where(pos >= 0, y[np.maximum(pos, 0)], 0.0)
    return {
        "arrived": [round(float(v), 6) for v in grid],
        "allocated": [round(float(v), 6) for v in values],
    }


def fgd_discrete_curve(
    arrived_frac: np.ndarray, allocated_frac: np.ndarray, points: Sequence[int] = tuple(range(131))
) -> dict[int, float]:
    """The FGD curve sampled as the simulator's artifact samples it, in percent.

    ``experiments/analysis/merge_alloc_discrete.py`` (hkust-adsl/kubernetes-scheduler-simulator)
    reads one (arrived, allocated) record per submitted pod, rounds the arrived workload to a
    whole percent, and gives point x the **mean** allocation [%] over the records whose rounded
    arrived workload is x; with no such record, the mean over those within x ± 1; with none
    either, no value. So "130 % arrived" is the mean over the last pods, those that brought the
    arrived workload from 129.5 % to its end (≈ 130.0 %), not the final allocation alone.
    Python's ``round`` (half to even) as pandas applies it there.

    Parameters
    ----------
    arrived_frac, allocated_frac : (P,) arrays
        After each arrival: arrived GPU requests / capacity and allocated / capacity (fractions,
        :attr:`ReplayResult.curve_arrived_frac` / ``curve_allocated_frac``).
    points : sequence of int
        Arrived workload points [%] to sample.

    Returns
    -------
    dict
        Point [%] → allocation [%], rounded to 2 decimals (as the artifact rounds), for the
        points that have records.

    >>> fgd_discrete_curve(np.array([0.004, 0.006, 0.0149]), np.array([0.004, 0.005, 0.01]), [0, 1, 2])
    {0: 0.4, 1: 0.75, 2: 0.75}
    """
    arrived = np.round(100.0 * np.asarray(arrived_frac, dtype=np.float64), 0)
    allocated = np.round(100.0 * np.asarray(allocated_frac, dtype=np.float64), 2)
    out: dict[int, float] = {}
    for x in points:
        values = allocated[arrived == x]
        if values.size == 0:
            values = allocated[(arrived >= x - 1) & (arrived <= x + 1)]
        if values.size:
            out[int(x)] = round(float(values.mean()), 2)
    return out


def _gpu_rows(result: ReplayResult) -> np.ndarray:
    st = result.state
    accel = np.array([v.accelerator != CPU_ACCELERATOR for v in st.node_views], dtype=bool)
    return accel & st.schedulable


def _latency_model(result: ReplayResult) -> dict[str, Any]:
    """Analytic vs simulated latency over every checkpointed service (finite on both sides)."""
    book = result.latency
    if book is None or not book.checks:
        return {"checks": 0}
    sim = np.concatenate([c.simulated_ms for c in book.checks])
    ana = np.concatenate([c.analytic_ms for c in book.checks])
    slo = np.concatenate([c.slo_ms for c in book.checks])
    met = np.concatenate([c.slo_met for c in book.checks])
    both = np.isfinite(sim) & np.isfinite(ana) & (sim > 0)
    rel = np.abs(ana[both] - sim[both]) / sim[both]
    predicted_met = ana <= slo
    return {
        "checks": len(book.checks),
        "service_observations": int(sim.size),
        "simulations": book.simulations,
        "cache_hits": book.cache_hits,
        "mean_abs_rel_error": float(rel.mean()) if rel.size else None,
        "median_abs_rel_error": float(np.median(rel)) if rel.size else None,
        "p90_abs_rel_error": float(np.percentile(rel, 90)) if rel.size else None,
        "analytic_met_simulated_missed": int((predicted_met & ~met).sum()),
        "analytic_missed_simulated_met": int((~predicted_met & met).sum()),
        "by_mode": _agreement_by_mode(book.checks),
    }


def _agreement_by_mode(checks: Sequence[DeviceCheck]) -> dict[str, dict[str, int]]:
    """Per simulation mode (``cpu``, ``edgetpu``, ...): service observations, how many the model
    and the simulation each judge within SLO, how many they disagree on, and how many the
    simulation found saturated (issue 18: on CPU nodes the two used to disagree on all)."""
    out: dict[str, dict[str, int]] = {}
    for mode in sorted({c.mode for c in checks}):
        mine = [c for c in checks if c.mode == mode]
        sim = np.concatenate([c.simulated_ms for c in mine])
        analytic_met = np.concatenate([c.analytic_ms for c in mine]) <= np.concatenate(
            [c.slo_ms for c in mine]
        )
        met = np.concatenate([c.slo_met for c in mine])
        out[mode] = {
            "service_observations": int(sim.size),
            "analytic_met": int(analytic_met.sum()),
            "simulated_met": int(met.sum()),
            "disagree": int((analytic_met != met).sum()),
            "simulated_saturated": int(np.isinf(sim).sum()),
        }
    return out


#: QoS this far below its class target still counts as meeting it (float noise in r / t).
_BELOW_TARGET_TOL = 1e-12


def _round(value: float, digits: int = 6) -> float:
    return round(float(value), digits) if math.isfinite(value) else float(value)


def summarize(
    result: ReplayResult,
    *,
    runtime_s: float = 0.0,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    prices: ResourcePrices | None = None,
    outcomes: PodOutcomes | None = None,
) -> dict[str, Any]:
    """One policy's ``summary.json`` entry: the contract keys first, then the extras.

    Parameters
    ----------
    result : ReplayResult
    runtime_s : float
        Wall time of the replay, measured by the caller [s].
    classes : ClassConfig
        Targets and price factors of the classes.
    prices : ResourcePrices, optional
        For SLA credits (default: GCE list prices).
    outcomes : PodOutcomes, optional
        Pass it when already computed.
    """
    out = outcomes if outcomes is not None else pod_outcomes(result, classes, prices)
    lg = result.ledger
    arrived = out.arrived
    ran = arrived & ~np.isnan(lg.first_start_s)
    rows = _gpu_rows(result)
    st = result.state
    capacity = float(result.workload.capacity_gpu_milli)
    used = float(st.gpu_used_milli[rows].sum()) if capacity else 0.0
    partial = st.dev_exists & (st.gpu_used_milli > 0) & (st.gpu_used_milli < GPU_MILLI_PER_DEVICE)
    partial_free = float((GPU_MILLI_PER_DEVICE - st.gpu_used_milli)[partial & rows[:, None]].sum())
    cls = lg.class_name[arrived]
    services = out.is_service & ran
    summary: dict[str, Any] = {
        "pods_total": int(arrived.sum()),
        "pods_scheduled": int(ran.sum()),
        "pods_failed": int((arrived & ~ran).sum()),
        "gpu_allocation_ratio": _round(used / capacity) if capacity else 0.0,
        "services_total": int(services.sum()),
        "services_slo_met": int((services & out.slo_met).sum()),
        "mean_qos_by_class": {k: _round(v) for k, v in mean_by_class(out.qos[arrived], cls).items()}
        if cls.size
        else {},
        "gini_by_class": {k: _round(v) for k, v in gini_by_class(out.qos[arrived], cls).items()},
        "penalty": float(f"{float(out.penalty_usd.sum()):.6g}"),  # 6 significant digits [USD]
        "runtime_s": _round(runtime_s, 4),
    }
    status = lg.status
    placed_by_class = {
        str(c): int((ran & (lg.class_name == c)).sum()) for c in np.unique(lg.class_name[arrived])
    }
    below = arrived & (out.qos < lg.target - _BELOW_TARGET_TOL)
    penalty_by_class = {
        str(c): float(f"{float(out.penalty_usd[arrived & (lg.class_name == c)].sum()):.6g}")
        for c in np.unique(lg.class_name[arrived])
    }
    below_by_class = {
        str(c): int((below & (lg.class_name == c)).sum()) for c in np.unique(lg.class_name[arrived])
    }
    summary.update(
        {
            "pods_running_end": int((arrived & (status == RUNNING)).sum()),
            "pods_completed": int((arrived & (status == COMPLETED)).sum()),
            "pods_pending_end": int((arrived & (status == PENDING)).sum()),
            "failed_attempts": int(lg.failures.sum()),
            "preemptions": int(lg.preemptions.sum()),
            "placed_by_class": placed_by_class,
            "penalty_by_class": penalty_by_class,
            "below_target_by_class": below_by_class,
            "gpu_capacity_milli": int(capacity),
            "gpu_allocation_time_avg": _round(result.gpu_allocation_time_avg),
            "gpu_partial_free_frac": _round(partial_free / capacity) if capacity else 0.0,
            "horizon_s": _round(result.horizon_s, 3),
            "allocation_curve": allocation_curve(result),
            "latency_model": _latency_model(result),
            "replay_stats": dict(result.stats),
        }
    )
    return summary
