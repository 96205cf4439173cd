"""The thinnest Flask extender, the baseline every extender benchmark measures qosched against.

orjson in, every node passes (``filter``), every node scores 0 (``prioritize``), and ``bind``
either does nothing or calls the ``bind`` function it is given (``bench_scheduler_loop``: one
keep-alive ``v1.Binding`` POST, what a minimal Python extender with a bind verb must do).
One definition, so the benchmarks' baselines cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

#: ``bind(ExtenderBindingArgs) -> error string`` ("" when bound).
BindFn = Callable[[dict[str, Any]], str]


def node_names(doc: dict[str, Any]) -> list[str]:
    """The candidate names of an ExtenderArgs body, either shape (``nodeCacheCapable`` or not)."""
    if doc.get("NodeNames") is not None:
        return list(doc["NodeNames"])
    return [n["metadata"]["name"] for n in ((doc.get("Nodes") or {}).get("items") or [])]


def null_app(bind: BindFn | None = None) -> Any:
    """The null extender's Flask app; ``bind`` None answers every bind with no error."""
    from flask import Flask, Response, request

    app = Flask("null-extender")

    @app.post("/filter")
    def filter_() -> Response:
        doc = orjson.loads(request.get_data())
        out = {"Nodes": None, "NodeNames": node_names(doc), "FailedNodes": None, "Error": ""}
        return Response(orjson.dumps(out), mimetype="application/json")

    @app.post("/prioritize")
    def prioritize() -> Response:
        doc = orjson.loads(request.get_data())
        scores = [{"Host": n, "Score": 0} for n in node_names(doc)]
        return Response(orjson.dumps(scores), mimetype="application/json")

    @app.post("/bind")
    def bind_() -> Response:
        doc = orjson.loads(request.get_data())
        if bind is None:
            return Response(b'{"Error":""}', mimetype="application/json")
        return Response(orjson.dumps({"Error": bind(doc)}), mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        return Response("ready\n", mimetype="text/plain")

    return app
