"""A slow API server on the bind path (issue 12): never over-allocate, never stall the scheduler.

Faults injected with ``FakeKubeAPI.stall`` (a binding POST held, then committed) and
``fail_next`` (the node list failing, so the cache never syncs). The extender is the production
wiring (``create_app`` with a kubeconfig: ``LiveCluster`` + ``KubeBinder``) driven from real
threads, or the real gunicorn server (``tests/faults/bind_stall.py``). Each test asserts the
invariants of ``tests/faults/invariants.py``; the guarantees are stated in ``docs/reliability.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from qosched.extender.kube.watch import LiveCluster
from qosched.extender.server.app import runtime_of
from tests.extender.extender_support import metric_value
from tests.extender.live_support import wait_until
from tests.faults.bind_stall import drive, populate, serving_live
from tests.faults.invariants import VerbTimer, assert_invariants
from tests.kubefake import FakeKubeAPI, make_pod

#: The binder's API deadline in the in-process tests [s]: short, so a stall outlasts it quickly.
BIND_TIMEOUT_S = 0.3
#: How long the API holds the first binding before committing it [s] (> BIND_TIMEOUT_S).
STALL_S = 1.0


@pytest.fixture
def api(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    return kube_api


@pytest.fixture
def make_app(live_app_factory: Callable[..., Flask]) -> Callable[..., Flask]:
    """The production wiring on the fake API (``tests/conftest.py``), bind deadline ``BIND_TIMEOUT_S``."""

    def make(**overrides: Any) -> Flask:
        return live_app_factory(**{"POLICY": "qosched", "BIND_TIMEOUT_S": BIND_TIMEOUT_S, **overrides})

    return make


@pytest.fixture
def live(api: FakeKubeAPI, make_app: Callable[..., Flask]) -> Flask:
    """One node with one T4; the cache synced (the factory stops the watch afterwards)."""
    api.add_node("gpu-0", accelerator="nvidia-t4", gpus=1)
    app = make_app()
    assert _cache(app).wait_synced(5.0)
    return app


def _cache(app: Flask) -> LiveCluster:
    cache = runtime_of(app).cache
    assert isinstance(cache, LiveCluster)
    return cache


def _pod(api: FakeKubeAPI, app: Flask, name: str, milli: int = 600) -> dict[str, Any]:
    pod = api.add_pod(make_pod(name, model="resnet50", slo_ms=200, rate_rps=2, gpu_milli=milli))
    uid = pod["metadata"]["uid"]
    wait_until(lambda: _cache(app).pod(uid) is not None, what=f"pod {name} in the cache")
    return pod


def _bind(http: FlaskClient, pod: dict[str, Any], node: str, timer: VerbTimer | None = None) -> str:
    meta = pod["metadata"]
    body = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": node}
    if timer is None:
        return str(http.post("/bind", json=body).get_json()["Error"])
    with timer.timing("bind"):
        return str(http.post("/bind", json=body).get_json()["Error"])


def _filter(http: FlaskClient, pod: dict[str, Any], names: list[str], timer: VerbTimer) -> dict[str, Any]:
    with timer.timing("filter"):
        answer = http.post("/filter", json={"Pod": pod, "Nodes": None, "NodeNames": names}).get_json()
    assert isinstance(answer, dict)
    return answer


def _node_of(api: FakeKubeAPI, name: str) -> str | None:
    stored = api.get("pods", name)
    assert stored is not None
    node = stored["spec"].get("nodeName")
    return None if node is None else str(node)


# ------------------------------------------------------------------ a timed-out bind is unknown


def test_timed_out_bind_keeps_its_reservation_until_the_watch_confirms(live: Flask, api: FakeKubeAPI) -> None:
    """The write that timed out commits later: the devices it holds are never handed out again."""
    http, timer = live.test_client(), VerbTimer()
    a, b = _pod(api, live, "a"), _pod(api, live, "b")
    api.stall(r"/pods/a/binding$", STALL_S, times=1, verb="create")

    error = _bind(http, a, "gpu-0", timer)
    assert "timed out" in error  # kube-scheduler retries the pod; the outcome is unknown
    assert metric_value(http.get("/metrics").text, "qosched_extender_binds_outcome_unknown") == 1.0
    # a's 600 milli stay reserved: b (600 more) must not fit on the one device.
    answer = _filter(http, b, ["gpu-0"], timer)
    assert answer["NodeNames"] == []
    assert "gpu-0" in (answer["FailedNodes"] or {})
    assert "no longer fits" in _bind(http, b, "gpu-0", timer)

    wait_until(lambda: _node_of(api, "a") == "gpu-0", timeout_s=5, what="the stalled binding to commit")
    cache = _cache(live)
    wait_until(lambda: not cache.is_assumed(a["metadata"]["uid"]), what="the watch to confirm a")
    assert _node_of(api, "b") is None
    assert metric_value(http.get("/metrics").text, "qosched_extender_binds_outcome_unknown") == 0.0
    assert_invariants(api, cache=cache, created=["default/a", "default/b"], timer=timer)


def test_retried_bind_after_a_timeout_asks_the_api_again_and_binds_once(
    live: Flask, api: FakeKubeAPI
) -> None:
    """kube-scheduler's retry of the same pod to the same node: answered from the API, not a guess."""
    http = live.test_client()
    a = _pod(api, live, "a")
    api.stall(r"/pods/a/binding$", STALL_S, times=1, verb="create")
    assert "timed out" in _bind(http, a, "gpu-0")
    # The retry reaches the API (not answered "already bound" from the reservation alone) and
    # succeeds whether it lands before or after the stalled write.
    assert _bind(http, a, "gpu-0") == ""
    wait_until(lambda: api.count(subresource="binding") == 2, timeout_s=5, what="the stalled write")
    assert _node_of(api, "a") == "gpu-0"
    assert_invariants(api, cache=_cache(live), created=["default/a"])


def test_retry_to_another_node_while_the_outcome_is_unknown_is_refused(
    api: FakeKubeAPI, make_app: Callable[..., Flask]
) -> None:
    api.add_node("gpu-0", accelerator="nvidia-t4", gpus=1)
    api.add_node("gpu-1", accelerator="nvidia-t4", gpus=1)
    app = make_app()
    try:
        assert _cache(app).wait_synced(5.0)
        http = app.test_client()
        a = _pod(api, app, "a")
        api.stall(r"/pods/a/binding$", STALL_S, times=1, verb="create")
        assert "timed out" in _bind(http, a, "gpu-0")
        error = _bind(http, a, "gpu-1")
        assert "gpu-0" in error
        assert "unknown" in error
        wait_until(lambda: _node_of(api, "a") == "gpu-0", timeout_s=5, what="the stalled write")
        assert_invariants(api, cache=_cache(app), created=["default/a"])
    finally:
        _cache(app).stop()


def test_bind_timeouts_and_failures_are_logged_one_line_each(
    live: Flask, api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    http = live.test_client()
    a, b = _pod(api, live, "a", 300), _pod(api, live, "b", 300)
    api.stall(r"/pods/a/binding$", STALL_S, times=1, verb="create")
    api.fail_next(r"/pods/b/binding$", 503, verb="create")
    with caplog.at_level(logging.INFO, logger="qosched.extender.server"):
        _bind(http, a, "gpu-0")
        _bind(http, b, "gpu-0")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("qosched.extender.server")]
    timed_out = [line for line in lines if "default/a" in line]
    failed = [line for line in lines if "default/b" in line]
    assert len(timed_out) == 1, lines
    assert len(failed) == 1, lines
    assert "gpu-0" in timed_out[0]
    assert "outcome=timeout" in timed_out[0]
    assert "duration_ms=" in timed_out[0]
    assert "outcome=api" in failed[0]
    wait_until(lambda: _node_of(api, "a") == "gpu-0", timeout_s=5, what="the stalled write")


# ------------------------------------------------------------------ before the cache has synced


def test_verbs_before_the_first_sync_ask_the_scheduler_to_retry(
    api: FakeKubeAPI, make_app: Callable[..., Flask]
) -> None:
    """Not synced: filter answers an Error (retried soon), bind refuses, preempt proposes nothing."""
    api.add_node("gpu-0", accelerator="nvidia-t4", gpus=1)
    pod = api.add_pod(make_pod("a", model="resnet50", slo_ms=200, rate_rps=2, gpu_milli=300))
    api.fail_next("^/api/v1/nodes$", 503, times=1000, verb="list")
    app = make_app()
    try:
        http = app.test_client()
        assert http.get("/readyz").status_code == 503
        answer = http.post("/filter", json={"Pod": pod, "Nodes": None, "NodeNames": ["gpu-0"]}).get_json()
        assert "not synced" in answer["Error"]
        assert not answer["NodeNames"]
        assert not answer["FailedAndUnresolvableNodes"]
        scores = http.post("/prioritize", json={"Pod": pod, "Nodes": None, "NodeNames": ["gpu-0"]}).get_json()
        assert scores == [{"Host": "gpu-0", "Score": 0}]
        assert "not synced" in _bind(http, pod, "gpu-0")
        preempt = http.post(
            "/preempt",
            json={
                "Pod": pod,
                "NodeNameToVictims": None,
                "NodeNameToMetaVictims": {"gpu-0": {"Pods": [{"UID": "x"}], "NumPDBViolations": 0}},
            },
        ).get_json()
        assert preempt["NodeNameToMetaVictims"] in ({}, None)
        assert api.count(subresource="binding") == 0
    finally:
        _cache(app).stop()


# ------------------------------------------------------------------ binds never hold the verbs


@pytest.mark.slow
def test_filter_is_answered_within_budget_while_binds_hang(api: FakeKubeAPI, tmp_path: Path) -> None:
    """gunicorn with 8 threads, 16 binds held 2.5 s by the API: /filter still answers in ms."""
    names, probe = populate(api, nodes=8, gpus=4, binders=16, milli=250)
    with serving_live(api, tmp_path, {"QOSCHED_POLICY": "qosched"}) as (base, _proc):
        run = drive(base, api, names, probe, binders=16, stall_s=2.5)
    assert not run.filter_errors, run.filter_errors[:3]
    assert len(run.filter_s) >= 20
    assert run.quantile_s(0.99) < 0.5, f"filter p99 {run.quantile_s(0.99):.3f} s during the bind stall"
    assert max(run.bind_s) < 5.0 - 0.5  # every bind answered before kube-scheduler's httpTimeout
    bound = {p["metadata"]["name"] for p in api.list_objects("pods") if p["spec"].get("nodeName")}
    assert bound == {f"b-{i}" for i in range(16)}  # every pod bound in the end, nothing lost
    assert_invariants(api, created=run.pods)


def test_concurrent_binds_beyond_the_limit_are_answered_at_once(
    api: FakeKubeAPI, make_app: Callable[..., Flask]
) -> None:
    """Binds in flight are bounded: the excess gets an Error at once (kube-scheduler retries)."""
    api.add_node("gpu-0", accelerator="nvidia-t4", gpus=4)
    app = make_app(BIND_MAX_IN_FLIGHT=2, BIND_TIMEOUT_S=2.0)
    try:
        assert _cache(app).wait_synced(5.0)
        pods = [_pod(api, app, f"p{i}", 250) for i in range(4)]
        api.stall(r"/binding$", 1.0, times=2, verb="create")
        answers: dict[str, tuple[float, str]] = {}

        def bind(pod: dict[str, Any]) -> None:
            t0 = time.perf_counter()
            error = _bind(app.test_client(), pod, "gpu-0")
            answers[pod["metadata"]["name"]] = (time.perf_counter() - t0, error)

        first = [threading.Thread(target=bind, args=(p,)) for p in pods[:2]]
        for t in first:
            t.start()
        wait_until(lambda: runtime_of(app).binds_in_flight == 2, what="two binds in flight")
        assert metric_value(app.test_client().get("/metrics").text, "qosched_extender_binds_in_flight") == 2.0
        bind(pods[2])
        elapsed, error = answers["p2"]
        assert elapsed < 0.5
        assert "binds already in flight" in error
        for t in first:
            t.join(5)
        assert answers["p0"][1] == answers["p1"][1] == ""
        assert _bind(app.test_client(), pods[2], "gpu-0") == ""  # the retry goes through
        assert_invariants(api, cache=_cache(app), created=[f"default/p{i}" for i in range(4)])
    finally:
        _cache(app).stop()
