"""Can these services share the device? The feasibility rule of models.md §A, vectorised.

A placement is feasible when, on the device (or node, for the front end):

1. memory in use ≤ ``memory_frac`` × the device's memory,
2. the device's utilisation ρ ≤ ``utilization`` (and so is the utilisation of every service's
   own queue, which is what binds under MPS/MIG partitions),
3. the front-end (node CPU pre-processing) utilisation ≤ ``frontend_utilization``,
4. the predicted latency of **every** co-located service — the new one and those already there —
   is within its SLO (mean, or the percentile of ``qosched.io/slo-percentile``).

Thresholds default to the paper's 0.8 (Liang et al., ACM TAAS 2023). The first rule that fails,
in that order, is the reason reported; new-service SLO violations are reported before existing
ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.latency.sharing import Prediction
from qosched.policies.latency.tail import percentile_latency_ms

__all__ = [
    "ReasonCode",
    "SharedWaitVerdict",
    "Thresholds",
    "feasible",
    "feasible_shared_wait",
    "slack_frac",
]


#: Up to this many services per device, reduce over them column by column.
_SHORT_AXIS = 16


class ReasonCode(enum.IntEnum):
    """Why a placement is infeasible (stable codes; ``.message`` is for people)."""

    OK = 0
    MEMORY = 1
    UTILIZATION = 2
    FRONTEND = 3
    SLO_VIOLATION_NEW = 4
    SLO_VIOLATION_EXISTING = 5

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES: dict[ReasonCode, str] = {
    ReasonCode.OK: "feasible",
    ReasonCode.MEMORY: "device memory in use would exceed its threshold",
    ReasonCode.UTILIZATION: "device utilisation would exceed its threshold",
    ReasonCode.FRONTEND: "front-end (CPU pre-processing) utilisation would exceed its threshold",
    ReasonCode.SLO_VIOLATION_NEW: "the new service's predicted latency would exceed its SLO",
    ReasonCode.SLO_VIOLATION_EXISTING: "a service already on the device would miss its SLO",
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Upper limits of the feasibility rule (fractions in (0, 1]).

    Attributes
    ----------
    memory_frac : float
        Largest fraction of the device's memory in use. Default 0.8 (paper): headroom for
        activations and allocator fragmentation.
    utilization : float
        Largest device utilisation ρ. Default 0.8 (paper): waits grow as 1/(1 − ρ), so near 1
        small rate errors become large latency errors.
    frontend_utilization : float
        Largest utilisation of the node's front end (pre-processing). Default 0.8 (paper).
    """

    memory_frac: float = 0.8
    utilization: float = 0.8
    frontend_utilization: float = 0.8

    def __post_init__(self) -> None:
        for name in ("memory_frac", "utilization", "frontend_utilization"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
                raise ValueError(f"Thresholds.{name} must be a number in (0, 1] (got {value!r})")


def feasible(
    prediction: Prediction,
    slo_ms: ArrayLike,
    memory_used_mib: ArrayLike,
    memory_capacity_mib: ArrayLike,
    frontend_util: ArrayLike,
    thresholds: Thresholds | None = None,
    *,
    new_mask: ArrayLike | None = None,
    slo_percentile: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feasibility of every device configuration in ``prediction``, with the reason.

    Parameters
    ----------
    prediction : Prediction
        Latency and utilisation of the services, ``(..., K)`` / ``(...)``, for the configuration
        being judged (the new service included).
    slo_ms : array_like, (..., K)
        Latency target of each service [ms], > 0; ``inf`` = none.
    memory_used_mib : array_like, (...)
        Device memory the configuration uses [MiB].
    memory_capacity_mib : array_like, (...)
        The device's memory [MiB]; ``inf`` when unknown (memory rule passes), <= 0 fails.
    frontend_util : array_like, (...)
        Utilisation of the front end serving these services (node CPU), >= 0.
    thresholds : Thresholds, optional
        Limits (default :class:`Thresholds`).
    new_mask : array_like of bool, (..., K), optional
        The service(s) being placed; their SLO misses report ``SLO_VIOLATION_NEW``. When None
        no service is new (an existing configuration is being checked).
    slo_percentile : array_like, (..., K), optional
        Percentile (50..99.9) each SLO refers to, NaN = mean (see :mod:`.tail`).

    Returns
    -------
    ok : numpy.ndarray of bool, (...)
    reason : numpy.ndarray of int8, (...)
        :class:`ReasonCode` values (``ReasonCode(code).message`` explains one).

    Examples
    --------
    >>> from qosched.policies.latency.sharing import DeviceServices, predict
    >>> p = predict("time-slicing", DeviceServices.build([10.0, 10.0], [20.0, 30.0]))  # 45, 55 ms
    >>> ok, why = feasible(p, [40.0, 100.0], 100.0, 1000.0, 0.1, new_mask=[True, False])
    >>> bool(ok), ReasonCode(int(why)).name
    (False, 'SLO_VIOLATION_NEW')
    """
    th = thresholds if thresholds is not None else Thresholds()
    valid = prediction.latency_ms.shape
    slo = np.asarray(slo_ms, dtype=float)
    if slo.shape != valid:
        slo = np.broadcast_to(slo, valid)
    used, cap, fe = _checked(slo, memory_used_mib, memory_capacity_mib, frontend_util)

    # Masked entries carry latency 0 and utilisation 0 (sharing.Prediction), so they never fail.
    if slo_percentile is None:
        latency = prediction.latency_ms
    else:
        latency = percentile_latency_ms(prediction, np.broadcast_to(np.asarray(slo_percentile, float), valid))
    miss = latency > slo
    is_new = (
        np.zeros(valid, dtype=bool)
        if new_mask is None
        else np.broadcast_to(np.asarray(new_mask, bool), valid)
    )

    util_bad = ~(prediction.utilization <= th.utilization) | (
        ~(prediction.service_utilization <= th.utilization)
    ).any(axis=-1)
    reason = _first_failure(
        _memory_bad(used, cap, th),
        util_bad,
        ~(fe <= th.frontend_utilization),
        (miss & is_new).any(axis=-1),
        (miss & ~is_new).any(axis=-1),
    )
    return reason == ReasonCode.OK, reason


def _checked(
    slo: np.ndarray, memory_used_mib: ArrayLike, memory_capacity_mib: ArrayLike, frontend_util: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arguments' checks (one pass each on the happy path; NaN fails every comparison)."""
    used = np.asarray(memory_used_mib, dtype=float)
    cap = np.asarray(memory_capacity_mib, dtype=float)
    fe = np.asarray(frontend_util, dtype=float)
    if not (slo > 0).all():
        raise ValueError("slo_ms must be > 0 (inf for no target), not NaN")
    if not (used >= 0).all():
        raise ValueError("memory_used_mib must be >= 0, not NaN")
    if np.isnan(cap).any():
        raise ValueError("memory_capacity_mib must not be NaN")
    if not (fe >= 0).all():
        raise ValueError("frontend_util must be >= 0, not NaN")
    return used, cap, fe


def _memory_bad(used: np.ndarray, cap: np.ndarray, th: Thresholds) -> np.ndarray:
    """Rule 1 fails: memory over ``memory_frac`` of the device's, or a device without memory."""
    return ~(used <= th.memory_frac * cap) | (cap <= 0)


def _first_failure(
    memory_bad: np.ndarray,
    util_bad: np.ndarray,
    frontend_bad: np.ndarray,
    slo_new_bad: np.ndarray,
    slo_old_bad: np.ndarray,
) -> np.ndarray:
    """The reason code of the first rule that fails, in the order of the module docstring."""
    shape = np.broadcast_shapes(
        memory_bad.shape, util_bad.shape, frontend_bad.shape, slo_new_bad.shape, slo_old_bad.shape
    )
    reason = np.zeros(shape, dtype=np.int8)
    # Assign in reverse priority so the first rule that fails wins (a rule nothing fails is
    # skipped: the usual case).
    for bad, code in (
        (slo_old_bad, ReasonCode.SLO_VIOLATION_EXISTING),
        (slo_new_bad, ReasonCode.SLO_VIOLATION_NEW),
        (frontend_bad, ReasonCode.FRONTEND),
        (util_bad, ReasonCode.UTILIZATION),
        (memory_bad, ReasonCode.MEMORY),
    ):
        if bad.any():
            reason = np.where(bad, np.int8(code), reason)
    return reason


def slack_frac(latency_ms: ArrayLike, slo_ms: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Latency slack of each device: min over its services with an SLO of (SLO − latency)/SLO.

    Over the last axis of ``(..., K)`` arrays, valid (``mask``) entries with a finite SLO only;
    capped at 1, and 1 where no service has an SLO. ≤ 0 where some SLO is missed (``-inf`` where
    a latency is unbounded).

    Examples
    --------
    >>> slack_frac([[45.0, 55.0, 0.0]], [[100.0, 60.0, np.inf]]).round(4).tolist()
    [0.0833]
    """
    lat = np.asarray(latency_ms, dtype=float)
    slo = np.asarray(slo_ms, dtype=float)
    keep = np.isfinite(slo) if mask is None else np.asarray(mask, bool) & np.isfinite(slo)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(keep, (slo - lat) / slo, np.inf)
    k = rel.shape[-1]
    if 0 < k <= _SHORT_AXIS:
        # Column by column over a short last axis: about 10x faster than numpy's reduction,
        # whose inner loop would run over the K entries of one device at a time. (min is exact
        # in any order.)
        low = rel[..., 0]
        for j in range(1, k):
            low = np.minimum(low, rel[..., j])
    else:
        low = np.min(rel, axis=-1)
    return np.minimum(low, 1.0)


@dataclass(frozen=True, slots=True)
class SharedWaitVerdict:
    """:func:`feasible_shared_wait`'s answer per device (arrays of shape (E,)).

    ok, reason: as :func:`feasible` (``reason`` a :class:`ReasonCode`); latency_ms: the new
    service's mean latency S + W [ms]; slack_frac: :func:`slack_frac` of the device's services,
    the new one included.
    """

    ok: np.ndarray
    reason: np.ndarray
    latency_ms: np.ndarray
    slack_frac: np.ndarray


def feasible_shared_wait(
    utilization: np.ndarray,
    wait_ms: np.ndarray,
    service_ms: np.ndarray,
    slo_ms: np.ndarray,
    new_service_ms: np.ndarray,
    new_slo_ms: float,
    memory_used_mib: ArrayLike,
    memory_capacity_mib: ArrayLike,
    frontend_util: ArrayLike,
    thresholds: Thresholds | None = None,
) -> SharedWaitVerdict:
    """:func:`feasible` for one service added to devices whose services all wait the same W.

    That is the GPU time-slicing model (``sharing.time_slicing_wait_ms``): every service's queue
    is the device's, with utilisation ρ, and service i's mean latency is Sᵢ + W. The rule is the
    same as :func:`feasible`'s (memory, utilisation, front end, the new service's SLO, then the
    SLOs of those already there), with mean SLOs; it reads ρ and W per device and only S and the
    SLO per service, so its cost is one comparison per service instead of a full prediction.
    Results are identical to :func:`feasible` (and :func:`slack_frac`) on the prediction of the
    appended arrays.

    Parameters
    ----------
    utilization, wait_ms : (E,) float
        ρ and W of each device with the new service (``inf`` W where ρ ≥ 1).
    service_ms, slo_ms : (E, K) float
        S and mean SLO of the services already on the device; an entry with SLO ``inf`` (no
        target, or an empty slot) is never checked, whatever its S.
    new_service_ms : (E,) float
        S of the new service on each device. ``new_slo_ms``: its mean SLO (> 0, ``inf`` = none).
    memory_used_mib, memory_capacity_mib, frontend_util, thresholds
        As in :func:`feasible`, per device.

    Examples
    --------
    λ = (10, 10) rps, S = (20, 30) ms: W = 25 ms (see ``time_slicing_wait_ms``); the existing
    service (S = 30 ms, SLO 100 ms) is at 55 ms, the new one (S = 20 ms, SLO 40 ms) at 45 ms.

    >>> v = feasible_shared_wait(
    ...     np.array([0.5]), np.array([25.0]), np.array([[30.0]]), np.array([[100.0]]),
    ...     np.array([20.0]), 40.0, 100.0, 1000.0, 0.1)
    >>> ReasonCode(int(v.reason[0])).name, v.latency_ms.tolist()
    ('SLO_VIOLATION_NEW', [45.0])
    """
    th = thresholds if thresholds is not None else Thresholds()
    slo = np.asarray(slo_ms, dtype=float)
    new_slo = float(new_slo_ms)
    if not new_slo > 0:
        raise ValueError("slo_ms must be > 0 (inf for no target), not NaN")
    used, cap, fe = _checked(slo, memory_used_mib, memory_capacity_mib, frontend_util)
    wait = np.asarray(wait_ms, dtype=float)
    latency = np.asarray(new_service_ms, dtype=float) + wait
    k = slo.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        # r = (SLO − L)/SLO per existing service, slot by slot (each step over every device).
        # r is NaN exactly where the SLO is inf (no target, or an empty slot), and fmin skips
        # NaN, so those entries drop out as slack_frac's mask drops them.
        worst = np.full(latency.shape, np.inf)
        for j in range(k):
            slo_j = slo[:, j]
            worst = np.fmin(worst, (slo_j - (service_ms[:, j] + wait)) / slo_j)
        # L > SLO exactly when r < 0 (SLO − L rounds to 0 only when they are equal, and
        # rounding keeps the sign); only an r that underflowed to −0 could hide a miss, so
        # rows at r == 0 are compared directly.
        slo_old_bad = worst < 0
        tie = np.flatnonzero(worst == 0)
        if tie.size:
            lat_tie = service_ms[tie] + wait[tie, None]
            slo_old_bad[tie] = (lat_tie > slo[tie]).any(axis=-1)
        new_rel = (new_slo - latency) / new_slo if np.isfinite(new_slo) else np.inf
    reason = _first_failure(
        _memory_bad(used, cap, th),
        ~(np.asarray(utilization) <= th.utilization),
        ~(fe <= th.frontend_utilization),
        latency > new_slo,
        slo_old_bad,
    )
    slack = np.minimum(np.fmin(worst, new_rel), 1.0)
    return SharedWaitVerdict(reason == ReasonCode.OK, reason, latency, slack)
