"""Label and field selectors with kube-apiserver's grammar and its errors.

Label selectors (``k8s.io/apimachinery/pkg/labels``): comma-separated requirements, each one of
``key``, ``!key``, ``key=v``, ``key==v``, ``key!=v``, ``key in (a,b)``, ``key notin (a,b)``; all must
hold. ``!=`` and ``notin`` also match objects without the key.

Field selectors (``k8s.io/apimachinery/pkg/fields``): ``field=v``, ``field==v``, ``field!=v`` joined by
commas, only over the fields the resource registers (``GetAttrs``/``AddFieldLabelConversionFunc``).
An unregistered field is a 400 ``field label not supported: <field>``, as upstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .status import bad_request

JsonDict = dict[str, Any]

_LABEL_KEY = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_SET_OP = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")
_EQ_OP = re.compile(r"^(?P<key>[^!=\s]+)\s*(?P<op>==|!=|=)\s*(?P<value>\S*)$")


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    key: str
    op: str  # "exists", "!exists", "=", "!=", "in", "notin"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )`` (set values carry their own commas)."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> tuple[LabelRequirement, ...]:
    """Parse a ``labelSelector`` query value; empty or ``None`` selects everything."""
    if not text:
        return ()
    out: list[LabelRequirement] = []
    for part in _split_top_level(text):
        if m := _SET_OP.match(part):
            key, op = m["key"], m["op"]
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            req = LabelRequirement(key, op, values)
        elif m := _EQ_OP.match(part):
            op = "!=" if m["op"] == "!=" else "="
            req = LabelRequirement(m["key"], op, frozenset({m["value"]}))
        elif part.startswith("!"):
            req = LabelRequirement(part[1:].strip(), "!exists")
        else:
            req = LabelRequirement(part, "exists")
        if not _LABEL_KEY.match(req.key):
            raise bad_request(f"unable to parse requirement: invalid label key {req.key!r} in {part!r}")
        out.append(req)
    return tuple(out)


def labels_match(selector: tuple[LabelRequirement, ...], obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(req.matches(labels) for req in selector)


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool

    def matches(self, fields: Mapping[str, str]) -> bool:
        return (fields.get(self.field, "") == self.value) != self.negate


def parse_field_selector(text: str | None, supported: frozenset[str]) -> tuple[FieldRequirement, ...]:
    """Parse a ``fieldSelector`` for a resource whose selectable fields are ``supported``."""
    if not text:
        return ()
    out: list[FieldRequirement] = []
    for part in _split_top_level(text):
        m = re.match(r"^(?P<field>[^!=]+)(?P<op>==|!=|=)(?P<value>.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field = m["field"].strip()
        if field not in supported:
            raise bad_request(f"field label not supported: {field}")
        out.append(FieldRequirement(field, m["value"].strip(), m["op"] == "!="))
    return tuple(out)


def fields_match(selector: tuple[FieldRequirement, ...], fields: Mapping[str, str]) -> bool:
    return all(req.matches(fields) for req in selector)


def _get(obj: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _as_field(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def field_getter(
    paths: tuple[str, ...], bool_fields: frozenset[str] = frozenset()
) -> Callable[[JsonDict], dict[str, str]]:
    """Build ``GetAttrs``: the selectable field values of an object, missing ones as ``""``.

    ``bool_fields`` default to ``"false"`` when absent, as a Go bool field would.
    """

    def attrs(obj: JsonDict) -> dict[str, str]:
        out = {path: _as_field(_get(obj, path)) for path in paths}
        for path in bool_fields:
            if out.get(path) == "":
                out[path] = "false"
        return out

    return attrs
