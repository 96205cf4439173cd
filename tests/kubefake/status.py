"""``metav1.Status`` bodies exactly as kube-apiserver writes them, and the error that carries them.

kube-apiserver answers every failure with a ``Status`` object whose ``reason``, ``code``, ``message``
and ``details`` are built by ``k8s.io/apimachinery/pkg/api/errors`` (``NewNotFound``,
``NewAlreadyExists``, ``NewConflict``, ``NewInvalid``, ``NewBadRequest``, ``NewResourceExpired``...).
Clients branch on ``code`` and ``reason``, and people grep logs for the message, so the builders
below copy the upstream formats word for word, e.g.::

    NewConflict(pods/binding, "p"): Operation cannot be fulfilled on pods/binding "p": <cause>
    NewNotFound(pods, "p"):         pods "p" not found
    NewInvalid(Pod, "p", errs):     Pod "p" is invalid: spec: Invalid value: "Guaranteed": <detail>
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]

#: ``metav1.StatusReason`` for each HTTP code the fake can answer with (apimachinery ``errors.go``,
#: ``NewGenericServerResponse``); an injected failure uses the reason of its code.
REASON_BY_CODE: Mapping[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A failed API call: the ``Status`` body to send, its HTTP code and extra response headers."""

    def __init__(self, status: JsonDict, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status.get("message", ""))
        self.status = status
        self.code = int(status["code"])
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class GroupResource:
    """``schema.GroupResource``: what errors name, e.g. ``pods`` or ``leases.coordination.k8s.io``."""

    group: str
    resource: str

    def __str__(self) -> str:
        return self.resource if not self.group else f"{self.resource}.{self.group}"

    def details(self, name: str) -> JsonDict:
        """``StatusDetails`` as the apiserver fills them: group omitted when empty, kind = resource."""
        out: JsonDict = {"name": name}
        if self.group:
            out["group"] = self.group
        out["kind"] = self.resource
        return out


@dataclass(frozen=True, slots=True)
class FieldError:
    """One ``field.Error``; ``str()`` gives the upstream text, e.g. ``spec: Forbidden: <detail>``."""

    field: str
    kind: str  # "Invalid", "Required", "Forbidden", "NotSupported"
    detail: str = ""
    value: Any = None

    def _body(self) -> str:
        if self.kind == "Invalid":
            return f"Invalid value: {_go_quote(self.value)}: {self.detail}"
        if self.kind == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.kind == "NotSupported":
            return f"Unsupported value: {_go_quote(self.value)}: supported values: {self.detail}"
        return f"Forbidden: {self.detail}"

    def __str__(self) -> str:
        return f"{self.field}: {self._body()}"

    def cause(self) -> JsonDict:
        reason = {
            "Invalid": "FieldValueInvalid",
            "Required": "FieldValueRequired",
            "NotSupported": "FieldValueNotSupported",
        }.get(self.kind, "FieldValueForbidden")
        return {"reason": reason, "message": self._body(), "field": self.field}


def _go_quote(value: Any) -> str:
    """``%q`` for strings (Go quoting ≈ JSON quoting for printable text), ``%v`` otherwise."""
    return json.dumps(value) if isinstance(value, str) else str(value)


def aggregate(errors: Sequence[object]) -> str:
    """``utilerrors.Aggregate.Error()``: one message bare, several in ``[a, b]``."""
    texts = [str(e) for e in errors]
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"


def failure(code: int, message: str, reason: str | None = None, details: JsonDict | None = None) -> JsonDict:
    """A ``Status`` with ``status: Failure`` in the field order kube-apiserver serialises."""
    out: JsonDict = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    reason = reason if reason is not None else REASON_BY_CODE.get(code, "")
    if reason:
        out["reason"] = reason
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def success(code: int, details: JsonDict | None = None) -> JsonDict:
    """``&metav1.Status{Status: Success}`` after the create/delete handler filled in ``code``."""
    out: JsonDict = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def not_found(gr: GroupResource, name: str) -> ApiError:
    return ApiError(failure(404, f'{gr} "{name}" not found', "NotFound", gr.details(name)))


def already_exists(gr: GroupResource, name: str) -> ApiError:
    return ApiError(failure(409, f'{gr} "{name}" already exists', "AlreadyExists", gr.details(name)))


def conflict(gr: GroupResource, name: str, cause: str) -> ApiError:
    """``errors.NewConflict``: ``Operation cannot be fulfilled on <gr> "<name>": <cause>``."""
    message = f'Operation cannot be fulfilled on {gr} "{name}": {cause}'
    return ApiError(failure(409, message, "Conflict", gr.details(name)))


#: The cause of a write with a stale ``metadata.resourceVersion`` (``storage.ErrResourceVersionConflicts``
#: as the registry reports it, ``OptimisticLockErrorMsg`` in apimachinery).
OPTIMISTIC_LOCK_MSG = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def precondition_failed(gr: GroupResource, name: str, key: str, what: str, want: str, have: str) -> ApiError:
    """A failed UID/ResourceVersion precondition inside ``GuaranteedUpdate``.

    etcd3 ``checkPreconditions`` returns ``storage.NewInvalidObjError`` and ``InterpretUpdateError``
    turns it into a Conflict whose message embeds the ``StorageError`` text verbatim.
    """
    cause = (
        f"StorageError: invalid object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: "
        f"Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
    )
    return conflict(gr, name, cause)


def invalid(kind: str, name: str, errors: Sequence[FieldError], group: str = "") -> ApiError:
    """``errors.NewInvalid``: 422 ``<Kind> "<name>" is invalid: <field errors>``."""
    details: JsonDict = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [e.cause() for e in errors]
    return ApiError(failure(422, f'{kind} "{name}" is invalid: {aggregate(errors)}', "Invalid", details))


def bad_request(message: str) -> ApiError:
    return ApiError(failure(400, message, "BadRequest"))


def expired(message: str) -> ApiError:
    return ApiError(failure(410, message, "Expired"))


def too_old_resource_version(requested: int, oldest: int) -> JsonDict:
    """The watch cache's answer to a watch from a compacted version (``NewResourceExpired``)."""
    return failure(410, f"too old resource version: {requested} ({oldest})", "Expired")


def method_not_allowed() -> ApiError:
    return ApiError(
        failure(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")
    )


def no_such_path() -> ApiError:
    return ApiError(failure(404, "the server could not find the requested resource", "NotFound", {}))


def injected(code: int, message: str | None, retry_after_s: int | None) -> ApiError:
    """A failure injected with ``fail_next``, shaped like the apiserver's own for that code."""
    default_message = {
        429: "Too many requests, please try again later.",
        500: "Internal error occurred: injected by kubefake",
        503: "the server is currently unable to handle the request",
        504: "the server was unable to return a response in the time allotted, but may still be processing "
        "the request",
    }.get(code, f"injected failure {code}")
    details: JsonDict | None = None
    headers: dict[str, str] = {}
    if retry_after_s is None and code == 429:
        retry_after_s = 1
    if retry_after_s is not None:
        details = {"retryAfterSeconds": retry_after_s}
        headers["Retry-After"] = str(retry_after_s)
    return ApiError(failure(code, message or default_message, details=details), headers)
