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
   For a :class:`~.victims.KeyedVictimRule` (both built-in rules) all these nodes are worked
   at once (:class:`_Greedy`: the greedy prefix and the reprieve as array operations, the
   cost from per-victim keys), with the same arithmetic, so the same choice.
4. **Node choice**: the smallest ``rule.cost(victims)`` (both rules: highest class evicted as
   low as possible, then fewest victims, then the rule's own key), then worst fit (most free
   milli-GPU after the eviction), then the lowest row.
5. **Confirmation** by the placement policy itself on the chosen node with its victims
   removed (interference-aware policies may reject for latency or device memory); a node the
   policy rejects is searched again with the policy in the loop, then the next node is tried
   (``confirm_tries`` nodes at most).

The state is borrowed for the confirmation (victims removed, the pod evaluated on one row, the
victims put back in a ``finally``); it is returned unchanged in content.

Everything before step 3 that does not depend on the pending pod — eligible victims, what
evicting them all frees per node, the pre-rank keys, the victims grouped by node in the rule's
order — is a :class:`VictimPool`, which the replay builds once per (cluster version, instant,
preemptor kind) and reuses for every pending pod of a retry round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from qosched.policies.placement.base import PlacementPolicy, Reason
from qosched.policies.placement.constraints import gather
from qosched.policies.preemption.room import (
    _EXCLUSIVE,
    _MEM_EPS_MIB,
    FreedRoom,
    NodeRoom,
    VictimResources,
    pod_need,
)
from qosched.policies.preemption.victims import (
    KeyedVictimRule,
    Preemptor,
    VictimFacts,
    VictimRule,
    minimal_subset,
)
from qosched.policies.state import ClusterState
from qosched.policies.types import GPU_MILLI_PER_DEVICE, Allocation, PodDemand

__all__ = [
    "SearchConfig",
    "VictimChoice",
    "VictimPool",
    "fits_many_with_policy",
    "fits_with_policy",
    "request_key",
    "search_pool",
    "search_victims",
]

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


def _static_ok(state: ClusterState, pod: PodDemand, rows: np.ndarray) -> np.ndarray:
    """Per row of ``rows``: every hard constraint it fails could be resolved by evicting pods."""
    cand = gather(state, pod, rows)
    return _RESOLVABLE[cand.reason.astype(np.int64)]


class VictimPool:
    """The victims one preemptor may take, and what evicting them frees, ready for many pods.

    Everything :func:`search_victims` computes before it looks at the pending pod: the eligible
    victims (``rule.eligible``), their facts and resources, per node the free resources once
    they are all gone (:class:`~.room.FreedRoom`), the lowest eligible class on it and its room
    for the pre-ranking, and the victims grouped by node. It depends on the cluster, the
    running pods' facts and the preemptor (its class and need), not on the pending pod, so the
    replay builds one per (state version, instant, preemptor) and tests every pending pod of
    a retry round against it (:meth:`PreemptivePolicy.preempt
    <qosched.policies.preemption.base.PreemptivePolicy.preempt>`).

    ``misses`` holds the request keys (:func:`request_key`) of pods already found to have no
    victim set in this pool: the search's outcome for such a pod is a function of the pool and
    the key, so it is not searched again.
    """

    __slots__ = (
        "_facts",
        "_ranked",
        "_state",
        "eligible",
        "freed",
        "has_victim",
        "misses",
        "res",
        "uids",
    )

    def __init__(
        self,
        state: ClusterState,
        rule: VictimRule,
        preemptor: Preemptor,
        uids: Sequence[str],
        facts: VictimFacts,
        resources: VictimResources,
    ) -> None:
        self.uids = uids
        self.misses: set[tuple[object, ...]] = set()
        eligible = (
            np.flatnonzero(rule.eligible(preemptor, facts)) if len(facts) else np.zeros(0, dtype=np.int64)
        )
        self.eligible = eligible
        self.res = VictimResources(
            row=resources.row[eligible],
            cpu_milli=resources.cpu_milli[eligible],
            memory_mib=resources.memory_mib[eligible],
            milli=resources.milli[eligible],
            devices=_Subset(resources.devices, eligible),
            bits=None if resources.bits is None else resources.bits[eligible],
        )
        res = self.res
        n = state.n_nodes
        self.has_victim = np.bincount(res.row, minlength=n) > 0
        self.freed = FreedRoom.of(state, res)
        self._state, self._facts = state, facts
        self._ranked: _Ranked | None = None

    def ranked(self) -> _Ranked:
        """What step 3 and the pre-ranking need (built on first use: a pod that fits nowhere
        even with every victim gone never needs it)."""
        if self._ranked is None:
            self._ranked = _Ranked(self._state, self.res, self._facts.take(self.eligible), self.freed)
        return self._ranked

    @property
    def efacts(self) -> VictimFacts:
        """The eligible victims' facts."""
        return self.ranked().efacts

    @property
    def order_by_row(self) -> np.ndarray:
        return self.ranked().order_by_row

    @property
    def sorted_rows(self) -> np.ndarray:
        return self.ranked().sorted_rows

    @property
    def lowest(self) -> np.ndarray:
        return self.ranked().lowest

    @property
    def room(self) -> np.ndarray:
        return self.ranked().room

    def __len__(self) -> int:
        return int(self.eligible.shape[0])

    def uid(self, i: int) -> str:
        """Uid of eligible victim ``i``."""
        return self.uids[int(self.eligible[i])]

    def on_row(self, row: int) -> np.ndarray:
        """Positions (into the eligible victims) of the victims on ``row``, in position order."""
        lo, hi = np.searchsorted(self.sorted_rows, [row, row + 1])
        return self.order_by_row[lo:hi]


class _Ranked:
    """The pool's victims grouped by node, and the pre-rank keys of the nodes (see VictimPool)."""

    __slots__ = ("efacts", "lowest", "order_by_row", "room", "sorted_rows")

    def __init__(
        self, state: ClusterState, res: VictimResources, efacts: VictimFacts, freed: FreedRoom
    ) -> None:
        n = state.n_nodes
        self.efacts = efacts
        self.order_by_row = np.argsort(res.row, kind="stable")
        self.sorted_rows = res.row[self.order_by_row]
        # Pre-rank keys: lowest eligible class offered (max rank), then the most room once gone.
        lowest = np.full(n, -1, dtype=np.int64)
        if self.sorted_rows.size:
            starts = np.flatnonzero(np.r_[True, self.sorted_rows[1:] != self.sorted_rows[:-1]])
            ranks = efacts.rank.astype(np.int64)[self.order_by_row]
            lowest[self.sorted_rows[starts]] = np.maximum.reduceat(ranks, starts)
        self.lowest = lowest
        # Free milli-GPU once every victim is gone: free now + what each frees on each device it holds.
        self.room = freed.gpu_milli.sum(axis=1)


class _Subset(Sequence[tuple[int, ...]]):
    """``seq[idx[i]]`` without copying (device tuples are read for a few nodes' victims only)."""

    __slots__ = ("_idx", "_seq")

    def __init__(self, seq: Sequence[tuple[int, ...]], idx: np.ndarray) -> None:
        self._seq, self._idx = seq, idx

    def __len__(self) -> int:
        return int(self._idx.shape[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._seq[int(j)] for j in self._idx[i]]
        return self._seq[int(self._idx[i])]


def _keyed(rule: VictimRule) -> bool:
    """The rule is a :class:`~.victims.KeyedVictimRule` (step 3 can run as array operations)."""
    return (
        getattr(rule, "order_by_keys", False) is True
        and callable(getattr(rule, "cost_keys", None))
        and isinstance(getattr(rule, "victim_count_index", None), int)
    )


def _greedy_options(
    state: ClusterState, pod: PodDemand, rule: KeyedVictimRule, pool: VictimPool, rows: np.ndarray, top: int
) -> list[tuple[tuple[float, ...], int, list[int]]]:
    r"""Step 3 on the nodes ``rows`` at once, for a :class:`~.victims.KeyedVictimRule`.

    The victims of each node are laid out in the rule's order (by its contract the order of a
    node's victims is the restriction of its order of them all), padded to the longest node: an
    (R, K) table per resource and an (R, K, D) table of the milli-GPU each victim frees per
    device (:func:`_victim_tables`). Then, exactly as :func:`~.victims.minimal_subset` with
    :class:`~.room.NodeRoom`:

    1. greedy (:func:`_greedy_prefix`): the shortest prefix after which the pod fits (running
       sums along the order; memory summed left to right from the node's free memory, as
       ``NodeRoom`` adds it);
    2. reprieve (:func:`_reprieve`): for t = last … first taken victim, drop it if the pod still
       fits without it (one array step per t over all nodes; the victims left out add ``+0.0`` /
       ``0`` to the ordered sums, which changes nothing);
    3. cost (:func:`_cheapest`): per key column the maximum over the chosen victims, and the
       count at ``victim_count_index`` — ``rule.cost`` of the set, by the rule's contract.

    Integer sums are exact in any order and float sums are taken in ``NodeRoom``'s order, so
    each node gets the set ``minimal_subset`` gives it. Returns (cost, row, victims as pool
    positions, preferred first) of the ``top`` rows of lowest cost with a non-empty set, sorted.
    """
    tab = _victim_tables(state, pod, rule, pool, rows)
    if tab is None:
        return []
    taken_len = _greedy_prefix(tab, pod)
    if not (taken_len > 0).any():
        return []
    member = _reprieve(tab, pod, taken_len)
    return _cheapest(tab, rule, pool, rows, member, taken_len > 0, top)


@dataclass(frozen=True, slots=True)
class _VictimTables:
    """The victims of R nodes in the rule's order, padded to K, and the nodes' room without them.

    (R, K): ``victim`` (pool positions), ``valid`` (a real victim, not padding), ``cpu``
    [milli-cores], ``mem`` [MiB], ``milli`` (milli-GPU per device held), ``held`` (devices held);
    (R, K, D) ``dev``: milli-GPU each victim frees on each existing device. Per node: ``lens``
    (victims), ``cpu0``/``mem0`` (free now), ``free0`` (R, D) free milli-GPU (-1: no device),
    ``exists`` (R, D), ``want`` (R, 1, 1) the milli-GPU a device must offer the pod; ``flat`` the
    real victims in table order; ``need`` the devices the pod occupies.
    """

    victim: np.ndarray
    valid: np.ndarray
    lens: np.ndarray
    flat: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    milli: np.ndarray
    held: np.ndarray
    dev: np.ndarray
    exists: np.ndarray
    cpu0: np.ndarray
    mem0: np.ndarray
    free0: np.ndarray
    want: np.ndarray
    need: int

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.victim.shape[0]), int(self.victim.shape[1]))

    def fits(self, pod: PodDemand, take: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Verdicts of one victim set per row ``at``, given as a (len(at), K) membership."""
        c = self.cpu0[at] + (self.cpu[at] * take).sum(axis=1)
        m = np.concatenate((self.mem0[at][:, None], np.where(take, self.mem[at], 0.0)), axis=1).cumsum(
            axis=1
        )[:, -1]
        ok = (c >= pod.cpu_milli) & (m + _MEM_EPS_MIB >= pod.memory_mib)
        if self.need == 0:
            return np.asarray(ok)
        f = self.free0[at] + (self.dev[at] * take[:, :, None]).sum(axis=1)
        usable = self.exists[at] & (f >= self.want[at][:, :, 0]) & (f >= 0)
        return np.asarray(ok & (usable.sum(axis=1) >= self.need))


def _victim_tables(
    state: ClusterState, pod: PodDemand, rule: KeyedVictimRule, pool: VictimPool, rows: np.ndarray
) -> _VictimTables | None:
    """Lay out the victims of ``rows`` in the rule's order (None: no row has a victim)."""
    res = pool.res
    lo = np.searchsorted(pool.sorted_rows, rows)
    lens = np.searchsorted(pool.sorted_rows, rows, side="right") - lo
    k_max = int(lens.max(initial=0))
    r_count = rows.shape[0]
    if r_count == 0 or k_max == 0:
        return None
    cols = np.arange(k_max)
    valid = cols[None, :] < lens[:, None]
    # The victims of each row (pool positions), then sorted within the row by the rule's order.
    slot = np.where(valid, lo[:, None] + cols[None, :], 0)
    members = pool.order_by_row[slot[valid]]
    order = np.asarray(rule.order(pool.efacts.take(members)), dtype=np.int64)
    row_of = np.repeat(np.arange(r_count), lens)
    ranked = order[np.argsort(row_of[order], kind="stable")]
    victim = np.zeros((r_count, k_max), dtype=np.int64)
    victim[valid] = members[ranked]
    milli = np.where(valid, res.milli[victim], 0).astype(np.int64)
    flat = victim[valid]
    on, held_flat = _devices_held(res, flat, state.n_devices)
    held = np.zeros((r_count, k_max), dtype=np.int64)
    held[valid] = held_flat
    exists = state.dev_exists[rows]
    dev = np.zeros((r_count, k_max, state.n_devices), dtype=np.int64)
    dev[valid] = on
    _, pod_milli = pod_need(pod)
    return _VictimTables(
        victim=victim,
        valid=valid,
        lens=lens,
        flat=flat,
        cpu=np.where(valid, res.cpu_milli[victim], 0).astype(np.int64),
        mem=np.where(valid, res.memory_mib[victim], 0.0).astype(np.float64),
        milli=milli,
        held=held,
        # NodeRoom adds a victim's milli only to devices that exist on its node.
        dev=np.where(exists[:, None, :], dev * milli[:, :, None], 0),
        exists=exists,
        cpu0=state.cpu_cap_milli[rows] - state.cpu_used_milli[rows],
        mem0=state.mem_cap_mib[rows] - state.mem_used_mib[rows],
        free0=np.where(exists, GPU_MILLI_PER_DEVICE - state.gpu_used_milli[rows], -1).astype(np.int64),
        want=np.where(state.sharing_code[rows] == _EXCLUSIVE, GPU_MILLI_PER_DEVICE, pod_milli)[:, None, None],
        need=pod_need(pod)[0],
    )


def _devices_held(res: VictimResources, flat: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(len(flat), D) 0/1: the devices each victim holds (within the state's D), and their count.

    The count is of every device the victim holds (``len(devices)``; the bit count when the
    ledger keeps bit masks).
    """
    on = np.zeros((flat.shape[0], width), dtype=np.int64)
    if width and flat.size:
        if res.bits is not None:
            on = (res.bits[flat][:, None] >> np.arange(width, dtype=np.int64)) & 1
        else:
            for j, i in enumerate(flat.tolist()):
                for d in res.devices[i]:
                    if 0 <= d < width:
                        on[j, d] = 1
    if res.bits is not None:
        return on, on.sum(axis=1)
    return on, np.fromiter((len(res.devices[i]) for i in flat.tolist()), dtype=np.int64, count=flat.size)


def _greedy_prefix(tab: _VictimTables, pod: PodDemand) -> np.ndarray:
    """Step 1: per row, the length of the shortest prefix of victims after which the pod fits
    (0: it fits as it is, or never)."""
    r_count, k_max = tab.shape
    c_pref = tab.cpu0[:, None] + np.concatenate(
        (np.zeros((r_count, 1), np.int64), np.cumsum(tab.cpu, axis=1)), axis=1
    )
    m_pref = np.concatenate((tab.mem0[:, None], tab.mem), axis=1).cumsum(axis=1)
    ok = (c_pref >= pod.cpu_milli) & (m_pref + _MEM_EPS_MIB >= pod.memory_mib)
    if tab.need:
        f_pref = tab.free0[:, None, :] + np.concatenate(
            (np.zeros((r_count, 1, tab.dev.shape[2]), np.int64), np.cumsum(tab.dev, axis=1)), axis=1
        )
        usable = tab.exists[:, None, :] & (f_pref >= tab.want) & (f_pref >= 0)
        ok &= usable.sum(axis=2) >= tab.need
    ok &= np.arange(k_max + 1)[None, :] <= tab.lens[:, None]
    return np.where(ok.any(axis=1), ok.argmax(axis=1), 0)


def _reprieve(tab: _VictimTables, pod: PodDemand, taken_len: np.ndarray) -> np.ndarray:
    """Step 2: (R, K) membership after reprieving, last taken victim first.

    The last one stays (the greedy stopped there), so only rows that took two or more victims
    are worked, on their own sub-tables.
    """
    member = np.arange(tab.shape[1])[None, :] < taken_len[:, None]
    many = np.flatnonzero(taken_len >= 2)
    if many.size:
        sub, sub_len = member[many], taken_len[many]
        for t in range(int(sub_len.max()) - 2, -1, -1):
            active = (t < sub_len - 1) & sub[:, t]
            if not active.any():
                continue
            trial = sub.copy()
            trial[:, t] = False
            sub[tab.fits(pod, trial, many) & active, t] = False
        member[many] = sub
    return member


def _cheapest(
    tab: _VictimTables,
    rule: KeyedVictimRule,
    pool: VictimPool,
    rows: np.ndarray,
    member: np.ndarray,
    live: np.ndarray,
    top: int,
) -> list[tuple[tuple[float, ...], int, list[int]]]:
    """Step 3: the cost of each live row's set; the ``top`` cheapest (cost, row, victims)."""
    r_count, k_max = tab.shape
    sel = np.flatnonzero(live)
    chosen = member[sel]
    keys_all = np.asarray(rule.cost_keys(pool.efacts.take(tab.flat)), dtype=np.float64)
    keys_tab = np.full((r_count, k_max, keys_all.shape[1]), -np.inf)
    keys_tab[tab.valid] = keys_all
    keys = np.where(chosen[:, :, None], keys_tab[sel], -np.inf).max(axis=1)
    keys[:, rule.victim_count_index] = chosen.sum(axis=1)
    free_now = np.where(tab.free0[sel] > 0, tab.free0[sel], 0).sum(axis=1)
    after = free_now + np.where(chosen, tab.milli[sel] * tab.held[sel], 0).sum(axis=1)
    costs = [
        (*key_row, -float(a), float(row))
        for row, key_row, a in zip(rows[sel].tolist(), keys.tolist(), after.tolist(), strict=True)
    ]
    # Only the best ``top`` options are ever used: their victim lists alone are read out.
    best = sorted(range(len(costs)), key=costs.__getitem__)[:top]
    return [(costs[j], int(rows[sel[j]]), tab.victim[sel[j]][chosen[j]].tolist()) for j in best]


def request_key(pod: PodDemand) -> tuple[object, ...] | None:
    """What the victim search reads of a pod without a model, as a key; None for a model pod.

    A plain pod enters the search only through its requests (CPU, memory, milli-GPU) and its
    allowed GPU models: the resource test and the static constraints read nothing else. A pod
    with model variants is also judged by latency and memory models, so it gets no key.
    """
    if pod.variants:
        return None
    return (pod.cpu_milli, pod.memory_mib, pod.gpu_milli, pod.gpu_spec)


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
    if not rule.may_preempt(preemptor) or len(facts) == 0:
        return None
    pool = VictimPool(state, rule, preemptor, uids, facts, resources)
    return search_pool(state, pod, policy, rule, pool, config)


def search_pool(
    state: ClusterState,
    pod: PodDemand,
    policy: PlacementPolicy,
    rule: VictimRule,
    pool: VictimPool,
    config: SearchConfig | None = None,
) -> VictimChoice | None:
    """:func:`search_victims` on a prepared :class:`VictimPool` (built for this state and preemptor).

    A pod whose search ends before the policy is asked (no node works on resources and static
    constraints) leaves its :func:`request_key` in ``pool.misses``; a later pod with the same
    key is answered None at once.
    """
    cfg = config or SearchConfig()
    if len(pool) == 0:
        return None
    key = request_key(pod)
    if key is not None and key in pool.misses:
        return None
    choice = _search(state, pod, policy, rule, pool, cfg)
    if choice is _NO_OPTION:
        if key is not None:
            pool.misses.add(key)
        return None
    assert not isinstance(choice, _NoOption)
    return choice


class _NoOption:
    """Marker: no node works on resources and static constraints (the policy was not asked)."""


_NO_OPTION = _NoOption()


def _node_options(
    state: ClusterState, pod: PodDemand, rule: VictimRule, pool: VictimPool, rows: np.ndarray
) -> list[tuple[tuple[float, ...], int, list[int]]]:
    """Step 3 node by node (any :class:`~.victims.VictimRule`)."""
    res, efacts = pool.res, pool.efacts
    options: list[tuple[tuple[float, ...], int, list[int]]] = []
    for row in rows.tolist():
        local = pool.on_row(row)  # positions into res/efacts
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
    return options


def _search(
    state: ClusterState,
    pod: PodDemand,
    policy: PlacementPolicy,
    rule: VictimRule,
    pool: VictimPool,
    cfg: SearchConfig,
) -> VictimChoice | _NoOption | None:
    candidate = pool.has_victim & pool.freed.fits(pod)
    if not candidate.any():
        return _NO_OPTION
    rows = np.flatnonzero(candidate)
    rows = rows[_static_ok(state, pod, rows)]
    if rows.size == 0:
        return _NO_OPTION
    pre = np.lexsort((rows, -pool.room[rows], -pool.lowest[rows]))
    rows = rows[pre[: cfg.max_nodes]]
    if _keyed(rule):
        options = _greedy_options(state, pod, cast(KeyedVictimRule, rule), pool, rows, cfg.confirm_tries)
    else:
        options = _node_options(state, pod, rule, pool, rows)
    if not options:
        return _NO_OPTION
    options.sort(key=lambda o: o[0])
    efacts = pool.efacts
    for cost, row, chosen in options[: cfg.confirm_tries]:
        names = [pool.uid(i) for i in chosen]
        if fits_with_policy(state, policy, pod, row, names):
            return VictimChoice(row=row, uids=tuple(names), cost=cost)
        # The policy wants more room than the resources show (interference): search again with it.
        local = pool.on_row(row)
        node_facts = efacts.take(local)
        local_uids = [pool.uid(int(i)) for i in local.tolist()]
        again = minimal_subset(
            rule.order(node_facts).tolist(),
            _policy_check(state, policy, pod, row, local_uids),
        )
        if again:
            names = [local_uids[i] for i in again]
            cost2 = (*rule.cost(node_facts.take(np.array(again))), math.nan, float(row))
            return VictimChoice(row=row, uids=tuple(names), cost=cost2)
    return None
