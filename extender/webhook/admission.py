"""``admission.k8s.io/v1`` ``AdmissionReview``: request in, response out, exactly as the API
server expects it (the response echoes ``request.uid``; a patch is base64 of a JSON array with
``patchType: JSONPatch``; a denial is ``allowed: false`` with a ``status`` the API server shows
the user: ``admission webhook "pods.qosched.io" denied the request: <message>``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from qosched.extender.kube.objects import ClassMapper, checked_demand, invalid_request_message, is_managed
from qosched.extender.webhook.mutation import WebhookOptions, pod_patch
from qosched.policies.types import DemandError

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
#: Workload kinds whose pod template the validating webhook checks: path to the template.
TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class ReviewError(ValueError):
    """The body is not an AdmissionReview v1 request (answered with HTTP 400)."""


def _request_of(review: Any) -> Mapping[str, Any]:
    if not isinstance(review, Mapping):
        raise ReviewError("body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise ReviewError(f"expected apiVersion {API_VERSION}, kind {KIND}")
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise ReviewError("request.uid is missing")
    return request


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _kind(request: Mapping[str, Any]) -> str:
    return str(_mapping(request.get("kind")).get("kind") or "")


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def allow(uid: str, ops: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops, separators=(",", ":")).encode()).decode()
    return _review(response)


def deny(uid: str, message: str) -> dict[str, Any]:
    return _review(
        {"uid": uid, "allowed": False, "status": {"code": 422, "reason": "Invalid", "message": message}}
    )


def _object_with_namespace(request: Mapping[str, Any]) -> dict[str, Any]:
    """``request.object`` with ``metadata.namespace`` filled in (absent on many CREATEs)."""
    obj = request.get("object")
    if not isinstance(obj, Mapping):
        raise ReviewError("request.object is missing")
    meta = dict(_mapping(obj.get("metadata")))
    meta.setdefault("namespace", request.get("namespace") or "default")
    return {**obj, "metadata": meta}


def mutate_review(review: Any, options: WebhookOptions, class_of: ClassMapper) -> dict[str, Any]:
    """Answer a pod CREATE: the patch, or the denial of an invalid qosched request."""
    request = _request_of(review)
    uid = request["uid"]
    if _kind(request) != "Pod" or request.get("operation") != "CREATE":
        return allow(uid)  # configured for pod CREATE only; anything else passes untouched
    try:
        ops = pod_patch(_object_with_namespace(request), options, class_of)
    except DemandError as err:
        return deny(uid, invalid_request_message(err))
    return allow(uid, ops)


def _template_pod(obj: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return None
    meta = {**_mapping(node.get("metadata")), "namespace": _mapping(obj.get("metadata")).get("namespace")}
    return {"metadata": meta, "spec": _mapping(node.get("spec"))}


def validate_review(review: Any, class_of: ClassMapper) -> dict[str, Any]:
    """Deny a workload whose pod template carries an invalid qosched request (at ``kubectl apply``
    time, instead of a ReplicaSet failing to create pods later)."""
    request = _request_of(review)
    uid = request["uid"]
    path = TEMPLATE_PATHS.get(_kind(request))
    if path is None or request.get("operation") not in ("CREATE", "UPDATE"):
        return allow(uid)
    pod = _template_pod(_object_with_namespace(request), path)
    if pod is None or not is_managed(pod):
        return allow(uid)
    try:
        checked_demand(pod, class_of)
    except DemandError as err:
        return deny(uid, invalid_request_message(err))
    return allow(uid)
