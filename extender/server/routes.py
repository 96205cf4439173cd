"""HTTP routes: decode the Go-named JSON once, call the runtime, encode the answer.

Bad input (malformed JSON, missing or mistyped fields, wrong content type, oversized body) is a
4xx with a clear message. A failure inside a policy is answered with HTTP 200 and the verb's
``Error`` field (what kube-scheduler reads), logged with the pod's name, never a stack trace.
Every error body is JSON ``{"error": "..."}``, including Flask's own 404/405/413.

``PUT /profiles/<accelerator>/<model>`` is served by :mod:`qosched.extender.server.uploads`,
``GET /explain`` by :mod:`qosched.extender.server.explain_view`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from qosched.extender.server import wire
from qosched.extender.server.explain_view import ExplainError, explain_pod, parse_limit
from qosched.extender.server.runtime import Runtime
from qosched.extender.server.state import ExtenderState, state_of
from qosched.extender.server.uploads import UploadError

log = logging.getLogger(__name__)

api = Blueprint("qosched", __name__)

JSON = "application/json"


def _state() -> ExtenderState:
    return state_of(current_app)


def _runtime() -> Runtime:
    return _state().runtime


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=JSON)


def _error(status: int, message: str) -> Response:
    return _json(orjson.dumps({"error": message}), status)


def _loopback(addr: str | None) -> bool:
    if not addr:
        return False
    return addr == "::1" or addr.startswith(("127.", "::ffff:127."))


@dataclass(frozen=True, slots=True)
class VerbAnswer:
    """One scheduler verb's HTTP answer: status, JSON body, headers beyond the content type."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def serve_verb(
    state: ExtenderState,
    verb: str,
    read_body: Callable[[], bytes],
    content_type: str | None,
    remote_addr: str | None,
    *,
    loopback_only: bool,
) -> VerbAnswer:
    """Answer ``POST /<verb>`` without Flask's request machinery (``verbs_wsgi`` and the routes).

    The loopback rule first, then the body (``read_body`` raises a werkzeug 413 over
    ``MAX_CONTENT_LENGTH``), then decode → runtime → encode; bad input is a 4xx JSON error, and
    every answer is counted in the request metrics with its status and duration.
    """
    t0 = time.perf_counter()
    try:
        if loopback_only and not _loopback(remote_addr):
            answer = _error_answer(403, f"/{verb} is served to kube-scheduler on loopback only")
        else:
            answer = VerbAnswer(200, VERBS[verb](state, read_body(), content_type))
    except wire.WireError as err:
        answer = _error_answer(err.status, err.message)
    except HTTPException as err:  # e.g. 413 from MAX_CONTENT_LENGTH while reading the body
        answer = http_error_answer(err)
    state.metrics.observe_request(verb, answer.status, time.perf_counter() - t0)
    return answer


def _error_answer(status: int, message: str) -> VerbAnswer:
    return VerbAnswer(status, orjson.dumps({"error": message}))


def http_error_answer(err: HTTPException) -> VerbAnswer:
    """A werkzeug error as the extender's JSON error, keeping its headers but the content type."""
    headers = tuple((k, v) for k, v in err.get_headers() if k.lower() != "content-type")
    return VerbAnswer(err.code or 500, orjson.dumps({"error": err.description or err.name}), headers)


def _respond(answer: VerbAnswer) -> Response:
    response = _json(answer.body, answer.status)
    for key, value in answer.headers:
        response.headers[key] = value
    return response


def _http_error(err: HTTPException) -> Response:
    return _respond(http_error_answer(err))


@api.app_errorhandler(HTTPException)
def http_error(err: HTTPException) -> Response:
    """Flask's own errors (404, 405, 413...) as JSON like every other error of the extender."""
    return _http_error(err)


def _internal_error(state: ExtenderState, verb: str, pod: object, err: Exception) -> str:
    """Log a failure inside the runtime with the pod's name; the client gets no stack trace."""
    log.exception("%s failed for pod %s", verb, wire.pod_label(pod))  # type: ignore[arg-type]
    state.metrics.decision(verb, "error")
    return f"qosched: internal error: {type(err).__name__}"


def filter_body(state: ExtenderState, body: bytes, content_type: str | None) -> bytes:
    args = wire.parse_extender_args(body, content_type)
    names = wire.candidate_names(args)
    try:
        outcome = state.runtime.filter(args.pod, names)
    except Exception as err:
        error = _internal_error(state, "filter", args.pod, err)
        return wire.encode_filter_result(wire.filter_result_for(args, [], error=error))
    if args.nodes is None:
        # Names in, names out. ``Runtime.filter`` builds ``kept`` by compressing the request's
        # names in order and gives every other name exactly one reason, so the subset and
        # disjointness checks of ``filter_result_for`` (set algebra over every name, ~0.4 ms
        # at 5,000 nodes) cannot fail here; the hypothesis tests hold the runtime to it.
        result = wire.ExtenderFilterResult(
            None, tuple(outcome.kept), outcome.failed or None, outcome.unresolvable or None, outcome.error
        )
    else:
        result = wire.filter_result_for(
            args, outcome.kept, outcome.failed, outcome.unresolvable, outcome.error
        )
    return wire.encode_filter_result(result)


def prioritize_body(state: ExtenderState, body: bytes, content_type: str | None) -> bytes:
    args = wire.parse_extender_args(body, content_type)
    names = wire.candidate_names(args)
    try:
        scores = state.runtime.prioritize_array(args.pod, names)
    except Exception as err:
        # HostPriorityList has no Error field: answer "no preference" rather than fail the cycle.
        _internal_error(state, "prioritize", args.pod, err)
        scores = np.zeros(len(names), dtype=np.int64)
    return wire.encode_host_priorities(names, scores)


def bind_body(state: ExtenderState, body: bytes, content_type: str | None) -> bytes:
    args = wire.parse_binding_args(body, content_type)
    try:
        outcome = state.runtime.bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
        error = outcome.error
    except Exception as err:
        pod = {"metadata": {"namespace": args.pod_namespace, "name": args.pod_name}}
        error = _internal_error(state, "bind", pod, err)
    return wire.encode_binding_result(wire.ExtenderBindingResult(error))


def preempt_body(state: ExtenderState, body: bytes, content_type: str | None) -> bytes:
    args = wire.parse_preemption_args(body, content_type)
    proposed = wire.victim_uids(args)
    try:
        kept = state.runtime.preempt(args.pod, proposed)
    except Exception as err:
        # On failure, do not veto kube-scheduler's own (already valid) proposal.
        _internal_error(state, "preempt", args.pod, err)
        kept = {node: list(uids) for node, uids in proposed.items()}
    return wire.encode_preemption_result(wire.preemption_result_for(args, kept))


#: The scheduler verbs: ``POST /<verb>`` → the 200 answer's body (raises ``WireError`` on bad input).
VERBS: dict[str, Callable[[ExtenderState, bytes, str | None], bytes]] = {
    "filter": filter_body,
    "prioritize": prioritize_body,
    "bind": bind_body,
    "preempt": preempt_body,
}


def _flask_verb(verb: str) -> Response:
    """A verb through Flask (``verbs_wsgi`` answers them first in the app; this serves direct calls
    of the view functions and keeps the rules that make ``GET /filter`` a 405)."""
    answer = serve_verb(
        _state(),
        verb,
        lambda: request.get_data(cache=False),
        request.content_type,
        request.remote_addr,
        loopback_only=bool(current_app.config.get("SCHEDULER_VERBS_LOOPBACK_ONLY")),
    )
    return _respond(answer)


@api.post("/filter")
def filter_verb() -> Response:
    return _flask_verb("filter")


@api.post("/prioritize")
def prioritize_verb() -> Response:
    return _flask_verb("prioritize")


@api.post("/bind")
def bind_verb() -> Response:
    return _flask_verb("bind")


@api.post("/preempt")
def preempt_verb() -> Response:
    return _flask_verb("preempt")


@api.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@api.get("/readyz")
def readyz() -> Response:
    ready, why = _runtime().cache.readiness()  # synced, and (live) no watch broken too long
    return Response(f"{why}\n", status=200 if ready else 503, mimetype="text/plain")


@api.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(_state().registry), mimetype=CONTENT_TYPE_LATEST)


@api.get("/placements")
def placements() -> Response:
    """What qosched placed where (read-only, for operators and the demo): one entry per placed pod."""
    return _json(orjson.dumps(_runtime().placements()))


@api.get("/explain")
def explain() -> Response:
    """Why a pod fits where it does, per node with numbers (read-only; ``explain_view``):
    ``?namespace=NS&pod=NAME[&node=N ...][&limit=K]``."""
    args = request.args
    try:
        name = args.get("pod", "")
        if not name:
            raise ExplainError(400, "/explain needs ?pod=NAME (and namespace=NS, default 'default')")
        body = explain_pod(
            _runtime(),
            args.get("namespace") or "default",
            name,
            args.getlist("node"),
            parse_limit(args.get("limit")),
        )
    except ExplainError as err:
        return _error(err.status, err.message)
    return _json(orjson.dumps(body))


@api.get("/allocation")
def allocation() -> Response:
    """INFIDA's model allocation (node → service/variant → fractional and integral, window, time)."""
    source = _runtime().allocation
    doc = source.current() if source is not None else None
    if doc is None:
        why = "no allocation yet" if source is not None else "no allocation configured (ALLOCATION_CONFIGMAP)"
        return _error(404, why)
    return _json(orjson.dumps(doc))


# ---------------------------------------------------------------------- profiles
@api.get("/profiles")
def list_profiles() -> Response:
    current = _state().profile_store.current()
    body = {"version": current.version, "profiles": current.to_json()}
    return _json(orjson.dumps(body))


@api.put("/profiles/<accelerator>/<model>")
def upload_profile(accelerator: str, model: str) -> Response:
    """Upload one profile: 200 replaced / 201 new, with where it was stored and the new version.

    401 without the right bearer token, 403 when uploads are disabled, 400 malformed JSON, 413 over
    ``MAX_PROFILE_BYTES``, 415 not JSON, 422 an invalid profile (the message names the field),
    503 when the token or the storage is unavailable.
    """
    uploader = _state().uploader
    try:
        uploader.authorise(request.headers.get("Authorization"))
        try:
            wire.check_content_type(request.content_type)
        except wire.WireError as err:
            raise UploadError(err.status, err.message) from None
        limit = uploader.max_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise UploadError(413, f"profile: {length} bytes exceed the limit of {limit}")
        body = request.stream.read(limit + 1)  # bounded even for a chunked body
        result = uploader.upload(accelerator, model, body)
    except UploadError as err:
        response = _error(err.status, err.message)
        response.headers.update(err.headers)
        return response
    return _json(orjson.dumps(result.to_json()), 201 if result.created else 200)
