"""The hard constraints every placement policy applies first, vectorised over the candidates.

One call of :func:`gather` turns ``(state, pod, candidates)`` into a :class:`Candidates` view:
the node-level verdict (a :class:`~qosched.policies.placement.base.Reason` per candidate) and
the arrays every policy scores from (free milli-GPU per device, devices the pod may take, the
per-variant service parameters of the pod on each candidate's accelerator). Policies add their
own checks on top (device memory for the knapsack baselines, the interference model for the
``ibis-*`` policies and ``qosched``) and then score.

Checks, in this order (the first that fails names the reason, so every rejection has exactly
one, stable, reason):

1. ``UNKNOWN_NODE``            the candidate index is not a row of the state;
2. ``UNSCHEDULABLE``           node not ready or cordoned;
3. ``NO_ACCELERATOR``          the pod names a model and the node has no ``qosched.io/accelerator``;
4. ``ACCELERATOR_NOT_ALLOWED`` the pod's ``gpu_spec`` lists neither the node's GPU model
                               (``NodeView.gpu_model``) nor its accelerator key;
5. ``NO_PROFILE``              no variant of the pod has a profile on the node's accelerator;
6. ``ACCURACY``                profiles exist, none meets ``min_accuracy`` (an unknown accuracy
                               does not meet a stated minimum);
7. ``TOO_FEW_DEVICES``         fewer devices than the pod occupies (``cpu`` nodes have no GPU);
8. ``INSUFFICIENT_CPU``, ``INSUFFICIENT_MEMORY`` against the node's allocatable;
9. ``INSUFFICIENT_GPU``        fewer devices with ``milli_per_device`` free than the pod needs;
   ``EXCLUSIVE_BUSY``          the same, on an ``exclusive`` node whose fitting devices are busy.

Devices a pod occupies (``need``): ``gpu_count`` when it requests GPUs; one device (the edge TPU
or the CPU, 0 milli) for an inference pod that requests none; none for a plain pod, which is
then placed by CPU and memory only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from qosched.policies.placement.base import Evaluation, Reason
from qosched.policies.placement.rows import row_any, row_count
from qosched.policies.state import ClusterState
from qosched.policies.types import CPU_ACCELERATOR, GPU_MILLI_PER_DEVICE, PodDemand

__all__ = [
    "Candidates",
    "VariantTable",
    "allowed_by_gpu_spec",
    "evaluation",
    "gather",
    "variant_table",
]

#: ``SHARING_MODES.index("exclusive")`` (see qosched.policies.types).
_EXCLUSIVE = 3


@dataclass(frozen=True, slots=True)
class VariantTable:
    """The pod's model variants on the candidates' accelerators.

    The lookups run once per (variant, accelerator type), not per node: small tables of shape
    ``(V, A + 1)`` (A accelerator types of the state; the extra last column, reached by code -1 —
    a node without accelerator — through numpy's negative indexing, has no profile), and
    ``accel_idx`` (m,) the candidates' columns. Per-candidate arrays are taken from them on demand.

    ``usable`` = a profile exists and its accuracy meets ``min_accuracy``. ``first`` (m,) is the
    first usable variant in the pod's preference order, -1 where none is usable.
    """

    has_profile_table: np.ndarray
    usable_table: np.ndarray
    params_table: np.ndarray  # (5, V, A + 1): service, second moment, swap, memory, front end
    accel_idx: np.ndarray
    any_profile: np.ndarray
    first: np.ndarray
    #: (V, A + 1) the profile's parameters pass ``latency.sharing.valid_services``.
    valid_table: np.ndarray | None = None

    _PARAMS = ("service_ms", "second_moment_ms2", "swap_ms", "memory_mib", "frontend_ms")

    @property
    def n_variants(self) -> int:
        return int(self.usable_table.shape[0])

    def usable(self, variant: int) -> np.ndarray:
        """(m,) candidates where ``variant`` is usable."""
        return self.usable_table[variant].take(self.accel_idx)

    def take(self, name: str, variant: np.ndarray) -> np.ndarray:
        """``name`` parameter of the given variant per candidate, shape (m,) (0 where variant < 0)."""
        table = self.params_table[self._PARAMS.index(name)]
        cols = table.shape[1]
        flat = np.maximum(variant, 0) * cols + self.accel_idx
        return np.where(variant >= 0, table.ravel().take(flat), 0.0)

    def per_candidate(self, small: np.ndarray, variant: np.ndarray, fill: float) -> np.ndarray:
        """A per-(variant, accelerator) table ``small`` (V, A + 1) read per candidate, (m,);
        ``fill`` where the variant is -1."""
        if variant.size and variant.min() == variant.max() and variant[0] >= 0:
            return np.take(small[int(variant[0])], self.accel_idx)
        flat = np.maximum(variant, 0) * small.shape[1] + self.accel_idx
        return np.where(variant >= 0, small.ravel().take(flat), fill)

    def take_all(self, variant: np.ndarray) -> np.ndarray:
        """Every parameter (rows in ``_PARAMS`` order) of the given variant per candidate, (5, m).

        The same values as :meth:`take` for each name, in one gather (one per call when every
        candidate has the same variant, the usual case).
        """
        if variant.size and variant.min() == variant.max() and variant[0] >= 0:
            return np.take(self.params_table[:, int(variant[0]), :], self.accel_idx, axis=1)
        cols = self.params_table.shape[2]
        flat = np.maximum(variant, 0) * cols + self.accel_idx
        per = np.take(self.params_table.reshape(len(self._PARAMS), -1), flat, axis=1)
        return np.where(variant >= 0, per, 0.0)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Shared, read-only view of one ``evaluate`` call (see the module docstring).

    node_idx:   (m,) the candidates as given (returned in the Evaluation).
    row:        (m,) state row to read (0 where the index is unknown; its reason says so).
    reason:     (m,) node-level Reason code after the hard constraints (0 = passes).
    need:       devices the pod occupies on a node (0 for a plain pod).
    milli:      milli-GPU per occupied device (0 when the pod requests no GPU).
    free_milli: (m, D) free milli-GPU per device slot (0 where no device).
    device_ok:  (m, D) the device exists, has ``milli`` free and (exclusive nodes) is empty.
    variants:   per-variant parameters, or None for a pod without a model.
    """

    state: ClusterState
    pod: PodDemand
    node_idx: np.ndarray
    row: np.ndarray
    reason: np.ndarray
    need: int
    milli: int
    free_milli: np.ndarray
    device_ok: np.ndarray
    cpu_free_milli: np.ndarray
    mem_free_mib: np.ndarray
    variants: VariantTable | None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return int(self.node_idx.shape[0])

    @property
    def ok(self) -> np.ndarray:
        """(m,) candidates that pass every hard constraint."""
        return self.reason == 0

    @property
    def columns(self) -> int:
        """Width of ``Evaluation.devices``: the devices the pod occupies, at least 1."""
        return max(1, self.need)

    @property
    def first_variant(self) -> np.ndarray:
        """(m,) first usable variant (interference-blind choice), -1 where none or no model."""
        if self.variants is None:
            return np.full(self.m, -1, dtype=np.int64)
        return self.variants.first


#: At most this many small tables are kept per state (``ClusterState.derived``).
_SMALL_TABLES_PER_STATE = 256
_SmallTables = dict[tuple[object, ...], tuple[np.ndarray, ...]]


def variant_table(state: ClusterState, pod: PodDemand, accel_code: np.ndarray) -> VariantTable:
    """Service parameters of each variant of ``pod`` per accelerator type (see VariantTable).

    The small tables of each (variants, min accuracy, accelerator count) are memoised on the
    state (``ClusterState.derived``): its profile lookup never changes (profiles reloaded → a
    new state) and its accelerator list only grows, so they stay exact. Bounded per state.
    """
    n_acc = len(state.accelerators)
    key = (pod.variants, pod.min_accuracy, n_acc)
    per = cast(_SmallTables, state.derived.setdefault(("variant-tables",), {}))
    small = per.get(key)
    if small is None:
        small = _small_tables(state, pod)
        if len(per) >= _SMALL_TABLES_PER_STATE:
            per.clear()
        per[key] = small
    has, usable, params, valid, any_small, first_small = small
    idx = np.where(accel_code < 0, n_acc, accel_code).astype(np.int64)
    return VariantTable(
        has_profile_table=has,
        usable_table=usable,
        params_table=params,
        accel_idx=idx,
        any_profile=any_small.take(idx),
        first=first_small.take(idx),
        valid_table=valid,
    )


def _small_tables(state: ClusterState, pod: PodDemand) -> tuple[np.ndarray, ...]:
    """(has, usable, params, valid, any profile, first usable variant) per accelerator column."""
    n_acc = len(state.accelerators)
    n_var = len(pod.variants)
    cols = n_acc + 1
    has = np.zeros((n_var, cols), dtype=bool)
    usable = np.zeros((n_var, cols), dtype=bool)
    params = np.zeros((5, n_var, cols))
    valid = np.zeros((n_var, cols), dtype=bool)
    for v, model in enumerate(pod.variants):
        for a, accelerator in enumerate(state.accelerators):
            p = state.service_params(accelerator, model)
            if p is None:
                continue
            has[v, a] = True
            valid[v, a] = state.params_valid(p)
            usable[v, a] = pod.min_accuracy is None or (
                p.accuracy is not None and p.accuracy >= pod.min_accuracy
            )
            params[:, v, a] = (p.service_ms, p.second_moment_ms2, p.swap_ms, p.memory_mib, p.frontend_ms)
    first_small = np.where(usable.any(axis=0), np.argmax(usable, axis=0), -1).astype(np.int64)
    tables = (has, usable, params, valid, np.asarray(has.any(axis=0)), first_small)
    for table in tables:
        table.setflags(write=False)
    return tables


def devices_needed(pod: PodDemand) -> int:
    """Devices the pod occupies: gpu_count; 1 for an inference pod without a GPU request; else 0."""
    if pod.gpu_milli > 0:
        return pod.gpu_count
    return 1 if pod.is_inference else 0


def gather(state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Candidates:
    """Apply the common hard constraints to ``candidates`` (state row indexes); see the module doc.

    In order (the first failure is each node's reason): known and schedulable; accelerator,
    profile and accuracy (:func:`_check_accelerator`); device count (:func:`_device_count`); CPU
    and memory; free devices (:func:`_device_room`).
    """
    node_idx = np.asarray(candidates).astype(np.int64, copy=False).ravel()
    if state.n_nodes == 0:
        return _nothing_known(state, pod, node_idx)
    known = (node_idx >= 0) & (node_idx < state.n_nodes)
    all_known = bool(known.all())
    rows = _Rows(node_idx if all_known else np.where(known, node_idx, 0))
    if not all_known:
        rows.fail(~known, Reason.UNKNOWN_NODE)
    rows.fail(~rows.of(state.schedulable), Reason.UNSCHEDULABLE)

    accel = rows.of(state.accel_code) if all_known else np.where(known, rows.of(state.accel_code), -1)
    need = devices_needed(pod)
    milli = pod.milli_per_device if pod.gpu_milli > 0 else 0
    variants = _check_accelerator(state, pod, rows, accel, need)
    cpu_node = _device_count(state, pod, rows, accel, need)

    cpu_free = (rows.of(state.cpu_cap_milli) - rows.of(state.cpu_used_milli)).astype(np.int64)
    mem_free = rows.of(state.mem_cap_mib) - rows.of(state.mem_used_mib)
    if pod.cpu_milli > 0:
        rows.fail(cpu_free < pod.cpu_milli, Reason.INSUFFICIENT_CPU)
    if pod.memory_mib > 0:
        rows.fail(mem_free < pod.memory_mib, Reason.INSUFFICIENT_MEMORY)

    free, device_ok = _device_room(state, rows, cpu_node, need, milli)
    return Candidates(
        state=state,
        pod=pod,
        node_idx=node_idx,
        row=rows.row,
        reason=rows.reason,
        need=need,
        milli=milli,
        free_milli=free,
        device_ok=device_ok,
        cpu_free_milli=cpu_free,
        mem_free_mib=mem_free,
        variants=variants,
    )


class _Rows:
    """The candidates' state rows, and each one's reason so far (the first failure wins)."""

    __slots__ = ("reason", "row")

    def __init__(self, row: np.ndarray) -> None:
        self.row = row
        self.reason = np.zeros(row.shape[0], dtype=np.int8)

    def of(self, arr: np.ndarray) -> np.ndarray:
        return arr.take(self.row, axis=0)

    def fail(self, bad: np.ndarray, code: Reason) -> None:
        if bad.any():  # usually nothing fails a check: skip the masked write
            self.reason[(self.reason == 0) & bad] = int(code)


def _check_accelerator(
    state: ClusterState, pod: PodDemand, rows: _Rows, accel: np.ndarray, need: int
) -> VariantTable | None:
    """Accelerator present (model pods), allowed by ``gpu_spec``, with a profile and the accuracy
    asked; the pod's variant table (None for a pod without a model)."""
    uses_model = bool(pod.variants)
    if uses_model:
        rows.fail(accel < 0, Reason.NO_ACCELERATOR)
    if pod.gpu_spec and need > 0:
        allowed = allowed_by_gpu_spec(state, pod.gpu_spec, accel, rows.of(state.gpu_model_code))
        rows.fail(~allowed, Reason.ACCELERATOR_NOT_ALLOWED)
    if not uses_model:
        return None
    variants = variant_table(state, pod, accel)
    rows.fail(~variants.any_profile, Reason.NO_PROFILE)
    rows.fail(variants.first < 0, Reason.ACCURACY)
    return variants


def allowed_by_gpu_spec(
    state: ClusterState, gpu_spec: Sequence[str], accel_code: np.ndarray, gpu_model_code: np.ndarray
) -> np.ndarray:
    """Per row: its accelerator key or its GPU model is one of ``gpu_spec`` (a pod's allowed GPU
    models; it applies to pods that occupy devices). ``accel_code`` / ``gpu_model_code`` are the
    rows' ``ClusterState`` codes (-1: none). The one definition of the GPU-type constraint: the
    hard constraint of every policy (:func:`gather`) and the replay's retry test use it."""
    acc_codes = [state.accelerators.index(s) for s in gpu_spec if s in state.accelerators]
    gm_codes = [state.gpu_models.index(s) for s in gpu_spec if s in state.gpu_models]
    return np.asarray(np.isin(accel_code, acc_codes) | np.isin(gpu_model_code, gm_codes))


def _device_count(
    state: ClusterState, pod: PodDemand, rows: _Rows, accel: np.ndarray, need: int
) -> np.ndarray:
    """Enough devices on the node; returns which candidates are ``cpu`` nodes, whose one device
    slot is the CPU: no GPU to give (nor to fragment)."""
    n_dev = rows.of(state.device_count)
    cpu_node = np.zeros(rows.row.shape[0], dtype=bool)
    if CPU_ACCELERATOR in state.accelerators:
        cpu_node = accel == state.accelerators.index(CPU_ACCELERATOR)
        if pod.gpu_milli > 0:
            n_dev = np.where(cpu_node, 0, n_dev)
    if need > 0:
        rows.fail(n_dev < need, Reason.TOO_FEW_DEVICES)
    return cpu_node


def _device_room(
    state: ClusterState, rows: _Rows, cpu_node: np.ndarray, need: int, milli: int
) -> tuple[np.ndarray, np.ndarray]:
    """(free milli-GPU (m, D), devices that can take the pod (m, D)); exclusive devices must be
    idle, and a node needs ``need`` such devices."""
    exists = rows.of(state.dev_exists)
    used = rows.of(state.gpu_used_milli)
    # np.where(exists & ~cpu_node, 1000 - used, 0), in place (np.where with a scalar is slow
    # on (m, D) arrays).
    free = (GPU_MILLI_PER_DEVICE - used).astype(np.int32, copy=False)
    np.copyto(free, 0, where=~(exists & ~cpu_node[:, None]) if cpu_node.any() else ~exists)
    device_ok = exists & (free >= milli) if milli > 0 else exists.copy()
    if need > 0:
        exclusive = rows.of(state.sharing_code) == _EXCLUSIVE
        if exclusive.any():
            busy = (used > 0) | row_any(rows.of(state.svc_mask)) | (rows.of(state.dev_unmodelled) > 0)
            fits_milli = row_count(device_ok) >= need
            device_ok = device_ok & ~(exclusive[:, None] & busy)
            fits = row_count(device_ok) >= need
            rows.fail(exclusive & fits_milli & ~fits, Reason.EXCLUSIVE_BUSY)
        rows.fail(~row_any(device_ok) if need == 1 else row_count(device_ok) < need, Reason.INSUFFICIENT_GPU)
    return free, device_ok


def _nothing_known(state: ClusterState, pod: PodDemand, node_idx: np.ndarray) -> Candidates:
    """The view of a call on an empty state: every candidate is unknown."""
    m, d = node_idx.shape[0], state.n_devices
    return Candidates(
        state=state,
        pod=pod,
        node_idx=node_idx,
        row=np.zeros(m, dtype=np.int64),
        reason=np.full(m, int(Reason.UNKNOWN_NODE), dtype=np.int8),
        need=devices_needed(pod),
        milli=pod.milli_per_device if pod.gpu_milli > 0 else 0,
        free_milli=np.zeros((m, d), dtype=np.int32),
        device_ok=np.zeros((m, d), dtype=bool),
        cpu_free_milli=np.zeros(m, dtype=np.int64),
        mem_free_mib=np.zeros(m),
        variants=None,
    )


def evaluation(
    cand: Candidates,
    *,
    policy: str,
    reason: np.ndarray,
    raw_score: np.ndarray,
    devices: np.ndarray,
    latency_ms: np.ndarray | None = None,
    variant: np.ndarray | None = None,
    extras: dict[str, np.ndarray] | None = None,
) -> Evaluation:
    """Assemble an :class:`Evaluation`, normalising what infeasible candidates carry.

    Infeasible candidates get raw score ``-inf``, devices ``-1``, latency NaN and variant -1,
    so that nothing a rejected node computed can leak into a decision.
    """
    ok = reason == 0
    raw = np.where(ok, raw_score.astype(np.float64, copy=False), -np.inf)
    dev = np.where(ok[:, None], devices, -1).astype(np.int64, copy=False)
    lat = np.full(cand.m, np.nan) if latency_ms is None else np.where(ok, latency_ms, np.nan)
    var = cand.first_variant if variant is None else variant
    var = np.where(ok, var, -1).astype(np.int64, copy=False)
    return Evaluation(
        node_idx=cand.node_idx,
        reason=reason.astype(np.int8, copy=False),
        raw_score=raw,
        devices=dev,
        latency_ms=lat,
        variant=var,
        policy=policy,
        extras=dict(extras or {}),
    )
