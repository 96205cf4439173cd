"""Declared options of the preemptive policies ``priority`` and ``qos-driven`` (one dataclass, both).

See :mod:`qosched.policies.placement.options` for the convention (defaults in the dataclass, checks
in ``__post_init__``, one-line errors naming the option).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Self

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.placement.base import PlacementPolicy
from qosched.policies.placement.baselines.kube import WorstFitPolicy
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.placement.options import check_instance
from qosched.policies.preemption.base import SchedulerConfig

__all__ = ["PreemptiveOptions", "host_choice"]


@dataclass(frozen=True, slots=True)
class PreemptiveOptions:
    """Options of ``priority`` and ``qos-driven``.

    Attributes
    ----------
    classes : ClassConfig
        Service classes: their ranks order the queue and say who may preempt whom.
    config : SchedulerConfig
        Retry interval, pause model, victim search bounds and the preemption flags
        (``require_need``, ``victims_any_class``, ``interference_aware``).
    placement : PlacementPolicy, optional
        Host choice; None (default): worst fit (:func:`host_choice`).
    name : str, optional
        Policy name in reports (None: the policy's own).
    model : InterferenceModel
        Latency model of the default worst-fit host choice: its feasibility when
        ``config.interference_aware``, else only its latency prediction.
    """

    classes: ClassConfig = DEFAULT_CLASS_CONFIG
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    placement: PlacementPolicy | None = None
    name: str | None = None
    model: InterferenceModel = field(default_factory=InterferenceModel)

    def __post_init__(self) -> None:
        check_instance(self, "classes", self.classes, ClassConfig, "a ClassConfig")
        check_instance(self, "config", self.config, SchedulerConfig, "a SchedulerConfig")
        if self.placement is not None and not callable(getattr(self.placement, "evaluate", None)):
            raise ValueError(
                f"PreemptiveOptions.placement must be a placement policy or None (got {self.placement!r})"
            )
        check_instance(self, "name", self.name, (str, type(None)), "a string or None")
        check_instance(self, "model", self.model, InterferenceModel, "an InterferenceModel")

    def with_interference(self, model: InterferenceModel) -> Self:
        return dataclasses.replace(self, model=model)


def host_choice(options: PreemptiveOptions, name: str) -> PlacementPolicy:
    """``options.placement``, else worst fit named ``options.name`` or ``name`` (the policy's)."""
    if options.placement is not None:
        return options.placement
    return WorstFitPolicy(
        interference_aware=options.config.interference_aware,
        model=options.model,
        name=options.name if options.name is not None else name,
    )
