r"""Event-driven what-if replay of a workload through one placement policy (or scheduler).

The replay feeds pods to a policy through **the same interface the extender uses**: for each
decision, ``policy.evaluate(state, pod, rows)`` over the candidate rows, then
:func:`~qosched.policies.placement.base.best_candidate`, then the chosen node's devices and
variant from the :class:`~qosched.policies.placement.base.Evaluation` go into
``ClusterState.add(Allocation(...))``. No policy is implemented twice.

Events, in time order (a heap of departures merged with the sorted arrivals):

* **arrival** of pod *i* at ``workload.arrival_s[i]``: the scheduler places it; if it does not
  fit anywhere and the scheduler can preempt, it may name victims, which are evicted, and the
  pod is tried once more; a pod that still fails is counted (``failures``) and waits in the
  pending queue.
* **departure** of a running pod when it has run its ``duration_s`` (a preempted pod keeps the
  remainder): ``ClusterState.remove``; then the pending queue is retried.
* **tick** every ``retry_interval_s`` (only when configured, e.g. by a QoS-driven scheduler
  whose queue order changes with time): the whole pending queue is retried.

At equal times departures come first (capacity freed at *t* is usable at *t*), then ticks, then
arrivals in workload order.

Pending queue (documented choice). Failed pods wait in FIFO order (of entering the queue;
evicted pods re-enter at the back) unless the scheduler reorders it (``order``). A retry goes
through the queue once, trying every pod — no head-of-line blocking, as kube-scheduler moves all
unschedulable pods back to its active queue on a cluster event. To stay cheap, a pod that
already failed is only re-evaluated when one of the nodes freed since its last try passes a
necessary resource test (free CPU, memory, and enough devices with its milli-GPU free, on a node
whose GPU type the pod's ``gpu_spec`` accepts — every policy applies these hard constraints,
:mod:`qosched.policies.placement.constraints`): nothing else changed in its favour, so skipping
it cannot change where it can be placed. (It is also when a preempting scheduler looks for
victims for it: at its arrival, at a tick, and when a node it could use frees capacity.) Pods evicted during a
retry are retried in a following round at the same instant (at most ``max_rounds`` rounds).

FGD mode (``qosched whatif --inflate X``): pods never depart, so no retry happens and a pod
that fails stays failed, as in FGD's evaluation; the GPU allocation ratio after each arrival
against the arrived workload is the FGD curve (``ReplayResult.curve_*``).

Scheduler hooks. The replay talks to a :class:`Scheduler`: ``order`` (queue order), ``place``
(one decision) and ``preempt`` (victims for a pod that does not fit), plus ``observe`` (a pod
was submitted: workload learners such as FGD's). :class:`PolicyScheduler` adapts any
placement policy; a policy object that also defines ``order(pending, ledger, now_s)``,
``preempt(state, pod, ledger, now_s)`` or ``retry_interval_s`` is used as a queue/preemption
policy with no further glue (the ``priority`` and ``qos-driven`` policies of models.md §B).
:class:`PodLedger` gives them each pod's submission, running time, preemptions and class, from
which delivered QoS (availability) follows.

Determinism: no clock is read; randomness comes only from the passed ``numpy.random.Generator``
(request-level latency checkpoints) and from the policies' own seeds, so equal inputs give
equal results.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.placement.base import PlacementPolicy, best_candidate
from qosched.policies.placement.constraints import allowed_by_gpu_spec, devices_needed
from qosched.policies.placement.row_memo import RowMemo
from qosched.policies.simulator.latency_checks import DEFAULT_SIM_CONFIG, LatencyBook
from qosched.policies.simulator.requests import SimConfig
from qosched.policies.simulator.scenarios import Workload
from qosched.policies.state import ClusterState, DeviceMemoryLookup, ServiceLookup, StateError
from qosched.policies.types import CPU_ACCELERATOR, GPU_MILLI_PER_DEVICE, Allocation, PodDemand

__all__ = [
    "COMPLETED",
    "NOT_ARRIVED",
    "PENDING",
    "RUNNING",
    "STATUS_NAMES",
    "DeviceList",
    "Placement",
    "PodLedger",
    "PolicyScheduler",
    "ReplayConfig",
    "ReplayResult",
    "Scheduler",
    "build_scheduler",
    "replay",
]

#: Pod status codes of :attr:`PodLedger.status`.
NOT_ARRIVED, PENDING, RUNNING, COMPLETED = 0, 1, 2, 3
STATUS_NAMES: tuple[str, ...] = ("not-arrived", "pending", "running", "completed")


@dataclass(frozen=True, slots=True)
class Placement:
    """One decision: node row, device indexes, model variant, predicted latency [ms] (NaN: none)."""

    row: int
    devices: tuple[int, ...]
    model: str | None
    predicted_latency_ms: float


class DeviceList(list[tuple[int, ...]]):
    """Each pod's devices (a list of tuples) with a bit mask per pod kept in step.

    ``bits[i]`` has bit *d* set for every device index *d* < 63 of ``self[i]``; ``overflow`` is
    True once some pod held a device index >= 63 (then the masks are incomplete and readers
    must fall back to the tuples). The masks let the victim search add up what evicting
    thousands of pods frees per device with a few vectorised sums (``preemption.room``) instead
    of a Python loop over tuples; item assignment (``ledger.devices[i] = (0, 2)``), as the
    replay and hand-built test ledgers do, keeps them current.
    """

    __slots__ = ("bits", "overflow")

    def __init__(self, n: int) -> None:
        super().__init__([()] * n)
        self.bits = np.zeros(n, dtype=np.int64)
        self.overflow = False

    def _mask(self, devices: tuple[int, ...]) -> int:
        mask = 0
        for d in devices:
            if 0 <= d < 63:
                mask |= 1 << d
            else:
                self.overflow = True
        return mask

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        if isinstance(index, slice):
            for i in range(*index.indices(len(self))):
                self.bits[i] = self._mask(self[i])
        else:
            self.bits[index] = self._mask(value)


class PodLedger:
    """Per-pod bookkeeping of a replay, arrays indexed by the pod's position in the workload.

    Attributes
    ----------
    pods : tuple of PodDemand
    index : dict
        Pod uid → position.
    submit_s : ndarray
        Submission (arrival) time [s].
    first_start_s, end_s : ndarray
        First placement time, departure time [s]; NaN when it did not happen.
    run_start_s : ndarray
        Start of the current run [s]; NaN when not running.
    running_s : ndarray
        Running time of the runs that ended [s] (see :meth:`running_now_s`).
    remaining_s : ndarray
        Running time still needed [s] (``inf`` = never leaves).
    preemptions, attempts, failures : ndarray of int
        Evictions suffered, placement decisions made for it, decisions that found no node.
    node_row : ndarray of int
        State row of its current (or last) node; -1 when never placed.
    devices : DeviceList
        Devices of its current (or last) placement (tuples; ``devices.bits``: bit masks).
    model : list
        Model variant of its current (or last) placement.
    predicted_latency_ms : ndarray
        The policy's prediction at its last placement [ms] (NaN: not an inference pod).
    class_name : ndarray of str
        Service class; ``target`` and ``rank`` its QoS target and preemption rank.
    status : ndarray of int8
        ``NOT_ARRIVED``, ``PENDING``, ``RUNNING`` or ``COMPLETED``.
    """

    def __init__(self, workload: Workload, classes: ClassConfig = DEFAULT_CLASS_CONFIG) -> None:
        n = len(workload)
        self.pods = workload.pods
        self.index = {p.uid: i for i, p in enumerate(workload.pods)}
        self.submit_s = np.array(workload.arrival_s, dtype=np.float64)
        self.first_start_s = np.full(n, np.nan)
        self.end_s = np.full(n, np.nan)
        self.run_start_s = np.full(n, np.nan)
        self.running_s = np.zeros(n)
        self.remaining_s = np.array(workload.duration_s, dtype=np.float64)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.attempts = np.zeros(n, dtype=np.int64)
        self.failures = np.zeros(n, dtype=np.int64)
        self.node_row = np.full(n, -1, dtype=np.int64)
        self.devices = DeviceList(n)
        self.model: list[str | None] = [None] * n
        self.predicted_latency_ms = np.full(n, np.nan)
        self.class_name = np.array([p.qos_class for p in workload.pods], dtype=str)
        self.target = classes.targets(self.class_name.tolist())
        self.rank = classes.ranks(self.class_name.tolist())
        self.status = np.zeros(n, dtype=np.int8)

    def __len__(self) -> int:
        return len(self.pods)

    def running_now_s(self, now_s: float) -> np.ndarray:
        """Running time of every pod up to ``now_s`` [s] (the current run counted)."""
        current = np.where(np.isnan(self.run_start_s), 0.0, now_s - self.run_start_s)
        return self.running_s + np.maximum(current, 0.0)

    def availability(self, now_s: float) -> np.ndarray:
        """Availability r / (now − submit) of every arrived pod at ``now_s`` (1 with no time elapsed)."""
        elapsed = now_s - self.submit_s
        out = np.ones(len(self))
        np.divide(self.running_now_s(now_s), elapsed, out=out, where=elapsed > 0)
        return np.clip(out, 0.0, 1.0)


@runtime_checkable
class Scheduler(Protocol):
    """What the replay asks of a scheduler (see the module docstring)."""

    name: str
    can_preempt: bool
    retry_interval_s: float | None

    def observe(self, pod: PodDemand) -> None:
        """A pod was submitted (called once per arrival, before it is placed)."""
        ...

    def order(self, pending: Sequence[int], ledger: PodLedger, now_s: float) -> Sequence[int]:
        """The order in which to retry the pending pods (positions in the workload)."""
        ...

    def place(self, state: ClusterState, pod: PodDemand) -> Placement | None:
        """One decision, or None when no node fits."""
        ...

    def preempt(self, state: ClusterState, pod: PodDemand, ledger: PodLedger, now_s: float) -> Sequence[str]:
        """Uids of running pods to evict so that ``pod`` fits (empty: none)."""
        ...


CandidateMode = Literal["all", "fit"]


class PolicyScheduler:
    """A :class:`Scheduler` around one placement policy.

    Parameters
    ----------
    policy : PlacementPolicy
        Decides through ``evaluate`` + ``best_candidate``. Its optional ``order``, ``preempt``
        and ``retry_interval_s`` attributes become the queue and preemption hooks.
    observe : callable, optional
        Called with every submitted pod (e.g. a FGD ``WorkloadLearner.observe``).
    candidates : {"all", "fit"}
        ``all`` (default): every node is a candidate, as the extender sees them with
        ``nodeCacheCapable``. ``fit``: only nodes whose free CPU and memory fit the pod, what
        kube-scheduler's own NodeResourcesFit filter passes to an extender; every policy rejects
        the other nodes anyway, so decisions are identical (a test checks it) and it is faster
        on a full cluster.
    refresh : callable, optional
        ``refresh(ledger, now_s)``: the replay calls it before a decision once at least
        ``ReplayConfig.refresh_every`` pods started or stopped since the last call (e.g. to
        rebuild ``qosched``'s fairness snapshot from the pods' current QoS).
    """

    def __init__(
        self,
        policy: PlacementPolicy,
        *,
        observe: Callable[[PodDemand], None] | None = None,
        candidates: CandidateMode = "all",
        refresh: Callable[[PodLedger, float], None] | None = None,
    ) -> None:
        if candidates not in ("all", "fit"):
            raise ValueError(f"candidates must be 'all' or 'fit', got {candidates!r}")
        self.policy = policy
        self.name = getattr(policy, "name", type(policy).__name__)
        self._observe = observe
        self.refresh = refresh
        self.candidates = candidates
        self._order = getattr(policy, "order", None)
        self._preempt = getattr(policy, "preempt", None)
        self.can_preempt = callable(self._preempt)
        self.retry_interval_s: float | None = getattr(policy, "retry_interval_s", None)
        self._rows: np.ndarray | None = None
        self.evaluations = 0
        #: Per-node verdicts per pod shape while the node is unchanged (exact; a policy without a
        #: ``memo_token`` — or with a learned mix, which changes with every pod — is evaluated as is).
        self.memo = RowMemo()
        # Requests (cpu, memory, milli per device, devices) no node fitted at this state version.
        self._unfit: tuple[object, int, list[tuple[int, float, int, int]]] | None = None

    def observe(self, pod: PodDemand) -> None:
        if self._observe is not None:
            self._observe(pod)

    def order(self, pending: Sequence[int], ledger: PodLedger, now_s: float) -> Sequence[int]:
        if self._order is None:
            return pending
        return tuple(self._order(pending, ledger, now_s))

    def preempt(self, state: ClusterState, pod: PodDemand, ledger: PodLedger, now_s: float) -> Sequence[str]:
        if self._preempt is None:
            return ()
        return tuple(self._preempt(state, pod, ledger, now_s))

    def place(self, state: ClusterState, pod: PodDemand) -> Placement | None:
        rows = self._rows
        if rows is None or rows.shape[0] != state.n_nodes:
            rows = self._rows = np.arange(state.n_nodes, dtype=np.int64)
        if self.candidates == "fit":
            gpu = pod.gpu_milli > 0
            need = (
                pod.cpu_milli,
                pod.memory_mib,
                pod.milli_per_device if gpu else 0,
                pod.gpu_count if gpu else 0,
            )
            unfit = self._unfit
            if unfit is None or unfit[0] is not state or unfit[1] != state.version:
                unfit = self._unfit = (state, state.version, [])
            for c, m, g, k in unfit[2]:
                if need[0] >= c and need[1] >= m and need[2] >= g and need[3] >= k:
                    return None  # dominates a request that no node fits
            fits = (state.cpu_cap_milli - state.cpu_used_milli >= pod.cpu_milli) & (
                state.mem_cap_mib - state.mem_used_mib >= pod.memory_mib
            )
            if gpu:
                free = GPU_MILLI_PER_DEVICE - state.gpu_used_milli
                enough = ((free >= pod.milli_per_device) & state.dev_exists).sum(axis=1) >= pod.gpu_count
                fits &= enough
            rows = rows[fits]
            if rows.shape[0] == 0:
                unfit[2][:] = [u for u in unfit[2] if not all(a >= b for a, b in zip(u, need, strict=True))]
                unfit[2].append(need)
                return None
        self.evaluations += 1
        evaluation = self.memo.evaluate(self.policy, state, pod, rows)
        best = best_candidate(evaluation)
        if best is None:
            return None
        devices = tuple(int(d) for d in evaluation.devices[best].tolist() if d >= 0)
        variant = int(evaluation.variant[best])
        model = pod.variants[variant] if 0 <= variant < len(pod.variants) else None
        return Placement(
            row=int(evaluation.node_idx[best]),
            devices=devices,
            model=model,
            predicted_latency_ms=float(evaluation.latency_ms[best]),
        )

    def __repr__(self) -> str:
        return f"PolicyScheduler({self.name!r}, candidates={self.candidates!r})"


MixMode = Literal["learned", "workload", "trace"]


def build_scheduler(
    name: str,
    *,
    seed: int = 0,
    workload: Workload | None = None,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    mix: MixMode = "learned",
    candidates: CandidateMode = "all",
    preempt: bool | None = None,
    options: Mapping[str, Any] | None = None,
) -> PolicyScheduler:
    """The scheduler of a policy of the registry, with the inputs its options declare.

    The policy's row (:data:`qosched.policies.registry.POLICIES`) says what it takes; of those,
    these are filled in: ``seed`` (random choices), ``learner`` / ``mix`` (FGD's expected
    workload: a ``WorkloadLearner`` fed with every submitted pod when ``mix="learned"``, the
    paper's setting of learning from the pods seen; ``mix="workload"`` gives the fixed mix of all
    the workload's pods; ``mix="trace"`` the fixed mix of the trace's pods before inflation, what
    FGD's simulator computes up front), ``classes`` (service classes),
    ``fairness`` (qosched's fairness hook, kept current by the replay). Unknown names raise
    ``KeyError`` listing the known ones. ``options``: the policy's own settings, as
    :func:`~qosched.policies.registry.policy_options` takes them (``{"gpu_consolidation":
    "spread"}``; an unknown key or bad value is a ``ValueError`` naming it); the wired inputs
    above are set on top of them.

    A policy with a preemptive form in its row (``qosched``) takes that form when pods leave
    (``preempt=None``: ``workload.departs``), as it is live in the extender: the QoS-driven
    queue order and victim rule on its own hosts
    (:func:`qosched.policies.preemption.preemptive_qosched`, same name in reports). Where no
    pod ever leaves (FGD mode, ``--inflate`` without ``--departures``) an evicted pod could
    never run again, so it stays a plain placement policy. ``preempt`` forces either form.
    """
    from qosched.policies.registry import policy_options, policy_spec

    spec = policy_spec(name)
    inputs = _Inputs.wire(spec, seed=seed, workload=workload, classes=classes, mix=mix)
    base = policy_options(name, options) if options else spec.options()
    built = dataclasses.replace(base, **inputs.options)
    if preempt is None:
        preempt = workload is not None and workload.departs
    policy: Any
    if preempt and spec.preemptive is not None:
        policy = spec.preemptive(built, classes)
    else:
        policy = spec.factory(built)
    observe = inputs.observe
    if observe is None and "mix" not in inputs.options:
        own = getattr(policy, "observe", None)
        observe = own if callable(own) else None
    return PolicyScheduler(policy, observe=observe, candidates=candidates, refresh=inputs.refresh)


@dataclass(slots=True)
class _Inputs:
    """What the replay wires into a policy: option values, the pod observer, the refresh hook."""

    options: dict[str, Any] = field(default_factory=dict)
    observe: Callable[[PodDemand], None] | None = None
    refresh: Callable[[PodLedger, float], None] | None = None

    @classmethod
    def wire(
        cls, spec: Any, *, seed: int, workload: Workload | None, classes: ClassConfig, mix: MixMode
    ) -> _Inputs:
        """The inputs of the options ``spec`` declares (see :func:`build_scheduler`)."""
        from qosched.policies.placement.fgd.mix import WorkloadLearner, WorkloadMix

        out = cls()
        if spec.takes("seed"):
            out.options["seed"] = int(seed)
        if spec.takes("classes"):
            out.options["classes"] = classes
        if spec.takes("fairness") and (workload is None or any(p.is_inference for p in workload.pods)):
            out.options["fairness"], out.refresh = _fairness_feed(classes)
        if mix in ("workload", "trace") and spec.takes("mix") and workload is not None:
            out.options["mix"] = WorkloadMix.from_pods(_mix_pods(workload, mix))
        elif spec.takes("learner"):
            learner = WorkloadLearner()
            out.options["learner"] = learner
            out.observe = learner.observe
        return out


def _gpu_spec_table(state: ClusterState, pods: Sequence[PodDemand]) -> tuple[np.ndarray, np.ndarray]:
    """The GPU-type constraints of the pods, for the retry test: per pod the index of its
    ``gpu_spec`` (-1: none, or it occupies no device, so the constraint does not apply), and per
    constraint the rows that accept it (:func:`~qosched.policies.placement.constraints.allowed_by_gpu_spec`),
    shape (constraints, nodes). Nodes are fixed for a replay, so this is computed once."""
    index: dict[tuple[str, ...], int] = {}
    spec_of = np.full(len(pods), -1, dtype=np.int64)
    for i, pod in enumerate(pods):
        if pod.gpu_spec and devices_needed(pod) > 0:
            spec_of[i] = index.setdefault(tuple(pod.gpu_spec), len(index))
    table = np.ones((len(index), state.n_nodes), dtype=bool)
    for spec, k in index.items():
        table[k] = allowed_by_gpu_spec(state, spec, state.accel_code, state.gpu_model_code)
    return spec_of, table


def _mix_pods(workload: Workload, mix: MixMode) -> Sequence[PodDemand]:
    """The pods a fixed mix is learned from: all of them (``workload``), or (``trace``) the
    trace's own pods without the clones an inflation appended (``description["clones"]``, the
    last pods): FGD's simulator computes its typical pods from the trace before it tunes the
    workload up (``core.go``: ``SetTypicalPods`` before ``TunePodsByNodeTotalResource``)."""
    if mix == "trace":
        clones = int(workload.description.get("clones", 0))
        return workload.pods[: len(workload.pods) - clones]
    return workload.pods


def _fairness_feed(classes: ClassConfig) -> tuple[Any, Callable[[PodLedger, float], None]]:
    """``qosched``'s fairness hook and the function that keeps its snapshot current.

    The hook (:class:`~qosched.policies.placement.qosched.fairness_hook.SnapshotFairness`) reads a
    :class:`~qosched.policies.fairness.shares.FairnessSnapshot` of the normalised QoS (QoS /
    class target) of the placed pods; in the replay a pod's QoS is its availability so far
    (SLO attainment is only known at latency checkpoints). It is only wired when the workload
    has inference services: on plain pods the fairness term is the same for every candidate
    (no co-located service is affected), so it cannot change a decision.
    """
    from qosched.policies.fairness.shares import FairnessSnapshot
    from qosched.policies.placement.qosched.fairness_hook import SnapshotFairness

    targets = {c.name: c.qos_target for c in classes.classes}
    hook = SnapshotFairness(FairnessSnapshot.from_values([], []), {}, targets.__getitem__)

    def refresh(ledger: PodLedger, now_s: float) -> None:
        running = np.flatnonzero(ledger.status == RUNNING)
        normalised = ledger.availability(now_s)[running] / ledger.target[running]
        hook.snapshot = FairnessSnapshot.from_values(normalised, ledger.class_name[running].tolist())
        hook.normalised_qos = {
            ledger.pods[i].uid: float(q) for i, q in zip(running.tolist(), normalised.tolist(), strict=True)
        }

    return hook, refresh


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Knobs of a replay.

    Attributes
    ----------
    retry_pending : bool
        Keep failed pods in a pending queue and retry them when capacity frees (default). False:
        a pod that fails on arrival is never tried again.
    horizon_s : float or None
        End of the replay [s]: events after it are not processed, and QoS is measured at it.
        None: the last arrival plus ``tick_s`` (a pod that arrives last and is not placed then
        counts as unavailable for that tick, not as "no time elapsed").
    tick_s : float
        See ``horizon_s`` [s], > 0.
    max_rounds : int
        Retry rounds at one instant (pods evicted in one round are retried in the next).
    retry_interval_s : float or None
        Period of full retries of the pending queue [s]; None: the scheduler's own
        ``retry_interval_s``, else none.
    simulate_latency : bool
        Take request-level latency checkpoints (:mod:`.latency_checks`).
    sim : SimConfig
        Requests per device simulation.
    progress_every : int
        Arrivals between two calls of the ``progress`` callback.
    refresh_every : int
        Pod starts/stops between two calls of the scheduler's ``refresh`` (if it has one).
        Default 1: before every decision that follows a change, because ``qosched``'s fairness
        hook requires every service on a candidate device to be in its snapshot (a service
        placed after the last refresh makes ``GiniSummary.gini_after`` raise).
    """

    retry_pending: bool = True
    horizon_s: float | None = None
    tick_s: float = 1.0
    max_rounds: int = 8
    retry_interval_s: float | None = None
    simulate_latency: bool = True
    sim: SimConfig = DEFAULT_SIM_CONFIG
    progress_every: int = 256
    refresh_every: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tick_s) and self.tick_s > 0):
            raise ValueError(f"ReplayConfig.tick_s must be > 0, got {self.tick_s!r}")
        if self.horizon_s is not None and not (math.isfinite(self.horizon_s) and self.horizon_s >= 0):
            raise ValueError(f"ReplayConfig.horizon_s must be finite and >= 0, got {self.horizon_s!r}")
        if self.refresh_every < 1:
            raise ValueError(f"ReplayConfig.refresh_every must be >= 1, got {self.refresh_every!r}")
        if self.max_rounds < 1:
            raise ValueError(f"ReplayConfig.max_rounds must be >= 1, got {self.max_rounds!r}")
        if self.retry_interval_s is not None and not (
            math.isfinite(self.retry_interval_s) and self.retry_interval_s > 0
        ):
            raise ValueError(f"ReplayConfig.retry_interval_s must be > 0, got {self.retry_interval_s!r}")


@dataclass(frozen=True, eq=False)
class ReplayResult:
    """What one replay produced (see :mod:`qosched.policies.simulator.metrics` for summaries).

    Attributes
    ----------
    policy : str
    workload : Workload
    ledger : PodLedger
        Per-pod outcome; ``running_end_s`` holds the running time up to ``horizon_s``.
    state : ClusterState
        The cluster at the horizon.
    horizon_s : float
    running_end_s : ndarray
        Running time of each pod up to the horizon [s].
    curve_arrived_frac, curve_allocated_frac : ndarray
        After each arrival (in arrival order): arrived GPU requests / capacity and allocated
        GPU / capacity [-] (the FGD curve; all 0 when the cluster has no accelerator).
    latency : LatencyBook or None
        Request-level checkpoints (None when not simulated).
    stats : dict
        Counts: events, departures, evaluations, retried, preemptions, rounds, skipped checks.
    gpu_allocation_time_avg : float
        Allocated GPU / capacity averaged over time from the first event to the horizon [-]
        (the meaningful allocation figure when pods come and go, e.g. the trace's own times).
    """

    policy: str
    workload: Workload
    ledger: PodLedger
    state: ClusterState
    horizon_s: float
    running_end_s: np.ndarray
    curve_arrived_frac: np.ndarray
    curve_allocated_frac: np.ndarray
    latency: LatencyBook | None
    stats: dict[str, int] = field(default_factory=dict)
    gpu_allocation_time_avg: float = 0.0


class _Replay:
    """The event loop (one instance per replay; see the module docstring)."""

    def __init__(
        self,
        workload: Workload,
        scheduler: Scheduler,
        rng: np.random.Generator,
        config: ReplayConfig,
        lookup: ServiceLookup,
        device_memory: DeviceMemoryLookup,
        classes: ClassConfig,
    ) -> None:
        self.workload = workload
        self.sched = scheduler
        self.config = config
        self.state = ClusterState(workload.nodes, lookup, device_memory)
        self.ledger = PodLedger(workload, classes)
        self.latency = LatencyBook(rng, config.sim) if config.simulate_latency else None
        self.heap: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.token = [0] * len(workload)
        self.pending: list[int] = []
        self.unchecked = np.zeros(len(workload), dtype=bool)
        self.freed: set[int] = set()
        self.allocated_milli = 0
        pods = workload.pods
        # Per-pod requests as arrays, for the vectorised necessary test of the pending queue.
        self._cpu = np.array([p.cpu_milli for p in pods], dtype=np.int64)
        self._mem = np.array([p.memory_mib for p in pods], dtype=np.float64)
        self._milli = np.array([p.milli_per_device if p.gpu_milli > 0 else 0 for p in pods], dtype=np.int64)
        self._count = np.array([p.gpu_count for p in pods], dtype=np.int64)
        self._spec_of, self._spec_rows = _gpu_spec_table(self.state, pods)
        self._refresh = getattr(scheduler, "refresh", None)
        self._changes = config.refresh_every  # refresh before the first decision
        self.stats = {
            "arrivals": 0,
            "departures": 0,
            "placed": 0,
            "failed_attempts": 0,
            "retried": 0,
            "skipped_checks": 0,
            "preemptions": 0,
            "rounds": 0,
            "ticks": 0,
        }
        # Rows whose devices count in the GPU allocation ratio (as ``accelerator_capacity_milli``).
        st = self.state
        accel = np.array([v.accelerator != CPU_ACCELERATOR for v in st.node_views], dtype=bool)
        self._gpu_rows = accel & st.schedulable
        self._init_clock()

    def _init_clock(self) -> None:
        """The event loop's state: arrival order and times, horizon, tick interval, FGD curve, ∫ allocation."""
        wl, cfg = self.workload, self.config
        n = len(wl)
        order = np.lexsort((np.arange(n), wl.arrival_s)) if n else np.zeros(0, dtype=np.int64)
        self.arrival_order: list[int] = order.tolist()
        self.arrival_times: list[float] = wl.arrival_s[order].tolist()
        last = self.arrival_times[-1] if n else 0.0
        self.horizon: float = cfg.horizon_s if cfg.horizon_s is not None else last + cfg.tick_s
        self.interval: float | None = (
            cfg.retry_interval_s if cfg.retry_interval_s is not None else self.sched.retry_interval_s
        )
        capacity = float(wl.capacity_gpu_milli)
        self.inv_cap = 1.0 / capacity if capacity > 0 else 0.0
        self.curve_x = np.zeros(n)
        self.curve_y = np.zeros(n)
        self.arrived_milli = 0
        self.next_tick = math.inf
        self.t_prev: float | None = None
        self.t_first = 0.0
        self.alloc_area = 0.0  # ∫ allocated milli-GPU dt [milli-GPU·s]
        self.k = 0  # arrivals processed

    # ------------------------------------------------------------------ pod transitions
    def _start(self, i: int, placement: Placement, t: float) -> None:
        pod = self.workload.pods[i]
        st, lg = self.state, self.ledger
        alloc = Allocation(
            pod=pod, node=st.node_names[placement.row], devices=placement.devices, model=placement.model
        )
        try:
            st.add(alloc)
        except StateError as err:
            raise StateError(f"policy {self.sched.name} produced an invalid placement: {err}") from None
        lg.run_start_s[i] = t
        if math.isnan(lg.first_start_s[i]):
            lg.first_start_s[i] = t
        lg.node_row[i] = placement.row
        lg.devices[i] = placement.devices
        lg.model[i] = placement.model
        lg.predicted_latency_ms[i] = placement.predicted_latency_ms
        lg.status[i] = RUNNING
        if self._gpu_rows[placement.row]:
            self.allocated_milli += pod.gpu_milli
        self.stats["placed"] += 1
        self._changes += 1
        remaining = lg.remaining_s[i]
        if remaining != math.inf:
            self.seq += 1
            heapq.heappush(self.heap, (t + remaining, self.seq, i, self.token[i]))

    def _stop(self, i: int, t: float) -> int:
        """Take a running pod off its node (departure or eviction); returns its node row."""
        pod = self.workload.pods[i]
        lg = self.ledger
        if self.latency is not None and pod.is_inference:
            self.latency.check_pod(self.state, pod.uid)
        self.state.remove(pod.uid)
        ran = t - lg.run_start_s[i]
        lg.running_s[i] += ran
        lg.remaining_s[i] -= ran
        lg.run_start_s[i] = np.nan
        row = int(lg.node_row[i])
        if self._gpu_rows[row]:
            self.allocated_milli -= pod.gpu_milli
        self.freed.add(row)
        self._changes += 1
        return row

    def _depart(self, i: int, t: float) -> None:
        self._stop(i, t)
        self.ledger.end_s[i] = t
        self.ledger.status[i] = COMPLETED
        self.stats["departures"] += 1

    def _evict(self, uid: str, t: float) -> None:
        i = self.ledger.index.get(uid)
        if i is None or self.ledger.status[i] != RUNNING:
            raise StateError(f"scheduler {self.sched.name} named {uid!r} as a victim, but it is not running")
        self._stop(i, t)
        self.token[i] += 1  # its scheduled departure is void
        self.ledger.preemptions[i] += 1
        self.stats["preemptions"] += 1
        if self.ledger.remaining_s[i] <= 0:
            self.ledger.end_s[i] = t
            self.ledger.status[i] = COMPLETED
            return
        self.ledger.status[i] = PENDING
        self.pending.append(i)
        self.unchecked[i] = True

    def _try(self, i: int, t: float) -> bool:
        pod = self.workload.pods[i]
        self.ledger.attempts[i] += 1
        if self._refresh is not None and self._changes >= self.config.refresh_every:
            self._refresh(self.ledger, t)
            self._changes = 0
        placement = self.sched.place(self.state, pod)
        if placement is None and self.sched.can_preempt:
            victims = self.sched.preempt(self.state, pod, self.ledger, t)
            if victims:
                for uid in victims:
                    self._evict(uid, t)
                placement = self.sched.place(self.state, pod)
        if placement is None:
            self.ledger.failures[i] += 1
            self.stats["failed_attempts"] += 1
            return False
        self._start(i, placement, t)
        return True

    # ------------------------------------------------------------------ pending queue
    def _could_fit(self, i: int, rows: np.ndarray) -> bool:
        """Necessary test of pending pod ``i`` on the freed rows (see the module docstring)."""
        pod = self.workload.pods[i]
        spec = self._spec_of[i]
        if spec >= 0:
            rows = rows[self._spec_rows[spec, rows]]
        st = self.state
        ok = (st.cpu_cap_milli[rows] - st.cpu_used_milli[rows] >= pod.cpu_milli) & (
            st.mem_cap_mib[rows] - st.mem_used_mib[rows] >= pod.memory_mib
        )
        if pod.gpu_milli > 0 and ok.any():
            free = np.where(st.dev_exists[rows], GPU_MILLI_PER_DEVICE - st.gpu_used_milli[rows], 0)
            ok &= (free >= pod.milli_per_device).sum(axis=1) >= pod.gpu_count
        return bool(ok.any())

    def _could_fit_many(self, pods: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """:meth:`_could_fit` of many pending pods at once (P x R x D booleans), shape (P,)."""
        st = self.state
        cpu_free = st.cpu_cap_milli[rows] - st.cpu_used_milli[rows]
        mem_free = st.mem_cap_mib[rows] - st.mem_used_mib[rows]
        ok = (cpu_free[None, :] >= self._cpu[pods, None]) & (mem_free[None, :] >= self._mem[pods, None])
        milli = self._milli[pods]
        if (milli > 0).any():
            free = np.where(st.dev_exists[rows], GPU_MILLI_PER_DEVICE - st.gpu_used_milli[rows], -1)
            enough = (free[None, :, :] >= milli[:, None, None]).sum(axis=2) >= self._count[pods, None]
            ok &= (milli == 0)[:, None] | enough
        spec = self._spec_of[pods]
        if (spec >= 0).any():
            ok &= (spec < 0)[:, None] | self._spec_rows[np.maximum(spec, 0)][:, rows]
        return ok.any(axis=1)

    def _retry(self, t: float, *, full: bool) -> None:
        """Retry the pending queue at ``t``: rounds while evictions free nodes or leave victims unchecked.

        ``full``: every pending pod is tried in the first round (a tick); otherwise only pods not
        tried since they entered the queue and those passing the necessary test on the freed rows.
        """
        if not self.config.retry_pending:
            self.freed.clear()
            return
        for _ in range(self.config.max_rounds):
            if not self.pending or not self._retry_round(t, full=full):
                break
            full = False  # evictions happened: freed nodes and unchecked victims go round once more
        self.freed.clear()

    def _worth_trying(self, pending: np.ndarray, freed: np.ndarray, *, full: bool) -> np.ndarray:
        """Which pending pods may fit now (bool per pod of ``pending``).

        Necessary test against the round's starting state, vectorised over the queue; as
        placements during the round only consume capacity, a pod failing it now would fail it at
        its turn too. A pod passing it is tested again at its turn (exact skip rule).
        """
        if full:
            return np.ones(pending.size, dtype=bool)
        worth = self.unchecked[pending].copy()
        if freed.size:
            worth |= self._could_fit_many(pending, freed)
        return worth

    def _retry_round(self, t: float, *, full: bool) -> bool:
        """One pass over the queue in the scheduler's order; True when it evicted pods (go round again)."""
        lg = self.ledger
        freed = np.fromiter(self.freed, dtype=np.int64, count=len(self.freed))
        self.freed = set()
        pending = np.array(self.pending, dtype=np.int64)
        worth = self._worth_trying(pending, freed, full=full)
        if not worth.any():
            self.stats["skipped_checks"] += int(pending.size)
            return False
        self.stats["rounds"] += 1
        candidates = set(pending[worth].tolist())
        self.stats["skipped_checks"] += int(pending.size - len(candidates))
        evicted_before = self.stats["preemptions"]
        queue = list(self.sched.order(list(self.pending), lg, t))
        for i in queue:
            if lg.status[i] != PENDING or i not in candidates:
                continue
            if not (full or self.unchecked[i]) and not self._could_fit(i, freed):
                self.stats["skipped_checks"] += 1
                continue
            self.unchecked[i] = False
            self.stats["retried"] += 1
            self._try(i, t)
        self.pending = [i for i in self.pending if lg.status[i] == PENDING]
        return self.stats["preemptions"] != evicted_before or bool(self.unchecked[self.pending].any())

    # ------------------------------------------------------------------ main loop
    def run(self, progress: Callable[[int, int], None] | None) -> ReplayResult:
        """Process events in time order up to the horizon (module docstring), then sum up.

        Each turn: the next event time (:meth:`_next_time`); the clock advances to it, adding
        the allocation held since the last event (:meth:`_advance`); then, at equal times,
        departures (:meth:`_departures`), else a tick (:meth:`_tick`), else one arrival
        (:meth:`_arrival`).
        """
        n = len(self.workload)
        every = max(1, self.config.progress_every)
        heap = self.heap
        while True:
            t = self._next_time()
            if t == math.inf or t > self.horizon:
                break
            self._advance(t)
            if heap and heap[0][0] == t:
                self._departures(t)
            elif self.next_tick == t:
                self._tick(t)
            else:
                self._arrival(t)
                if progress is not None and self.k % every == 0:
                    progress(self.k, n)
        if progress is not None:
            progress(self.k, n)
        return self._result()

    def _next_time(self) -> float:
        """The time of the next event (inf: none left).

        Ticks run only while pods wait: the first one ``interval`` after the queue became
        non-empty (as of the last event), none while it is empty.
        """
        interval = self.interval
        if interval is not None:
            if not self.pending:
                self.next_tick = math.inf
            elif self.next_tick == math.inf:
                self.next_tick = (self.t_prev if self.t_prev is not None else 0.0) + interval
        t_arr = self.arrival_times[self.k] if self.k < len(self.arrival_times) else math.inf
        t_dep = self.heap[0][0] if self.heap else math.inf
        return min(t_arr, t_dep, self.next_tick)

    def _advance(self, t: float) -> None:
        """Move the clock to ``t``: the allocation held since the last event counts for the time between."""
        if self.t_prev is None:
            self.t_first = t
        else:
            self.alloc_area += self.allocated_milli * (t - self.t_prev)
        self.t_prev = t

    def _departures(self, t: float) -> None:
        """Every pod due to leave at ``t`` leaves; the pending queue is retried on the freed nodes."""
        heap, lg = self.heap, self.ledger
        while heap and heap[0][0] == t:
            _, _, i, token = heapq.heappop(heap)
            if token == self.token[i] and lg.status[i] == RUNNING:
                self._depart(i, t)
        if self.pending and self.freed:
            self._retry(t, full=False)
        self.freed.clear()

    def _tick(self, t: float) -> None:
        """A periodic full retry of the pending queue."""
        self.stats["ticks"] += 1
        self._retry(t, full=True)
        assert self.interval is not None
        self.next_tick = t + self.interval

    def _arrival(self, t: float) -> None:
        """The next pod in arrival order is submitted and tried; one point of the FGD curve."""
        k = self.k
        i = self.arrival_order[k]
        pod = self.workload.pods[i]
        self.stats["arrivals"] += 1
        self.ledger.status[i] = PENDING
        self.sched.observe(pod)
        if not self._try(i, t):
            self.pending.append(i)
        if self.freed:  # the arrival evicted victims
            self._retry(t, full=False)
        self.arrived_milli += pod.gpu_milli
        self.curve_x[k] = self.arrived_milli * self.inv_cap
        self.curve_y[k] = self.allocated_milli * self.inv_cap
        self.k = k + 1

    def _result(self) -> ReplayResult:
        """The final latency checkpoints, QoS at the horizon and the time-averaged allocation."""
        lg, horizon, k = self.ledger, self.horizon, self.k
        if self.latency is not None:
            self.latency.check_all(self.state)
        running_end = lg.running_now_s(horizon)
        if self.t_prev is not None:
            self.alloc_area += self.allocated_milli * (horizon - self.t_prev)
        span = horizon - self.t_first
        inv_cap = self.inv_cap
        time_avg = self.alloc_area * inv_cap / span if span > 0 else self.allocated_milli * inv_cap
        return ReplayResult(
            policy=self.sched.name,
            workload=self.workload,
            ledger=lg,
            state=self.state,
            horizon_s=float(horizon),
            running_end_s=running_end,
            curve_arrived_frac=self.curve_x[:k],
            curve_allocated_frac=self.curve_y[:k],
            latency=self.latency,
            stats=dict(self.stats, evaluations=int(getattr(self.sched, "evaluations", 0))),
            gpu_allocation_time_avg=float(time_avg),
        )


def replay(
    workload: Workload,
    scheduler: Scheduler,
    rng: np.random.Generator,
    *,
    lookup: ServiceLookup,
    device_memory: DeviceMemoryLookup,
    config: ReplayConfig | None = None,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``workload`` through ``scheduler`` (see the module docstring).

    Parameters
    ----------
    workload : Workload
        Nodes and pods with arrival times and durations.
    scheduler : Scheduler
        E.g. ``build_scheduler("fgd")``. Holds state (learners): use a fresh one per replay.
    rng : numpy.random.Generator
        Source of the request-level latency simulations.
    lookup, device_memory : callables
        Profile lookups for ``ClusterState`` (``qosched.policies.profile_lookup.lookup_from_profiles``).
    config : ReplayConfig, optional
    classes : ClassConfig
        Service classes (targets, ranks) of the pods' ``qos_class``.
    progress : callable, optional
        ``progress(arrived, total)``, every ``config.progress_every`` arrivals and at the end.

    Returns
    -------
    ReplayResult
    """
    run = _Replay(workload, scheduler, rng, config or ReplayConfig(), lookup, device_memory, classes)
    return run.run(progress)
