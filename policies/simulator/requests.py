r"""Request-level latency simulation of the inference services co-located on one device.

The analytic models (``../shared/spec/models.md`` §A: P-K for the edge TPU, M/M/1 for a
time-sliced GPU, ...) are approximations; this module simulates the same situation request by
request so that they can be checked, and so that the what-if replay can judge SLOs (mean or
percentile) without trusting them.

What is simulated
-----------------
Each service :math:`i` on a device receives a Poisson stream of rate :math:`\lambda_i`
(``rate_rps``). The streams are drawn as one Poisson process of rate :math:`\lambda = \sum_i
\lambda_i` whose requests are labelled :math:`i` with probability :math:`\lambda_i/\lambda`
(exactly the superposition of independent Poisson streams). Each request of service :math:`i`
needs a solo service time :math:`S` drawn from its :class:`ServiceTime`. The sharing mode decides
how requests share the device:

``time-slicing``
    One FCFS server for all requests of all services, in arrival order (the GPU interleaves the
    models' kernels; models.md approximates this queue as M/M/1).
``edgetpu``
    The same FCFS server, and a request of service :math:`i` also pays the swap overhead
    :math:`O_i` (``swap_ms``) when the previous request served was of another model (one model
    resident at a time; the device starts with none loaded, so the first request swaps).
``mps`` / ``mig``
    Each service has its own FCFS queue and a fraction ``share_frac`` of the device (SMs under
    MPS, a slice under MIG): its service times are stretched to :math:`S/share\_frac`, and the
    queues do not interact. Any contention term of an MPS model must be folded into the mean.
``exclusive``
    One service alone on its FCFS server.
``cpu``
    Egalitarian processor sharing (PS): the :math:`N(t)` requests present each progress at rate
    :math:`1/N(t)`.

FCFS queues are computed with the Lindley recursion
:math:`W_{n+1} = \max(0, W_n + S_n - (A_{n+1} - A_n))` in its closed, vectorised form: with
:math:`C_n = \sum_{k \le n} S_k` the departure time of request :math:`n` is

.. math:: D_n = \max(A_n, D_{n-1}) + S_n = C_n + \max_{k \le n}(A_k - C_{k-1}),

one ``np.cumsum`` and one ``np.maximum.accumulate`` (:func:`lindley_waits`); the plain loop
(:func:`lindley_waits_loop`) is kept as the reference. PS is simulated exactly by an event loop
over arrivals and departures (:func:`ps_sojourn_times`): a virtual clock :math:`V` with
:math:`dV/dt = 1/N(t)` is the service each present request has received, so a request arriving at
virtual time :math:`V_a` with size :math:`s` leaves when :math:`V = V_a + s`; departures come in
order of these tags, kept in a heap, O(n log n) in pure Python (not vectorised: the departure
order depends on the whole history).

Every request is simulated to completion, so no request is censored at the end of the horizon;
the first ``warmup_frac`` of the arrivals (all services together) are dropped from the statistics
(the queue starts empty).

Saturation
----------
The offered load :math:`\rho` of each server is known exactly from the inputs
(time-slicing and cpu: :math:`\sum_i \lambda_i E[S_i]`; edgetpu:
:math:`\sum_i \lambda_i (E[S_i] + (1 - \lambda_i/\lambda) O_i)`, the swap probability of a
Poisson-labelled FCFS stream being exactly :math:`1 - \lambda_i/\lambda`; mps/mig: per service
:math:`\lambda_i E[S_i]/share\_frac_i`). When :math:`\rho \ge 1` the latency has no stationary
value: the result then says ``saturated=True`` with ``mean_latency_ms``,
``percentile_latency_ms`` and ``slo_latency_ms`` all ``inf`` and ``slo_met=False``; the finite
horizon's sample mean, which keeps growing with the horizon, is still reported in
``horizon_mean_latency_ms``.

Services with rate 0
--------------------
They send no request (``count == 0``); their latencies describe a request that would arrive:
FCFS shared modes add the own service time (and, on an edge TPU, the swap when another model is
in use) to waits sampled from the other services' requests, which by PASTA are distributed as
the time-stationary wait; own-queue modes report :math:`S/share\_frac`; under PS sampled sizes
are stretched by the mean slowdown measured on the other requests, :math:`\sum T / \sum S`
(which is :math:`1/(1-\rho)` for M/G/1-PS, whose conditional mean is :math:`E[T|s] = s/(1-\rho)`;
the percentiles are then only indicative).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from qosched.policies.latency.cpu_node import CpuNode
from qosched.policies.types import CPU_ACCELERATOR, EDGETPU_ACCELERATORS, SHARING_MODES

__all__ = [
    "SIM_MODES",
    "DeviceResult",
    "DeviceSpec",
    "ServiceResult",
    "ServiceSpec",
    "ServiceTime",
    "SharedCoresQueue",
    "SimConfig",
    "SimMode",
    "lindley_waits",
    "lindley_waits_loop",
    "mode_for",
    "offered_load",
    "ps_sojourn_times",
    "shared_cores_sojourn_times",
    "simulate_device",
    "simulate_devices",
]

SimMode = Literal["time-slicing", "edgetpu", "mps", "mig", "exclusive", "cpu"]
#: Sharing modes the simulator knows (see the module docstring).
SIM_MODES: tuple[str, ...] = get_args(SimMode)
#: Modes in which every service has its own queue.
_OWN_QUEUE_MODES = frozenset({"mps", "mig", "exclusive"})


def mode_for(accelerator: str | None, sharing: str) -> SimMode:
    """Simulation mode of a device from its node's labels (contract §1).

    An edge TPU (``qosched.io/accelerator: edgetpu``) is ``edgetpu`` and a CPU node ``cpu``,
    whatever the sharing label; any other accelerator takes its ``qosched.io/sharing`` mode.

    >>> mode_for("edgetpu", "time-slicing"), mode_for("cpu", "time-slicing"), mode_for("nvidia-a100", "mig")
    ('edgetpu', 'cpu', 'mig')
    """
    if accelerator in EDGETPU_ACCELERATORS:
        return "edgetpu"
    if accelerator == CPU_ACCELERATOR:
        return "cpu"
    if sharing not in SHARING_MODES:
        raise ValueError(f"sharing must be one of {', '.join(SHARING_MODES)}, got {sharing!r}")
    return sharing  # type: ignore[return-value]


Family = Literal["deterministic", "exponential", "gamma", "lognormal", "empirical"]
_FAMILIES: tuple[str, ...] = get_args(Family)


def _positive_finite(value: float, what: str) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, eq=False)
class ServiceTime:
    r"""Distribution of one model's solo service time on a device [ms].

    Build it with :meth:`deterministic`, :meth:`exponential`, :meth:`from_moments` or
    :meth:`empirical`. Two moments (mean and :math:`E[S^2]`) fix the mean latency of an FCFS
    queue (Pollaczek-Khinchine); the family only shapes the tail (the percentiles).

    Attributes
    ----------
    mean_ms : float
        :math:`E[S]` [ms].
    second_moment_ms2 : float
        :math:`E[S^2]` [ms²].
    family : str
        ``deterministic``, ``exponential``, ``gamma``, ``lognormal`` or ``empirical``.
    samples_ms : ndarray or None
        The measured service times an ``empirical`` distribution resamples (read-only).
    """

    mean_ms: float
    second_moment_ms2: float
    family: Family
    samples_ms: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _positive_finite(self.mean_ms, "mean_ms")
        if self.family not in _FAMILIES:
            raise ValueError(f"family must be one of {', '.join(_FAMILIES)}, got {self.family!r}")
        if not math.isfinite(self.second_moment_ms2) or self.second_moment_ms2 < self.mean_ms**2 * (
            1 - 1e-12
        ):
            raise ValueError(
                f"second_moment_ms2 must be finite and >= mean_ms² = {self.mean_ms**2!r}, "
                f"got {self.second_moment_ms2!r}"
            )
        if (self.family == "empirical") != (self.samples_ms is not None):
            raise ValueError("samples_ms is given exactly for the empirical family")

    @classmethod
    def deterministic(cls, mean_ms: float) -> ServiceTime:
        """Every request takes ``mean_ms`` (models.md: the better fit for one model alone)."""
        mean = _positive_finite(mean_ms, "mean_ms")
        return cls(mean, mean * mean, "deterministic")

    @classmethod
    def exponential(cls, mean_ms: float) -> ServiceTime:
        """Exponential service, :math:`E[S^2] = 2 E[S]^2` (the M/M/1 assumption)."""
        mean = _positive_finite(mean_ms, "mean_ms")
        return cls(mean, 2.0 * mean * mean, "exponential")

    @classmethod
    def from_moments(
        cls, mean_ms: float, second_moment_ms2: float, family: Literal["gamma", "lognormal"] = "gamma"
    ) -> ServiceTime:
        r"""A two-parameter family matched to :math:`E[S]` and :math:`E[S^2]`.

        With the squared coefficient of variation :math:`c^2 = E[S^2]/E[S]^2 - 1`:

        * ``gamma`` (default): shape :math:`k = 1/c^2`, scale :math:`\theta = E[S] c^2`. Chosen as
          default because it contains the exponential (:math:`c^2 = 1`) exactly, tends to the
          deterministic as :math:`c^2 \to 0`, and has a lighter tail than the lognormal, so a p99
          judged on it is not dominated by a tail the profile never measured.
        * ``lognormal``: :math:`\sigma^2 = \ln(1 + c^2)`, :math:`\mu = \ln E[S] - \sigma^2/2`
          (heavier tail, for profiles with rare slow requests).

        :math:`c^2 = 0` gives :meth:`deterministic`.
        """
        mean = _positive_finite(mean_ms, "mean_ms")
        if family not in ("gamma", "lognormal"):
            raise ValueError(f"family must be gamma or lognormal, got {family!r}")
        if math.isfinite(second_moment_ms2) and abs(second_moment_ms2 - mean * mean) <= 1e-12 * mean * mean:
            return cls.deterministic(mean)
        return cls(mean, float(second_moment_ms2), family)

    @classmethod
    def empirical(cls, samples_ms: Sequence[float] | np.ndarray) -> ServiceTime:
        """Resample measured service times with replacement (a bootstrap of the profile)."""
        samples = np.array(samples_ms, dtype=np.float64).ravel()
        if samples.size == 0 or not np.all(np.isfinite(samples)) or samples.min() < 0:
            raise ValueError("samples_ms must be a non-empty array of finite service times >= 0")
        mean = float(samples.mean())
        if mean <= 0:
            raise ValueError("samples_ms must have a mean > 0")
        samples.setflags(write=False)
        return cls(mean, max(float(np.mean(samples * samples)), mean * mean), "empirical", samples)

    @property
    def scv(self) -> float:
        """Squared coefficient of variation :math:`c^2 = Var[S]/E[S]^2` [-]."""
        return max(self.second_moment_ms2 / (self.mean_ms * self.mean_ms) - 1.0, 0.0)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` service times [ms]."""
        if self.family == "deterministic":
            return np.full(size, self.mean_ms)
        if self.family == "exponential":
            return rng.exponential(self.mean_ms, size)
        if self.family == "empirical":
            assert self.samples_ms is not None
            return rng.choice(self.samples_ms, size)
        c2 = self.scv
        if self.family == "gamma":
            return rng.gamma(1.0 / c2, self.mean_ms * c2, size)
        sigma2 = math.log1p(c2)
        return rng.lognormal(math.log(self.mean_ms) - sigma2 / 2.0, math.sqrt(sigma2), size)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One inference service on a device, as the simulator needs it.

    Attributes
    ----------
    name : str
        Unique on the device.
    rate_rps : float
        Poisson arrival rate :math:`\\lambda_i` [requests/s], >= 0.
    service : ServiceTime
        Solo service time on this device [ms].
    swap_ms : float
        Edge TPU swap overhead :math:`O_i` [ms], paid when the previous request served was of
        another model; only in mode ``edgetpu``.
    share_frac : float
        Fraction of the device (MPS SMs, MIG slice) in (0, 1]; only in modes ``mps``/``mig``.
    slo_ms : float or None
        Latency target [ms]; None = no target (``slo_met`` is then None).
    slo_percentile : float or None
        Percentile (50..99.9) the target applies to; None = the mean.
    """

    name: str
    rate_rps: float
    service: ServiceTime
    swap_ms: float = 0.0
    share_frac: float = 1.0
    slo_ms: float | None = None
    slo_percentile: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.rate_rps) and self.rate_rps >= 0):
            problems.append(f"rate_rps must be a finite number >= 0, got {self.rate_rps!r}")
        if not (math.isfinite(self.swap_ms) and self.swap_ms >= 0):
            problems.append(f"swap_ms must be a finite number >= 0, got {self.swap_ms!r}")
        if not (math.isfinite(self.share_frac) and 0 < self.share_frac <= 1):
            problems.append(f"share_frac must be in (0, 1], got {self.share_frac!r}")
        if self.slo_ms is not None and not (math.isfinite(self.slo_ms) and self.slo_ms > 0):
            problems.append(f"slo_ms must be a finite number > 0, got {self.slo_ms!r}")
        if self.slo_percentile is not None and not 50.0 <= self.slo_percentile <= 99.9:
            problems.append(f"slo_percentile must be in 50..99.9, got {self.slo_percentile!r}")
        if problems:
            raise ValueError(f"service {self.name}: {'; '.join(problems)}")


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """The services sharing one device and how they share it.

    Attributes
    ----------
    mode : str
        One of :data:`SIM_MODES`.
    services : tuple of ServiceSpec
        Names unique; ``exclusive`` takes at most one.
    name : str
        Free label carried into the result (e.g. ``node-3/gpu0``).
    cores : int
        Mode ``cpu``: the node's whole cores c (:class:`~qosched.policies.latency.cpu_node.CpuNode`,
        :func:`~qosched.policies.latency.cpu_node.cpu_cores`); 1 in every other mode.
    """

    mode: SimMode
    services: tuple[ServiceSpec, ...]
    name: str = ""
    cores: int = 1

    def __post_init__(self) -> None:
        where = f"device {self.name}: " if self.name else ""
        if self.mode not in SIM_MODES:
            raise ValueError(f"{where}mode must be one of {', '.join(SIM_MODES)}, got {self.mode!r}")
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise ValueError(f"{where}cores must be an integer >= 1, got {self.cores!r}")
        if self.cores != 1 and self.mode != "cpu":
            raise ValueError(f"{where}cores applies only to mode cpu, not {self.mode}")
        names = [s.name for s in self.services]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}service names must be unique, got {names}")
        if self.mode == "exclusive" and len(self.services) > 1:
            raise ValueError(f"{where}mode exclusive holds one service, got {len(self.services)}")
        for s in self.services:
            if s.swap_ms > 0 and self.mode != "edgetpu":
                raise ValueError(
                    f"{where}service {s.name}: swap_ms applies only to mode edgetpu, not {self.mode}"
                )
            if s.share_frac != 1.0 and self.mode not in ("mps", "mig"):
                raise ValueError(
                    f"{where}service {s.name}: share_frac applies only to mps/mig, not {self.mode}"
                )


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Horizon and statistics of a simulation.

    Attributes
    ----------
    n_requests : int
        Arrivals simulated per device, all services together, warm-up included. 50,000 take
        ~5-10 ms per device in the FCFS modes and ~30-60 ms under PS (one core, see
        ``benchmarks/bench_request_sim.py``) and put one replication's mean within a few percent
        at moderate load; raise it near saturation, where the error grows like 1/(1 - ρ).
    warmup_frac : float
        Fraction of the first arrivals whose latencies are dropped (the queue starts empty).
    percentile : float
        Percentile reported in ``ServiceResult.percentile_latency_ms`` (0..100).
    probe_requests : int
        Requests sampled to describe a service of rate 0.
    """

    n_requests: int = 50_000
    warmup_frac: float = 0.1
    percentile: float = 99.0
    probe_requests: int = 2_000

    def __post_init__(self) -> None:
        if not (isinstance(self.n_requests, int) and self.n_requests >= 1):
            raise ValueError(f"n_requests must be an integer >= 1, got {self.n_requests!r}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        if not 0 <= self.percentile <= 100:
            raise ValueError(f"percentile must be in 0..100, got {self.percentile!r}")
        if not (isinstance(self.probe_requests, int) and self.probe_requests >= 1):
            raise ValueError(f"probe_requests must be an integer >= 1, got {self.probe_requests!r}")


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """Simulated latency of one service [ms].

    Attributes
    ----------
    name : str
    count : int
        Requests measured (after warm-up); 0 for a service of rate 0.
    mean_latency_ms : float
        Mean time on the device (queueing + swap + service); ``inf`` when saturated.
    percentile : float
        The percentile of ``percentile_latency_ms`` (``SimConfig.percentile``).
    percentile_latency_ms : float
        That percentile of the latency; ``inf`` when saturated.
    mean_wait_ms : float
        Mean latency minus the request's own (stretched) service and swap: the queueing delay in
        FCFS modes, the slowdown delay under PS; ``inf`` when saturated.
    slo_latency_ms : float
        The statistic the SLO applies to (the mean, or the ``slo_percentile``); ``inf`` when saturated.
    slo_met : bool or None
        ``slo_latency_ms <= slo_ms``; None when the service has no target.
    utilization : float
        Offered load ρ of the server its requests use [-] (see the module docstring).
    saturated : bool
        ρ >= 1: no stationary latency.
    horizon_mean_latency_ms : float
        Sample mean over the simulated horizon, finite even when saturated (it then grows with
        ``n_requests``).
    """

    name: str
    count: int
    mean_latency_ms: float
    percentile: float
    percentile_latency_ms: float
    mean_wait_ms: float
    slo_latency_ms: float
    slo_met: bool | None
    utilization: float
    saturated: bool
    horizon_mean_latency_ms: float


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """Simulated latencies of the services on one device, in the order of ``DeviceSpec.services``."""

    name: str
    mode: SimMode
    services: tuple[ServiceResult, ...]
    n_requests: int

    @property
    def all_slo_met(self) -> bool:
        """True when no service with a target missed it."""
        return all(s.slo_met is not False for s in self.services)


# ---------------------------------------------------------------------------------------------
# Queue kernels


def lindley_waits(arrival_ms: np.ndarray, service_ms: np.ndarray) -> np.ndarray:
    r"""Waiting times of an FCFS single-server queue, vectorised [ms].

    .. math:: W_n = D_n - S_n - A_n, \qquad D_n = C_n + \max_{k \le n}(A_k - C_{k-1}),
              \qquad C_n = \sum_{k \le n} S_k,

    which unrolls the Lindley recursion :math:`D_n = \max(A_n, D_{n-1}) + S_n` (the server is
    idle before the first arrival).

    Parameters
    ----------
    arrival_ms : ndarray
        Arrival times, non-decreasing [ms].
    service_ms : ndarray
        Service times (including any swap) [ms], >= 0.

    Returns
    -------
    ndarray
        :math:`W_n \ge 0` [ms].

    Examples
    --------
    >>> lindley_waits(np.array([0.0, 1.0, 2.0, 10.0]), np.array([3.0, 3.0, 1.0, 1.0])).tolist()
    [0.0, 2.0, 4.0, 0.0]
    """
    arrival = np.asarray(arrival_ms, dtype=np.float64)
    service = np.asarray(service_ms, dtype=np.float64)
    if arrival.shape != service.shape or arrival.ndim != 1:
        raise ValueError("arrival_ms and service_ms must be 1-D arrays of the same length")
    if arrival.size == 0:
        return np.zeros(0)
    done_before = np.cumsum(service) - service  # C_{n-1}
    departure = done_before + service + np.maximum.accumulate(arrival - done_before)
    return np.maximum(departure - service - arrival, 0.0)  # clip rounding below zero


def lindley_waits_loop(arrival_ms: np.ndarray, service_ms: np.ndarray) -> np.ndarray:
    """:func:`lindley_waits` as the plain recursion ``W[n+1] = max(0, W[n] + S[n] - (A[n+1] - A[n]))``.

    The reference the vectorised form is tested and benchmarked against.
    """
    arrival = np.asarray(arrival_ms, dtype=np.float64).tolist()
    service = np.asarray(service_ms, dtype=np.float64).tolist()
    waits = [0.0] * len(arrival)
    for n in range(1, len(arrival)):
        waits[n] = max(0.0, waits[n - 1] + service[n - 1] - (arrival[n] - arrival[n - 1]))
    return np.array(waits, dtype=np.float64)


def ps_sojourn_times(arrival_ms: np.ndarray, size_ms: np.ndarray) -> np.ndarray:
    r"""Sojourn times of an egalitarian processor-sharing server, exact event simulation [ms].

    With :math:`N(t)` requests present, each is served at rate :math:`1/N(t)`. The virtual time
    :math:`V(t)`, :math:`dV/dt = 1/N(t)` while :math:`N > 0`, is the service every present request
    has received since the start, so a request arriving at :math:`V_a` with size :math:`s` leaves
    when :math:`V = V_a + s`. The loop alternates the next arrival and the smallest tag in a heap:
    the next departure happens at real time :math:`t + (tag_{min} - V) N`.

    Parameters
    ----------
    arrival_ms : ndarray
        Arrival times, non-decreasing [ms].
    size_ms : ndarray
        Work of each request at the full device [ms], >= 0.

    Returns
    -------
    ndarray
        Departure minus arrival [ms].

    Examples
    --------
    Two requests of 2 ms at t = 0 and 1: alone until 1, then each at half speed; the first
    leaves at 3, the second (1 ms left) at 4.

    >>> ps_sojourn_times(np.array([0.0, 1.0]), np.array([2.0, 2.0])).tolist()
    [3.0, 3.0]
    """
    arrivals = np.asarray(arrival_ms, dtype=np.float64)
    sizes = np.asarray(size_ms, dtype=np.float64)
    if arrivals.shape != sizes.shape or arrivals.ndim != 1:
        raise ValueError("arrival_ms and size_ms must be 1-D arrays of the same length")
    arrival = arrivals.tolist()
    size = sizes.tolist()
    n = len(arrival)
    departure = [0.0] * n
    heap: list[tuple[float, int]] = []
    virtual = 0.0  # V: service received by each present request
    now = 0.0
    i = 0
    push, pop = heapq.heappush, heapq.heappop
    while i < n or heap:
        present = len(heap)
        if present and (i >= n or now + (heap[0][0] - virtual) * present < arrival[i]):
            tag, j = pop(heap)
            now += (tag - virtual) * present
            virtual = tag
            departure[j] = now
        else:
            t = arrival[i]
            if present:
                virtual += (t - now) / present
            now = t
            push(heap, (virtual + size[i], i))
            i += 1
    return np.array(departure) - arrivals


def shared_cores_sojourn_times(
    arrival_ms: np.ndarray, size_ms: np.ndarray, server: np.ndarray, cores: int
) -> np.ndarray:
    r"""Sojourn times of FCFS servers that share ``cores`` cores, exact event simulation [ms].

    Request :math:`n` joins the FCFS queue of server ``server[n]`` (one request in service at a
    time). The :math:`B(t)` servers that are busy each run at speed
    :math:`r(B) = \min(1, c/B)` of a full core (the OS spreads the runnable single-threaded
    processes over the c cores, at most one core each). All busy servers progress at the same
    speed, so a virtual clock :math:`V`, :math:`dV/dt = r(B(t))`, is the work each server in
    service has done: the request at the head of a server, started at :math:`V_s` with size
    :math:`s`, leaves when :math:`V = V_s + s`. Heads are kept in a heap of these tags
    (O(n log k) for k servers).

    Special cases: every request its own server (``server = arange(n)``) is limited processor
    sharing over c cores, :math:`\min(1, c/N)` per request; with ``cores = 1`` that is the
    egalitarian PS of :func:`ps_sojourn_times`; one server is the FCFS M/G/1 queue.

    Parameters
    ----------
    arrival_ms : ndarray
        Arrival times, non-decreasing [ms].
    size_ms : ndarray
        Work of each request at one full core [ms], >= 0.
    server : ndarray of int
        Server (queue) of each request.
    cores : int
        c >= 1.

    Returns
    -------
    ndarray
        Departure minus arrival [ms].

    Examples
    --------
    Two servers on one core, 2 ms requests at t = 0 and 1: they share the core from t = 1, so
    the first leaves at 3 and the second at 4 (as under PS). On two cores neither slows.

    >>> shared_cores_sojourn_times(np.array([0.0, 1.0]), np.array([2.0, 2.0]), np.array([0, 1]), 1).tolist()
    [3.0, 3.0]
    >>> shared_cores_sojourn_times(np.array([0.0, 1.0]), np.array([2.0, 2.0]), np.array([0, 1]), 2).tolist()
    [2.0, 2.0]

    The same two requests on ONE server queue: the second waits for the first (FCFS).

    >>> shared_cores_sojourn_times(np.array([0.0, 1.0]), np.array([2.0, 2.0]), np.array([0, 0]), 2).tolist()
    [2.0, 3.0]
    """
    arrivals = np.asarray(arrival_ms, dtype=np.float64)
    sizes = np.asarray(size_ms, dtype=np.float64)
    servers = np.asarray(server)
    if arrivals.shape != sizes.shape or arrivals.shape != servers.shape or arrivals.ndim != 1:
        raise ValueError("arrival_ms, size_ms and server must be 1-D arrays of the same length")
    node = CpuNode(cores)
    labels, index = np.unique(servers, return_inverse=True)
    if len(labels) <= node.cores:  # never more servers busy than cores: each its own FCFS queue
        return _own_queues(arrivals, sizes, index.reshape(-1), len(labels))
    departure, _ = _shared_cores_run(arrivals, sizes, servers, node.speeds(len(labels)))
    return departure - arrivals


def _own_queues(arrival: np.ndarray, size: np.ndarray, label: np.ndarray, servers: int) -> np.ndarray:
    """Sojourn times when every server has a core to itself: one Lindley recursion per server
    (:func:`lindley_waits`, vectorised), exactly what the event loop gives when B <= c always."""
    latency = np.empty(arrival.size)
    for j in range(servers):
        on = label == j
        latency[on] = lindley_waits(arrival[on], size[on]) + size[on]
    return latency


def _shared_cores_run(
    arrivals: np.ndarray, sizes: np.ndarray, servers: np.ndarray, speeds: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The event loop of :func:`shared_cores_sojourn_times`: departure times [ms], and the time
    [ms] spent with B = 0, 1, ... servers busy (``speeds[B]`` is their speed)."""
    arrival = arrivals.tolist()
    size = sizes.tolist()
    label = servers.tolist()
    n = len(arrival)
    departure = [0.0] * n
    time_at = [0.0] * len(speeds)
    heap: list[tuple[float, int]] = []  # (tag, request) of the request in service at each busy server
    waiting: dict[int, deque[int]] = {}  # requests queued behind the one in service, per busy server
    virtual = 0.0  # V: work done by each request in service since the start
    now = 0.0
    i = 0
    push, pop = heapq.heappush, heapq.heappop
    while i < n or heap:
        busy = len(heap)
        speed = speeds[busy]
        if busy and (i >= n or now + (heap[0][0] - virtual) / speed < arrival[i]):
            tag, j = pop(heap)
            step = (tag - virtual) / speed
            virtual = tag
            departure[j] = now + step
            queue = waiting[label[j]]
            if queue:
                k = queue.popleft()
                push(heap, (virtual + size[k], k))
            else:
                del waiting[label[j]]
        else:
            step = arrival[i] - now
            virtual += step * speed if busy else 0.0
            behind = waiting.get(label[i])
            if behind is None:  # its server was idle: it starts now
                waiting[label[i]] = deque()
                push(heap, (virtual + size[i], i))
            else:
                behind.append(i)
            i += 1
        time_at[busy] += step
        now += step
    return np.array(departure), np.array(time_at)


class SharedCoresQueue:
    r""":func:`shared_cores_sojourn_times`'s discipline one request at a time, for a caller that decides online.

    The request-routing what-if (:mod:`qosched.policies.requests.engine`) picks each request's
    node from the state its earlier choices left, so it cannot hand the kernel a whole trace.
    This is the same event loop (virtual clock :math:`dV/dt = r(B)`, heads keyed by their finish
    tag, :meth:`CpuNode.speeds <qosched.policies.latency.cpu_node.CpuNode.speeds>` for r), fed by
    :meth:`arrive` and run forward by :meth:`advance`, which reports the requests that left.
    Arrivals may be announced out of time order (different transfer delays) but never before
    the clock; equal times are served in announcement order. Fed a trace in order it gives the
    kernel's times (``tests/policies/test_cpu_node.py``).
    """

    def __init__(self, cores: int, servers: int) -> None:
        self.speeds = CpuNode(cores).speeds(max(1, servers))
        self.now_ms = 0.0
        self._virtual = 0.0
        self._heads: list[
            tuple[float, int]
        ] = []  # (finish tag, key) of the request in service per busy server
        self._waiting: dict[int, deque[int]] = {}  # per busy server, the keys queued behind its head
        self._coming: list[tuple[float, int, int]] = []  # (arrival, sequence, key) not yet arrived
        self._size: dict[int, float] = {}
        self._server: dict[int, int] = {}
        self._start: dict[int, float] = {}
        self._sequence = 0

    def arrive(self, key: int, time_ms: float, size_ms: float, server: int) -> None:
        """Announce request ``key`` (unique) arriving at ``time_ms`` >= the clock, ``size_ms`` of work for ``server``."""
        if time_ms < self.now_ms:
            raise ValueError(f"arrival at {time_ms} ms is before the queue's clock {self.now_ms} ms")
        if not 0 <= server < len(self.speeds) - 1:
            raise ValueError(f"server {server} is not one of the queue's {len(self.speeds) - 1}")
        self._size[key], self._server[key] = float(size_ms), server
        heapq.heappush(self._coming, (float(time_ms), self._sequence, key))
        self._sequence += 1

    def backlog_ms(self, server: int) -> float:
        """Work [ms at one core] at ``server``: what its head has left, its queue, and announced arrivals."""
        left = sum(tag - self._virtual for tag, k in self._heads if self._server[k] == server)
        queued = sum(self._size[k] for k in self._waiting.get(server, ()))
        coming = sum(self._size[k] for _, _, k in self._coming if self._server[k] == server)
        return left + queued + coming

    @property
    def busy(self) -> int:
        """Servers busy now."""
        return len(self._heads)

    def advance(self, until_ms: float) -> list[tuple[int, float, float]]:
        """Run the clock to ``until_ms``; returns (key, start [ms], departure [ms]) of every request that left."""
        left: list[tuple[int, float, float]] = []
        while True:
            speed = self.speeds[len(self._heads)]
            leave = self.now_ms + (self._heads[0][0] - self._virtual) / speed if self._heads else math.inf
            come = self._coming[0][0] if self._coming else math.inf
            if min(leave, come) > until_ms or not (self._heads or self._coming):
                break
            if leave < come:  # as the kernel: a departure strictly before the next arrival goes first
                tag, key = heapq.heappop(self._heads)
                self._virtual, self.now_ms = tag, leave
                left.append((key, self._start.pop(key), leave))
                self._next(self._server.pop(key))
                del self._size[key]
            else:
                if self._heads:
                    self._virtual += (come - self.now_ms) * speed
                self.now_ms = come
                self._join(heapq.heappop(self._coming)[2])
        if until_ms > self.now_ms and math.isfinite(until_ms):
            if self._heads:
                self._virtual += (until_ms - self.now_ms) * self.speeds[len(self._heads)]
            self.now_ms = until_ms
        return left

    def _join(self, key: int) -> None:
        server = self._server[key]
        behind = self._waiting.get(server)
        if behind is None:  # its server was idle: it starts now
            self._waiting[server] = deque()
            self._start[key] = self.now_ms
            heapq.heappush(self._heads, (self._virtual + self._size[key], key))
        else:
            behind.append(key)

    def _next(self, server: int) -> None:
        queue = self._waiting[server]
        if queue:
            key = queue.popleft()
            self._start[key] = self.now_ms
            heapq.heappush(self._heads, (self._virtual + self._size[key], key))
        else:
            del self._waiting[server]


# ---------------------------------------------------------------------------------------------
# Device simulation


def offered_load(device: DeviceSpec) -> np.ndarray:
    r"""Offered load ρ of the server each service's requests use [-], one per service.

    time-slicing: :math:`\sum_j \lambda_j E[S_j]` (one shared server);
    edgetpu: :math:`\sum_j \lambda_j (E[S_j] + (1 - \lambda_j/\lambda) O_j)`;
    mps, mig, exclusive: :math:`\lambda_i E[S_i] / share\_frac_i` (own server);
    cpu: :math:`\max(\lambda_i E[S_i], \sum_j \lambda_j E[S_j] / c)`, own server and node
    (:meth:`CpuNode.offered_load <qosched.policies.latency.cpu_node.CpuNode.offered_load>`: the
    node is stable exactly when every entry is below 1).
    """
    rate_per_ms = np.array([s.rate_rps for s in device.services], dtype=np.float64) / 1000.0
    mean_ms = np.array([s.service.mean_ms for s in device.services], dtype=np.float64)
    if device.mode == "cpu":
        return CpuNode(device.cores).offered_load(rate_per_ms * mean_ms)
    if device.mode in _OWN_QUEUE_MODES:
        share = np.array([s.share_frac for s in device.services], dtype=np.float64)
        return rate_per_ms * mean_ms / share
    if device.mode == "edgetpu":
        total = rate_per_ms.sum()
        if total > 0:
            swap = np.array([s.swap_ms for s in device.services], dtype=np.float64)
            mean_ms = mean_ms + (1.0 - rate_per_ms / total) * swap
    return np.full(len(device.services), float(np.dot(rate_per_ms, mean_ms)))


def _summarise(
    spec: ServiceSpec,
    latency_ms: np.ndarray,
    own_ms: np.ndarray,
    count: int,
    rho: float,
    config: SimConfig,
) -> ServiceResult:
    saturated = bool(rho >= 1.0)
    if latency_ms.size == 0:  # cannot happen with probes; guards an empty device
        latency_ms = own_ms = np.zeros(1)
    horizon_mean = float(latency_ms.mean())
    if saturated:
        mean = pct = wait = slo_stat = math.inf
    else:
        mean = horizon_mean
        pct = float(np.percentile(latency_ms, config.percentile))
        wait = max(float((latency_ms - own_ms).mean()), 0.0)
        if spec.slo_percentile is None:
            slo_stat = mean
        elif spec.slo_percentile == config.percentile:
            slo_stat = pct
        else:
            slo_stat = float(np.percentile(latency_ms, spec.slo_percentile))
    return ServiceResult(
        name=spec.name,
        count=count,
        mean_latency_ms=mean,
        percentile=config.percentile,
        percentile_latency_ms=pct,
        mean_wait_ms=wait,
        slo_latency_ms=slo_stat,
        slo_met=None if spec.slo_ms is None else bool(slo_stat <= spec.slo_ms),
        utilization=float(rho),
        saturated=saturated,
        horizon_mean_latency_ms=horizon_mean,
    )


def simulate_device(
    device: DeviceSpec, rng: np.random.Generator, config: SimConfig | None = None
) -> DeviceResult:
    """Simulate the requests of the services on one device and summarise each service.

    Parameters
    ----------
    device : DeviceSpec
        Services and sharing mode.
    rng : numpy.random.Generator
        Source of all randomness (arrival gaps, labels, service times, probes, in that order);
        equal generator states give equal results.
    config : SimConfig, optional
        Horizon and statistics (defaults: 50,000 requests, 10 % warm-up, p99).

    Returns
    -------
    DeviceResult
        One :class:`ServiceResult` per service, in input order.
    """
    config = config or SimConfig()
    services = device.services
    k = len(services)
    if k == 0:
        return DeviceResult(device.name, device.mode, (), 0)
    rho = offered_load(device)
    rate_per_ms = np.array([s.rate_rps for s in services], dtype=np.float64) / 1000.0
    total_rate = float(rate_per_ms.sum())
    n = config.n_requests if total_rate > 0 else 0

    # One Poisson stream of rate λ, each request labelled i with probability λ_i / λ.
    if n:
        arrival = np.cumsum(rng.exponential(1.0 / total_rate, n))
        label = np.searchsorted(np.cumsum(rate_per_ms / total_rate), rng.random(n), side="right")
        np.minimum(label, k - 1, out=label)  # guards a rounding of the last cumulative probability
    else:
        arrival = np.zeros(0)
        label = np.zeros(0, dtype=np.int64)
    size = np.empty(n)
    for i, s in enumerate(services):
        mask = label == i
        size[mask] = s.service.sample(rng, int(mask.sum()))

    latency, own, stretch = _serve(device, arrival, label, size)

    warm = int(config.warmup_frac * n)
    label_kept, latency_kept, own_kept = label[warm:], latency[warm:], own[warm:]
    results = []
    for i, s in enumerate(services):
        if s.rate_rps > 0 and n:
            mask = label_kept == i
            results.append(
                _summarise(s, latency_kept[mask], own_kept[mask], int(mask.sum()), float(rho[i]), config)
            )
        else:
            probe_latency, probe_own = _probe(device, i, latency_kept, own_kept, rng, config, stretch)
            results.append(_summarise(s, probe_latency, probe_own, 0, float(rho[i]), config))
    return DeviceResult(device.name, device.mode, tuple(results), n)


def _serve(
    device: DeviceSpec, arrival: np.ndarray, label: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Latency of every request, its own part (service, stretch by the share, swap), and (mode
    ``cpu``) the slowdown an idle server's request would see, time-averaged (1.0 otherwise)."""
    n = arrival.size
    if device.mode in ("time-slicing", "edgetpu"):
        own = size.copy()
        if device.mode == "edgetpu" and n:
            swap = np.array([s.swap_ms for s in device.services], dtype=np.float64)
            changed = np.empty(n, dtype=bool)
            changed[0] = True  # no model resident at the start
            changed[1:] = label[1:] != label[:-1]
            own += np.where(changed, swap[label], 0.0)
        return lindley_waits(arrival, own) + own, own, 1.0
    if device.mode == "cpu":
        # One FCFS server per service; the busy servers share the node's cores (CpuNode).
        if len(device.services) + 1 <= device.cores:  # nobody (the probe included) ever slows
            return _own_queues(arrival, size, label, len(device.services)), size, 1.0
        speeds = CpuNode(device.cores).speeds(len(device.services) + 1)
        departure, time_at = _shared_cores_run(arrival, size, label, speeds)
        total = float(time_at.sum())
        # A server that turns busy when B others are: speed speeds[B + 1] (PASTA: B as time-averaged).
        stretch = float(np.dot(time_at[:-1], 1.0 / np.array(speeds[1:]))) / total if total > 0 else 1.0
        return departure - arrival, size, stretch
    # mps, mig, exclusive: one FCFS queue per service, stretched by 1/share_frac
    share = np.array([s.share_frac for s in device.services], dtype=np.float64)
    own = size / share[label] if n else size
    latency = np.empty(n)
    for i in range(len(device.services)):
        mask = label == i
        latency[mask] = lindley_waits(arrival[mask], own[mask]) + own[mask]
    return latency, own, 1.0


def _probe(
    device: DeviceSpec,
    index: int,
    latency_ms: np.ndarray,
    own_ms: np.ndarray,
    rng: np.random.Generator,
    config: SimConfig,
    stretch: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Latencies a request of a zero-rate service would see (see the module docstring).

    ``latency_ms`` and ``own_ms`` are those of the measured requests of the other services;
    ``stretch`` the cpu mode's time-averaged slowdown of a server that turns busy.
    """
    spec = device.services[index]
    m = config.probe_requests
    own = spec.service.sample(rng, m) / spec.share_frac
    if device.mode in _OWN_QUEUE_MODES:
        return own, own
    if device.mode == "cpu":
        # Its own server is idle, so no queue: its size, slowed by the servers busy meanwhile.
        return own * stretch, own
    others_active = any(s.rate_rps > 0 for j, s in enumerate(device.services) if j != index)
    if device.mode == "edgetpu" and others_active:
        own = own + spec.swap_ms
    waits = latency_ms - own_ms
    sampled = rng.choice(waits, m) if waits.size else np.zeros(m)
    return sampled + own, own


def simulate_devices(
    devices: Sequence[DeviceSpec], rng: np.random.Generator, config: SimConfig | None = None
) -> tuple[DeviceResult, ...]:
    """Simulate many devices; device ``d`` uses the ``d``-th child of ``rng.spawn(len(devices))``.

    Independent child streams make each device's result depend only on the parent state and its
    position, not on how many requests the other devices drew.
    """
    children = rng.spawn(len(devices))
    return tuple(simulate_device(d, child, config) for d, child in zip(devices, children, strict=True))
