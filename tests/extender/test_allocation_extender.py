"""The extender's side of INFIDA: GET /allocation (the ConfigMap under the extender's RBAC, through
AllocationSource) and prioritize's bonus on the nodes the allocation loaded a service's variant on."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client

from qosched.extender.kube.allocation_source import AllocationSource
from qosched.policies.requests.hints import NODE_BONUS, TIER_BONUS, PlacementHints, ServiceHint, node_bonus
from tests.extender.extender_support import make_app, node, service_pod, write_snapshot
from tests.kubefake import FakeKubeAPI
from tests.kubefake.rbac import RbacAuthorizer

ROOT = Path(__file__).resolve().parents[2]
RBAC = [d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text()) if d]
EXTENDER_USER = "system:serviceaccount:qosched-system:qosched"
DOC = {
    "kind": "qosched.allocation",
    "version": 1,
    "window": 3,
    "window_s": 600.0,
    "time_s": 1000.0,
    "nodes": {"edge-0": {"classify/resnet50": {"fractional": 0.9, "integral": 1}}},
    "counts": {"classify": 120.0},
    "state": {"version": 1, "windows": 3, "eta": 0.1, "y": {}},
}


def test_source_reads_the_configmap_under_the_extenders_rbac(caplog: pytest.LogCaptureFixture) -> None:
    with FakeKubeAPI(authorizer=RbacAuthorizer(RBAC, user=EXTENDER_USER)) as fake:
        api_client = fake.api_client()
        try:
            now = [0.0]
            source = AllocationSource(
                client.CoreV1Api(api_client),
                "qosched-system/qosched-allocation",
                ttl_s=10,
                clock=lambda: now[0],
            )
            assert source.current() is None
            fake.add_configmap("qosched-allocation", "qosched-system", {"allocation.json": json.dumps(DOC)})
            now[0] += 10
            doc = source.current()
            assert doc is not None
            assert doc["nodes"] == DOC["nodes"]
            assert "state" not in doc  # the controller's, not served
            fake.update(
                "configmaps",
                "qosched-allocation",
                lambda cm: cm["data"].update({"allocation.json": "{"}),
                "qosched-system",
            )
            now[0] += 10
            with caplog.at_level(logging.WARNING, logger="qosched.extender.kube.allocation_source"):
                assert source.current() == doc  # the last good one
            assert "unreadable" in caplog.text
        finally:
            api_client.close()


def test_source_refuses_a_bad_reference() -> None:
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        AllocationSource(None, "no-namespace")


class Fixed:
    def __init__(self, value: Any) -> None:
        self.value = value

    def current(self) -> Any:
        return self.value


def _cluster(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    nodes = [node("edge-0", tier="edge"), node("edge-1", tier="edge")]
    p = service_pod("p", "resnet50")
    return write_snapshot(tmp_path / "c.json", [*nodes, p]), p


def test_get_allocation_route(tmp_path: Path) -> None:
    path, _ = _cluster(tmp_path)
    app = make_app(path)
    http = app.test_client()
    res = http.get("/allocation")
    assert res.status_code == 404
    assert "ALLOCATION_CONFIGMAP" in res.get_json()["error"]
    from qosched.extender.server.state import state_of

    runtime = state_of(app).runtime
    runtime.allocation = Fixed(None)
    assert http.get("/allocation").get_json()["error"] == "no allocation yet"
    served = {k: v for k, v in DOC.items() if k != "state"}
    runtime.allocation = Fixed(served)
    res = http.get("/allocation")
    assert res.status_code == 200
    assert res.get_json() == served


def test_prioritize_favours_the_nodes_holding_the_allocated_variant(tmp_path: Path) -> None:
    path, p = _cluster(tmp_path)
    app = make_app(path)
    from qosched.extender.server.state import state_of

    runtime = state_of(app).runtime
    names = ["edge-0", "edge-1"]
    plain = dict(runtime.prioritize(p, names))
    assert plain["edge-0"] == plain["edge-1"]
    hints = PlacementHints(
        {"classify": ServiceHint("edge", "resnet50", {"edge/resnet50": 1.0}, {"edge-0": 1.0})},
        1000.0,
        "infida",
    )
    runtime.hints = Fixed(hints)
    hinted = dict(runtime.prioritize(p, names))
    assert hinted["edge-0"] == min(plain["edge-0"] + TIER_BONUS + NODE_BONUS, 10)
    assert hinted["edge-1"] == min(plain["edge-1"] + TIER_BONUS, 10)
    # identical nodes both score 10 (capped): the bonuses on policy scores with room for them
    assert runtime._hint_bonus(p, names, np.array([4, 4])).tolist() == [
        4 + TIER_BONUS + NODE_BONUS,
        4 + TIER_BONUS,
    ]
    assert node_bonus(hints, "other", "edge-0") == 0
    assert node_bonus(None, "classify", "edge-0") == 0
