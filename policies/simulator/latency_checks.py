r"""Request-level latency checkpoints of a replay: simulate the services on a device, and predict them.

During a replay (:mod:`.replay`) the services co-located on a device change as pods come and go.
At a *checkpoint* the device's current services are handed to the request simulator
(:func:`qosched.policies.simulator.requests.simulate_device`) and, beside it, to the analytic
latency models the policies use (:func:`qosched.policies.latency.sharing.predict`), so a report
can say both whether each service met its SLO and how far the analytic prediction was off.

When checkpoints are taken (by the replay): just before an inference pod leaves its device
(departure or preemption) — its device is then at a local maximum of load, since arrivals only
add load and departures only remove it — and at the end of the replay for every device that
still hosts a service. Every service on the simulated device gets an observation, so a service
is judged at each moment its device was most loaded while it ran.

What a device simulation uses, from the ``ClusterState`` service slots (the very numbers the
policies decided with):

* mode: :func:`~qosched.policies.simulator.requests.mode_for` of the node's accelerator and
  sharing label (edge TPU swaps, time slicing, MPS/MIG shares, exclusive, CPU processor sharing);
* per service: Poisson rate λ (``svc_rate_rps``, already split over a multi-device pod's
  devices), the solo service-time distribution from the profile's mean and E[S²]
  (:meth:`ServiceTime.from_moments`: deterministic when E[S²] = E[S]², else gamma), the swap
  overhead (edge TPU only), the share (MPS; MIG rounded *down* to whole slices of 1/7, as the
  hardware does), the SLO and its percentile;
* the co-location slowdown the profiles state (``overhead_frac``, applied when two or more
  services are active, except on MIG/exclusive) and, under MPS, the analytic model's
  contention term ``ModelParams.mps_contention_frac`` per other active service — the simulator
  has no notion of either, so they are folded into the service time, as its docs ask.

A service also fails its SLO when the node's front end (CPU pre-processing, models.md §A) is
saturated, ``frontend_util >= 1``: requests then queue without bound before reaching the device.

Bounded cost: each device is simulated with ``SimConfig.n_requests`` requests (default here
20,000; 10 % warm-up), and results are cached by the device's exact service configuration, so a
cluster of many identical devices costs one simulation per distinct configuration. A ``cpu``
node is simulated and predicted with the same discipline,
:class:`~qosched.policies.latency.cpu_node.CpuNode` of
:func:`~qosched.policies.latency.cpu_node.cpu_cores` (``cpu_milli // 1000``, at least 1) cores:
one FCFS server per service, the busy servers sharing the cores (measured with the profiler,
docs/simulator-requests.md, "CPU nodes: model and simulator reconciled").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qosched.policies.latency.cpu_node import cpu_cores
from qosched.policies.latency.sharing import DeviceServices, ModelParams, predict, resolve_sharing
from qosched.policies.latency.tail import percentile_latency_ms
from qosched.policies.simulator.requests import (
    DeviceSpec,
    ServiceResult,
    ServiceSpec,
    ServiceTime,
    SimConfig,
    mode_for,
    simulate_device,
)
from qosched.policies.state import ClusterState
from qosched.policies.types import SHARING_MODES

__all__ = ["DEFAULT_SIM_CONFIG", "DeviceCheck", "LatencyBook", "check_device"]

#: Requests simulated per device checkpoint: p99 of 18,000 kept requests is stable to a few %.
DEFAULT_SIM_CONFIG = SimConfig(n_requests=20_000, warmup_frac=0.1, percentile=99.0)

_OWN_QUEUE = frozenset({"mps", "mig", "exclusive"})


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    """One checkpoint of one device: per service (arrays in slot order), simulated and analytic.

    Attributes
    ----------
    node, device : str, int
        Where.
    mode : str
        Simulation mode.
    uids : tuple of str
        Pods of the services.
    simulated_ms : ndarray
        Simulated latency statistic the SLO applies to (mean, or the SLO percentile) [ms].
    simulated_mean_ms, simulated_p99_ms : ndarray
        Simulated mean and p99 [ms] (``inf`` when saturated).
    analytic_ms : ndarray
        The analytic model's value of the same statistic [ms] (``inf`` when unbounded).
    slo_ms : ndarray
        Targets [ms] (``inf`` = none).
    slo_met : ndarray of bool
        Simulated statistic within target and front end not saturated (True without a target).
    utilization : float
        Offered load of the device's server (the largest over own-queue services) [-].
    frontend_util : float
        The node's front-end utilisation [-].
    """

    node: str
    device: int
    mode: str
    uids: tuple[str, ...]
    simulated_ms: np.ndarray
    simulated_mean_ms: np.ndarray
    simulated_p99_ms: np.ndarray
    analytic_ms: np.ndarray
    slo_ms: np.ndarray
    slo_met: np.ndarray
    utilization: float
    frontend_util: float


def _service_time(mean_ms: float, second_ms2: float, factor: float) -> ServiceTime:
    mean = mean_ms * factor
    second = max(second_ms2, mean_ms * mean_ms) * factor * factor
    return ServiceTime.from_moments(mean, second)


def check_device(
    state: ClusterState,
    row: int,
    device: int,
    rng: np.random.Generator,
    config: SimConfig = DEFAULT_SIM_CONFIG,
    params: ModelParams | None = None,
) -> DeviceCheck | None:
    """Simulate and predict the services on device ``device`` of node row ``row``; None if none.

    See the module docstring for what is simulated. ``rng`` is consumed only by the simulator.
    """
    params = params if params is not None else ModelParams()
    slots = np.flatnonzero(state.svc_mask[row, device])
    if slots.size == 0:
        return None
    view = state.node_views[row]
    sharing = SHARING_MODES[int(state.sharing_code[row])]
    mode = mode_for(view.accelerator, sharing)
    rate = state.svc_rate_rps[row, device, slots]
    mean = state.svc_service_ms[row, device, slots]
    second = state.svc_second_ms2[row, device, slots]
    swap = state.svc_swap_ms[row, device, slots]
    share = state.svc_share_frac[row, device, slots]
    slo = state.svc_slo_ms[row, device, slots]
    pct = state.svc_slo_percentile[row, device, slots]
    overhead = state.svc_overhead_frac[row, device, slots]
    uids = tuple(str(state.svc_uid[row][device][int(k)]) for k in slots)
    active = rate > 0
    n_active = int(active.sum())
    factor = np.ones(slots.size)
    if n_active >= 2 and mode not in ("mig", "exclusive"):
        factor = factor * (1.0 + params.colocation_overhead_frac + overhead)
    if mode == "mps":
        others = n_active - active.astype(int)
        factor = factor * (1.0 + params.mps_contention_frac * others)
    if mode == "mig":
        n = params.mig_slices_per_gpu
        share = np.clip(np.floor(share * n + 1e-9), 1, n) / n
    frontend = float(state.frontend_util[row])
    cores = int(cpu_cores(state.cpu_cap_milli[row]))

    # Analytic prediction, with the same arrays the policies judged (cores for the CPU model).
    services = DeviceServices.build(
        rate,
        mean,
        second_moment_ms2=np.maximum(second, mean * mean),
        swap_ms=swap,
        share_frac=share if mode in ("mps", "mig") else 1.0,
        overhead_frac=overhead,
        cores=cores,
    )
    prediction = predict(resolve_sharing(view.accelerator, sharing), services, params)
    analytic = prediction.latency_ms
    if np.isfinite(pct).any():
        analytic = percentile_latency_ms(prediction, pct)  # NaN entries: the mean

    if mode == "exclusive" and slots.size > 1:
        # Mode violated (never produced by a policy): every service fails, nothing to simulate.
        inf = np.full(slots.size, np.inf)
        return DeviceCheck(
            view.name, device, mode, uids, inf, inf, inf, analytic, slo, np.isinf(slo), math.inf, frontend
        )
    specs = tuple(
        ServiceSpec(
            name=f"{k}",
            rate_rps=float(rate[j]),
            service=_service_time(float(mean[j]), float(second[j]), float(factor[j])),
            swap_ms=float(swap[j]) if mode == "edgetpu" else 0.0,
            share_frac=float(share[j]) if mode in ("mps", "mig") else 1.0,
            slo_ms=None if not math.isfinite(slo[j]) else float(slo[j]),
            slo_percentile=None if math.isnan(pct[j]) else float(pct[j]),
        )
        for j, k in enumerate(slots.tolist())
    )
    result = simulate_device(
        DeviceSpec(mode, specs, name=f"{view.name}/{device}", cores=cores if mode == "cpu" else 1),
        rng,
        config,
    )
    sims: tuple[ServiceResult, ...] = result.services
    simulated = np.array([s.slo_latency_ms for s in sims])
    met = np.array([s.slo_met is not False for s in sims]) & (frontend < 1.0)
    met = met | np.isinf(slo)
    return DeviceCheck(
        node=view.name,
        device=device,
        mode=mode,
        uids=uids,
        simulated_ms=simulated,
        simulated_mean_ms=np.array([s.mean_latency_ms for s in sims]),
        simulated_p99_ms=np.array([s.percentile_latency_ms for s in sims]),
        analytic_ms=np.asarray(analytic, dtype=np.float64),
        slo_ms=slo,
        slo_met=met,
        utilization=float(max((s.utilization for s in sims), default=0.0)),
        frontend_util=frontend,
    )


def _config_key(state: ClusterState, row: int, device: int) -> tuple[object, ...]:
    slots = np.flatnonzero(state.svc_mask[row, device])
    arrays = (
        state.svc_rate_rps,
        state.svc_service_ms,
        state.svc_second_ms2,
        state.svc_swap_ms,
        state.svc_share_frac,
        state.svc_slo_ms,
        state.svc_slo_percentile,
        state.svc_overhead_frac,
    )
    values = tuple(a[row, device, slots].tobytes() for a in arrays)
    view = state.node_views[row]
    return (
        view.accelerator,
        int(state.sharing_code[row]),
        int(cpu_cores(state.cpu_cap_milli[row])),
        float(state.frontend_util[row]) >= 1.0,
        values,
    )


@dataclass(slots=True)
class LatencyBook:
    """Observations of every service over a replay (see the module docstring).

    Per pod uid: the number of checkpoints that observed it, how many met its SLO, and the last
    observation's values. ``checks`` keeps every device checkpoint (for the report).

    Parameters
    ----------
    rng : numpy.random.Generator
        Parent of the simulations' streams (one child per distinct configuration).
    config : SimConfig
        Requests per device simulation.
    params : ModelParams
        The analytic models' terms (default: the models the policies use by default).
    """

    rng: np.random.Generator
    config: SimConfig = DEFAULT_SIM_CONFIG
    params: ModelParams = field(default_factory=ModelParams)
    observations: dict[str, int] = field(default_factory=dict)
    met: dict[str, int] = field(default_factory=dict)
    last: dict[str, tuple[float, float, float, float, bool]] = field(default_factory=dict)
    checks: list[DeviceCheck] = field(default_factory=list)
    simulations: int = 0
    cache_hits: int = 0
    _cache: dict[tuple[object, ...], DeviceCheck] = field(default_factory=dict)

    def check(self, state: ClusterState, row: int, device: int) -> DeviceCheck | None:
        """Take a checkpoint of one device and record an observation for each of its services."""
        if not state.svc_mask[row, device].any():
            return None
        key = _config_key(state, row, device)
        cached = self._cache.get(key)
        if cached is None:
            # A fresh child stream per distinct configuration: a result depends only on the
            # parent's state and on how many distinct configurations came before it.
            (child,) = self.rng.spawn(1)
            found = check_device(state, row, device, child, self.config, self.params)
            if found is None:
                return None
            self._cache[key] = found
            self.simulations += 1
            result = found
        else:
            self.cache_hits += 1
            uids = tuple(
                str(state.svc_uid[row][device][int(k)]) for k in np.flatnonzero(state.svc_mask[row, device])
            )
            view = state.node_views[row]
            result = DeviceCheck(
                view.name,
                device,
                cached.mode,
                uids,
                cached.simulated_ms,
                cached.simulated_mean_ms,
                cached.simulated_p99_ms,
                cached.analytic_ms,
                cached.slo_ms,
                cached.slo_met,
                cached.utilization,
                cached.frontend_util,
            )
        self.checks.append(result)
        for j, uid in enumerate(result.uids):
            self.observations[uid] = self.observations.get(uid, 0) + 1
            ok = bool(result.slo_met[j])
            self.met[uid] = self.met.get(uid, 0) + int(ok)
            self.last[uid] = (
                float(result.simulated_ms[j]),
                float(result.simulated_mean_ms[j]),
                float(result.simulated_p99_ms[j]),
                float(result.analytic_ms[j]),
                ok,
            )
        return result

    def check_pod(self, state: ClusterState, uid: str) -> None:
        """Checkpoint every device a placed inference pod's services run on."""
        alloc = state.allocation(uid)
        if alloc is None or not alloc.pod.is_inference:
            return
        row = state.node_index[alloc.node]
        for d in alloc.devices:
            self.check(state, row, d)

    def check_all(self, state: ClusterState) -> None:
        """Checkpoint every device that hosts a service (the end of a replay)."""
        rows, devices = np.nonzero(state.svc_mask.any(axis=-1))
        for row, device in zip(rows.tolist(), devices.tolist(), strict=True):
            self.check(state, row, device)
