"""The online learner in the controller process: against the fake apiserver (RBAC of the
controller's ServiceAccount enforced, HTTPRoutes as custom objects) with a canned sensor, and the
closed loop against a real Prometheus on 127.0.0.1 scraping an in-test exporter whose latencies
follow the route weights the learner writes."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily

from qosched.extender.controller.online import (
    ROUTE_GROUP,
    CombinedController,
    OnlineController,
    OnlineSettings,
    backend_name,
    route_with_weights,
)
from qosched.extender.controller.prom import PromQueries, PromReader, PromSnapshot
from qosched.policies.online.live import percent_weights
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.requests.hints import PlacementHints
from qosched.profiles.store import bundled_profiles
from tests.extender.controller_support import SYSTEM, controller_authorizer
from tests.kubefake import FakeKubeAPI

LOOKUP, _ = lookup_from_profiles(bundled_profiles())
PODS = {"classify-edge": ("edge-0", "edge"), "classify-cloud": ("cloud-0", "cloud")}
EDGE_BACKEND = backend_name("classify", "edge", "resnet50")
CLOUD_BACKEND = backend_name("classify", "cloud", "resnet50")


def _route(edge: int, cloud: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{ROUTE_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "classify", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": EDGE_BACKEND, "port": 80, "weight": edge},
                        {"name": CLOUD_BACKEND, "port": 80, "weight": cloud},
                        {"name": "someone-else", "port": 80, "weight": 7},
                    ]
                }
            ],
        },
    }


def _fill(api: FakeKubeAPI, edge: int = 50, cloud: int = 50) -> None:
    api.add_node(
        "edge-0",
        accelerator="nvidia-t4",
        tier="edge",
        annotations={"qosched.io/rtt-ms": "10", "qosched.io/bandwidth-mbps": "100"},
    )
    api.add_node(
        "cloud-0",
        accelerator="nvidia-a100",
        tier="cloud",
        annotations={"qosched.io/rtt-ms": "40", "qosched.io/bandwidth-mbps": "200"},
    )
    for pod, (node, _tier) in PODS.items():
        api.add_pod(
            pod,
            model=None,
            slo_ms=100,
            node_name=node,
            annotations={
                "qosched.io/variants": "resnet50,mobilenet_v2",
                "qosched.io/min-accuracy": "0.75",
                "qosched.io/variant": "resnet50",
                "qosched.io/service": "classify",
                "qosched.io/input-kb": "150",
                "qosched.io/route": "default/classify",
            },
        )
    api.add(_route(edge, cloud))


@pytest.fixture
def kube() -> Iterator[tuple[FakeKubeAPI, Any, Any]]:
    with FakeKubeAPI(authorizer=controller_authorizer()) as api:
        _fill(api)
        api_client = api.api_client()
        try:
            yield api, client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
        finally:
            api_client.close()


class Canned:
    """A sensor with fixed per-pod mean latency [ms] and rate [1/s]."""

    def __init__(self, latency_ms: dict[str, float], rate_rps: dict[str, float]) -> None:
        self.latency_ms, self.rate_rps = latency_ms, rate_rps

    def read(self, percentiles: Any, *, with_rate: bool = True) -> PromSnapshot:
        lat = {("default", p): v for p, v in self.latency_ms.items()}
        rate = {("default", p): v for p, v in self.rate_rps.items()}
        return PromSnapshot({None: lat}, rate)


def _weights(api: FakeKubeAPI) -> dict[str, int]:
    route = api.get("httproutes", "classify", "default")
    assert route is not None
    return {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}


def _controller(core: Any, custom: Any, reader: Any, **kw: Any) -> OnlineController:
    return OnlineController(core, custom, reader, OnlineSettings(**kw), LOOKUP, clock=lambda: 1000.0)


def test_cycle_writes_route_weights_state_and_hints_under_rbac(kube: tuple[FakeKubeAPI, Any, Any]) -> None:
    api, core, custom = kube
    # the edge meets the 100 ms SLO (22 ms transfer + 20 ms), the cloud misses it (46 + 200 ms)
    sensor = Canned(
        {"classify-edge": 20.0, "classify-cloud": 200.0}, {"classify-edge": 10.0, "classify-cloud": 10.0}
    )
    report = _controller(core, custom, sensor).cycle()
    assert report.skipped is None, report
    assert report.errors == []
    w = _weights(api)
    assert w[EDGE_BACKEND] >= 95
    assert w[EDGE_BACKEND] + w[CLOUD_BACKEND] == 100
    assert w["someone-else"] == 7  # not one of the learner's backends: untouched
    state = api.get("configmaps", "qosched-online-state", SYSTEM)
    hints_cm = api.get("configmaps", "qosched-placement-hints", SYSTEM)
    assert state is not None
    assert hints_cm is not None
    learner_doc = json.loads(state["data"]["state.json"])
    assert learner_doc["services"]["classify"]["n"] == [1.0, 1.0]
    hints = PlacementHints.from_json(json.loads(hints_cm["data"]["hints.json"]))
    assert (hints.services["classify"].tier, hints.services["classify"].variant) == ("edge", "resnet50")


def test_dry_run_writes_nothing(kube: tuple[FakeKubeAPI, Any, Any]) -> None:
    api, core, custom = kube
    sensor = Canned(
        {"classify-edge": 20.0, "classify-cloud": 200.0}, {"classify-edge": 10.0, "classify-cloud": 10.0}
    )
    report = _controller(core, custom, sensor, dry_run=True).cycle()
    assert report.dry_run
    assert report.routes[0]["weights"][EDGE_BACKEND] >= 95
    assert report.routes[0]["changed"]
    assert not report.routes[0]["applied"]
    assert _weights(api)[EDGE_BACKEND] == 50
    assert api.get("configmaps", "qosched-online-state", SYSTEM) is None
    assert api.get("configmaps", "qosched-placement-hints", SYSTEM) is None


def test_restart_resumes_from_the_configmap_and_bad_state_starts_fresh(
    kube: tuple[FakeKubeAPI, Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api, core, custom = kube
    sensor = Canned(
        {"classify-edge": 20.0, "classify-cloud": 200.0}, {"classify-edge": 10.0, "classify-cloud": 10.0}
    )
    _controller(core, custom, sensor).cycle()
    _controller(core, custom, sensor).cycle()  # a new process: loads, then adds one observation each
    doc = json.loads(api.get("configmaps", "qosched-online-state", SYSTEM)["data"]["state.json"])  # type: ignore[index]
    assert doc["services"]["classify"]["n"] == [2.0, 2.0]

    def corrupt(cm: dict[str, Any]) -> None:
        cm["data"]["state.json"] = json.dumps({**doc, "version": 99})

    api.update("configmaps", "qosched-online-state", corrupt, SYSTEM)
    with caplog.at_level(logging.ERROR, logger="qosched.extender.controller.online"):
        _controller(core, custom, sensor).cycle()
    assert "version 99 is not 1" in caplog.text
    assert "starting fresh" in caplog.text
    doc = json.loads(api.get("configmaps", "qosched-online-state", SYSTEM)["data"]["state.json"])  # type: ignore[index]
    assert doc["version"] == 1
    assert doc["services"]["classify"]["n"] == [1.0, 1.0]


def test_no_observation_skips_nothing_but_learns_nothing(kube: tuple[FakeKubeAPI, Any, Any]) -> None:
    _, core, custom = kube
    report = _controller(core, custom, Canned({}, {})).cycle()
    assert report.skipped is None
    assert report.updates == []
    assert "classify" in report.weights  # decided from the profiles' prediction alone


def test_failed_prometheus_skips_the_cycle(kube: tuple[FakeKubeAPI, Any, Any]) -> None:
    _, core, custom = kube

    class Down:
        def read(self, percentiles: Any, *, with_rate: bool = True) -> None:
            return None

    assert _controller(core, custom, Down()).cycle().skipped == "prometheus query failed"


def test_rbac_refuses_other_configmaps(kube: tuple[FakeKubeAPI, Any, Any]) -> None:
    api, core, _custom = kube
    api.add_configmap("qosched-profiles", SYSTEM)
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("qosched-profiles", SYSTEM)
    assert err.value.status == 403


def test_combined_controller_runs_both() -> None:
    class Qoe:
        calls = 0

        def cycle(self) -> str:
            Qoe.calls += 1
            return "qoe-report"

    class Online:
        def cycle(self) -> Any:
            from qosched.extender.controller.online import OnlineReport

            return OnlineReport(skipped="x")

    both = CombinedController(Qoe(), Online(), settings=None)  # type: ignore[arg-type]
    assert both.cycle() == "qoe-report"
    assert Qoe.calls == 1
    assert both.last_online is not None


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"a": 0.95, "b": 0.05}, {"a": 95, "b": 5}),
        ({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, {"a": 34, "b": 33, "c": 33}),
    ],
    ids=["explore", "thirds"],
)
def test_percent_weights_sum_to_100(weights: dict[str, float], expected: dict[str, int]) -> None:
    assert percent_weights(weights) == expected


def test_route_with_weights_only_touches_named_backends() -> None:
    body, changed, matched = route_with_weights(_route(50, 50), {EDGE_BACKEND: 100, CLOUD_BACKEND: 0})
    assert changed
    assert matched == {EDGE_BACKEND, CLOUD_BACKEND}
    refs = body["spec"]["rules"][0]["backendRefs"]
    assert [r["weight"] for r in refs] == [100, 0, 7]
    assert not route_with_weights(body, {EDGE_BACKEND: 100})[1]


# ------------------------------------------------------------------------------ closed loop

METRIC = "inference_request_duration_seconds"
BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
#: True time in the pod [ms]: the edge is saturated (its profile says 3 ms; the learner's prior is wrong).
TRUE_LATENCY_MS = {"classify-edge": 180.0, "classify-cloud": 15.0}
RATE_RPS = 40.0


class Exporter:
    """Per-pod latency histograms fed by a plant thread that splits traffic by the route weights."""

    def __init__(self, api: FakeKubeAPI, registry: CollectorRegistry) -> None:
        self.api = api
        self.bounds = np.asarray(BUCKETS_S)
        self.counts = {p: np.zeros(len(BUCKETS_S) + 1) for p in PODS}
        self.sums = dict.fromkeys(PODS, 0.0)
        self.lock = threading.Lock()
        self.rng = np.random.default_rng(5)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        registry.register(self)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(METRIC, "latency", labels=["namespace", "pod"])
        with self.lock:
            for pod, counts in self.counts.items():
                cum = np.cumsum(counts)
                buckets = [(repr(b), float(c)) for b, c in zip(BUCKETS_S, cum[:-1], strict=True)]
                fam.add_metric(["default", pod], [*buckets, ("+Inf", float(cum[-1]))], self.sums[pod])
        yield fam

    def _run(self) -> None:
        try:
            while not self.stop.wait(0.2):
                w = _weights(self.api)
                total = w[EDGE_BACKEND] + w[CLOUD_BACKEND]
                for pod, backend in (("classify-edge", EDGE_BACKEND), ("classify-cloud", CLOUD_BACKEND)):
                    n = self.rng.poisson(RATE_RPS * 0.2 * w[backend] / max(total, 1))
                    lat_s = np.maximum(self.rng.normal(TRUE_LATENCY_MS[pod], 3.0, n), 1.0) / 1000.0
                    idx = np.searchsorted(self.bounds, lat_s, side="left")
                    with self.lock:
                        self.counts[pod] += np.bincount(idx, minlength=len(BUCKETS_S) + 1)
                        self.sums[pod] += float(lat_s.sum())
        except BaseException as exc:
            self.errors.append(exc)


@pytest.mark.prometheus
@pytest.mark.slow
def test_closed_loop_with_real_prometheus(scraped_prometheus: tuple[str, CollectorRegistry]) -> None:
    """The model says the edge T4 is fastest; it is saturated. The learner sends traffic there
    first (its prior), sees the misses through Prometheus, and moves the route to the cloud,
    keeping at most the exploration share on the edge."""
    url, registry = scraped_prometheus
    with FakeKubeAPI(authorizer=controller_authorizer()) as api:
        _fill(api, edge=50, cloud=50)
        exporter = Exporter(api, registry)
        exporter.thread.start()
        api_client = api.api_client()
        reader = PromReader(url, PromQueries(metric=METRIC, window="2s"), timeout_s=3.0)
        try:
            ctl = OnlineController(
                client.CoreV1Api(api_client), client.CustomObjectsApi(api_client), reader,
                OnlineSettings(), LOOKUP,
            )  # fmt: skip
            history = []
            deadline = time.monotonic() + 40.0
            while time.monotonic() < deadline and len(history) < 12:
                time.sleep(2.5)
                report = ctl.cycle()
                assert report.errors == [], report.errors
                history.append((report.skipped, _weights(api)))
                settled = [w for skipped, w in history[-3:] if skipped is None]
                if len(history) >= 4 and len(settled) == 3 and all(w[CLOUD_BACKEND] >= 95 for w in settled):
                    break  # three cycles in a row on the cloud: settled
            assert not exporter.errors
            learned = [w for skipped, w in history if skipped is None]
            assert learned, history
            # at the end the cloud carries the traffic, the edge at most the exploration share
            final = learned[-1]
            assert final[CLOUD_BACKEND] >= 95, history
            assert final[EDGE_BACKEND] <= 5, history
            state = api.get("configmaps", "qosched-online-state", SYSTEM)
            assert state is not None
            n = json.loads(state["data"]["state.json"])["services"]["classify"]["n"]
            assert sum(n) >= 2
        finally:
            exporter.stop.set()
            exporter.thread.join(timeout=5)
            reader.close()
            api_client.close()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--no-qoe"], "--no-qoe needs --online"),
        (["--online", "--online-route", "classify"], "expected SERVICE=NAMESPACE/NAME"),
        (["--online", "--online-explore-share", "0.7"], "explore share must be in [0, 0.5)"),
    ],
    ids=["nothing-to-run", "bad-route", "explore-share"],
)
def test_controller_online_flags_are_checked_before_any_connection(flags: list[str], message: str) -> None:
    from click.testing import CliRunner

    from qosched.extender.cli.main import main

    res = CliRunner().invoke(main, ["controller", "--prometheus-url", "http://127.0.0.1:1", *flags])
    assert res.exit_code == 2, res.output
    assert message in res.output
