"""Numbers for the ``preempt`` verb: pod ages and restarts, fit verdicts on a borrowed state.

The decision itself is pure (:func:`qosched.policies.preemption.live.trim_proposal`); this
module gathers its inputs from the extender's cache:

- per proposed victim, its class (rank, target) and a :class:`LivePod` of timestamps:
  ``metadata.creationTimestamp``; start = ``status.startTime``, else the ``PodScheduled=True``
  condition's ``lastTransitionTime`` (when it was bound); the sum of its containers'
  ``restartCount``;
- ``fits(node, uids)``: resource arithmetic first (:class:`~qosched.policies.preemption.room.NodeRoom`,
  cheap and necessary), then the placement policy on the state with those victims removed
  (:func:`~qosched.policies.preemption.search.fits_with_policy`, which puts them back).

The rule is the policy's own when it has one (``priority``, ``qos-driven``, a preemptive
``qosched``), else the QoS-driven rule. Call :func:`decide_preemption` with the cache lock held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig, UnknownClassError
from qosched.policies.placement.base import PlacementPolicy
from qosched.policies.preemption.live import LiveConfig, LivePod, LiveVerdict, trim_proposal
from qosched.policies.preemption.priority import PriorityRule
from qosched.policies.preemption.qos_driven import QosDrivenRule
from qosched.policies.preemption.room import NodeRoom, VictimResources
from qosched.policies.preemption.search import fits_many_with_policy
from qosched.policies.preemption.victims import VictimRule
from qosched.policies.state import ClusterState
from qosched.policies.types import Allocation, PodDemand

__all__ = ["decide_preemption", "epoch_s", "live_pod", "victim_rule"]


def epoch_s(value: Any) -> float | None:
    """An API timestamp (RFC 3339, ``2026-11-23T04:43:18Z``, fractions allowed) → epoch s; None if absent/bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def started_s(obj: Mapping[str, Any]) -> float | None:
    """When the pod started: ``status.startTime``, else when it was bound (``PodScheduled``)."""
    status = _mapping(obj, "status")
    started = epoch_s(status.get("startTime"))
    if started is not None:
        return started
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            return epoch_s(cond.get("lastTransitionTime"))
    return None


def restarts(obj: Mapping[str, Any]) -> int:
    """Sum of the containers' ``restartCount`` (bad values count 0)."""
    total = 0
    for cs in _mapping(obj, "status").get("containerStatuses") or ():
        if isinstance(cs, Mapping):
            try:
                total += max(0, int(cs.get("restartCount") or 0))
            except (TypeError, ValueError):
                continue
    return total


#: Parsed victims by (uid, resourceVersion, class, class config): a running pod's object rarely
#: changes, and parsing its timestamps is most of the gathering cost. Bounded; cleared when full.
_PARSED: dict[tuple[str, str, str, int], LivePod] = {}
_PARSED_MAX = 65_536


def live_pod(
    obj: Mapping[str, Any], class_name: str, classes: ClassConfig, *, pending: bool = False
) -> LivePod:
    """The numbers ``trim_proposal`` needs of one pod object (an unknown class: the default class).

    Objects with a ``resourceVersion`` are parsed once per version (cached).
    """
    meta = _mapping(obj, "metadata")
    version = meta.get("resourceVersion")
    key = (
        (str(meta.get("uid") or ""), str(version), class_name, hash(classes))
        if version and not pending
        else None
    )
    if key is not None:
        hit = _PARSED.get(key)
        if hit is not None:
            return hit
    parsed = _parse_live_pod(obj, class_name, classes, pending=pending)
    if key is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def _parse_live_pod(
    obj: Mapping[str, Any], class_name: str, classes: ClassConfig, *, pending: bool
) -> LivePod:
    try:
        cls = classes.get(class_name)
    except UnknownClassError:
        cls = classes.get(classes.default_class)
    meta = _mapping(obj, "metadata")
    return LivePod(
        uid=str(meta.get("uid") or ""),
        rank=cls.rank,
        target=cls.qos_target,
        created_s=epoch_s(meta.get("creationTimestamp")),
        started_s=None if pending else started_s(obj),
        restarts=0 if pending else restarts(obj),
    )


def victim_rule(policy: PlacementPolicy) -> tuple[VictimRule, ClassConfig]:
    """The policy's own rule and classes (``priority``, ``qos-driven``), else the QoS-driven rule."""
    rule = getattr(policy, "rule", None)
    classes = getattr(policy, "classes", None)
    if not isinstance(classes, ClassConfig):
        classes = DEFAULT_CLASS_CONFIG
    if not isinstance(rule, PriorityRule | QosDrivenRule):
        rule = QosDrivenRule()
    return rule, classes


class PolicyFit:
    """The :class:`~qosched.policies.preemption.live.FitOracle` of ``trim_proposal`` (module docstring)."""

    def __init__(
        self,
        state: ClusterState,
        policy: PlacementPolicy,
        demand: PodDemand,
        allocs: Mapping[str, Allocation],
    ) -> None:
        self.state, self.placement, self.demand, self.allocs = state, policy, demand, allocs
        self._rooms: dict[str, tuple[NodeRoom, dict[str, int]]] = {}
        self._on_node: dict[str, list[str]] = {}
        for uid, alloc in allocs.items():
            self._on_node.setdefault(alloc.node, []).append(uid)
        self.policy_checks = 0

    def _room(self, node: str) -> tuple[NodeRoom, dict[str, int]]:
        room = self._rooms.get(node)
        if room is None:
            mine = self._on_node.get(node, [])
            pods = [self.allocs[u].pod for u in mine]
            res = VictimResources(
                row=np.full(len(mine), self.state.node_index[node], dtype=np.int64),
                cpu_milli=np.array([p.cpu_milli for p in pods], dtype=np.int64),
                memory_mib=np.array([p.memory_mib for p in pods], dtype=np.float64),
                milli=np.array([p.milli_per_device if p.gpu_milli > 0 else 0 for p in pods], dtype=np.int64),
                devices=[self.allocs[u].devices for u in mine],
            )
            room = (
                NodeRoom(self.state, self.state.node_index[node], self.demand, res),
                {u: i for i, u in enumerate(mine)},
            )
            self._rooms[node] = room
        return room

    def resources(self, node: str, uids: list[str]) -> bool:
        """Resource arithmetic on the node once ``uids`` are gone (necessary)."""
        room, pos = self._room(node)
        return room.fits([pos[u] for u in uids if u in pos])

    def policy(self, choices: Mapping[str, list[str]]) -> dict[str, bool]:
        """The placement policy's verdict on every node of ``choices`` in one evaluation."""
        self.policy_checks += 1
        index = self.state.node_index
        by_row = {index[node]: uids for node, uids in choices.items()}
        verdict = fits_many_with_policy(self.state, self.placement, self.demand, by_row)
        return {node: verdict[index[node]] for node in choices}


def decide_preemption(
    state: ClusterState,
    pod_object: Callable[[str], Mapping[str, Any] | None],
    policy: PlacementPolicy,
    pod: Mapping[str, Any],
    demand: PodDemand,
    victims: Mapping[str, Sequence[str]],
    now_s: float,
    config: LiveConfig,
) -> LiveVerdict:
    """Gather the numbers and decide (the caller holds the cache lock over ``state``).

    Parameters
    ----------
    state : ClusterState
        The cache's state (borrowed for fit checks, restored).
    pod_object : callable
        Uid → cached pod object (``ClusterCache.pod_locked``).
    policy : PlacementPolicy
        The extender's placement policy (judges fits; may carry the victim rule).
    pod, demand : the preemptor's object and parsed demand.
    victims : mapping
        kube-scheduler's proposal, node → victim uids.
    now_s : float
        Wall clock [epoch s].
    config : LiveConfig
    """
    rule, classes = victim_rule(policy)
    proposal = {node: list(uids) for node, uids in victims.items() if node in state.node_index}
    pods: dict[str, LivePod] = {}
    allocs: dict[str, Allocation] = {}
    for node, uids in proposal.items():
        for uid in uids:
            alloc = state.allocation(uid)
            obj = pod_object(uid)
            if alloc is None or obj is None or alloc.node != node:
                continue
            allocs[uid] = alloc
            pods[uid] = live_pod(obj, alloc.pod.qos_class, classes)
    verdict = trim_proposal(
        live_pod(pod, demand.qos_class, classes, pending=True),
        proposal,
        pods,
        PolicyFit(state, policy, demand, allocs),
        rule,
        now_s,
        config,
    )
    unknown = {n: "node is not in the extender's cache" for n in victims if n not in state.node_index}
    return LiveVerdict(kept=verdict.kept, dropped={**verdict.dropped, **unknown})
