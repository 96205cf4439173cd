r"""Victim choice shared by ``priority``, ``qos-driven`` and ``qosched``: facts, rules, minimal sets.

A *rule* (:class:`VictimRule`) says which running pods a pending pod may evict and in which
order it prefers them; :func:`minimal_subset` then takes victims in that order until the pod
fits and gives back every victim it turns out not to need. The same two pieces decide in the
what-if replay (victims anywhere in the cluster, :mod:`.search`) and in the extender's
``preempt`` verb (victims kube-scheduler proposed on one node, :mod:`.live`): only the facts
differ (exact QoS from the replay's ledger, an estimate from pod timestamps live).

The rules themselves live with their policies (:mod:`.priority`, :mod:`.qos_driven`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["KeyedVictimRule", "Preemptor", "VictimFacts", "VictimRule", "minimal_subset"]


@dataclass(frozen=True, slots=True)
class VictimFacts:
    """What a rule knows of ``k`` candidate victims (parallel arrays of length k).

    Attributes
    ----------
    rank : ndarray of int
        Class rank (0 = highest class).
    surplus : ndarray
        Delivered QoS − class target (``qos_surplus``); > 0 above target.
    slack : ndarray of bool
        The pod keeps meeting its target after the predicted pause (``has_slack``).
    start_s : ndarray
        Start of its current run [s] (larger = more recently started).
    """

    rank: np.ndarray
    surplus: np.ndarray
    slack: np.ndarray
    start_s: np.ndarray

    def __post_init__(self) -> None:
        k = self.rank.shape[0]
        for name in ("surplus", "slack", "start_s"):
            if getattr(self, name).shape != (k,):
                raise ValueError(
                    f"VictimFacts.{name}: expected shape ({k},), got {getattr(self, name).shape}"
                )

    def __len__(self) -> int:
        return int(self.rank.shape[0])

    def take(self, idx: np.ndarray) -> VictimFacts:
        """The facts of the victims ``idx`` (an index array), in that order."""
        return VictimFacts(self.rank[idx], self.surplus[idx], self.slack[idx], self.start_s[idx])


@dataclass(frozen=True, slots=True)
class Preemptor:
    """The pending pod that asks for victims: its class rank and whether it needs to run now.

    ``needs`` is False when the pod would still meet its own target after waiting the predicted
    pause (it has slack itself); the ``qos-driven`` rule then lets it wait instead of evicting.
    """

    rank: int
    needs: bool = True


class VictimRule(Protocol):
    """Which pods a preemptor may evict, in which order, and how good a victim set is."""

    @property
    def name(self) -> str:
        """The rule's name (the policy's)."""
        ...

    def may_preempt(self, preemptor: Preemptor) -> bool:
        """False: this pod must wait (no victim is ever taken for it)."""
        ...

    def eligible(self, preemptor: Preemptor, facts: VictimFacts) -> np.ndarray:
        """(k,) bool: victims this preemptor may evict."""
        ...

    def order(self, facts: VictimFacts) -> np.ndarray:
        """Positions of the victims, preferred (evicted first) first; a total order."""
        ...

    def cost(self, facts: VictimFacts) -> tuple[float, ...]:
        """Cost of evicting exactly these victims (lower is better; compared between nodes)."""
        ...


class KeyedVictimRule(VictimRule, Protocol):
    """A rule whose order and cost come from per-victim keys, so nodes can be searched as arrays.

    - ``order_by_keys`` (True): ``order`` sorts the victims by per-victim keys with the position
      as the last key, so the order of any subset is the restriction of the whole set's order.
    - ``cost_keys(facts)``: a (k, m) array, m = ``len(cost(...))``, and ``victim_count_index``:
      for every non-empty subset S, ``cost(S)[j] == max(keys[S, j])`` for every column j except
      ``victim_count_index``, where ``cost(S)[j] == len(S)``.

    :func:`~.search.search_victims` then finds every candidate node's victim set and cost in a
    few array operations (:class:`~.search._Greedy`) instead of one ``minimal_subset`` per node;
    the result is the same.
    """

    order_by_keys: bool
    victim_count_index: int

    def cost_keys(self, facts: VictimFacts) -> np.ndarray:
        """(k, m) per-victim cost keys (see the class docstring)."""
        ...


def minimal_subset(order: Sequence[int], fits: Callable[[list[int]], bool]) -> list[int] | None:
    """Victims, in preference order, until the pod fits; then drop the ones it did not need.

    1. Greedy: take ``order[0], order[1], ...`` and stop as soon as ``fits(taken)`` (the empty
       set is tried first).
    2. Reprieve: for each taken victim, the least preferred first, give it back if the pod still
       fits without evicting it.

    The result is *irredundant*: giving back any one victim makes the pod not fit (given that
    ``fits`` is monotone: evicting more never hurts). It is not always the smallest set (that is
    a knapsack problem); kube-scheduler's preemption makes the same greedy-then-reprieve choice.

    Parameters
    ----------
    order : sequence of int
        Eligible victims (any hashable ids, usually positions), preferred first.
    fits : callable
        ``fits(victims) -> bool``: the pod fits once ``victims`` are gone.

    Returns
    -------
    list of int or None
        The victims in preference order (``[]`` when the pod fits already); None when it does
        not fit even with every eligible victim gone.

    Examples
    --------
    >>> need = {1: 3, 2: 1, 3: 2}  # freed capacity per victim; the pod needs 3
    >>> minimal_subset([2, 3, 1], lambda vs: sum(need[v] for v in vs) >= 3)
    [2, 3]
    >>> minimal_subset([2, 1, 3], lambda vs: sum(need[v] for v in vs) >= 3)
    [1]
    """
    taken: list[int] = []
    if not fits(taken):
        for v in order:
            taken.append(v)
            if fits(taken):
                break
        else:
            return None
    for v in reversed(list(taken)):
        trial = [u for u in taken if u != v]
        if fits(trial):
            taken = trial
    return taken
