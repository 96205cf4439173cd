r"""A placement policy with a pending-queue order and a victim rule: the replay's ``Scheduler`` hooks.

:class:`PreemptivePolicy` is what ``priority``, ``qos-driven`` and the preemptive ``qosched``
share. It *is* a placement policy (``evaluate`` is its host choice's, so the extender and
:func:`~qosched.policies.placement.base.make_policy` take it like any other), and it adds the
three attributes the what-if replay (:mod:`qosched.policies.simulator.replay`) looks for:

- ``order(pending, ledger, now_s)``   — the retry order of the pending queue;
- ``preempt(state, pod, ledger, now_s)`` — victims (uids) for a pod that fits nowhere;
- ``retry_interval_s``                — how often the whole queue is retried (QoS, and so the
  order and the victims' slack, change with time even when no pod leaves).

What it reads from the replay's :class:`~qosched.policies.simulator.replay.PodLedger` at
``now_s`` (never a clock), per pod *i*:

- running time :math:`r_i` (``running_now_s``) and time since submission :math:`t_i`;
- delivered QoS = availability :math:`A_i = r_i / t_i` (SLO attainment is not known during
  the replay: it is measured by latency checkpoints at the end, so decisions use availability,
  the paper's QoS) and surplus :math:`A_i - T_c`;
- the predicted pause :math:`\hat d_c` of its class (:func:`~.queue.expected_wait_s`:
  mean waiting episode of the class so far × ``pause.safety``, at least ``pause.floor_s``);
- slack: ``has_slack(r, t, d̂, T)`` — still at target after the pause;
- "needs": the preemptor itself has no slack for :math:`\hat d` (it cannot afford to wait).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.fairness.qos import has_slack
from qosched.policies.placement.base import Evaluation, PlacementPolicy
from qosched.policies.placement.baselines.kube import WorstFitPolicy
from qosched.policies.preemption.queue import expected_wait_s
from qosched.policies.preemption.room import VictimResources
from qosched.policies.preemption.search import SearchConfig, VictimPool, search_pool
from qosched.policies.preemption.victims import Preemptor, VictimFacts, VictimRule
from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand

__all__ = ["LedgerFacts", "PauseModel", "PreemptivePolicy", "SchedulerConfig", "ledger_facts"]

# Status codes of ``PodLedger.status`` (qosched.policies.simulator.replay); repeated here so that
# this package does not import the simulator (the simulator imports policies, not the reverse).
_NOT_ARRIVED, _PENDING, _RUNNING, _COMPLETED = 0, 1, 2, 3

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PauseModel:
    r"""How long an evicted pod is predicted to wait before it runs again (:math:`\hat d`).

    Attributes
    ----------
    floor_s : float
        :math:`d_{min}` [s]. Default 60 s, the default retry interval: an evicted pod cannot
        run again before the queue is next retried.
    safety : float
        :math:`\kappa`, multiplies the class's mean waiting episode. Default 2.0: waits are
        skewed (most short, a few long) and the mean so far undercounts ongoing waits; the
        slack check should hold for a wait well above the typical one.
    """

    floor_s: float = 60.0
    safety: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.floor_s) and self.floor_s >= 0):
            raise ValueError(f"PauseModel.floor_s must be finite and >= 0 (got {self.floor_s!r})")
        if not (math.isfinite(self.safety) and self.safety > 0):
            raise ValueError(f"PauseModel.safety must be finite and > 0 (got {self.safety!r})")


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Knobs of the preemptive policies (``priority``, ``qos-driven``, preemptive ``qosched``).

    Attributes
    ----------
    retry_interval_s : float or None
        Period of full retries of the pending queue in the replay [s] (default 60 s). None:
        pending pods are retried only when a node frees capacity.
    search : SearchConfig
        Bounds of the cluster-wide victim search.
    pause : PauseModel
        Predicted pause of an evicted pod (``qos-driven`` slack).
    require_need : bool
        ``qos-driven``: a pending pod may evict only when it has no slack itself for the
        predicted wait (default True). It keeps victims, once back in the queue with their
        slack intact, from evicting their evictor at once (ping-pong).
    victims_any_class : bool
        ``qos-driven``: victims with slack may be of any class (default True: a victim with
        slack meets its target whatever its class); False: the preemptor's class and lower.
    interference_aware : bool
        Worst-fit hosts behind the latency feasibility (default False: the paper's policies
        know nothing of interference; ``qosched`` brings its own placement).
    """

    retry_interval_s: float | None = 60.0
    search: SearchConfig = field(default_factory=SearchConfig)
    pause: PauseModel = field(default_factory=PauseModel)
    require_need: bool = True
    victims_any_class: bool = True
    interference_aware: bool = False

    def __post_init__(self) -> None:
        r = self.retry_interval_s
        if r is not None and not (math.isfinite(r) and r > 0):
            raise ValueError(f"SchedulerConfig.retry_interval_s must be > 0 or None (got {r!r})")


@dataclass(frozen=True, slots=True, eq=False)
class LedgerFacts:
    """Per-pod QoS facts of a ledger at ``now_s`` (arrays over all pods; see the module doc).

    Pods that have not arrived have NaN QoS/surplus and no slack.
    """

    now_s: float
    running_s: np.ndarray
    elapsed_s: np.ndarray
    qos: np.ndarray
    surplus: np.ndarray
    pause_s: np.ndarray
    slack: np.ndarray
    wait_by_rank_s: np.ndarray


def ledger_facts(ledger: Any, now_s: float, pause: PauseModel) -> LedgerFacts:
    """Compute :class:`LedgerFacts` from a ``PodLedger`` (duck-typed) at ``now_s``."""
    n = len(ledger)
    status = np.asarray(ledger.status)
    arrived = status != _NOT_ARRIVED
    run = ledger.running_now_s(now_s)
    elapsed = np.maximum(now_s - ledger.submit_s, 0.0)
    qos = np.where(arrived, ledger.availability(now_s), np.nan)
    target = np.asarray(ledger.target, dtype=np.float64)
    rank = np.asarray(ledger.rank, dtype=np.int64)
    done = status == _COMPLETED
    until = np.where(done, ledger.end_s, now_s)
    ran = np.where(done, ledger.running_s, run)
    waited = np.maximum(until - ledger.submit_s - ran, 0.0)
    episodes = 1.0 + ledger.preemptions
    n_classes = int(rank.max()) + 1 if n else 1
    wait = expected_wait_s(
        rank[arrived],
        waited[arrived],
        episodes[arrived],
        n_classes,
        floor_s=pause.floor_s,
        safety=pause.safety,
    )
    pause_s = wait[rank] if n else np.zeros(0)
    slack = np.zeros(n, dtype=bool)
    if arrived.any():
        r = np.minimum(run[arrived], elapsed[arrived])
        slack[arrived] = has_slack(r, elapsed[arrived], pause_s[arrived], target[arrived])
    return LedgerFacts(
        now_s=float(now_s),
        running_s=run,
        elapsed_s=elapsed,
        qos=qos,
        surplus=qos - target,
        pause_s=pause_s,
        slack=slack,
        wait_by_rank_s=wait,
    )


class _Take(Sequence[_T], Generic[_T]):
    """``seq[idx[i]]`` without copying ``seq`` (victim uids/devices are read for a few pods only)."""

    __slots__ = ("_idx", "_seq")

    def __init__(self, seq: Sequence[_T], idx: np.ndarray) -> None:
        self._seq, self._idx = seq, idx

    def __len__(self) -> int:
        return int(self._idx.shape[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._seq[int(j)] for j in self._idx[i]]
        return self._seq[int(self._idx[i])]


class _Static:
    """Per-ledger constant arrays (requests, uids), computed once per replay."""

    __slots__ = ("cpu_milli", "ledger", "memory_mib", "milli", "uids")

    def __init__(self, ledger: Any) -> None:
        pods: Sequence[PodDemand] = ledger.pods
        self.ledger = ledger
        self.cpu_milli = np.array([p.cpu_milli for p in pods], dtype=np.int64)
        self.memory_mib = np.array([p.memory_mib for p in pods], dtype=np.float64)
        self.milli = np.array([p.milli_per_device if p.gpu_milli > 0 else 0 for p in pods], dtype=np.int64)
        self.uids = [p.uid for p in pods]


class PreemptivePolicy:
    """A host choice + a queue order + a victim rule (see the module docstring).

    Subclasses set ``name`` and implement :meth:`queue_order`.

    Parameters
    ----------
    rule : VictimRule
        Who may be evicted, in which order.
    classes : ClassConfig
        Service classes (kept for callers; the replay's ledger carries each pod's rank/target).
    config : SchedulerConfig, optional
    placement : PlacementPolicy, optional
        Host choice; default worst fit. Give e.g. the ``qosched`` placement policy to make it
        preemptive with this queue and rule.
    name : str, optional
        Overrides the class's ``name`` (e.g. ``"qosched"`` around the qosched placement).
    """

    name: str = ""

    def __init__(
        self,
        *,
        rule: VictimRule,
        classes: ClassConfig = DEFAULT_CLASS_CONFIG,
        config: SchedulerConfig | None = None,
        placement: PlacementPolicy | None = None,
        name: str | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        self.rule = rule
        self.classes = classes
        self.config = config if config is not None else SchedulerConfig()
        self.placement: PlacementPolicy = (
            placement
            if placement is not None
            else WorstFitPolicy(interference_aware=self.config.interference_aware, name=self.name)
        )
        self.retry_interval_s: float | None = self.config.retry_interval_s
        self._static: _Static | None = None
        self._facts: tuple[Any, float, LedgerFacts] | None = None
        self._pools: (
            tuple[ClusterState, Any, tuple[int, float], dict[Preemptor, VictimPool | None]] | None
        ) = None
        self.decisions = 0  # preemption decisions asked for
        self.preemptions = 0  # decisions that named victims

    # ------------------------------------------------------------------ placement
    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        """The host choice's verdict (worst fit by default)."""
        return self.placement.evaluate(state, pod, candidates)

    def observe(self, pod: PodDemand) -> None:
        """Forwarded to the host choice when it learns from submitted pods (qosched's mix)."""
        own = getattr(self.placement, "observe", None)
        if callable(own):
            own(pod)

    # ------------------------------------------------------------------ queue
    def queue_order(
        self, rank: np.ndarray, qos: np.ndarray, submit_s: np.ndarray, tiebreak: np.ndarray
    ) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def order(self, pending: Sequence[int], ledger: Any, now_s: float) -> list[int]:
        """Pending pods (workload positions) in retry order."""
        p = np.asarray(pending, dtype=np.int64)
        if p.size <= 1:
            return p.tolist()
        qos = ledger.availability(now_s)[p]
        perm = self.queue_order(ledger.rank[p], qos, ledger.submit_s[p], p)
        return p[perm].tolist()

    # ------------------------------------------------------------------ preemption
    def facts(self, ledger: Any, now_s: float) -> LedgerFacts:
        """Ledger facts at ``now_s``, computed once per instant (they do not change within it:
        pods placed or evicted at ``now_s`` have the same running time up to ``now_s``)."""
        cached = self._facts
        if cached is not None and cached[0] is ledger and cached[1] == now_s:
            return cached[2]
        facts = ledger_facts(ledger, now_s, self.config.pause)
        self._facts = (ledger, now_s, facts)
        return facts

    def _static_of(self, ledger: Any) -> _Static:
        if self._static is None or self._static.ledger is not ledger:
            self._static = _Static(ledger)
        return self._static

    def preempt(self, state: ClusterState, pod: PodDemand, ledger: Any, now_s: float) -> tuple[str, ...]:
        """Uids of running pods to evict so that ``pod`` fits (empty: none); see :mod:`.search`.

        The eligible victims and what evicting them frees (:class:`~.search.VictimPool`) are
        built once per preemptor kind (class rank, need) while the cluster (``state.version``),
        the ledger and the instant stay the same: every pending pod of a retry round is then one
        vectorised test against them, and a plain pod whose requests already found nothing in
        that pool is not searched again. Same victims as a fresh search for each pod.
        """
        self.decisions += 1
        i = ledger.index.get(pod.uid)
        if i is None:
            return ()
        facts = self.facts(ledger, now_s)
        preemptor = Preemptor(rank=int(ledger.rank[i]), needs=not bool(facts.slack[i]))
        if not self.rule.may_preempt(preemptor):
            return ()
        pool = self._pool(state, ledger, now_s, preemptor, facts)
        if pool is None:
            return ()
        choice = search_pool(state, pod, self.placement, self.rule, pool, self.config.search)
        if choice is None:
            return ()
        self.preemptions += 1
        return choice.uids

    def _pool(
        self, state: ClusterState, ledger: Any, now_s: float, preemptor: Preemptor, facts: LedgerFacts
    ) -> VictimPool | None:
        """The :class:`~.search.VictimPool` of ``preemptor`` now (cached; None: nobody runs)."""
        key = (state.version, now_s, preemptor)
        cache = self._pools
        if cache is None or cache[0] is not state or cache[1] is not ledger or cache[2] != key[:2]:
            cache = self._pools = (state, ledger, key[:2], {})
        pools = cache[3]
        if preemptor in pools:
            return pools[preemptor]
        running = np.flatnonzero(ledger.status == _RUNNING)
        if running.size == 0:
            pools[preemptor] = None
            return None
        static = self._static_of(ledger)
        vfacts = VictimFacts(
            rank=np.asarray(ledger.rank[running], dtype=np.int64),
            surplus=facts.surplus[running],
            slack=facts.slack[running],
            start_s=np.asarray(ledger.run_start_s[running], dtype=np.float64),
        )
        devices = ledger.devices
        bits = getattr(devices, "bits", None)
        resources = VictimResources(
            row=np.asarray(ledger.node_row[running], dtype=np.int64),
            cpu_milli=static.cpu_milli[running],
            memory_mib=static.memory_mib[running],
            milli=static.milli[running],
            devices=_Take(devices, running),
            bits=None if bits is None or getattr(devices, "overflow", True) else bits[running],
        )
        pool = VictimPool(state, self.rule, preemptor, _Take(static.uids, running), vfacts, resources)
        pools[preemptor] = pool
        return pool

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, placement={self.placement!r})"
