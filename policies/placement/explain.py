"""Why a node was rejected, with the numbers: one source of truth for the rejection texts.

A :class:`~qosched.policies.placement.base.Reason` code says *which* rule failed; people also
need *by how much* ("device 2: utilisation 0.86 > limit 0.80"). :func:`explain` answers that for
one (pod, node, code), reading its numbers from the code the policies decide with, never from a
second copy of a rule:

- node-level codes from :func:`~qosched.policies.placement.constraints.gather` on that one node
  (free CPU, free memory, free milli-GPU per device, the device-count and accelerator checks);
- the latency-rule codes (``DEVICE_MEMORY``, ``UTILIZATION``, ``FRONTEND``, ``SLO_NEW``,
  ``SLO_EXISTING``) from :func:`~qosched.policies.placement.interference.pair_detail`: the
  general route of the judge (same inputs, ``predict`` and ``feasible``) on the node's eligible
  devices with the variant the policy judged first, keeping every number it computes.

Of the node's devices that fail with the code, the text names the one closest to fitting (the
smallest overshoot). Where the state no longer shows the code (the node changed since the
decision), the detail is empty and the text is the code's plain message.

Cost: one ``gather`` and at most one ``pair_detail`` of the node's devices (a few hundred µs),
so callers explain a few nodes per call: the extender's ``filter`` one node per reason code
(:func:`closest`), the what-if one per pending pod and code.

Numbers have fixed digits and units: utilisation ``0.86``, latency ``12.3 ms``, memory
``13500 MiB``, CPU ``4000m``, GPU ``500 milli-GPU``.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from qosched.policies.placement.base import PlacementPolicy, Reason
from qosched.policies.placement.baselines.knapsack import free_after_mib
from qosched.policies.placement.common import AwarePolicy
from qosched.policies.placement.constraints import Candidates, gather
from qosched.policies.placement.interference import InterferenceModel, PairDetail, new_service, pair_detail
from qosched.policies.placement.row_memo import shape_key
from qosched.policies.state import ClusterState
from qosched.policies.types import GPU_MILLI_PER_DEVICE, PodDemand

__all__ = [
    "MARGIN_CODES",
    "CodeSummary",
    "ExplainMemo",
    "Explanation",
    "closest",
    "explain",
    "filter_message",
    "summarise",
    "summary_text",
    "why_no_node",
]


@dataclass(frozen=True, slots=True)
class Explanation:
    """One node's rejection: its code, the node, and the numbers (``detail``, "" when none)."""

    code: Reason
    node: str
    detail: str = ""

    @property
    def text(self) -> str:
        """``"<the code's message>: <detail>"`` (the message alone without numbers)."""
        return f"{self.code.message}: {self.detail}" if self.detail else self.code.message


@dataclass(frozen=True, slots=True)
class _Node:
    """What the per-code explainers read: the pod on one node, gathered once."""

    state: ClusterState
    pod: PodDemand
    row: int
    cand: Candidates
    model: InterferenceModel
    #: The policy judges inference pods with the latency rule (``AwarePolicy``).
    latency_rule: bool = False


def explain(
    policy: PlacementPolicy,
    state: ClusterState,
    pod: PodDemand,
    row: int,
    code: Reason | None = None,
    *,
    name: str = "",
) -> Explanation:
    """Why ``pod`` does not fit on state row ``row`` (see the module docstring).

    ``code``: the reason the policy gave (a filter's evaluation); None evaluates the policy on
    that one node first. A row outside the state (-1: a name the cache does not know, ``name``)
    is ``UNKNOWN_NODE``.
    """
    if not 0 <= row < state.n_nodes:
        return Explanation(Reason.UNKNOWN_NODE, name)
    name = state.node_names[row]
    if code is None:
        code = Reason(int(policy.evaluate(state, pod, np.array([row], dtype=np.int64)).reason[0]))
    explainer = _EXPLAINERS.get(code)
    if explainer is None:
        return Explanation(code, name)
    placing = _placing(policy)
    model = getattr(placing, "model", None)
    node = _Node(
        state,
        pod,
        row,
        gather(state, pod, np.array([row], dtype=np.int64)),
        model if isinstance(model, InterferenceModel) else InterferenceModel(),
        isinstance(placing, AwarePolicy) and pod.is_inference,
    )
    return Explanation(code, name, explainer(node, code))


def _placing(policy: object) -> object:
    """The policy that judges placements: a preemptive policy (``priority``, ``qos-driven``)
    places through its ``placement``, and ``WorstFitPolicy`` through its ``_impl``."""
    for attr in ("placement", "_impl"):
        inner = getattr(policy, attr, None)
        if inner is not None:
            return _placing(inner)
    return policy


class ExplainMemo:
    """:func:`explain` answers kept while the node they are about is unchanged (bounded, LRU).

    An explanation is a function of the pod's shape (its identity and creation time left out),
    the node's row and code, and that row's ``ClusterState.node_version`` in that state object
    (a relist or a profile reload installs a new one) — the premise the extender's evaluation
    reuse rests on. kube-scheduler retries an unschedulable pod, and replicas share a shape, so
    most of the extender's filter answers with rejections find theirs here. Owned by one caller
    (the extender's ``Runtime``), used under its cache lock: not thread-safe by itself.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._memo: OrderedDict[tuple[object, ...], tuple[weakref.ref[ClusterState], Explanation]] = (
            OrderedDict()
        )

    def explain(
        self,
        policy: PlacementPolicy,
        state: ClusterState,
        pod: PodDemand,
        row: int,
        code: Reason,
        *,
        name: str = "",
    ) -> Explanation:
        if not 0 <= row < state.n_nodes:
            return explain(policy, state, pod, row, code, name=name)
        shape = shape_key(pod)
        key = (shape, row, int(code), int(state.node_version[row]))
        hit = self._memo.get(key)
        if hit is not None and hit[0]() is state:
            self._memo.move_to_end(key)
            return hit[1]
        found = explain(policy, state, pod, row, code, name=name)
        self._memo[key] = (weakref.ref(state), found)
        if len(self._memo) > self.size:
            self._memo.popitem(last=False)
        return found


def filter_message(policy_name: str, explanation: Explanation, *, is_closest: bool) -> str:
    """The one ``FailedNodes`` text of a reason code in a filter answer.

    ``qosched (<policy>): <message> (closest: <node>: <detail>)`` — ``e.g.`` instead of
    ``closest:`` when the node was not chosen by margin; ``(e.g. <node>)`` without numbers.
    Every node failing with that code gets this same string, so kube-scheduler's event, which
    counts nodes per distinct message, stays one line per code.
    """
    return f"qosched ({policy_name}): {_with_example(explanation.code.message, explanation, is_closest)}"


def _with_example(message: str, explanation: Explanation, is_closest: bool) -> str:
    if not explanation.detail:
        return f"{message} (e.g. {explanation.node})"
    lead = "closest:" if is_closest else "e.g."
    return f"{message} ({lead} {explanation.node}: {explanation.detail})"


@dataclass(frozen=True, slots=True)
class CodeSummary:
    """The nodes one reason code rejects, and the one explained (closest by margin, or the first)."""

    code: Reason
    nodes: int
    explanation: Explanation
    by_margin: bool

    @property
    def why(self) -> str:
        """``"<message> (closest: <node>: <detail>)"``, the text :func:`filter_message` sends."""
        return _with_example(self.code.message, self.explanation, self.by_margin)

    @property
    def text(self) -> str:
        """``"<n> node(s): <why>"``."""
        return f"{self.nodes} node(s): {self.why}"


def why_no_node(
    policy: PlacementPolicy, state: ClusterState, pod: PodDemand, candidates: np.ndarray | None = None
) -> tuple[int, list[CodeSummary]]:
    """Judge ``pod`` on ``candidates`` (default: every node) and explain each reason code once.

    Returns (nodes where it fits, one :class:`CodeSummary` per code, most nodes first). One
    vectorised evaluation, then one :func:`explain` per code.
    """
    rows = np.arange(state.n_nodes, dtype=np.int64) if candidates is None else candidates
    evaluation = policy.evaluate(state, pod, rows)
    codes = evaluation.reason.astype(np.int64)
    return int((codes == int(Reason.OK)).sum()), summarise(policy, state, pod, evaluation.node_idx, codes)


def summarise(
    policy: PlacementPolicy,
    state: ClusterState,
    pod: PodDemand,
    rows: np.ndarray,
    codes: np.ndarray,
    names: Sequence[str] | None = None,
) -> list[CodeSummary]:
    """One :class:`CodeSummary` per reason code of ``codes`` (aligned with state ``rows``, -1 for a
    node the state does not know, then named by ``names``), most nodes first."""
    bad, counts = np.unique(codes[codes != int(Reason.OK)], return_counts=True)
    out: list[CodeSummary] = []
    for code_value, n in sorted(zip(bad.tolist(), counts.tolist(), strict=True), key=lambda cn: -cn[1]):
        code = Reason(code_value)
        at = np.flatnonzero(codes == code_value)
        pick, by_margin = closest(state, pod, code, rows[at])
        i = int(at[pick])
        name = names[i] if names is not None else ""
        out.append(
            CodeSummary(code, n, explain(policy, state, pod, int(rows[i]), code, name=name), by_margin)
        )
    return out


def summary_text(fits: int, summaries: list[CodeSummary]) -> str:
    """:func:`why_no_node`'s answer in one line: ``"3 node(s): <why>; 1 node(s): <why>"``."""
    parts = [s.text for s in summaries]
    if fits:
        parts.insert(0, f"fits on {fits} node(s)")
    return "; ".join(parts) if parts else "no node"


#: The codes :func:`closest` ranks by margin (the others take the first node).
MARGIN_CODES = frozenset({Reason.INSUFFICIENT_CPU, Reason.INSUFFICIENT_MEMORY, Reason.INSUFFICIENT_GPU})


def closest(state: ClusterState, pod: PodDemand, code: Reason, rows: np.ndarray) -> tuple[int, bool]:
    """Which of ``rows`` (state rows failing with ``code``) to explain: (index into rows, by margin).

    Vectorised over the rows (a few numpy gathers, no per-node Python): the most free CPU for
    ``INSUFFICIENT_CPU``, the most free memory for ``INSUFFICIENT_MEMORY``, the most free
    milli-GPU on one device for ``INSUFFICIENT_GPU`` (the smallest shortfall of each). Other codes
    have no margin short of the latency models: the first row, ``by margin`` False.
    """
    if rows.size == 0 or (rows < 0).any():
        return 0, False
    margin: np.ndarray
    if code == Reason.INSUFFICIENT_CPU:
        margin = state.cpu_cap_milli.take(rows) - state.cpu_used_milli.take(rows)
    elif code == Reason.INSUFFICIENT_MEMORY:
        margin = state.mem_cap_mib.take(rows) - state.mem_used_mib.take(rows)
    elif code == Reason.INSUFFICIENT_GPU and pod.gpu_milli > 0:
        free = np.where(state.dev_exists[rows], GPU_MILLI_PER_DEVICE - state.gpu_used_milli[rows], -1)
        margin = free.max(axis=1)
    else:
        return 0, False
    return int(np.argmax(margin)), True


# ----------------------------------------------------------------------------- node-level codes


def _cpu(node: _Node, code: Reason) -> str:
    return f"needs {node.pod.cpu_milli}m CPU, has {int(node.cand.cpu_free_milli[0])}m free"


def _memory(node: _Node, code: Reason) -> str:
    return f"needs {node.pod.memory_mib:.0f} MiB, has {float(node.cand.mem_free_mib[0]):.0f} MiB free"


def _too_few(node: _Node, code: Reason) -> str:
    return f"has {int(node.state.device_count[node.row])} device(s), the pod needs {node.cand.need}"


def _gpu(node: _Node, code: Reason) -> str:
    cand = node.cand
    exists = node.state.dev_exists[node.row]
    free = np.where(exists, cand.free_milli[0], -1)
    with_room = int(cand.device_ok[0].sum())
    if with_room >= cand.need:  # room enough: the policy's own device search found too few
        why = "pass the latency rule" if node.latency_rule else "suit the policy"
        return f"{with_room} device(s) have room, fewer than the {cand.need} needed {why}"
    if cand.milli <= 0 or not exists.any():
        return f"has {with_room} usable device(s), the pod needs {cand.need}"
    best = int(np.argmax(free))
    return (
        f"needs {cand.need} device(s) with {cand.milli} milli-GPU free, {with_room} have it; "
        f"most free: device {best} with {int(free[best])} milli-GPU"
    )


def _exclusive(node: _Node, code: Reason) -> str:
    busy = np.flatnonzero(node.state.dev_exists[node.row] & ~node.cand.device_ok[0])
    listed = ", ".join(str(d) for d in busy.tolist())
    return f"exclusive node, device(s) {listed} in use; the pod needs {node.cand.need} idle"


def _accelerator_label(node: _Node, code: Reason) -> str:
    return f"the pod's model {node.pod.variants[0]} needs an accelerator" if node.pod.variants else ""


def _not_allowed(node: _Node, code: Reason) -> str:
    view = node.state.node_views[node.row]
    return (
        f"node has {view.accelerator or 'no accelerator'} (GPU model {view.gpu_model or 'unknown'}), "
        f"the pod allows {', '.join(node.pod.gpu_spec)}"
    )


def _no_profile(node: _Node, code: Reason) -> str:
    accelerator = node.state.node_views[node.row].accelerator
    return f"no profile of {', '.join(node.pod.variants)} for {accelerator}"


def _accuracy(node: _Node, code: Reason) -> str:
    accelerator = node.state.node_views[node.row].accelerator
    known = [
        p.accuracy
        for v in node.pod.variants
        if (p := node.state.service_params(accelerator, v)) is not None and p.accuracy is not None
    ]
    if not known:
        return f"accuracy unknown on {accelerator}, minimum {node.pod.min_accuracy:.3f}"
    return f"best accuracy on {accelerator} {max(known):.3f} < minimum {node.pod.min_accuracy:.3f}"


# ----------------------------------------------------------------------------- the latency rule


def _judged(node: _Node) -> tuple[np.ndarray, PairDetail] | None:
    """The node's eligible devices and the judge's numbers on them (the policy's first variant)."""
    cand = node.cand
    variant = int(cand.first_variant[0])
    devices = np.flatnonzero(cand.device_ok[0])
    if variant < 0 or not node.pod.is_inference or devices.size == 0:
        return None
    new = new_service(cand, np.array([variant], dtype=np.int64))
    return devices, pair_detail(cand, new, np.zeros(devices.size, dtype=np.int64), devices, node.model)


def _device_memory(node: _Node, code: Reason) -> str:
    """Rule 1 (memory ≤ ``memory_frac`` × the device's): the knapsack baselines' own computation
    (:func:`~qosched.policies.placement.baselines.knapsack.free_after_mib`), which the judge's
    memory screen equals; the device with the least memory missing is named."""
    cand = node.cand
    if cand.variants is None or cand.need == 0 or not cand.device_ok[0].any():
        return ""
    frac = node.model.thresholds.memory_frac
    left = free_after_mib(cand, frac)[0][0]
    devices = np.flatnonzero(cand.device_ok[0])
    dev = int(devices[int(np.argmax(left[devices]))])
    if left[dev] >= 0:
        return ""
    item = float(cand.variants.take("memory_mib", cand.first_variant)[0])
    used = float(node.state.dev_mem_used_mib[node.row, dev])
    cap = float(node.state.dev_mem_cap_mib[node.row])
    return (
        f"device {dev}: {used:.0f} MiB in use + {item:.0f} MiB for the pod > "
        f"limit {frac * cap:.0f} MiB ({frac:.2f} × {cap:.0f} MiB)"
    )


def _latency_rule(node: _Node, code: Reason) -> str:
    judged = _judged(node)
    if judged is None:
        return ""
    devices, detail = judged
    failing = np.flatnonzero(detail.reason == int(code))
    if failing.size == 0:
        return ""
    return _LATENCY_TEXTS[code](node, devices, detail, failing)


def _utilization_text(node: _Node, devices: np.ndarray, d: PairDetail, failing: np.ndarray) -> str:
    mask = d.inputs.services.mask
    rho = np.maximum(d.utilization, np.where(mask, d.service_utilization, 0.0).max(axis=1))
    at = failing[int(np.argmin(rho[failing]))]
    return f"device {devices[at]}: utilisation {rho[at]:.2f} > limit {node.model.thresholds.utilization:.2f}"


def _frontend_text(node: _Node, devices: np.ndarray, d: PairDetail, failing: np.ndarray) -> str:
    fe = float(d.inputs.frontend_util[failing[0]])
    return f"front-end utilisation {fe:.2f} > limit {node.model.thresholds.frontend_utilization:.2f}"


def _slo_new_text(node: _Node, devices: np.ndarray, d: PairDetail, failing: np.ndarray) -> str:
    latency = d.latency_ms[:, -1]
    at = failing[int(np.argmin(latency[failing]))]
    return (
        f"device {devices[at]}: predicted {_statistic(node.pod.slo_percentile)} {_ms(latency[at])} > "
        f"SLO {_ms(node.pod.slo_ms)}"
    )


def _slo_existing_text(node: _Node, devices: np.ndarray, d: PairDetail, failing: np.ndarray) -> str:
    k = d.inputs.k
    slo = d.inputs.slo_ms[:, :k]
    with np.errstate(invalid="ignore", divide="ignore"):
        over = np.where(d.inputs.services.mask[:, :k] & np.isfinite(slo), d.latency_ms[:, :k] / slo, -np.inf)
    worst = over.max(axis=1)
    at = failing[int(np.argmin(worst[failing]))]  # the device closest to fitting ...
    j = int(np.argmax(over[at]))  # ... and the service there that misses the most
    dev = int(devices[at])
    uid = node.state.svc_uid[node.row][dev][j]
    alloc = node.state.allocation(uid) if uid else None
    who = f"{alloc.pod.namespace}/{alloc.pod.name}" if alloc is not None else f"service slot {j}"
    pct = d.inputs.slo_percentile
    statistic = _statistic(None if pct is None or np.isnan(pct[at, j]) else float(pct[at, j]))
    return f"device {dev}: {who} would see {statistic} {_ms(d.latency_ms[at, j])} > its SLO {_ms(slo[at, j])}"


def _statistic(percentile: float | None) -> str:
    return "latency" if percentile is None else f"p{percentile:g} latency"


def _ms(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "unbounded (queue saturated)"
    return f"{value:.1f} ms"


_LATENCY_TEXTS: dict[Reason, Callable[[_Node, np.ndarray, PairDetail, np.ndarray], str]] = {
    Reason.UTILIZATION: _utilization_text,
    Reason.FRONTEND: _frontend_text,
    Reason.SLO_NEW: _slo_new_text,
    Reason.SLO_EXISTING: _slo_existing_text,
}

#: Reason → the explainer of its numbers (codes absent here have none to give).
_EXPLAINERS: dict[Reason, Callable[[_Node, Reason], str]] = {
    Reason.NO_ACCELERATOR: _accelerator_label,
    Reason.ACCELERATOR_NOT_ALLOWED: _not_allowed,
    Reason.NO_PROFILE: _no_profile,
    Reason.ACCURACY: _accuracy,
    Reason.TOO_FEW_DEVICES: _too_few,
    Reason.INSUFFICIENT_CPU: _cpu,
    Reason.INSUFFICIENT_MEMORY: _memory,
    Reason.INSUFFICIENT_GPU: _gpu,
    Reason.EXCLUSIVE_BUSY: _exclusive,
    Reason.DEVICE_MEMORY: _device_memory,
    Reason.UTILIZATION: _latency_rule,
    Reason.FRONTEND: _latency_rule,
    Reason.SLO_NEW: _latency_rule,
    Reason.SLO_EXISTING: _latency_rule,
}
