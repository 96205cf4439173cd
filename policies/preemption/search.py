r"""Where to preempt in the whole cluster, and whom: the replay's side of victim choice.

Given a pod that fits nowhere, a :class:`~.victims.VictimRule` and the facts of every running
pod, :func:`search_victims` picks one node and an irredundant set of victims on it:

1. **Eligible victims**: ``rule.eligible`` (``priority``: lower classes; ``qos-driven``: pods
   with slack). No eligible victim, or ``rule.may_preempt`` false → no preemption.
2. **Candidate nodes**: nodes that pass the pod's static constraints (accelerator type, GPU
   model, device count — every rejection that eviction can resolve is allowed,
   :attr:`Reason.resolvable_by_preemption`) and where the pod passes the resource test once
   *all* their eligible victims are gone (:func:`~.room.fits_if_all_gone`, vectorised).
3. **Per node**, the rule's order and :func:`~.victims.minimal_subset` on the resource test
   (:class:`~.room.NodeRoom`). At most ``max_nodes`` nodes are examined, those whose lowest
   eligible victim class is the lowest (then with the most room once they are gone) first.
4. **Node choice**: the smallest ``rule.cost(victims)`` (both rules: highest class evicted as
   low as possible, then fewest victims, then the rule's own key), then worst fit (most free
   milli-GPU after the eviction), then the lowest row.
5. **Confirmation** by the placement policy itself on the chosen node with its victims
   removed (interference-aware policies may reject for latency or device memory); a node the
   policy rejects is searched again with the policy in the loop, then the next node is tried
   (``confirm_tries`` nodes at most).

The state is borrowed for the confirmation (victims removed, the pod evaluated on one row, the
victims put back in a ``finally``); it is returned unchanged in content.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qosched.policies.placement.base import PlacementPolicy, Reason
from qosched.policies.placement.constraints import gather
from qosched.policies.preemption.room import NodeRoom, VictimResources, fits_if_all_gone
from qosched.policies.preemption.victims import Preemptor, VictimFacts, VictimRule, minimal_subset
from qosched.policies.state import ClusterState
from qosched.policies.types import Allocation, PodDemand

__all__ = ["SearchConfig", "VictimChoice", "fits_many_with_policy", "fits_with_policy", "search_victims"]

_RESOLVABLE = np.array([Reason(c).resolvable_by_preemption for c in range(max(Reason) + 1)], dtype=bool)


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Bounds of the cluster-wide victim search.

    Attributes
    ----------
    max_nodes : int
        Candidate nodes examined exactly per decision (default 64). The pre-ranking puts the
        nodes with the lowest-class victims and the most room first, so the best node is among
        them unless more than 64 nodes tie on the lowest class; raising it costs ~20 µs a node.
    confirm_tries : int
        Nodes the placement policy is asked to confirm before giving up (default 4): blind
        policies agree with the resource test, so the first confirmation succeeds for them.
    """

    max_nodes: int = 64
    confirm_tries: int = 4

    def __post_init__(self) -> None:
        if self.max_nodes < 1 or self.confirm_tries < 1:
            raise ValueError(
                f"SearchConfig: max_nodes and confirm_tries must be >= 1 (got {self.max_nodes}, {self.confirm_tries})"
            )


@dataclass(frozen=True, slots=True)
class VictimChoice:
    """The node and the victims chosen (uids, preferred first) and the cost that won."""

    row: int
    uids: tuple[str, ...]
    cost: tuple[float, ...]


def fits_with_policy(
    state: ClusterState, policy: PlacementPolicy, pod: PodDemand, row: int, uids: Sequence[str]
) -> bool:
    """True when ``policy`` accepts ``pod`` on ``row`` once ``uids`` are gone (state restored after)."""
    return fits_many_with_policy(state, policy, pod, {row: uids})[row]


def fits_many_with_policy(
    state: ClusterState, policy: PlacementPolicy, pod: PodDemand, choices: Mapping[int, Sequence[str]]
) -> dict[int, bool]:
    """Per row: ``policy`` accepts ``pod`` there once that row's victims are gone.

    All victims are removed at once and the rows judged in one vectorised ``evaluate`` (a pod's
    fit on one node does not depend on the pods of another), then every victim is put back,
    also on error. Victims that are not placed on their row are ignored.
    """
    removed: list[Allocation] = []
    rows = np.fromiter(choices, dtype=np.int64, count=len(choices))
    if rows.size == 0:
        return {}
    try:
        for row, uids in choices.items():
            for uid in uids:
                alloc = state.allocation(uid)
                if alloc is None or state.node_index.get(alloc.node) != row:
                    continue
                state.remove(uid)
                removed.append(alloc)
        evaluation = policy.evaluate(state, pod, rows)
        ok = evaluation.feasible & np.isfinite(evaluation.raw_score)
        return {int(r): bool(v) for r, v in zip(evaluation.node_idx.tolist(), ok.tolist(), strict=True)}
    finally:
        for alloc in removed:
            state.add(alloc, strict=False)


def _policy_check(
    state: ClusterState, policy: PlacementPolicy, pod: PodDemand, row: int, uids: list[str]
) -> Callable[[list[int]], bool]:
    """:func:`fits_with_policy` of victims given as positions into ``uids``."""

    def check(subset: list[int]) -> bool:
        return fits_with_policy(state, policy, pod, row, [uids[i] for i in subset])

    return check


def _static_ok(state: ClusterState, pod: PodDemand) -> np.ndarray:
    cand = gather(state, pod, np.arange(state.n_nodes, dtype=np.int64))
    return _RESOLVABLE[cand.reason.astype(np.int64)]


def search_victims(
    state: ClusterState,
    pod: PodDemand,
    policy: PlacementPolicy,
    rule: VictimRule,
    preemptor: Preemptor,
    uids: Sequence[str],
    facts: VictimFacts,
    resources: VictimResources,
    config: SearchConfig | None = None,
) -> VictimChoice | None:
    """One node and its victims for ``pod`` (see the module docstring); None when none works.

    Parameters
    ----------
    state : ClusterState
        The cluster now (borrowed, see the module docstring).
    pod : PodDemand
        The pending pod.
    policy : PlacementPolicy
        Confirms the final choice (the policy that will place the pod).
    rule : VictimRule
    preemptor : Preemptor
    uids, facts, resources :
        Every running pod that could be a victim: its uid, the rule's facts, what it frees.
    config : SearchConfig, optional
    """
    cfg = config or SearchConfig()
    if not rule.may_preempt(preemptor) or len(facts) == 0:
        return None
    eligible = np.flatnonzero(rule.eligible(preemptor, facts))
    if eligible.size == 0:
        return None
    res = VictimResources(
        row=resources.row[eligible],
        cpu_milli=resources.cpu_milli[eligible],
        memory_mib=resources.memory_mib[eligible],
        milli=resources.milli[eligible],
        devices=[resources.devices[i] for i in eligible.tolist()],
    )
    n = state.n_nodes
    has_victim = np.bincount(res.row, minlength=n) > 0
    candidate = has_victim & fits_if_all_gone(state, pod, res)
    if not candidate.any():
        return None
    candidate &= _static_ok(state, pod)
    rows = np.flatnonzero(candidate)
    if rows.size == 0:
        return None
    efacts = facts.take(eligible)
    # Pre-rank: lowest eligible class offered (max rank) first, then the most room once gone.
    lowest = np.full(n, -1, dtype=np.int64)
    np.maximum.at(lowest, res.row, efacts.rank.astype(np.int64))
    room = state.free_gpu_milli().sum(axis=1) + np.bincount(
        res.row, weights=res.milli * np.fromiter((len(d) for d in res.devices), dtype=np.int64), minlength=n
    )
    pre = np.lexsort((rows, -room[rows], -lowest[rows]))
    rows = rows[pre[: cfg.max_nodes]]
    order_by_row = np.argsort(res.row, kind="stable")
    sorted_rows = res.row[order_by_row]
    options: list[tuple[tuple[float, ...], int, list[int]]] = []
    for row in rows.tolist():
        lo, hi = np.searchsorted(sorted_rows, [row, row + 1])
        local = order_by_row[lo:hi]  # positions into res/efacts
        node_res = VictimResources(
            row=res.row[local],
            cpu_milli=res.cpu_milli[local],
            memory_mib=res.memory_mib[local],
            milli=res.milli[local],
            devices=[res.devices[i] for i in local.tolist()],
        )
        node_facts = efacts.take(local)
        room_test = NodeRoom(state, row, pod, node_res)
        chosen = minimal_subset(rule.order(node_facts).tolist(), room_test.fits)
        if chosen is None or not chosen:
            continue
        cost = (
            *rule.cost(node_facts.take(np.array(chosen))),
            -float(room_test.free_gpu_after(chosen)),
            float(row),
        )
        options.append((cost, row, [int(local[i]) for i in chosen]))
    options.sort(key=lambda o: o[0])
    eligible_uids = [uids[i] for i in eligible.tolist()]
    for cost, row, chosen in options[: cfg.confirm_tries]:
        names = [eligible_uids[i] for i in chosen]
        if fits_with_policy(state, policy, pod, row, names):
            return VictimChoice(row=row, uids=tuple(names), cost=cost)
        # The policy wants more room than the resources show (interference): search again with it.
        lo, hi = np.searchsorted(sorted_rows, [row, row + 1])
        local = order_by_row[lo:hi]
        node_facts = efacts.take(local)
        local_uids = [eligible_uids[int(i)] for i in local.tolist()]
        again = minimal_subset(
            rule.order(node_facts).tolist(),
            _policy_check(state, policy, pod, row, local_uids),
        )
        if again:
            names = [local_uids[i] for i in again]
            cost2 = (*rule.cost(node_facts.take(np.array(again))), math.nan, float(row))
            return VictimChoice(row=row, uids=tuple(names), cost=cost2)
    return None
