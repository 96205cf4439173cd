"""The three PATCH bodies kube-apiserver accepts for built-in types.

- ``application/json-patch+json`` — RFC 6902 operations (``add``, ``remove``, ``replace``, ``move``,
  ``copy``, ``test``) on JSON pointers (RFC 6901, ``~0``/``~1`` escapes, ``-`` = end of list).
- ``application/merge-patch+json`` — RFC 7386: objects merge recursively, ``null`` deletes a key,
  anything else (lists included) replaces.
- ``application/strategic-merge-patch+json`` — merge patch plus the Go struct tags
  ``patchStrategy:"merge"`` / ``patchMergeKey``: lists of objects listed in :data:`MERGE_KEYS` merge
  element-wise by that key (``spec.containers`` by ``name``, ``status.conditions`` by ``type``...),
  the directives ``$patch: replace|delete``, ``$retainKeys``, ``$deleteFromPrimitiveList/<field>``
  are honoured and ``$setElementOrder/<field>`` is accepted and ignored (order is kept as stored).
  The official Python client sends this type for any non-list ``body`` of ``patch_*``.

Server-side apply (``application/apply-patch+yaml``) is not implemented: the fake answers 415.
A patch that cannot be applied is a 422, as the apiserver's patcher reports it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from .status import ApiError, bad_request, failure

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
SUPPORTED_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

#: ``patchMergeKey`` of the list fields of Pod and Node (k8s.io/api/core/v1 types.go) that merge
#: element-wise; every other list is replaced whole. Keyed by field name: none of these names
#: carries a different key elsewhere in Pod, Node, ConfigMap, Secret or Lease.
MERGE_KEYS: Mapping[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resizePolicy": "resourceName",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "readinessGates": "conditionType",
    "conditions": "type",
    "ownerReferences": "uid",
    "taints": "key",
    "addresses": "type",
    "podIPs": "ip",
    "hostIPs": "ip",
}

#: Primitive lists tagged ``patchStrategy:"merge"``: the patch's items are added (set union).
MERGE_PRIMITIVE_LISTS = frozenset({"finalizers"})


def _patch_error(message: str) -> ApiError:
    return ApiError(failure(422, message, "Invalid"))


# --------------------------------------------------------------------------- JSON patch (RFC 6902)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _patch_error(f'invalid JSON pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit():
        raise _patch_error(f'doc is missing path: "{path}": invalid index "{token}"')
    idx = int(token)
    limit = len(container) if for_add else len(container) - 1
    if idx > limit:
        raise _patch_error(f'doc is missing path: "{path}": index out of range')
    return idx


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    cur = doc
    for token in tokens[:-1]:
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, path, for_add=False)]
        else:
            raise _patch_error(f'doc is missing path: "{path}": missing value')
    return cur


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _patch_error(f'doc is missing path: "{path}": missing value')
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, for_add=False)]
    raise _patch_error(f'doc is missing path: "{path}": missing value')


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, for_add=True), value)
    else:
        raise _patch_error(f'doc is missing path: "{path}": missing value')
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise _patch_error("unable to remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _patch_error(f'doc is missing path: "{path}": missing value')
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path, for_add=False))
    raise _patch_error(f'doc is missing path: "{path}": missing value')


def apply_json_patch(doc: Any, operations: Any) -> Any:
    """Apply RFC 6902 ``operations`` to a copy of ``doc``; all-or-nothing."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    out = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        apply_op = _JSON_PATCH_OPS.get(op["op"])
        if apply_op is None:
            raise bad_request(f"Unexpected kind: {op['op']}")
        out = apply_op(out, op)
    return out


def _op_add(doc: Any, op: dict[str, Any]) -> Any:
    return _add(doc, op["path"], copy.deepcopy(op.get("value")))


def _op_remove(doc: Any, op: dict[str, Any]) -> Any:
    return _remove(doc, op["path"])[0]


def _op_replace(doc: Any, op: dict[str, Any]) -> Any:
    path = op["path"]
    _get(doc, path)  # must exist
    doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
    return _add(doc, path, copy.deepcopy(op.get("value")))


def _op_move_or_copy(doc: Any, op: dict[str, Any]) -> Any:
    source = op.get("from", "")
    value = copy.deepcopy(_get(doc, source))
    if op["op"] == "move":
        doc, _ = _remove(doc, source)
    return _add(doc, op["path"], value)


def _op_test(doc: Any, op: dict[str, Any]) -> Any:
    if _get(doc, op["path"]) != op.get("value"):
        raise _patch_error(f"testing value {op['path']} failed: test failed")
    return doc


_JSON_PATCH_OPS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "add": _op_add,
    "remove": _op_remove,
    "replace": _op_replace,
    "move": _op_move_or_copy,
    "copy": _op_move_or_copy,
    "test": _op_test,
}


# --------------------------------------------------------------------------- merge patch (RFC 7386)


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386 merge of ``patch`` into a copy of ``doc``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


# --------------------------------------------------------------------------- strategic merge patch

_DELETE = object()  # marker: the element asked for its own removal ($patch: delete)


def _smp_map(original: Any, patch: dict[str, Any]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return _DELETE
    if directive is not None:
        raise bad_request(f"Unknown patch type: {directive}")
    out: dict[str, Any] = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key == "$retainKeys" or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = set(value or [])
            out[field] = [v for v in out.get(field) or [] if v not in drop]
            continue
        _smp_set(out, key, value)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        keep = set(retain)
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _smp_set(out: dict[str, Any], key: str, value: Any) -> None:
    """One field of a strategic merge: null deletes, maps and lists merge, scalars replace."""
    if value is None:
        out.pop(key, None)
    elif isinstance(value, dict):
        merged = _smp_map(out.get(key), value)
        if merged is _DELETE:
            out.pop(key, None)
        else:
            out[key] = merged
    elif isinstance(value, list):
        out[key] = _smp_list(key, out.get(key), value)
    else:
        out[key] = copy.deepcopy(value)


def _smp_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    current = copy.deepcopy(original) if isinstance(original, list) else []
    if field in MERGE_PRIMITIVE_LISTS:
        return current + [v for v in patch if v not in current]
    key = MERGE_KEYS.get(field)
    if key is None:
        return [v for v in copy.deepcopy(patch) if not (isinstance(v, dict) and v.get("$patch"))]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise _patch_error(f"map: {element!r} does not contain declared merge key: {key}")
        pos = next(
            (i for i, e in enumerate(current) if isinstance(e, dict) and e.get(key) == element[key]), None
        )
        if element.get("$patch") == "delete":
            if pos is not None:
                current.pop(pos)
            continue
        if pos is None:
            merged = _smp_map({}, element)
            if merged is not _DELETE:
                current.append(merged)
        else:
            current[pos] = _smp_map(current[pos], element)
    return current


def apply_strategic_merge_patch(doc: Any, patch: Any) -> Any:
    """Strategic merge of ``patch`` into a copy of ``doc`` (see the module docstring)."""
    if not isinstance(patch, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
    out = _smp_map(doc, patch)
    if out is _DELETE:
        raise _patch_error("a strategic merge patch cannot delete the whole object")
    return out


def apply_patch(content_type: str, doc: Any, patch: Any) -> Any:
    """Dispatch on the request's ``Content-Type`` (parameters such as ``; charset`` ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON_PATCH:
        return apply_json_patch(doc, patch)
    if media == MERGE_PATCH:
        return apply_merge_patch(doc, patch)
    if media == STRATEGIC_MERGE_PATCH:
        return apply_strategic_merge_patch(doc, patch)
    raise ApiError(
        failure(
            415,
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(SUPPORTED_PATCH_TYPES)} (kubefake does not implement server-side apply)",
            "UnsupportedMediaType",
        )
    )
