r"""Judge a pod on candidate devices with the latency models, vectorised (interference).

For every (node, device) pair asked about, the pod is appended as one extra service slot to the
device's co-located services (the ``svc_*`` arrays of
:class:`~qosched.policies.state.ClusterState`, shape ``(n, D, K)``), giving padded arrays of
shape ``(E, K + 1)``, and the **latency package** judges them:

- :func:`qosched.policies.latency.sharing.predict` — latency of every service on the device and
  the device's utilisation, with the model of the device's sharing mode
  (:func:`~qosched.policies.latency.sharing.resolve_sharing`: edge TPU swap M/G/1, GPU time
  slicing, MPS, MIG, exclusive, CPU processor sharing; models.md §A);
- :func:`qosched.policies.latency.colocation_rule.feasible` — the rule of models.md §A: device
  memory ≤ 0.8, utilisation ≤ 0.8, front end ≤ 0.8, and the predicted latency of **every**
  co-located service, the new one included, within its SLO.

Nothing here re-implements a latency formula; this module only builds the arrays, calls those
two functions, and maps their reason codes onto :class:`~qosched.policies.placement.base.Reason`.

Three modules, three jobs: this one judges (:func:`judge`, one verdict per pair asked about);
:mod:`.verdict_cache` remembers verdicts while a node is unchanged; :mod:`.feasible_devices`
drives the search (which pairs to ask about, and the device(s) each node takes).

Cost control inside :func:`judge`:

- A device whose memory alone already breaks the threshold is rejected before prediction with
  ``DEVICE_MEMORY``: the same comparison ``feasible`` makes first, so the reason is identical.
- Only the prefix of service slots some judged device uses is passed on (slots fill from 0), and
  fields no model of the judged devices reads (swap, share, contention, percentile) are passed as
  broadcast constants instead of being gathered.
- Time-sliced devices take the shared-wait route (see :func:`judge`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from qosched.policies.latency.colocation_rule import (
    ReasonCode,
    Thresholds,
    feasible,
    feasible_shared_wait,
    slack_frac,
)
from qosched.policies.latency.cpu_node import cpu_cores
from qosched.policies.latency.sharing import (
    EDGETPU_MODE,
    DeviceServices,
    ModelParams,
    Prediction,
    predict,
    resolve_sharing,
    time_slicing_wait_ms,
    valid_services,
)
from qosched.policies.latency.tail import percentile_latency_ms
from qosched.policies.placement.base import Reason
from qosched.policies.placement.constraints import Candidates, VariantTable
from qosched.policies.state import ClusterState
from qosched.policies.types import GPU_MILLI_PER_DEVICE, SHARING_MODES, PodDemand

__all__ = [
    "DeviceVerdicts",
    "InterferenceModel",
    "NewService",
    "PairDetail",
    "PairInputs",
    "judge",
    "new_service",
    "pair_detail",
]

#: latency.colocation_rule.ReasonCode → placement Reason.
_REASON_OF: dict[int, int] = {
    ReasonCode.OK: Reason.OK,
    ReasonCode.MEMORY: Reason.DEVICE_MEMORY,
    ReasonCode.UTILIZATION: Reason.UTILIZATION,
    ReasonCode.FRONTEND: Reason.FRONTEND,
    ReasonCode.SLO_VIOLATION_NEW: Reason.SLO_NEW,
    ReasonCode.SLO_VIOLATION_EXISTING: Reason.SLO_EXISTING,
}
_REASON_LUT = np.zeros(max(_REASON_OF) + 1, dtype=np.int8)
for _k, _v in _REASON_OF.items():
    _REASON_LUT[_k] = _v

_MPS_MIG = (SHARING_MODES.index("mps"), SHARING_MODES.index("mig"))


@dataclass(frozen=True, slots=True)
class InterferenceModel:
    """What the interference-aware policies judge placements with.

    Attributes
    ----------
    thresholds : Thresholds
        Limits of the feasibility rule (default: the paper's 0.8 for memory, utilisation and
        front end).
    params : ModelParams
        Contention terms of the latency models for device types not in
        ``params_by_accelerator`` (default: the paper's models, see ``ModelParams``).
    params_by_accelerator : mapping of str to ModelParams
        Calibrated terms per accelerator key (e.g. from ``latency.calibration.fit``).
    """

    thresholds: Thresholds = field(default_factory=Thresholds)
    params: ModelParams = field(default_factory=ModelParams)
    params_by_accelerator: Mapping[str, ModelParams] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A private copy, read-only by convention (a mappingproxy would not pickle or deep-copy).
        object.__setattr__(self, "params_by_accelerator", dict(self.params_by_accelerator))

    def params_for(self, accelerator: str | None) -> ModelParams:
        if accelerator is None:
            return self.params
        return self.params_by_accelerator.get(accelerator, self.params)


@dataclass(frozen=True, slots=True)
class NewService:
    """The pod being placed, as one service, per candidate (arrays of shape (m,)).

    ``rate_rps`` is the rate on *each* device (a pod on G devices spreads its rate over them, as
    ``ClusterState.add`` records it); the node's front end sees ``total_rate_rps``.
    """

    service_ms: np.ndarray
    second_moment_ms2: np.ndarray
    swap_ms: np.ndarray
    memory_mib: np.ndarray
    frontend_ms: np.ndarray
    share_frac: np.ndarray
    rate_rps: float
    total_rate_rps: float
    slo_ms: float
    slo_percentile: float | None
    signature: tuple[object, ...] | None = None
    #: (m,) rate, S and E[S²] pass ``latency.sharing.valid_services`` (None: judge checks).
    valid: np.ndarray | None = None


def new_service(cand: Candidates, variant: np.ndarray) -> NewService:
    """The pod's service parameters on each candidate for the given variant (m,) (-1: none)."""
    pod = cand.pod
    table = cand.variants
    if table is None or pod.slo_ms is None:
        raise ValueError(f"pod {pod.name}: only inference pods (model and SLO) are judged for interference")
    if pod.gpu_milli > 0:
        code = cand.state.sharing_code.take(cand.row)
        spatial = (code == _MPS_MIG[0]) | (code == _MPS_MIG[1])
        share = np.where(spatial, pod.milli_per_device / GPU_MILLI_PER_DEVICE, 1.0)
    else:
        share = np.ones(cand.m)
    service, second, swap, memory, frontend = table.take_all(variant)
    if variant.size and variant.min() < 0:
        service = np.where(variant >= 0, service, 1.0)
        second = np.where(variant >= 0, second, 1.0)
    return NewService(
        service_ms=service,
        second_moment_ms2=second,
        swap_ms=swap,
        memory_mib=memory,
        frontend_ms=frontend,
        share_frac=share,
        rate_rps=pod.rate_rps / max(1, cand.need),
        total_rate_rps=pod.rate_rps,
        slo_ms=float(pod.slo_ms),
        slo_percentile=pod.slo_percentile,
        signature=_signature(pod, variant, cand.need),
        valid=_valid_columns(table, pod.rate_rps / max(1, cand.need), variant),
    )


def _valid_columns(table: VariantTable, rate_rps: float, variant: np.ndarray) -> np.ndarray:
    """(m,) whether the pod's column (rate, S, E[S²]) passes ``valid_services`` on each candidate.

    Read per candidate from the table's per-(variant, accelerator) check of the profiles
    (``ClusterState.params_valid``, memoised); the rate is valid by ``PodDemand``'s own check,
    and S = E[S²] = 1 where no variant is judged (as :func:`new_service` sets them).
    """
    if table.valid_table is None:  # a table built by hand: check the parameters here
        small = valid_services(rate_rps, table.params_table[0], table.params_table[1])
    else:
        small = table.valid_table
    return table.per_candidate(small, variant, True)


def _signature(pod: PodDemand, variant: np.ndarray, need: int) -> tuple[object, ...] | None:
    """Everything about the pod a device verdict depends on, when one variant is judged everywhere.

    (The node's side — its services, memory, front end, accelerator, sharing mode — is covered by
    ``ClusterState.node_version``.) None when candidates are judged with different variants.
    """
    if variant.size == 0 or variant.min() != variant.max() or variant[0] < 0:
        return None
    return (
        pod.variants[int(variant[0])],
        pod.rate_rps,
        pod.slo_ms,
        pod.slo_percentile,
        pod.milli_per_device if pod.gpu_milli > 0 else 0,
        need,
    )


@dataclass(frozen=True, slots=True)
class DeviceVerdicts:
    """The verdict on E (candidate position, device) pairs, arrays of shape (E,).

    reason:      Reason code (``OK`` where the pod fits there with every SLO met).
    latency_ms:  predicted mean latency of the pod on that device [ms] (inf when unbounded).
    utilization: the device's utilisation with the pod [0..].
    utilization_before: the same without the pod (NaN unless asked for).
    slack_frac:  min over the device's services with an SLO, the pod included, of
                 (SLO − latency) / SLO (≤ 0 where some SLO is missed; 1 when none has an SLO).
    """

    pos: np.ndarray
    dev: np.ndarray
    reason: np.ndarray
    latency_ms: np.ndarray
    utilization: np.ndarray
    utilization_before: np.ndarray
    slack_frac: np.ndarray


def _mode_table(state: ClusterState) -> tuple[tuple[str, ...], np.ndarray]:
    """Sharing model per (accelerator code, sharing code): (mode names, int table (A+1, S)).

    Memoised on the state (``ClusterState.derived``): it depends only on the state's accelerator
    list, which only grows.
    """
    key = ("sharing-modes", len(state.accelerators))
    found = state.derived.get(key)
    if found is None:
        found = state.derived[key] = _build_mode_table(tuple(state.accelerators))
    return cast(tuple[tuple[str, ...], np.ndarray], found)


def _build_mode_table(accelerators: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    modes: list[str] = []
    table = np.zeros((len(accelerators) + 1, len(SHARING_MODES)), dtype=np.int64)
    for a, accel in enumerate([*accelerators, None]):
        for s, label in enumerate(SHARING_MODES):
            mode = resolve_sharing(accel, label)
            if mode not in modes:
                modes.append(mode)
            table[a, s] = modes.index(mode)
    table.setflags(write=False)
    return tuple(modes), table


def judge(
    cand: Candidates,
    new: NewService,
    pos: np.ndarray,
    dev: np.ndarray,
    model: InterferenceModel,
    *,
    with_before: bool = False,
    screen_memory: bool = True,
    shared_wait: bool = True,
) -> DeviceVerdicts:
    """Judge the pod on the (candidate position, device) pairs ``pos``, ``dev`` (arrays (E,)).

    ``screen_memory=False`` predicts every pair even where memory already fails (the
    interference-blind policies annotate the latency of the device they chose regardless).

    Two routes to the same verdict. Time-sliced devices (``ModelParams.time_slicing ==
    "paper"``, no co-location overhead, mean SLOs, parameters the models accept) take the
    *shared-wait* route: the device's load sums kept by ``ClusterState`` plus the pod
    (``latency.sharing.LoadSums.plus``), the wait every service there sees
    (``latency.sharing.time_slicing_wait_ms``) and the rule checked per service from S and the SLO
    alone (``latency.colocation_rule.feasible_shared_wait``) — the same floats as the general route,
    at a fraction of the cost. Every other device takes the general route: the appended
    ``(E, K + 1)`` arrays through ``latency.sharing.predict`` and ``latency.colocation_rule.feasible``.
    ``shared_wait=False`` sends every device the general way (the reference the other route is
    tested against).
    """
    state = cand.state
    e = pos.shape[0]
    row = cand.row.take(pos)
    flat = row * state.n_devices + dev
    reason = np.zeros(e, dtype=np.int8)
    latency = np.full(e, np.nan)
    util = np.full(e, np.nan)
    before = np.full(e, np.nan)
    slack = np.full(e, np.nan)
    out = DeviceVerdicts(pos, dev, reason, latency, util, before, slack)
    if e == 0:
        return out

    th = model.thresholds
    mem_after, mem_cap = _memory_mib(state, new, pos, row, flat)
    # Rule 1 of latency.colocation_rule, applied before the (costly) prediction; feasible() repeats it.
    mem_ok = (mem_after <= th.memory_frac * mem_cap) & (mem_cap > 0)
    if screen_memory and not mem_ok.all():
        go: np.ndarray | slice = np.flatnonzero(mem_ok)
    else:
        go = slice(None)  # every pair (a view, not a copy, wherever it indexes)
    np.copyto(reason, np.int8(Reason.DEVICE_MEMORY), where=~mem_ok)
    n_go = e if isinstance(go, slice) else go.size
    if n_go == 0:
        return out
    groups = _groups(state, row[go], model)
    fast, params = _shared_wait_route(state, new, pos[go], flat[go], groups) if shared_wait else (None, None)
    if fast is None:
        general: np.ndarray | slice = go
    else:
        everything = fast.size == n_go
        at = go if everything else _index(go, e)[fast]
        assert params is not None
        _judge_shared_wait(
            state, new, out, at, row[at], flat[at], mem_after, mem_cap, th, params, with_before
        )
        if everything:
            return out
        rest = np.ones(n_go, dtype=bool)
        rest[fast] = False
        general = _index(go, e)[rest]
        groups = _groups(state, row[general], model)
    _judge_general(
        state, new, out, general, row[general], flat[general], mem_after, mem_cap, model, groups, with_before
    )
    return out


def _memory_mib(
    state: ClusterState, new: NewService, pos: np.ndarray, row: np.ndarray, flat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(device memory in use with the pod, the device's memory) [MiB] of each judged pair."""
    return state.dev_mem_used_mib.take(flat) + new.memory_mib.take(pos), state.dev_mem_cap_mib.take(row)


@dataclass(frozen=True, slots=True)
class PairDetail:
    """Everything the general route computes for E (candidate position, device) pairs.

    For explanations (:mod:`qosched.policies.placement.explain`), not decisions: the numbers
    behind each verdict. ``latency_ms`` (E, k + 1) is the latency each service's SLO refers to
    (mean, or the SLO's percentile), the pod in the last column; ``utilization`` (E,) the
    device's ρ, ``service_utilization`` (E, k + 1) each service's own; memory with the pod and
    the device's memory [MiB]; ``frontend_util`` (E,); ``reason`` the placement ``Reason`` code
    (what :func:`judge` answers for the same pairs on its general route).
    """

    inputs: PairInputs
    latency_ms: np.ndarray
    utilization: np.ndarray
    service_utilization: np.ndarray
    memory_used_mib: np.ndarray
    memory_cap_mib: np.ndarray
    reason: np.ndarray


def pair_detail(
    cand: Candidates, new: NewService, pos: np.ndarray, dev: np.ndarray, model: InterferenceModel
) -> PairDetail:
    """The general route of :func:`judge` for the pairs ``pos``, ``dev``, with every number kept.

    Same inputs (:func:`_pair_inputs`), same models (``predict``), same rule (``feasible``); no
    memory screening, so every pair is predicted. Slow (no caching, no shared-wait route): meant
    for a handful of pairs per call.
    """
    state = cand.state
    row = cand.row.take(pos)
    flat = row * state.n_devices + dev
    mem_after, mem_cap = _memory_mib(state, new, pos, row, flat)
    groups = _groups(state, row, model)
    inputs = _pair_inputs(state, new, pos, row, flat, groups)
    pred = _predict_groups(inputs.services, groups)
    new_mask = np.zeros(inputs.k + 1, dtype=bool)
    new_mask[inputs.k] = True
    _, code = feasible(
        pred,
        inputs.slo_ms,
        mem_after,
        mem_cap,
        inputs.frontend_util,
        model.thresholds,
        new_mask=new_mask,
        slo_percentile=inputs.slo_percentile,
    )
    latency = pred.latency_ms
    if inputs.slo_percentile is not None:
        latency = percentile_latency_ms(pred, inputs.slo_percentile)
    return PairDetail(
        inputs=inputs,
        latency_ms=latency,
        utilization=pred.utilization,
        service_utilization=pred.service_utilization,
        memory_used_mib=mem_after,
        memory_cap_mib=mem_cap,
        reason=_REASON_LUT[code],
    )


def _index(sel: np.ndarray | slice, size: int) -> np.ndarray:
    """``sel`` (an index array, or ``slice(None)`` for all of ``size``) as an index array."""
    return np.arange(size) if isinstance(sel, slice) else sel


def _shared_wait_route(
    state: ClusterState, new: NewService, p: np.ndarray, f: np.ndarray, groups: list[_Group]
) -> tuple[np.ndarray | None, ModelParams | None]:
    """Positions (into the judged pairs) that take the shared-wait route, and their params.

    None when none does. The route needs: the time-slicing model with the paper's wait and no
    co-location overhead; no percentile SLO (the pod's, or one on the device); no service with
    its own overhead on the device; every parameter accepted by the models (the state's, checked
    when they were added, and the pod's here) — where one is not, the general route raises the
    error naming it.
    """
    if new.slo_percentile is not None or state.n_invalid_services:
        return None, None
    chosen: list[np.ndarray] = []
    params: ModelParams | None = None
    for mode, group_params, sel in groups:
        if (
            mode == "time-slicing"
            and group_params.time_slicing == "paper"
            and group_params.colocation_overhead_frac == 0.0
        ):
            chosen.append(np.arange(p.size) if sel is None else sel)
            params = group_params
    if params is None:
        return None, None
    fast = chosen[0] if len(chosen) == 1 else np.sort(np.concatenate(chosen))
    p_fast = p[fast]
    keep = (
        valid_services(new.rate_rps, new.service_ms[p_fast], new.second_moment_ms2[p_fast])
        if new.valid is None
        else new.valid[p_fast]
    )
    if state.n_pct_services or state.n_overhead_services:
        ff = f[fast]
        keep &= (state.dev_pct_services.take(ff) == 0) & (state.dev_overhead_services.take(ff) == 0)
    if not keep.all():
        fast = fast[keep]
    return (fast, params) if fast.size else (None, None)


def _judge_shared_wait(
    state: ClusterState,
    new: NewService,
    out: DeviceVerdicts,
    at: np.ndarray | slice,
    r: np.ndarray,
    f: np.ndarray,
    mem_after: np.ndarray,
    mem_cap: np.ndarray,
    th: Thresholds,
    params: ModelParams,
    with_before: bool,
) -> None:
    """The shared-wait route (see :func:`judge`) for the judged pairs ``at``; writes into ``out``."""
    p = out.pos[at]
    s_new = new.service_ms.take(p)
    sums = state.dev_load_sums(f)
    after = sums.plus(new.rate_rps, s_new, new.second_moment_ms2.take(p))
    wait = time_slicing_wait_ms(after, params)
    # Only the prefix of slots some judged device uses (slots fill from 0).
    k = int(state.dev_slot_end.take(f).max())
    k_all = state.n_slots
    service = state.svc_service_ms.reshape(-1, k_all).take(f, axis=0)[:, :k]
    slo = state.svc_slo_ms.reshape(-1, k_all).take(f, axis=0)[:, :k]
    frontend = state.frontend_util.take(r) + new.total_rate_rps * new.frontend_ms.take(p) / 1000.0
    v = feasible_shared_wait(
        after.load, wait, service, slo, s_new, new.slo_ms, mem_after[at], mem_cap[at], frontend, th
    )
    out.reason[at] = _REASON_LUT[v.reason]
    out.latency_ms[at] = v.latency_ms
    out.utilization[at] = after.load
    out.slack_frac[at] = v.slack_frac
    if with_before:
        out.utilization_before[at] = sums.load


def _judge_general(
    state: ClusterState,
    new: NewService,
    out: DeviceVerdicts,
    at: np.ndarray | slice,
    r_go: np.ndarray,
    f_go: np.ndarray,
    mem_after: np.ndarray,
    mem_cap: np.ndarray,
    model: InterferenceModel,
    groups: list[_Group],
    with_before: bool,
) -> None:
    """The general route (see :func:`judge`) for the judged pairs ``at``; writes into ``out``."""
    p_go = out.pos[at]
    inputs = _pair_inputs(state, new, p_go, r_go, f_go, groups)
    services, slo, k = inputs.services, inputs.slo_ms, inputs.k
    pred = _predict_groups(services, groups)
    new_mask = np.zeros(k + 1, dtype=bool)
    new_mask[k] = True
    _, code = feasible(
        pred,
        slo,
        mem_after[at],
        mem_cap[at],
        inputs.frontend_util,
        model.thresholds,
        new_mask=new_mask,
        slo_percentile=inputs.slo_percentile,
    )
    out.reason[at] = _REASON_LUT[code]
    out.latency_ms[at] = pred.latency_ms[:, k]
    out.utilization[at] = pred.utilization
    out.slack_frac[at] = slack_frac(pred.latency_ms, slo, services.mask)
    if with_before:
        mask_before = services.mask.copy()
        mask_before[:, k] = False
        services_before = DeviceServices._trusted(
            **{name: getattr(services, name) for name in DeviceServices.__slots__ if name != "mask"},
            mask=mask_before,
        )
        out.utilization_before[at] = _predict_groups(services_before, groups).utilization


@dataclass(frozen=True, slots=True)
class PairInputs:
    """What the general route hands the latency models for E judged pairs.

    services: ``(E, k + 1)`` the device's first ``k`` service slots, then the pod (slot ``k``);
    slo_ms / slo_percentile: the same layout (percentiles None when no SLO is a percentile);
    frontend_util: ``(E,)`` the node's front-end utilisation with the pod.
    """

    services: DeviceServices
    slo_ms: np.ndarray
    slo_percentile: np.ndarray | None
    frontend_util: np.ndarray
    k: int


def _pair_inputs(
    state: ClusterState,
    new: NewService,
    p_go: np.ndarray,
    r_go: np.ndarray,
    f_go: np.ndarray,
    groups: list[_Group],
) -> PairInputs:
    """The appended ``(E, k + 1)`` arrays of the general route (see :class:`PairInputs`)."""
    n_go = p_go.size
    modes = {mode for mode, _, _ in groups}
    # Slots fill from index 0 (``ClusterState._free_slot``) and the slot count only grows, so
    # the judged devices usually use a prefix of the K slots: keep just that prefix.
    k_all = state.n_slots
    k = int(state.dev_slot_end.take(f_go).max())

    def appended(arr: np.ndarray, column: np.ndarray | float) -> np.ndarray:
        """(E, k+1): the device's first k slots, then the pod. Laid out slot-major (Fortran
        order) so that reductions over the slots, which the latency models do, run over whole
        vectors."""
        out = np.empty((k + 1, n_go), dtype=arr.dtype)
        if k:
            out[:k] = arr.reshape(-1, k_all).take(f_go, axis=0)[:, :k].T
        out[k] = column
        return out.T

    def appended_if(needed: bool, arr: np.ndarray, column: np.ndarray | float, default: float) -> np.ndarray:
        # A field no model of these devices reads (or that is the default everywhere) is passed
        # as a broadcast constant instead of being gathered.
        return appended(arr, column) if needed else np.broadcast_to(np.float64(default), (n_go, k + 1))

    new_share = new.share_frac[p_go]
    s_new = new.service_ms[p_go]
    m2_new = new.second_moment_ms2[p_go]
    pass_swap = EDGETPU_MODE in modes
    pass_share = bool(modes & {"mps", "mig"}) or bool((new_share != 1.0).any())
    mask = appended(state.svc_mask, True)
    fields = {
        "rate_rps": appended(state.svc_rate_rps, new.rate_rps),
        "service_ms": appended(state.svc_service_ms, s_new),
        "second_moment_ms2": appended(state.svc_second_ms2, m2_new),
        "swap_ms": appended_if(pass_swap, state.svc_swap_ms, new.swap_ms[p_go], 0.0),
        "share_frac": appended_if(pass_share, state.svc_share_frac, new_share, 1.0),
        "mask": mask,
        "overhead_frac": appended_if(state.n_overhead_services > 0, state.svc_overhead_frac, 0.0, 0.0),
        "cores": cpu_cores(state.cpu_cap_milli.take(r_go)),
    }
    # The state's services were checked when they were added; check the pod's column here and
    # skip re-validating the whole arrays (where anything fails, the validating constructor
    # raises the error that names it).
    trusted = not state.n_invalid_services and bool(
        valid_services(
            new.rate_rps,
            s_new,
            m2_new,
            swap_ms=new.swap_ms[p_go] if pass_swap else 0.0,
            share_frac=new_share if pass_share else 1.0,
        ).all()
    )
    services = DeviceServices.trusted(**fields) if trusted else DeviceServices(**fields)
    slo = appended(state.svc_slo_ms, new.slo_ms)
    pct_column = np.nan if new.slo_percentile is None else new.slo_percentile
    has_pct = new.slo_percentile is not None or state.n_pct_services > 0
    pct = appended(state.svc_slo_percentile, pct_column) if has_pct else None
    frontend = state.frontend_util.take(r_go) + new.total_rate_rps * new.frontend_ms[p_go] / 1000.0
    return PairInputs(services, slo, pct, frontend, k)


#: One group of judged devices: (sharing model, model params, positions in the judged arrays;
#: None when the group is every position).
_Group = tuple[str, ModelParams, "np.ndarray | None"]


def _groups(state: ClusterState, rows: np.ndarray, model: InterferenceModel) -> list[_Group]:
    """Split judged devices by (sharing model, model params): one ``predict`` call per group."""
    modes, table = _mode_table(state)
    if rows.size == 0:
        return [(modes[0], model.params_for(None), None)]
    accel = state.accel_code.take(rows)
    sharing = state.sharing_code.take(rows)
    a_lo, s_lo = int(accel.min()), int(sharing.min())
    if a_lo == accel.max() and s_lo == sharing.max():
        # One accelerator type and one sharing label (the usual cluster): one group.
        return [(modes[int(table[a_lo, s_lo])], model.params_for(_accel_name(state, a_lo)), None)]
    mode_of = table[accel, sharing]
    if a_lo == accel.max() and mode_of.min() == mode_of.max():
        return [(modes[int(mode_of[0])], model.params_for(_accel_name(state, a_lo)), None)]
    groups: dict[tuple[str, int], tuple[ModelParams, list[int]]] = {}
    for code in np.unique(mode_of):
        for a in np.unique(accel[mode_of == code]):
            params = model.params_for(_accel_name(state, int(a)))
            groups.setdefault((modes[int(code)], id(params)), (params, []))[1].append(int(a))
    out: list[_Group] = []
    for (mode, _), (params, accels) in groups.items():
        sel = np.flatnonzero((mode_of == modes.index(mode)) & np.isin(accel, accels))
        out.append((mode, params, sel))
    return out


def _accel_name(state: ClusterState, code: int) -> str | None:
    return state.accelerators[code] if code >= 0 else None


def _predict_groups(services: DeviceServices, groups: list[_Group]) -> Prediction:
    """``predict`` for each group, assembled into one Prediction."""
    if len(groups) == 1 and groups[0][2] is None:
        mode, params, _ = groups[0]
        return predict(mode, services, params)
    shape = services.shape
    out = Prediction(np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape[:-1]))
    for mode, params, sel in groups:
        assert sel is not None
        sub = predict(mode, _take(services, sel), params)
        for name in ("latency_ms", "wait_ms", "service_ms", "service_utilization", "utilization"):
            getattr(out, name)[sel] = getattr(sub, name)
    return out


def _take(sv: DeviceServices, sel: np.ndarray) -> DeviceServices:
    return DeviceServices(
        rate_rps=sv.rate_rps[sel],
        service_ms=sv.service_ms[sel],
        second_moment_ms2=sv.second_moment_ms2[sel],
        swap_ms=sv.swap_ms[sel],
        share_frac=sv.share_frac[sel],
        mask=sv.mask[sel],
        host_tail_ms=sv.host_tail_ms[sel],
        overhead_frac=sv.overhead_frac[sel],
        cores=sv.cores[sel],
    )
