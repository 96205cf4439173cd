"""``verbs_wsgi.VerbDispatcher`` answers exactly what the Flask routes answer, without Flask.

Each request is sent twice to the same app: through the dispatcher (``app.wsgi_app``) and through
Flask alone (``app.wsgi_app.fallback``); status line, content type and body must be identical,
and both count the request in the metrics. The contract, error and hypothesis tests of the app
run through the dispatcher too (the test client calls ``app.wsgi_app``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from qosched.extender.server.app import create_app
from qosched.extender.server.verbs_wsgi import VerbDispatcher
from tests.extender.test_app_errors import _cluster_file, _filter_body

JSON_CT = "application/json"
NAMES = ["t4-0", "t4-1", "ghost"]
MANAGED = {"qosched.io/model": "resnet50", "qosched.io/slo-ms": "100", "qosched.io/rate-rps": "10"}
FILTER = orjson.dumps(_filter_body(MANAGED, NAMES))
UNMANAGED = orjson.dumps(_filter_body({}, NAMES))
BIND = orjson.dumps({"PodName": "p", "PodNamespace": "default", "PodUID": "u-x", "Node": "t4-0"})


@pytest.fixture
def app() -> Flask:
    return create_app({"CLUSTER_FILE": _cluster_file(), "MAX_CONTENT_LENGTH": 64 * 1024})


def _environ(
    method: str, path: str, body: bytes, content_type: str | None, remote: str, chunked: bool
) -> dict[str, Any]:
    builder = EnvironBuilder(path=path, method=method, data=body, content_type=content_type)
    environ = builder.get_environ()
    environ["REMOTE_ADDR"] = remote
    if chunked:  # gunicorn's chunked body: no length, the server marks the input terminated
        environ.pop("CONTENT_LENGTH", None)
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    return environ


def _call(wsgi: Any, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    chunks: Iterator[bytes] = iter(wsgi(environ, start_response))
    body = b"".join(chunks)
    return seen["status"], seen["headers"], body


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "remote", "chunked"),
    [
        pytest.param("POST", "/filter", FILTER, JSON_CT, "127.0.0.1", False, id="filter"),
        pytest.param("POST", "/filter", UNMANAGED, JSON_CT, "127.0.0.1", False, id="filter-unmanaged"),
        pytest.param("POST", "/prioritize", FILTER, JSON_CT, "127.0.0.1", False, id="prioritize"),
        pytest.param("POST", "/bind", BIND, JSON_CT, "127.0.0.1", False, id="bind-unknown-pod"),
        pytest.param("POST", "/preempt", b"{}", JSON_CT, "127.0.0.1", False, id="preempt-missing-fields"),
        pytest.param("POST", "/filter", FILTER, "text/plain", "127.0.0.1", False, id="text-plain-415"),
        pytest.param("POST", "/filter", FILTER, None, "127.0.0.1", False, id="no-content-type"),
        pytest.param("POST", "/filter", b"{", JSON_CT, "127.0.0.1", False, id="bad-json-400"),
        pytest.param("POST", "/filter", b"", JSON_CT, "127.0.0.1", False, id="empty-400"),
        pytest.param(
            "POST", "/filter", FILTER + b" " * 70_000, JSON_CT, "127.0.0.1", False, id="too-large-413"
        ),
        pytest.param(
            "POST", "/filter", FILTER + b" " * 70_000, JSON_CT, "127.0.0.1", True, id="chunked-too-large-413"
        ),
        pytest.param("POST", "/filter", FILTER, JSON_CT, "127.0.0.1", True, id="chunked"),
        pytest.param("POST", "/filter", FILTER, JSON_CT, "10.1.2.3", False, id="not-loopback-403"),
        pytest.param("GET", "/filter", b"", None, "127.0.0.1", False, id="get-405"),
        pytest.param("POST", "/filter/", FILTER, JSON_CT, "127.0.0.1", False, id="trailing-slash"),
        pytest.param("POST", "/nope", b"{}", JSON_CT, "127.0.0.1", False, id="unknown-404"),
    ],
)
def test_dispatcher_answers_as_flask_does(
    app: Flask, method: str, path: str, body: bytes, content_type: str | None, remote: str, chunked: bool
) -> None:
    dispatcher = app.wsgi_app
    assert isinstance(dispatcher, VerbDispatcher)
    fast = _call(dispatcher, _environ(method, path, body, content_type, remote, chunked))
    flask = _call(dispatcher.fallback, _environ(method, path, body, content_type, remote, chunked))
    assert fast[0] == flask[0]
    assert fast[1]["Content-Type"] == flask[1]["Content-Type"]
    assert int(fast[1]["Content-Length"]) == len(fast[2])
    assert fast[2] == flask[2]


def test_dispatcher_counts_requests_like_the_routes(app: Flask) -> None:
    dispatcher = app.wsgi_app
    assert isinstance(dispatcher, VerbDispatcher)
    for wsgi in (dispatcher, dispatcher.fallback):
        _call(wsgi, _environ("POST", "/prioritize", FILTER, JSON_CT, "127.0.0.1", False))
        _call(wsgi, _environ("POST", "/prioritize", FILTER, "text/plain", "127.0.0.1", False))
    metrics = app.test_client().get("/metrics").text
    assert 'qosched_extender_requests_total{code="200",verb="prioritize"} 2.0' in metrics
    assert 'qosched_extender_requests_total{code="415",verb="prioritize"} 2.0' in metrics


def test_a_bug_outside_the_verbs_is_a_json_500(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("qosched.extender.server.verbs_wsgi.serve_verb", broken)
    status, headers, body = _call(app.wsgi_app, _environ("POST", "/bind", BIND, JSON_CT, "127.0.0.1", False))
    assert status == "500 INTERNAL SERVER ERROR"
    assert headers["Content-Type"] == JSON_CT
    assert "boom" not in body.decode()
    assert orjson.loads(body)["error"]
