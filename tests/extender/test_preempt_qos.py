"""The extender's ``preempt`` verb with the QoS-driven victim rule.

Real requests: ``../shared/fixtures/kube-scheduler/preempt-high-*.json`` (kube-scheduler v1.36
asked to preempt for ``high-0``, class prod, 1500m CPU, on 2-CPU nodes holding two 900m batch
pods each: both victims are needed on every node) with ``cluster.yaml``, the snapshot of the
``nodecache`` run. Synthetic clusters: one ``nvidia-t4`` GPU per node, quarter-GPU ``resnet50``
pods at 1 request/s (interference is negligible, so only milli-GPU decides the fit), ages set
through ``creationTimestamp`` / ``status.startTime`` and the runtime's wall clock pinned.

Slack arithmetic used in the rows (LiveConfig defaults: pause 120 s, restart 30 s):
victim of class c with running r and age t has slack iff r >= T_c (t + 120).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosched.extender.server import wire
from qosched.extender.server.app import runtime_of
from qosched.extender.server.preempt_inputs import epoch_s, live_pod, restarts, started_s
from qosched.extender.server.runtime import Runtime
from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG
from qosched.policies.fairness.qos import has_slack
from qosched.policies.placement.base import best_candidate
from qosched.policies.preemption import LiveConfig, live_qos

from .extender_support import CLUSTER_YAML, FIXTURES, make_app, node, pod, write_snapshot

T0 = 1_800_000_000.0  # epoch s of the synthetic clusters' "creation" instants
NOW = T0 + 10_000.0


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return data


def _proposal(request: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    args = wire.parse_preemption_args(orjson.dumps(request), "application/json")
    return args.pod, wire.victim_uids(args)


def _subset_of(answer: Mapping[str, Sequence[str]], proposal: Mapping[str, Sequence[str]]) -> None:
    assert set(answer) <= set(proposal)
    for node_name, uids in answer.items():
        assert set(uids) <= set(proposal[node_name])
        assert len(set(uids)) == len(uids)


# ---------------------------------------------------------------------------------------------- real requests
def _fixture_runtime(path: Path, now: float) -> Runtime:
    rt = runtime_of(make_app(path))
    rt.wall_clock = lambda: now  # type: ignore[method-assign]
    return rt


@pytest.mark.parametrize(
    ("age_s", "want_nodes"),
    [(3600.0, {"gpu-0", "gpu-1", "gpu-2"}), (2.0, set())],
    ids=["victims-ran-an-hour-have-slack", "victims-just-bound-have-none"],
)
def test_nodecache_fixture(age_s: float, want_nodes: set[str]) -> None:
    pod_obj, proposal = _proposal(_fixture("preempt-high-nodecache.json")["request"])
    created = epoch_s(pod_obj["metadata"]["creationTimestamp"])
    assert created is not None
    rt = _fixture_runtime(CLUSTER_YAML, created + age_s)
    answer = rt.preempt(pod_obj, proposal)
    _subset_of(answer, proposal)
    assert set(answer) == want_nodes
    # 2 CPUs, two 900m victims, a 1500m pod: both victims are needed wherever the node is kept;
    # tpu-0 has no resnet50 profile (edge TPU), so it is never kept.
    for node_name in answer:
        assert answer[node_name] == proposal[node_name]


def test_fullnodes_fixture_through_http(tmp_path: Path) -> None:
    """The full-pods request is from a second cluster: build its snapshot from cluster.yaml's nodes
    and the victims the request carries, then answer over HTTP (Go JSON)."""
    request = _fixture("preempt-high-fullnodes.json")["request"]
    import yaml

    listed = yaml.safe_load(CLUSTER_YAML.read_text())
    nodes = [o for o in listed["items"] if o["kind"] == "Node"]
    victims = [
        dict(p, kind="Pod", apiVersion="v1") for v in request["NodeNameToVictims"].values() for p in v["Pods"]
    ]
    app = make_app(write_snapshot(tmp_path / "cluster.json", nodes + victims))
    created = epoch_s(request["Pod"]["metadata"]["creationTimestamp"])
    assert created is not None
    runtime_of(app).wall_clock = lambda: created + 7200.0  # type: ignore[method-assign]
    resp = app.test_client().post("/preempt", data=orjson.dumps(request), content_type="application/json")
    assert resp.status_code == 200
    body = resp.get_json()
    _, proposal = _proposal(request)
    answer = {n: [p["UID"] for p in v["Pods"]] for n, v in (body["NodeNameToMetaVictims"] or {}).items()}
    _subset_of(answer, proposal)
    assert set(answer) == {"gpu-0", "gpu-1", "gpu-2"}
    assert all(v["NumPDBViolations"] == 0 for v in body["NodeNameToMetaVictims"].values())


# ---------------------------------------------------------------------------------------------- synthetic
def _victim(
    name: str,
    node_name: str,
    cls: str,
    *,
    created: float,
    started: float | None,
    restarts_n: int = 0,
    gpu_milli: int = 250,
) -> dict[str, Any]:
    obj = pod(
        name,
        node_name=node_name,
        rate_rps=1,
        slo_ms=1000,
        gpu_milli=gpu_milli,
        annotations={"qosched.io/class": cls},
    )
    obj["metadata"]["creationTimestamp"] = _stamp(created)
    if started is not None:
        obj["status"]["startTime"] = _stamp(started)
    if restarts_n:
        obj["status"]["containerStatuses"] = [{"name": "c", "restartCount": restarts_n}]
    return obj


def _preemptor(gpu_milli: int, cls: str = "prod") -> dict[str, Any]:
    obj = pod("new", rate_rps=1, slo_ms=1000, gpu_milli=gpu_milli, annotations={"qosched.io/class": cls})
    obj["metadata"]["creationTimestamp"] = _stamp(NOW - 5)
    return obj


def _app_with(tmp_path: Path, victims: list[dict[str, Any]], n_nodes: int = 1, **overrides: Any) -> Runtime:
    nodes = [node(f"n{i}", gpus=1) for i in range(n_nodes)]
    rt = runtime_of(make_app(write_snapshot(tmp_path / "c.json", nodes + victims), **overrides))
    rt.wall_clock = lambda: NOW  # type: ignore[method-assign]
    return rt


def _uids(objs: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["uid"] for o in objs]


# Ages: created at T0 (t = 10000 s). free slack iff r >= 0.5 (10120) = 5060; batch iff r >= 9108.
# r = NOW - started - 30 * restarts.
SYNTHETIC = [
    pytest.param(
        [("a", "free", 0), ("b", "free", 4000), ("c", "free", 1000), ("d", "free", 2000)],
        500,
        {},
        ["a", "c"],
        id="largest-surplus-first",
    ),
    pytest.param(
        [("a", "batch", 0), ("b", "free", 4000), ("c", "prod", 0), ("d", "free", 4500)],
        500,
        {},
        ["b", "d"],
        id="lowest-class-first",
    ),
    pytest.param(
        [("a", "free", 0), ("b", "free", 6000), ("c", "free", 5500), ("d", "batch", 500)],
        500,
        {},
        ["a", "d"],
        id="no-slack-victims-skipped",
    ),
    pytest.param(
        [("a", "free", 6000), ("b", "free", 6000), ("c", "batch", 2000), ("d", "prod", 0)],
        500,
        {},
        None,
        id="no-allowed-subset-drops-node",
    ),
    pytest.param(
        [("a", "free", 0), ("b", "free", 0), ("c", "free", 0), ("d", "free", 6000)],
        500,
        {"trim_victims": False},
        None,
        id="all-or-nothing-refuses-a-proposal-with-one-young-victim",
    ),
    pytest.param(
        [("a", "free", 0), ("b", "free", 0), ("c", "free", 0), ("d", "free", 0)],
        500,
        {"trim_victims": False},
        ["a", "b", "c", "d"],
        id="all-or-nothing-keeps-a-fully-allowed-proposal",
    ),
    pytest.param(
        [("a", "free", 0), ("b", "free", 0), ("c", "free", 0)],
        250,
        {},
        [],
        id="fits-without-victims",
    ),
]


@pytest.mark.parametrize(("victims", "need", "live", "want"), SYNTHETIC)
def test_synthetic_one_node(
    tmp_path: Path,
    victims: list[tuple[str, str, float]],
    need: int,
    live: dict[str, Any],
    want: list[str] | None,
) -> None:
    objs = [_victim(n, "n0", c, created=T0, started=T0 + s) for n, c, s in victims]
    rt = _app_with(tmp_path, objs)
    rt.preemption_config = LiveConfig(**live)
    proposal = {"n0": _uids(objs)}
    answer = rt.preempt(_preemptor(need), proposal)
    _subset_of(answer, proposal)
    if want is None:
        assert answer == {}
    else:
        assert answer == {"n0": [f"uid-{n}" for n in want]}


def test_restarts_cost_slack(tmp_path: Path) -> None:
    # r = 10000 - 30 * 170 = 4900 < 5060: the restarting pod has no slack; the other does.
    objs = [
        _victim("a", "n0", "free", created=T0, started=T0, restarts_n=170, gpu_milli=500),
        _victim("b", "n0", "free", created=T0, started=T0 + 4000, gpu_milli=500),
    ]
    rt = _app_with(tmp_path, objs)
    assert rt.preempt(_preemptor(500), {"n0": _uids(objs)}) == {"n0": ["uid-b"]}


def test_unknown_victim_drops_the_node(tmp_path: Path) -> None:
    objs = [_victim(n, "n0", "free", created=T0, started=T0) for n in "abcd"]
    rt = _app_with(tmp_path, objs)
    answer = rt.preempt(_preemptor(500), {"n0": [*_uids(objs), "uid-ghost"], "nope": ["uid-a"]})
    assert answer == {}


def test_max_nodes_steers_to_the_best_node(tmp_path: Path) -> None:
    # n0: batch victims with slack; n1: free victims with slack. The best set is on n1 (lowest class).
    objs = [_victim(f"b{i}", "n0", "batch", created=T0, started=T0) for i in range(4)] + [
        _victim(f"f{i}", "n1", "free", created=T0, started=T0) for i in range(4)
    ]
    rt = _app_with(tmp_path, objs, n_nodes=2)
    proposal = {"n0": _uids(objs[:4]), "n1": _uids(objs[4:])}
    assert set(rt.preempt(_preemptor(250), proposal)) == {"n0", "n1"}
    rt.preemption_config = LiveConfig(max_nodes=1)
    assert rt.preempt(_preemptor(250), proposal) == {"n1": ["uid-f0"]}


def test_priority_policy_uses_its_own_rule(tmp_path: Path) -> None:
    # The priority rule ignores QoS: the young free pods go, the batch one is lower-ranked than
    # prod too; most recently started first.
    objs = [
        _victim("a", "n0", "batch", created=T0, started=T0),
        _victim("b", "n0", "free", created=T0, started=T0 + 9000),
        _victim("c", "n0", "free", created=T0, started=T0 + 9500),
        _victim("d", "n0", "prod", created=T0, started=T0),
    ]
    rt = _app_with(tmp_path, objs, POLICY="priority")
    answer = rt.preempt(_preemptor(500), {"n0": _uids(objs)})
    assert answer == {"n0": ["uid-b", "uid-c"]}


def test_unmanaged_preemptor_keeps_the_proposal(tmp_path: Path) -> None:
    objs = [_victim("a", "n0", "free", created=T0, started=T0)]
    rt = _app_with(tmp_path, objs)
    plain = pod("plain", model=None)
    assert rt.preempt(plain, {"n0": ["uid-a"], "zz": ["x"]}) == {"n0": ["uid-a"], "zz": ["x"]}


def test_state_is_untouched(tmp_path: Path) -> None:
    objs = [_victim(n, "n0", "free", created=T0, started=T0) for n in "abcd"]
    rt = _app_with(tmp_path, objs)
    with rt.cache.reading() as state:
        before = (state.gpu_used_milli.copy(), sorted(a.uid for a in state.allocations()))
    assert rt.preempt(_preemptor(500), {"n0": _uids(objs)})
    with rt.cache.reading() as state:
        assert np.array_equal(state.gpu_used_milli, before[0])
        assert sorted(a.uid for a in state.allocations()) == before[1]


# ---------------------------------------------------------------------------------------------- gathering
@pytest.mark.parametrize(
    ("status", "want_start", "want_restarts"),
    [
        ({"startTime": "2026-11-23T04:43:20Z"}, "2026-11-23T04:43:20Z", 0),
        (
            {
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T04:43:17Z"}
                ]
            },
            "2026-11-23T04:43:17Z",
            0,
        ),
        ({"conditions": [{"type": "PodScheduled", "status": "False", "lastTransitionTime": "x"}]}, None, 0),
        ({"containerStatuses": [{"restartCount": 2}, {"restartCount": "bad"}, {"restartCount": 3}]}, None, 5),
        ({"startTime": "not a time"}, None, 0),
    ],
    ids=["start-time", "bound-time", "not-scheduled", "restarts-summed", "bad-timestamp"],
)
def test_gathered_numbers(status: dict[str, Any], want_start: str | None, want_restarts: int) -> None:
    obj = {"metadata": {"uid": "u", "creationTimestamp": "2026-11-23T04:43:17.5Z"}, "status": status}
    assert started_s(obj) == (epoch_s(want_start) if want_start else None)
    assert restarts(obj) == want_restarts
    lp = live_pod(obj, "no-such-class", DEFAULT_CLASS_CONFIG)
    assert (lp.rank, lp.target) == (1, 0.9)  # unknown class → default class (batch)
    assert lp.created_s == pytest.approx(epoch_s("2026-11-23T04:43:17Z") + 0.5)  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------- properties
@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, list[str]], int]:
    n_nodes = draw(st.integers(1, 3))
    objs: list[dict[str, Any]] = []
    proposal: dict[str, list[str]] = {}
    for i in range(n_nodes):
        left = 1000
        for k in range(draw(st.integers(0, 4))):
            milli = draw(st.sampled_from([250, 500]))
            if milli > left:
                break
            left -= milli
            started = T0 + draw(st.floats(0.0, 9990.0))
            obj = _victim(
                f"v{i}-{k}",
                f"n{i}",
                draw(st.sampled_from(["prod", "batch", "free"])),
                created=T0,
                started=started,
                restarts_n=draw(st.integers(0, 3)),
                gpu_milli=milli,
            )
            objs.append(obj)
            if draw(st.booleans()):
                proposal.setdefault(f"n{i}", []).append(obj["metadata"]["uid"])
    return objs, proposal, draw(st.sampled_from([250, 500, 1000]))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(clusters())
def test_answer_properties(
    tmp_path: Path, case: tuple[list[dict[str, Any]], dict[str, list[str]], int]
) -> None:
    objs, proposal, need = case
    rt = _app_with(tmp_path, copy.deepcopy(objs), n_nodes=3)
    preemptor = _preemptor(need)
    answer = rt.preempt(preemptor, proposal)
    _subset_of(answer, proposal)
    by_uid = {o["metadata"]["uid"]: o for o in objs}
    cfg = rt.preemption_config
    demand = rt.demand_of(preemptor)
    for node_name, uids in answer.items():
        for uid in uids:  # every victim keeps its target after the predicted pause
            obj = by_uid[uid]
            cls = DEFAULT_CLASS_CONFIG.get(obj["metadata"]["annotations"]["qosched.io/class"])
            est = live_qos(
                epoch_s(obj["metadata"]["creationTimestamp"]),
                started_s(obj),
                restarts(obj),
                NOW,
                cfg.restart_penalty_s,
            )
            assert est is not None
            assert has_slack(est[0], est[1], cfg.pause_s, cls.qos_target)
        with rt.cache.reading() as state:  # the pod fits once they are gone
            removed = [state.remove(u) for u in uids]
            try:
                ev = rt.policy.evaluate(state, demand, np.array([state.node_index[node_name]]))
                assert best_candidate(ev) is not None
            finally:
                for a in removed:
                    if a is not None:
                        state.add(a, strict=False)
