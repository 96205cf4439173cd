"""Property tests of the Flask app: whatever arrives, no 5xx, no crash, answers that kube-scheduler
can use (filter ⊆ input with a reason for every other node, every node scored once in 0..10,
preempt only narrows, bind answers only ``Error``), and no device ever booked past 1000 milli.

Two generators: arbitrary JSON-ish documents (and raw bytes), and well-formed requests whose pods
carry annotations drawn from valid and invalid values and whose candidates mix known and unknown
node names.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosched.extender.kube.objects import is_managed
from qosched.extender.server.app import runtime_of
from tests.extender.extender_support import JSON_CT, make_app, node, pod, write_snapshot

NODES = ["t4-0", "t4-1", "a100-0", "tpu-0", "cpu-0"]
RUNNING = [
    pod("run-0", node_name="t4-0", annotations={"qosched.io/device": "0"}),
    pod("run-1", node_name="a100-0", gpu_milli=500, annotations={"qosched.io/device": "0"}),
    pod("run-2", model="mobilenet_v2", gpu_milli=None, node_name="tpu-0"),
]
PENDING = [pod(f"pend-{i}", rate_rps=5, slo_ms=200) for i in range(6)]


def _app() -> Any:
    directory = Path(tempfile.mkdtemp(prefix="qosched-hypothesis-"))
    objects = [
        node("t4-0"),
        node("t4-1"),
        node("a100-0", "nvidia-a100", gpus=1, sharing="mps"),
        node("tpu-0", "edgetpu", gpus=0),
        node("cpu-0", None, gpus=0),
        *RUNNING,
        *PENDING,
    ]
    return make_app(write_snapshot(directory / "cluster.json", objects))


APP = _app()
CLIENT = APP.test_client()
VERBS = ("filter", "prioritize", "bind", "preempt")
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
GO_KEYS = [
    "Pod",
    "Nodes",
    "NodeNames",
    "PodName",
    "PodNamespace",
    "PodUID",
    "Node",
    "NodeNameToVictims",
    "NodeNameToMetaVictims",
]
json_docs = (
    st.dictionaries(st.sampled_from(GO_KEYS) | st.text(max_size=6), json_values, max_size=5) | json_values
)

NUMBERS = [
    "1",
    "10",
    "0",
    "-5",
    "1e12",
    "nan",
    "inf",
    "-inf",
    "",
    " 20 ",
    "abc",
    "1500",
    "250",
    "2000",
    "2.5",
    "99.9",
    "120",
    "0.5",
    "1e-300",
]
ANNOTATION_VALUES = {
    "qosched.io/model": [
        "resnet50",
        "resnet18",
        "mobilenet_v2",
        "efficientnet_s",
        "no_such_model",
        "",
        "RESNET50",
    ],
    "qosched.io/slo-ms": NUMBERS,
    "qosched.io/slo-percentile": NUMBERS,
    "qosched.io/rate-rps": NUMBERS,
    "qosched.io/class": ["prod", "batch", "free", "gold", ""],
    "qosched.io/gpu-milli": NUMBERS,
    "qosched.io/variants": ["resnet50,resnet18", "mobilenet_v2", ",,", "resnet50,no_such_model", ""],
    "qosched.io/min-accuracy": NUMBERS,
    "qosched.io/device": ["0", "1,2", "x"],
    "other.io/thing": ["x"],
}
annotations = st.dictionaries(st.sampled_from(sorted(ANNOTATION_VALUES)), st.just(""), max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: st.sampled_from(ANNOTATION_VALUES[k]) for k in keys})
)
quantities = st.sampled_from(["100m", "1", "0", "2000", "64", "-1", "abc", "1e3", "", "1Gi", "900m"])
resources = st.dictionaries(
    st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "example.com/fpga"]), quantities, max_size=3
)
specs = st.fixed_dictionaries(
    {
        "containers": st.lists(
            st.fixed_dictionaries(
                {"name": st.just("c"), "resources": st.fixed_dictionaries({"requests": resources})}
            ),
            max_size=2,
        ),
        "priority": st.integers(-(2**31), 2**31) | st.sampled_from(["10", None, "x"]),
        "priorityClassName": st.sampled_from(["", "qosched-high", "qosched-low", "system-node-critical"]),
    }
)
names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=12)
# Mostly well-formed specs with bad values; sometimes any JSON in any place of the spec.
odd_specs = st.fixed_dictionaries(
    {},
    optional={
        "containers": json_values | st.lists(st.fixed_dictionaries({"resources": json_values}), max_size=2),
        "initContainers": json_values,
        "overhead": json_values,
        "priority": json_values,
    },
)
pods = st.builds(
    lambda n, uid, ann, spec: {
        "metadata": {"name": n, "namespace": "default", "uid": uid, "annotations": ann},
        "spec": spec,
    },
    names,
    st.sampled_from([p["metadata"]["uid"] for p in PENDING + RUNNING]) | names,
    annotations,
    specs | odd_specs | json_values,
)
candidates = st.lists(st.sampled_from(NODES) | names, max_size=8, unique=True)


def dumps(doc: Any) -> bytes:
    """The stdlib encoder: Python integers of any size (orjson refuses those beyond 64 bits)."""
    return json.dumps(doc).encode()


def post(verb: str, body: bytes) -> Any:
    return CLIENT.post("/" + verb, data=body, content_type=JSON_CT)


def no_device_overbooked() -> None:
    state = runtime_of(APP).cache.state
    assert (state.gpu_used_milli <= 1000).all(), state.gpu_used_milli
    assert (state.gpu_used_milli >= 0).all()


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(verb=st.sampled_from(VERBS), doc=json_docs)
def test_arbitrary_json_never_gets_a_5xx(verb: str, doc: Any) -> None:
    response = post(verb, json.dumps(doc).encode())  # stdlib: integers of any size
    assert response.status_code in (200, 400, 413), response.text
    assert response.mimetype == JSON_CT
    if response.status_code != 200:
        assert response.get_json()["error"]


@SETTINGS
@given(verb=st.sampled_from(VERBS), body=st.binary(max_size=64))
def test_arbitrary_bytes_never_get_a_5xx(verb: str, body: bytes) -> None:
    response = post(verb, body)
    assert response.status_code in (200, 400), response.text


@SETTINGS
@given(pod_obj=pods, names=candidates, full=st.booleans())
def test_filter_keeps_a_subset_and_explains_every_other_node(
    pod_obj: dict[str, Any], names: list[str], full: bool
) -> None:
    if full:
        body = {
            "Pod": pod_obj,
            "Nodes": {"metadata": {}, "items": [{"metadata": {"name": n}} for n in names]},
            "NodeNames": None,
        }
    else:
        body = {"Pod": pod_obj, "Nodes": None, "NodeNames": names}
    response = post("filter", dumps(body))
    assert response.status_code == 200, response.text
    answer = response.get_json()
    if full:
        kept = [n["metadata"]["name"] for n in (answer["Nodes"] or {}).get("items") or []]
        assert answer["NodeNames"] is None
    else:
        kept = answer["NodeNames"]
        assert answer["Nodes"] is None
    failed = set(answer["FailedNodes"] or {})
    unresolvable = set(answer["FailedAndUnresolvableNodes"] or {})
    assert kept == [n for n in names if n in set(kept)]
    assert set(kept).isdisjoint(failed | unresolvable)
    assert failed.isdisjoint(unresolvable)
    assert answer["Error"] == ""  # bad annotations are reasons, never an internal error
    assert set(kept) | failed | unresolvable == set(names)
    if is_managed(pod_obj):
        assert set(kept) <= set(NODES)  # an unknown node is never kept for a managed pod
    else:
        assert kept == names  # an unmanaged pod passes untouched, unknown nodes included


@SETTINGS
@given(pod_obj=pods, names=candidates)
def test_prioritize_scores_every_node_once_within_0_to_10(pod_obj: dict[str, Any], names: list[str]) -> None:
    response = post("prioritize", dumps({"Pod": pod_obj, "Nodes": None, "NodeNames": names}))
    assert response.status_code == 200, response.text
    answer = response.get_json()
    assert [h["Host"] for h in answer] == names
    assert all(type(h["Score"]) is int and 0 <= h["Score"] <= 10 for h in answer)
    assert all(h["Score"] == 0 for h in answer if h["Host"] not in NODES)


@SETTINGS
@given(
    pod_obj=pods,
    proposal=st.dictionaries(
        st.sampled_from(NODES) | names,
        st.lists(st.sampled_from([p["metadata"]["uid"] for p in RUNNING]) | names, max_size=3, unique=True),
        max_size=4,
    ),
)
def test_preempt_only_narrows_the_proposal(pod_obj: dict[str, Any], proposal: dict[str, list[str]]) -> None:
    metas = {n: {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": 0} for n, uids in proposal.items()}
    body = {"Pod": pod_obj, "NodeNameToVictims": None, "NodeNameToMetaVictims": metas}
    response = post("preempt", dumps(body))
    assert response.status_code == 200, response.text
    answer = response.get_json()["NodeNameToMetaVictims"] or {}
    for node_name, victims in answer.items():
        assert node_name in proposal
        assert {p["UID"] for p in victims["Pods"]} <= set(proposal[node_name])


@SETTINGS
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["filter", "bind"]),
            st.sampled_from(PENDING + RUNNING),
            st.sampled_from(NODES) | names,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_filter_and_bind_sequences_answer_only_error_and_never_overbook(
    steps: list[tuple[str, Any, str]],
) -> None:
    for verb, pod_obj, node_name in steps:
        if verb == "filter":
            response = post("filter", dumps({"Pod": pod_obj, "Nodes": None, "NodeNames": NODES}))
            assert response.status_code == 200
            continue
        meta = pod_obj["metadata"]
        body = {
            "PodName": meta["name"],
            "PodNamespace": meta["namespace"],
            "PodUID": meta["uid"],
            "Node": node_name,
        }
        response = post("bind", dumps(body))
        assert response.status_code == 200, response.text
        answer = response.get_json()
        assert set(answer) == {"Error"}
        assert isinstance(answer["Error"], str)
        assert "internal error" not in answer["Error"]
        no_device_overbooked()
