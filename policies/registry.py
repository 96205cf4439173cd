"""The one table of policies: contract name → factory, declared options type, one-line description.

:data:`POLICIES` is written out below, so the set of policies is the same in every process
whatever was imported before (``priority`` and ``qos-driven`` included), and a reader finds every
policy, what it is built from and what it does in one place. It sits above the placement and
preemption packages it lists (it imports their implementations; none of them imports it), and
:func:`qosched.policies.placement.base.make_policy` reaches it lazily.

Each row names

- ``factory``: builds the policy from its options (:func:`keywords` when the options' fields are
  the constructor's keywords);
- ``options``: the policy's options dataclass, defaults and validation in one place (as
  scheduler-plugins declares one args type per plugin; :mod:`qosched.policies.placement.options`);
- ``description``: one line, for ``--help`` texts and documentation;
- ``preemptive`` (optional): the policy with a queue order and victim rule, for replays where
  pods leave (``qosched``: the QoS-driven queue on its own hosts).

Adding a policy is one module (its class and options dataclass) and one row here. Callers:
``make_policy(name)``, ``make_policy(name, options)``, ``make_policy(name, seed=3)`` (fields
replaced on the defaults), and ``policy_options(name, mapping)`` for settings read from a file or
the environment (an unknown key is an error naming it).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from qosched.policies.fairness.classes import ClassConfig
from qosched.policies.placement.base import PlacementPolicy
from qosched.policies.placement.baselines.fgd_baselines import (
    BestFitPolicy,
    DotProductPolicy,
    GpuClusteringPolicy,
    GpuPackingPolicy,
)
from qosched.policies.placement.baselines.knapsack import KnapsackBestFit, KnapsackFirstFit, KnapsackWorstFit
from qosched.policies.placement.baselines.kube import (
    BinpackOptions,
    BinpackPolicy,
    DefaultOptions,
    DefaultPolicy,
)
from qosched.policies.placement.baselines.random_choice import RandomOptions, RandomPolicy
from qosched.policies.placement.fgd.policy import FgdOptions, FGDPolicy
from qosched.policies.placement.ibis.policies import IbisHetero, IbisPack, IbisSpread
from qosched.policies.placement.options import AwareOptions, BlindOptions
from qosched.policies.placement.qosched.policy import QoschedOptions, QoschedPolicy
from qosched.policies.preemption.options import PreemptiveOptions
from qosched.policies.preemption.priority import priority_policy
from qosched.policies.preemption.qos_driven import preemptive_qosched, qos_driven_policy

__all__ = [
    "POLICIES",
    "PolicySpec",
    "keywords",
    "make_policy",
    "options_from_mapping",
    "policy_names",
    "policy_options",
    "policy_spec",
]

OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True, slots=True)
class PolicySpec(Generic[OptionsT]):
    """One row of :data:`POLICIES` (see the module docstring)."""

    factory: Callable[[OptionsT], PlacementPolicy]
    options: type[OptionsT]
    description: str
    preemptive: Callable[[OptionsT, ClassConfig], PlacementPolicy] | None = None

    def option_names(self) -> tuple[str, ...]:
        """The declared options, in field order."""
        return tuple(f.name for f in dataclasses.fields(self.options) if f.init)  # type: ignore[arg-type]

    def takes(self, option: str) -> bool:
        """Whether the policy declares ``option`` (what the replay asks before wiring an input)."""
        return option in self.option_names()


def keywords(cls: Callable[..., PlacementPolicy]) -> Callable[[Any], PlacementPolicy]:
    """The factory ``options -> cls(**fields of options)``: the options' fields are its keywords."""

    def factory(options: Any) -> PlacementPolicy:
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.init})

    factory.__qualname__ = factory.__name__ = f"keywords({getattr(cls, '__name__', cls)})"
    return factory


def _preemptive_qosched(options: QoschedOptions, classes: ClassConfig) -> PlacementPolicy:
    return preemptive_qosched(
        classes=classes,
        qosched_config=options.config,
        mix=options.mix,
        learner=options.learner,
        fairness=options.fairness,
        gpu_consolidation=options.gpu_consolidation,
        consolidation_slack_frac=options.consolidation_slack_frac,
    )


#: Every policy by contract name (contract §2), the order of the contract's list.
POLICIES: dict[str, PolicySpec[Any]] = {
    "default": PolicySpec(
        keywords(DefaultPolicy), DefaultOptions, "Kubernetes LeastAllocated on CPU and memory (spread)"
    ),
    "binpack": PolicySpec(
        keywords(BinpackPolicy), BinpackOptions, "Kubernetes MostAllocated on CPU, memory and GPU (pack)"
    ),
    "knapsack-first-fit": PolicySpec(
        keywords(KnapsackFirstFit),
        BlindOptions,
        "Ibis knapsack: first node with a device the model's memory fits",
    ),
    "knapsack-best-fit": PolicySpec(
        keywords(KnapsackBestFit),
        BlindOptions,
        "Ibis knapsack: device with the least memory left after the model",
    ),
    "knapsack-worst-fit": PolicySpec(
        keywords(KnapsackWorstFit),
        BlindOptions,
        "Ibis knapsack: device with the most memory left after the model",
    ),
    "random": PolicySpec(
        keywords(RandomPolicy), RandomOptions, "uniformly random node and devices, seeded per pod"
    ),
    "dot-product": PolicySpec(
        keywords(DotProductPolicy), BlindOptions, "FGD baseline: Tetris dot product of free and requested"
    ),
    "gpu-clustering": PolicySpec(
        keywords(GpuClusteringPolicy),
        BlindOptions,
        "FGD baseline: nodes whose GPU pods have the pod's GPU shape",
    ),
    "gpu-packing": PolicySpec(
        keywords(GpuPackingPolicy),
        BlindOptions,
        "FGD baseline: partly used GPUs first, then free GPUs on used nodes",
    ),
    "best-fit": PolicySpec(
        keywords(BestFitPolicy), BlindOptions, "FGD baseline: least free CPU and GPU left after the pod"
    ),
    "fgd": PolicySpec(
        keywords(FGDPolicy),
        FgdOptions,
        "Fragmentation Gradient Descent: least growth of expected fragmentation",
    ),
    "qosched": PolicySpec(
        keywords(QoschedPolicy),
        QoschedOptions,
        "interference-, fragmentation- and QoS-fairness-aware placement (this project)",
        preemptive=_preemptive_qosched,
    ),
    "ibis-pack": PolicySpec(keywords(IbisPack), AwareOptions, "Ibis DFS: first node where every SLO holds"),
    "ibis-spread": PolicySpec(keywords(IbisSpread), AwareOptions, "Ibis BFS: least utilised feasible device"),
    "ibis-hetero": PolicySpec(
        keywords(IbisHetero), AwareOptions, "Ibis heterogeneity-aware: least utilisation added"
    ),
    "priority": PolicySpec(
        priority_policy, PreemptiveOptions, "class-ordered queue, class-based preemption, worst-fit hosts"
    ),
    "qos-driven": PolicySpec(
        qos_driven_policy,
        PreemptiveOptions,
        "QoS-ordered queue, preemption of pods with slack, worst-fit hosts",
    ),
}


def policy_names() -> list[str]:
    """Every policy name, sorted."""
    return sorted(POLICIES)


def policy_spec(name: str) -> PolicySpec[Any]:
    """The row of ``name``; ``KeyError`` listing the known names."""
    try:
        return POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r}; known: {', '.join(policy_names())}") from None


def policy_options(name: str, settings: Mapping[str, Any] | None = None) -> Any:
    """The options of ``name`` from a mapping of settings (nested mappings for nested dataclasses).

    ``policy_options("qosched", {"config": {"frag_weight": 2.0}})``. Absent keys keep their
    defaults; an unknown key or a bad value is a ``ValueError`` naming the policy and the option.
    """
    spec = policy_spec(name)
    return options_from_mapping(spec.options, settings or {}, where=f"policy {name!r}")


def make_policy(name: str, options: Any = None, /, **fields: Any) -> PlacementPolicy:
    """Build the policy ``name`` from ``options`` (default: its defaults) with ``fields`` replaced.

    ``KeyError`` for an unknown name (listing the known ones); ``ValueError`` for an unknown or
    invalid option, or options of another policy's type.
    """
    spec = policy_spec(name)
    if options is None:
        options = spec.options()
    elif not isinstance(options, spec.options):
        raise ValueError(
            f"policy {name!r} takes {spec.options.__name__}, got {type(options).__name__} {options!r}"
        )
    if fields:
        _check_known(spec.options, fields, where=f"policy {name!r}")
        options = dataclasses.replace(options, **fields)
    return spec.factory(options)


def options_from_mapping(cls: type[OptionsT], data: Mapping[str, Any], *, where: str) -> OptionsT:
    """``cls(**data)`` with nested mappings built into the dataclass (or ``from_mapping``) of their field.

    An unknown key is a ``ValueError`` naming it, ``where`` and the known keys; values are
    validated by the dataclasses' own ``__post_init__``.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: options must be a mapping, got {type(data).__name__}")
    _check_known(cls, data, where=where)
    hints = typing.get_type_hints(cls)
    values = {key: _convert(hints[key], value, where=f"{where}: {key}") for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def _check_known(cls: type, data: Mapping[str, Any], *, where: str) -> None:
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(
            f"{where}: unknown option{plural} {', '.join(map(repr, unknown))} of {cls.__name__}; "
            f"known: {', '.join(known)}"
        )


def _convert(hint: Any, value: Any, *, where: str) -> Any:
    """A mapping given for a dataclass-typed field becomes that dataclass; anything else is kept."""
    if not isinstance(value, Mapping):
        return value
    for target in (hint, *typing.get_args(hint)):
        if isinstance(target, type) and hasattr(target, "from_mapping"):
            try:
                return target.from_mapping(value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: {err}") from None
        if isinstance(target, type) and dataclasses.is_dataclass(target):
            return options_from_mapping(target, value, where=where)
    return value
