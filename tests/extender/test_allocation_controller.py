"""INFIDA in the controller process: against the fake apiserver (the controller's RBAC enforced)
with a canned sensor — allocation ConfigMap, merged hints, restart, dry run, window timing,
Deployment scaling — and the live loop against a real Prometheus on 127.0.0.1 scraping an
in-test exporter of per-pod request counters."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Histogram

from qosched.extender.controller.allocation import (
    L_ALLOCATION,
    AllocationChain,
    AllocationController,
    AllocationSettings,
)
from qosched.extender.controller.prom import PromQueries, PromReader
from qosched.policies.infida.live import ALLOCATION_KEY, check_allocation_document
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.requests.hints import CONFIGMAP_KEY, PlacementHints, ServiceHint
from qosched.profiles.store import bundled_profiles
from tests.extender.controller_support import SYSTEM, controller_authorizer
from tests.kubefake import FakeKubeAPI, write_kubeconfig

LOOKUP, DEVICE_MEMORY = lookup_from_profiles(bundled_profiles())
METRIC = "inference_request_duration_seconds"
SERVICES = ("cats", "dogs", "cars")
#: Pods serving each service from the cloud (the repository), and their request rates [1/s].
RATES = {"cats": 30.0, "dogs": 10.0, "cars": 0.0}


def _fill(api: FakeKubeAPI) -> None:
    api.add_node(
        "edge-0", accelerator="nvidia-t4", tier="edge",
        annotations={"qosched.io/rtt-ms": "10", "qosched.io/bandwidth-mbps": "100"},
    )  # fmt: skip
    api.add_node(
        "cloud-0", accelerator="nvidia-a100", tier="cloud", gpus=4,
        annotations={"qosched.io/rtt-ms": "40", "qosched.io/bandwidth-mbps": "200"},
    )  # fmt: skip
    for service in SERVICES:
        api.add_pod(
            f"{service}-cloud",
            model=None,
            slo_ms=200,
            node_name="cloud-0",
            annotations={
                "qosched.io/variants": "resnet50,resnet18",
                "qosched.io/min-accuracy": "0.69",
                "qosched.io/variant": "resnet50",
                "qosched.io/service": service,
                "qosched.io/input-kb": "150",
            },
        )


class Canned:
    """A reader whose rate query answers fixed per-pod rates (or fails with ``None``)."""

    def __init__(self, rates: dict[str, float] | None) -> None:
        self.queries = PromQueries()
        self.rates = rates
        self.asked: list[str] = []

    def query_vector(self, query: str) -> dict[tuple[str | None, str], float] | None:
        self.asked.append(query)
        if self.rates is None:
            return None
        return {("default", f"{s}-cloud"): r for s, r in self.rates.items()}


@pytest.fixture
def kube() -> Iterator[tuple[FakeKubeAPI, Any]]:
    with FakeKubeAPI(authorizer=controller_authorizer()) as api:
        _fill(api)
        api_client = api.api_client()
        try:
            yield api, api_client
        finally:
            api_client.close()


def _controller(api_client: Any, reader: Any, clock: list[float], **kw: Any) -> AllocationController:
    settings = AllocationSettings(**{"window_s": 60.0, "max_requests_per_window": 3000.0, **kw})
    return AllocationController(
        client.CoreV1Api(api_client), client.AppsV1Api(api_client), reader, settings, LOOKUP, DEVICE_MEMORY,
        clock=lambda: clock[0],
    )  # fmt: skip


def _doc(api: FakeKubeAPI) -> dict[str, Any]:
    cm = api.get("configmaps", "qosched-allocation", SYSTEM)
    assert cm is not None
    return check_allocation_document(json.loads(cm["data"][ALLOCATION_KEY]))


def test_cycle_writes_the_allocation_and_hints_under_rbac(kube: tuple[FakeKubeAPI, Any]) -> None:
    api, api_client = kube
    clock = [1000.0]
    reader = Canned(RATES)
    report = _controller(api_client, reader, clock).cycle()
    assert report.errors == []
    assert report.skipped is None
    assert report.counts == {"cats": 1800.0, "dogs": 600.0, "cars": 0.0}
    assert "[60s]" in reader.asked[0]  # the rate over the whole window
    doc = _doc(api)
    assert doc["window"] == 1
    assert doc["window_s"] == 60.0
    assert doc["time_s"] == 1000.0
    edge = doc["nodes"]["edge-0"]
    assert "cats/resnet50" in edge
    assert all(0.0 <= v["fractional"] <= 1.0 and v["integral"] in (0, 1) for v in edge.values())
    assert doc["state"]["windows"] == 1
    # after one step the popular service's ResNet-50 holds more of the T4 than the idle one's
    assert edge["cats/resnet50"]["fractional"] > edge["cars/resnet50"]["fractional"]
    hints = api.get("configmaps", "qosched-placement-hints", SYSTEM)
    assert hints is not None
    parsed = PlacementHints.from_json(json.loads(hints["data"][CONFIGMAP_KEY]))
    assert parsed.source == "infida"
    for hint in parsed.services.values():
        assert set(hint.nodes) <= {"edge-0"}


def test_window_timing_restart_and_resume(kube: tuple[FakeKubeAPI, Any]) -> None:
    api, api_client = kube
    clock = [1000.0]
    first = _controller(api_client, Canned(RATES), clock)
    first.cycle()
    clock[0] = 1030.0
    assert (first.cycle().skipped or "").startswith("window not over")
    clock[0] = 1061.0
    assert first.cycle().window == 2
    y_before = _doc(api)["state"]["y"]
    # a new process (restart, or another replica taking the lease) resumes: window 3, same y before the step
    clock[0] = 1090.0
    second = _controller(api_client, Canned(RATES), clock)
    assert (second.cycle().skipped or "").startswith("window not over")
    clock[0] = 1125.0
    assert second.cycle().window == 3
    assert second.allocator is not None
    assert second.allocator.windows == 3
    assert _doc(api)["state"]["y"] != y_before


def test_bad_saved_state_starts_fresh(kube: tuple[FakeKubeAPI, Any]) -> None:
    api, api_client = kube
    api.add(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qosched-allocation", "namespace": SYSTEM},
         "data": {ALLOCATION_KEY: "{not json"}}
    )  # fmt: skip
    report = _controller(api_client, Canned(RATES), [1000.0]).cycle()
    assert report.window == 1
    assert _doc(api)["window"] == 1


def test_dry_run_and_failed_prometheus_write_nothing(kube: tuple[FakeKubeAPI, Any]) -> None:
    api, api_client = kube
    report = _controller(api_client, Canned(RATES), [1000.0], dry_run=True).cycle()
    assert report.window == 1
    assert report.writes == []
    assert api.get("configmaps", "qosched-allocation", SYSTEM) is None
    failed = _controller(api_client, Canned(None), [1000.0]).cycle()
    assert failed.skipped == "prometheus query failed"
    assert api.get("configmaps", "qosched-allocation", SYSTEM) is None


def test_hints_of_the_online_learner_are_kept(kube: tuple[FakeKubeAPI, Any]) -> None:
    api, api_client = kube
    online = PlacementHints(
        {"cats": ServiceHint("cloud", "resnet50", {"cloud/resnet50": 1.0})}, 999.0, "online"
    )
    api.add(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qosched-placement-hints", "namespace": SYSTEM},
         "data": {CONFIGMAP_KEY: json.dumps(online.to_json())}}
    )  # fmt: skip
    _controller(api_client, Canned(RATES), [1000.0]).cycle()
    cm = api.get("configmaps", "qosched-placement-hints", SYSTEM)
    assert cm is not None
    merged = PlacementHints.from_json(json.loads(cm["data"][CONFIGMAP_KEY]))
    cats = merged.services["cats"]
    assert (cats.tier, cats.variant, dict(cats.weights)) == ("cloud", "resnet50", {"cloud/resnet50": 1.0})


def _deployment(name: str, service: str, variant: str, replicas: int, **bounds: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {L_ALLOCATION: "true"},
            "annotations": bounds,
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"qosched.io/service": service, "qosched.io/model": variant},
                },
                "spec": {"containers": [{"name": "serve", "image": "example.com/serve:1"}]},
            },
        },
    }


def test_scaling_follows_the_integral_allocation_within_bounds(kube: tuple[FakeKubeAPI, Any]) -> None:
    api, api_client = kube
    api.add(_deployment("cars-resnet50", "cars", "resnet50", 0))  # the repository variant: never below 1
    api.add(
        _deployment("cats-resnet18", "cats", "resnet18", 3, **{"qosched.io/allocation-max-replicas": "1"})
    )
    report = _controller(api_client, Canned(RATES), [1000.0], scale_deployments=True).cycle()
    assert report.errors == []
    cars = api.get("deployments", "cars-resnet50", "default")
    assert cars is not None
    assert cars["spec"]["replicas"] >= 1
    cats18 = api.get("deployments", "cats-resnet18", "default")
    assert cats18 is not None
    assert cats18["spec"]["replicas"] <= 1
    assert report.scale["default/cars-resnet50"] == cars["spec"]["replicas"]


def test_chain_runs_the_base_and_the_allocation(kube: tuple[FakeKubeAPI, Any]) -> None:
    _, api_client = kube

    class Base:
        def cycle(self) -> str:
            return "base"

    alloc = _controller(api_client, Canned(RATES), [1000.0])
    chain = AllocationChain(Base(), alloc, settings=None)
    assert chain.cycle() == "base"
    assert chain.last is not None
    assert chain.last.window == 1


# ------------------------------------------------------------------------------------------------
# the live loop against a real Prometheus
# ------------------------------------------------------------------------------------------------


@pytest.mark.prometheus
@pytest.mark.slow
def test_live_loop_with_real_prometheus(scraped_prometheus: tuple[str, CollectorRegistry]) -> None:
    """Per-pod latency histograms whose ``_count`` grows at 30 / 10 / 0 requests per
    second; each window the controller reads their rate over the window through Prometheus,
    steps INFIDA and writes the allocation: counts within 35 % of rate × window, and the busy
    service's ResNet-50 gains share on the edge T4 window after window."""
    url, registry = scraped_prometheus
    hist = Histogram(METRIC, "latency", ["namespace", "pod"], registry=registry)
    stop = threading.Event()

    def plant() -> None:
        while not stop.wait(0.1):
            for service, rate in RATES.items():
                for _ in range(round(rate * 0.1)):
                    hist.labels("default", f"{service}-cloud").observe(0.02)

    thread = threading.Thread(target=plant, daemon=True)
    thread.start()
    window_s = 4.0
    reader = PromReader(url, PromQueries(metric=METRIC), timeout_s=3.0)
    with FakeKubeAPI(authorizer=controller_authorizer()) as api:
        _fill(api)
        api_client = api.api_client()
        try:
            ctl = AllocationController(
                client.CoreV1Api(api_client), None, reader,
                AllocationSettings(window_s=window_s, max_requests_per_window=200.0), LOOKUP, DEVICE_MEMORY,
            )  # fmt: skip
            ready = time.monotonic() + 20.0
            while (
                time.monotonic() < ready
                and len(reader.query_vector(PromQueries(metric=METRIC, window="4s").rate()) or {}) < 2
            ):
                time.sleep(0.5)  # Prometheus has scraped both busy pods ...
            time.sleep(window_s)  # ... for a whole window
            shares, counts = [], []
            deadline = time.monotonic() + 40.0
            while time.monotonic() < deadline and len(shares) < 3:
                report = ctl.cycle()
                assert report.errors == [], report.errors
                if report.skipped is None:
                    counts.append(report.counts)
                    shares.append(_doc(api)["nodes"]["edge-0"]["cats/resnet50"]["fractional"])
                time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=5)
            reader.close()
            api_client.close()
    assert len(shares) == 3, shares
    for c in counts:
        assert c["cats"] == pytest.approx(30.0 * window_s, rel=0.35), counts
        assert c["dogs"] == pytest.approx(10.0 * window_s, rel=0.35), counts
        assert c["cars"] == 0.0
    assert shares[0] < shares[1] < shares[2], shares


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_once_runs_one_allocation_cycle(tmp_path: Path) -> None:
    """``qosched controller --allocation --once``: one cycle, printed as JSON (Prometheus down: skipped)."""
    from click.testing import CliRunner

    from qosched.extender.cli.main import main

    with FakeKubeAPI() as api:
        _fill(api)
        kubeconfig = write_kubeconfig(api.url, tmp_path / "kubeconfig")
        args = ["controller", "--kubeconfig", str(kubeconfig), "--once", "--allocation"]
        args += ["--prometheus-url", f"http://127.0.0.1:{_closed_port()}", "--prometheus-timeout-s", "1"]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["skipped"] == "prometheus query failed"
    assert report["dry_run"] is False
