r"""Closed-form queueing models of inference latency on one device (models.md §A).

Every function is pure, vectorised numpy: arguments are scalars, lists or arrays that broadcast
against each other, and the result has the broadcast shape. Functions of *several co-located
services* take them on the **last axis** (shape ``(..., K)``) with an optional boolean ``mask``
of valid entries, so one call evaluates thousands of devices.

Conventions (the glossary of models.md §A):

- λ, ``rate_rps``: Poisson arrival rate [requests/s]; converted to [1/ms] inside (λ/1000).
- S, ``service_ms``: mean solo service time of one request [ms]; μ = 1/S.
- E[S²], ``second_moment_ms2``: second moment of the service time [ms²] (S² = deterministic).
- O, ``swap_ms``: edge-TPU model-swap overhead [ms].
- ρ = λ·S: utilisation of the server. **ρ ≥ 1 means no steady state: latency is ``inf``** (never
  negative, never NaN). A rate of 0 gives the bare service time.

Reference: Q. Liang, W. A. Hanafy, A. Ali-Eldin, P. Shenoy, "Model-driven cluster resource
management for AI workloads in edge clouds", ACM TAAS 2023 (prototype "Ibis"); textbook forms
from L. Kleinrock, *Queueing Systems* vol. 1 (1975), and M. Harchol-Balter, *Performance Modeling
and Design of Computer Systems* (2013).
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MS_PER_S",
    "NETWORK_MS_DEFAULT",
    "SWAP_MOMENTS",
    "QueueMetrics",
    "SwapMoment",
    "edgetpu_swap_latency_ms",
    "edgetpu_swap_queue",
    "erlang_c",
    "frontend_latency_ms",
    "frontend_utilization",
    "md1_latency_ms",
    "mg1_wait_ms",
    "mm1_latency_ms",
    "mm1_wait_ms",
    "processor_sharing_latency_ms",
    "processor_sharing_queue",
    "time_sliced_latency_ms",
    "time_sliced_queue",
]

#: Milliseconds per second: rates are given per second, times in milliseconds.
MS_PER_S: Final = 1000.0
#: Network delay added end to end [ms]; the constant the paper (Liang et al. 2023) used.
NETWORK_MS_DEFAULT: Final = 10.0
#: Relative slack allowed when checking E[S²] >= E[S]² (float rounding of values written as S²).
_MOMENT_RTOL: Final = 1e-9

#: How the edge-TPU model builds E[S'²] and the wait (see :func:`edgetpu_swap_queue`).
SwapMoment = Literal["paper", "bernoulli", "markov"]
SWAP_MOMENTS: Final = ("paper", "bernoulli", "markov")


class QueueMetrics(NamedTuple):
    """Mean-value results of a queue shared by co-located services.

    latency_ms : (..., K) mean response time of each service's requests [ms] (0 where masked).
    wait_ms : (..., K) mean time spent waiting, latency minus own service [ms] (0 where masked).
    service_ms : (..., K) mean effective service time of each service's requests [ms].
    utilization : (...) ρ of the shared server (may be ≥ 1: then latency and wait are inf).
    """

    latency_ms: np.ndarray
    wait_ms: np.ndarray
    service_ms: np.ndarray
    utilization: np.ndarray


# ------------------------------------------------------------------------------------------
# input checking (one place; every public function goes through it)
# ------------------------------------------------------------------------------------------


def _nonneg(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as a float array; ValueError naming ``name`` if any entry is NaN, inf or < 0."""
    arr = np.asarray(value, dtype=float)
    if arr.size and not (np.isfinite(arr).all() and (arr >= 0.0).all()):
        bad = arr[~(np.isfinite(arr) & (arr >= 0.0))].ravel()[0]
        raise ValueError(f"{name} must be finite and >= 0 (got {bad!r})")
    return arr


def _positive(name: str, value: ArrayLike) -> np.ndarray:
    arr = _nonneg(name, value)
    if arr.size and not (arr > 0.0).all():
        raise ValueError(f"{name} must be > 0 (got 0)")
    return arr


def _whole_count(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as an int64 array; ValueError naming ``name`` unless every entry is a whole number >= 1."""
    arr = np.asarray(value, dtype=float)
    ok = np.isfinite(arr) & (arr >= 1.0) & (np.mod(arr, 1.0) == 0.0)
    if arr.size and not ok.all():
        raise ValueError(f"{name} must be whole numbers >= 1 (got {arr[~ok].ravel()[0]!r})")
    return arr.astype(np.int64)


def _second_moment(mean_ms: np.ndarray, second_moment_ms2: ArrayLike | None) -> np.ndarray:
    """E[S²] [ms²], defaulting to S² (deterministic); ValueError if E[S²] < S² (negative variance)."""
    if second_moment_ms2 is None:
        return mean_ms * mean_ms
    m2 = _nonneg("second_moment_ms2", second_moment_ms2)
    too_small = m2 < (mean_ms * mean_ms) * (1.0 - _MOMENT_RTOL)
    if np.any(too_small):
        raise ValueError(
            "second_moment_ms2 must be >= service_ms² (a variance cannot be negative); "
            f"got E[S²]={np.broadcast_to(m2, too_small.shape)[too_small].ravel()[0]!r} for "
            f"S={np.broadcast_to(mean_ms, too_small.shape)[too_small].ravel()[0]!r}"
        )
    return np.maximum(m2, mean_ms * mean_ms)


def _mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.dtype != bool:
        raise ValueError(f"mask must be a boolean array (got dtype {m.dtype})")
    return np.broadcast_to(m, shape)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (used where 0/0 means "no load")."""
    out = np.zeros(np.broadcast_shapes(np.shape(num), np.shape(den)))
    np.divide(num, den, out=out, where=np.broadcast_to(den != 0, out.shape))
    return out


def _unbounded_where(rho: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``value`` where ρ < 1, inf where ρ ≥ 1 (a queue without steady state)."""
    return np.where(rho < 1.0, value, np.inf)


def _wait_factor(rho: np.ndarray) -> np.ndarray:
    """1 / (1 − ρ) for ρ < 1, inf otherwise, without division warnings."""
    gap = 1.0 - rho
    out = np.full(np.shape(rho), np.inf)
    np.divide(1.0, gap, out=out, where=gap > 0.0)
    return out


# ------------------------------------------------------------------------------------------
# single-server, single-class
# ------------------------------------------------------------------------------------------


def md1_latency_ms(rate_rps: ArrayLike, service_ms: ArrayLike) -> np.ndarray:
    r"""Mean response time of one model alone on a device: M/D/1 [ms].

    Parameters
    ----------
    rate_rps : array_like
        Poisson arrival rate λ [requests/s], >= 0.
    service_ms : array_like
        Deterministic service time S [ms], > 0.

    Returns
    -------
    numpy.ndarray
        E[R] [ms]; ``inf`` where ρ = λS ≥ 1.

    Notes
    -----
    Pollaczek–Khinchine with E[S²] = S² (deterministic service):

    .. math:: E[R] = S + \frac{\rho S}{2(1-\rho)}, \qquad \rho = \lambda S

    models.md §A: "One model alone: M/D/1 (deterministic service) is the better fit" (Liang et
    al., ACM TAAS 2023).

    Examples
    --------
    >>> float(md1_latency_ms(25.0, 20.0))  # ρ = 0.025/ms · 20 ms = 0.5 → 20 + 0.5·20/(2·0.5)
    30.0
    """
    lam = _nonneg("rate_rps", rate_rps) / MS_PER_S
    s = _positive("service_ms", service_ms)
    rho = lam * s
    return _unbounded_where(rho, s + rho * s * _wait_factor(rho) / 2.0)


def mm1_wait_ms(rate_rps: ArrayLike, service_ms: ArrayLike) -> np.ndarray:
    r"""Mean queueing delay (before service) of an M/M/1 server [ms].

    Parameters
    ----------
    rate_rps : array_like
        Arrival rate λ [requests/s], >= 0.
    service_ms : array_like
        Mean (exponential) service time S = 1/μ [ms], > 0.

    Returns
    -------
    numpy.ndarray
        E[W] [ms]; ``inf`` where ρ ≥ 1.

    Notes
    -----
    .. math:: E[W] = \frac{1}{\mu-\lambda} - \frac{1}{\mu} = \frac{\rho S}{1-\rho}

    Examples
    --------
    >>> float(mm1_wait_ms(25.0, 20.0))  # ρ = 0.5 → 0.5·20/0.5
    20.0
    """
    lam = _nonneg("rate_rps", rate_rps) / MS_PER_S
    s = _positive("service_ms", service_ms)
    rho = lam * s
    return _unbounded_where(rho, rho * s * _wait_factor(rho))


def mm1_latency_ms(rate_rps: ArrayLike, service_ms: ArrayLike) -> np.ndarray:
    r"""Mean response time of an M/M/1 server [ms].

    Parameters
    ----------
    rate_rps : array_like
        Arrival rate λ [requests/s], >= 0.
    service_ms : array_like
        Mean (exponential) service time S = 1/μ [ms], > 0.

    Returns
    -------
    numpy.ndarray
        E[R] [ms]; ``inf`` where ρ ≥ 1.

    Notes
    -----
    .. math:: E[R] = \frac{1}{\mu - \lambda} = \frac{S}{1-\rho}

    This is also the mean response time of an M/G/1 *processor-sharing* server (insensitive to
    the service-time distribution).

    Examples
    --------
    >>> float(mm1_latency_ms(25.0, 20.0))  # 20 / (1 − 0.5)
    40.0
    """
    lam = _nonneg("rate_rps", rate_rps) / MS_PER_S
    s = _positive("service_ms", service_ms)
    rho = lam * s
    return _unbounded_where(rho, s * _wait_factor(rho))


def mg1_wait_ms(rate_rps: ArrayLike, mean_ms: ArrayLike, second_moment_ms2: ArrayLike) -> np.ndarray:
    r"""Mean queueing delay of an M/G/1 FCFS server: Pollaczek–Khinchine [ms].

    Parameters
    ----------
    rate_rps : array_like
        Arrival rate λ [requests/s], >= 0.
    mean_ms : array_like
        Mean service time E[S] [ms], > 0.
    second_moment_ms2 : array_like
        Second moment E[S²] [ms²], >= E[S]².

    Returns
    -------
    numpy.ndarray
        E[W] [ms]; ``inf`` where ρ = λE[S] ≥ 1. Mean response time is E[S] + E[W].

    Notes
    -----
    .. math:: E[W] = \frac{\lambda E[S^2]}{2(1-\rho)}, \qquad \rho = \lambda E[S]

    E[S²] = E[S]² gives M/D/1, E[S²] = 2E[S]² gives M/M/1.

    Examples
    --------
    >>> float(mg1_wait_ms(25.0, 20.0, 800.0))  # 0.025·800 / (2·0.5): the M/M/1 case
    20.0
    """
    lam = _nonneg("rate_rps", rate_rps) / MS_PER_S
    s = _positive("mean_ms", mean_ms)
    m2 = _second_moment(s, second_moment_ms2)
    rho = lam * s
    return _unbounded_where(rho, lam * m2 * _wait_factor(rho) / 2.0)


# ------------------------------------------------------------------------------------------
# co-located services sharing one server (services on the last axis)
# ------------------------------------------------------------------------------------------


def edgetpu_swap_queue(
    rates_rps: ArrayLike,
    service_ms: ArrayLike,
    swap_ms: ArrayLike,
    *,
    second_moment_ms2: ArrayLike | None = None,
    host_tail_ms: ArrayLike | None = None,
    swap_moment: SwapMoment = "paper",
    swap_prob_scale: float = 1.0,
    mask: ArrayLike | None = None,
) -> QueueMetrics:
    r"""Edge TPU shared by several models, with swap overhead: M/G/1 FCFS (models.md §A).

    Services are on the last axis of the (broadcast) arguments, shape ``(..., K)``.

    Parameters
    ----------
    rates_rps : array_like
        Arrival rate λᵢ of each model [requests/s], >= 0.
    service_ms : array_like
        Mean solo service time Sᵢ [ms], > 0 (a request whose predecessor was the same model).
    swap_ms : array_like
        Swap overhead Oᵢ [ms], >= 0: paid when the previous request was for another model.
    second_moment_ms2 : array_like, optional
        Solo E[Sᵢ²] [ms²]; default Sᵢ² (deterministic). Adds Var[Sᵢ] to E[S'ᵢ²].
    host_tail_ms : array_like, optional
        hᵢ [ms], default 0: the part of Sᵢ that runs on the host *after* the device is done
        (e.g. SSD's detection post-processing on the CPU), overlapping the next request's device
        work. It is part of the model's response time but not of the device's busy time.
    swap_moment : {"paper", "bernoulli", "markov"}
        How E[S'ᵢ²] and the wait are formed. ``"paper"`` (default, exactly §A): every request of
        model i takes the deterministic S'ᵢ, so E[S'ᵢ²] = S'ᵢ² (+ Var[Sᵢ]). ``"bernoulli"``: the
        swap is paid with probability qᵢ, so E[S'ᵢ²] = pᵢSᵢ² + qᵢ(Sᵢ + Oᵢ)² (+ Var[Sᵢ]), the true
        second moment of the request mix (larger by pᵢqᵢOᵢ²). ``"markov"``: the Bernoulli moment
        plus the dependence the swap creates between consecutive requests (a request's swap
        depends on its predecessor's model), which Pollaczek–Khinchine's i.i.d. service ignores;
        see Notes.
    swap_prob_scale : float
        Multiplies the swap probability, qᵢ = min(1, scale·(1 − λᵢ/λ)); 1 (default) is the
        paper's random interleaving. A calibration knob (see ``calibration.py``).
    mask : array_like of bool, optional
        Valid services; masked entries carry no load and get 0 in every output.

    Returns
    -------
    QueueMetrics
        ``latency_ms`` E[Rᵢ] (inf where ρ ≥ 1), ``wait_ms`` W, ``service_ms`` S'ᵢ, ``utilization`` ρ.

    Notes
    -----
    With random (Poisson) interleaving the previous request is for another model with
    probability qᵢ = 1 − λᵢ/λ, λ = Σλᵢ, so (models.md §A)

    .. math::

        S'_i = S_i + q_i O_i, \quad \rho = \sum_i \lambda_i (S'_i - h_i), \quad
        W = \frac{\lambda E[D^2]}{2(1-\rho)}, \quad E[R_i] = S'_i + W,

    with D the device time of a request (S' − h), E[D²] = Σᵢ (λᵢ/λ) E[D'ᵢ²] over the request
    mix (Pollaczek–Khinchine). With h = 0 and ``swap_moment="paper"`` this is exactly the
    paper's formula. When λ = 0 a lone model has q = 0 and each model among several q = 1
    (the limit λᵢ → 0 with the others loaded).

    ``"markov"``: served FCFS, request k's device time D_k = d(c_k) + O(c_k)·[c_k ≠ c_{k−1}]
    depends on its predecessor's model, so consecutive device times are dependent (a long
    model's request is likely followed by a swap). From Lindley's recursion with Poisson
    arrivals the mean wait is exactly

    .. math:: W = \frac{\lambda\,(E[D^2] + 2\,\mathrm{Cov}(W_k, D_k))}{2(1-\rho)},

    the covariance arising through c_{k−1}. To first order (W_{k−1} taken independent of
    c_{k−2}), with pᵢ = λᵢ/λ, dᵢ = Sᵢ − hᵢ, D* = E[e^{−λD}] and the P-K transform
    W*(λ) = (1 − ρ)/D*:

    .. math::

        \mathrm{Cov}(W_k, D_k) \approx \sum_b p_b\,\Delta_b\,(m_b - E[D]), \quad
        \Delta_b = (d_b + q_bO_b - E[D]) + \frac{W^*(\lambda)}{\lambda}(L_b - D^*),

    with L_b = e^{−λd_b}(p_b + (1 − p_b)e^{−λO'_b}) (the transform of a request after a
    model-b request), m_b = Σ_c p_c(d_c + O'_c) − p_bO'_b (the mean device time of the request
    after it), O'_b = q_bO_b/(1 − p_b) (= O_b unless ``swap_prob_scale`` ≠ 1) and the solo
    variance left out of the transform. Against a simulated queue of 800,000 requests at the
    15 Ibis operating points (ρ 0.19..0.79) this is within 1.4 % of the simulated wait, where
    P-K is up to 7.8 % low (``benchmarks/swap_wait_simulation.py``, docs/latency-models.md).

    Examples
    --------
    Two models, λ = (10, 10) rps, S = (20, 30) ms, O = (10, 10) ms:
    q = 0.5, S' = (25, 35), ρ = 0.01·25 + 0.01·35 = 0.6, E[S'²] = (625 + 1225)/2 = 925,
    W = 0.02·925 / (2·0.4) = 23.125:

    >>> m = edgetpu_swap_queue([10, 10], [20, 30], [10, 10])
    >>> m.latency_ms.round(3).tolist(), round(float(m.utilization), 3)
    ([48.125, 58.125], 0.6)
    """
    if swap_moment not in SWAP_MOMENTS:
        raise ValueError(f"swap_moment must be one of {', '.join(SWAP_MOMENTS)} (got {swap_moment!r})")
    if not (np.isfinite(swap_prob_scale) and swap_prob_scale >= 0.0):
        raise ValueError(f"swap_prob_scale must be finite and >= 0 (got {swap_prob_scale!r})")
    lam_in = _nonneg("rates_rps", rates_rps) / MS_PER_S
    s_in = _positive("service_ms", service_ms)
    o_in = _nonneg("swap_ms", swap_ms)
    h_in = np.zeros(()) if host_tail_ms is None else _nonneg("host_tail_ms", host_tail_ms)
    m2_in = _second_moment(s_in, second_moment_ms2)
    shape = np.broadcast_shapes(lam_in.shape, s_in.shape, o_in.shape, h_in.shape, m2_in.shape)
    if len(shape) == 0:
        shape = (1,)
    valid = _mask(mask, shape)
    s = np.broadcast_to(s_in, shape)
    h = np.broadcast_to(h_in, shape)
    if np.any(valid & (h > s)):
        raise ValueError("host_tail_ms must be <= service_ms (the tail is part of the service)")
    o = np.broadcast_to(o_in, shape)
    var = np.broadcast_to(m2_in, shape) - s * s
    lam = np.where(valid, np.broadcast_to(lam_in, shape), 0.0)
    return _edgetpu_core(lam, s, o, h, var, valid, swap_moment, swap_prob_scale)


def _edgetpu_core(
    lam: np.ndarray,
    s: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    var: np.ndarray,
    valid: np.ndarray,
    swap_moment: SwapMoment,
    swap_prob_scale: float,
) -> QueueMetrics:
    """:func:`edgetpu_swap_queue` on validated arrays of one shape: λ [1/ms] (0 where masked),
    S, O, h [ms], Var[S] [ms²], valid mask."""
    lam_total = lam.sum(axis=-1, keepdims=True)
    n_valid = valid.sum(axis=-1, keepdims=True)
    # p_i = λ_i/λ; with no load a lone model has p = 1 and each of several p = 0 (see Notes).
    p = np.where(lam_total > 0.0, _safe_div(lam, lam_total), np.where(n_valid == 1, 1.0, 0.0))
    q = np.minimum(1.0, swap_prob_scale * (1.0 - p))
    qo = q * o
    s_eff = s + qo  # S'_i, includes the host tail
    d_same = s - h  # device time without swap
    d_mean = d_same + qo
    if swap_moment == "paper":
        d_m2 = d_mean * d_mean + var
    else:
        d_m2 = d_same * d_same + q * o * (2.0 * d_same + o) + var  # (1−q)d² + q(d + O)²
    rho = np.sum(lam * d_mean, axis=-1)
    mix_m2 = np.sum(np.where(valid, p * d_m2, 0.0), axis=-1)
    if swap_moment == "markov":
        mix_m2 = mix_m2 + 2.0 * _swap_wait_covariance(lam_total[..., 0], p, d_same, o, q, rho, valid)
    wait = _unbounded_where(rho, lam_total[..., 0] * mix_m2 * _wait_factor(rho) / 2.0)
    wait_k = np.where(valid, wait[..., None], 0.0)
    return QueueMetrics(np.where(valid, s_eff + wait_k, 0.0), wait_k, np.where(valid, s_eff, 0.0), rho)


def _swap_wait_covariance(
    lam_total: np.ndarray,
    p: np.ndarray,
    d: np.ndarray,
    o: np.ndarray,
    q: np.ndarray,
    rho: np.ndarray,
    valid: np.ndarray,
) -> np.ndarray:
    """Cov(W_k, D_k) of the ``"markov"`` edge-TPU wait [ms²], shape ``(...)`` (see
    :func:`edgetpu_swap_queue`, Notes): λ [1/ms] and ρ of shape ``(...)``; pᵢ, device time dᵢ,
    Oᵢ, qᵢ of shape ``(..., K)``. 0 without load, with fewer than two loaded models (no swap
    dependence) or at ρ ≥ 1 (the wait is then inf anyway); computed only for the other devices.
    """
    p = np.where(valid, p, 0.0)
    rows = ((p > 0.0).sum(axis=-1) >= 2) & (rho < 1.0)
    out = np.zeros(rho.shape)
    if rows.any():
        shape = p.shape
        pick = [np.broadcast_to(x, shape)[rows] for x in (p, d, o, q)]
        out[rows] = _covariance_rows(np.broadcast_to(lam_total, rho.shape)[rows], rho[rows], *pick)
    return out


def _covariance_rows(
    lam_total: np.ndarray, rho: np.ndarray, p: np.ndarray, d: np.ndarray, o: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """:func:`_swap_wait_covariance` on (M,) λ, ρ < 1 and (M, K) p, d, O, q of loaded devices."""
    o_eff = np.where(p < 1.0, _safe_div(q * o, 1.0 - p), 0.0)  # O'_b = q_b O_b / (1 − p_b)
    lam = lam_total[..., None]
    mean_after_self = d + q * o  # E[D_k | c_k = b] = d_b + q_b O_b
    mean_d = np.sum(p * mean_after_self, axis=-1, keepdims=True)
    after = np.sum(p * (d + o_eff), axis=-1, keepdims=True) - p * o_eff  # E[D_{k+1} | c_k = b]
    # Transforms without dividing by λ (stable as λ → 0): e^{−λx} = 1 + λ·f(x), f(x) =
    # expm1(−λx)/λ → −x; E[e^{−λD_k} | c_k = b] = 1 + λ·g_b, D* = 1 + λ·ḡ, so
    # (L_b − D*)/λ = g_b − ḡ.
    f_d, f_o = _expm1_over(lam, d), _expm1_over(lam, o_eff)
    g = f_d + (1.0 - p) * f_o + lam * f_d * (1.0 - p) * f_o
    g_mean = np.sum(p * g, axis=-1, keepdims=True)
    w_lst = (1.0 - rho[..., None]) / (1.0 + lam * g_mean)  # W*(λ) = (1 − ρ)/D*, D* ≥ e^{−ρ} > 0
    delta = (mean_after_self - mean_d) + w_lst * (g - g_mean)
    return np.sum(p * delta * (after - mean_d), axis=-1)


def _expm1_over(lam: np.ndarray, x: np.ndarray) -> np.ndarray:
    """expm1(−λx)/λ, and its limit −x where λ = 0."""
    return np.where(lam > 0.0, _safe_div(np.expm1(-lam * x), lam), -x)


def edgetpu_swap_latency_ms(
    rates_rps: ArrayLike,
    service_ms: ArrayLike,
    swap_ms: ArrayLike,
    *,
    second_moment_ms2: ArrayLike | None = None,
    host_tail_ms: ArrayLike | None = None,
    swap_moment: SwapMoment = "paper",
    mask: ArrayLike | None = None,
) -> np.ndarray:
    r"""Mean response time of each model co-located on one edge TPU [ms], shape ``(..., K)``.

    Parameters
    ----------
    rates_rps, service_ms, swap_ms, second_moment_ms2, host_tail_ms, swap_moment, mask
        As in :func:`edgetpu_swap_queue` (λᵢ [rps], Sᵢ [ms], Oᵢ [ms], E[Sᵢ²] [ms²], hᵢ [ms]).

    Returns
    -------
    numpy.ndarray
        E[Rᵢ] = S'ᵢ + W [ms]; ``inf`` where ρ ≥ 1; 0 where masked.

    Notes
    -----
    S'ᵢ = Sᵢ + (1 − λᵢ/λ)·Oᵢ, ρ = Σλᵢ S'ᵢ, W = λ·E[S'²]/(2(1 − ρ)), E[Rᵢ] = S'ᵢ + W
    (models.md §A, Liang et al. 2023). See :func:`edgetpu_swap_queue` for the options.

    Examples
    --------
    A single model: no swap (q = 0), so it reduces to M/D/1: 20 + 0.5·20/(2·0.5) = 30.

    >>> edgetpu_swap_latency_ms([25.0], [20.0], [10.0]).tolist()
    [30.0]
    """
    return edgetpu_swap_queue(
        rates_rps,
        service_ms,
        swap_ms,
        second_moment_ms2=second_moment_ms2,
        host_tail_ms=host_tail_ms,
        swap_moment=swap_moment,
        mask=mask,
    ).latency_ms


def time_sliced_queue(
    rates_rps: ArrayLike, service_ms: ArrayLike, *, mask: ArrayLike | None = None
) -> QueueMetrics:
    r"""GPU time-sliced among co-located models: mixture M/M/1 (models.md §A).

    Parameters
    ----------
    rates_rps : array_like
        λᵢ [requests/s], >= 0, services on the last axis.
    service_ms : array_like
        Solo Sᵢ [ms], > 0.
    mask : array_like of bool, optional
        Valid services (masked entries: no load, 0 outputs).

    Returns
    -------
    QueueMetrics
        ``latency_ms`` Sᵢ + E[W], ``wait_ms`` E[W], ``service_ms`` Sᵢ, ``utilization`` ρ.

    Notes
    -----
    .. math::

        E[S] = \sum_i \frac{\lambda_i}{\lambda} S_i,\quad \mu = \frac{1}{E[S]},\quad
        E[W] = \frac{1}{\mu-\lambda} - \frac{1}{\mu} = E[S]\frac{\rho}{1-\rho},\quad
        E[R_i] = S_i + E[W]

    with ρ = λ E[S] = Σλᵢ Sᵢ. At λ = 0, E[W] = 0.

    Examples
    --------
    >>> m = time_sliced_queue([10, 10], [20, 30])  # E[S] = 25, ρ = 0.5 → W = 25
    >>> m.latency_ms.tolist(), float(m.utilization)
    ([45.0, 55.0], 0.5)
    """
    lam_in = _nonneg("rates_rps", rates_rps) / MS_PER_S
    s_in = _positive("service_ms", service_ms)
    shape = np.broadcast_shapes(lam_in.shape, s_in.shape)
    if len(shape) == 0:
        shape = (1,)
    valid = _mask(mask, shape)
    s = np.broadcast_to(s_in, shape)
    lam = np.where(valid, np.broadcast_to(lam_in, shape), 0.0)
    return _time_sliced_core(lam, s, valid)


def _time_sliced_core(lam: np.ndarray, s: np.ndarray, valid: np.ndarray) -> QueueMetrics:
    """:func:`time_sliced_queue` on validated arrays: λ [1/ms] (0 where masked), S [ms], mask."""
    lam_total = lam.sum(axis=-1)
    rho = np.sum(lam * s, axis=-1)
    mean_s = _safe_div(rho, lam_total)
    wait = _unbounded_where(rho, mean_s * rho * _wait_factor(rho))
    wait_k = np.where(valid, wait[..., None], 0.0)
    return QueueMetrics(np.where(valid, s + wait_k, 0.0), wait_k, np.where(valid, s, 0.0), rho)


def time_sliced_latency_ms(
    rates_rps: ArrayLike, service_ms: ArrayLike, *, mask: ArrayLike | None = None
) -> np.ndarray:
    r"""Mean response time of each model time-sliced on one GPU [ms], shape ``(..., K)``.

    Parameters
    ----------
    rates_rps : array_like
        λᵢ [requests/s], services on the last axis.
    service_ms : array_like
        Solo Sᵢ [ms].
    mask : array_like of bool, optional
        Valid services.

    Returns
    -------
    numpy.ndarray
        E[Rᵢ] = Sᵢ + E[W] [ms]; ``inf`` where ρ ≥ 1; 0 where masked.

    Notes
    -----
    E[S] = Σλᵢ Sᵢ/λ, μ = 1/E[S], E[W] = 1/(μ − λ) − 1/μ, E[Rᵢ] = Sᵢ + E[W] (models.md §A).

    Examples
    --------
    >>> time_sliced_latency_ms([[10, 10], [0, 0]], [20, 30]).tolist()  # second device idle
    [[45.0, 55.0], [20.0, 30.0]]
    """
    return time_sliced_queue(rates_rps, service_ms, mask=mask).latency_ms


def erlang_c(servers: ArrayLike, offered_erlangs: ArrayLike) -> np.ndarray:
    r"""Erlang-C probability that an arrival must wait, M/M/c, vectorised.

    Parameters
    ----------
    servers : array_like of int
        c >= 1 parallel servers (e.g. CPU cores).
    offered_erlangs : array_like
        a = λ·E[S] >= 0 [Erlang].

    Returns
    -------
    numpy.ndarray
        C(c, a) in [0, 1]; 1 where a ≥ c (no steady state).

    Notes
    -----
    Through the numerically stable Erlang-B recursion B(0) = 1,
    B(k) = a·B(k−1) / (k + a·B(k−1)), then C = B / (1 − (a/c)(1 − B)).

    Examples
    --------
    >>> float(erlang_c(1, 0.5))  # one server: C = ρ
    0.5
    >>> round(float(erlang_c(2, 1.0)), 6)  # B(2,1) = 0.2 → C = 0.2/(1 − 0.5·0.8) = 1/3
    0.333333
    """
    c = _whole_count("servers", servers)
    a = _nonneg("offered_erlangs", offered_erlangs)
    c, a = np.broadcast_arrays(c, a)
    return _erlang_c_core(c, a)


def _erlang_c_core(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """:func:`erlang_c` on validated arrays of one shape (c int >= 1, a >= 0)."""
    if c.size and int(c.max()) == 1:
        return np.where(a < 1.0, a, 1.0)  # one server: C = ρ
    b = np.ones(a.shape)
    for k in range(1, int(c.max(initial=1)) + 1):
        step = a * b / (k + a * b)
        b = np.where(k <= c, step, b)
    rho = a / c
    c_prob = _safe_div(b, 1.0 - rho * (1.0 - b))
    return np.where(rho < 1.0, np.clip(c_prob, 0.0, 1.0), 1.0)


def processor_sharing_queue(
    rates_rps: ArrayLike,
    service_ms: ArrayLike,
    *,
    cores: ArrayLike = 1,
    mask: ArrayLike | None = None,
) -> QueueMetrics:
    r"""CPU shared by co-located models: processor sharing over ``cores`` cores.

    Parameters
    ----------
    rates_rps : array_like
        λᵢ [requests/s], services on the last axis.
    service_ms : array_like
        Solo Sᵢ [ms]: the time of one request running alone (on at most one core's worth).
    cores : array_like of int
        c parallel cores of the device, shape broadcastable to ``(...)``.
    mask : array_like of bool, optional
        Valid services.

    Returns
    -------
    QueueMetrics
        ``utilization`` ρ = Σλᵢ Sᵢ / c; latencies inf where ρ ≥ 1.

    Notes
    -----
    Model: every request in the system gets an equal share of the c cores, at most one core
    each (limited processor sharing; the OS scheduler's behaviour for single-threaded
    inference). Its mean number in system equals that of M/M/c for any service distribution
    (a symmetric queue, hence insensitive), and in PS every request is slowed by the same factor:

    .. math:: E[R_i] = S_i \left(1 + \frac{C(c, a)}{c - a}\right), \quad a = \sum_i \lambda_i S_i

    For c = 1 this is exactly the M/G/1-PS result E[Rᵢ] = Sᵢ/(1 − ρ). For c > 1 the class average
    is exact (Little's law) and the per-class split proportional to Sᵢ is an approximation.

    Examples
    --------
    >>> processor_sharing_queue([25.0], [20.0]).latency_ms.tolist()  # 20/(1 − 0.5)
    [40.0]
    >>> round(float(processor_sharing_queue([50.0], [20.0], cores=2).latency_ms[0]), 4)  # a=1, c=2
    26.6667
    """
    lam_in = _nonneg("rates_rps", rates_rps) / MS_PER_S
    s_in = _positive("service_ms", service_ms)
    shape = np.broadcast_shapes(lam_in.shape, s_in.shape)
    if len(shape) == 0:
        shape = (1,)
    valid = _mask(mask, shape)
    s = np.broadcast_to(s_in, shape)
    lam = np.where(valid, np.broadcast_to(lam_in, shape), 0.0)
    c = np.broadcast_to(_whole_count("cores", cores), shape[:-1])
    return _ps_core(lam, s, c, valid)


def _ps_core(lam: np.ndarray, s: np.ndarray, c: np.ndarray, valid: np.ndarray) -> QueueMetrics:
    """:func:`processor_sharing_queue` on validated arrays: λ [1/ms] (0 where masked), S [ms],
    cores (shape ``(...)``), mask."""
    a = np.sum(lam * s, axis=-1)
    rho = a / c
    gap = c - a
    slack = np.zeros(a.shape)
    np.divide(_erlang_c_core(c, np.minimum(a, c)), gap, out=slack, where=gap > 0.0)
    slowdown = _unbounded_where(rho, 1.0 + slack)
    latency = np.where(valid, s * slowdown[..., None], 0.0)
    wait = np.where(valid, latency - s, 0.0)
    return QueueMetrics(latency, wait, np.where(valid, s, 0.0), rho)


def processor_sharing_latency_ms(
    rates_rps: ArrayLike, service_ms: ArrayLike, *, cores: ArrayLike = 1, mask: ArrayLike | None = None
) -> np.ndarray:
    r"""Mean response time of each model on a processor-sharing CPU [ms], shape ``(..., K)``.

    Parameters
    ----------
    rates_rps, service_ms, cores, mask
        As in :func:`processor_sharing_queue`.

    Returns
    -------
    numpy.ndarray
        E[Rᵢ] [ms]; ``inf`` where ρ ≥ 1.

    Notes
    -----
    One core: E[Rᵢ] = Sᵢ/(1 − ρ), ρ = Σλᵢ Sᵢ (M/G/1-PS). See :func:`processor_sharing_queue`.

    Examples
    --------
    >>> processor_sharing_latency_ms([10, 10], [20, 30]).tolist()  # ρ = 0.5 → S/(1 − 0.5)
    [40.0, 60.0]
    """
    return processor_sharing_queue(rates_rps, service_ms, cores=cores, mask=mask).latency_ms


# ------------------------------------------------------------------------------------------
# front end (pre-processing on the node CPU)
# ------------------------------------------------------------------------------------------


def frontend_utilization(rate_rps: ArrayLike, frontend_ms: ArrayLike) -> np.ndarray:
    r"""Utilisation of a front end (pre-processing server) ρ_pre = λ·S_pre (dimensionless).

    Parameters
    ----------
    rate_rps : array_like
        λ [requests/s], >= 0.
    frontend_ms : array_like
        S_pre = 1/μ_pre [ms], >= 0.

    Returns
    -------
    numpy.ndarray
        ρ_pre (≥ 1 means the front end cannot keep up).

    Examples
    --------
    >>> float(frontend_utilization(100.0, 3.0))
    0.3
    """
    return _nonneg("rate_rps", rate_rps) * _nonneg("frontend_ms", frontend_ms) / MS_PER_S


def frontend_latency_ms(rate_rps: ArrayLike, frontend_ms: ArrayLike) -> np.ndarray:
    r"""Mean time in the front end (pre-processing on the node CPU): M/M/1 [ms].

    Parameters
    ----------
    rate_rps : array_like
        λ of the service's front end [requests/s], >= 0.
    frontend_ms : array_like
        Mean pre-processing time S_pre = 1/μ_pre [ms], >= 0 (0: no front end, 0 ms).

    Returns
    -------
    numpy.ndarray
        1/(μ_pre − λ) [ms]; ``inf`` where λ·S_pre ≥ 1.

    Notes
    -----
    .. math:: T_{pre} = \frac{1}{\mu_{pre} - \lambda} = \frac{S_{pre}}{1 - \lambda S_{pre}}

    models.md §A: the front end is an M/M/1 queue whose time is added to the latency, and a
    constant network delay (:data:`NETWORK_MS_DEFAULT`) is added end to end.

    Examples
    --------
    >>> float(frontend_latency_ms(100.0, 3.0))  # 3 / (1 − 0.3)
    4.285714285714286
    """
    f = _nonneg("frontend_ms", frontend_ms)
    rho = frontend_utilization(rate_rps, f)
    return _unbounded_where(rho, f * _wait_factor(rho))
