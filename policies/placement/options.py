"""Declared options of the placement policies: one frozen dataclass per policy, validated on creation.

As scheduler-plugins declares one args type per plugin, every policy of the registry
(:mod:`qosched.policies.registry`) declares the options it is built from: the defaults live in the
dataclass, the checks in its ``__post_init__`` (a bad value is a one-line ``ValueError`` naming
the option), and nothing else guesses what a policy takes. The field names are the keywords of the
policy's constructor.

This module holds the options shared by several policies and the checks they use; an option type
of one policy lives beside that policy (e.g. :class:`~qosched.policies.placement.fgd.policy.FgdOptions`).

Every options type also answers ``with_interference(model)``: the same options judging with
another :class:`~qosched.policies.placement.interference.InterferenceModel` (the extender's
configured thresholds apply to any policy through it, without knowing where the policy keeps its
model).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from qosched.policies.placement.interference import InterferenceModel

__all__ = ["AwareOptions", "BlindOptions", "PolicyOptions", "check_bool", "check_instance", "check_int"]


class PolicyOptions(Protocol):
    """What every options dataclass of the registry provides (besides being a frozen dataclass)."""

    def with_interference(self, model: InterferenceModel) -> Self:
        """These options, judging placements with ``model`` (its thresholds and latency terms)."""
        ...


def check_instance(owner: object, name: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    """Raise ``ValueError("<Owner>.<name> must be <what> (got <value>)")`` unless ``value`` is a ``kind``."""
    if not isinstance(value, kind):
        raise ValueError(f"{type(owner).__name__}.{name} must be {what} (got {value!r})")


def check_bool(owner: object, name: str) -> None:
    """``owner.name`` must be a bool (not 0/1, not a string: a typo in a setting is an error)."""
    check_instance(owner, name, getattr(owner, name), bool, "True or False")


def check_int(owner: object, name: str) -> None:
    """``owner.name`` must be an integer (a bool is not one)."""
    value = getattr(owner, name)
    if isinstance(value, bool):
        raise ValueError(f"{type(owner).__name__}.{name} must be an int (got {value!r})")
    check_instance(owner, name, value, numbers.Integral, "an int")


@dataclass(frozen=True, slots=True)
class BlindOptions:
    """Options of an interference-blind policy (``knapsack-*``, ``dot-product``, ``gpu-*``, ``best-fit``).

    Attributes
    ----------
    predict_latency : bool
        Predict the latency of an inference pod on the chosen devices, for the
        ``qosched.io/predicted-latency-ms`` annotation (default True; it never changes a decision).
    model : InterferenceModel
        The latency model of that prediction; the knapsacks also take their memory threshold from
        it (default: the paper's thresholds, 0.8 each).
    """

    predict_latency: bool = True
    model: InterferenceModel = field(default_factory=InterferenceModel)

    def __post_init__(self) -> None:
        check_bool(self, "predict_latency")
        check_instance(self, "model", self.model, InterferenceModel, "an InterferenceModel")

    def with_interference(self, model: InterferenceModel) -> Self:
        return dataclasses.replace(self, model=model)


@dataclass(frozen=True, slots=True)
class AwareOptions:
    """Options of an interference-aware ``ibis-*`` policy.

    Attributes
    ----------
    model : InterferenceModel
        Thresholds (memory, utilisation, front end; 0.8 each, the paper's) and latency-model terms
        the feasibility of a placement is judged with.
    """

    model: InterferenceModel = field(default_factory=InterferenceModel)

    def __post_init__(self) -> None:
        check_instance(self, "model", self.model, InterferenceModel, "an InterferenceModel")

    def with_interference(self, model: InterferenceModel) -> Self:
        return dataclasses.replace(self, model=model)
