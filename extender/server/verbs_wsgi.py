"""The scheduler verbs straight from WSGI, in front of the Flask app (issue 19).

kube-scheduler calls ``POST /filter``, ``/prioritize`` and ``/bind`` once per pod each, inside its
one-pod-at-a-time cycle, so the extender's CPU per request is throughput. Flask's per-request
machinery (request and app contexts, URL matching, the ``Request`` object, the ``Response``
object and its header handling) cost ~6 % of the worker's GIL time in the scheduler-loop
benchmark's profile, for requests whose whole job is: read the body, decode, decide, encode.

:class:`VerbDispatcher` wraps ``app.wsgi_app``: a ``POST`` to exactly one of the verb paths is
answered by :func:`qosched.extender.server.routes.serve_verb` — the same code the Flask routes run,
so the loopback rule, the body limit (``MAX_CONTENT_LENGTH``, read through werkzeug's
``get_input_stream`` as ``Request.get_data`` does: a 413 even for a chunked body), the
content-type check, the error bodies, the status codes and the request metrics are those of the
routes. Everything else (other methods on these paths: Flask's 405; probes, metrics, uploads,
unknown paths) goes to Flask unchanged. Settings are read from ``app.config`` per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import InternalServerError
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from qosched.extender.server.routes import JSON, VERBS, VerbAnswer, http_error_answer, serve_verb
from qosched.extender.server.state import state_of

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: ``PATH_INFO`` → verb for the paths answered here.
PATHS = {f"/{verb}": verb for verb in VERBS}


def status_line(code: int) -> str:
    """The WSGI status line werkzeug's ``Response`` writes for ``code`` (``"400 BAD REQUEST"``)."""
    return f"{code} {HTTP_STATUS_CODES.get(code, 'unknown').upper()}"


_STATUS_LINES: dict[int, str] = {}


class VerbDispatcher:
    """WSGI middleware: the scheduler verbs without Flask, the rest through ``fallback``."""

    def __init__(self, app: Flask, fallback: WSGIApp) -> None:
        self.app = app
        self.fallback = fallback

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        verb = PATHS.get(environ.get("PATH_INFO", ""))
        if verb is None or environ.get("REQUEST_METHOD") != "POST":
            return self.fallback(environ, start_response)
        config = self.app.config
        limit = config.get("MAX_CONTENT_LENGTH")
        try:
            answer = serve_verb(
                state_of(self.app),
                verb,
                lambda: get_input_stream(environ, max_content_length=limit).read(),
                environ.get("CONTENT_TYPE"),
                environ.get("REMOTE_ADDR"),
                loopback_only=bool(config.get("SCHEDULER_VERBS_LOOPBACK_ONLY")),
            )
        except Exception:  # a bug outside the verbs' own handling: Flask's JSON 500, logged
            log.exception("POST /%s failed", verb)
            answer = http_error_answer(InternalServerError())
        return _start(answer, start_response)


def _start(answer: VerbAnswer, start_response: Callable[..., Any]) -> list[bytes]:
    status = _STATUS_LINES.get(answer.status)
    if status is None:
        status = _STATUS_LINES[answer.status] = status_line(answer.status)
    headers = [("Content-Type", JSON), ("Content-Length", str(len(answer.body))), *answer.headers]
    start_response(status, headers)
    return [answer.body]


def install(app: Flask) -> None:
    """Put :class:`VerbDispatcher` in front of ``app.wsgi_app`` (``create_app`` calls it)."""
    app.wsgi_app = VerbDispatcher(app, app.wsgi_app)  # type: ignore[method-assign]


__all__ = ["PATHS", "VerbDispatcher", "install", "status_line"]
