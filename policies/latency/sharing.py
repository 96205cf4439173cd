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
    The node's CPU, processor sharing over ``cores`` (see
    :func:`~qosched.policies.latency.queueing.processor_sharing_queue`): one core E[Rᵢ] =
    Sᵢ/(1 − ρ), ρ = Σλᵢ Sᵢ; c cores through the M/M/c-equivalent symmetric queue.

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

from qosched.policies.latency.queueing import (
    MS_PER_S,
    SwapMoment,
    edgetpu_swap_queue,
    processor_sharing_queue,
    time_sliced_queue,
)
from qosched.policies.types import CPU_ACCELERATOR, EDGETPU_ACCELERATORS

__all__ = [
    "CPU_MODE",
    "EDGETPU_MODE",
    "SHARING_MODELS",
    "DeviceServices",
    "ModelParams",
    "Prediction",
    "predict",
    "predict_modes",
    "resolve_sharing",
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
    swap_moment : {"paper", "bernoulli"}
        Second moment of the edge-TPU service time (see ``queueing.edgetpu_swap_queue``).
        Default ``"bernoulli"``: the swap is paid with probability qᵢ, which is the exact second
        moment of the request mix; on the Ibis trace it lowers the paper's mean error from 3.87 %
        to 3.71 % (docs/latency-models.md).
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
    swap_moment: SwapMoment = "bernoulli"
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
        if self.swap_moment not in ("paper", "bernoulli"):
            raise ValueError(
                f"ModelParams.swap_moment must be 'paper' or 'bernoulli' (got {self.swap_moment!r})"
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
        service = np.broadcast_to(arrays["service_ms"], shape)
        m2 = service * service if second_moment_ms2 is None else arrays["second_moment_ms2"]
        valid = np.ones(shape, dtype=bool) if mask is None else arrays["mask"]
        return cls(
            rate_rps=np.broadcast_to(arrays["rate_rps"], shape),
            service_ms=service,
            second_moment_ms2=np.broadcast_to(m2, shape),
            swap_ms=np.broadcast_to(arrays["swap_ms"], shape),
            share_frac=np.broadcast_to(arrays["share_frac"], shape),
            mask=np.broadcast_to(valid, shape),
            host_tail_ms=np.broadcast_to(arrays["host_tail_ms"], shape),
            overhead_frac=np.broadcast_to(arrays["overhead_frac"], shape),
            cores=np.broadcast_to(np.asarray(cores), shape[:-1]),
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

    def sanitized(self) -> DeviceServices:
        """A copy whose masked entries hold harmless values (rate 0, S = 1 ms, share 1)."""
        v = self.mask
        return DeviceServices(
            rate_rps=np.where(v, self.rate_rps, 0.0),
            service_ms=np.where(v, self.service_ms, 1.0),
            second_moment_ms2=np.where(v, self.second_moment_ms2, 1.0),
            swap_ms=np.where(v, self.swap_ms, 0.0),
            share_frac=np.where(v, self.share_frac, 1.0),
            mask=v,
            host_tail_ms=np.where(v, self.host_tail_ms, 0.0),
            overhead_frac=np.where(v, self.overhead_frac, 0.0),
            cores=self.cores,
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


def _colocation_factor(sv: DeviceServices, params: ModelParams) -> np.ndarray:
    """(..., K) service-time multiplier 1 + overhead where ≥ 2 services are active, else 1."""
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


def _from_queue(
    sv: DeviceServices, latency: np.ndarray, wait: np.ndarray, service: np.ndarray, rho: np.ndarray
) -> Prediction:
    rho_k = np.where(sv.mask, rho[..., None], 0.0)
    return Prediction(latency, wait, service, rho_k, rho)


def _time_slicing(sv: DeviceServices, params: ModelParams) -> Prediction:
    factor = _colocation_factor(sv, params)
    s = sv.service_ms * factor
    if params.time_slicing == "paper":
        shared = time_sliced_queue(sv.rate_rps, s, mask=sv.mask)
    else:
        shared = processor_sharing_queue(sv.rate_rps, s, mask=sv.mask)
    # One active model alone: its own M/G/1 queue (M/D/1 for deterministic service), §A. A
    # request of an idle co-located model (rate 0) waits the same W behind it.
    lam = sv.rate_rps / MS_PER_S
    rho = shared.utilization
    gap = 1.0 - rho
    wait_alone = np.full(rho.shape, np.inf)
    np.divide(
        np.sum(lam * sv.second_moment_ms2 * factor**2, axis=-1), 2.0 * gap, out=wait_alone, where=gap > 0.0
    )
    alone = (sv.active.sum(axis=-1) <= 1)[..., None]
    wait_k = np.where(sv.mask, np.where(alone, wait_alone[..., None], shared.wait_ms), 0.0)
    latency = np.where(sv.mask, s + wait_k, 0.0)
    return _from_queue(sv, latency, wait_k, np.where(sv.mask, s, 0.0), rho)


def _edgetpu(sv: DeviceServices, params: ModelParams) -> Prediction:
    factor = _colocation_factor(sv, params)
    m = edgetpu_swap_queue(
        sv.rate_rps,
        sv.service_ms * factor,
        sv.swap_ms,
        second_moment_ms2=sv.second_moment_ms2 * factor**2,
        host_tail_ms=np.minimum(sv.host_tail_ms, sv.service_ms * factor),
        swap_moment=params.swap_moment,
        swap_prob_scale=params.swap_prob_scale,
        mask=sv.mask,
    )
    return _from_queue(sv, m.latency_ms, m.wait_ms, m.service_ms, m.utilization)


def _mps(sv: DeviceServices, params: ModelParams) -> Prediction:
    active = sv.active
    others = active.sum(axis=-1, keepdims=True) - active.astype(int)
    stretch = (1.0 + params.mps_contention_frac * others) * _colocation_factor(sv, params) / sv.share_frac
    return _own_mg1(sv, sv.service_ms * stretch, sv.second_moment_ms2 * stretch**2, sv.share_frac)


def _mig(sv: DeviceServices, params: ModelParams) -> Prediction:
    n = params.mig_slices_per_gpu
    slices = np.clip(np.floor(sv.share_frac * n + 1e-9), 1, n)
    frac = slices / n
    return _own_mg1(sv, sv.service_ms / frac, sv.second_moment_ms2 / frac**2, frac)


def _exclusive(sv: DeviceServices, params: ModelParams) -> Prediction:
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
    m = processor_sharing_queue(
        sv.rate_rps, sv.service_ms * _colocation_factor(sv, params), cores=sv.cores, mask=sv.mask
    )
    return _from_queue(sv, m.latency_ms, m.wait_ms, m.service_ms, m.utilization)


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
    return model(services.sanitized(), params if params is not None else ModelParams())


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
    return DeviceServices(
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
