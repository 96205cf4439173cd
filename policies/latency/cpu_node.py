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
#: Fixed-point iterations of the mean-field slowdown (it converges in tens at loads below 0.9).
_MAX_ITERATIONS: Final = 200
_TOLERANCE: Final = 1e-13


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


def _busy_count_distributions(busy: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Poisson-binomial distributions of the busy count among the first i and the last K − i servers.

    ``prefix[i][..., k]`` = P(k of servers 0..i−1 busy), ``suffix[i][..., k]`` = P(k of servers
    i..K−1 busy), each of shape ``(..., K + 1)``.
    """
    k = busy.shape[-1]
    start = np.zeros((*busy.shape[:-1], k + 1))
    start[..., 0] = 1.0

    def add(dist: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = dist * (1.0 - b[..., None])
        out[..., 1:] += dist[..., :-1] * b[..., None]
        return out

    prefix = [start]
    for j in range(k):
        prefix.append(add(prefix[-1], busy[..., j]))
    suffix = [start]
    for j in range(k - 1, -1, -1):
        suffix.append(add(suffix[-1], busy[..., j]))
    suffix.reverse()
    return prefix, suffix


def _mean_field_slowdown(load: np.ndarray, cores: np.ndarray) -> np.ndarray:
    r"""σᵢ = E[max(1, (1 + Kᵢ)/c)], Kᵢ ~ PoissonBinomial(bⱼ = min(1, λⱼSⱼσⱼ), j ≠ i): damped fixed point.

    ``load`` (n, K) λᵢSᵢ (0 for masked or idle services), ``cores`` (n,). The map is monotone
    in σ; damping by 1/2 avoids oscillation.
    """
    k = load.shape[-1]
    total = np.arange(2 * k + 1)
    # stretch[n, a + b] for a busy among the servers before i and b after it.
    stretch = 1.0 / server_speed(1 + total[None, :], cores[:, None])  # 1/r(1 + K): the one speed rule
    pair = np.add.outer(np.arange(k + 1), np.arange(k + 1))  # (K+1, K+1) index a + b
    table = stretch[:, pair]  # (n, K+1, K+1)
    sigma = np.ones(load.shape)
    todo = np.arange(load.shape[0])  # rows not converged yet; a converged row is left alone, so
    for _ in range(_MAX_ITERATIONS):  # its value does not depend on the other rows of the batch
        prefix, suffix = _busy_count_distributions(np.minimum(load[todo] * sigma[todo], 1.0))
        tab = table[todo]
        new = np.stack(
            [(prefix[i][:, :, None] * tab * suffix[i + 1][:, None, :]).sum(axis=(1, 2)) for i in range(k)],
            axis=-1,
        )
        done = np.max(np.abs(new - sigma[todo]), axis=-1) < _TOLERANCE
        sigma[todo] = np.where(done[:, None], new, 0.5 * (sigma[todo] + new))
        todo = todo[~done]
        if todo.size == 0:
            break
    return sigma
