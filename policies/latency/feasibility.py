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

__all__ = ["ReasonCode", "Thresholds", "feasible"]


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
    used = np.asarray(memory_used_mib, dtype=float)
    cap = np.asarray(memory_capacity_mib, dtype=float)
    fe = np.asarray(frontend_util, dtype=float)
    # One check per argument on the happy path (NaN fails every comparison); details on failure.
    if not (slo > 0).all():
        raise ValueError("slo_ms must be > 0 (inf for no target), not NaN")
    if not (used >= 0).all():
        raise ValueError("memory_used_mib must be >= 0, not NaN")
    if np.isnan(cap).any():
        raise ValueError("memory_capacity_mib must not be NaN")
    if not (fe >= 0).all():
        raise ValueError("frontend_util must be >= 0, not NaN")

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

    memory_bad = ~(used <= th.memory_frac * cap) | (cap <= 0)
    util_bad = ~(prediction.utilization <= th.utilization) | (
        ~(prediction.service_utilization <= th.utilization)
    ).any(axis=-1)
    frontend_bad = ~(fe <= th.frontend_utilization)
    slo_new_bad = (miss & is_new).any(axis=-1)
    slo_old_bad = (miss & ~is_new).any(axis=-1)

    shape = np.broadcast_shapes(
        memory_bad.shape, util_bad.shape, frontend_bad.shape, slo_new_bad.shape, slo_old_bad.shape
    )
    reason = np.zeros(shape, dtype=np.int8)
    # Assign in reverse priority so the first rule that fails wins.
    for bad, code in (
        (slo_old_bad, ReasonCode.SLO_VIOLATION_EXISTING),
        (slo_new_bad, ReasonCode.SLO_VIOLATION_NEW),
        (frontend_bad, ReasonCode.FRONTEND),
        (util_bad, ReasonCode.UTILIZATION),
        (memory_bad, ReasonCode.MEMORY),
    ):
        reason = np.where(bad, np.int8(code), reason)
    return reason == ReasonCode.OK, reason
