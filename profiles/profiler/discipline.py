r"""Which service discipline describes a CPU node? The profiler's runs against three candidates.

Issue 18: the request simulator and the latency model disagreed on CPU nodes. This module takes
a profiler run (``colocation.json``: k single-threaded model servers pinned to c cores, Poisson
load) and predicts every measured row with each candidate discipline, from the solo profile
(E[S], E[S²]) and the offered rates only:

``per_request_ps``
    Every *request* shares the c cores, at most one core each (limited processor sharing, the
    M/M/c-equivalent symmetric queue): the latency model before issue 18,
    :func:`~qosched.policies.latency.queueing.processor_sharing_queue` with ``cores = c``.
``one_ps_server``
    One egalitarian processor-sharing server for the whole node, whatever its cores: the request
    simulator before issue 18 (M/G/1-PS, E[Rᵢ] = Sᵢ/(1 − Σλⱼ Sⱼ)).
``fcfs_servers``
    One FCFS server per model, the busy servers sharing the c cores at min(1, c/B) each
    (:mod:`qosched.policies.latency.cpu_node`): qosched's model and simulator since issue 18.

Means are closed forms (the mean field for ``fcfs_servers``); :func:`simulated_p95_ms` adds
the 95th percentile of each discipline by exact simulation
(:func:`~qosched.policies.simulator.requests.shared_cores_sojourn_times`). Reads no file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from qosched.policies.latency.cpu_node import cpu_node_queue
from qosched.policies.latency.queueing import processor_sharing_latency_ms
from qosched.policies.simulator.requests import ServiceTime, shared_cores_sojourn_times

__all__ = ["DISCIPLINES", "DisciplineRow", "discipline_rows", "mape_pct", "simulated_p95_ms"]

#: The candidates, in the order of the tables.
DISCIPLINES: Final = ("per_request_ps", "one_ps_server", "fcfs_servers")


@dataclass(frozen=True, slots=True)
class DisciplineRow:
    """One model server in one run: measured and predicted by each discipline [ms]."""

    cores: int
    seed: int
    run_id: str
    kind: str
    level: float
    model: str
    instance: int
    servers: int
    offered_utilization: float
    background_cpu_cores: float
    measured_mean_ms: float
    measured_p95_ms: float
    inference_ratio: float  # mean time of one inference inside the run ÷ the solo profile's E[S]
    predicted_mean_ms: Mapping[str, float]


def _means(rates: list[float], mean: list[float], second: list[float], cores: int) -> dict[str, list[float]]:
    return {
        "per_request_ps": processor_sharing_latency_ms(rates, mean, cores=cores).tolist(),
        "one_ps_server": processor_sharing_latency_ms(rates, mean, cores=1).tolist(),
        "fcfs_servers": cpu_node_queue(rates, mean, second, cores=cores).latency_ms.tolist(),
    }


def discipline_rows(colocation: Mapping[str, Any]) -> list[DisciplineRow]:
    """Every member of every run of a CPU ``colocation.json`` with the three predictions.

    Raises
    ------
    ValueError
        Not a CPU run of the profiler.
    """
    if colocation.get("device") != "cpu":
        raise ValueError(f"not a CPU profiler run (device {colocation.get('device')!r})")
    cores = int(colocation["settings"]["servers"])
    seed = int(colocation["settings"].get("seed", 0))
    service = colocation["service_ms"]
    rows: list[DisciplineRow] = []
    for run in colocation["runs"]:
        members = run["members"]
        mean = [float(service[m["model"]]["mean"]) for m in members]
        second = [
            max(float(service[m["model"]]["second_moment"]), s * s)
            for m, s in zip(members, mean, strict=True)
        ]
        rates = [float(m["rate_rps"]) for m in members]
        predicted = _means(rates, mean, second, cores)
        for i, m in enumerate(members):
            rows.append(
                DisciplineRow(
                    cores=cores,
                    seed=seed,
                    run_id=str(run["id"]),
                    kind=str(run["kind"]),
                    level=float(run["level"]),
                    model=str(m["model"]),
                    instance=int(m["instance"]),
                    servers=len(members),
                    offered_utilization=float(m["offered_utilization"]),
                    background_cpu_cores=float(run.get("background_cpu_cores", math.nan)),
                    measured_mean_ms=float(m["latency_ms"]["mean"]),
                    measured_p95_ms=float(m["latency_ms"]["p95"]),
                    inference_ratio=float(m["service_ms"]["mean"]) / mean[i],
                    predicted_mean_ms={d: float(v[i]) for d, v in predicted.items()},
                )
            )
    return rows


def mape_pct(rows: Sequence[DisciplineRow], discipline: str) -> tuple[float, int]:
    """Mean |predicted − measured| / measured [%] over the rows the discipline bounds, and how
    many rows it calls unbounded (``inf``: saturated) though they were measured finite."""
    pred = np.array([r.predicted_mean_ms[discipline] for r in rows])
    meas = np.array([r.measured_mean_ms for r in rows])
    bounded = np.isfinite(pred)
    err = np.abs(pred[bounded] - meas[bounded]) / meas[bounded]
    return (float(100 * err.mean()) if err.size else math.nan), int((~bounded).sum())


def simulated_p95_ms(
    colocation: Mapping[str, Any], run_id: str, *, n_requests: int = 40_000, seed: int = 0
) -> dict[str, list[float]]:
    """p95 latency of each member of one run under each discipline, by exact simulation [ms].

    Service times: gamma matched to the solo E[S], E[S²]; Poisson arrivals at the run's rates;
    the first 10 % dropped. ``inf`` where the discipline is saturated.
    """
    run = next(r for r in colocation["runs"] if r["id"] == run_id)
    cores = int(colocation["settings"]["servers"])
    service = colocation["service_ms"]
    members = run["members"]
    rates = np.array([float(m["rate_rps"]) for m in members]) / 1000.0
    times = [
        ServiceTime.from_moments(
            float(service[m["model"]]["mean"]),
            max(float(service[m["model"]]["second_moment"]), float(service[m["model"]]["mean"]) ** 2),
        )
        for m in members
    ]
    rng = np.random.default_rng(seed)
    total = float(rates.sum())
    arrival = np.cumsum(rng.exponential(1.0 / total, n_requests))
    label = np.minimum(
        np.searchsorted(np.cumsum(rates / total), rng.random(n_requests), side="right"), len(members) - 1
    )
    size = np.empty(n_requests)
    for i, t in enumerate(times):
        size[label == i] = t.sample(rng, int((label == i).sum()))
    load = rates * np.array([t.mean_ms for t in times])
    setups = {
        "per_request_ps": (np.arange(n_requests), cores, bool(load.sum() < cores)),
        "one_ps_server": (np.arange(n_requests), 1, bool(load.sum() < 1)),
        "fcfs_servers": (label, cores, bool(load.sum() < cores and (load < 1).all())),
    }
    warm = n_requests // 10
    out: dict[str, list[float]] = {}
    for name, (server, c, stable) in setups.items():
        latency = shared_cores_sojourn_times(arrival, size, server, c)[warm:]
        kept = label[warm:]
        out[name] = [
            float(np.percentile(latency[kept == i], 95)) if stable else math.inf for i in range(len(members))
        ]
    return out
