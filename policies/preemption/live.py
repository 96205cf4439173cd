r"""The extender's ``preempt`` decision: narrow kube-scheduler's proposal with a victim rule.

kube-scheduler proposes, per node, victims it has already checked against priorities and
PodDisruptionBudgets; the extender may only *remove* nodes or victims (``ProcessPreemption``).
:func:`trim_proposal` keeps a node when the pod fits there (in qosched's view: GPU devices,
interference) once a subset of the proposed victims that the rule allows is gone, and answers
the minimal such subset in the rule's order (:func:`~.victims.minimal_subset`); a node where
no allowed subset suffices is dropped.

QoS of running pods, live (:func:`live_qos`). Availability needs a pod's history, which the API
server does not keep. What is known, per pod: ``metadata.creationTimestamp`` (submission),
``status.startTime`` (the kubelet started it; else the ``PodScheduled`` condition's transition
time, i.e. when it was bound) and the containers' ``restartCount``. The estimate is

.. math::

    t = t_{now} - t_{created}, \qquad
    r = \operatorname{clip}\bigl(t_{now} - t_{started} - n_{restarts}\,\delta_{restart},\ 0,\ t\bigr)

with :math:`\delta_{restart}` the downtime assumed per container restart
(``LiveConfig.restart_penalty_s``). It is exact for a pod that has run without restarts since
it was bound, and biased *low* otherwise (restart back-off can be longer), which only makes
fewer pods eligible as victims. A pod whose start is unknown has no slack. A pod recreated by
its controller after an eviction is a new pod with a fresh creation time: its history is lost
(qosched does not persist QoS across pod incarnations).

The predicted pause of a live victim is a constant, ``LiveConfig.pause_s``: the time for its
controller to recreate it, for the scheduler to place it again and for it to start.

The numbers are gathered by the I/O shell (``qosched.extender.server.runtime``); everything here is
pure (``now_s`` is passed in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from qosched.policies.fairness.qos import has_slack
from qosched.policies.preemption.victims import Preemptor, VictimFacts, VictimRule, minimal_subset

__all__ = [
    "CallableFit",
    "FitOracle",
    "LiveConfig",
    "LivePod",
    "LiveVerdict",
    "live_qos",
    "preemptor_of",
    "trim_proposal",
]


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Knobs of the extender's preemption decision.

    Attributes
    ----------
    pause_s : float
        Predicted pause of an evicted pod [s] (default 120 s: controller recreation, a
        scheduling cycle, image already on a node, container start).
    restart_penalty_s : float
        Downtime counted per container restart [s] (default 30 s, between kubelet's 10 s first
        back-off and its doubling afterwards).
    trim_victims : bool
        True (default): answer the minimal allowed subset on each node. False: all or nothing —
        keep a node with kube-scheduler's whole proposal only if every proposed victim is
        allowed, drop it otherwise (kube-scheduler's proposal is already minimal in its own
        view, see ``docs/qos-driven.md``).
    max_nodes : int or None
        Keep only this many nodes, the lowest rule cost first (steers kube-scheduler to the
        victims the rule prefers); None (default): every node that works, kube-scheduler picks.
    """

    pause_s: float = 120.0
    restart_penalty_s: float = 30.0
    trim_victims: bool = True
    max_nodes: int | None = None

    def __post_init__(self) -> None:
        for name in ("pause_s", "restart_penalty_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"LiveConfig.{name} must be finite and >= 0 (got {value!r})")
        if self.max_nodes is not None and self.max_nodes < 1:
            raise ValueError(f"LiveConfig.max_nodes must be >= 1 or None (got {self.max_nodes!r})")


@dataclass(frozen=True, slots=True)
class LivePod:
    """The numbers known of one pod (gathered by the runtime from the cached object).

    uid; rank and target of its class; created_s, started_s: epoch seconds (None: unknown;
    a pending pod has no start); restarts: sum of its containers' restart counts.
    """

    uid: str
    rank: int
    target: float
    created_s: float | None
    started_s: float | None = None
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class LiveVerdict:
    """The answer: ``kept`` node → victim uids (a subset of the proposal, in its order), and why
    each other node was ``dropped``."""

    kept: dict[str, list[str]]
    dropped: dict[str, str] = field(default_factory=dict)


def live_qos(
    created_s: float | None,
    started_s: float | None,
    restarts: int,
    now_s: float,
    restart_penalty_s: float,
) -> tuple[float, float] | None:
    """(running r, elapsed t) [s] estimated from timestamps (module docstring); None if unknown.

    A pod with a creation time and no start time has run 0 s (pending). Clock skew (a start
    before the creation, a creation after ``now_s``) is clamped, never an error.

    Examples
    --------
    >>> live_qos(1000.0, 1010.0, 1, 1100.0, 30.0)  # t = 100, r = 90 - 30
    (60.0, 100.0)
    >>> live_qos(None, None, 0, 5.0, 30.0) is None
    True
    """
    if created_s is None or not math.isfinite(created_s):
        return None
    elapsed = max(0.0, now_s - created_s)
    if started_s is None:
        return 0.0, elapsed
    if not math.isfinite(started_s):
        return None
    running = now_s - max(started_s, created_s) - max(0, restarts) * restart_penalty_s
    return min(max(running, 0.0), elapsed), elapsed


def _facts(victims: Sequence[LivePod], now_s: float, config: LiveConfig) -> VictimFacts:
    """Facts of the victims (vectorised :func:`live_qos` + ``has_slack``); a victim whose
    creation or start is unknown has no slack and the lowest surplus."""
    k = len(victims)
    rank = np.fromiter((v.rank for v in victims), dtype=np.int64, count=k)
    target = np.fromiter((v.target for v in victims), dtype=np.float64, count=k)
    created = np.fromiter((math.nan if v.created_s is None else v.created_s for v in victims), np.float64, k)
    started = np.fromiter((math.nan if v.started_s is None else v.started_s for v in victims), np.float64, k)
    restarts = np.fromiter((max(0, v.restarts) for v in victims), dtype=np.float64, count=k)
    known = np.isfinite(created) & np.isfinite(started)
    surplus = np.full(k, -np.inf)
    slack = np.zeros(k, dtype=bool)
    start = np.where(known, started, -np.inf)
    if known.any():
        c, b, n = created[known], started[known], restarts[known]
        elapsed = np.maximum(0.0, now_s - c)
        running = np.clip(now_s - np.maximum(b, c) - n * config.restart_penalty_s, 0.0, elapsed)
        qos = np.ones_like(elapsed)
        np.divide(running, elapsed, out=qos, where=elapsed > 0)
        surplus[known] = qos - target[known]
        slack[known] = has_slack(running, elapsed, config.pause_s, target[known])
    return VictimFacts(rank=rank, surplus=surplus, slack=slack, start_s=start)


class FitOracle(Protocol):
    """How ``trim_proposal`` asks whether the pod fits once some victims are gone.

    ``resources(node, uids)``: a cheap *necessary* test (resource arithmetic). ``policy(choices)``:
    the placement policy's verdict for several nodes at once, ``{node: victims}`` →
    ``{node: fits}`` (one vectorised evaluation: victims on different nodes do not interact).
    Both must be monotone (evicting more never hurts).
    """

    def resources(self, node: str, uids: list[str]) -> bool: ...

    def policy(self, choices: Mapping[str, list[str]]) -> dict[str, bool]: ...


class CallableFit:
    """A :class:`FitOracle` from one ``fits(node, uids) -> bool`` (tests, simple callers)."""

    def __init__(self, fits: Callable[[str, list[str]], bool]) -> None:
        self._fits = fits

    def resources(self, node: str, uids: list[str]) -> bool:
        return self._fits(node, uids)

    def policy(self, choices: Mapping[str, list[str]]) -> dict[str, bool]:
        return {node: self._fits(node, uids) for node, uids in choices.items()}


def _on_node(
    oracle: FitOracle, node: str, uids: list[str], *, with_policy: bool
) -> Callable[[list[int]], bool]:
    """The oracle's test of victims given as positions into ``uids`` on ``node``."""

    def check(subset: list[int]) -> bool:
        chosen = [uids[i] for i in subset]
        if not oracle.resources(node, chosen):
            return False
        return not with_policy or oracle.policy({node: chosen})[node]

    return check


def preemptor_of(pod: LivePod, now_s: float, config: LiveConfig) -> Preemptor:
    """The pending pod as a :class:`~.victims.Preemptor` (``needs``: no slack for ``pause_s``)."""
    est = live_qos(pod.created_s, pod.started_s, pod.restarts, now_s, config.restart_penalty_s)
    if est is None:
        return Preemptor(rank=pod.rank, needs=True)
    running, elapsed = est
    return Preemptor(rank=pod.rank, needs=not bool(has_slack(running, elapsed, config.pause_s, pod.target)))


#: A node's candidate set: (uids as proposed, their facts, the allowed ones in the rule's order,
#: the chosen ones as positions in ``uids``).
_Found = tuple[list[str], VictimFacts, list[int], list[int]]


def _resource_set(
    node: str,
    uids: list[str],
    facts: VictimFacts,
    who: Preemptor,
    rule: VictimRule,
    oracle: FitOracle,
    cfg: LiveConfig,
) -> _Found | str:
    """Step 1 on one node: the victims it needs on the cheap resource test, or why it is dropped.

    With ``trim_victims`` the allowed victims in the rule's order go through
    :func:`~.victims.minimal_subset`; without, the proposal is kept whole if every victim is
    allowed and the pod fits with them all gone.
    """
    allowed = np.asarray(rule.eligible(who, facts), dtype=bool)
    pos = np.flatnonzero(allowed)
    order = pos[rule.order(facts.take(pos))].tolist()
    if not cfg.trim_victims:
        if not allowed.all():
            bad = uids[int(np.flatnonzero(~allowed)[0])]
            return f"victim {bad} may not be evicted ({rule.name})"
        if not oracle.resources(node, uids):
            return "the pod does not fit even with every proposed victim gone"
        return (uids, facts, order, list(range(len(uids))))
    chosen = minimal_subset(order, _on_node(oracle, node, uids, with_policy=False))
    if chosen is None:
        return (
            "the pod does not fit with the victims the rule allows gone"
            if pos.size
            else f"no proposed victim may be evicted ({rule.name})"
        )
    return (uids, facts, order, chosen)


def _confirmed(
    found: Mapping[str, _Found], oracle: FitOracle, rule: VictimRule, cfg: LiveConfig, dropped: dict[str, str]
) -> list[tuple[tuple[float, ...], str, list[str]]]:
    """Step 2: the policy confirms every node's set in one batched call; a rejected node is
    searched again with the policy in the loop (or dropped, without ``trim_victims``). Returns
    (cost, node, victims in the proposal's order) per kept node; records the others in
    ``dropped``."""
    verdicts = oracle.policy({node: [f[0][i] for i in f[3]] for node, f in found.items()}) if found else {}
    options: list[tuple[tuple[float, ...], str, list[str]]] = []
    for node, (uids, facts, order, chosen) in found.items():
        final: list[int] | None = chosen
        if not verdicts.get(node, False) and cfg.trim_victims:
            final = minimal_subset(order, _on_node(oracle, node, uids, with_policy=True))
        elif not verdicts.get(node, False):
            final = None
        if final is None:
            dropped[node] = "the placement policy rejects the pod there with the allowed victims gone"
            continue
        ordered = sorted(final)  # the proposal's order
        cost = rule.cost(facts.take(np.array(ordered))) if ordered else (-math.inf,)
        options.append((cost, node, [uids[i] for i in ordered]))
    return options


def trim_proposal(
    preemptor: LivePod,
    proposal: Mapping[str, Sequence[str]],
    pods: Mapping[str, LivePod],
    fits: FitOracle | Callable[[str, list[str]], bool],
    rule: VictimRule,
    now_s: float,
    config: LiveConfig | None = None,
) -> LiveVerdict:
    """Narrow kube-scheduler's proposal (see the module docstring).

    Per node, the allowed victims (``rule.eligible``) in the rule's order go through
    :func:`~.victims.minimal_subset` on the cheap resource test; the sets found on all nodes are
    then confirmed by the placement policy in one batched call, and a node the policy rejects is
    searched again with the policy in the loop (interference may need more room than the
    resources show).

    Parameters
    ----------
    preemptor : LivePod
        The pending pod.
    proposal : mapping
        Node name → victim uids proposed by kube-scheduler.
    pods : mapping
        Uid → :class:`LivePod` of the victims the extender knows (a proposed victim missing
        here is unknown to its cache: its node is dropped this round).
    fits : FitOracle or callable
        The fit test (a plain ``fits(node, uids) -> bool`` is wrapped in :class:`CallableFit`).
    rule : VictimRule
        ``QosDrivenRule`` (slack) or ``PriorityRule`` (lower classes).
    now_s : float
        Current time, epoch seconds.
    config : LiveConfig, optional

    Returns
    -------
    LiveVerdict
    """
    cfg = config or LiveConfig()
    oracle: FitOracle = CallableFit(fits) if not hasattr(fits, "policy") and callable(fits) else fits  # type: ignore[assignment]
    who = preemptor_of(preemptor, now_s, cfg)
    if not rule.may_preempt(who):
        return LiveVerdict(kept={}, dropped=dict.fromkeys(proposal, "the pod can wait: it has slack itself"))
    dropped: dict[str, str] = {}
    found: dict[str, _Found] = {}
    # Facts of every known victim in one vectorised pass, then a slice per node.
    known = list(dict.fromkeys(u for raw in proposal.values() for u in raw if u in pods))
    at = {u: i for i, u in enumerate(known)}
    all_facts = _facts([pods[u] for u in known], now_s, cfg)
    for node, raw in proposal.items():
        uids = list(raw)
        missing = [u for u in uids if u not in pods]
        if missing:
            dropped[node] = f"victim {missing[0]} is not in the extender's cache yet"
            continue
        facts = all_facts.take(np.fromiter((at[u] for u in uids), dtype=np.int64, count=len(uids)))
        outcome = _resource_set(node, uids, facts, who, rule, oracle, cfg)
        if isinstance(outcome, str):
            dropped[node] = outcome
        else:
            found[node] = outcome
    options = _confirmed(found, oracle, rule, cfg, dropped)
    options.sort(key=lambda o: (o[0], o[1]))
    keep = options if cfg.max_nodes is None else options[: cfg.max_nodes]
    for _, node, _v in options[len(keep) :]:
        dropped[node] = "a node with a better victim set was kept"
    return LiveVerdict(kept={node: victims for _, node, victims in keep}, dropped=dropped)
