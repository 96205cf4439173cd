"""Every request captured from a real kube-scheduler v1.36 parses, and our answers read back as Go reads them.

Fixtures: ``../shared/fixtures/kube-scheduler/*.json`` (see its README.md): each file is
``{"verb", "nodeCacheCapable", "request"}``; ``cluster.yaml`` is the cluster of the node-cache run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from qosched.extender.server import wire
from qosched.extender.server.wire import ExtenderArgs, ExtenderFilterResult, ExtenderPreemptionArgs

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "kube-scheduler"
FILES = sorted(FIXTURES.glob("*.json"))
JSON_CT = "application/json"

PARSERS: dict[str, Callable[[bytes, str], Any]] = {
    "filter": wire.parse_filter_args,
    "prioritize": wire.parse_prioritize_args,
    "bind": wire.parse_binding_args,
    "preempt": wire.parse_preemption_args,
}
ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "filter": wire.encode_extender_args,
    "prioritize": wire.encode_extender_args,
    "bind": wire.encode_binding_args,
    "preempt": wire.encode_preemption_args,
}


def load(path: Path) -> tuple[dict[str, Any], bytes, Any]:
    fixture = orjson.loads(path.read_bytes())
    body = orjson.dumps(fixture["request"])
    return fixture, body, PARSERS[fixture["verb"]](body, JSON_CT)


def by_name(pattern: str) -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in FILES if p.match(pattern)]


def scheduler_reads_filter(
    result: ExtenderFilterResult, node_cache_capable: bool, sent: list[str]
) -> list[str]:
    """What ``HTTPExtender.Filter`` (pkg/scheduler/extender.go) takes from an answer.

    Node cache: ``NodeNames`` if not nil, every name must be one it sent (else an error); otherwise
    ``Nodes.items`` if not nil; otherwise no node passes.
    """
    assert result.error == ""
    if node_cache_capable and result.node_names is not None:
        unknown = set(result.node_names) - set(sent)
        assert not unknown, f"scheduler would fail: unknown nodes {unknown}"
        return list(result.node_names)
    if result.nodes is not None:
        return [n["metadata"]["name"] for n in result.nodes]
    return []


def test_all_fixtures_are_found() -> None:
    """14 captured requests: 4 verbs x (nodecache, fullnodes), filter/prioritize/bind x 2 pods."""
    assert len(FILES) == 14, FILES
    verbs = sorted(orjson.loads(p.read_bytes())["verb"] for p in FILES)
    assert verbs == ["bind"] * 4 + ["filter"] * 4 + ["preempt"] * 2 + ["prioritize"] * 4


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in FILES])
def test_every_fixture_parses_and_re_encodes_byte_for_byte(path: Path) -> None:
    fixture, body, parsed = load(path)
    assert ("nodecache" in path.stem) is fixture["nodeCacheCapable"]
    # Same keys, same order, same nulls: what Go's encoding/json wrote.
    assert ENCODERS[fixture["verb"]](parsed) == body


@pytest.mark.parametrize("path", by_name("filter-*-nodecache.json") + by_name("prioritize-*-nodecache.json"))
def test_nodecache_args_carry_names_only(path: Path) -> None:
    fixture, _, args = load(path)
    assert isinstance(args, ExtenderArgs)
    assert args.nodes is None
    assert args.node_names == tuple(fixture["request"]["NodeNames"])
    assert sorted(args.node_names) == ["gpu-0", "gpu-1", "gpu-2", "tpu-0"]
    assert args.node_cache_capable


@pytest.mark.parametrize("path", by_name("filter-*-fullnodes.json") + by_name("prioritize-*-fullnodes.json"))
def test_fullnodes_args_carry_node_objects_only(path: Path) -> None:
    fixture, _, args = load(path)
    assert isinstance(args, ExtenderArgs)
    assert args.node_names is None
    assert args.nodes is not None
    assert list(args.nodes) == fixture["request"]["Nodes"]["items"]
    assert sorted(args.candidates) == ["gpu-0", "gpu-1", "gpu-2", "tpu-0"]
    assert {n["metadata"]["labels"]["qosched.io/accelerator"] for n in args.nodes} == {"nvidia-t4", "edgetpu"}
    assert not args.node_cache_capable


@pytest.mark.parametrize(
    ("path", "managed"),
    [
        pytest.param(p, "-low-" in p.name, id=p.stem)
        for p in FILES
        if p.name.startswith(("filter", "prioritize"))
    ],
)
def test_pod_annotations_as_captured(path: Path, managed: bool) -> None:
    _, _, args = load(path)
    annotations = args.pod["metadata"].get("annotations", {})
    if managed:
        assert annotations["qosched.io/gpu-milli"] == "250"
        assert annotations["qosched.io/class"] == "batch"
        assert args.pod["spec"]["priorityClassName"] == "qosched-low"
    else:
        assert not any(k.startswith("qosched.io/") for k in annotations)
        assert wire.pod_label(args.pod) == "default/plain-0"


@pytest.mark.parametrize("path", by_name("filter-*.json"))
def test_filter_answers_read_back_as_the_scheduler_reads_them(path: Path) -> None:
    fixture, _, args = load(path)
    candidates = wire.candidate_names(args)
    dropped, kept = candidates[0], candidates[1:]
    result = wire.filter_result_for(args, reversed(kept), failed={dropped: "qosched: insufficient_gpu"})
    body = wire.encode_filter_result(result)
    assert wire.parse_filter_result(body, JSON_CT) == result
    assert scheduler_reads_filter(result, fixture["nodeCacheCapable"], candidates) == kept  # request order
    decoded = orjson.loads(body)
    if fixture["nodeCacheCapable"]:
        assert decoded["Nodes"] is None
        assert decoded["NodeNames"] == kept
    else:
        assert decoded["NodeNames"] is None
        assert decoded["Nodes"]["items"] == fixture["request"]["Nodes"]["items"][1:]
    assert decoded["FailedNodes"] == {dropped: "qosched: insufficient_gpu"}
    assert decoded["FailedAndUnresolvableNodes"] is None


@pytest.mark.parametrize("path", by_name("prioritize-*.json"))
def test_prioritize_answers_round_trip(path: Path) -> None:
    _, _, args = load(path)
    hosts = wire.candidate_names(args)
    scores = [10, 0, 7, 3][: len(hosts)]
    body = wire.encode_host_priorities(hosts, scores)
    assert [(p.host, p.score) for p in wire.parse_host_priority_list(body, JSON_CT)] == list(
        zip(hosts, scores, strict=True)
    )
    unmanaged = wire.encode_host_priorities(hosts, [0] * len(hosts))
    assert orjson.loads(unmanaged) == [{"Host": h, "Score": 0} for h in hosts]


@pytest.mark.parametrize("path", by_name("bind-*.json"))
def test_bind_args_and_answer(path: Path) -> None:
    fixture, _, args = load(path)
    request = fixture["request"]
    assert (args.pod_name, args.pod_namespace, args.pod_uid, args.node) == (
        request["PodName"],
        request["PodNamespace"],
        request["PodUID"],
        request["Node"],
    )
    ok = wire.encode_binding_result(wire.ExtenderBindingResult())
    assert wire.parse_binding_result(ok, JSON_CT) == wire.ExtenderBindingResult("")


def test_preempt_nodecache_has_meta_victims_found_in_the_cluster_snapshot() -> None:
    fixture, _, args = load(FIXTURES / "preempt-high-nodecache.json")
    assert isinstance(args, ExtenderPreemptionArgs)
    assert args.node_name_to_victims is None
    assert args.node_name_to_meta_victims is not None
    assert sorted(args.node_name_to_meta_victims) == ["gpu-0", "gpu-1", "gpu-2", "tpu-0"]
    # cluster.yaml is this run's cluster: every victim UID is a pod running on that very node.
    snapshot = yaml.safe_load((FIXTURES / "cluster.yaml").read_text())
    node_of = {
        o["metadata"]["uid"]: o["spec"].get("nodeName") for o in snapshot["items"] if o["kind"] == "Pod"
    }
    for node, uids in wire.victim_uids(args).items():
        assert len(uids) == 2
        assert all(node_of[uid] == node for uid in uids), node
    # Accepting the whole proposal answers exactly the request's map.
    result = wire.preemption_result_for(args)
    body = wire.encode_preemption_result(result)
    assert orjson.loads(body) == {"NodeNameToMetaVictims": fixture["request"]["NodeNameToMetaVictims"]}
    assert wire.parse_preemption_result(body, JSON_CT) == result


def test_preempt_fullnodes_has_full_victim_pods() -> None:
    fixture, _, args = load(FIXTURES / "preempt-high-fullnodes.json")
    assert isinstance(args, ExtenderPreemptionArgs)
    assert args.node_name_to_meta_victims is None
    assert args.node_name_to_victims is not None
    for node, victims in args.node_name_to_victims.items():
        assert victims.pods is not None
        assert len(victims.pods) == 2
        for pod in victims.pods:
            assert pod["spec"]["nodeName"] == node  # full v1.Pod objects, bound to that node
            assert pod["spec"]["priorityClassName"] == "qosched-low"
        assert victims.num_pdb_violations == 0
    # The answer is always by UID; narrow it to one node as an extender may.
    result = wire.preemption_result_for(args, ["gpu-1"])
    want_uids = [p["metadata"]["uid"] for p in fixture["request"]["NodeNameToVictims"]["gpu-1"]["Pods"]]
    assert orjson.loads(wire.encode_preemption_result(result)) == {
        "NodeNameToMetaVictims": {"gpu-1": {"Pods": [{"UID": u} for u in want_uids], "NumPDBViolations": 0}}
    }


def test_bind_nodecache_matches_the_cluster_snapshot() -> None:
    snapshot = yaml.safe_load((FIXTURES / "cluster.yaml").read_text())
    node_of = {
        o["metadata"]["uid"]: o["spec"].get("nodeName") for o in snapshot["items"] if o["kind"] == "Pod"
    }
    for path in FILES:
        if path.match("bind-*-nodecache.json"):
            _, _, args = load(path)
            assert node_of[args.pod_uid] == args.node, path.name
