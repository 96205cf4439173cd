"""``GET /explain``: one pod's rejection on every node, with numbers (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask

from tests.extender.extender_support import make_app, node, pod, write_snapshot


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    # "big" asks 4 CPUs: roomy (8) fits, medium (3) is the closest of the two that do not.
    objects: list[dict[str, Any]] = [node("small", cpu="2"), node("medium", cpu="3"), node("roomy", cpu="8")]
    objects += [pod("big", cpu="4", slo_ms=1000, rate_rps=1), pod("plain", model=None)]
    path: Path = tmp_path_factory.mktemp("explain") / "c.json"
    return make_app(write_snapshot(path, objects))


def _get(app: Flask, query: str) -> tuple[int, Any]:
    response = app.test_client().get("/explain?" + query)
    return response.status_code, orjson.loads(response.data)


def test_every_rejected_node_with_its_numbers(app: Flask) -> None:
    status, body = _get(app, "namespace=default&pod=big")
    assert status == 200
    assert body == {
        "pod": "default/big",
        "policy": "qosched",
        "fits": ["roomy"],
        "nodes": {
            "small": {
                "code": "insufficient_cpu",
                "message": "not enough free CPU",
                "detail": "needs 4000m CPU, has 2000m free",
            },
            "medium": {
                "code": "insufficient_cpu",
                "message": "not enough free CPU",
                "detail": "needs 4000m CPU, has 3000m free",
            },
        },
        "by_code": {
            "insufficient_cpu": {
                "nodes": 2,
                "text": "not enough free CPU (closest: medium: needs 4000m CPU, has 3000m free)",
            }
        },
        "truncated": 0,
    }


def test_named_nodes_and_the_limit(app: Flask) -> None:
    status, body = _get(app, "pod=big&node=small&node=ghost&limit=1")
    assert status == 200
    assert body["fits"] == []
    assert body["nodes"] == {
        "small": {
            "code": "insufficient_cpu",
            "message": "not enough free CPU",
            "detail": "needs 4000m CPU, has 2000m free",
        }
    }
    assert body["truncated"] == 1
    assert body["by_code"]["unknown_node"] == {
        "nodes": 1,
        "text": "node is not in the extender's cache (e.g. ghost)",
    }


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        pytest.param("namespace=default", 400, "/explain needs ?pod=NAME", id="no-pod"),
        pytest.param("pod=big&limit=x", 400, "limit must be an integer 0..1000, got 'x'", id="bad-limit"),
        pytest.param(
            "pod=big&limit=5000", 400, "limit must be an integer 0..1000, got 5000", id="limit-too-big"
        ),
        pytest.param("pod=nope", 404, "pod default/nope is not in the extender's cache", id="unknown-pod"),
        pytest.param("pod=plain", 422, "pod default/plain is not managed by qosched", id="unmanaged"),
    ],
)
def test_bad_requests_get_one_clear_line(app: Flask, query: str, status: int, error: str) -> None:
    got_status, body = _get(app, query)
    assert got_status == status
    assert body["error"].startswith(error)
