r"""A simulated plant for the control law: M/M/1 services whose service rate scales with their share.

Service :math:`i` with share :math:`x_i` serves requests at rate :math:`x_i \mu_i`
(:math:`\mu_i` [requests/s per unit of share]; with shares in millicores, a request that needs
:math:`w` ms of one whole core has :math:`\mu = 1/w` requests/s per millicore) and
receives Poisson arrivals at :math:`\lambda_i`. Its response time is exponential with rate
:math:`x_i\mu_i - \lambda_i` (M/M/1 FCFS), so

.. math:: L_i = \frac{1000\,k}{x_i \mu_i - \lambda_i}\ \text{ms}, \quad k = 1 \text{ (mean) or }
          -\ln(1 - p/100)\ (p\text{-th percentile}),

``inf`` when :math:`x_i\mu_i \le \lambda_i` (unstable). :func:`run_closed_loop` iterates
:func:`~qosched.policies.control.law.control_step` against it: the steady-state loop the unit
tests, the benchmark and ``docs/controller.md`` use. The closed-loop test in
``tests/extender/test_controller_loop.py`` runs the same plant as a real-time event simulation
behind Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.control.law import (
    ControlSettings,
    ControlStep,
    ServiceInput,
    control_step,
    percentile_factor,
)
from qosched.policies.fairness._validate import FloatArray, as_float_array
from qosched.policies.fairness.shares import FairShareSolverCache


@dataclass(frozen=True, slots=True)
class MM1Plant:
    """Steady-state latency of M/M/1 services as a function of their shares.

    Attributes
    ----------
    service_rate_per_share_rps : numpy.ndarray
        :math:`\\mu_i` [requests/s per unit of share], ``> 0``.
    rate_rps : numpy.ndarray
        :math:`\\lambda_i` [requests/s], ``>= 0``.
    percentile : numpy.ndarray
        Percentile the latency is reported at (NaN = mean).
    """

    service_rate_per_share_rps: FloatArray
    rate_rps: FloatArray
    percentile: FloatArray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        mu = as_float_array("service_rate_per_share_rps", self.service_rate_per_share_rps)
        lam = as_float_array("rate_rps", self.rate_rps)
        if mu.shape != lam.shape or mu.ndim != 1:
            raise ValueError(
                f"service_rate_per_share_rps, rate_rps: shapes {mu.shape} and {lam.shape} differ"
            )
        if (mu <= 0).any():
            raise ValueError("service_rate_per_share_rps: must be > 0")
        pct = np.asarray(self.percentile, dtype=np.float64)
        if pct.size == 0:
            pct = np.full(mu.shape, np.nan)
        if pct.shape != mu.shape:
            raise ValueError(f"percentile: shape {pct.shape}, expected {mu.shape}")
        object.__setattr__(self, "service_rate_per_share_rps", mu)
        object.__setattr__(self, "rate_rps", lam)
        object.__setattr__(self, "percentile", pct)

    @property
    def n(self) -> int:
        return int(self.rate_rps.size)

    def latency_ms(self, shares: ArrayLike) -> FloatArray:
        """:math:`1000 k / (x\\mu - \\lambda)` [ms], ``inf`` where the queue is unstable."""
        x = as_float_array("shares", shares)
        slack = x * self.service_rate_per_share_rps - self.rate_rps
        k = percentile_factor(self.percentile)
        with np.errstate(divide="ignore"):
            return np.where(slack > 0, 1000.0 * k / np.where(slack > 0, slack, 1.0), np.inf)

    def share_for_latency(self, latency_ms: ArrayLike) -> FloatArray:
        """Inverse: the share at which the latency equals ``latency_ms`` (the true demand)."""
        lat = as_float_array("latency_ms", latency_ms)
        k = percentile_factor(self.percentile)
        return (1000.0 * k / lat + self.rate_rps) / self.service_rate_per_share_rps


@dataclass(frozen=True, slots=True)
class LoopTrace:
    """A closed-loop run: ``shares[k]`` and ``latency_ms[k]`` before step ``k`` (``steps + 1`` rows)."""

    shares: FloatArray
    latency_ms: FloatArray
    steps: tuple[ControlStep, ...]

    def satisfied(self, slo_ms: ArrayLike) -> np.ndarray:
        """Services meeting their SLO at each row, ``(steps + 1, n)`` booleans."""
        return self.latency_ms <= np.asarray(slo_ms, dtype=np.float64)

    def converged_at(self, rel_tol: float = 0.01) -> int | None:
        """First step after which no share moves by more than ``rel_tol`` of the pool any more."""
        if len(self.steps) == 0:
            return None
        cap = max(self.steps[0].capacity, 1e-12)
        moves = np.abs(np.diff(self.shares, axis=0)).max(axis=1) / cap
        for k in range(len(moves)):
            if (moves[k:] <= rel_tol).all():
                return k
        return None


def run_closed_loop(
    plant: MM1Plant,
    services: Sequence[ServiceInput],
    capacity: float,
    steps: int,
    settings: ControlSettings | None = None,
    *,
    rate_estimate_rps: ArrayLike | None = None,
    solvers: FairShareSolverCache | None = None,
) -> LoopTrace:
    """Iterate observe → :func:`control_step` → apply against the plant for ``steps`` steps.

    ``services`` give the initial shares, SLOs, bounds and classes (their ``observed_ms`` is
    replaced by the plant's latency each step). ``rate_estimate_rps`` is what the law is told
    about the rates (NaN entries = unknown: multiplicative rule); default: the true rates.
    """
    if len(services) != plant.n:
        raise ValueError(f"services: {len(services)} services for a plant of {plant.n}")
    est = plant.rate_rps if rate_estimate_rps is None else np.asarray(rate_estimate_rps, dtype=np.float64)
    cache = solvers if solvers is not None else FairShareSolverCache()
    x = np.array([sv.share for sv in services], dtype=np.float64)
    shares = [x.copy()]
    lats = [plant.latency_ms(x)]
    records: list[ControlStep] = []
    for _ in range(steps):
        lat = lats[-1]
        step_in = [
            replace(
                sv,
                share=float(x[i]),
                observed_ms=float(lat[i]),
                rate_rps=None if np.isnan(est[i]) else float(est[i]),
                percentile=None if np.isnan(plant.percentile[i]) else float(plant.percentile[i]),
            )
            for i, sv in enumerate(services)
        ]
        step = control_step(step_in, capacity, settings, cache)
        records.append(step)
        x = step.shares.copy()
        shares.append(x.copy())
        lats.append(plant.latency_ms(x))
    return LoopTrace(np.array(shares), np.array(lats), tuple(records))
