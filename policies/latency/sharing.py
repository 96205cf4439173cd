r"""Batched latency prediction for services co-located on devices, one function per sharing mode.

This is the interface the placement policies call. The services on ONE device are the last axis
of padded arrays, shape ``(..., K)`` (e.g. ``(nodes, devices, K)``), with a boolean ``mask`` of
the valid entries; one :func:`predict` call evaluates every device at once.

Sharing modes (the registry :data:`SHARING_MODELS`):

``time-slicing``
    GPU time slicing, models.md §A: requests of all co-located models interleave on the device;
    mixture M/M/1, E[Rᵢ] = Sᵢ + E[W] (or per-class processor sharing, ``ModelParams.time_slicing``).
    With at most one *active* service (rate > 0) the device is a single-model M/G/1 queue, M/D/1
    for deterministic service (§A "one model alone").
``edgetpu``
    One model resident at a time; a request pays the swap overhead Oᵢ when the previous request
    was for another model; M/G/1 FCFS with S'ᵢ = Sᵢ + qᵢOᵢ (§A). Used whenever the accelerator
    is an edge TPU, whatever the node's sharing label (see :func:`resolve_sharing`).
``mps``
    Spatial sharing (CUDA MPS): service i gets the fraction ``share_frac`` of the SMs and its own
    queue. *Approximation:* its service time stretches to Sᵢ/shareᵢ · (1 + c·nᵢ), nᵢ the number
    of *other* active services on the device and c = :attr:`ModelParams.mps_contention_frac`
    (memory-bandwidth and L2 contention, which MPS does not isolate); each service is an M/G/1
    queue with that service time (E[S²] scaled by the square of the same factor).
    1/share is conservative for models too small to fill the whole GPU.
``mig``
    Isolated slices (Multi-Instance GPU): ``share_frac`` is rounded *down* to the slice grid
    (``mig_slices_per_gpu``, 7 on A100/H100; at least one slice); service time Sᵢ/slice_frac,
    its own M/G/1 queue, no cross-interference.
``exclusive``
    One service per device, M/G/1 (M/D/1 for deterministic service). A device holding more than
    one valid service violates the mode: every service on it gets ``inf``.
``cpu``
    The node's CPU (:mod:`~qosched.policies.latency.cpu_node`, the discipline the request
    simulator runs too): one FCFS server per service, the busy servers sharing the ``cores`` at
    min(1, c/B) of a core each; with at most c active services each is its own M/G/1 queue,
    otherwise a mean-field slowdown σᵢ stretches its service (:func:`~qosched.policies.latency.
    cpu_node.cpu_node_queue`).

Every mode also applies the co-location slowdown (1 + ``colocation_overhead_frac`` +
``overhead_frac``ᵢ) to the service times when two or more services are active on a device
(except ``mig``, isolated, and ``exclusive``); both terms are 0 unless fitted by
:mod:`~qosched.policies.latency.calibration` or set by a profile (``contention.overhead_frac``).

Outputs (:class:`Prediction`) are nan-free: ``inf`` where a queue is unbounded (ρ ≥ 1), 0 in
masked entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.latency.cpu_node import cpu_node_core
from qosched.policies.latency.queueing import (
    MS_PER_S,
    SWAP_MOMENTS,
    QueueMetrics,
    SwapMoment,
    _edgetpu_core,
    _safe_div,
    _unbounded_where,
    _wait_factor,
)
from qosched.policies.types import CPU_ACCELERATOR, EDGETPU_ACCELERATORS

__all__ = [
    "CPU_MODE",
    "EDGETPU_MODE",
    "SHARING_MODELS",
    "DeviceServices",
    "LoadSums",
    "ModelParams",
    "Prediction",
    "predict",
    "predict_modes",
    "resolve_sharing",
    "time_slicing_wait_ms",
    "valid_services",
]

EDGETPU_MODE: Final = "edgetpu"
CPU_MODE: Final = "cpu"


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Contention and overhead terms of the latency models of one device type.

    Defaults reproduce the paper's models (plus the validated Bernoulli swap moment);
    :func:`qosched.policies.latency.calibration.fit` fits them from co-located measurements.

    Attributes
    ----------
    colocation_overhead_frac : float
        Extra fractional slowdown of every service time when ≥ 2 services are active on the
        device (context switches, cache and memory-bandwidth contention). Default 0: the
        paper's models have none; fit it per device type.
    swap_moment : {"paper", "bernoulli", "markov"}
        Second moment and wait of the edge-TPU model (see ``queueing.edgetpu_swap_queue``).
        Default ``"markov"``: the swap is paid with probability qᵢ (the exact second moment of
        the request mix, ``"bernoulli"``) and makes consecutive service times dependent, which
        the wait accounts for; held out over the three Ibis co-location traces it lowers the
        mean error from 3.70 % (``"bernoulli"``) to 3.43 % (docs/latency-models.md).
    swap_prob_scale : float
        Multiplies the edge-TPU swap probability 1 − λᵢ/λ. Default 1 (random interleaving); the
        measured swap frequency on the Ibis trace matched 1 − λᵢ/λ within 0.02 at every level.
    time_slicing : {"paper", "ps"}
        Wait model of ``time-slicing`` with ≥ 2 active services. ``"paper"`` (default, §A): every
        service waits E[W] = E[S]ρ/(1 − ρ). ``"ps"``: per-class processor sharing,
        E[Rᵢ] = Sᵢ/(1 − ρ); the same mean over all requests as ``"paper"`` (both are the M/G/1-PS
        mean E[S]/(1 − ρ)), but monotone in every rate. The paper's form is not: adding a
        tenant with tiny requests lowers E[S] and so the wait predicted for the others (λ = 5 rps
        of S = 100 ms alone → 200 ms; plus 100 rps of 0.1 ms → 105 ms under "paper", 204 ms
        under "ps"). The Jetson TensorRT batch check (docs/latency-models.md) fits egalitarian
        processor sharing within 1.3 %.
    mps_contention_frac : float
        MPS slowdown per *other* active service on the device. Default 0.10: an assumption (not
        measured here; MPS isolates SMs but not memory bandwidth or L2); calibrate it.
    mig_slices_per_gpu : int
        Compute slices of one GPU under MIG. Default 7 (A100 / H100).
    """

    colocation_overhead_frac: float = 0.0
    swap_moment: SwapMoment = "markov"
    swap_prob_scale: float = 1.0
    time_slicing: Literal["paper", "ps"] = "paper"
    mps_contention_frac: float = 0.10
    mig_slices_per_gpu: int = 7

    def __post_init__(self) -> None:
        for name in ("colocation_overhead_frac", "swap_prob_scale", "mps_contention_frac"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
                raise ValueError(f"ModelParams.{name} must be a finite number (got {value!r})")
            if value < 0.0 or value > 10.0:
                raise ValueError(f"ModelParams.{name} must be in [0, 10] (got {value!r})")
        if self.swap_moment not in SWAP_MOMENTS:
            raise ValueError(
                f"ModelParams.swap_moment must be one of {', '.join(SWAP_MOMENTS)} (got {self.swap_moment!r})"
            )
        if self.time_slicing not in ("paper", "ps"):
            raise ValueError(f"ModelParams.time_slicing must be 'paper' or 'ps' (got {self.time_slicing!r})")
        if (
            isinstance(self.mig_slices_per_gpu, bool)
            or not isinstance(self.mig_slices_per_gpu, int)
            or not 1 <= self.mig_slices_per_gpu <= 64
        ):
            raise ValueError(
                f"ModelParams.mig_slices_per_gpu must be an int in 1..64 (got {self.mig_slices_per_gpu!r})"
            )


def _field_array(name: str, value: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.shape == shape and value.dtype == np.float64:
        return value
    arr = np.asarray(value, dtype=float)
    try:
        return np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(f"DeviceServices.{name}: shape {arr.shape} does not broadcast to {shape}") from None


@dataclass(frozen=True, slots=True)
class DeviceServices:
    """The services co-located on each device, as padded arrays with services on the last axis.

    Build it with :meth:`build` (defaults, broadcasting, validation). Every ``(..., K)`` array
    has the same shape; masked (padding) entries may hold anything.

    Attributes
    ----------
    rate_rps : (..., K) float
        Arrival rate λᵢ [requests/s], >= 0.
    service_ms : (..., K) float
        Solo mean service time Sᵢ [ms], > 0 (on the whole device).
    second_moment_ms2 : (..., K) float
        Solo E[Sᵢ²] [ms²], >= Sᵢ².
    swap_ms : (..., K) float
        Edge-TPU swap overhead Oᵢ [ms], >= 0 (ignored by the other modes).
    share_frac : (..., K) float
        Fraction of the device the service gets, in (0, 1]: ``gpu_milli/1000`` under MPS/MIG,
        1.0 otherwise.
    mask : (..., K) bool
        Valid entries.
    host_tail_ms : (..., K) float
        Edge TPU: part of Sᵢ run on the host after the device (overlaps the next request), >= 0.
    overhead_frac : (..., K) float
        Per-service co-location slowdown (a profile's ``contention.overhead_frac``), >= 0.
    cores : (...) int
        Parallel cores of the device (``cpu`` mode), >= 1.
    """

    rate_rps: np.ndarray
    service_ms: np.ndarray
    second_moment_ms2: np.ndarray
    swap_ms: np.ndarray
    share_frac: np.ndarray
    mask: np.ndarray
    host_tail_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    overhead_frac: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cores: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=np.int64))

    @classmethod
    def build(
        cls,
        rate_rps: ArrayLike,
        service_ms: ArrayLike,
        *,
        second_moment_ms2: ArrayLike | None = None,
        swap_ms: ArrayLike = 0.0,
        share_frac: ArrayLike = 1.0,
        mask: ArrayLike | None = None,
        host_tail_ms: ArrayLike = 0.0,
        overhead_frac: ArrayLike = 0.0,
        cores: ArrayLike = 1,
    ) -> DeviceServices:
        """Broadcast the arguments to one ``(..., K)`` shape, fill defaults and validate.

        Arrays already of the full shape (float64) are referenced, not copied: do not modify
        them while the object is in use.

        ``second_moment_ms2`` defaults to ``service_ms²`` (deterministic), ``mask`` to all valid.

        Examples
        --------
        >>> ds = DeviceServices.build([[10.0, 5.0]], [[20.0, 30.0]])
        >>> ds.shape, ds.second_moment_ms2.tolist()
        ((1, 2), [[400.0, 900.0]])
        """
        arrays = {
            "rate_rps": np.asarray(rate_rps, dtype=float),
            "service_ms": np.asarray(service_ms, dtype=float),
            "swap_ms": np.asarray(swap_ms, dtype=float),
            "share_frac": np.asarray(share_frac, dtype=float),
            "host_tail_ms": np.asarray(host_tail_ms, dtype=float),
            "overhead_frac": np.asarray(overhead_frac, dtype=float),
        }
        if second_moment_ms2 is not None:
            arrays["second_moment_ms2"] = np.asarray(second_moment_ms2, dtype=float)
        if mask is not None:
            arrays["mask"] = np.asarray(mask)
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
        except ValueError:
            shapes = ", ".join(f"{k}{v.shape}" for k, v in arrays.items())
            raise ValueError(f"DeviceServices: shapes do not broadcast: {shapes}") from None
        if len(shape) == 0:
            shape = (1,)

        def full(arr: np.ndarray) -> np.ndarray:
            return arr if arr.shape == shape else np.broadcast_to(arr, shape)

        service = full(arrays["service_ms"])
        m2 = service * service if second_moment_ms2 is None else full(arrays["second_moment_ms2"])
        valid = np.ones(shape, dtype=bool) if mask is None else full(arrays["mask"])
        cores_arr = np.asarray(cores)
        return cls(
            rate_rps=full(arrays["rate_rps"]),
            service_ms=service,
            second_moment_ms2=m2,
            swap_ms=full(arrays["swap_ms"]),
            share_frac=full(arrays["share_frac"]),
            mask=valid,
            host_tail_ms=full(arrays["host_tail_ms"]),
            overhead_frac=full(arrays["overhead_frac"]),
            cores=cores_arr if cores_arr.shape == shape[:-1] else np.broadcast_to(cores_arr, shape[:-1]),
        )

    def __post_init__(self) -> None:
        if not isinstance(self.mask, np.ndarray) or self.mask.dtype != bool:
            raise ValueError("DeviceServices.mask must be a boolean numpy array")
        shape = self.mask.shape
        if len(shape) == 0:
            raise ValueError("DeviceServices arrays need at least one axis (the services, K)")
        for name in ("rate_rps", "service_ms", "second_moment_ms2", "swap_ms", "share_frac"):
            object.__setattr__(self, name, _field_array(name, getattr(self, name), shape))
        for name, default in (("host_tail_ms", 0.0), ("overhead_frac", 0.0)):
            value = getattr(self, name)
            object.__setattr__(self, name, _field_array(name, default if value.size == 0 else value, shape))
        cores = np.asarray(self.cores)
        if cores.size == 0:
            cores = np.ones((), dtype=np.int64)
        try:
            cores = np.broadcast_to(cores, shape[:-1])
        except ValueError:
            raise ValueError(
                f"DeviceServices.cores: shape {cores.shape} does not broadcast to {shape[:-1]}"
            ) from None
        object.__setattr__(self, "cores", cores)
        self._validate()

    def _validate(self) -> None:
        v = self.mask
        # One combined pass (NaN fails every comparison); the per-field pass below runs only to
        # name the culprit.
        ok = valid_services(
            self.rate_rps,
            self.service_ms,
            self.second_moment_ms2,
            swap_ms=self.swap_ms,
            share_frac=self.share_frac,
            host_tail_ms=self.host_tail_ms,
            overhead_frac=self.overhead_frac,
        )
        cores_ok = self.cores.dtype.kind in "iu" and (self.cores.size == 0 or int(self.cores.min()) >= 1)
        if cores_ok and bool(np.all(ok | ~v)):
            return

        def bad(name: str, ok: np.ndarray, rule: str) -> None:
            wrong = v & ~ok
            if wrong.any():
                where = tuple(int(i) for i in np.argwhere(wrong)[0])
                value = getattr(self, name)[where]
                raise ValueError(f"DeviceServices.{name}{list(where)} {rule} (got {value!r})")

        with np.errstate(invalid="ignore"):
            bad("rate_rps", np.isfinite(self.rate_rps) & (self.rate_rps >= 0), "must be finite and >= 0")
            bad("service_ms", np.isfinite(self.service_ms) & (self.service_ms > 0), "must be finite and > 0")
            s2 = self.service_ms * self.service_ms
            bad(
                "second_moment_ms2",
                np.isfinite(self.second_moment_ms2) & (self.second_moment_ms2 >= s2 * (1 - 1e-9)),
                "must be finite and >= service_ms² (a variance cannot be negative)",
            )
            bad("swap_ms", np.isfinite(self.swap_ms) & (self.swap_ms >= 0), "must be finite and >= 0")
            bad("share_frac", (self.share_frac > 0) & (self.share_frac <= 1), "must be in (0, 1]")
            bad(
                "host_tail_ms",
                np.isfinite(self.host_tail_ms)
                & (self.host_tail_ms >= 0)
                & (self.host_tail_ms <= self.service_ms),
                "must be in [0, service_ms]",
            )
            bad(
                "overhead_frac",
                np.isfinite(self.overhead_frac) & (self.overhead_frac >= 0),
                "must be finite and >= 0",
            )
        c = self.cores.astype(float)
        if c.size and not (np.isfinite(c) & (c >= 1) & (np.mod(c, 1) == 0)).all():
            raise ValueError(
                f"DeviceServices.cores must be whole numbers >= 1 (got {c[c == c].ravel()[:1]!r})"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """``(..., K)``."""
        return tuple(self.mask.shape)

    @property
    def active(self) -> np.ndarray:
        """(..., K) valid services with load (rate > 0): the ones that interfere."""
        return self.mask & (self.rate_rps > 0)

    @classmethod
    def trusted(
        cls,
        *,
        rate_rps: np.ndarray,
        service_ms: np.ndarray,
        second_moment_ms2: np.ndarray,
        swap_ms: np.ndarray,
        share_frac: np.ndarray,
        mask: np.ndarray,
        overhead_frac: np.ndarray,
        cores: np.ndarray,
        host_tail_ms: np.ndarray | None = None,
    ) -> DeviceServices:
        """Wrap arrays the caller has already checked, without validating them again.

        For internal producers whose values were validated when they were recorded (e.g.
        ``ClusterState`` checks every service with :func:`valid_services` when it is added,
        and the caller checks the one service it appends). External input must go through the
        constructor or :meth:`build`, which validate.

        Every ``(..., K)`` argument must be a float64 array of the mask's shape (a broadcast
        view is fine) and ``cores`` an integer array of shape ``(...)``; ``host_tail_ms``
        defaults to zeros.
        """
        shape = mask.shape
        tail = np.broadcast_to(np.float64(0.0), shape) if host_tail_ms is None else host_tail_ms
        return cls._trusted(
            rate_rps=rate_rps,
            service_ms=service_ms,
            second_moment_ms2=second_moment_ms2,
            swap_ms=swap_ms,
            share_frac=share_frac,
            mask=mask,
            host_tail_ms=tail,
            overhead_frac=overhead_frac,
            cores=cores,
        )

    @classmethod
    def _trusted(cls, **fields: np.ndarray) -> DeviceServices:
        """Build from arrays already validated and shaped (skips ``__post_init__``)."""
        obj = object.__new__(cls)
        for name, value in fields.items():
            object.__setattr__(obj, name, value)
        return obj


def valid_services(
    rate_rps: ArrayLike,
    service_ms: ArrayLike,
    second_moment_ms2: ArrayLike,
    *,
    swap_ms: ArrayLike = 0.0,
    share_frac: ArrayLike = 1.0,
    host_tail_ms: ArrayLike = 0.0,
    overhead_frac: ArrayLike = 0.0,
) -> np.ndarray:
    """Which services have parameters the models accept (the rule :class:`DeviceServices` checks).

    rate finite and >= 0; service time finite and > 0; E[S²] finite and >= S² (1e-9 relative
    slack for rounding); swap finite and >= 0; share in (0, 1]; host tail in [0, S]; overhead
    finite and >= 0. NaN fails every rule. Arguments broadcast; returns a bool array (or
    ``numpy.bool_`` for scalars).
    """
    s = np.asarray(service_ms, dtype=float)
    rate = np.asarray(rate_rps, dtype=float)
    m2 = np.asarray(second_moment_ms2, dtype=float)
    swap = np.asarray(swap_ms, dtype=float)
    share = np.asarray(share_frac, dtype=float)
    tail = np.asarray(host_tail_ms, dtype=float)
    over = np.asarray(overhead_frac, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        return (
            (rate >= 0)
            & (rate < np.inf)
            & (s > 0)
            & (s < np.inf)
            & (m2 >= s * s * (1 - 1e-9))
            & (m2 < np.inf)
            & (swap >= 0)
            & (swap < np.inf)
            & (share > 0)
            & (share <= 1)
            & (tail >= 0)
            & (tail <= s)
            & (over >= 0)
            & (over < np.inf)
        )


@dataclass(frozen=True, slots=True)
class LoadSums:
    r"""Per-device sums over the services of each device, shape ``(...)``.

    What the shared queue of GPU time slicing reads besides each service's own Sᵢ: with these
    and one service appended (:meth:`plus`), :func:`time_slicing_wait_ms` gives the device's
    utilisation and the wait every service there sees, in O(1) per device instead of O(K).
    ``ClusterState`` keeps them per device (``dev_load_sums``), so judging a pod on a device
    does not re-add the services already there.

    Attributes
    ----------
    rate_per_ms : (...) float
        Σ λᵢ [requests/ms] (λᵢ = rateᵢ/1000).
    load : (...) float
        Σ λᵢ·Sᵢ: the device's utilisation ρ.
    second_load_ms : (...) float
        Σ λᵢ·E[Sᵢ²] [ms].
    active : (...) int
        Number of services with load (rate > 0).

    Notes
    -----
    The sums run over the valid services in slot order, one addition at a time (masked slots
    add nothing). That is the order the models add a short last axis of padded arrays (numpy
    accumulates such a reduction column by column), so sums kept per device and extended with
    :meth:`plus` are the very floats :func:`predict` computes on the appended arrays. They
    carry no co-location slowdown: they stand for the time-slicing model only where it is 1
    (``ModelParams.colocation_overhead_frac == 0`` and every ``overhead_frac`` 0).
    """

    rate_per_ms: np.ndarray
    load: np.ndarray
    second_load_ms: np.ndarray
    active: np.ndarray

    @classmethod
    def of(
        cls,
        rate_rps: ArrayLike,
        service_ms: ArrayLike,
        second_moment_ms2: ArrayLike,
        mask: ArrayLike | None = None,
    ) -> LoadSums:
        """The sums over the last axis of ``(..., K)`` arrays (valid entries only).

        Examples
        --------
        >>> s = LoadSums.of([[10.0, 0.0, 30.0]], [[20.0, 5.0, 10.0]], [[400.0, 25.0, 100.0]])
        >>> s.rate_per_ms.tolist(), s.load.tolist(), s.active.tolist()
        ([0.04], [0.5], [2])
        """
        rate = np.asarray(rate_rps, dtype=float)
        s = np.asarray(service_ms, dtype=float)
        m2 = np.asarray(second_moment_ms2, dtype=float)
        shape = np.broadcast_shapes(rate.shape, s.shape, m2.shape, np.shape(mask) if mask is not None else ())
        if len(shape) == 0:
            shape = (1,)
        valid = np.ones(shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), shape)
        rate, s, m2 = (np.broadcast_to(a, shape) for a in (rate, s, m2))
        lam_sum = np.zeros(shape[:-1])
        load = np.zeros(shape[:-1])
        second = np.zeros(shape[:-1])
        active = np.zeros(shape[:-1], dtype=np.int64)
        for j in range(shape[-1]):  # slot by slot, each step over every device
            on = valid[..., j]
            lam = np.where(on, rate[..., j] / MS_PER_S, 0.0)
            lam_sum = lam_sum + lam
            load = load + np.where(on, lam * s[..., j], 0.0)
            second = second + np.where(on, lam * m2[..., j], 0.0)
            active = active + (on & (rate[..., j] > 0))
        return cls(lam_sum, load, second, active)

    def plus(self, rate_rps: ArrayLike, service_ms: ArrayLike, second_moment_ms2: ArrayLike) -> LoadSums:
        """The sums with one more service on every device (appended after the others)."""
        rate = np.asarray(rate_rps, dtype=float)
        lam = rate / MS_PER_S
        return LoadSums(
            self.rate_per_ms + lam,
            self.load + lam * np.asarray(service_ms, dtype=float),
            self.second_load_ms + lam * np.asarray(second_moment_ms2, dtype=float),
            self.active + (rate > 0),
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predicted mean latency of every co-located service.

    Attributes
    ----------
    latency_ms : (..., K) float
        Mean response time on the device (queueing + service) [ms]; ``inf`` where unbounded;
        0 where masked; never NaN.
    wait_ms : (..., K) float
        The queueing part of ``latency_ms`` [ms].
    service_ms : (..., K) float
        The effective mean service time (after swap, slow-down, share) [ms].
    service_utilization : (..., K) float
        ρ of the queue that serves the service: the device's for shared queues, the service's
        own partition under MPS/MIG/exclusive. Also P(W > 0) of an M/G/1 queue (for ``tail``).
    utilization : (...) float
        Busy fraction of the device (ρ; under MPS/MIG the share-weighted sum of the partitions).
    """

    latency_ms: np.ndarray
    wait_ms: np.ndarray
    service_ms: np.ndarray
    service_utilization: np.ndarray
    utilization: np.ndarray


ModeModel = Callable[[DeviceServices, ModelParams], Prediction]

#: Harmless stand-ins for masked (padding) entries, which may hold anything.
_SAFE_VALUE: Final = {
    "rate_rps": 0.0,
    "service_ms": 1.0,
    "second_moment_ms2": 1.0,
    "swap_ms": 0.0,
    "share_frac": 1.0,
    "host_tail_ms": 0.0,
}
_BASE_FIELDS: Final = ("rate_rps", "service_ms", "second_moment_ms2")


def _clean(sv: DeviceServices, fields: tuple[str, ...] = _BASE_FIELDS) -> DeviceServices:
    """``sv`` with the named fields' masked entries replaced by harmless values.

    Only the fields a mode reads are touched (each ``np.where`` is a full pass over the arrays).
    ``overhead_frac`` needs none: it is only used through ``np.where(mask, ...)``.
    """
    if sv.mask.all():
        return sv
    values = {name: getattr(sv, name) for name in DeviceServices.__slots__}
    for name in fields:
        values[name] = np.where(sv.mask, values[name], _SAFE_VALUE[name])
    return DeviceServices._trusted(**values)


def _colocation_factor(sv: DeviceServices, params: ModelParams) -> np.ndarray:
    """(..., K) service-time multiplier 1 + overhead where ≥ 2 services are active, else 1."""
    if params.colocation_overhead_frac == 0.0 and not sv.overhead_frac.any():
        return np.ones(())
    colocated = (sv.active.sum(axis=-1, keepdims=True) >= 2) & sv.mask
    return np.where(colocated, 1.0 + params.colocation_overhead_frac + sv.overhead_frac, 1.0)


def _own_mg1(
    sv: DeviceServices, service_ms: np.ndarray, second_moment_ms2: np.ndarray, weight: np.ndarray
) -> Prediction:
    """Each service its own M/G/1 queue; device utilisation = Σ weightᵢ·ρᵢ."""
    lam = sv.rate_rps / MS_PER_S
    rho = lam * service_ms
    gap = 1.0 - rho
    wait = np.full(rho.shape, np.inf)
    np.divide(lam * second_moment_ms2, 2.0 * gap, out=wait, where=gap > 0.0)
    wait = np.where(sv.mask, wait, 0.0)
    latency = np.where(sv.mask, service_ms + wait, 0.0)
    util = np.sum(np.where(sv.mask, weight * rho, 0.0), axis=-1)
    return Prediction(latency, wait, np.where(sv.mask, service_ms, 0.0), np.where(sv.mask, rho, 0.0), util)


def _from_queue(sv: DeviceServices, m: QueueMetrics) -> Prediction:
    rho_k = np.where(sv.mask, m.utilization[..., None], 0.0)
    return Prediction(m.latency_ms, m.wait_ms, m.service_ms, rho_k, m.utilization)


def _alone_wait_ms(
    rho: np.ndarray, inv_gap: np.ndarray, alone: np.ndarray, second_load: Callable[[], np.ndarray]
) -> np.ndarray:
    """W of a device with at most one active model: its own M/G/1 queue, Σλᵢ·E[Sᵢ²] / (2(1 − ρ)).

    (M/D/1 for deterministic service, §A; a request of an idle co-located model, rate 0, waits
    the same W behind it.) ``second_load`` is called only when some device is alone.
    """
    if not alone.any():
        return np.zeros(rho.shape)
    return _unbounded_where(rho, second_load() * inv_gap / 2.0)


def _paper_wait_ms(
    rho: np.ndarray, rate_per_ms: np.ndarray, inv_gap: np.ndarray, alone: np.ndarray, wait_alone: np.ndarray
) -> np.ndarray:
    """W every service of a time-sliced device waits (§A): E[S]·ρ/(1 − ρ), E[S] = Σλᵢ Sᵢ / λ."""
    if np.shape(rate_per_ms) == np.shape(rho):
        # queueing._safe_div without its broadcasting (same shapes here): 0 where λ = 0.
        mean_s = np.zeros(np.shape(rho))
        np.divide(rho, rate_per_ms, out=mean_s, where=rate_per_ms != 0)
    else:
        mean_s = _safe_div(rho, rate_per_ms)
    shared = _unbounded_where(rho, mean_s * rho * inv_gap)
    return np.where(alone, wait_alone, shared) if alone.any() else shared


def time_slicing_wait_ms(sums: LoadSums, params: ModelParams | None = None) -> np.ndarray:
    """The wait W [ms] every service of a time-sliced device sees, from the device's sums.

    The ``time-slicing`` model of :func:`predict` (``ModelParams.time_slicing == "paper"``) in
    O(1) per device: W = E[S]·ρ/(1 − ρ) with ρ = Σλᵢ Sᵢ and E[S] = ρ/Σλᵢ, or Σλᵢ·E[Sᵢ²]/(2(1 − ρ))
    when at most one service is active; ``inf`` where ρ ≥ 1. Service i's mean latency is then
    Sᵢ + W, and its queue's utilisation is the device's, ``sums.load`` — bit for bit what
    :func:`predict` returns on the same services (see :class:`LoadSums` for the order of the sums).

    Parameters
    ----------
    sums : LoadSums
        The services of each device, the new one included (:meth:`LoadSums.plus`).
    params : ModelParams, optional
        Must have ``time_slicing == "paper"`` and ``colocation_overhead_frac == 0``; the caller
        guarantees the services' own ``overhead_frac`` are 0 (the sums carry no slowdown).

    Raises
    ------
    ValueError
        For parameters outside that case (use :func:`predict`).

    Examples
    --------
    Two models, λ = (10, 10) rps, S = (20, 30) ms: ρ = 0.5, E[S] = 25 ms, W = 25 ms.

    >>> sums = LoadSums.of([10.0, 10.0], [20.0, 30.0], [400.0, 900.0])
    >>> time_slicing_wait_ms(sums).tolist()
    25.0
    """
    p = params if params is not None else ModelParams()
    if p.time_slicing != "paper" or p.colocation_overhead_frac != 0.0:
        raise ValueError(
            "time_slicing_wait_ms covers time_slicing='paper' without co-location overhead; "
            f"got time_slicing={p.time_slicing!r}, colocation_overhead_frac={p.colocation_overhead_frac!r}"
        )
    rho = np.asarray(sums.load, dtype=float)
    inv_gap = _wait_factor(rho)
    alone = np.asarray(sums.active) <= 1
    wait_alone = _alone_wait_ms(rho, inv_gap, alone, lambda: np.asarray(sums.second_load_ms, dtype=float))
    return _paper_wait_ms(rho, np.asarray(sums.rate_per_ms, dtype=float), inv_gap, alone, wait_alone)


def _time_slicing(sv: DeviceServices, params: ModelParams) -> Prediction:
    # Per-device quantities stay at shape (...) and are broadcast once: at tens of thousands of
    # devices each full (..., K) pass costs about as much as the whole per-device arithmetic.
    sv = _clean(sv)
    factor = _colocation_factor(sv, params)
    s = sv.service_ms if factor.ndim == 0 else sv.service_ms * factor
    lam = sv.rate_rps / MS_PER_S
    rho = np.sum(lam * s, axis=-1)
    inv_gap = _wait_factor(rho)  # 1/(1 − ρ), inf where ρ ≥ 1
    alone = np.count_nonzero(sv.rate_rps > 0, axis=-1) <= 1

    def second_load() -> np.ndarray:
        m2 = sv.second_moment_ms2 if factor.ndim == 0 else sv.second_moment_ms2 * factor**2
        return np.sum(lam * m2, axis=-1)

    wait_alone = _alone_wait_ms(rho, inv_gap, alone, second_load)
    if params.time_slicing == "paper":
        wait_dev = _paper_wait_ms(rho, np.sum(lam, axis=-1), inv_gap, alone, wait_alone)
        wait_k = np.where(sv.mask, wait_dev[..., None], 0.0)
    else:  # per-class processor sharing: Wᵢ = Sᵢ·ρ/(1 − ρ)
        slow = _unbounded_where(rho, rho * inv_gap)
        wait_k = np.where(
            sv.mask, np.where(alone[..., None], wait_alone[..., None], s * slow[..., None]), 0.0
        )
    latency = np.where(sv.mask, s + wait_k, 0.0)
    return _from_queue(sv, QueueMetrics(latency, wait_k, np.where(sv.mask, s, 0.0), rho))


def _edgetpu(sv: DeviceServices, params: ModelParams) -> Prediction:
    sv = _clean(sv, (*_BASE_FIELDS, "swap_ms", "host_tail_ms"))
    factor = _colocation_factor(sv, params)
    s = sv.service_ms * factor
    m = _edgetpu_core(
        sv.rate_rps / MS_PER_S,
        s,
        sv.swap_ms,
        np.minimum(sv.host_tail_ms, s),
        np.maximum(sv.second_moment_ms2 - sv.service_ms**2, 0.0) * factor**2,
        sv.mask,
        params.swap_moment,
        params.swap_prob_scale,
    )
    return _from_queue(sv, m)


def _mps(sv: DeviceServices, params: ModelParams) -> Prediction:
    sv = _clean(sv, (*_BASE_FIELDS, "share_frac"))
    active = sv.active
    others = active.sum(axis=-1, keepdims=True) - active.astype(int)
    stretch = (1.0 + params.mps_contention_frac * others) * _colocation_factor(sv, params) / sv.share_frac
    return _own_mg1(sv, sv.service_ms * stretch, sv.second_moment_ms2 * stretch**2, sv.share_frac)


def _mig(sv: DeviceServices, params: ModelParams) -> Prediction:
    sv = _clean(sv, (*_BASE_FIELDS, "share_frac"))
    n = params.mig_slices_per_gpu
    slices = np.clip(np.floor(sv.share_frac * n + 1e-9), 1, n)
    frac = slices / n
    return _own_mg1(sv, sv.service_ms / frac, sv.second_moment_ms2 / frac**2, frac)


def _exclusive(sv: DeviceServices, params: ModelParams) -> Prediction:
    sv = _clean(sv)
    pred = _own_mg1(sv, sv.service_ms, sv.second_moment_ms2, np.ones(sv.shape))
    shared = (sv.mask.sum(axis=-1, keepdims=True) > 1) & sv.mask
    return Prediction(
        np.where(shared, np.inf, pred.latency_ms),
        np.where(shared, np.inf, pred.wait_ms),
        pred.service_ms,
        np.where(shared, np.inf, pred.service_utilization),
        np.where(shared.any(axis=-1), np.inf, pred.utilization),
    )


def _cpu(sv: DeviceServices, params: ModelParams) -> Prediction:
    # One FCFS server per service, the busy servers sharing the cores (cpu_node.CpuNode, the
    # discipline the request simulator runs too).
    sv = _clean(sv)
    factor = _colocation_factor(sv, params)
    s = sv.service_ms * factor
    m2 = sv.second_moment_ms2 * factor * factor
    lam = sv.rate_rps / MS_PER_S
    m = cpu_node_core(lam, s, m2, sv.cores.astype(np.int64), sv.mask)
    # Each service's own queue: ρᵢ = λᵢσᵢSᵢ (P(its server is busy)); the node's Σλᵢ Sᵢ / c.
    own = np.where(sv.mask, lam * m.service_ms, 0.0)
    return Prediction(m.latency_ms, m.wait_ms, m.service_ms, own, m.utilization)


#: Sharing mode → model. Keys are the node label values of the contract plus ``edgetpu``/``cpu``.
SHARING_MODELS: Mapping[str, ModeModel] = MappingProxyType(
    {
        "time-slicing": _time_slicing,
        EDGETPU_MODE: _edgetpu,
        "mps": _mps,
        "mig": _mig,
        "exclusive": _exclusive,
        CPU_MODE: _cpu,
    }
)


def resolve_sharing(accelerator: str | None, sharing_label: str) -> str:
    """The model to use for a device: edge TPUs always ``edgetpu``, CPUs ``cpu``, else the label.

    Examples
    --------
    >>> resolve_sharing("edgetpu", "time-slicing"), resolve_sharing("nvidia-t4", "mps")
    ('edgetpu', 'mps')
    """
    if accelerator in EDGETPU_ACCELERATORS:
        return EDGETPU_MODE
    if accelerator == CPU_ACCELERATOR:
        return CPU_MODE
    _model_for(sharing_label)
    return sharing_label


def _model_for(sharing: str) -> ModeModel:
    try:
        return SHARING_MODELS[sharing]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown sharing mode {sharing!r}; known modes: {', '.join(SHARING_MODELS)}"
        ) from None


def predict(sharing: str, services: DeviceServices, params: ModelParams | None = None) -> Prediction:
    """Mean latency of every service on every device, for one sharing mode.

    Parameters
    ----------
    sharing : str
        A key of :data:`SHARING_MODELS` (use :func:`resolve_sharing` to pick it from a node).
    services : DeviceServices
        The co-located services, shape ``(..., K)``.
    params : ModelParams, optional
        Contention terms (defaults: :class:`ModelParams`).

    Returns
    -------
    Prediction
        ``latency_ms`` (..., K) (inf where unbounded, 0 where masked, never NaN) and
        ``utilization`` (...).

    Raises
    ------
    ValueError
        Unknown ``sharing`` (the message lists the modes).

    Examples
    --------
    Two models time-sliced, λ = (10, 10) rps, S = (20, 30) ms: E[S] = 25, ρ = 0.5, W = 25 ms.

    >>> p = predict("time-slicing", DeviceServices.build([10.0, 10.0], [20.0, 30.0]))
    >>> p.latency_ms.tolist(), float(p.utilization)
    ([45.0, 55.0], 0.5)
    """
    model = _model_for(sharing)
    return model(services, params if params is not None else ModelParams())


def predict_modes(
    modes: Sequence[str], mode_index: ArrayLike, services: DeviceServices, params: ModelParams | None = None
) -> Prediction:
    """Like :func:`predict` for devices of different modes: ``modes[mode_index[...]]`` per device.

    Parameters
    ----------
    modes : sequence of str
        Sharing modes, each a key of :data:`SHARING_MODELS`.
    mode_index : array_like of int, shape broadcastable to ``services.shape[:-1]``
        Index into ``modes`` of each device.
    services : DeviceServices
    params : ModelParams, optional

    Returns
    -------
    Prediction
        Each device predicted with its own mode (one vectorised call per mode present).
    """
    shape = services.shape
    idx = np.broadcast_to(np.asarray(mode_index), shape[:-1])
    if idx.size and (idx.min() < 0 or idx.max() >= len(modes)):
        raise ValueError(f"mode_index must be in 0..{len(modes) - 1}")
    out = Prediction(np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape[:-1]))
    for code in np.unique(idx):
        rows = idx == code
        sub = predict(modes[int(code)], _subset(services, rows), params)
        for name in ("latency_ms", "wait_ms", "service_ms", "service_utilization", "utilization"):
            getattr(out, name)[rows] = getattr(sub, name)
    return out


def _subset(sv: DeviceServices, rows: np.ndarray) -> DeviceServices:
    return DeviceServices._trusted(
        rate_rps=sv.rate_rps[rows],
        service_ms=sv.service_ms[rows],
        second_moment_ms2=sv.second_moment_ms2[rows],
        swap_ms=sv.swap_ms[rows],
        share_frac=sv.share_frac[rows],
        mask=sv.mask[rows],
        host_tail_ms=sv.host_tail_ms[rows],
        overhead_frac=sv.overhead_frac[rows],
        cores=sv.cores[rows],
    )
