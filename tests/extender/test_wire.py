"""Wire protocol: every 400/413/415 case names its field, encoders write Go's exact JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.extender.server import wire
from qosched.extender.server.wire import (
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderBindingResult,
    ExtenderFilterResult,
    ExtenderPreemptionArgs,
    ExtenderPreemptionResult,
    HostPriority,
    MetaPod,
    MetaVictims,
    Victims,
    WireError,
)

JSON_CT = "application/json"


def pod(name: Any = "p", namespace: Any = "default", uid: Any = "u-1", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid, **meta}, "spec": {}}


def node(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"qosched.io/accelerator": "nvidia-t4"}}, "spec": {}}


def args_body(**overrides: Any) -> bytes:
    doc: dict[str, Any] = {"Pod": pod(), "Nodes": None, "NodeNames": ["a", "b"]}
    doc.update(overrides)
    return orjson.dumps(doc)


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


# ------------------------------------------------------------------ content type


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "Application/JSON", "application/json; charset=utf-8",
     'application/json;charset="UTF-8"', "application/json; charset=utf8; foo=bar"],
    ids=["missing", "empty", "plain", "case-insensitive", "charset-utf-8", "quoted-charset", "extra-param"],
)  # fmt: skip
def test_content_type_accepted(content_type: str | None) -> None:
    args = wire.parse_filter_args(args_body(), content_type)
    assert args.node_names == ("a", "b")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/jsonx",
     "application/json; charset=latin-1", "multipart/form-data; boundary=x"],
    ids=["text", "form", "prefix-only", "charset-latin1", "multipart"],
)  # fmt: skip
def test_content_type_rejected_415(content_type: str) -> None:
    with pytest.raises(WireError) as exc:
        wire.parse_filter_args(args_body(), content_type)
    assert exc.value.status == 415
    assert exc.value.message.startswith("Content-Type:")


# ------------------------------------------------------------------ ExtenderArgs errors


_ARGS = {"Pod": pod(), "Nodes": None, "NodeNames": ["a", "b"]}


def _args_error(case_id: str, body: bytes, status: int, message: str) -> Any:
    return pytest.param(body, status, message, id=case_id)


_NO_NAMES: dict[str, Any] = {"NodeNames": None}
ARGS_ERRORS = [
    _args_error("empty-body", b"", 400, "body: empty"),
    _args_error("not-json", b"{", 400, "body: invalid JSON"),
    _args_error("bom", b"\xef\xbb\xbf{}", 400, "body: invalid JSON"),
    _args_error("bad-utf8", b'{"Pod": "\xff"}', 400, "body: invalid JSON"),
    _args_error("nan", b'{"Pod": NaN}', 400, "body: invalid JSON"),
    _args_error("array-top", b"[]", 400, "body: expected object, got array"),
    _args_error("null-top", b"null", 400, "body: expected object, got null"),
    _args_error("pod-missing", orjson.dumps(without(_ARGS, "Pod")), 400, "Pod: missing"),
    _args_error("pod-null", args_body(Pod=None), 400, "Pod: expected object, got null"),
    _args_error("pod-string", args_body(Pod="p"), 400, "Pod: expected object, got string"),
    _args_error("metadata-missing", args_body(Pod={"spec": {}}), 400, "Pod.metadata: missing"),
    _args_error(
        "metadata-array", args_body(Pod={"metadata": []}), 400, "Pod.metadata: expected object, got array"
    ),
    _args_error(
        "name-missing",
        args_body(Pod={"metadata": {"namespace": "d", "uid": "u"}}),
        400,
        "Pod.metadata.name: missing",
    ),
    _args_error(
        "name-int", args_body(Pod=pod(name=3)), 400, "Pod.metadata.name: expected string, got integer"
    ),
    _args_error("name-empty", args_body(Pod=pod(name="")), 400, "Pod.metadata.name: must not be empty"),
    _args_error(
        "namespace-null",
        args_body(Pod=pod(namespace=None)),
        400,
        "Pod.metadata.namespace: expected string, got null",
    ),
    _args_error(
        "uid-bool", args_body(Pod=pod(uid=True)), 400, "Pod.metadata.uid: expected string, got boolean"
    ),
    _args_error(
        "annotations-list",
        args_body(Pod=pod(annotations=[])),
        400,
        "Pod.metadata.annotations: expected object, got array",
    ),
    _args_error(
        "annotation-value-int",
        args_body(Pod=pod(annotations={"qosched.io/slo-ms": 100})),
        400,
        'Pod.metadata.annotations["qosched.io/slo-ms"]: expected string, got integer',
    ),
    _args_error("nodes-missing", orjson.dumps(without(_ARGS, "Nodes")), 400, "Nodes: missing"),
    _args_error("nodenames-missing", orjson.dumps(without(_ARGS, "NodeNames")), 400, "NodeNames: missing"),
    _args_error(
        "nodenames-object", args_body(NodeNames={"a": 1}), 400, "NodeNames: expected array, got object"
    ),
    _args_error("nodenames-string", args_body(NodeNames="a"), 400, "NodeNames: expected array, got string"),
    _args_error(
        "nodenames-3-null",
        args_body(NodeNames=["a", "b", "c", None]),
        400,
        "NodeNames[3]: expected string, got null",
    ),
    _args_error(
        "nodenames-1-int", args_body(NodeNames=["a", 7]), 400, "NodeNames[1]: expected string, got integer"
    ),
    _args_error("nodenames-0-empty", args_body(NodeNames=[""]), 400, "NodeNames[0]: must not be empty"),
    _args_error(
        "nodes-array",
        args_body(**_NO_NAMES, Nodes=[node("a")]),
        400,
        "Nodes: expected object, got array",
    ),
    _args_error(
        "nodes-items-missing", args_body(**_NO_NAMES, Nodes={"metadata": {}}), 400, "Nodes.items: missing"
    ),
    _args_error(
        "nodes-items-object",
        args_body(**_NO_NAMES, Nodes={"items": {}}),
        400,
        "Nodes.items: expected array, got object",
    ),
    _args_error(
        "nodes-item-null",
        args_body(**_NO_NAMES, Nodes={"items": [node("a"), None]}),
        400,
        "Nodes.items[1]: expected object, got null",
    ),
    _args_error(
        "nodes-item-no-metadata",
        args_body(**_NO_NAMES, Nodes={"items": [{"spec": {}}]}),
        400,
        "Nodes.items[0].metadata: missing",
    ),
    _args_error(
        "nodes-item-name-number",
        args_body(**_NO_NAMES, Nodes={"items": [{"metadata": {"name": 1.5}}]}),
        400,
        "Nodes.items[0].metadata.name: expected string, got number",
    ),
    _args_error(
        "both-set",
        args_body(Nodes={"metadata": {}, "items": [node("a")]}),
        400,
        "Nodes, NodeNames: both set",
    ),
    _args_error(
        "too-many-names",
        args_body(NodeNames=[f"n{i}" for i in range(wire.MAX_NODES + 1)]),
        413,
        f"NodeNames: {wire.MAX_NODES + 1} node names exceed the limit",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), ARGS_ERRORS)
def test_extender_args_errors(body: bytes, status: int, message: str) -> None:
    with pytest.raises(WireError) as exc:
        wire.parse_filter_args(body, JSON_CT)
    assert exc.value.status == status
    assert exc.value.message.startswith(message), exc.value.message


def test_body_over_max_bytes_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_BODY_BYTES", 10)
    with pytest.raises(WireError) as exc:
        wire.parse_filter_args(args_body(), JSON_CT)
    assert exc.value.status == 413
    assert "exceed the limit of 10" in exc.value.message


def test_too_many_full_nodes_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_NODES", 2)
    body = args_body(NodeNames=None, Nodes={"metadata": {}, "items": [node("a"), node("b"), node("c")]})
    with pytest.raises(WireError) as exc:
        wire.parse_filter_args(body, JSON_CT)
    assert (exc.value.status, exc.value.message) == (413, "Nodes.items: 3 nodes exceed the limit of 2")


@pytest.mark.parametrize(
    ("nodes", "node_names", "want_candidates", "cache_capable"),
    [
        (None, ["b", "a", "b"], ("b", "a", "b"), True),
        ({"metadata": {}, "items": [node("x"), node("y")]}, None, ("x", "y"), False),
        ({"metadata": {}, "items": None}, None, (), False),
        (None, [], (), True),
        (None, None, (), True),
    ],
    ids=[
        "names-keep-order-and-duplicates",
        "full-nodes",
        "full-items-null",
        "names-empty",
        "both-null-empty",
    ],
)
def test_extender_args_candidates(
    nodes: Any, node_names: Any, want_candidates: tuple[str, ...], cache_capable: bool
) -> None:
    args = wire.parse_prioritize_args(args_body(Nodes=nodes, NodeNames=node_names), JSON_CT)
    assert args.candidates == want_candidates
    assert wire.candidate_names(args) == list(want_candidates)
    assert args.node_cache_capable is cache_capable


def test_unknown_top_level_fields_are_ignored_like_go() -> None:
    body = orjson.dumps({**_ARGS, "Future": {"x": 1}})
    assert wire.parse_filter_args(body, JSON_CT).node_names == ("a", "b")


def test_full_nodes_are_the_same_dicts() -> None:
    items = [node("a"), node("b")]
    args = wire.parse_filter_args(args_body(NodeNames=None, Nodes={"metadata": {}, "items": items}), JSON_CT)
    assert args.nodes == tuple(items)


# ------------------------------------------------------------------ binding args


_BIND = {"PodName": "p", "PodNamespace": "default", "PodUID": "u-1", "Node": "gpu-0"}

BIND_ERRORS = [
    ("podname-missing", without(_BIND, "PodName"), "PodName: missing"),
    ("namespace-int", {**_BIND, "PodNamespace": 1}, "PodNamespace: expected string, got integer"),
    ("uid-empty", {**_BIND, "PodUID": ""}, "PodUID: must not be empty"),
    ("node-null", {**_BIND, "Node": None}, "Node: expected string, got null"),
]


@pytest.mark.parametrize(("doc", "message"), [c[1:] for c in BIND_ERRORS], ids=[c[0] for c in BIND_ERRORS])
def test_binding_args_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(WireError) as exc:
        wire.parse_binding_args(orjson.dumps(doc), JSON_CT)
    assert (exc.value.status, exc.value.message) == (400, message)


def test_binding_args_parse_and_encode_round_trip() -> None:
    body = orjson.dumps(_BIND)
    args = wire.parse_binding_args(body, JSON_CT)
    assert args == ExtenderBindingArgs("p", "default", "u-1", "gpu-0")
    assert wire.encode_binding_args(args) == body


# ------------------------------------------------------------------ preemption args


def _victims(*uids: str) -> dict[str, Any]:
    return {"Pods": [pod(name=f"v-{u}", uid=u) for u in uids], "NumPDBViolations": 0}


def _meta(*uids: str, pdb: Any = 0) -> dict[str, Any]:
    return {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": pdb}


_PREEMPT = {"Pod": pod(), "NodeNameToVictims": None, "NodeNameToMetaVictims": {"gpu-0": _meta("a")}}


def _meta_map(entry: Any) -> dict[str, Any]:
    return {**_PREEMPT, "NodeNameToMetaVictims": {"gpu-0": entry}}


PREEMPT_ERRORS = [
    pytest.param(without(_PREEMPT, "NodeNameToVictims"), "NodeNameToVictims: missing", id="victims-missing"),
    pytest.param(
        without(_PREEMPT, "NodeNameToMetaVictims"), "NodeNameToMetaVictims: missing", id="meta-missing"
    ),
    pytest.param(
        {**_PREEMPT, "NodeNameToMetaVictims": []},
        "NodeNameToMetaVictims: expected object, got array",
        id="meta-array",
    ),
    pytest.param(
        _meta_map(None), 'NodeNameToMetaVictims["gpu-0"]: expected object, got null', id="meta-entry-null"
    ),
    pytest.param(
        _meta_map({"NumPDBViolations": 0}),
        'NodeNameToMetaVictims["gpu-0"].Pods: missing',
        id="meta-pods-missing",
    ),
    pytest.param(
        _meta_map({"Pods": [{"UID": 5}], "NumPDBViolations": 0}),
        'NodeNameToMetaVictims["gpu-0"].Pods[0].UID: expected string, got integer',
        id="meta-uid-int",
    ),
    pytest.param(
        _meta_map({"Pods": [None], "NumPDBViolations": 0}),
        'NodeNameToMetaVictims["gpu-0"].Pods[0]: expected object, got null',
        id="meta-pod-null",
    ),
    pytest.param(
        _meta_map(_meta("a", pdb=1.0)),
        'NodeNameToMetaVictims["gpu-0"].NumPDBViolations: expected integer, got number',
        id="pdb-float",
    ),
    pytest.param(
        _meta_map(_meta("a", pdb=-1)),
        'NodeNameToMetaVictims["gpu-0"].NumPDBViolations: -1 is outside 0..9223372036854775807',
        id="pdb-negative",
    ),
    pytest.param(
        _meta_map(_meta("a", pdb=2**63)),
        'NodeNameToMetaVictims["gpu-0"].NumPDBViolations: 9223372036854775808 is outside',
        id="pdb-over-int64",
    ),
    pytest.param(
        {
            **_PREEMPT,
            "NodeNameToMetaVictims": None,
            "NodeNameToVictims": {
                "n1": {"Pods": [{"metadata": {"name": "v", "namespace": "d"}}], "NumPDBViolations": 0}
            },
        },
        'NodeNameToVictims["n1"].Pods[0].metadata.uid: missing',
        id="victim-pod-no-uid",
    ),
    pytest.param(
        {**_PREEMPT, "NodeNameToVictims": {"n1": _victims("a")}},
        "NodeNameToVictims, NodeNameToMetaVictims: both set",
        id="both-set",
    ),
]


@pytest.mark.parametrize(("doc", "message"), PREEMPT_ERRORS)
def test_preemption_args_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(WireError) as exc:
        wire.parse_preemption_args(orjson.dumps(doc), JSON_CT)
    assert exc.value.status == 400
    assert exc.value.message.startswith(message), exc.value.message


def test_preemption_pods_null_is_nil_slice() -> None:
    doc = {**_PREEMPT, "NodeNameToMetaVictims": {"n": {"Pods": None, "NumPDBViolations": 2}}}
    args = wire.parse_preemption_args(orjson.dumps(doc), JSON_CT)
    assert args.node_name_to_meta_victims == {"n": MetaVictims(None, 2)}
    assert wire.encode_preemption_args(args) == orjson.dumps(doc)


# ------------------------------------------------------------------ encoders: exact Go JSON


@pytest.mark.parametrize(
    ("result", "want"),
    [
        (ExtenderFilterResult(None, ("a",), {"b": "why"}, None, ""),
         b'{"Nodes":null,"NodeNames":["a"],"FailedNodes":{"b":"why"},"FailedAndUnresolvableNodes":null,"Error":""}'),
        (ExtenderFilterResult(None, (), {}, {}, ""),
         b'{"Nodes":null,"NodeNames":[],"FailedNodes":{},"FailedAndUnresolvableNodes":{},"Error":""}'),
        (ExtenderFilterResult(None, None, None, None, "boom"),
         b'{"Nodes":null,"NodeNames":null,"FailedNodes":null,"FailedAndUnresolvableNodes":null,"Error":"boom"}'),
        (ExtenderFilterResult(({"metadata": {"name": "a"}},), None, None, {"z": "2", "c": "1"}, ""),
         b'{"Nodes":{"metadata":{},"items":[{"metadata":{"name":"a"}}]},"NodeNames":null,"FailedNodes":null,'
         b'"FailedAndUnresolvableNodes":{"c":"1","z":"2"},"Error":""}'),
    ],
    ids=["names-failed", "empty-non-nil-maps", "error-all-nil", "full-nodes-sorted-map-keys"],
)  # fmt: skip
def test_encode_filter_result_exact(result: ExtenderFilterResult, want: bytes) -> None:
    assert wire.encode_filter_result(result) == want


@pytest.mark.parametrize(
    ("hosts", "scores", "want"),
    [
        ([], [], b"[]"),
        (["a"], [0], b'[{"Host":"a","Score":0}]'),
        (["a", "b", "c"], [10, 0, 5],
         b'[{"Host":"a","Score":10},{"Host":"b","Score":0},{"Host":"c","Score":5}]'),
        (["a", "b"], [7, 7], b'[{"Host":"a","Score":7},{"Host":"b","Score":7}]'),
        (["a", "b"], np.array([3, 3], dtype=np.int64), b'[{"Host":"a","Score":3},{"Host":"b","Score":3}]'),
        (["a", "b"], np.array([1, 2], dtype=np.uint8), b'[{"Host":"a","Score":1},{"Host":"b","Score":2}]'),
        (["a", "b"], [np.int32(4), 5], b'[{"Host":"a","Score":4},{"Host":"b","Score":5}]'),
        (['q"","x', "b"], [0, 0], b'[{"Host":"q\\"\\",\\"x","Score":0},{"Host":"b","Score":0}]'),
        # names that need escaping take the orjson path; the bytes are the same JSON either way.
        (['a",', "b"], [1, 1], b'[{"Host":"a\\",","Score":1},{"Host":"b","Score":1}]'),
        ([","], [2], b'[{"Host":",","Score":2}]'),
        # bool is an int subclass: True counts as 1, as Python does.
        (["a"], [True], b'[{"Host":"a","Score":1}]'),
        (["é", "b\u00a0"], [1, 2], '[{"Host":"é","Score":1},{"Host":"b\u00a0","Score":2}]'.encode()),
        (["tab\t"], [3], b'[{"Host":"tab\\t","Score":3}]'),
    ],
    ids=["empty", "one", "mixed", "same-scores", "numpy-same-scores", "numpy-uint8", "numpy-scalar",
         "quotes-fall-back", "escaped-quote-then-comma", "host-is-a-comma", "bool-is-int",
         "non-ascii-raw-utf8", "control-char-escaped"],
)  # fmt: skip
def test_encode_host_priorities_exact(hosts: list[str], scores: Any, want: bytes) -> None:
    assert wire.encode_host_priorities(hosts, scores) == want


@pytest.mark.parametrize(
    ("hosts", "scores", "message"),
    [
        (["a"], [11], "scores[0] (host 'a'): 11 is outside 0..10"),
        (["a", "b"], [0, -1], "scores[1] (host 'b'): -1 is outside 0..10"),
        (["a"], [2.0], "scores[0] (host 'a'): expected int, got float"),
        (["a"], ["3"], "scores[0] (host 'a'): expected int, got str"),
        (["a", "b"], [1, None], "scores[1] (host 'b'): expected int, got NoneType"),
        (["a"], [np.float64(2)], "scores[0] (host 'a'): expected int, got float64"),
        (["a"], [300], "scores[0] (host 'a'): 300 is outside 0..10"),
        (["a"], np.array([11]), "scores[0] (host 'a'): 11 is outside 0..10"),
        (["a"], np.array([0.5]), "scores: expected an integer array, got dtype float64"),
        (["a", "b"], [1], "hosts and scores differ in length: 2 != 1"),
        (["a", 3], [1, 1], "hosts[1]: expected str, got int"),
    ],
    ids=[
        "above-10",
        "negative",
        "float",
        "str",
        "none",
        "numpy-float",
        "above-255",
        "numpy-above-10",
        "float-array",
        "length",
        "host-int",
    ],
)
def test_encode_host_priorities_rejects(hosts: list[Any], scores: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$") as exc:
        wire.encode_host_priorities(hosts, scores)
    assert str(exc.value) == message


def go_marshal(value: Any) -> bytes:
    """An independent oracle for Go's ``json.Marshal`` (Go >= 1.22): compact, UTF-8, HTML-escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            st.text(alphabet='ab",\\\n\u00e9<&\u2028\x1f\x08', max_size=6) | st.text(max_size=12),
            st.integers(0, 10),
        ),
        max_size=12,
    ),
    uniform=st.booleans(),
)
def test_fast_path_equals_go_encoding(pairs: list[tuple[str, int]], uniform: bool) -> None:
    hosts = [h for h, _ in pairs]
    scores = [0 if uniform else s for _, s in pairs]
    want = [{"Host": h, "Score": s} for h, s in zip(hosts, scores, strict=True)]
    got = wire.encode_host_priorities(hosts, scores)
    assert got == go_marshal(want)
    assert orjson.loads(got) == want


@pytest.mark.parametrize(
    ("error", "want"),
    [
        ("gpu <250m> & more", b'{"Error":"gpu \\u003c250m\\u003e \\u0026 more"}'),
        ("line\u2028sep\u2029", b'{"Error":"line\\u2028sep\\u2029"}'),
        ('quote " back \\ nl \n', b'{"Error":"quote \\" back \\\\ nl \\n"}'),
        ("caf\u00e9", '{"Error":"caf\u00e9"}'.encode()),
    ],
    ids=["html-escaped", "js-line-separators", "json-escapes", "utf8-raw"],
)
def test_strings_are_escaped_as_go_does(error: str, want: bytes) -> None:
    assert wire.encode_binding_result(ExtenderBindingResult(error)) == want
    assert want == go_marshal({"Error": error})
    assert wire.parse_binding_result(want) == ExtenderBindingResult(error)


def test_encode_prioritize_result_and_parse_round_trip() -> None:
    items = (HostPriority("a", 3), HostPriority("b", 10))
    body = wire.encode_prioritize_result(items)
    assert body == b'[{"Host":"a","Score":3},{"Host":"b","Score":10}]'
    assert wire.parse_host_priority_list(body) == items
    assert wire.parse_host_priority_list(b"null") == ()


def test_encode_binding_result_exact() -> None:
    assert wire.encode_binding_result(ExtenderBindingResult()) == b'{"Error":""}'
    assert wire.encode_binding_result(ExtenderBindingResult("no")) == b'{"Error":"no"}'


def test_encode_preemption_result_exact() -> None:
    result = ExtenderPreemptionResult(
        {"n2": MetaVictims((MetaPod("u2"),), 1), "n1": MetaVictims((), 0), "n3": MetaVictims(None, 0)}
    )
    assert wire.encode_preemption_result(result) == (
        b'{"NodeNameToMetaVictims":{"n1":{"Pods":[],"NumPDBViolations":0},'
        b'"n2":{"Pods":[{"UID":"u2"}],"NumPDBViolations":1},"n3":{"Pods":null,"NumPDBViolations":0}}}'
    )
    assert wire.encode_preemption_result(ExtenderPreemptionResult(None)) == b'{"NodeNameToMetaVictims":null}'


def test_encode_extender_args_exact() -> None:
    args = ExtenderArgs({"metadata": {"name": "p"}}, None, ("a",))
    assert (
        wire.encode_extender_args(args) == b'{"Pod":{"metadata":{"name":"p"}},"Nodes":null,"NodeNames":["a"]}'
    )
    full = ExtenderArgs({}, ({"metadata": {"name": "a"}},), None)
    assert wire.encode_extender_args(full) == (
        b'{"Pod":{},"Nodes":{"metadata":{},"items":[{"metadata":{"name":"a"}}]},"NodeNames":null}'
    )


# ------------------------------------------------------------------ answer parsers


_FILTER_NULLS = b'"Nodes":null,"NodeNames":null,"FailedAndUnresolvableNodes":null'


@pytest.mark.parametrize(
    ("parser", "body", "message"),
    [
        pytest.param(
            wire.parse_filter_result,
            b"{" + _FILTER_NULLS + b',"FailedNodes":{"a":1},"Error":""}',
            'FailedNodes["a"]: expected string, got integer',
            id="failed-value-int",
        ),
        pytest.param(
            wire.parse_filter_result,
            b"{" + _FILTER_NULLS + b',"FailedNodes":null}',
            "Error: missing",
            id="error-missing",
        ),
        pytest.param(
            wire.parse_host_priority_list,
            b'[{"Host":"a","Score":1.5}]',
            "[0].Score: expected integer, got number",
            id="score-float",
        ),
        pytest.param(
            wire.parse_host_priority_list, b'[{"Host":"a"}]', "[0].Score: missing", id="score-missing"
        ),
        pytest.param(
            wire.parse_host_priority_list,
            b'{"Host":"a"}',
            "body: expected array, got object",
            id="list-not-array",
        ),
        pytest.param(
            wire.parse_binding_result,
            b'{"Error":null}',
            "Error: expected string, got null",
            id="bind-error-null",
        ),
    ],
)
def test_answer_parse_errors(parser: Any, body: bytes, message: str) -> None:
    with pytest.raises(WireError) as exc:
        parser(body)
    assert (exc.value.status, exc.value.message) == (400, message)


# ------------------------------------------------------------------ filter_result_for


def _names_args(*names: str) -> ExtenderArgs:
    return ExtenderArgs(pod(), None, names)


def _full_args(*names: str) -> ExtenderArgs:
    return ExtenderArgs(pod(), tuple(node(n) for n in names), None)


def test_filter_result_for_names_keeps_request_order() -> None:
    args = _names_args("a", "b", "c", "d")
    result = wire.filter_result_for(args, ["d", "b"], {"a": "full"}, {"c": "no profile"})
    assert result == ExtenderFilterResult(None, ("b", "d"), {"a": "full"}, {"c": "no profile"}, "")
    assert wire.encode_filter_result(result) == (
        b'{"Nodes":null,"NodeNames":["b","d"],"FailedNodes":{"a":"full"},'
        b'"FailedAndUnresolvableNodes":{"c":"no profile"},"Error":""}'
    )


def test_filter_result_for_full_nodes_returns_the_same_dicts() -> None:
    args = _full_args("a", "b", "c")
    assert args.nodes is not None
    result = wire.filter_result_for(args, ["c", "a"])
    assert result.node_names is None
    assert result.nodes is not None
    assert [n["metadata"]["name"] for n in result.nodes] == ["a", "c"]
    assert result.nodes[0] is args.nodes[0]
    assert result.nodes[1] is args.nodes[2]
    assert result.failed_nodes is None
    assert result.failed_and_unresolvable_nodes is None


def test_filter_result_for_keep_all_and_none() -> None:
    args = _names_args("a", "b")
    assert wire.filter_result_for(args, ["b", "a"]).node_names == ("a", "b")
    nothing = wire.filter_result_for(args, [], {"a": "x", "b": "y"})
    assert nothing.node_names == ()  # [] not null: an explicit empty answer
    assert wire.encode_filter_result(nothing).startswith(b'{"Nodes":null,"NodeNames":[],')
    full = _full_args("a")
    assert wire.filter_result_for(full, []).nodes == ()


def test_filter_result_for_both_null_request_answers_names() -> None:
    result = wire.filter_result_for(ExtenderArgs(pod(), None, None), [])
    assert (result.nodes, result.node_names) == (None, ())


@pytest.mark.parametrize(
    ("kept", "failed", "unresolvable", "message"),
    [
        (["zz"], None, None, "kept nodes not in the request: ['zz']"),
        (["a"], {"q": "x"}, None, "failed nodes not in the request: ['q']"),
        (["a"], {"a": "x"}, None, "nodes both kept and failed: ['a']"),
        ([], None, {"b": "x", "q": "y"}, "unresolvable nodes not in the request: ['q']"),
    ],
    ids=["kept-unknown", "failed-unknown", "kept-and-failed", "unresolvable-unknown"],
)
def test_filter_result_for_rejects_non_subsets(
    kept: list[str], failed: dict[str, str] | None, unresolvable: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$") as exc:
        wire.filter_result_for(_names_args("a", "b"), kept, failed, unresolvable)
    assert str(exc.value) == message


# ------------------------------------------------------------------ preemption helpers


def test_meta_victims_from_full_victims_and_result_builders() -> None:
    victims = {"n1": Victims((pod(uid="u1"), pod(uid="u2")), 1), "n2": Victims(None, 0)}
    args = ExtenderPreemptionArgs(pod(), victims, None)
    assert wire.meta_victims(args) == {
        "n1": MetaVictims((MetaPod("u1"), MetaPod("u2")), 1),
        "n2": MetaVictims(None, 0),
    }
    assert wire.victim_uids(args) == {"n1": ["u1", "u2"], "n2": []}
    assert wire.preemption_result_for(args, ["n2"]) == ExtenderPreemptionResult({"n2": MetaVictims(None, 0)})
    assert wire.preemption_result_for(args, {"n1": ["u2"]}) == ExtenderPreemptionResult(
        {"n1": MetaVictims((MetaPod("u2"),), 1)}
    )
    assert wire.preemption_result_for(args, []) == ExtenderPreemptionResult({})
    with pytest.raises(ValueError, match="not proposed"):
        wire.preemption_result_for(args, ["n9"])
    with pytest.raises(ValueError, match="non-empty string"):
        wire.preemption_result_for(args, {"n1": [""]})
    assert wire.meta_victims(ExtenderPreemptionArgs(pod(), None, None)) == {}


def test_dataclasses_reject_both_forms() -> None:
    with pytest.raises(ValueError, match="both set"):
        ExtenderArgs(pod(), (node("a"),), ("a",))
    with pytest.raises(ValueError, match="both set"):
        ExtenderPreemptionArgs(pod(), {}, {})
    with pytest.raises(ValueError, match=r"Nodes.items\[0\].metadata: missing"):
        ExtenderArgs(pod(), ({},), None)
    with pytest.raises(ValueError, match=r"Nodes.items\[1\].metadata.name: expected string, got integer"):
        ExtenderArgs(pod(), (node("a"), {"metadata": {"name": 7}}), None)
    with pytest.raises(ValueError, match=r"Nodes.items\[0\].metadata.name: must not be empty"):
        ExtenderArgs(pod(), (node(""),), None)


@pytest.mark.parametrize(
    ("value", "want"),
    [(pod("a", "ns"), "ns/a"), ({"metadata": {"name": "a"}}, "?/a"), ({}, "?/?")],
    ids=["full", "no-namespace", "no-metadata"],
)
def test_pod_label(value: dict[str, Any], want: str) -> None:
    assert wire.pod_label(value) == want


# ------------------------------------------------------------------ robustness

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["Pod", "Nodes", "NodeNames", "metadata", "items", "name", "namespace", "uid", "annotations",
     "PodName", "PodNamespace", "PodUID", "Node", "NodeNameToVictims", "NodeNameToMetaVictims", "Pods",
     "NumPDBViolations", "UID", "Host", "Score", "Error", "FailedNodes", "FailedAndUnresolvableNodes"]
)  # fmt: skip
# Objects keyed with the protocol's own names reach deep into the validators.
_wireish = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=6),
    max_leaves=30,
)
_PARSERS = [
    wire.parse_filter_args,
    wire.parse_binding_args,
    wire.parse_preemption_args,
    wire.parse_filter_result,
    wire.parse_host_priority_list,
    wire.parse_binding_result,
    wire.parse_preemption_result,
]


def _wire_error_of(call: Callable[[], object]) -> WireError | None:
    """The WireError ``call`` raises, or None when it returns (other exceptions propagate)."""
    try:
        call()
    except WireError as err:
        return err
    return None


@settings(max_examples=300, deadline=None)
@given(doc=_json | _wireish, parser=st.sampled_from(_PARSERS))
def test_arbitrary_json_raises_only_wire_error(doc: Any, parser: Any) -> None:
    try:
        body = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):  # e.g. integers beyond 64 bits
        body = json.dumps(doc).encode()
    err = _wire_error_of(lambda: parser(body, JSON_CT))
    if err is not None:  # anything else than a WireError propagates and fails the test
        assert err.status in (400, 413)
        assert err.message


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=64), content_type=st.none() | st.text(max_size=30))
def test_arbitrary_bytes_raise_only_wire_error(body: bytes, content_type: str | None) -> None:
    err = _wire_error_of(lambda: wire.parse_filter_args(body, content_type))
    if err is not None:  # anything else than a WireError propagates and fails the test
        assert err.status in (400, 413, 415)
