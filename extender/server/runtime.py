"""The extender's decisions: cluster snapshot + pod → policy → answer for each scheduler verb.

``Runtime`` is what ``create_app`` stores in ``app.extensions["qosched"]``. Its methods take the
already-parsed wire arguments and return plain results; routes encode them. Nothing here
opens a socket except through the ``Binder`` it is given.

Decision caching: kube-scheduler calls ``filter`` then ``prioritize`` (then ``bind``) for the
same pod within one scheduling cycle. The evaluation computed by ``filter`` is kept per pod,
keyed by the state version, so ``prioritize`` and ``bind`` reuse it when nothing changed in
between, and recompute (on the few nodes involved) when something did.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, Protocol

import numpy as np

from qosched.extender.kube.binding import Binder
from qosched.extender.kube.cache import ClusterCache
from qosched.extender.kube.objects import (
    A_DEVICE,
    A_POLICY,
    A_PREDICTED_LATENCY_MS,
    A_VARIANT,
    ClassMapper,
    annotations_of,
    checked_demand,
    default_class_of,
    device_layer_annotations,
    invalid_request_message,
    is_managed,
)
from qosched.extender.server.bind_path import (
    DEFINITE_REFUSALS,
    BindGate,
    UnknownBind,
    UnknownBinds,
    call_binder,
)
from qosched.extender.server.preempt_inputs import decide_preemption
from qosched.policies.placement.base import (
    Evaluation,
    PlacementPolicy,
    Reason,
    scheduler_scores,
)
from qosched.policies.placement.explain import MARGIN_CODES, ExplainMemo, closest, explain, filter_message
from qosched.policies.placement.row_memo import RowMemo
from qosched.policies.preemption.live import LiveConfig
from qosched.policies.state import ClusterState, StateError
from qosched.policies.types import Allocation, DemandError, PodDemand

log = logging.getLogger(__name__)

#: The answer to a verb that needs the cluster while the cache has not synced (the first list
#: after a start, or a relist that cannot complete). As a filter ``Error`` kube-scheduler fails
#: the cycle and retries the pod with backoff (seconds), instead of parking it as unschedulable
#: on "every node unknown" (up to 5 minutes).
NOT_SYNCED = "qosched: cluster cache not synced yet (listing the API server); retry"
#: What a timed-out bind's answer adds: the devices stay reserved, so nothing is placed twice.
UNKNOWN_NOTE = (
    "the write may still commit, so its devices stay reserved until the watch shows the pod "
    "(or the reservation expires)"
)


#: ``filter`` picks the node it explains per reason code among at most this many of the nodes
#: failing with that code (their names looked up again under the lock: the state may have been
#: replaced since the evaluation), so the pick stays O(1) per code at any cluster size.
_CLOSEST_AMONG = 512


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    kept: list[str]
    failed: dict[str, str]
    unresolvable: dict[str, str]
    error: str = ""


@dataclass(frozen=True, slots=True)
class BindOutcome:
    error: str = ""
    node: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Decision:
    """One pod's evaluation and what it was computed from.

    Valid for a candidate row while the state is the same object (a relist or a profile reload
    installs a new one), the policy has learned nothing since (``observed``), and that row's
    ``ClusterState.node_version`` still equals the one evaluated (``node_versions``, aligned with
    ``evaluation.node_idx``). An evaluation is a function of the pod, the policy's learned mix and
    each candidate's own row — the premise ``policies/placement/verdict_cache.py`` already rests
    on — so a bind or a watch event on *another* node leaves it valid. Before, any change anywhere
    (``ClusterState.version``) forced ``prioritize`` to evaluate again: with kube-scheduler's
    asynchronous binds that was every second cycle.
    """

    demand: PodDemand
    version: int
    evaluation: Evaluation
    state: weakref.ref[ClusterState] | None = None
    node_versions: np.ndarray | None = None
    observed: int = -1
    _lut: np.ndarray | None = None

    def valid_for(
        self, state: ClusterState, demand: PodDemand, pos: np.ndarray, rows: np.ndarray, observed: int | None
    ) -> bool:
        """Whether positions ``pos`` (all >= 0) of the evaluation, for state rows ``rows``, still hold.

        ``observed`` None: whatever the policy learned since (``bind``, see
        :meth:`Runtime._placement_for`); else the learned mix must be the one evaluated with.
        """
        if self.demand != demand:
            return False
        if self.version == state.version:
            return True
        if (
            self.node_versions is None
            or self.state is None
            or self.state() is not state
            or (observed is not None and self.observed != observed)
        ):
            return False
        return bool((state.node_version[rows] == self.node_versions[pos]).all())

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Position in ``evaluation`` of each state row in ``rows`` (all >= 0); -1 where absent.

        The row -> position table is built on first use (one numpy scatter, ~10 µs at 5,000
        nodes) instead of a dict per filter call.
        """
        lut = self._lut
        if lut is None:
            idx = self.evaluation.node_idx
            lut = np.full(int(idx.max()) + 1 if idx.size else 0, -1, dtype=np.int64)
            lut[idx] = np.arange(idx.size, dtype=np.int64)
            self._lut = lut
        out = np.full(rows.shape, -1, dtype=np.int64)
        inside = rows < lut.size
        out[inside] = lut[rows[inside]]
        return out


def _eval_positions(rows: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Position in an evaluation over ``rows[rows >= 0]`` (in order) of each name where ``chosen``
    (a mask over the names, true only on known names): the known names counted before it."""
    return (np.cumsum(rows >= 0) - 1)[chosen]


def rows_of(state: ClusterState, names: Sequence[str], index: Mapping[str, int] | None = None) -> np.ndarray:
    """State row of each node name, -1 for names the cache does not know (C-level lookups).

    ``index`` replaces ``state.node_index`` (same content), e.g. a :func:`compact_index`.
    """
    get = (state.node_index if index is None else index).get
    return np.fromiter(map(get, names, repeat(-1)), dtype=np.int64, count=len(names))


def compact_index(state: ClusterState) -> dict[str, int]:
    """A copy of ``state.node_index`` whose keys are new strings allocated one after the other.

    Why: a lookup of a name from a request (a fresh string) compares it with the stored key, so it
    reads that key's memory. The keys of ``node_index`` were allocated one by one while the
    cluster loaded, scattered among ~700k other objects at 5,000 nodes, so every lookup misses
    the CPU caches; keys allocated together (one ``split`` of one decoded buffer) sit in a few
    hundred KiB. Measured at 5,000 nodes right after a policy evaluation: 1.38 ms -> 0.43 ms per
    5,000 lookups. Node names are DNS subdomains (no NUL), so NUL can separate them.
    """
    names = list(state.node_index)
    blob = "\0".join(names)
    fresh = blob.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass").split("\0")
    if len(fresh) != len(names):  # a name with a NUL (never a valid node name): plain copy
        return dict(state.node_index)
    return dict(zip(fresh, state.node_index.values(), strict=True))


def bind_annotations(
    state: ClusterState,
    row: int,
    demand: PodDemand,
    devices: tuple[int, ...],
    variant: str | None,
    latency_ms: float,
    policy: str,
) -> dict[str, str]:
    """The result annotations the Binding writes with the node (one place for all of them).

    ``qosched.io/policy``; with devices, ``qosched.io/device`` (comma-separated indexes) and the
    device layer's share and memory limit (:func:`device_layer_annotations`); the predicted
    latency when finite; the variant when the pod offered several. The caller holds the cache lock.
    """
    annotations = {A_POLICY: policy}
    if devices:
        annotations[A_DEVICE] = ",".join(str(d) for d in devices)
        view = state.node_views[row]
        params = state.service_params(view.accelerator, variant)
        memory_mib = params.memory_mib if params is not None else 0.0
        annotations.update(device_layer_annotations(view, demand.gpu_milli, memory_mib))
    if np.isfinite(latency_ms):
        annotations[A_PREDICTED_LATENCY_MS] = f"{latency_ms:.3f}"
    if len(demand.variants) > 1 and variant:
        annotations[A_VARIANT] = variant
    return annotations


class Observer(Protocol):
    """Hooks for metrics (``qosched.extender.server.metrics``) without the runtime importing them."""

    def decision(self, verb: str, outcome: str) -> None: ...
    def rejections(self, reasons: Mapping[str, int]) -> None: ...
    def bind_failure(self, reason: str) -> None: ...
    def policy_seconds(self, verb: str, seconds: float) -> None: ...


class _NullObserver:
    def decision(self, verb: str, outcome: str) -> None:
        pass

    def rejections(self, reasons: Mapping[str, int]) -> None:
        pass

    def bind_failure(self, reason: str) -> None:
        pass

    def policy_seconds(self, verb: str, seconds: float) -> None:
        pass


class Runtime:
    """The extender's state and verbs (see the module docstring)."""

    def __init__(
        self,
        cache: ClusterCache,
        policy: PlacementPolicy,
        binder: Binder,
        *,
        class_of: ClassMapper = default_class_of,
        observer: Observer | None = None,
        decision_cache_size: int = 256,
        clock: Callable[[], float] = time.perf_counter,
        bind_limit: int | None = None,
    ) -> None:
        self.cache = cache
        self.policy = policy
        self.binder = binder
        self.class_of = class_of
        self.observer: Observer = observer or _NullObserver()
        self._decisions: OrderedDict[str, _Decision] = OrderedDict()
        self._observed: OrderedDict[str, None] = OrderedDict()
        self._observations = 0  # pods fed to policy.observe so far (see _Decision.valid_for)
        self._decisions_lock = threading.Lock()
        self._decision_cache_size = decision_cache_size
        self._bind_locks: dict[str, threading.Lock] = {}
        self._bind_locks_guard = threading.Lock()
        self._gate = BindGate(bind_limit)  # binds in flight (see bind_path)
        self._unknown = UnknownBinds()  # pods whose last bind timed out: reservation kept
        self._clock = clock
        #: Placement hints (``qosched.extender.kube.hints.HintsSource``); None: no hints.
        self.hints: Any = None
        #: INFIDA's allocation (``qosched.extender.kube.allocation_source.AllocationSource``); None: none.
        self.allocation: Any = None
        # compact_index of the current state: (state, node count, index); rebuilt when the cache
        # swaps its state or a node is added. Read and written under the cache lock.
        self._name_index: tuple[ClusterState, int, dict[str, int]] | None = None
        # Counts of policy evaluations and of reused ones (tests, benchmarks; not thread-exact).
        self.evaluated = 0
        self.reused = 0
        #: ``FILTER_KEEPS_BEST_ONLY`` (settings): filter keeps only the best-scored nodes.
        self.keep_best_only = False
        #: filter's rejection explanations while their node is unchanged (used under the cache lock).
        self._explained = ExplainMemo()
        #: The policy's per-node verdicts per pod shape while the node is unchanged: the next
        #: replica judges only the nodes changed since (used under the cache lock).
        self._row_memo = RowMemo()
        #: Best-only filter's reservations not yet bound: uid -> (node, annotations) (:meth:`_nominate`).
        self._nominations: dict[str, tuple[str, dict[str, str]]] = {}
        self._nominations_lock = threading.Lock()
        self._nominations_prune_at = 1024

    # ------------------------------------------------------------------ helpers
    def _evaluate(
        self, demand: PodDemand, names: Sequence[str], verb: str, *, reuse: bool = False
    ) -> tuple[Evaluation, np.ndarray, int]:
        """Evaluate on the known candidates; returns (evaluation, row index per name or -1, version).

        With ``reuse``, the pod's remembered evaluation is used instead when the state is still
        at its version, the pod's demand is unchanged and it covers every known candidate (the
        common ``filter`` → ``prioritize`` sequence of one scheduling cycle).
        """
        decision = self._recall(demand.uid) if reuse else None
        with self.cache.reading() as state:
            rows = rows_of(state, names, self._index_locked(state))
            known = rows[rows >= 0]
            if decision is not None:
                pos = decision.positions(known)
                if (pos >= 0).all() and decision.valid_for(state, demand, pos, known, self._observations):
                    self.reused += 1
                    return decision.evaluation.take(pos), rows, state.version
            t0 = self._clock()
            self._observe_locked(demand)
            evaluation = self._row_memo.evaluate(self.policy, state, demand, known)
            version = state.version
            fresh = _Decision(
                demand,
                version,
                evaluation,
                weakref.ref(state),
                state.node_version[evaluation.node_idx],  # fancy indexing: a copy
                self._observations,
            )
        self.evaluated += 1
        self.observer.policy_seconds(verb, self._clock() - t0)
        self._remember(fresh)
        return evaluation, rows, version

    def _index_locked(self, state: ClusterState) -> dict[str, int]:
        """The :func:`compact_index` of ``state`` (the caller holds the cache lock)."""
        cached = self._name_index
        if cached is not None and cached[0] is state and cached[1] == len(state.node_index):
            return cached[2]
        index = compact_index(state)
        self._name_index = (state, len(state.node_index), index)
        return index

    def _observe_locked(self, demand: PodDemand) -> None:
        """Feed a pod seen for the first time to a policy that learns the workload (FGD's mix).

        Called under the cache lock, like ``evaluate``, so learning never races a decision.
        """
        observe = getattr(self.policy, "observe", None)
        if observe is None or demand.uid in self._observed:
            return
        self._observed[demand.uid] = None
        if len(self._observed) > 65536:
            self._observed.popitem(last=False)
        observe(demand)
        self._observations += 1  # the learned mix changed: evaluations made before are stale

    def _remember(self, decision: _Decision) -> None:
        uid = decision.demand.uid
        with self._decisions_lock:
            self._decisions[uid] = decision
            self._decisions.move_to_end(uid)
            while len(self._decisions) > self._decision_cache_size:
                self._decisions.popitem(last=False)

    def _recall(self, uid: str) -> _Decision | None:
        with self._decisions_lock:
            return self._decisions.get(uid)

    def demand_of(self, pod: Mapping[str, Any]) -> PodDemand:
        """The pod's qosched request; ``DemandError`` for bad annotations *or* a malformed spec.

        The wire layer validates only the metadata the protocol needs; a spec of the wrong shape
        (``containers: "x"``, ``requests: [1]``) makes the parser fail with a ``TypeError`` or
        ``AttributeError``, which is the pod's fault, not the extender's: it becomes a reason on
        every node ("invalid request"), not an internal error.
        """
        demand = checked_demand(pod, self.class_of)
        if self.hints is None:
            return demand
        from qosched.extender.kube.hints import prefer_hinted_variant

        return prefer_hinted_variant(demand, pod, self.hints.current())

    # ------------------------------------------------------------------ filter
    def filter(self, pod: Mapping[str, Any], names: Sequence[str]) -> FilterOutcome:
        if not is_managed(pod):
            self.observer.decision("filter", "unmanaged")
            return FilterOutcome(kept=list(names), failed={}, unresolvable={})
        try:
            demand = self.demand_of(pod)
        except DemandError as err:
            self.observer.decision("filter", "invalid")
            msg = invalid_request_message(err)
            return FilterOutcome(kept=[], failed={}, unresolvable=dict.fromkeys(names, msg))
        if not self.cache.synced:
            self.observer.decision("filter", "not_synced")
            return FilterOutcome(kept=[], failed={}, unresolvable={}, error=NOT_SYNCED)
        if self._nominations:
            self._release_nomination(demand.uid)
        evaluation, rows, _ = self._evaluate(demand, names, "filter")
        # Vectorised: one reason code per name, then C-level compress/fromkeys per distinct
        # reason (a handful), never a Python loop over 5,000 names.
        codes = np.full(len(names), int(Reason.UNKNOWN_NODE), dtype=np.int64)
        codes[rows >= 0] = evaluation.reason
        ok = codes == int(Reason.OK)
        kept = list(compress(names, ok.tolist()))
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        counts: dict[str, int] = {}
        if len(kept) < len(names):
            bad, per_code = np.unique(codes[~ok], return_counts=True)
            masks = [codes == code_value for code_value in bad.tolist()]
            messages = self._code_messages(demand, names, masks, bad.tolist(), evaluation.policy)
            for mask, code_value, n in zip(masks, bad.tolist(), per_code.tolist(), strict=True):
                code = Reason(code_value)
                counts[code.name.lower()] = n
                target = failed if code.resolvable_by_preemption else unresolvable
                target.update(dict.fromkeys(compress(names, mask.tolist()), messages[code_value]))
            if not kept:
                log.info(
                    "filter pod=%s/%s: no node fits: %s",
                    demand.namespace,
                    demand.name,
                    "; ".join(f"{counts[Reason(c).name.lower()]}x {messages[c]}" for c in bad.tolist()),
                )
        if self.keep_best_only and len(kept) > 1:
            kept = self._best_only(pod, kept, evaluation.take(_eval_positions(rows, ok)))
        if self.keep_best_only and len(kept) == 1:
            self._nominate(demand, kept[0])
        self.observer.rejections(counts)
        self.observer.decision("filter", "feasible" if kept else "no_fit")
        return FilterOutcome(kept=kept, failed=failed, unresolvable=unresolvable)

    def _code_messages(
        self, demand: PodDemand, names: Sequence[str], masks: list[np.ndarray], codes: list[int], policy: str
    ) -> dict[int, str]:
        """The one ``FailedNodes`` text of each reason code in this answer, with numbers.

        Per code, one node is explained (:func:`qosched.policies.placement.explain.closest`: the
        smallest shortfall where the state has it, else the first): O(codes) slow explanations
        under one hold of the cache lock, never one per failed node. Every node failing with a
        code gets that code's string, so kube-scheduler's event (one count per distinct message)
        stays one line per code (docs/extender.md, "Rejection reasons with numbers").
        """
        name = policy or self.policy.name
        out: dict[int, str] = {}
        with self.cache.reading() as state:
            index = self._index_locked(state)
            for mask, code_value in zip(masks, codes, strict=True):
                code = Reason(code_value)
                at = np.flatnonzero(mask)
                among = at[:_CLOSEST_AMONG] if code in MARGIN_CODES else at[:1]  # no margin: the first
                rows = rows_of(state, [names[i] for i in among.tolist()], index)
                pick, by_margin = closest(state, demand, code, rows)
                node = names[int(at[pick])]
                why = self._explained.explain(self.policy, state, demand, int(rows[pick]), code, name=node)
                out[code_value] = filter_message(name, why, is_closest=by_margin)
        return out

    def _best_only(self, pod: Mapping[str, Any], kept: list[str], evaluation: Evaluation) -> list[str]:
        """``FILTER_KEEPS_BEST_ONLY``: the one node the policy chooses among ``kept``.

        ``evaluation`` is the filter's own evaluation restricted to ``kept`` (in order). The node
        is the highest raw score within the set ``prioritize`` would score highest
        (``scheduler_scores`` normalised over the kept nodes, hints included): without hints, the
        policy's own argmax (:func:`~qosched.policies.placement.base.best_candidate`, the what-if's
        choice; the earliest on equal raw scores). One node, not prioritize's whole tie set: the
        scheduler then has no choice left, so the filter can reserve that node for the pod before
        the next cycle reads the state (:meth:`_nominate`), and 0..10 integer scores tie often
        (kube-scheduler would draw among the tied nodes at random).

        The other nodes are left out of the answer (neither ``NodeNames`` nor a failure map).
        kube-scheduler's ``findNodesThatPassExtenders`` takes ``NodeNames`` as the feasible list
        and records a status only for the nodes a failure map names; those statuses are read only
        when no node is feasible after every extender (the FitError's event, preemption), which
        cannot follow a non-empty answer of the only extender. Listing them cost ~18 KB of
        ``FailedNodes`` per answer at 230 candidates (~0.14 ms to build and encode here at load
        12, ~0.08 ms to decode in the scheduler stand-in) for statuses nobody reads.
        """
        scores = self._hint_bonus(pod, kept, scheduler_scores(evaluation))
        tied = np.flatnonzero(scores == scores.max())
        if tied.size == 1:
            return [kept[int(tied[0])]]
        raw = np.nan_to_num(evaluation.raw_score[tied], nan=-np.inf)
        return [kept[int(tied[int(np.argmax(raw))])]]

    def _nominate(self, demand: PodDemand, node: str) -> None:
        """Reserve ``node`` for the pod as filter answers it alone (best-only): the next cycle's
        filter sees it taken, as kube-scheduler's own cache sees a pod it assumed.

        Without it, two pods filtered before the first one's (asynchronous) bind landed could both
        be sent to the same single best node, and the second bind was refused ("no longer fits":
        a backoff of 1 s or more for that pod). The reservation is the bind's own (:meth:`_reserve`:
        same allocation, annotations and cache assumption), made earlier; ``bind`` to that node
        consumes it, and it is released when the pod is filtered again (the scheduler did not
        bind it), bound elsewhere, deleted, or after the cache's ``assume_ttl_s``.
        """
        if self.cache.is_assumed(demand.uid):  # a bind of this pod is in flight or unsettled
            return
        # Not assumed: an earlier bind of unknown outcome lost its reservation (expired), so its
        # entry is stale; the new reservation would revive it (``UnknownBinds.live`` asks only
        # whether the pod is assumed), and bind would then refuse every other node or write the
        # expired decision's devices.
        self._unknown.discard(demand.uid)
        with self.cache.reading() as state:
            placement = self._placement_for(state, demand, node, self._recall(demand.uid))
            if isinstance(placement, str):
                return
            alloc, annotations = placement
            try:
                self.cache.assume_locked(alloc)
            except StateError:
                return
        with self._nominations_lock:
            self._nominations[demand.uid] = (node, annotations)
            if len(self._nominations) > self._nominations_prune_at:
                self._prune_nominations_locked()

    def _prune_nominations_locked(self) -> None:
        """Drop the reservations the cache no longer holds (expired unconfirmed, pod deleted,
        confirmed by the watch without a bind call here); amortised O(1) per nomination."""
        with self.cache.lock:  # one hold for the sweep (lock order: nominations, then cache)
            live = {uid: n for uid, n in self._nominations.items() if self.cache.is_assumed_locked(uid)}
        self._nominations = live
        self._nominations_prune_at = max(1024, 2 * len(live))

    def _take_nomination(self, uid: str) -> tuple[str, dict[str, str]] | None:
        with self._nominations_lock:
            return self._nominations.pop(uid, None)

    def _release_nomination(self, uid: str) -> None:
        """The pod is filtered again: the scheduler did not bind it where filter reserved."""
        if self._take_nomination(uid) is not None:
            self.cache.forget(uid)

    # ------------------------------------------------------------------ prioritize
    def prioritize(self, pod: Mapping[str, Any], names: Sequence[str]) -> list[tuple[str, int]]:
        """(node, score 0..10) for every name, in order; 0 everywhere for an unmanaged pod."""
        return list(zip(names, self.prioritize_array(pod, names).tolist(), strict=True))

    def prioritize_array(self, pod: Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
        """``prioritize`` as one int array of scores 0..10 in the order of ``names`` (the
        routes' fast path: the wire encoder takes the array as it is)."""
        if not is_managed(pod):
            self.observer.decision("prioritize", "unmanaged")
            return np.zeros(len(names), dtype=np.int64)
        if not self.cache.synced:  # no cluster view: no preference (HostPriorityList has no Error)
            self.observer.decision("prioritize", "not_synced")
            return np.zeros(len(names), dtype=np.int64)
        try:
            demand = self.demand_of(pod)
        except DemandError:
            self.observer.decision("prioritize", "invalid")
            return np.zeros(len(names), dtype=np.int64)
        return self._hint_bonus(pod, names, self._prioritize_demand(demand, names))

    def _hint_bonus(self, pod: Mapping[str, Any], names: Sequence[str], scores: np.ndarray) -> np.ndarray:
        """Placement hints: up to ``TIER_BONUS`` points on nodes of the service's hinted tier, and
        ``NODE_BONUS`` on nodes INFIDA's allocation loaded one of its variants on (cap 10)."""
        hints = self.hints.current() if self.hints is not None else None
        if hints is None:
            return scores
        from qosched.extender.kube.objects import pod_service
        from qosched.policies.requests.hints import node_bonus, tier_bonus

        service = pod_service(pod)
        if service not in hints.services:
            return scores
        with self.cache.reading() as state:
            index = state.node_index
            tiers = [state.node_views[index[n]].tier if n in index else None for n in names]
        bonus = np.array(
            [
                tier_bonus(hints, service, t) + node_bonus(hints, service, n)
                for t, n in zip(tiers, names, strict=True)
            ],
            dtype=np.int64,
        )
        return np.minimum(scores + bonus, 10)

    def _prioritize_demand(self, demand: PodDemand, names: Sequence[str]) -> np.ndarray:
        """Scores 0..10 of ``names`` in order (0 for unknown nodes), as an int array.

        Reuses the pod's evaluation from ``filter`` when nothing changed since (see
        ``_evaluate``); the scores are normalised over these candidates only.
        """
        evaluation, rows, _ = self._evaluate(demand, names, "prioritize", reuse=True)
        scores = np.zeros(len(names), dtype=np.int64)
        scores[rows >= 0] = scheduler_scores(evaluation)
        self.observer.decision("prioritize", "scored")
        return scores

    # ------------------------------------------------------------------ bind
    def _bind_lock(self, uid: str) -> threading.Lock:
        with self._bind_locks_guard:
            lock = self._bind_locks.get(uid)
            if lock is None:
                if len(self._bind_locks) > 4096:
                    self._bind_locks = {k: v for k, v in self._bind_locks.items() if v.locked()}
                lock = self._bind_locks[uid] = threading.Lock()
            return lock

    @property
    def binds_in_flight(self) -> int:
        """Binds between the gate and their answer now (tests, metrics)."""
        return self._gate.in_flight

    @property
    def binds_outcome_unknown(self) -> int:
        """Pods whose last bind timed out and whose reservation is still held (prunes the rest)."""
        return self._unknown.prune(self.cache.is_assumed)

    def bind(self, namespace: str, name: str, uid: str, node: str) -> BindOutcome:
        """Bind once: reserve the devices, call the API, confirm, release, or hold if unknown.

        Refused at once (an ``Error`` kube-scheduler retries) before the cache has synced and
        when the gate's binds-in-flight limit is reached (``bind_path.BindGate``). A retried bind
        of a pod already bound (or being bound) to the same node succeeds without a second
        binding; a pod bound elsewhere fails with a clear error. A bind whose API call timed out
        keeps its reservation (``bind_path.UnknownBinds``). Binds of different pods run
        concurrently; binds of the same pod are serialised.
        """
        if not self.cache.synced:
            self.observer.bind_failure("not_synced")
            return BindOutcome(error=NOT_SYNCED)
        if not self._gate.try_enter():
            self.observer.bind_failure("busy")
            log.info(
                "bind pod=%s/%s node=%s outcome=busy: %s binds in flight",
                namespace,
                name,
                node,
                self._gate.limit,
            )
            return BindOutcome(
                error=f"qosched: {self._gate.limit} binds already in flight (the limit); retry {namespace}/{name}"
            )
        try:
            with self._bind_lock(uid):
                return self._bind_locked(namespace, name, uid, node)
        finally:
            self._gate.leave()

    def _bind_locked(self, namespace: str, name: str, uid: str, node: str) -> BindOutcome:
        pending = self._unknown.live(uid, self.cache.is_assumed)
        if pending is not None:
            return self._rebind_unknown(namespace, name, uid, node, pending)
        nominated = self._take_nomination(uid) if self._nominations else None
        if nominated is not None:
            # The reservation gets a bind's own TTL from now (``renew``: else it expired
            # ``assume_ttl_s`` after filter, possibly while this bind's API call was under way).
            if nominated[0] == node and self.cache.renew(uid):
                return self._settle(namespace, name, uid, node, nominated[1])
            self.cache.forget(uid)  # reserved elsewhere (or expired): decide afresh below
        with self.cache.lock:
            existing = self.cache.state.allocation(uid)
        if existing is not None:
            if existing.node == node:
                self.observer.decision("bind", "already_bound")
                return BindOutcome(node=node)
            self.observer.bind_failure("bound_elsewhere")
            return BindOutcome(error=f"pod {namespace}/{name} is already bound to node {existing.node}")
        pod = self._pod_to_bind(namespace, name, uid)
        if isinstance(pod, BindOutcome):
            return pod
        decision = self._recall(uid)
        if decision is None and (pod is None or not is_managed(pod)):
            return self._bind_plain(namespace, name, uid, node)
        try:
            demand = decision.demand if decision is not None else self.demand_of(pod or {})
        except DemandError as err:
            return BindOutcome(error=invalid_request_message(err))
        annotations = self._reserve(demand, node, decision)
        if isinstance(annotations, BindOutcome):
            return annotations
        return self._settle(namespace, name, uid, node, annotations)

    def _pod_to_bind(self, namespace: str, name: str, uid: str) -> Mapping[str, Any] | BindOutcome | None:
        """The cached pod by UID, else by name; a ``BindOutcome`` error when the name now has
        another UID (what the API server answers to a Binding whose UID precondition fails)."""
        pod = self.cache.pod(uid)
        if pod is not None:
            return pod
        by_name = self.cache.pod_by_name(namespace, name)
        other_uid = str(((by_name or {}).get("metadata") or {}).get("uid") or "")
        if by_name is not None and uid and other_uid and other_uid != uid:
            self.observer.bind_failure("conflict")
            return BindOutcome(
                error=f"pod {namespace}/{name} has UID {other_uid}, not {uid}: it was deleted and recreated"
            )
        return by_name

    def _reserve(
        self, demand: PodDemand, node: str, decision: _Decision | None
    ) -> dict[str, str] | BindOutcome:
        """Decide and reserve under one hold of the cache lock; the annotations to write.

        Two binds of different pods racing for the same node see each other's reservation (no
        double booking, no SLO check made on a state that changed before the reservation).
        """
        with self.cache.reading() as state:
            placement = self._placement_for(state, demand, node, decision)
            if isinstance(placement, str):  # a node the cache does not know is not_found, not no_longer_fits
                self.observer.bind_failure("no_longer_fits" if node in state.node_index else "not_found")
                return BindOutcome(error=placement)
            alloc, annotations = placement
            try:
                self.cache.assume_locked(alloc)
            except StateError as err:
                self.observer.bind_failure("no_longer_fits")
                return BindOutcome(
                    error=f"qosched: cannot reserve {node} for {demand.namespace}/{demand.name}: {err}"
                )
        return annotations

    def _settle(
        self, namespace: str, name: str, uid: str, node: str, annotations: dict[str, str]
    ) -> BindOutcome:
        """Call the API for a reserved pod: bound → keep until the watch confirms; timed out →
        keep (the outcome is unknown); refused → release."""
        attempt = call_binder(self.binder, namespace, name, uid, node, annotations, clock=self._clock)
        if attempt.bound:
            self.observer.decision("bind", attempt.outcome)
            return BindOutcome(node=node, annotations=annotations)
        self.observer.bind_failure(attempt.outcome)
        where = f"qosched: binding {namespace}/{name} to {node} failed: {attempt.error}"
        if attempt.outcome == "timeout":
            self._unknown.add(uid, node, annotations)
            return BindOutcome(error=f"{where}; {UNKNOWN_NOTE}")
        self.cache.forget(uid)
        return BindOutcome(error=where)

    def _rebind_unknown(
        self, namespace: str, name: str, uid: str, node: str, pending: UnknownBind
    ) -> BindOutcome:
        """A retry while an earlier bind's outcome is unknown: same node → ask the API again
        (idempotent); another node → refuse until the watch settles it or the reservation expires."""
        if node != pending.node:
            self.observer.bind_failure("outcome_unknown")
            return BindOutcome(
                error=f"qosched: the outcome of binding {namespace}/{name} to {pending.node} is unknown "
                f"(the API timed out); {UNKNOWN_NOTE}"
            )
        attempt = call_binder(self.binder, namespace, name, uid, node, pending.annotations, clock=self._clock)
        if attempt.bound:
            self._unknown.discard(uid)
            self.observer.decision("bind", attempt.outcome)
            return BindOutcome(node=node, annotations=pending.annotations)
        self.observer.bind_failure(attempt.outcome)
        if attempt.outcome in DEFINITE_REFUSALS:  # deleted / recreated / bound elsewhere
            self._unknown.discard(uid)
            self.cache.forget(uid)
        return BindOutcome(error=f"qosched: binding {namespace}/{name} to {node} failed: {attempt.error}")

    def _bind_plain(self, namespace: str, name: str, uid: str, node: str) -> BindOutcome:
        """Unmanaged pod: bind as the default binder would (no annotations, no accounting)."""
        attempt = call_binder(self.binder, namespace, name, uid, node, {}, clock=self._clock)
        if attempt.bound:
            self.observer.decision("bind", "bound_unmanaged")
            return BindOutcome(node=node)
        self.observer.bind_failure(attempt.outcome)
        return BindOutcome(error=f"binding {namespace}/{name} to {node} failed: {attempt.error}")

    def _placement_for(
        self, state: ClusterState, demand: PodDemand, node: str, decision: _Decision | None
    ) -> tuple[Allocation, dict[str, str]] | str:
        """The allocation and result annotations for ``node``: from filter's evaluation when the
        state has not changed since, else from a fresh evaluation of that one node. The caller
        holds the cache lock."""
        row = state.node_index.get(node)
        if row is None:
            return f"qosched: node {node} is not in the cache"
        evaluation: Evaluation | None = None
        pos = -1
        if decision is not None:
            rows = np.array([row], dtype=np.int64)
            found = decision.positions(rows)
            # Learned mix ignored (observed=None): filter chose this node and its devices with the
            # mix of its time, and the node's own row is unchanged, so the verdict (SLOs, resources)
            # holds; re-deciding the device with a mix grown by the pods filtered since (every bind
            # with kube-scheduler's asynchronous binds) cost a policy evaluation per bind.
            if found[0] >= 0 and decision.valid_for(state, demand, found, rows, None):
                evaluation, pos = decision.evaluation, int(found[0])
                self.reused += 1
        if evaluation is None:
            t0 = self._clock()
            evaluation = self.policy.evaluate(state, demand, np.array([row], dtype=np.int64))
            self.evaluated += 1
            self.observer.policy_seconds("bind", self._clock() - t0)
            pos = 0
        code = Reason(int(evaluation.reason[pos]))
        if code != Reason.OK:
            why = explain(self.policy, state, demand, row, code).text
            return f"qosched: {demand.namespace}/{demand.name} no longer fits on {node}: {why}"
        devices = tuple(int(d) for d in evaluation.devices[pos] if d >= 0)
        v = int(evaluation.variant[pos])
        variant = demand.variants[v] if 0 <= v < len(demand.variants) else demand.model
        policy = evaluation.policy or self.policy.name
        latency = float(evaluation.latency_ms[pos])
        annotations = bind_annotations(state, row, demand, devices, variant, latency, policy)
        alloc = Allocation(pod=demand, node=node, devices=devices, model=variant, assumed=True)
        return alloc, annotations

    # ------------------------------------------------------------------ preempt
    #: Knobs of the preemption decision (predicted pause, restart penalty, trimming).
    preemption_config: LiveConfig = LiveConfig()
    #: Wall clock [epoch s] for pod ages in ``preempt`` (tests replace it per instance).
    wall_clock: Callable[[], float] = staticmethod(time.time)

    def preempt(self, pod: Mapping[str, Any], victims: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Narrow kube-scheduler's proposed victims with the QoS-driven rule (or the policy's own).

        Per node: keep it only if the pod fits there (in this extender's view: devices,
        interference) once a subset of the proposed victims the rule allows is gone, and answer
        the minimal such subset, victims of the lowest class with the largest QoS surplus first
        (:func:`qosched.policies.preemption.live.trim_proposal`; the numbers are gathered in
        :func:`qosched.extender.server.preempt_inputs.decide_preemption`). Never adds a node or a victim.
        """
        if not is_managed(pod):
            self.observer.decision("preempt", "unmanaged")
            return {node: list(uids) for node, uids in victims.items()}
        if not self.cache.synced:  # never evict on a partial view: no node is proposed
            self.observer.decision("preempt", "not_synced")
            return {}
        try:
            demand = self.demand_of(pod)
        except DemandError:
            self.observer.decision("preempt", "invalid")
            return {}
        now_s = float(self.wall_clock())
        t0 = self._clock()
        with self.cache.reading() as state:
            verdict = decide_preemption(
                state, self.cache.pod_locked, self.policy, pod, demand, victims, now_s, self.preemption_config
            )
        self.observer.policy_seconds("preempt", self._clock() - t0)
        for node, why in verdict.dropped.items():
            log.debug("preempt %s/%s: node %s left out: %s", demand.namespace, demand.name, node, why)
        self.observer.decision("preempt", "trimmed" if verdict.kept else "no_fit")
        return verdict.kept

    def placements(self) -> dict[str, dict[str, Any]]:
        """Placed pods with their node, devices, model and the latency predicted at bind."""
        out: dict[str, dict[str, Any]] = {}
        with self.cache.lock:
            allocs = list(self.cache.state.allocations())
            assumed = {a.uid for a in allocs if self.cache.is_assumed_locked(a.uid)}
            objects = {a.uid: self.cache.pod_locked(a.uid) for a in allocs}
        for alloc in allocs:
            ann = annotations_of(objects.get(alloc.uid) or {})
            latency = ann.get(A_PREDICTED_LATENCY_MS)
            out[f"{alloc.pod.namespace}/{alloc.pod.name}"] = {
                "node": alloc.node,
                "devices": list(alloc.devices),
                "model": alloc.model or alloc.pod.model,
                "class": alloc.pod.qos_class,
                "predicted_latency_ms": float(latency) if latency else None,
                "policy": ann.get(A_POLICY),
                "assumed": alloc.uid in assumed,
            }
        return out
