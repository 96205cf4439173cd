"""The one adapter from the service-class configuration to a pod's class (``ClassMapper``).

``ClassConfig.resolve`` (``qosched.policies.fairness.classes``) is the rule: the
``qosched.io/class`` annotation, else the ``priorityClassName`` map and keywords, else the default
class. Pod parsing (``objects.pod_demand``) takes it as ``class_of(annotation, priorityClassName)``;
the extender, the admission webhook and the what-if command all build that callable here, so a
pod gets the same class everywhere. An annotation naming an unknown class is the pod's fault: a
``DemandError`` (an invalid request, answered with the reason), not an internal error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosched.extender.kube.objects import ClassMapper
from qosched.policies.fairness.classes import (
    CLASS_ANNOTATION,
    DEFAULT_CLASS_CONFIG,
    ClassConfig,
    UnknownClassError,
)
from qosched.policies.types import DemandError


def class_config(
    classes: Mapping[str, Any] | None = None, priority_class_map: Mapping[str, str] | None = None
) -> ClassConfig:
    """The configuration from the ``CLASSES`` / ``PRIORITY_CLASS_MAP`` settings.

    ``classes`` takes the mapping form of ``ClassConfig.from_mapping`` (classes with their QoS
    targets, default class, priority-class map and keywords); ``priority_class_map`` adds exact
    ``priorityClassName -> class`` entries on top. Neither: the contract's default classes.
    """
    data: dict[str, Any] = dict(classes or {})
    if priority_class_map:
        data["priority_class_map"] = {**dict(data.get("priority_class_map") or {}), **priority_class_map}
    return ClassConfig.from_mapping(data) if data else DEFAULT_CLASS_CONFIG


def class_mapper(config: ClassConfig = DEFAULT_CLASS_CONFIG) -> ClassMapper:
    """``class_of(annotation, priorityClassName) -> class name`` by ``config.resolve``."""

    def class_of(annotation: str | None, priority_class: str | None) -> str:
        try:
            return config.resolve({CLASS_ANNOTATION: annotation} if annotation else None, priority_class).name
        except UnknownClassError as err:
            raise DemandError(str(err)) from None

    return class_of


__all__ = ["class_config", "class_mapper"]
