r"""``qos-driven``: QoS-driven scheduling of da Silva et al. (JISA 2020, ``models.md`` §B).

- **Queue**: class first, then the pod's current delivered QoS **ascending** (the pod furthest
  below — or least above — its due is tried first), then submission time
  (:func:`~.queue.qos_driven_order`).
- **Victims**: only pods with *slack*, i.e. still at or above their class target after the
  predicted pause :math:`\hat d` (time until they could run again):

  .. math:: \frac{a\,r}{t + \hat d} \ge T \iff a\,r \ge T\,(t + \hat d)
            \qquad(\texttt{has\_slack})

  of any class (a ``prod`` pod, target 1.0, never has slack once it has waited at all), taken
  lowest class first, then largest QoS surplus :math:`A - T` first, then the most recently
  started; stop as soon as the pod fits, then give back every victim not needed
  (:func:`~.victims.minimal_subset`). Victims go back to the pending queue.
- **Who may preempt**: a pending pod with no slack itself for its own predicted wait
  (``SchedulerConfig.require_need``): one that can wait and still meet its target waits.
- **Hosts**: worst fit.
- **Node to preempt on**: highest evicted class as low as possible, then fewest victims, then
  the largest smallest surplus among them, then worst fit (:mod:`.search`).

The predicted pause in the replay is the class's mean waiting episode so far × 2, at least the
retry interval (:class:`~.base.PauseModel`); in the extender it is a configured constant
(:class:`~.live.LiveConfig`).

:class:`QosDrivenPolicy` with ``placement=`` the ``qosched`` placement policy is the
preemptive ``qosched``: the same queue and victim rule on qosched's hosts
(:func:`preemptive_qosched`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.placement.base import PlacementPolicy
from qosched.policies.placement.qosched.policy import QoschedPolicy
from qosched.policies.preemption.base import PreemptivePolicy, SchedulerConfig
from qosched.policies.preemption.options import PreemptiveOptions, host_choice
from qosched.policies.preemption.queue import qos_driven_order
from qosched.policies.preemption.victims import Preemptor, VictimFacts
from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand

__all__ = ["QosDrivenHooks", "QosDrivenPolicy", "QosDrivenRule", "preemptive_qosched", "qos_driven_policy"]


@dataclass(frozen=True, slots=True)
class QosDrivenRule:
    """The :class:`~.victims.VictimRule` of ``qos-driven`` (see the module docstring).

    ``require_need``: only a preemptor that cannot afford its own predicted wait may evict.
    ``any_class``: victims may be of any class (True, default; a higher-class victim with slack
    still meets its target); False: only the preemptor's class and lower ones.
    """

    require_need: bool = True
    any_class: bool = True
    name: str = "qos-driven"

    def may_preempt(self, preemptor: Preemptor) -> bool:
        return preemptor.needs or not self.require_need

    def eligible(self, preemptor: Preemptor, facts: VictimFacts) -> np.ndarray:
        """Pods that keep meeting their target after the predicted pause (of any class, or of the
        preemptor's class and lower ones when ``any_class`` is False)."""
        ok = np.asarray(facts.slack, dtype=bool)
        return ok if self.any_class else ok & (facts.rank >= preemptor.rank)

    def order(self, facts: VictimFacts) -> np.ndarray:
        """Lowest class first, then largest surplus, then most recently started, then position."""
        k = len(facts)
        return np.lexsort((np.arange(k), -facts.start_s, -facts.surplus, -facts.rank.astype(np.float64)))

    def cost(self, facts: VictimFacts) -> tuple[float, ...]:
        """(−highest class evicted, victims, −smallest surplus among them): lower is better."""
        return (-float(facts.rank.min()), float(len(facts)), -float(facts.surplus.min()))

    #: :class:`~.victims.KeyedVictimRule`: ``order`` sorts by per-victim keys (position last),
    #: ``cost(...)[1]`` counts the victims, the other columns are maxima of :meth:`cost_keys`.
    order_by_keys = True
    victim_count_index = 1

    def cost_keys(self, facts: VictimFacts) -> np.ndarray:
        """(k, 3) per victim (−rank, 1, −surplus): ``cost(S)`` = (max −rank, |S|, max −surplus) over S."""
        k = len(facts)
        return np.column_stack(
            (-facts.rank.astype(np.float64), np.ones(k), -facts.surplus.astype(np.float64))
        )


class QosDrivenPolicy(PreemptivePolicy):
    """``qos-driven``: class- then QoS-ordered queue, slack-respecting preemption, worst-fit hosts.

    Parameters
    ----------
    classes : ClassConfig
        Service classes.
    config : SchedulerConfig, optional
        Retry interval, pause model, victim search bounds, ``require_need``.
    placement : PlacementPolicy, optional
        Host choice; default worst fit.
    name : str, optional
        Policy name in reports (default ``qos-driven``).
    """

    name = "qos-driven"

    def __init__(
        self,
        *,
        classes: ClassConfig = DEFAULT_CLASS_CONFIG,
        config: SchedulerConfig | None = None,
        placement: PlacementPolicy | None = None,
        name: str | None = None,
    ) -> None:
        cfg = config if config is not None else SchedulerConfig()
        super().__init__(
            rule=QosDrivenRule(require_need=cfg.require_need, any_class=cfg.victims_any_class),
            classes=classes,
            config=cfg,
            placement=placement,
            name=name,
        )

    def queue_order(
        self, rank: np.ndarray, qos: np.ndarray, submit_s: np.ndarray, tiebreak: np.ndarray
    ) -> np.ndarray:
        return qos_driven_order(rank, qos, submit_s, tiebreak)


def preemptive_qosched(
    *,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    config: SchedulerConfig | None = None,
    **qosched_options: Any,
) -> QosDrivenPolicy:
    """The full ``qosched`` policy with the QoS-driven queue and victim rule of this module.

    ``qosched_options`` go to the ``qosched`` placement policy (``config``-less keywords such as
    ``mix``, ``learner``, ``fairness``; its own ``QoschedConfig`` as ``qosched_config``).
    """
    options = dict(qosched_options)
    if "qosched_config" in options:
        options["config"] = options.pop("qosched_config")
    placement = QoschedPolicy(**options)
    return QosDrivenPolicy(classes=classes, config=config, placement=placement, name="qosched")


def qos_driven_policy(options: PreemptiveOptions) -> QosDrivenPolicy:
    """``qos-driven`` from its declared options (the registry's factory)."""
    placement = host_choice(options, QosDrivenPolicy.name)
    return QosDrivenPolicy(
        classes=options.classes, config=options.config, placement=placement, name=options.name
    )


class QosDrivenHooks:
    """Mixin giving a placement policy class the ``qos-driven`` queue order and preemption.

    ``class QoschedPolicy(QosDrivenHooks, AwarePolicy): ...`` makes the policy's objects carry
    ``order``, ``preempt``, ``retry_interval_s`` and ``rule`` — what the what-if replay and the
    extender's ``preempt`` verb look for — delegating to one :class:`QosDrivenPolicy` whose host
    choice is the policy itself (so victims are confirmed by the policy's own feasibility).
    Configure with the class attributes ``preemption_config`` / ``preemption_classes`` (or set
    them on an instance before first use).
    """

    name: str
    preemption_config: SchedulerConfig = SchedulerConfig()
    preemption_classes: ClassConfig = DEFAULT_CLASS_CONFIG

    def _qos_driven(self) -> QosDrivenPolicy:
        hooks = self.__dict__.get("_qos_driven_hooks")
        if hooks is None:
            hooks = QosDrivenPolicy(
                classes=self.preemption_classes,
                config=self.preemption_config,
                placement=self,  # type: ignore[arg-type]
                name=self.name,
            )
            self.__dict__["_qos_driven_hooks"] = hooks
        return hooks

    @property
    def rule(self) -> QosDrivenRule:
        """The victim rule (read by the extender's ``preempt``)."""
        rule = self._qos_driven().rule
        assert isinstance(rule, QosDrivenRule)
        return rule

    @property
    def retry_interval_s(self) -> float | None:
        return self.preemption_config.retry_interval_s

    def order(self, pending: Sequence[int], ledger: Any, now_s: float) -> list[int]:
        return self._qos_driven().order(pending, ledger, now_s)

    def preempt(self, state: ClusterState, pod: PodDemand, ledger: Any, now_s: float) -> tuple[str, ...]:
        return self._qos_driven().preempt(state, pod, ledger, now_s)
