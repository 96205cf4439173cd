"""Placement hints in the extender: the ConfigMap reader, the prioritize bonus and the hinted variant."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from qosched.extender.kube.hints import HintsSource, prefer_hinted_variant
from qosched.extender.kube.objects import pod_demand
from qosched.policies.requests.hints import (
    TIER_BONUS,
    HintsError,
    PlacementHints,
    ServiceHint,
    hinted_variant,
    tier_bonus,
)
from tests.kubefake import FakeKubeAPI
from tests.kubefake.rbac import RbacAuthorizer

ROOT = Path(__file__).resolve().parents[2]
RBAC = [d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text()) if d]
EXTENDER_USER = "system:serviceaccount:qosched-system:qosched"
HINTS = PlacementHints(
    {"classify": ServiceHint("edge", "mobilenet_v2", {"edge/mobilenet_v2": 0.95, "end/resnet50": 0.05})},
    1000.0,
)


def _pod(variants: str = "resnet50,mobilenet_v2", service: str = "classify") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "default",
            "annotations": {
                "qosched.io/variants": variants,
                "qosched.io/slo-ms": "100",
                "qosched.io/service": service,
            },
        },
        "spec": {"containers": [{"name": "c"}]},
    }


def test_hints_round_trip_and_rejections() -> None:
    assert PlacementHints.from_json(json.loads(json.dumps(HINTS.to_json()))) == HINTS
    for bad, message in (
        ({"kind": "x"}, "kind/version"),
        ({**HINTS.to_json(), "time_s": "nan"}, "finite"),
        ({**HINTS.to_json(), "services": {"s": {"tier": "edge"}}}, "unreadable"),
        (
            {**HINTS.to_json(), "services": {"s": {"tier": "e", "variant": "v", "weights": {"a": -1}}}},
            "unreadable",
        ),
    ):
        with pytest.raises(HintsError, match=message):
            PlacementHints.from_json(bad)


@pytest.mark.parametrize(
    ("service", "tier", "bonus"),
    [
        ("classify", "edge", TIER_BONUS),
        ("classify", "end", 0),
        ("classify", "cloud", 0),
        ("other", "edge", 0),
        (None, "edge", 0),
    ],
    ids=["hinted-tier", "explored-5pc", "other-tier", "other-service", "no-service"],
)
def test_tier_bonus(service: str | None, tier: str, bonus: int) -> None:
    assert tier_bonus(HINTS, service, tier) == bonus


def test_hinted_variant_goes_first_only_when_offered() -> None:
    demand = pod_demand(_pod())
    hinted = prefer_hinted_variant(demand, _pod(), HINTS)
    assert hinted.variants == ("mobilenet_v2", "resnet50")
    only = pod_demand(_pod("resnet50,resnet18"))
    assert prefer_hinted_variant(only, _pod("resnet50,resnet18"), HINTS) is only
    assert hinted_variant(HINTS, "classify", ("resnet18",)) is None
    assert prefer_hinted_variant(demand, _pod(), None) is demand


@pytest.fixture
def api() -> Iterator[tuple[FakeKubeAPI, Any]]:
    with FakeKubeAPI(authorizer=RbacAuthorizer(RBAC, user=EXTENDER_USER)) as fake:
        c = fake.api_client()
        try:
            yield fake, client.CoreV1Api(c)
        finally:
            c.close()


def test_source_reads_the_configmap_under_the_extenders_rbac(
    api: tuple[FakeKubeAPI, Any], caplog: pytest.LogCaptureFixture
) -> None:
    fake, core = api
    now = [1000.0]
    source = HintsSource(
        core, "qosched-system/qosched-placement-hints", ttl_s=10, max_age_s=60, clock=lambda: now[0]
    )
    assert source.current() is None  # no ConfigMap yet
    fake.add_configmap(
        "qosched-placement-hints", "qosched-system", {"hints.json": json.dumps(HINTS.to_json())}
    )
    assert source.current() is None  # not re-read within the TTL
    now[0] += 10
    assert source.current() == HINTS
    fake.update(
        "configmaps",
        "qosched-placement-hints",
        lambda cm: cm["data"].update({"hints.json": "{"}),
        "qosched-system",
    )
    now[0] += 10
    with caplog.at_level(logging.ERROR, logger="qosched.extender.kube.hints"):
        assert source.current() == HINTS  # a bad document keeps the last good hints
    assert "keeping the last good hints" in caplog.text
    now[0] += 60
    assert source.current() is None  # too old


def test_source_refuses_a_bad_reference() -> None:
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        HintsSource(None, "just-a-name")


# ------------------------------------------------------------------------------ in the runtime


class Fixed:
    def __init__(self, hints: PlacementHints | None) -> None:
        self.hints = hints

    def current(self) -> PlacementHints | None:
        return self.hints


def test_runtime_prioritize_favours_the_hinted_tier_and_bind_writes_the_hinted_variant(
    tmp_path: Path,
) -> None:
    from qosched.extender.kube.cache import StaticCluster
    from qosched.extender.server.runtime import Runtime
    from qosched.policies.placement.base import make_policy
    from qosched.policies.profile_lookup import lookup_from_profiles
    from qosched.profiles.store import bundled_profiles
    from tests.extender.extender_support import RecordingBinder, node, service_pod, write_snapshot

    nodes = [node("edge-0", tier="edge"), node("cloud-0", tier="cloud")]
    p = service_pod("p", "resnet50,mobilenet_v2")
    lookup, memory = lookup_from_profiles(bundled_profiles())
    cache = StaticCluster.from_file(write_snapshot(tmp_path / "c.json", [*nodes, p]), lookup, memory)
    binder = RecordingBinder()
    runtime = Runtime(cache, make_policy("qosched"), binder)  # type: ignore[arg-type]
    names = ["edge-0", "cloud-0"]
    plain = dict(runtime.prioritize(p, names))
    assert plain["edge-0"] == plain["cloud-0"]  # identical nodes: no preference without hints
    runtime.hints = Fixed(HINTS)
    hinted = dict(runtime.prioritize(p, names))
    assert hinted["edge-0"] == min(plain["edge-0"] + TIER_BONUS, 10)
    assert hinted["cloud-0"] == plain["cloud-0"]
    outcome = runtime.bind("default", "p", p["metadata"]["uid"], "edge-0")
    assert outcome.error == "", outcome.error
    assert binder.calls[0][4]["qosched.io/variant"] == "mobilenet_v2"
