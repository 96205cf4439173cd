"""Prometheus reader (``qosched.extender.controller.prom``): the PromQL it sends, how results map to pods,
missing data (NaN, negative, absent, ambiguous) as no observation, ``+Inf`` kept, unit
conversion, and every failure (refused connection, HTTP error, non-vector result, non-JSON body)
as None with one log line. The server here is a loopback fake speaking the ``/api/v1/query`` JSON
of Prometheus; ``test_controller_loop.py`` runs the reader against a real Prometheus."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from qosched.extender.controller.prom import (
    DEFAULT_QUANTILE_QUERY,
    PromQueries,
    PromReader,
    PromSnapshot,
)

JsonDict = dict[str, Any]


def vector(*series: tuple[dict[str, str], str]) -> JsonDict:
    """A Prometheus instant-query answer with the given (labels, value) series."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": labels, "value": [1700000000.123, value]} for labels, value in series],
        },
    }


class FakePrometheus:
    """``GET /api/v1/query?query=...`` on 127.0.0.1, answered by ``respond(query) -> (code, body)``."""

    def __init__(self, respond: Callable[[str], tuple[int, Any]]) -> None:
        self.respond = respond
        self.queries: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/api/v1/query":
                    self.send_error(404)
                    return
                query = parse_qs(parts.query)["query"][0]
                fake.queries.append(query)
                code, body = fake.respond(query)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakePrometheus:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def prom_answer() -> Iterator[Callable[[Callable[[str], tuple[int, Any]]], FakePrometheus]]:
    started: list[FakePrometheus] = []

    def start(respond: Callable[[str], tuple[int, Any]]) -> FakePrometheus:
        fake = FakePrometheus(respond).__enter__()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.__exit__()


# ------------------------------------------------------------------------------ queries


@pytest.mark.parametrize(
    ("call", "want"),
    [
        (
            lambda q: q.quantile(95.0),
            "histogram_quantile(0.95, sum by (namespace, pod, le) (rate(lat_seconds_bucket[30s])))",
        ),
        (
            lambda q: q.quantile(99.9),
            "histogram_quantile(0.999, sum by (namespace, pod, le) (rate(lat_seconds_bucket[30s])))",
        ),
        (
            lambda q: q.mean(),
            "sum by (namespace, pod) (rate(lat_seconds_sum[30s])) / sum by (namespace, pod) (rate(lat_seconds_count[30s]))",
        ),
        (lambda q: q.rate(), "sum by (namespace, pod) (rate(lat_seconds_count[30s]))"),
    ],
    ids=["p95", "p99.9", "mean", "rate"],
)
def test_default_queries(call: Callable[[PromQueries], str], want: str) -> None:
    assert call(PromQueries(metric="lat_seconds", window="30s")) == want


def test_custom_template_and_labels() -> None:
    q = PromQueries(
        metric="m",
        quantile_query='histogram_quantile($quantile, sum by (kubernetes_pod, le) (rate(${metric}_bucket{job="x"}[$window])))',
        pod_label="kubernetes_pod",
    )
    assert (
        q.quantile(50) == 'histogram_quantile(0.5, sum by (kubernetes_pod, le) (rate(m_bucket{job="x"}[1m])))'
    )


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"metric": "9lat"}, "metric"),
        ({"metric": "lat-seconds"}, "metric"),
        ({"window": "5"}, "window"),
        ({"window": "1 m"}, "window"),
        ({"quantile_query": "histogram_quantile(0.9, x)"}, r"must use \$quantile"),
        ({"mean_query": "rate(${metric}[$windw])"}, "unknown placeholder"),
        ({"rate_query": "rate(x[$window]) $"}, "not a valid template"),
        ({"pod_label": "pod-name"}, "pod_label"),
        ({"unit_to_ms": 0.0}, "unit_to_ms"),
        ({"unit_to_ms": math.inf}, "unit_to_ms"),
    ],
    ids=[
        "metric-digit",
        "metric-dash",
        "window-no-unit",
        "window-space",
        "quantile-missing",
        "placeholder-typo",
        "stray-dollar",
        "label-dash",
        "unit-zero",
        "unit-inf",
    ],
)
def test_queries_reject(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PromQueries(**kw)


@pytest.mark.parametrize("percentile", [0.0, 100.0, -5.0], ids=["zero", "hundred", "negative"])
def test_quantile_out_of_range(percentile: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        PromQueries().quantile(percentile)


def test_reader_rejects_bad_url() -> None:
    with pytest.raises(ValueError, match="http"):
        PromReader("prometheus:9090")


# ------------------------------------------------------------------------------ parsing


def test_vector_mapping_and_missing_data(
    prom_answer: Callable[..., FakePrometheus], caplog: pytest.LogCaptureFixture
) -> None:
    answer = vector(
        ({"namespace": "a", "pod": "ok"}, "0.012"),
        ({"namespace": "a", "pod": "nan"}, "NaN"),
        ({"namespace": "a", "pod": "inf"}, "+Inf"),
        ({"namespace": "a", "pod": "negative"}, "-0.5"),
        ({"namespace": "a"}, "0.3"),  # no pod label: ignored
        ({"namespace": "a", "pod": "dup"}, "0.1"),
        ({"namespace": "a", "pod": "dup"}, "0.2"),  # two series for one pod: ambiguous
        ({"pod": "no-ns"}, "0.004"),
        ({"namespace": "b", "pod": "ok"}, "0.5"),
    )
    fake = prom_answer(lambda _q: (200, answer))
    reader = PromReader(fake.url, PromQueries(metric="lat"))
    with caplog.at_level(logging.WARNING, logger="qosched.extender.controller.prom"):
        got = reader.query_vector("whatever")
    assert got == {("a", "ok"): 0.012, ("a", "inf"): math.inf, (None, "no-ns"): 0.004, ("b", "ok"): 0.5}
    assert "2 series for pod a/dup" in caplog.text
    reader.close()


def test_unreadable_sample_is_skipped(prom_answer: Callable[..., FakePrometheus]) -> None:
    body = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {"pod": "p"}, "value": []}]},
    }
    fake = prom_answer(lambda _q: (200, body))
    assert PromReader(fake.url).query_vector("q") == {}


def test_read_asks_each_percentile_once_and_converts_to_ms(
    prom_answer: Callable[..., FakePrometheus],
) -> None:
    def respond(query: str) -> tuple[int, Any]:
        if query.startswith("histogram_quantile(0.95"):
            return 200, vector(({"namespace": "ns", "pod": "p95pod"}, "0.040"))
        if query.startswith("histogram_quantile(0.99"):
            return 200, vector(({"namespace": "ns", "pod": "p99pod"}, "+Inf"))
        if "_sum" in query:
            return 200, vector(({"namespace": "ns", "pod": "meanpod"}, "0.0025"))
        return 200, vector(
            ({"namespace": "ns", "pod": "meanpod"}, "12.5"), ({"namespace": "ns", "pod": "idle"}, "0")
        )

    fake = prom_answer(respond)
    reader = PromReader(fake.url, PromQueries(metric="lat_seconds", window="10s"))
    snap = reader.read([95.0, None, 99.0, 95.0, None])
    assert snap is not None
    assert len(fake.queries) == 4  # mean, p95, p99, rate: each once
    assert fake.queries[0].startswith("sum by (namespace, pod) (rate(lat_seconds_sum[10s]))")
    assert snap.latency_of("ns", "meanpod", None) == pytest.approx(2.5)
    assert snap.latency_of("ns", "p95pod", 95.0) == pytest.approx(40.0)
    assert snap.latency_of("ns", "p99pod", 99.0) == math.inf
    assert snap.latency_of("ns", "meanpod", 95.0) is None  # asked at another percentile
    assert snap.latency_of("other", "meanpod", None) is None
    assert snap.rate_of("ns", "meanpod") == 12.5
    assert snap.rate_of("ns", "idle") == 0.0
    reader.close()


def test_milliseconds_metric_is_not_rescaled(prom_answer: Callable[..., FakePrometheus]) -> None:
    fake = prom_answer(lambda _q: (200, vector(({"namespace": "n", "pod": "p"}, "7.5"))))
    snap = PromReader(fake.url, PromQueries(metric="lat_ms", unit_to_ms=1.0)).read([None], with_rate=False)
    assert snap is not None
    assert snap.latency_of("n", "p", None) == 7.5
    assert not snap.rate_rps


def test_snapshot_matches_series_without_namespace_by_pod_name() -> None:
    snap = PromSnapshot({None: {(None, "p"): 3.0, ("x", "q"): 4.0}})
    assert snap.latency_of("anything", "p", None) == 3.0
    assert snap.latency_of("x", "q", None) == 4.0
    assert snap.latency_of("y", "q", None) is None


# ------------------------------------------------------------------------------ failures


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_gives_none_and_one_error(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    reader = PromReader(url, retries=0, timeout_s=1.0)
    with caplog.at_level(logging.ERROR, logger="qosched.extender.controller.prom"):
        assert reader.read([None]) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert url in errors[0].getMessage()
    assert "skipping this cycle" in errors[0].getMessage()


@pytest.mark.parametrize(
    ("code", "body", "message"),
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}, "refused query"),
        (
            200,
            {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}},
            "instant vector",
        ),
        (200, b"<html>gateway</html>", "not JSON"),
    ],
    ids=["http-400", "scalar-result", "html-body"],
)
def test_failed_query_gives_none(
    prom_answer: Callable[..., FakePrometheus],
    caplog: pytest.LogCaptureFixture,
    code: int,
    body: Any,
    message: str,
) -> None:
    fake = prom_answer(lambda _q: (code, body))
    reader = PromReader(fake.url, retries=0)
    with caplog.at_level(logging.ERROR, logger="qosched.extender.controller.prom"):
        assert reader.read([None, 95.0]) is None
    assert message in caplog.text
    assert len(fake.queries) == 1  # stops at the first failure: no partial snapshot


def test_rate_failure_fails_the_whole_read(prom_answer: Callable[..., FakePrometheus]) -> None:
    def respond(query: str) -> tuple[int, Any]:
        if "_count" in query and "_sum" not in query:
            return 503, {"status": "error", "error": "overloaded"}
        return 200, vector(({"namespace": "n", "pod": "p"}, "0.001"))

    fake = prom_answer(respond)
    assert PromReader(fake.url, retries=0).read([None]) is None


def test_default_quantile_template_is_valid() -> None:
    assert "$quantile" in DEFAULT_QUANTILE_QUERY
    assert PromQueries().quantile(90).startswith("histogram_quantile(0.9,")
