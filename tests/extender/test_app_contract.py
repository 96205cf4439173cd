"""Every request captured from a real kube-scheduler v1.36, replayed through the Flask app.

Fixtures: ``../shared/fixtures/kube-scheduler/`` (README there). ``cluster.yaml`` is the cluster of
the node-cache run, taken *after* the preemption request: three ``nvidia-t4`` nodes (cpu 2,
2 GPUs) each running two ``low`` pods (900m CPU, resnet50, 250 milli-GPU), and ``tpu-0``
(``edgetpu``) running ``low-3``, ``low-6`` and ``plain-0``. ``low-0`` itself is already bound to
``gpu-2`` there. The ``fullnodes`` requests come from a second cluster with other UIDs.

Expected answers, derived by hand from that snapshot:

* ``low`` (900m CPU): every GPU node has 2 x 900m = 1800m of 2000m used, 200m < 900m free, so it
  fails with "not enough free CPU" in ``FailedNodes`` (preemption could free it; one text for the
  three, naming the first as the closest: "needs 900m CPU, has 200m free"); ``tpu-0`` has no
  ``edgetpu`` profile for resnet50: ``FailedAndUnresolvableNodes``. Prioritize: all 0.
* ``plain`` (no annotation): untouched, every node passes, score 0.
* ``high`` preemption (1500m CPU): one victim frees 900m (1100m < 1500m), both free 2000m, so each
  GPU node keeps both proposed victims; ``tpu-0`` is dropped (no profile: eviction cannot help).
  With the other cluster's UIDs (fullnodes) no victim is known to the cache, evicting them frees
  nothing it knows of, so no node is kept.
* bind, node cache: ``low-0`` / ``plain-0`` are already bound to the requested nodes with the same
  UIDs: success without a second binding. Full nodes: same names, other UIDs: refused, naming both.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask

from qosched.extender.kube.binding import SnapshotBinder
from qosched.extender.server.app import runtime_of
from tests.extender.extender_support import (
    CLUSTER_YAML,
    FIXTURES,
    JSON_CT,
    QOSCHED_BIN,
    SMOKE,
    make_app,
    metric_value,
)

FILES = sorted(FIXTURES.glob("*.json"))
CPU_REASON = "qosched (qosched): not enough free CPU (closest: gpu-0: needs 900m CPU, has 200m free)"
PROFILE_REASON = (
    "qosched (qosched): no profile for this model on the node's accelerator"
    " (e.g. tpu-0: no profile of resnet50 for edgetpu)"
)


def load(name: str) -> dict[str, Any]:
    return orjson.loads((FIXTURES / name).read_bytes())


def names_of(body: dict[str, Any]) -> list[str]:
    if body.get("NodeNames") is not None:
        return list(body["NodeNames"])
    return [n["metadata"]["name"] for n in ((body.get("Nodes") or {}).get("items") or [])]


def files(prefix: str) -> list[Any]:
    return [pytest.param(p.name, id=p.stem) for p in FILES if p.name.startswith(prefix)]


@pytest.fixture
def app() -> Flask:
    return make_app(CLUSTER_YAML)


def post(app: Flask, name: str) -> tuple[dict[str, Any], Any]:
    fixture = load(name)
    response = app.test_client().post(
        "/" + fixture["verb"], data=orjson.dumps(fixture["request"]), content_type=JSON_CT
    )
    assert response.status_code == 200, response.text
    assert response.mimetype == JSON_CT
    return fixture["request"], orjson.loads(response.data)


def test_every_fixture_is_covered() -> None:
    verbs = {(load(p.name)["verb"], load(p.name)["nodeCacheCapable"]) for p in FILES}
    assert verbs == {(v, c) for v in ("filter", "prioritize", "bind", "preempt") for c in (True, False)}
    assert len(FILES) == 14


# ----------------------------------------------------------------------------- filter


@pytest.mark.parametrize("name", files("filter-"))
def test_filter_keeps_a_subset_and_gives_every_rejected_node_a_reason(app: Flask, name: str) -> None:
    request, answer = post(app, name)
    sent = names_of(request)
    kept = names_of(answer)
    failed = answer["FailedNodes"] or {}
    unresolvable = answer["FailedAndUnresolvableNodes"] or {}
    assert set(kept) <= set(sent)
    assert kept == [n for n in sent if n in set(kept)]  # request order
    assert set(kept).isdisjoint(failed)
    assert set(kept).isdisjoint(unresolvable)
    assert set(failed).isdisjoint(unresolvable)
    assert set(kept) | set(failed) | set(unresolvable) == set(sent)
    assert all(isinstance(r, str) and r for r in (*failed.values(), *unresolvable.values()))
    assert answer["Error"] == ""
    # The answer has the request's shape: names for the node cache, Node objects otherwise.
    if request["NodeNames"] is not None:
        assert answer["Nodes"] is None
        assert isinstance(answer["NodeNames"], list)
    else:
        assert answer["NodeNames"] is None
        by_name = {n["metadata"]["name"]: n for n in request["Nodes"]["items"]}
        assert answer["Nodes"]["items"] == [by_name[n] for n in kept]


@pytest.mark.parametrize("name", files("filter-low-"))
def test_filter_low_rejects_full_cpu_nodes_and_the_profileless_tpu(app: Flask, name: str) -> None:
    _, answer = post(app, name)
    assert names_of(answer) == []
    assert answer["FailedNodes"] == {"gpu-0": CPU_REASON, "gpu-1": CPU_REASON, "gpu-2": CPU_REASON}
    assert answer["FailedAndUnresolvableNodes"] == {"tpu-0": PROFILE_REASON}


@pytest.mark.parametrize("name", files("filter-plain-"))
def test_filter_lets_an_unmanaged_pod_through_untouched(app: Flask, name: str) -> None:
    request, answer = post(app, name)
    assert names_of(answer) == names_of(request)
    assert answer["FailedNodes"] is None
    assert answer["FailedAndUnresolvableNodes"] is None
    if request["Nodes"] is not None:
        assert answer["Nodes"] == request["Nodes"]  # the same objects, byte for byte


# ----------------------------------------------------------------------------- prioritize


@pytest.mark.parametrize("name", files("prioritize-"))
def test_prioritize_scores_every_node_once_with_integers_0_to_10(app: Flask, name: str) -> None:
    request, answer = post(app, name)
    assert isinstance(answer, list)
    hosts = [h["Host"] for h in answer]
    assert hosts == names_of(request)  # every input node, once, in request order
    assert all(type(h["Score"]) is int and 0 <= h["Score"] <= 10 for h in answer)
    assert all(set(h) == {"Host", "Score"} for h in answer)


@pytest.mark.parametrize("name", files("prioritize-"))
def test_prioritize_gives_0_where_nothing_fits_and_to_unmanaged_pods(app: Flask, name: str) -> None:
    # low: no node is feasible (see the module docstring); plain: not managed.
    _, answer = post(app, name)
    assert [h["Score"] for h in answer] == [0, 0, 0, 0]


# ----------------------------------------------------------------------------- bind


@pytest.mark.parametrize("name", files("bind-"))
def test_bind_answers_only_error(app: Flask, name: str) -> None:
    _, answer = post(app, name)
    assert set(answer) == {"Error"}
    assert isinstance(answer["Error"], str)


@pytest.mark.parametrize("name", [p for p in files("bind-") if "nodecache" in p.values[0]])
def test_bind_of_a_pod_already_on_that_node_succeeds_without_a_second_binding(app: Flask, name: str) -> None:
    _, answer = post(app, name)
    assert answer == {"Error": ""}
    binder = runtime_of(app).binder
    assert isinstance(binder, SnapshotBinder)
    assert binder.bindings == []


@pytest.mark.parametrize("name", [p for p in files("bind-") if "fullnodes" in p.values[0]])
def test_bind_with_another_clusters_uid_is_refused_naming_both_uids(app: Flask, name: str) -> None:
    request, answer = post(app, name)
    cluster_uid = {
        "low-0": "03ed0193-ecc3-428b-aa68-cf15ecd6d7f5",
        "plain-0": "8b4bf6eb-ca7c-4ad3-871e-de3dae0898bc",
    }
    expected = (
        f"pod default/{request['PodName']} has UID {cluster_uid[request['PodName']]}, not "
        f"{request['PodUID']}: it was deleted and recreated"
    )
    assert answer == {"Error": expected}
    binder = runtime_of(app).binder
    assert isinstance(binder, SnapshotBinder)
    assert binder.bindings == []


# ----------------------------------------------------------------------------- preempt


@pytest.mark.parametrize("name", files("preempt-"))
def test_preempt_only_removes_from_the_proposal(app: Flask, name: str) -> None:
    request, answer = post(app, name)
    assert set(answer) == {"NodeNameToMetaVictims"}
    if request["NodeNameToMetaVictims"] is not None:
        proposed = {n: [p["UID"] for p in v["Pods"]] for n, v in request["NodeNameToMetaVictims"].items()}
        pdb = {n: v["NumPDBViolations"] for n, v in request["NodeNameToMetaVictims"].items()}
    else:
        proposed = {
            n: [p["metadata"]["uid"] for p in v["Pods"]] for n, v in request["NodeNameToVictims"].items()
        }
        pdb = {n: v["NumPDBViolations"] for n, v in request["NodeNameToVictims"].items()}
    for node_name, victims in (answer["NodeNameToMetaVictims"] or {}).items():
        assert node_name in proposed
        uids = [p["UID"] for p in victims["Pods"]]
        assert set(uids) <= set(proposed[node_name])
        assert len(set(uids)) == len(uids)
        assert victims["NumPDBViolations"] == pdb[node_name]


def test_preempt_node_cache_keeps_both_victims_on_each_gpu_node_and_drops_the_tpu(app: Flask) -> None:
    request, answer = post(app, "preempt-high-nodecache.json")
    proposed = request["NodeNameToMetaVictims"]
    assert answer["NodeNameToMetaVictims"] == {n: proposed[n] for n in ("gpu-0", "gpu-1", "gpu-2")}


def test_preempt_with_victims_unknown_to_the_cache_keeps_no_node(app: Flask) -> None:
    _, answer = post(app, "preempt-high-fullnodes.json")
    assert answer == {"NodeNameToMetaVictims": {}}


# ----------------------------------------------------------------------------- whole run


def test_replaying_every_fixture_counts_each_verb_in_metrics(app: Flask) -> None:
    for path in FILES:
        post(app, path.name)
    text = app.test_client().get("/metrics").text
    for verb, count in {"filter": 4, "prioritize": 4, "bind": 4, "preempt": 2}.items():
        assert metric_value(text, "qosched_extender_requests_total", code="200", verb=verb) == count
        assert metric_value(text, "qosched_extender_request_duration_seconds_count", verb=verb) == count


@pytest.mark.slow
def test_contract_smoke_hook_passes_against_qosched_serve() -> None:
    """The hook CI runs: ``qosched serve --cluster`` under gunicorn, every fixture over HTTP."""
    assert QOSCHED_BIN.exists(), f"{QOSCHED_BIN}: install the project in .venv first"
    done = subprocess.run(
        [sys.executable, str(SMOKE), str(QOSCHED_BIN)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "14 captured kube-scheduler requests replayed, 0 problem(s)" in done.stdout
