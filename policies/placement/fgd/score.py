r"""Expected GPU fragmentation of nodes and its increase when a pod is placed (FGD, models.md §F).

Definition followed (Weng et al., USENIX ATC 2023, §3; the simulator's
``NodeGpuShareFragAmountScore`` in hkust-adsl/kubernetes-scheduler-simulator
``pkg/utils/frag.go``, scored by ``pkg/simulator/plugin/fgd_score.go``): for a node with free
milli-GPU fᵈ on each device d and free CPU c, and a target workload of shapes t with popularity
pₜ, the fragmentation is the GPU capacity each shape could not use there, in expectation:

.. math::

    F = \sum_t p_t\, F_t, \qquad
    F_t = \begin{cases}
        \sum_{d: f_d < m_t} f_d & \text{if } m_t > 0,\ c \ge c_t,\
            \#\{d: f_d \ge m_t\} \ge n_t \quad (\text{the shape fits: Q3})\\
        \sum_d f_d & \text{otherwise (it does not fit, or it asks for no GPU)}
    \end{cases}

with shape t = (cₜ CPU, mₜ milli per GPU, nₜ GPUs). FGD places a pod where F grows least
(``score = −ΔF``; the simulator maps it through a sigmoid, a monotone change that does not alter
the choice) and, for a fractional pod, on the device where it grows least.

Vectorised form. Writing Sₜ = Σ_{d: f_d ≥ mₜ} f_d, F = P·Σ_d f_d − Σₜ pₜ·fitsₜ·Sₜ (P = Σₜ pₜ). For a
single-GPU shape the count condition is implied by Sₜ > 0, so its part separates over devices:
Σ_d f_d·G(c, f_d) with G(c, x) = Σ_{t: nₜ=1, cₜ≤c, mₜ≤x} pₜ (``WorkloadMix.g_table``). A
multi-GPU shape takes whole GPUs, Sₜ = 1000·k with k the fully free GPUs, so its part is
1000·k·H(c, k), H(c, k) = Σ_{t: nₜ>1, cₜ≤c, nₜ≤k} pₜ (``WorkloadMix.h_table``). Placing a pod
changes c and one device's fᵈ (or k whole GPUs), so ΔF for every candidate device of every node
is a handful of array lookups: O(m·D), independent of the number of shapes.

GPU types (the simulator's ``NoAccess``): a shape constrained to GPU models the node's model is
not among counts all of the node's free GPU, Fₜ = Σ_d f_d, i.e. it drops out of G and H there.
So G and H are read from the table of the node's model (``table``, :meth:`WorkloadMix.tables_of`),
which holds the untyped shapes and the typed ones that accept the model; P stays the sum over all
shapes.
"""

from __future__ import annotations

import numpy as np

from qosched.policies.placement.fgd.mix import WorkloadMix
from qosched.policies.placement.rows import row_count, row_sum
from qosched.policies.types import GPU_MILLI_PER_DEVICE

__all__ = ["fragmentation_delta", "node_fragmentation"]

_FULL = GPU_MILLI_PER_DEVICE


def _g(mix: WorkloadMix, r: np.ndarray, free: np.ndarray) -> np.ndarray:
    """G(c, f) for table rows ``r`` (m,) and free milli ``free`` (m, D) or (m,): a flat gather."""
    width = mix.g_table.shape[1]
    idx = ((r * width)[:, None] + free) if free.ndim == 2 else (r * width + free)
    return mix.g_table.ravel().take(idx)


def _h(mix: WorkloadMix, r: np.ndarray, k: np.ndarray) -> np.ndarray:
    """H(c, k) for rows ``r`` and fully free GPU counts ``k`` (same shape or broadcastable)."""
    width = mix.h_table.shape[1]
    return mix.h_table.ravel().take(r * width + np.minimum(k, width - 1))


def _parts(
    mix: WorkloadMix, free: np.ndarray, cpu_free: np.ndarray, table: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of F = P·Σf − A − B for nodes (free (m, D) in 0..1000, cpu_free (m,))."""
    r = mix.table_row(cpu_free, table)
    a = row_sum(free * _g(mix, r, free))
    k = row_count(free >= _FULL)
    return a, _FULL * k * _h(mix, r, k)


def node_fragmentation(
    mix: WorkloadMix, free_milli: np.ndarray, cpu_free_milli: np.ndarray, table: np.ndarray | None = None
) -> np.ndarray:
    """Expected fragmentation F [milli-GPU] of each node, shape (m,).

    Parameters
    ----------
    mix : WorkloadMix
        Target workload.
    free_milli : (m, D) int
        Free milli-GPU per device (0 for absent devices), each within 0..1000.
    cpu_free_milli : (m,) int
        Free CPU of each node [milli-CPU]; negative counts as none.
    table : (m,) int, optional
        Each node's table (:meth:`WorkloadMix.tables_of`: by its GPU model); needed only when
        the mix has typed shapes (None: every node reads table 0, the untyped shapes').

    Examples
    --------
    One GPU with 300 milli free and plenty of CPU, workload: half 500-milli pods, half CPU-only:
    the GPU pod cannot use the 300 (F₁ = 300), the CPU pod uses no GPU (F₂ = 300): F = 300.

    >>> mix = WorkloadMix.of([(1000, 500, 1), (1000, 0, 0)], [1, 1])
    >>> float(node_fragmentation(mix, np.array([[300]]), np.array([8000]))[0])
    300.0
    """
    free = np.clip(free_milli, 0, _FULL).astype(np.int64, copy=False)
    a, b = _parts(mix, free, np.asarray(cpu_free_milli), table)
    return mix.popularity.sum() * row_sum(free) - a - b


def fragmentation_delta(
    mix: WorkloadMix,
    free_milli: np.ndarray,
    cpu_free_milli: np.ndarray,
    *,
    cpu_milli: int,
    milli: int,
    count: int,
    device_ok: np.ndarray,
    table: np.ndarray | None = None,
) -> np.ndarray:
    """Increase of F when the pod is placed, per node and device, shape (m, D) [milli-GPU].

    Parameters
    ----------
    mix, free_milli, cpu_free_milli
        As in :func:`node_fragmentation`.
    cpu_milli : int
        The pod's CPU request.
    milli : int
        Its milli-GPU per device (0 for a pod without GPU).
    count : int
        GPUs it takes (1 for a fractional request; k for k whole GPUs; 0 for none).
    device_ok : (m, D) bool
        Devices it may take.
    table : (m,) int, optional
        As in :func:`node_fragmentation`.

    Returns
    -------
    (m, D) float
        Fractional pod (``milli < 1000``): ΔF of placing it on each device; ``inf`` where the
        device is not ok. Whole GPUs or no GPU: the node's ΔF, the same in every column (the pod
        takes k fully free GPUs, which are alike), ``inf`` on rows without enough ok devices.
    """
    free = _clipped(free_milli)
    cpu = np.asarray(cpu_free_milli).astype(np.int64, copy=False)
    p_all = float(mix.popularity.sum())
    total = row_sum(free)
    r0 = mix.table_row(cpu, table)
    g0 = _g(mix, r0, free)
    fg0 = free * g0
    a0 = row_sum(fg0)
    full = free >= _FULL
    any_full = bool(full.any())
    k = row_count(full) if any_full else np.zeros(free.shape[0], dtype=np.int64)
    before = p_all * total - a0 - _FULL * k * _h(mix, r0, k)
    r1 = mix.table_row(cpu - cpu_milli, table)
    same_row = bool(np.array_equal(r0, r1))
    # Where taking the pod's CPU leaves a node in the same CPU row of the tables (the usual
    # case), G and A are unchanged: reuse them (the same numbers, not recomputed).
    fg_now = fg0 if same_row else free * _g(mix, r1, free)
    a1 = a0 if same_row else row_sum(fg_now)  # A with the CPU taken, devices unchanged
    m, d = free.shape
    if count <= 0 or milli <= 0:
        after = p_all * total - a1 - _FULL * k * _h(mix, r1, k)
        return np.repeat((after - before)[:, None], d, axis=1)
    if milli >= _FULL:
        k1 = np.maximum(k - count, 0)
        a_after = a1 - count * _FULL * _g(mix, r1, np.full(m, _FULL))
        after = p_all * (total - count * _FULL) - a_after - _FULL * k1 * _h(mix, r1, k1)
        enough = row_count(device_ok) >= count
        return np.where(enough[:, None], np.repeat((after - before)[:, None], d, axis=1), np.inf)
    # Fractional: one device goes from f to f - milli.
    f_after = np.maximum(free - milli, 0)
    a_after = a1[:, None] - fg_now + f_after * _g(mix, r1, f_after)
    # after = P·(Σf − milli) − A' − B', with B' for k − 1 fully free GPUs where the device
    # taken was fully free, else for k: one value per node for each case, subtracted per device.
    rest = (p_all * (total - milli))[:, None] - a_after
    delta = rest - (_FULL * k * _h(mix, r1, k))[:, None]
    if any_full:
        k_less = np.maximum(k - 1, 0)
        np.subtract(rest, (_FULL * k_less * _h(mix, r1, k_less))[:, None], out=delta, where=full)
    delta -= before[:, None]
    np.copyto(delta, np.inf, where=~device_ok)  # np.where(device_ok, delta, inf), cheaper
    return delta


def _clipped(free_milli: np.ndarray) -> np.ndarray:
    """Free milli as int64 within 0..1000 (one pass)."""
    return np.clip(free_milli, 0, _FULL, out=np.empty(np.shape(free_milli), dtype=np.int64), casting="unsafe")
