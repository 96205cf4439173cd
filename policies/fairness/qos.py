r"""Delivered QoS of pods: availability, SLO attainment, surplus and the pause slack.

The paper's QoS (da Silva et al., JISA 2020; ``models.md`` §B) is **availability**,

.. math:: A = \frac{r}{t_{now} - t_{submit}},

the time the pod ran, :math:`r`, over the time since it was submitted. qosched serves inference,
where running is not enough: a request answered after its latency target is, for the client, no
answer. So for an inference service the **delivered QoS** is

.. math:: Q = A \cdot a,

with :math:`a` its **SLO attainment**, the fraction of its running time (or of its requests) in
which latency met the target. Read with time-weighted attainment, :math:`A \cdot a` is exactly
"time running *and* meeting the SLO" over "time since submission", i.e. the availability of a
useful service: time that runs but misses the target delivers nothing, as a cloud SLA counts
time that serves only errors as downtime. With request-weighted attainment the product assumes
requests spread evenly over running time. A pod without a latency target has :math:`a = 1`.

All functions are vectorised (numpy broadcasting) and pure: times are passed in, never read
from a clock. Conventions: a pod with no elapsed time (just submitted) has availability 1 (it is
owed nothing yet); an attainment with no requests observed is 1 (nothing was missed).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qosched.policies.fairness._validate import FloatArray, as_float_array, check_fraction

# Running time may exceed the elapsed time by float rounding only (r and t come from sums of
# interval lengths); anything beyond this relative slack is a caller error.
_RUNNING_SLACK = 1e-9


def availability(submit_s: ArrayLike, running_s: ArrayLike, now_s: ArrayLike) -> FloatArray:
    r"""Availability :math:`A = r / (t_{now} - t_{submit})` of each pod, the paper's QoS.

    Parameters
    ----------
    submit_s : array_like
        Submission time of each pod [s].
    running_s : array_like
        Accumulated running time of each pod up to ``now_s`` [s] (see
        :func:`running_s_from_intervals`).
    now_s : array_like
        The evaluation time [s] (broadcast), ``>= submit_s``.

    Returns
    -------
    numpy.ndarray
        Availability in [0, 1]; 1 where no time has elapsed.

    Raises
    ------
    ValueError
        On NaN/inf/negative inputs, ``now_s < submit_s``, or running time above elapsed time.

    Examples
    --------
    >>> float(availability(100.0, 45.0, 200.0))
    0.45
    """
    submit = as_float_array("submit_s", submit_s, nonneg=False)
    running = as_float_array("running_s", running_s)
    now = as_float_array("now_s", now_s, nonneg=False)
    elapsed = now - submit
    if (elapsed < 0).any():
        raise ValueError("now_s: earlier than submit_s for some pod (time since submission < 0)")
    return _ratio(running, elapsed, field="running_s")


def slo_attainment(within: ArrayLike, total: ArrayLike) -> FloatArray:
    """SLO attainment ``within / total``: requests (or seconds) that met the latency target.

    Parameters
    ----------
    within : array_like
        Requests, or seconds of running time, whose latency met the target (``<= total``).
    total : array_like
        All requests, or all running seconds, observed.

    Returns
    -------
    numpy.ndarray
        Attainment in [0, 1]; 1 where ``total == 0`` (nothing observed, nothing missed).
    """
    w = as_float_array("within", within)
    t = as_float_array("total", total)
    return _ratio(w, t, field="within")


def slo_attainment_from_latencies(latency_ms: ArrayLike, slo_ms: float) -> float:
    """Fraction of observed request latencies ``<= slo_ms``; 1.0 when no request was observed.

    ``inf`` latencies (an unbounded queue) count as misses.
    """
    lat = as_float_array("latency_ms", latency_ms, allow_inf=True).ravel()
    slo = float(as_float_array("slo_ms", slo_ms))
    if slo <= 0:
        raise ValueError(f"slo_ms: must be > 0, got {slo_ms!r}")
    return 1.0 if lat.size == 0 else float(np.count_nonzero(lat <= slo) / lat.size)


def delivered_qos(
    submit_s: ArrayLike,
    running_s: ArrayLike,
    now_s: ArrayLike,
    attainment: ArrayLike = 1.0,
) -> FloatArray:
    r"""Delivered QoS :math:`Q = A \cdot a` (availability × SLO attainment), see the module notes.

    Parameters
    ----------
    submit_s, running_s, now_s : array_like
        As in :func:`availability` [s].
    attainment : array_like
        SLO attainment in [0, 1] (1 for pods without a latency target).
    """
    a = as_float_array("attainment", attainment)
    if (a > 1).any():
        raise ValueError("attainment: must be in [0, 1]")
    return availability(submit_s, running_s, now_s) * a


def qos_surplus(delivered: ArrayLike, target: ArrayLike) -> FloatArray:
    """QoS surplus ``delivered - target``: how far a pod is above (> 0) or below (< 0) its target.

    QoS-driven preemption takes victims with the largest surplus first (``models.md`` §B).
    """
    q = as_float_array("delivered", delivered)
    t = check_fraction("target", as_float_array("target", target))
    return q - t


def qos_after_pause(
    running_s: ArrayLike, elapsed_s: ArrayLike, pause_s: ArrayLike, attainment: ArrayLike = 1.0
) -> FloatArray:
    r"""Predicted QoS at the end of a pause of ``pause_s``: :math:`a\,r / (t + d)`.

    During a pause the pod accrues elapsed time but no running time. This is the QoS's lowest
    point: once the pod runs again its availability rises,
    :math:`\frac{d}{ds}\frac{r+s}{t+s} = \frac{t-r}{(t+s)^2} \ge 0`, so checking the end of the
    pause is enough to know the pod meets its target throughout.

    Parameters
    ----------
    running_s : array_like
        Running time so far, :math:`r` [s].
    elapsed_s : array_like
        Time since submission, :math:`t` [s], ``>= running_s``.
    pause_s : array_like
        Predicted pause, :math:`d` [s] (e.g. the expected wait to be placed again).
    attainment : array_like
        SLO attainment :math:`a` assumed unchanged by the pause.
    """
    r = as_float_array("running_s", running_s)
    t = as_float_array("elapsed_s", elapsed_s)
    d = as_float_array("pause_s", pause_s)
    a = as_float_array("attainment", attainment)
    _check_running(r, t)
    return _ratio(r, t + d, field="running_s") * a


def max_pause_s(
    running_s: ArrayLike, elapsed_s: ArrayLike, target: ArrayLike, attainment: ArrayLike = 1.0
) -> FloatArray:
    r"""Longest pause after which QoS still meets the target (the preemption slack), closed form.

    .. math:: \frac{a\,r}{t + d} \ge T \iff d \le \frac{a\,r}{T} - t,

    so :math:`d^* = \max(0, a r / T - t)`. A pod already below target has no slack (0); a
    pod with target 1.0 can never be paused unless it has no elapsed time to lose.

    Parameters
    ----------
    running_s, elapsed_s : array_like
        As in :func:`qos_after_pause` [s].
    target : array_like
        QoS target :math:`T` in (0, 1].
    attainment : array_like
        SLO attainment :math:`a` in [0, 1].

    Returns
    -------
    numpy.ndarray
        Maximal pause [s], ``>= 0``.

    Examples
    --------
    >>> float(max_pause_s(95.0, 100.0, 0.9))  # 95/0.9 - 100
    5.555555555555557
    """
    r = as_float_array("running_s", running_s)
    t = as_float_array("elapsed_s", elapsed_s)
    target_arr = check_fraction("target", as_float_array("target", target))
    a = as_float_array("attainment", attainment)
    _check_running(r, t)
    return np.maximum(0.0, a * r / target_arr - t)


def has_slack(
    running_s: ArrayLike,
    elapsed_s: ArrayLike,
    pause_s: ArrayLike,
    target: ArrayLike,
    attainment: ArrayLike = 1.0,
) -> NDArray[np.bool_]:
    """True where the pod keeps meeting ``target`` after a pause of ``pause_s`` (may be preempted).

    Equivalent to ``pause_s <= max_pause_s(...)``, evaluated without the division by ``target``
    rounding at the boundary: ``a·r >= T·(t + d)``.
    """
    r = as_float_array("running_s", running_s)
    t = as_float_array("elapsed_s", elapsed_s)
    d = as_float_array("pause_s", pause_s)
    target_arr = check_fraction("target", as_float_array("target", target))
    a = as_float_array("attainment", attainment)
    _check_running(r, t)
    return np.asarray(a * r >= target_arr * (t + d))


def running_s_from_intervals(
    pod_index: ArrayLike,
    start_s: ArrayLike,
    end_s: ArrayLike,
    now_s: float,
    n_pods: int,
) -> FloatArray:
    """Accumulated running time of each pod from its running intervals, clipped to ``now_s``.

    Parameters
    ----------
    pod_index : array_like of int
        Pod of each interval, in ``[0, n_pods)``.
    start_s, end_s : array_like
        Interval bounds [s]; ``end_s = inf`` for an interval still running. Intervals of one pod
        must not overlap (a pod runs once at a time).
    now_s : float
        Evaluation time [s]; parts of intervals after it are not counted.
    n_pods : int
        Number of pods (length of the result).

    Returns
    -------
    numpy.ndarray
        Running time per pod [s] (0 for pods without intervals).
    """
    idx = np.asarray(pod_index)
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n_pods):
        raise ValueError(f"pod_index: must be integers in [0, {n_pods})")
    start = as_float_array("start_s", start_s, nonneg=False)
    end = as_float_array("end_s", end_s, nonneg=False, allow_inf=True)
    now = float(as_float_array("now_s", now_s, nonneg=False))
    if not (idx.shape == start.shape == end.shape):
        raise ValueError(
            f"pod_index, start_s, end_s: shapes differ ({idx.shape}, {start.shape}, {end.shape})"
        )
    if (end < start).any():
        raise ValueError("end_s: earlier than start_s for some interval")
    length = np.clip(np.minimum(end, now) - start, 0.0, None)
    return np.bincount(idx.ravel(), weights=length.ravel(), minlength=n_pods).astype(np.float64)


def mean_by_class(values: ArrayLike, classes: ArrayLike) -> dict[str, float]:
    """Mean of ``values`` per class label (``mean_qos_by_class`` of a what-if summary)."""
    v = as_float_array("values", values, nonneg=False).ravel()
    c = np.asarray(classes).ravel()
    if v.shape != c.shape:
        raise ValueError(f"values, classes: lengths differ ({v.size} vs {c.size})")
    uniq, inverse = np.unique(c, return_inverse=True)
    sums = np.bincount(inverse, weights=v, minlength=uniq.size)
    counts = np.bincount(inverse, minlength=uniq.size)
    return {str(u): float(s / n) for u, s, n in zip(uniq, sums, counts, strict=True)}


def _check_running(running: FloatArray, elapsed: FloatArray) -> None:
    if (running > elapsed * (1 + _RUNNING_SLACK) + _RUNNING_SLACK).any():
        raise ValueError("running_s: exceeds the time since submission for some pod")


def _ratio(num: FloatArray, den: FloatArray, *, field: str) -> FloatArray:
    """``num / den`` in [0, 1], 1 where ``den == 0``; ``num > den`` beyond rounding is an error."""
    if (num > den * (1 + _RUNNING_SLACK) + _RUNNING_SLACK).any():
        raise ValueError(f"{field}: exceeds its total (ratio above 1) for some element")
    num, den = np.broadcast_arrays(num, den)
    out = np.ones(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return np.minimum(out, 1.0)
