r"""Percentile latency for SLOs stated at a percentile (annotation ``qosched.io/slo-percentile``).

The queueing models give means. For a percentile p the waiting time W of a single-server queue is
approximated by the classic exponential tail

.. math:: P(W > t) \approx \rho\, e^{-t\rho/E[W]}

— the probability of waiting is ρ (exact for M/G/1 by PASTA), and a wait, when there is one, is
exponential with mean E[W]/ρ (exact for M/M/1, the heavy-traffic limit of M/G/1 by Kingman).
Solving P(W > t) = 1 − p gives

.. math:: t_p = \frac{E[W]}{\rho}\,\ln\frac{\rho}{1-p} \;\; (\rho > 1 - p), \quad 0 \text{ otherwise}

and the response-time percentile is approximated by E[S'] + t_p: the service time is taken at its
mean (its own spread is ignored, so the approximation is low when service times vary a lot and
load is light, where t_p = 0). Processor-sharing queues (``cpu``) use the same form with their
mean wait; there it is a rougher approximation.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.latency.sharing import Prediction

__all__ = [
    "PERCENTILE_MAX",
    "PERCENTILE_MIN",
    "latency_quantile_ms",
    "percentile_latency_ms",
    "wait_quantile_ms",
]

#: Range of ``qosched.io/slo-percentile`` accepted (contract §1).
PERCENTILE_MIN: Final = 50.0
PERCENTILE_MAX: Final = 99.9


def _percentile_frac(percentile: ArrayLike) -> np.ndarray:
    """p/100 as an array; NaN entries (no percentile: the SLO is on the mean) stay NaN."""
    pct = np.asarray(percentile, dtype=float)
    given = ~np.isnan(pct)
    if np.any(given & ~((pct >= PERCENTILE_MIN) & (pct <= PERCENTILE_MAX))):
        bad = pct[given & ~((pct >= PERCENTILE_MIN) & (pct <= PERCENTILE_MAX))].ravel()[0]
        raise ValueError(f"percentile must be in {PERCENTILE_MIN:g}..{PERCENTILE_MAX:g} (got {bad!r})")
    return pct / 100.0


def wait_quantile_ms(wait_ms: ArrayLike, busy_prob: ArrayLike, percentile: ArrayLike) -> np.ndarray:
    r"""p-quantile of the waiting time under the exponential-tail approximation [ms].

    Parameters
    ----------
    wait_ms : array_like
        Mean wait E[W] [ms], >= 0 (inf allowed: unbounded queue).
    busy_prob : array_like
        P(W > 0) ≈ ρ of the queue, in [0, 1] (values ≥ 1 mean unbounded).
    percentile : array_like
        p in 50..99.9 [%].

    Returns
    -------
    numpy.ndarray
        t_p = (E[W]/ρ)·ln(ρ/(1 − p)) where ρ > 1 − p, else 0; inf where E[W] or ρ is unbounded.

    Examples
    --------
    M/M/1 with ρ = 0.5, E[W] = 20 ms: t_95 = 40·ln(0.5/0.05) = 40·ln 10:

    >>> round(float(wait_quantile_ms(20.0, 0.5, 95.0)), 3)
    92.103
    >>> float(wait_quantile_ms(20.0, 0.5, 50.0))  # ρ ≤ 1 − p: half of the requests do not wait
    0.0
    """
    w = np.asarray(wait_ms, dtype=float)
    rho = np.asarray(busy_prob, dtype=float)
    if np.any(np.isnan(w)) or np.any(w < 0):
        raise ValueError("wait_ms must be >= 0 and not NaN")
    if np.any(np.isnan(rho)) or np.any(rho < 0):
        raise ValueError("busy_prob must be >= 0 and not NaN")
    p = _percentile_frac(percentile)
    if np.any(np.isnan(p)):
        raise ValueError("percentile must be given (50..99.9)")
    w, rho, p = np.broadcast_arrays(w, rho, p)
    unbounded = ~np.isfinite(w) | (rho >= 1.0)
    waits = (rho > 1.0 - p) & ~unbounded & (w > 0)
    out = np.zeros(w.shape)
    safe_rho = np.where(waits, rho, 1.0)
    np.multiply(w / safe_rho, np.log(safe_rho / (1.0 - p)), out=out, where=waits)
    return np.where(unbounded, np.inf, out)


def latency_quantile_ms(
    service_ms: ArrayLike, wait_ms: ArrayLike, busy_prob: ArrayLike, percentile: ArrayLike
) -> np.ndarray:
    r"""p-quantile of the response time ≈ E[S'] + t_p [ms]; NaN percentile → the mean E[S'] + E[W].

    Parameters
    ----------
    service_ms : array_like
        Effective mean service time E[S'] [ms].
    wait_ms : array_like
        Mean wait E[W] [ms].
    busy_prob : array_like
        ρ of the serving queue.
    percentile : array_like
        p in 50..99.9 [%], or NaN where the SLO is on the mean.

    Returns
    -------
    numpy.ndarray
        Latency at the percentile [ms] (inf where unbounded).

    Examples
    --------
    >>> latency_quantile_ms([20.0, 20.0], [20.0, 20.0], 0.5, [95.0, np.nan]).round(3).tolist()
    [112.103, 40.0]
    """
    s = np.asarray(service_ms, dtype=float)
    w = np.asarray(wait_ms, dtype=float)
    p = np.asarray(percentile, dtype=float)
    _percentile_frac(p)
    on_mean = np.isnan(p)
    quant = s + wait_quantile_ms(w, busy_prob, np.where(on_mean, PERCENTILE_MIN, p))
    return np.where(on_mean, s + w, quant)


def percentile_latency_ms(prediction: Prediction, percentile: ArrayLike) -> np.ndarray:
    """Latency of every co-located service at ``percentile`` (shape ``(..., K)``) [ms].

    Parameters
    ----------
    prediction : Prediction
        From :func:`qosched.policies.latency.sharing.predict`.
    percentile : array_like
        50..99.9 [%] (scalar or per service), NaN = the mean.

    Returns
    -------
    numpy.ndarray
        ``latency_quantile_ms(service_ms, wait_ms, service_utilization, percentile)``; 0 where
        the prediction is 0 (masked entries).
    """
    return latency_quantile_ms(
        prediction.service_ms,
        prediction.wait_ms,
        np.clip(prediction.service_utilization, 0.0, None),
        percentile,
    )
