"""HTTP routes: decode the Go-named JSON once, call the runtime, encode the answer.

Bad input (malformed JSON, missing or mistyped fields, wrong content type, oversized body) is a
4xx with a clear message. A failure inside a policy is answered with HTTP 200 and the verb's
``Error`` field (what kube-scheduler reads), logged with the pod's name, never a stack trace.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qosched.extender import wire
from qosched.extender.runtime import Runtime

log = logging.getLogger(__name__)

api = Blueprint("qosched", __name__)

JSON = "application/json"


def _runtime() -> Runtime:
    rt = current_app.extensions["qosched"]
    assert isinstance(rt, Runtime)
    return rt


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=JSON)


def _error(status: int, message: str) -> Response:
    return _json(orjson.dumps({"error": message}), status)


def _timed(verb: str, fn: Callable[[], Response]) -> Response:
    metrics = current_app.extensions["qosched.metrics"]
    t0 = time.perf_counter()
    try:
        response = fn()
    except wire.WireError as err:
        response = _error(err.status, err.message)
    metrics.observe_request(verb, response.status_code, time.perf_counter() - t0)
    return response


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
            log.exception("filter failed for pod %s", wire.pod_label(args.pod))
            error = f"qosched: internal error: {type(err).__name__}"
            return _json(wire.encode_filter_result(wire.filter_result_for(args, [], error=error)))
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
            scores = _runtime().prioritize(args.pod, names)
        except Exception:
            # HostPriorityList has no Error field: answer "no preference" rather than fail the cycle.
            log.exception("prioritize failed for pod %s", wire.pod_label(args.pod))
            scores = [(n, 0) for n in names]
        return _json(wire.encode_host_priorities([h for h, _ in scores], [v for _, v in scores]))

    return _timed("prioritize", run)


@api.post("/bind")
def bind_verb() -> Response:
    def run() -> Response:
        args = wire.parse_binding_args(_body(), request.content_type)
        try:
            outcome = _runtime().bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
            error = outcome.error
        except Exception as err:
            log.exception("bind failed for pod %s/%s", args.pod_namespace, args.pod_name)
            error = f"qosched: internal error: {type(err).__name__}"
        return _json(wire.encode_binding_result(wire.ExtenderBindingResult(error)))

    return _timed("bind", run)


@api.post("/preempt")
def preempt_verb() -> Response:
    def run() -> Response:
        args = wire.parse_preemption_args(_body(), request.content_type)
        proposed = wire.victim_uids(args)
        try:
            kept = _runtime().preempt(args.pod, proposed)
        except Exception:
            # On failure, do not veto kube-scheduler's own (already valid) proposal.
            log.exception("preempt failed for pod %s", wire.pod_label(args.pod))
            kept = {node: list(uids) for node, uids in proposed.items()}
        return _json(wire.encode_preemption_result(wire.preemption_result_for(args, kept)))

    return _timed("preempt", run)


@api.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@api.get("/readyz")
def readyz() -> Response:
    if _runtime().cache.synced:
        return Response("ready\n", mimetype="text/plain")
    return Response("cluster cache not synced yet\n", status=503, mimetype="text/plain")


@api.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions["qosched.registry"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


@api.get("/placements")
def placements() -> Response:
    """What qosched placed where (read-only, for operators and the demo): one entry per placed pod."""
    return _json(orjson.dumps(_runtime().placements()))


# ---------------------------------------------------------------------- profiles
@api.get("/profiles")
def list_profiles() -> Response:
    store = _runtime().profile_store  # type: ignore[attr-defined]
    current = store.current()
    body = {"version": current.version, "profiles": current.to_json()}
    return _json(orjson.dumps(body))


def _token() -> str | None:
    settings = _runtime().settings  # type: ignore[attr-defined]
    path = settings.get("UPLOAD_TOKEN_FILE")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            return None
    secret_reader = current_app.extensions.get("qosched.token_reader")
    return secret_reader() if secret_reader else None


def _authorised() -> bool:
    expected = _token()
    header = request.headers.get("Authorization", "")
    if not expected or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), expected.encode())
