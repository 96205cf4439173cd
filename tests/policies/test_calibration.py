"""Least-squares calibration of ModelParams: recovery on synthetic runs, holdout, MAPE, errors."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from qosched.policies.latency import calibration
from qosched.policies.latency.calibration import (
    CalibrationRun,
    fit,
    holdout,
    leave_one_out,
    mape,
    relative_residuals,
)
from qosched.policies.latency.sharing import DeviceServices, ModelParams, predict


def _synthetic_runs(mode: str, truth: ModelParams, n: int = 6, noise: float = 0.0, seed: int = 1):
    """Runs whose 'measurements' are the model's own predictions under ``truth`` (× noise)."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        k = 3
        ds = DeviceServices.build(
            rng.uniform(1, 12, k),
            rng.uniform(5, 30, k),
            swap_ms=rng.uniform(2, 15, k),
            share_frac=np.full(k, 1 / k),
        )
        measured = predict(mode, ds, truth).latency_ms * (1 + noise * rng.standard_normal(k))
        runs.append(CalibrationRun(mode, ds, measured, label=f"run{i}"))
    return runs


@pytest.mark.parametrize(
    ("mode", "field", "value"),
    [
        ("time-slicing", "colocation_overhead_frac", 0.15),
        ("edgetpu", "swap_prob_scale", 0.6),
        ("mps", "mps_contention_frac", 0.25),
        ("cpu", "colocation_overhead_frac", 0.3),
    ],
    ids=["timeslice-overhead", "edgetpu-swap-prob", "mps-contention", "cpu-overhead"],
)
def test_fit_recovers_the_true_parameter(mode: str, field: str, value: float) -> None:
    truth = ModelParams(**{field: value})
    runs = _synthetic_runs(mode, truth)
    fitted = fit(runs, (field,))
    assert getattr(fitted, field) == pytest.approx(value, abs=1e-6)
    assert np.max(np.abs(relative_residuals(fitted, runs))) < 1e-7


def test_fit_two_fields_jointly() -> None:
    truth = ModelParams(colocation_overhead_frac=0.1, swap_prob_scale=0.7)
    runs = _synthetic_runs("edgetpu", truth, n=8)
    fitted = fit(runs, ("colocation_overhead_frac", "swap_prob_scale"))
    assert fitted.colocation_overhead_frac == pytest.approx(0.1, abs=1e-5)
    assert fitted.swap_prob_scale == pytest.approx(0.7, abs=1e-5)
    assert fitted.swap_moment == ModelParams().swap_moment  # other fields come from base


def test_fit_stays_within_bounds_and_noise_is_tolerated() -> None:
    # Measurements 20 % *faster* than the model with no overhead: the best overhead is negative,
    # but the bound keeps it at 0.
    runs = _synthetic_runs("time-slicing", ModelParams(), n=4)
    faster = [CalibrationRun(r.sharing, r.services, r.measured_latency_ms * 0.8, r.label) for r in runs]
    assert fit(faster).colocation_overhead_frac == pytest.approx(0.0, abs=1e-8)
    noisy = _synthetic_runs("time-slicing", ModelParams(colocation_overhead_frac=0.2), n=12, noise=0.02)
    assert fit(noisy).colocation_overhead_frac == pytest.approx(0.2, abs=0.03)


def test_holdout_reports_on_unseen_runs() -> None:
    truth = ModelParams(colocation_overhead_frac=0.2)
    runs = _synthetic_runs("time-slicing", truth, n=6, noise=0.01, seed=5)
    result = holdout(runs, train=[0, 1, 2, 3], test=[4, 5])
    assert result.test_labels == ("run4", "run5")
    assert result.params.colocation_overhead_frac == pytest.approx(0.2, abs=0.03)
    assert result.test_mape < 0.03
    assert result.train_mape < 0.03
    assert result.test_mape == pytest.approx(mape(result.test_predicted_ms, result.test_measured_ms))
    pooled, per_run = leave_one_out(runs)
    assert len(per_run) == 6
    assert pooled < 0.03


@pytest.mark.parametrize(
    ("predicted", "measured", "want"),
    [
        ([110.0, 45.0], [100.0, 50.0], 0.1),  # (10 % + 10 %)/2
        ([100.0, 999.0], [100.0, float("nan")], 0.0),  # NaN measurement skipped
        ([math.inf, 50.0], [100.0, 50.0], math.inf),
    ],
    ids=["two-points", "nan-skipped", "inf-prediction"],
)
def test_mape_table(predicted, measured, want: float) -> None:
    assert mape(predicted, measured) == pytest.approx(want)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mape([1.0], [0.0]), "measured values must be finite and > 0"),
        (lambda: mape([1.0], [float("nan")]), "no measured value"),
        (lambda: mape([float("nan")], [1.0]), "must not be NaN"),
        (lambda: fit([], ("colocation_overhead_frac",)), "no runs"),
        (lambda: fit(_synthetic_runs("edgetpu", ModelParams(), 1), ("swap_moment",)), "cannot fit"),
        (lambda: fit(_synthetic_runs("edgetpu", ModelParams(), 1), ()), "at least one field"),
        (lambda: holdout(_synthetic_runs("edgetpu", ModelParams(), 3), [0, 1], [1]), "in train and test"),
        (lambda: holdout(_synthetic_runs("edgetpu", ModelParams(), 3), [0], [7]), "out of range"),
        (lambda: leave_one_out(_synthetic_runs("edgetpu", ModelParams(), 1)), "at least two"),
        (
            lambda: CalibrationRun("edgetpu", DeviceServices.build([1.0], [2.0]), np.array([1.0, 2.0])),
            "shape",
        ),
        (lambda: CalibrationRun("edgetpu", DeviceServices.build([1.0], [2.0]), np.array([-1.0])), "> 0"),
        (lambda: CalibrationRun("warp", DeviceServices.build([1.0], [2.0]), np.array([1.0])), "sharing mode"),
    ],
    ids=[
        "mape-zero-measured",
        "mape-nothing",
        "mape-nan-prediction",
        "fit-no-runs",
        "fit-unfittable",
        "fit-no-fields",
        "holdout-overlap",
        "holdout-range",
        "loo-one-run",
        "run-shape",
        "run-negative",
        "run-mode",
    ],
)
def test_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_unbounded_predictions_are_capped_in_the_residuals() -> None:
    ds = DeviceServices.build([40.0, 40.0], [20.0, 20.0])  # ρ = 1.6: inf latency
    run = CalibrationRun("time-slicing", ds, np.array([100.0, 100.0]))
    np.testing.assert_array_equal(relative_residuals(ModelParams(), [run]), [calibration.RESIDUAL_CAP] * 2)


def test_doctests() -> None:
    result = doctest.testmod(calibration)
    assert result.attempted > 0
    assert result.failed == 0
