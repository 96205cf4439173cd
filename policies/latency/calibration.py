r"""Fit a device type's contention terms (:class:`~.sharing.ModelParams`) to co-located measurements.

A *run* is one configuration of services on one device (or several devices of one type) with
the mean latency measured for each service. :func:`fit` chooses the named ``ModelParams``
fields that minimise the squared **relative** errors of the predictions over the runs,

.. math:: \min_\theta \sum_{r,i} \left(\frac{\hat R_{r,i}(\theta) - R_{r,i}}{R_{r,i}}\right)^2

with ``scipy.optimize.least_squares`` (trust-region reflective, within the field's bounds).
Relative errors weigh a 5 ms and a 500 ms service alike; an unbounded prediction (ρ ≥ 1 at a
trial θ) counts as a relative error of :data:`RESIDUAL_CAP`, so the optimiser is pushed back
rather than stopped by ``inf``.

Report a fit only on runs it did not see: :func:`holdout` fits on some runs and gives the MAPE
on the others; :func:`leave_one_out` does that for each run in turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares

from qosched.policies.latency.sharing import SHARING_MODELS, DeviceServices, ModelParams, predict

__all__ = [
    "FITTABLE_FIELDS",
    "RESIDUAL_CAP",
    "CalibrationRun",
    "HoldoutResult",
    "fit",
    "holdout",
    "leave_one_out",
    "mape",
    "relative_residuals",
]

#: ModelParams fields :func:`fit` can estimate, with their bounds (the ModelParams validation range).
FITTABLE_FIELDS: Final[dict[str, tuple[float, float]]] = {
    "colocation_overhead_frac": (0.0, 10.0),
    "swap_prob_scale": (0.0, 10.0),
    "mps_contention_frac": (0.0, 10.0),
}
#: Relative error charged for an unbounded (inf) prediction during the fit.
RESIDUAL_CAP: Final = 10.0


@dataclass(frozen=True, slots=True)
class CalibrationRun:
    """One measured co-location: services, sharing mode, measured mean latency per service.

    Attributes
    ----------
    sharing : str
        Sharing mode (a key of ``SHARING_MODELS``).
    services : DeviceServices
        The services, shape ``(..., K)``.
    measured_latency_ms : numpy.ndarray
        Measured mean latency [ms], same shape; NaN where not measured. Must be > 0 elsewhere.
    label : str
        Free text naming the run in reports.
    """

    sharing: str
    services: DeviceServices
    measured_latency_ms: np.ndarray
    label: str = ""

    def __post_init__(self) -> None:
        if self.sharing not in SHARING_MODELS:
            raise ValueError(f"CalibrationRun {self.label!r}: unknown sharing mode {self.sharing!r}")
        measured = np.asarray(self.measured_latency_ms, dtype=float)
        if measured.shape != self.services.shape:
            raise ValueError(
                f"CalibrationRun {self.label!r}: measured_latency_ms shape {measured.shape} != "
                f"services shape {self.services.shape}"
            )
        used = self.services.mask & ~np.isnan(measured)
        if not used.any():
            raise ValueError(f"CalibrationRun {self.label!r}: no measured latency of a valid service")
        if not (np.isfinite(measured[used]) & (measured[used] > 0)).all():
            raise ValueError(f"CalibrationRun {self.label!r}: measured_latency_ms must be finite and > 0")
        object.__setattr__(self, "measured_latency_ms", measured)

    @property
    def used(self) -> np.ndarray:
        """Entries that take part in the fit: valid services with a measurement."""
        return self.services.mask & ~np.isnan(self.measured_latency_ms)

    def predicted_ms(self, params: ModelParams) -> np.ndarray:
        """Predicted latency of the used entries (1-D) [ms]."""
        return predict(self.sharing, self.services, params).latency_ms[self.used]

    def measured_ms(self) -> np.ndarray:
        """Measured latency of the used entries (1-D) [ms]."""
        return self.measured_latency_ms[self.used]


def mape(predicted: ArrayLike, measured: ArrayLike) -> float:
    r"""Mean absolute percentage error, as a fraction: mean |p − m| / m.

    Parameters
    ----------
    predicted, measured : array_like
        Same (broadcastable) shape; entries where ``measured`` is NaN are skipped.

    Returns
    -------
    float
        0.02 means 2 %. ``inf`` if a compared prediction is inf.

    Raises
    ------
    ValueError
        No entry to compare, a non-positive measurement, or a NaN prediction.

    Examples
    --------
    >>> mape([110.0, 45.0], [100.0, 50.0])  # (10 % + 10 %) / 2
    0.1
    """
    p, m = np.broadcast_arrays(np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float))
    used = ~np.isnan(m)
    if not used.any():
        raise ValueError("mape: no measured value to compare")
    if np.any(m[used] <= 0) or np.any(~np.isfinite(m[used])):
        raise ValueError("mape: measured values must be finite and > 0")
    if np.any(np.isnan(p[used])):
        raise ValueError("mape: predicted values must not be NaN")
    if np.any(np.isinf(p[used])):
        return float("inf")
    return float(np.mean(np.abs(p[used] - m[used]) / m[used]))


def _check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    names = tuple(fields)
    if not names:
        raise ValueError("fit: name at least one field to fit")
    unknown = [f for f in names if f not in FITTABLE_FIELDS]
    if unknown:
        raise ValueError(f"fit: cannot fit {unknown}; fittable fields: {', '.join(FITTABLE_FIELDS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"fit: field listed twice in {names}")
    return names


def _with(base: ModelParams, fields: Sequence[str], values: np.ndarray) -> ModelParams:
    changes: dict[str, Any] = {f: float(v) for f, v in zip(fields, values, strict=True)}
    return dataclasses.replace(base, **changes)


def relative_residuals(params: ModelParams, runs: Sequence[CalibrationRun]) -> np.ndarray:
    """(predicted − measured)/measured of every used entry of every run; inf → ±RESIDUAL_CAP."""
    parts = []
    for run in runs:
        p, m = run.predicted_ms(params), run.measured_ms()
        parts.append(np.where(np.isfinite(p), (p - m) / m, RESIDUAL_CAP))
    return np.concatenate(parts)


def fit(
    runs: Sequence[CalibrationRun],
    fields: Sequence[str] = ("colocation_overhead_frac",),
    base: ModelParams | None = None,
) -> ModelParams:
    """Least-squares fit of ``fields`` of ``base`` to the runs' measured latencies.

    Parameters
    ----------
    runs : sequence of CalibrationRun
        Measurements (at least as many measured entries as fields).
    fields : sequence of str
        Names from :data:`FITTABLE_FIELDS`.
    base : ModelParams, optional
        Values of the other fields, and the starting point (default ``ModelParams()``).

    Returns
    -------
    ModelParams
        ``base`` with the fitted fields replaced.
    """
    names = _check_fields(fields)
    start = base if base is not None else ModelParams()
    if not runs:
        raise ValueError("fit: no runs")
    n_points = sum(int(r.used.sum()) for r in runs)
    if n_points < len(names):
        raise ValueError(f"fit: {n_points} measured value(s) cannot determine {len(names)} field(s)")
    lower = np.array([FITTABLE_FIELDS[f][0] for f in names])
    upper = np.array([FITTABLE_FIELDS[f][1] for f in names])
    # Start strictly inside the bounds: trust-region reflective stalls when x0 sits on a bound
    # (e.g. the default overhead 0), taking one tiny step and stopping on ftol.
    margin = 1e-3 * (upper - lower)
    x0 = np.clip([float(getattr(start, f)) for f in names], lower + margin, upper - margin)

    def residuals(x: np.ndarray) -> np.ndarray:
        return relative_residuals(_with(start, names, x), runs)

    result = least_squares(residuals, x0, bounds=(lower, upper), method="trf", x_scale=1.0)
    return _with(start, names, np.clip(result.x, lower, upper))


@dataclass(frozen=True, slots=True)
class HoldoutResult:
    """A fit on the training runs, judged on the test runs.

    params : the fitted parameters.
    train_mape, test_mape : MAPE (fractions) on the training and test runs.
    test_labels : labels of the test runs.
    test_predicted_ms, test_measured_ms : the test entries compared (1-D, run order).
    """

    params: ModelParams
    train_mape: float
    test_mape: float
    test_labels: tuple[str, ...]
    test_predicted_ms: np.ndarray
    test_measured_ms: np.ndarray


def _pooled(runs: Sequence[CalibrationRun], params: ModelParams) -> tuple[np.ndarray, np.ndarray]:
    p = np.concatenate([r.predicted_ms(params) for r in runs])
    m = np.concatenate([r.measured_ms() for r in runs])
    return p, m


def holdout(
    runs: Sequence[CalibrationRun],
    train: Sequence[int],
    test: Sequence[int],
    fields: Sequence[str] = ("colocation_overhead_frac",),
    base: ModelParams | None = None,
) -> HoldoutResult:
    """Fit on ``runs[train]``, report the MAPE on ``runs[test]`` (index sequences, disjoint)."""
    train_idx, test_idx = list(train), list(test)
    if not train_idx or not test_idx:
        raise ValueError("holdout: train and test must both be non-empty")
    if set(train_idx) & set(test_idx):
        raise ValueError(f"holdout: runs {sorted(set(train_idx) & set(test_idx))} are in train and test")
    for i in train_idx + test_idx:
        if not 0 <= i < len(runs):
            raise ValueError(f"holdout: run index {i} out of range 0..{len(runs) - 1}")
    train_runs = [runs[i] for i in train_idx]
    test_runs = [runs[i] for i in test_idx]
    params = fit(train_runs, fields, base)
    p_train, m_train = _pooled(train_runs, params)
    p_test, m_test = _pooled(test_runs, params)
    return HoldoutResult(
        params=params,
        train_mape=mape(p_train, m_train),
        test_mape=mape(p_test, m_test),
        test_labels=tuple(r.label for r in test_runs),
        test_predicted_ms=p_test,
        test_measured_ms=m_test,
    )


def leave_one_out(
    runs: Sequence[CalibrationRun],
    fields: Sequence[str] = ("colocation_overhead_frac",),
    base: ModelParams | None = None,
) -> tuple[float, tuple[HoldoutResult, ...]]:
    """Hold out each run in turn; returns (MAPE over all held-out entries, the per-run results)."""
    if len(runs) < 2:
        raise ValueError("leave_one_out needs at least two runs")
    results = tuple(
        holdout(runs, [j for j in range(len(runs)) if j != i], [i], fields, base) for i in range(len(runs))
    )
    pooled_p = np.concatenate([r.test_predicted_ms for r in results])
    pooled_m = np.concatenate([r.test_measured_ms for r in results])
    return mape(pooled_p, pooled_m), results
