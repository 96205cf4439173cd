"""HTTP routes: decode the Go-named JSON once, call the runtime, encode the answer.

Bad input (malformed JSON, missing or mistyped fields, wrong content type, oversized body) is a
4xx with a clear message. A failure inside a policy is answered with HTTP 200 and the verb's
``Error`` field (what kube-scheduler reads), logged with the pod's name, never a stack trace.
Every error body is JSON ``{"error": "..."}``, including Flask's own 404/405/413.

``PUT /profiles/<accelerator>/<model>`` is served by :mod:`qosched.extender.server.uploads`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from qosched.extender.server import wire
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


def _timed(verb: str, fn: Callable[[], Response]) -> Response:
    metrics = _state().metrics
    t0 = time.perf_counter()
    try:
        if current_app.config.get("SCHEDULER_VERBS_LOOPBACK_ONLY") and not _loopback(request.remote_addr):
            response = _error(403, f"/{verb} is served to kube-scheduler on loopback only")
        else:
            response = fn()
    except wire.WireError as err:
        response = _error(err.status, err.message)
    except HTTPException as err:  # e.g. 413 from MAX_CONTENT_LENGTH while reading the body
        response = _http_error(err)
    metrics.observe_request(verb, response.status_code, time.perf_counter() - t0)
    return response


def _http_error(err: HTTPException) -> Response:
    response = _error(err.code or 500, err.description or err.name)
    for key, value in err.get_headers():
        if key.lower() != "content-type":
            response.headers[key] = value
    return response


@api.app_errorhandler(HTTPException)
def http_error(err: HTTPException) -> Response:
    """Flask's own errors (404, 405, 413...) as JSON like every other error of the extender."""
    return _http_error(err)


def _internal_error(verb: str, pod: object, err: Exception) -> str:
    """Log a failure inside the runtime with the pod's name; the client gets no stack trace."""
    log.exception("%s failed for pod %s", verb, wire.pod_label(pod))  # type: ignore[arg-type]
    _state().metrics.decision(verb, "error")
    return f"qosched: internal error: {type(err).__name__}"


def _body() -> bytes:
    return request.get_data(cache=False)


@api.post("/filter")
def filter_verb() -> Response:
    def run() -> Response:
        args = wire.parse_extender_args(_body(), request.content_type)
        names = wire.candidate_names(args)
        try:
            outcome = _runtime().filter(args.pod, names)
        except Exception as err:
            error = _internal_error("filter", args.pod, err)
            return _json(wire.encode_filter_result(wire.filter_result_for(args, [], error=error)))
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
        return _json(wire.encode_filter_result(result))

    return _timed("filter", run)


@api.post("/prioritize")
def prioritize_verb() -> Response:
    def run() -> Response:
        args = wire.parse_extender_args(_body(), request.content_type)
        names = wire.candidate_names(args)
        try:
            scores = _runtime().prioritize_array(args.pod, names)
        except Exception as err:
            # HostPriorityList has no Error field: answer "no preference" rather than fail the cycle.
            _internal_error("prioritize", args.pod, err)
            scores = np.zeros(len(names), dtype=np.int64)
        return _json(wire.encode_host_priorities(names, scores))

    return _timed("prioritize", run)


@api.post("/bind")
def bind_verb() -> Response:
    def run() -> Response:
        args = wire.parse_binding_args(_body(), request.content_type)
        try:
            outcome = _runtime().bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
            error = outcome.error
        except Exception as err:
            pod = {"metadata": {"namespace": args.pod_namespace, "name": args.pod_name}}
            error = _internal_error("bind", pod, err)
        return _json(wire.encode_binding_result(wire.ExtenderBindingResult(error)))

    return _timed("bind", run)


@api.post("/preempt")
def preempt_verb() -> Response:
    def run() -> Response:
        args = wire.parse_preemption_args(_body(), request.content_type)
        proposed = wire.victim_uids(args)
        try:
            kept = _runtime().preempt(args.pod, proposed)
        except Exception as err:
            # On failure, do not veto kube-scheduler's own (already valid) proposal.
            _internal_error("preempt", args.pod, err)
            kept = {node: list(uids) for node, uids in proposed.items()}
        return _json(wire.encode_preemption_result(wire.preemption_result_for(args, kept)))

    return _timed("preempt", run)


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
