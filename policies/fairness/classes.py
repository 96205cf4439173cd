"""Service classes: names, QoS targets, ranks, and how a pod is mapped to one.

A service class (da Silva et al., JISA 2020, see ``models.md`` §B) groups pods that share a QoS
target; QoS there is availability, the fraction of the time since submission that the pod ran.
The paper's classes are ``prod`` (target 1.0), ``batch`` (0.9) and ``free`` (0.5); they are the
defaults here. ``rank`` orders the classes for preemption: rank 0 is the highest class.

How a pod gets its class (:meth:`ClassConfig.resolve`), first rule that applies:

1. the ``qosched.io/class`` annotation, which must name a configured class (an unknown name is
   an error listing the known ones: a typo must not silently demote a pod);
2. else its ``priorityClassName``: an exact entry of :attr:`ClassConfig.priority_class_map`,
   then the first keyword rule of :attr:`ClassConfig.priority_class_keywords` that matches a
   token of the name (the name split on ``-``, ``_`` and ``.``, lower-cased);
3. else :attr:`ClassConfig.default_class` (``batch``).

Default priority-class table (exact names first, then keywords in this order):

============================  =======  ==========================================================
priorityClassName             class    why
============================  =======  ==========================================================
``system-node-critical``      prod     Kubernetes' built-in classes for components that must run
``system-cluster-critical``   prod
``qosched-high``              prod     the priority classes of qosched's manifests and fixtures
``qosched-low``               batch
token critical/high/prod/     prod     names people give to must-run services
production
token batch/low/medium/       batch    preemptible but still owed most of their time
normal/default
token free/besteffort/        free     best-effort work, like spot or preemptible VMs
preemptible/spot/lowest
============================  =======  ==========================================================

The default class is ``batch``, not ``prod`` or ``free``: a pod that states nothing should not
gain prod's 1.0 target (that would let it preempt every batch pod) nor be starved down to 0.5.

The Alibaba GPU trace v2023 ``qos`` column maps through :attr:`ClassConfig.trace_qos_map`:
``LS`` (latency-sensitive online services; inference with latency targets is exactly what
prod's "always running" target is for) and ``Guaranteed`` (the Kubernetes QoS class whose
requests equal its limits and which is evicted last) → ``prod``; ``Burstable`` (requests below
limits; may be squeezed) → ``batch``; ``BE`` / ``BestEffort`` (no requests, first evicted) →
``free``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

CLASS_ANNOTATION = "qosched.io/class"
"""Pod annotation naming the service class (``contract.md`` §1)."""

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TOKEN_SPLIT_RE = re.compile(r"[-_.]+")


class UnknownClassError(ValueError):
    """A class name that is not configured; the message lists the known names."""


@dataclass(frozen=True, slots=True)
class ServiceClass:
    """One service class.

    Parameters
    ----------
    name : str
        Lower-case DNS-label-like name (``prod``), the value of ``qosched.io/class``.
    qos_target : float
        Target of delivered QoS (availability × SLO attainment), in (0, 1].
    rank : int
        Preemption order, 0 = highest class. Unique within a configuration.
    price_factor : float
        Multiplier on the resource price used for SLA credits (:mod:`.penalty`); 1.0 charges
        list price. Set 0 to model a tier without an SLA (no credits are owed).
    """

    name: str
    qos_target: float
    rank: int
    price_factor: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"ServiceClass.name: {self.name!r} must be lower-case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        if not (isinstance(self.qos_target, int | float) and 0.0 < float(self.qos_target) <= 1.0):
            raise ValueError(f"ServiceClass {self.name!r}: qos_target {self.qos_target!r} not in (0, 1]")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise ValueError(f"ServiceClass {self.name!r}: rank {self.rank!r} must be an int >= 0")
        pf = self.price_factor
        if not (isinstance(pf, int | float) and np.isfinite(pf) and pf >= 0.0):
            raise ValueError(f"ServiceClass {self.name!r}: price_factor {pf!r} must be finite and >= 0")


DEFAULT_CLASSES: tuple[ServiceClass, ...] = (
    ServiceClass("prod", 1.0, 0),
    ServiceClass("batch", 0.9, 1),
    ServiceClass("free", 0.5, 2),
)
"""The paper's classes: prod 1.0, batch 0.9, free 0.5 (da Silva et al. 2020)."""

DEFAULT_PRIORITY_CLASS_MAP: Mapping[str, str] = MappingProxyType(
    {
        "system-node-critical": "prod",
        "system-cluster-critical": "prod",
        "qosched-high": "prod",
        "qosched-low": "batch",
    }
)
DEFAULT_PRIORITY_CLASS_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("critical", "prod"),
    ("high", "prod"),
    ("prod", "prod"),
    ("production", "prod"),
    ("batch", "batch"),
    ("low", "batch"),
    ("medium", "batch"),
    ("normal", "batch"),
    ("default", "batch"),
    ("free", "free"),
    ("besteffort", "free"),
    ("preemptible", "free"),
    ("spot", "free"),
    ("lowest", "free"),
)
DEFAULT_TRACE_QOS_MAP: Mapping[str, str] = MappingProxyType(
    {"ls": "prod", "guaranteed": "prod", "burstable": "batch", "be": "free", "besteffort": "free"}
)
"""Alibaba GPU trace v2023 ``qos`` values (lower-cased) → class; see the module docstring."""


@dataclass(frozen=True, slots=True)
class ClassConfig:
    """The configured service classes and the rules that map pods to them.

    Validated on construction: at least one class, unique names, unique ranks, targets in (0, 1],
    and every class named by a map, a keyword rule or ``default_class`` must exist.

    Parameters
    ----------
    classes : tuple of ServiceClass
        The classes; order does not matter (use :meth:`by_rank`).
    default_class : str
        Class of a pod with neither the annotation nor a mappable priority class.
    priority_class_map : mapping of str to str
        Exact ``priorityClassName`` → class name.
    priority_class_keywords : tuple of (token, class name)
        Checked in order when the exact map has no entry; the first token found in the
        priority-class name wins. An empty tuple turns keyword matching off.
    trace_qos_map : mapping of str to str
        Lower-cased trace ``qos`` value → class name.
    """

    classes: tuple[ServiceClass, ...] = DEFAULT_CLASSES
    default_class: str = "batch"
    priority_class_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_PRIORITY_CLASS_MAP)
    priority_class_keywords: tuple[tuple[str, str], ...] = DEFAULT_PRIORITY_CLASS_KEYWORDS
    trace_qos_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TRACE_QOS_MAP)

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        if not classes:
            raise ValueError("ClassConfig.classes: at least one service class is required")
        for c in classes:
            if not isinstance(c, ServiceClass):
                raise ValueError(f"ClassConfig.classes: expected ServiceClass, got {c!r}")
        names = [c.name for c in classes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"ClassConfig.classes: duplicate class names {dup}")
        ranks = [c.rank for c in classes]
        dup_r = sorted({r for r in ranks if ranks.count(r) > 1})
        if dup_r:
            raise ValueError(f"ClassConfig.classes: duplicate ranks {dup_r} (rank orders preemption)")
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "priority_class_map", MappingProxyType(dict(self.priority_class_map)))
        object.__setattr__(
            self, "trace_qos_map", MappingProxyType({k.lower(): v for k, v in self.trace_qos_map.items()})
        )
        object.__setattr__(
            self, "priority_class_keywords", tuple((k.lower(), v) for k, v in self.priority_class_keywords)
        )
        self._require_known("default_class", self.default_class)
        for key, value in self.priority_class_map.items():
            self._require_known(f"priority_class_map[{key!r}]", value)
        for key, value in self.priority_class_keywords:
            self._require_known(f"priority_class_keywords[{key!r}]", value)
        for key, value in self.trace_qos_map.items():
            self._require_known(f"trace_qos_map[{key!r}]", value)

    def __hash__(self) -> int:
        """Hash of the content, so a config can key a cache (the mappings are read-only views)."""
        return hash(
            (
                self.classes,
                self.default_class,
                tuple(sorted(self.priority_class_map.items())),
                self.priority_class_keywords,
                tuple(sorted(self.trace_qos_map.items())),
            )
        )

    # ------------------------------------------------------------------ lookups
    @property
    def names(self) -> tuple[str, ...]:
        """Class names, highest class (rank 0) first."""
        return tuple(c.name for c in self.by_rank())

    def by_rank(self) -> tuple[ServiceClass, ...]:
        """Classes sorted by rank, highest class first."""
        return tuple(sorted(self.classes, key=lambda c: c.rank))

    def get(self, name: str) -> ServiceClass:
        """The class called ``name``; :class:`UnknownClassError` listing the known names otherwise."""
        for c in self.classes:
            if c.name == name:
                return c
        raise UnknownClassError(f"unknown service class {name!r}; known classes: {', '.join(self.names)}")

    def targets(self, names: Iterable[str]) -> NDArray[np.float64]:
        """QoS target of each class name, as an array (vectorised :meth:`get`)."""
        lookup = {c.name: c.qos_target for c in self.classes}
        return np.array([self._lookup(lookup, n) for n in names], dtype=np.float64)

    def ranks(self, names: Iterable[str]) -> NDArray[np.int64]:
        """Rank of each class name, as an array (0 = highest class)."""
        lookup = {c.name: c.rank for c in self.classes}
        return np.array([self._lookup(lookup, n) for n in names], dtype=np.int64)

    # ------------------------------------------------------------------ mapping pods to classes
    def resolve(
        self,
        annotations: Mapping[str, str] | None = None,
        priority_class_name: str | None = None,
    ) -> ServiceClass:
        """Class of a pod from its annotations, else its ``priorityClassName``, else the default.

        Parameters
        ----------
        annotations : mapping or None
            The pod's ``metadata.annotations``; ``qosched.io/class`` is read (case and
            surrounding spaces ignored).
        priority_class_name : str or None
            The pod's ``spec.priorityClassName``.

        Raises
        ------
        UnknownClassError
            When the annotation names a class that is not configured.
        """
        value = (annotations or {}).get(CLASS_ANNOTATION)
        if value is not None and value.strip():
            try:
                return self.get(value.strip().lower())
            except UnknownClassError as exc:
                raise UnknownClassError(f"annotation {CLASS_ANNOTATION}: {exc}") from None
        from_priority = self.class_from_priority_class(priority_class_name)
        return self.get(from_priority if from_priority is not None else self.default_class)

    def class_from_priority_class(self, priority_class_name: str | None) -> str | None:
        """Class name for a ``priorityClassName`` by the exact map then keywords; None if no rule applies."""
        if not priority_class_name:
            return None
        if priority_class_name in self.priority_class_map:
            return self.priority_class_map[priority_class_name]
        tokens = set(_TOKEN_SPLIT_RE.split(priority_class_name.lower()))
        for keyword, class_name in self.priority_class_keywords:
            if keyword in tokens:
                return class_name
        return None

    def class_from_trace_qos(self, qos: str) -> str:
        """Class name for an Alibaba trace ``qos`` value (``LS``, ``Guaranteed``, ``Burstable``, ``BE``)."""
        key = qos.strip().lower()
        try:
            return self.trace_qos_map[key]
        except KeyError:
            known = ", ".join(sorted(self.trace_qos_map))
            raise ValueError(
                f"trace qos value {qos!r} has no class mapping; known (any case): {known}"
            ) from None

    def classes_from_trace_qos(self, qos: Sequence[str] | NDArray[Any]) -> NDArray[np.str_]:
        """Vectorised :meth:`class_from_trace_qos` (maps each distinct value once)."""
        values = np.asarray(qos, dtype=str)
        uniq, inverse = np.unique(values, return_inverse=True)
        mapped = np.array([self.class_from_trace_qos(u) for u in uniq], dtype=str)
        return mapped[inverse.reshape(values.shape)] if uniq.size else np.array([], dtype=str)

    # ------------------------------------------------------------------ construction from config files
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ClassConfig:
        """Build from a parsed YAML/JSON mapping; errors name the offending key.

        Expected shape (every key optional; omitted keys keep the defaults)::

            classes:
              - {name: prod, qos_target: 1.0, rank: 0, price_factor: 1.0}
              - {name: batch, qos_target: 0.9, rank: 1}
            default_class: batch
            priority_class_map: {qosched-high: prod}
            priority_class_keywords: [[critical, prod], [spot, free]]
            trace_qos_map: {LS: prod, BE: free}
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"class config: expected a mapping, got {type(data).__name__}")
        allowed = {
            "classes",
            "default_class",
            "priority_class_map",
            "priority_class_keywords",
            "trace_qos_map",
        }
        extra = sorted(set(data) - allowed)
        if extra:
            raise ValueError(f"class config: unknown keys {extra}; allowed: {sorted(allowed)}")
        kwargs: dict[str, Any] = {}
        if "classes" in data:
            kwargs["classes"] = _classes_from_list(data["classes"])
        if "default_class" in data:
            kwargs["default_class"] = str(data["default_class"])
        for key in ("priority_class_map", "trace_qos_map"):
            if key in data:
                if not isinstance(data[key], Mapping):
                    raise ValueError(f"class config: {key!r} must be a mapping")
                kwargs[key] = {str(k): str(v) for k, v in data[key].items()}
        if "priority_class_keywords" in data:
            rules = data["priority_class_keywords"]
            try:
                kwargs["priority_class_keywords"] = tuple((str(k), str(v)) for k, v in rules)
            except (TypeError, ValueError):
                raise ValueError(
                    "class config: 'priority_class_keywords' must be a list of [token, class]"
                ) from None
        return cls(**kwargs)

    # ------------------------------------------------------------------ internals
    def _require_known(self, where: str, name: str) -> None:
        if name not in {c.name for c in self.classes}:
            known = ", ".join(c.name for c in sorted(self.classes, key=lambda c: c.rank))
            raise UnknownClassError(f"ClassConfig.{where}: unknown class {name!r}; known classes: {known}")

    def _lookup(self, table: Mapping[str, Any], name: str) -> Any:
        try:
            return table[name]
        except KeyError:
            raise UnknownClassError(
                f"unknown service class {name!r}; known classes: {', '.join(self.names)}"
            ) from None


DEFAULT_CLASS_CONFIG = ClassConfig()
"""The paper's three classes with the default mapping rules."""


def _classes_from_list(items: object) -> tuple[ServiceClass, ...]:
    """The ``classes`` list of a class config; errors name the offending item."""
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ValueError("class config: 'classes' must be a list")
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"class config: classes[{i}] must be a mapping")
        try:
            parsed.append(ServiceClass(**dict(item)))
        except TypeError as exc:
            raise ValueError(f"class config: classes[{i}]: {exc}") from None
    return tuple(parsed)
