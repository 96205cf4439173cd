r"""``priority``: the state-of-practice baseline of da Silva et al. (JISA 2020, ``models.md`` §B).

- **Queue**: class first (``prod`` before ``batch`` before ``free``), then submission time
  (:func:`~.queue.priority_order`).
- **Victims**: a pod of a higher class always preempts pods of lower classes, regardless of
  the QoS either has delivered. Among the victims on a node, the lowest class goes first, then
  the most recently started (the least work lost; Borg's and Kubernetes' order); equal classes
  never preempt each other.
- **Hosts**: worst fit (:class:`~qosched.policies.placement.baselines.kube.WorstFitPolicy`).
- **Node to preempt on**: highest evicted class as low as possible, then fewest victims, then
  victims started most recently, then worst fit (:mod:`.search`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.placement.base import PlacementPolicy
from qosched.policies.preemption.base import PreemptivePolicy, SchedulerConfig
from qosched.policies.preemption.options import PreemptiveOptions, host_choice
from qosched.policies.preemption.queue import priority_order
from qosched.policies.preemption.victims import Preemptor, VictimFacts

__all__ = ["PriorityPolicy", "PriorityRule", "priority_policy"]


@dataclass(frozen=True, slots=True)
class PriorityRule:
    """The :class:`~.victims.VictimRule` of ``priority`` (see the module docstring)."""

    name: str = "priority"

    def may_preempt(self, preemptor: Preemptor) -> bool:
        return True

    def eligible(self, preemptor: Preemptor, facts: VictimFacts) -> np.ndarray:
        """Strictly lower classes only."""
        return np.asarray(facts.rank > preemptor.rank)

    def order(self, facts: VictimFacts) -> np.ndarray:
        """Lowest class first, then the most recently started, then position."""
        k = len(facts)
        return np.lexsort((np.arange(k), -facts.start_s, -facts.rank.astype(np.float64)))

    def cost(self, facts: VictimFacts) -> tuple[float, ...]:
        """(−highest class evicted, victims, −earliest start among them): lower is better."""
        return (-float(facts.rank.min()), float(len(facts)), -float(facts.start_s.min()))

    #: :class:`~.victims.KeyedVictimRule`: ``order`` sorts by per-victim keys (position last),
    #: ``cost(...)[1]`` counts the victims, the other columns are maxima of :meth:`cost_keys`.
    order_by_keys = True
    victim_count_index = 1

    def cost_keys(self, facts: VictimFacts) -> np.ndarray:
        """(k, 3) per victim (−rank, 1, −start): ``cost(S)`` = (max −rank, |S|, max −start) over S."""
        k = len(facts)
        return np.column_stack(
            (-facts.rank.astype(np.float64), np.ones(k), -facts.start_s.astype(np.float64))
        )


class PriorityPolicy(PreemptivePolicy):
    """``priority``: class-ordered queue, class-based preemption, worst-fit hosts.

    Parameters
    ----------
    classes : ClassConfig
        Service classes (ranks order the queue and who preempts whom).
    config : SchedulerConfig, optional
        Retry interval, victim search bounds, host choice.
    placement : PlacementPolicy, optional
        Host choice; default worst fit (interference-blind unless
        ``config.interference_aware``).
    name : str, optional
        Policy name in reports (default ``priority``).
    """

    name = "priority"

    def __init__(
        self,
        *,
        classes: ClassConfig = DEFAULT_CLASS_CONFIG,
        config: SchedulerConfig | None = None,
        placement: PlacementPolicy | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(rule=PriorityRule(), classes=classes, config=config, placement=placement, name=name)

    def queue_order(
        self, rank: np.ndarray, qos: np.ndarray, submit_s: np.ndarray, tiebreak: np.ndarray
    ) -> np.ndarray:
        return priority_order(rank, submit_s, tiebreak)


def priority_policy(options: PreemptiveOptions) -> PriorityPolicy:
    """``priority`` from its declared options (the registry's factory)."""
    placement = host_choice(options, PriorityPolicy.name)
    return PriorityPolicy(
        classes=options.classes, config=options.config, placement=placement, name=options.name
    )
