r"""How the inference services on a CPU node share it: ONE definition, for the model and the simulator.

**The discipline** (:class:`CpuNode`). Every inference service placed on a CPU node is one
model-server process with one inference thread (the set-up the CPU profiles were measured in:
``qosched profile run``, ``--threads 1``). It serves its requests first come, first served, one at
a time. The operating system spreads the servers that are *busy* over the node's c cores, at most
one core each: with B servers busy each runs at

.. math:: r(B) = \min(1, c/B)

of a full core (:func:`server_speed`). So requests of one service never run in parallel (a
single-threaded server cannot use a second core), and servers slow each other down only when
more of them are busy than there are cores. c is the node's CPU in whole cores,
``cpu_milli // 1000`` and at least 1 (:func:`cpu_cores`).

Why this and not the two models it replaces (measured with the profiler; the table, the commands
and the noise are in docs/simulator-requests.md, "CPU nodes: model and simulator reconciled"):

* the request simulator ran ONE processor-sharing server per node, as if the node had one core:
  it called 33 of the 78 two-core rows saturated (every run offering more than one core of
  work, e.g. two mobilenet_v2 servers at 0.6 of a core each), and every one of those runs was
  served, no request left over;
* the latency model spread every *request* over the cores (limited processor sharing, the
  M/M/c-equivalent symmetric queue): one server at 0.7 of a core on 2 cores was predicted at
  1.13 × S and measured at 2.2-2.3 × S (mean of 3 seeds), the FCFS M/G/1 queue of one server
  (2.2 × S); over the 12 one-server two-core rows its error is 45 % against 17 %.

**Stability.** The allocation r(B) is max-min fair under the one-core cap, so the node is stable
exactly when every server and the node as a whole are under capacity:
λᵢSᵢ < 1 for every service and Σλᵢ Sᵢ < c (:meth:`CpuNode.offered_load`).

**The simulator** (:func:`qosched.policies.simulator.requests.shared_cores_sojourn_times`) runs
this discipline exactly, event by event. **The model** (:func:`cpu_node_queue`, the ``cpu`` mode of
:func:`qosched.policies.latency.sharing.predict`) is

* exact when at most c services are active: nobody slows, and each service is its own M/G/1 queue
  (Pollaczek-Khinchine), :math:`E[R_i] = S_i + \lambda_i E[S_i^2] / (2(1 - \lambda_i S_i))`;
* a mean-field approximation otherwise: server i, while busy, sees each other server j busy
  independently with probability :math:`b_j`, so its service stretches by

  .. math:: \sigma_i = E\left[\frac{1}{r(1 + K_i)}\right] = E\left[\max\left(1, \frac{1 + K_i}{c}\right)\right],
            \quad K_i \sim \mathrm{PoissonBinomial}(b_j, j \ne i), \quad b_j = \min(1, \lambda_j S_j \sigma_j)

  (a fixed point), and it is an M/G/1 queue with service :math:`\sigma_i S_i`, second moment
  :math:`\sigma_i^2 E[S_i^2]`. Against the exact simulation it is within a few per cent
  (``tests/policies/test_cpu_node.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.latency.queueing import (
    MS_PER_S,
    QueueMetrics,
    _mask,
    _nonneg,
    _positive,
    _second_moment,
    _whole_count,
)

__all__ = ["CPU_MILLI_PER_CORE", "CpuNode", "cpu_cores", "cpu_node_queue", "server_speed"]

#: Millicores per core (Kubernetes' CPU unit).
CPU_MILLI_PER_CORE: Final = 1000
#: Newton steps of the mean-field slowdown (it stops in 2-8; the cap only bounds a pathological row).
_MAX_ITERATIONS: Final = 100
#: Certified bound on |σ − σ*| at which a row stops (stable rows; the step for rows over capacity).
_TOLERANCE: Final = 1e-13
#: A step this small relative to σ is rounding: the row is at its fixed point to machine
#: precision (a node within ~1e-3 of capacity cannot certify 1e-13: its condition is 1/(c − L)).
_STEP_FLOOR: Final = 64 * float(np.finfo(np.float64).eps)


def cpu_cores(cpu_milli: ArrayLike) -> np.ndarray:
    """Whole cores of a CPU node from its CPU [millicores]: ``cpu_milli // 1000``, at least 1.

    >>> cpu_cores([8000, 2500, 500]).tolist()
    [8, 2, 1]
    """
    return np.maximum(1, np.asarray(cpu_milli, dtype=np.int64) // CPU_MILLI_PER_CORE)


def server_speed(busy: ArrayLike, cores: ArrayLike) -> np.ndarray:
    r"""Speed of each busy server, in cores: :math:`\min(1, c/B)` with B >= 1 servers busy.

    >>> server_speed([1, 2, 3, 4], 2).tolist()
    [1.0, 1.0, 0.6666666666666666, 0.5]
    """
    b = np.maximum(np.asarray(busy, dtype=np.float64), 1.0)
    return np.minimum(1.0, np.asarray(cores, dtype=np.float64) / b)


@dataclass(frozen=True, slots=True)
class CpuNode:
    """A CPU node's service discipline (see the module docstring): c cores, one FCFS server per service.

    Attributes
    ----------
    cores : int
        c >= 1 whole cores.
    """

    cores: int

    def __post_init__(self) -> None:
        if isinstance(self.cores, bool) or not isinstance(self.cores, int | np.integer) or self.cores < 1:
            raise ValueError(f"CpuNode.cores must be an integer >= 1, got {self.cores!r}")

    @classmethod
    def from_cpu_milli(cls, cpu_milli: int) -> CpuNode:
        """The node of ``cpu_milli`` millicores (:func:`cpu_cores`)."""
        return cls(int(cpu_cores(cpu_milli)))

    def speeds(self, max_busy: int) -> list[float]:
        """``speeds[B]`` = :func:`server_speed` for B = 0..max_busy busy servers (B = 0: 1.0)."""
        return [float(x) for x in server_speed(np.arange(max_busy + 1), self.cores)]

    def offered_load(self, server_load: ArrayLike) -> np.ndarray:
        r"""Per server, the load that decides stability: :math:`\max(\lambda_i S_i, \sum_j \lambda_j S_j / c)`.

        The node is stable exactly when every entry is < 1 (own server under one core, node
        under c cores).

        >>> CpuNode(2).offered_load([0.6, 0.6, 0.3]).tolist()
        [0.75, 0.75, 0.75]
        >>> CpuNode(8).offered_load([0.9, 0.2]).tolist()
        [0.9, 0.2]
        """
        load = np.asarray(server_load, dtype=np.float64)
        return np.maximum(load, load.sum(axis=-1, keepdims=True) / self.cores)


def cpu_node_queue(
    rates_rps: ArrayLike,
    service_ms: ArrayLike,
    second_moment_ms2: ArrayLike | None = None,
    *,
    cores: ArrayLike = 1,
    mask: ArrayLike | None = None,
) -> QueueMetrics:
    r"""Mean latency of the services of CPU nodes under :class:`CpuNode`'s discipline [ms].

    Parameters
    ----------
    rates_rps : array_like
        λᵢ [requests/s], services on the last axis.
    service_ms : array_like
        Solo Sᵢ [ms] (one request alone on one core).
    second_moment_ms2 : array_like, optional
        Solo E[Sᵢ²] [ms²] (default Sᵢ²: deterministic).
    cores : array_like of int
        c of each node, shape broadcastable to ``(...)``.
    mask : array_like of bool, optional
        Valid services.

    Returns
    -------
    QueueMetrics
        ``service_ms`` the stretched σᵢSᵢ, ``utilization`` the node's Σλᵢ Sᵢ / c; latencies
        ``inf`` where a server or the node is at or over capacity (λᵢσᵢSᵢ >= 1 or Σλᵢ Sᵢ >= c).

    Examples
    --------
    One server at 0.5 of a core on 2 cores is its own M/D/1 queue: 20 + 0.5·20/(2·0.5) = 30 ms.

    >>> cpu_node_queue([25.0], [20.0], cores=2).latency_ms.tolist()
    [30.0]

    Two busy servers on one core share it (each at half speed while both are busy).

    >>> [round(x, 2) for x in cpu_node_queue([10.0, 10.0], [20.0, 20.0], cores=1).latency_ms.tolist()]
    [29.17, 29.17]
    """
    lam_in = _nonneg("rates_rps", rates_rps) / MS_PER_S
    s_in = _positive("service_ms", service_ms)
    m2_in = _second_moment(s_in, second_moment_ms2)
    shape = np.broadcast_shapes(lam_in.shape, s_in.shape, m2_in.shape)
    if len(shape) == 0:
        shape = (1,)
    valid = _mask(mask, shape)
    lam = np.where(valid, np.broadcast_to(lam_in, shape), 0.0)
    s = np.where(valid, np.broadcast_to(s_in, shape), 1.0)
    m2 = np.where(valid, np.broadcast_to(m2_in, shape), 1.0)
    c = np.broadcast_to(_whole_count("cores", cores), shape[:-1])
    return cpu_node_core(lam, s, m2, c, valid)


def cpu_node_core(
    lam: np.ndarray, s: np.ndarray, m2: np.ndarray, c: np.ndarray, valid: np.ndarray
) -> QueueMetrics:
    """:func:`cpu_node_queue` on validated arrays: λ [1/ms] (0 where masked), S, E[S²] (harmless
    where masked), cores (shape ``(...)``, int), mask (all of shape ``(..., K)``)."""
    load = lam * s  # λᵢSᵢ, 0 where masked
    node_load = load.sum(axis=-1)
    sigma = np.ones(load.shape)
    crowded = np.count_nonzero(load > 0, axis=-1) > c  # elsewhere nobody ever slows: σ = 1 exactly
    if crowded.any():
        sigma[crowded] = _mean_field_slowdown(load[crowded], c[crowded])
    stretched = sigma * s
    rho = lam * stretched
    gap = 1.0 - rho
    unbounded = (gap <= 0.0) | (node_load >= c)[..., None]
    wait = np.full(load.shape, np.inf)
    np.divide(lam * sigma * sigma * m2, 2.0 * gap, out=wait, where=~unbounded)
    wait = np.where(valid, wait, 0.0)
    latency = np.where(valid, stretched + wait, 0.0)
    return QueueMetrics(latency, wait, np.where(valid, stretched, 0.0), node_load / c)


#: The counts m at which the map's weights sit: (c − 1 − m)⁺ (the excess), m <= c − 2, m = c − 2, m = c − 3.
_Weights = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _lower_weights(cores: np.ndarray, width: int) -> _Weights:
    r"""Per count m < T and row: :math:`(c - 1 - m)^+`, :math:`[m \le c - 2]`, :math:`[m = c - 2]`, :math:`[m = c - 3]`.

    Each (T, n, 1). :math:`(c - 1 - m)^+/c` is the part of :math:`h(m) = \max(1, (1 + m)/c)`
    above the line :math:`(1 + m)/c`; only m <= c − 2 < T enter, so the distributions may be cut
    at T = max(c) − 1 entries.
    """
    m = np.arange(width)[:, None, None]
    c = cores[None, :, None]
    return (
        np.maximum(c - 1 - m, 0).astype(np.float64),
        (m <= c - 2).astype(np.float64),
        (m == c - 2).astype(np.float64),
        (m == c - 3).astype(np.float64),
    )


def _leave_one_out_lower(busy: np.ndarray, width: int) -> np.ndarray:
    """``dist[m, :, i]`` = P(m of the servers other than i busy), m < ``width``: (T, n, K).

    One pass over the servers j, each added to every i but itself. Truncating is exact for the
    entries kept (adding a server only moves mass up). Counts first keeps every slice contiguous.
    """
    n, k = busy.shape
    dist = np.zeros((width, n, k))
    dist[0] = 1.0
    others = ~np.eye(k, dtype=bool)
    for j in range(k):
        joins = busy[:, j, None] * others[j]  # (n, K): b_j, 0 at i = j
        moved = dist[:-1] * joins
        dist *= 1.0 - joins
        dist[1:] += moved
    return dist


@dataclass(frozen=True, slots=True)
class _MapValue:
    """The mean-field map at σ: T(σ), b = min(1, λSσ), P(Kᵢ >= c − 1), P(Kᵢ = c − 2), P(Kᵢ = c − 3)."""

    stretch: np.ndarray
    busy: np.ndarray
    tail: np.ndarray
    at: np.ndarray
    below_at: np.ndarray

    def rows(self, keep: np.ndarray) -> _MapValue:
        return _MapValue(*(getattr(self, k)[keep] for k in self.__slots__))


def _evaluate(load: np.ndarray, sigma: np.ndarray, cores: np.ndarray, weights: _Weights | None) -> _MapValue:
    r""":math:`T_i(\sigma) = (1 + \sum_{j \ne i} b_j)/c + E[(c - 1 - K_i)^+]/c` and what the Newton step needs."""
    busy = np.minimum(load * sigma, 1.0)
    c = cores[:, None].astype(np.float64)
    linear = (1.0 + busy.sum(axis=-1, keepdims=True) - busy) / c
    if weights is None:  # every c = 1: the map is linear in b
        zero = np.zeros_like(load)
        return _MapValue(linear, busy, np.ones_like(load), zero, zero)
    excess, below, at, below_at = weights
    dist = _leave_one_out_lower(busy, excess.shape[0])
    return _MapValue(
        linear + (dist * excess).sum(axis=0) / c,
        busy,
        1.0 - (dist * below).sum(axis=0),
        (dist * at).sum(axis=0),
        (dist * below_at).sum(axis=0),
    )


def _newton_step(
    residual: np.ndarray, load: np.ndarray, sigma: np.ndarray, f: _MapValue, cores: np.ndarray
) -> np.ndarray:
    r"""δ solving (I − J̃)δ = T(σ) − σ, J̃ the map's Jacobian with leave-two-out terms from leave-one-out ones.

    :math:`\partial T_i/\partial\sigma_j = \rho'_j P(K_{ij} \ge c - 1)/c` (j ≠ i; ρ'ⱼ = λⱼSⱼ where
    bⱼ < 1, else 0) and :math:`P(K_{ij} \ge c-1) = P(K_i \ge c-1) - b_j P(K_{ij} = c-2)`. Removing
    server j from Kᵢ, :math:`q_m = p_m + b_j (q_m - q_{m-1}) \approx p_m + b_j (p_m - p_{m-1})`,
    so with p = P(Kᵢ = ·) the matrix is diagonal plus rank three:
    J̃ = Σᵣ Uᵣ Vᵣᵀ − diag(Σᵣ Uᵣ∘Vᵣ), U = (P(Kᵢ ≥ c−1), −p_{c−2}, −(p_{c−2} − p_{c−3}))/c,
    V = (ρ', b∘ρ', b²∘ρ'); solved by Woodbury (a 3 × 3 system per row). Its error is O(b³ Δ²p),
    so the steps converge fast (linearly, at that rate), not quadratically.
    """
    c = cores[:, None].astype(np.float64)
    w = np.where(load * sigma < 1.0, load, 0.0)
    u = np.stack([f.tail, -f.at, f.below_at - f.at], axis=-1) / c[..., None]  # (n, K, 3)
    v = np.stack([w, f.busy * w, f.busy * f.busy * w], axis=-1)  # (n, K, 3)
    d = 1.0 + (u * v).sum(axis=-1)  # diagonal of I − J̃
    y = residual / d
    du = u / d[..., None]
    vt = np.swapaxes(v, -1, -2)  # (n, 3, K)
    m = np.eye(3) - vt @ du
    ok = np.abs(np.linalg.det(m)) > 1e-12
    z = np.linalg.solve(np.where(ok[:, None, None], m, np.eye(3)), (vt @ y[..., None]))
    step = y + (du @ z)[..., 0]
    return np.where(ok[:, None], step, residual)


def _start(load: np.ndarray, cores: np.ndarray) -> np.ndarray:
    r"""Where the Newton steps start: the fixed point of the map's linear part, unclamped; σ = 1 over capacity.

    :math:`\sigma_i = (1 + s - \rho_i\sigma_i)/c` with :math:`s = \sum_j \rho_j\sigma_j` gives
    :math:`\sigma_i = (1 + s)/(c + \rho_i)`, :math:`s = A/(1 - A)`, :math:`A = \sum_j \rho_j/(c + \rho_j)`
    (A < L/c < 1 on a stable node). On one core with no server saturated it is the answer, and one
    evaluation certifies it. A node at or over capacity starts at σ = 1, its floor (see below).
    """
    c = cores[:, None].astype(np.float64)
    share = load / (c + load)
    a = share.sum(axis=-1, keepdims=True)
    stable = load.sum(axis=-1, keepdims=True) < c
    guess = (1.0 + a / np.where(stable, 1.0 - a, 1.0)) / (c + load)
    return np.where(stable, np.maximum(guess, 1.0), 1.0)


def _mean_field_slowdown(load: np.ndarray, cores: np.ndarray) -> np.ndarray:
    r"""σᵢ = E[max(1, (1 + Kᵢ)/c)], Kᵢ ~ PoissonBinomial(bⱼ = min(1, λⱼSⱼσⱼ), j ≠ i): the least fixed point.

    ``load`` (n, K) λᵢSᵢ (0 for masked or idle services), ``cores`` (n,) with fewer cores than
    active services. The map T is monotone, so plain steps from σ = 1 climb to the least fixed
    point (what the damped iteration of the first version reached, in hundreds of steps); here
    Newton steps (:func:`_newton_step`) reach it in 2-8, and a certificate stops each row.

    **Uniqueness and the certificate.** Let x <= σ* be a point the plain steps reached (a
    floor; x = 1 at first) and F(x) the load of the servers not saturated there,
    :math:`F = \sum_{j: \lambda_j S_j x_j < 1} \lambda_j S_j`. On {σ >= x} the others keep
    bⱼ = 1, and in b the map is :math:`U_i(b) = \min(1, \lambda_i S_i\,E[h(K_i(b))])` with
    :math:`|\partial E[h(K_i)]/\partial b_j| = P(K_{ij} \ge c - 1)/c \le 1/c`, so
    :math:`\lVert U(b) - U(b')\rVert_1 \le (F/c)\lVert b - b'\rVert_1`: a contraction once F < c
    (from the start when the node is stable, L < c). There the fixed point above x is unique,
    hence σ*, and for any σ >= x with b = b(σ),
    :math:`|T_i(\sigma) - \sigma^*_i| \le \lVert b - b^*\rVert_1 / c \le \lVert b(T(\sigma)) - b\rVert_1 / (c - F)`.
    A row takes Newton steps kept >= x while F < c, plain steps (raising x) otherwise; it stops
    when that bound is under ``_TOLERANCE`` (or, still without a contraction, when its plain
    step is) and returns T(σ). A stopped row is left alone, so its value does not depend on the
    other rows of the batch.
    """
    width = int(cores.max()) - 1  # P(Kᵢ = m) is needed for m <= c − 2 only
    weights = _lower_weights(cores, width) if width > 0 else None
    sigma = _start(load, cores)
    floor = np.ones(load.shape)
    todo = np.arange(load.shape[0])
    for _ in range(_MAX_ITERATIONS):
        ld, sg, cr = load[todo], sigma[todo], cores[todo]
        sub: _Weights | None = None if weights is None else tuple(w[:, todo] for w in weights)  # type: ignore[assignment]
        f = _evaluate(ld, sg, cr, sub)
        new, busy = f.stretch, f.busy
        gap = cr - np.where(ld * floor[todo] < 1.0, ld, 0.0).sum(axis=-1)  # c − F(x)
        change = np.abs(np.minimum(ld * new, 1.0) - busy).sum(axis=-1)
        bound = np.divide(change, gap, out=np.full(gap.shape, np.inf), where=gap > 0)
        step = np.max(np.abs(new - sg), axis=-1)
        done = (
            (bound < _TOLERANCE)
            | (step < _STEP_FLOOR * new.max(axis=-1))
            | ((gap <= 0) & (step < _TOLERANCE))
        )
        sigma[todo[done]] = new[done]
        more = ~done
        if not more.any():
            break
        todo, gap = todo[more], gap[more]
        newton = np.maximum(
            floor[todo],
            sg[more] + _newton_step(new[more] - sg[more], ld[more], sg[more], f.rows(more), cr[more]),
        )
        plain = gap <= 0
        floor[todo[plain]] = new[more][plain]
        sigma[todo] = np.where(plain[:, None], new[more], newton)
    return sigma
