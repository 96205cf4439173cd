"""The controller's /metrics (qosched.extender.controller.metrics): real cycles against kubefake.

Two CPU pods on node n1 (SLO 10 ms, mean) and a canned latency source: 'miss' at 20 ms, 'beat'
at 2 ms. The numbers below follow from the law (test_controller_loop.py derives the shares).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest

from qosched.extender.controller.loop import ControllerSettings, CycleReport, QoEController
from qosched.extender.controller.metrics import ControllerMetrics, serve
from qosched.extender.controller.prom import PromSnapshot
from qosched.extender.kube.objects import A_PREDICTED_LATENCY_MS
from qosched.policies.control.law import ControlSettings
from tests.extender.extender_support import metric_samples, metric_value
from tests.kubefake import write_kubeconfig
from tests.kubefake.server import FakeKubeAPI

SETTINGS = ControllerSettings(rate_source="none", settle_s=0.0, interval_s=10.0)


class Canned:
    """A latency source answering fixed mean latencies [ms] per pod of namespace default."""

    def __init__(self, latency_ms: dict[str, float]) -> None:
        self.latency_ms = latency_ms

    def read(self, percentiles: Any, *, with_rate: bool = True) -> PromSnapshot | None:
        return PromSnapshot({None: {("default", pod): ms for pod, ms in self.latency_ms.items()}})


@pytest.fixture
def two_pods(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    kube_api.add_node("n1", accelerator="cpu", cpu="2", gpus=0)
    kube_api.add_pod(
        "miss",
        slo_ms=10,
        node_name="n1",
        cpu="1",
        memory="128Mi",
        annotations={A_PREDICTED_LATENCY_MS: "8.5"},
    )
    kube_api.add_pod("beat", slo_ms=10, node_name="n1", cpu="1", memory="128Mi")
    return kube_api


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_cycle_metrics_from_a_real_cycle(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry, SETTINGS.control, clock=lambda: 1234.0)
    ctl = QoEController(core_v1, Canned({"miss": 20.0, "beat": 2.0}), SETTINGS)
    metrics.observe(ctl.cycle())
    text = scrape(registry)
    miss = {"namespace": "default", "pod": "miss", "class": "batch"}
    beat = {"namespace": "default", "pod": "beat", "class": "batch"}
    assert metric_value(text, "qosched_controller_observed_latency_ms", **miss) == pytest.approx(20.0)
    assert metric_value(text, "qosched_controller_observed_latency_ms", **beat) == pytest.approx(2.0)
    assert metric_value(text, "qosched_controller_predicted_latency_ms", **miss) == 8.5
    assert ("qosched_controller_predicted_latency_ms", frozenset(beat.items())) not in metric_samples(text)
    assert metric_value(text, "qosched_controller_slo_ms", **miss) == 10.0
    pool = {"resource": "cpu", "pool": "n1/cpu"}
    assert metric_value(text, "qosched_controller_share", namespace="default", pod="miss", **pool) == 1245.0
    assert metric_value(text, "qosched_controller_share", namespace="default", pod="beat", **pool) == 735.0
    assert metric_value(text, "qosched_controller_pool_capacity", pool="n1/cpu", resource="cpu") == 2000.0
    # One cycle: 'miss' missed (Q 0), 'beat' met (Q 1): mean 0.5, Gini of (0, 1) = 0.5.
    assert metric_value(text, "qosched_controller_pod_delivered_qos", **miss) == 0.0
    assert metric_value(text, "qosched_controller_delivered_qos", **{"class": "batch"}) == 0.5
    assert metric_value(text, "qosched_controller_gini", **{"class": "batch"}) == pytest.approx(0.5)
    assert metric_value(text, "qosched_controller_qos_target", **{"class": "batch"}) == 0.9
    assert metric_value(text, "qosched_controller_pods_below_target", **{"class": "batch"}) == 1.0
    # miss: Q/T = 0 -> 100 % credit; beat: Q/T >= 1 -> 0 %.
    assert metric_value(text, "qosched_controller_sla_credit_fraction", **{"class": "batch"}) == 0.5
    # errors: 20 / 9 - 1 = 1.22, 2 / 9 - 1 = -0.78
    assert metric_value(text, "qosched_controller_setpoint_error_max") == pytest.approx(20 / 9 - 1)
    assert metric_value(text, "qosched_controller_pods_outside_deadband") == 2.0
    assert metric_value(text, "qosched_controller_cycles_since_change") == 0.0
    assert metric_value(text, "qosched_controller_cycles_total", result="ran") == 1.0
    assert metric_value(text, "qosched_controller_changes_total", result="applied") == 2.0
    assert metric_value(text, "qosched_controller_last_cycle_timestamp_seconds") == 1234.0


def test_converged_cycles_count_up_and_skips_keep_the_state(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry, SETTINGS.control, qos_window_cycles=2)
    at_setpoint = Canned({"miss": 9.0, "beat": 9.0})  # e = 1: inside the dead band, nothing moves
    ctl = QoEController(core_v1, at_setpoint, SETTINGS)
    for _ in range(3):
        metrics.observe(ctl.cycle())
    metrics.observe(CycleReport(skipped="prometheus unavailable"))
    text = scrape(registry)
    assert metric_value(text, "qosched_controller_cycles_since_change") == 3.0
    assert metric_value(text, "qosched_controller_cycles_total", result="skipped") == 1.0
    assert metric_value(text, "qosched_controller_changes_total", result="applied") == 0.0
    assert metric_value(text, "qosched_controller_pods_outside_deadband") == 0.0
    assert metric_value(text, "qosched_controller_delivered_qos", **{"class": "batch"}) == 1.0
    assert metric_value(text, "qosched_controller_gini", **{"class": "batch"}) == 0.0


def test_observed_latency_is_kept_while_a_pod_settles(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    registry = CollectorRegistry()
    settling = ControllerSettings(rate_source="none", settle_s=600.0, interval_s=10.0)
    metrics = ControllerMetrics(registry, settling.control)
    ctl = QoEController(core_v1, Canned({"miss": 20.0, "beat": 2.0}), settling)
    first = ctl.cycle()
    second = ctl.cycle()  # both pods changed a moment ago: no observation, they hold
    assert first.applied == 2
    assert second.changes == ()
    metrics.observe(first)
    metrics.observe(second)
    text = scrape(registry)
    labels = {"namespace": "default", "pod": "miss", "class": "batch"}
    assert metric_value(text, "qosched_controller_observed_latency_ms", **labels) == pytest.approx(20.0)
    assert metric_value(text, "qosched_controller_pod_delivered_qos", **labels) == 0.0  # one observed cycle
    assert metric_value(text, "qosched_controller_cycles_since_change") == 1.0


def test_deleted_pod_series_disappear(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry, SETTINGS.control)
    ctl = QoEController(core_v1, Canned({"miss": 9.0, "beat": 9.0}), SETTINGS)
    metrics.observe(ctl.cycle())
    two_pods.delete("pods", "beat")
    metrics.observe(ctl.cycle())
    pods = {
        dict(labels).get("pod")
        for name, labels in metric_samples(scrape(registry))
        if name == "qosched_controller_slo_ms"
    }
    assert pods == {"miss"}


@pytest.mark.parametrize("window", [0, -1], ids=["zero", "negative"])
def test_window_must_be_positive(window: int) -> None:
    with pytest.raises(ValueError, match="qos_window_cycles"):
        ControllerMetrics(None, ControlSettings(), qos_window_cycles=window)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return port


def test_served_over_http(two_pods: FakeKubeAPI, core_v1: Any, free_port: int) -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry, SETTINGS.control)
    metrics.observe(QoEController(core_v1, Canned({"miss": 20.0, "beat": 2.0}), SETTINGS).cycle())
    stop = serve(registry, free_port, "127.0.0.1")
    try:
        text = requests.get(f"http://127.0.0.1:{free_port}/metrics", timeout=5).text
    finally:
        stop()
    assert metric_value(text, "qosched_controller_cycles_total", result="ran") == 1.0


def test_busy_metrics_port_is_a_usage_error(kube_api: FakeKubeAPI, tmp_path: Any) -> None:
    """`qosched controller --metrics-port` on a port already in use: exit 2 naming the flag."""
    from click.testing import CliRunner

    from qosched.extender.cli.controller import controller

    kubeconfig = write_kubeconfig(kube_api.url, tmp_path / "kubeconfig")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            controller,
            [
                f"--kubeconfig={kubeconfig}",
                "--prometheus-url=http://127.0.0.1:1",
                "--no-leader-elect",
                f"--metrics-port={port}",
                "--metrics-address=127.0.0.1",
            ],
        )
    assert result.exit_code == 2, result.output
    assert f"--metrics-port {port}" in result.output
