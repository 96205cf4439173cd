r"""Prometheus metrics of the QoE controller (``qosched controller --metrics-port``).

The controller exposes what the dashboard and the alert rules need, computed from each
:class:`~qosched.extender.controller.loop.CycleReport` (``run_loop``'s ``on_report``), on a
registry of its own:

=============================================================  ===========================  =======================
metric                                                         labels                       meaning
=============================================================  ===========================  =======================
``qosched_controller_observed_latency_ms``                     namespace, pod, class        latency read (mean/pXX)
``qosched_controller_predicted_latency_ms``                    namespace, pod, class        extender's bind prediction
``qosched_controller_slo_ms``                                  namespace, pod, class        the pod's latency target
``qosched_controller_share``                                   namespace, pod, resource,    share after the cycle
                                                               pool                         (millicores / milli-GPU)
``qosched_controller_pool_capacity``                           pool, resource               what the pool hands out
``qosched_controller_pod_delivered_qos``                       namespace, pod, class        :math:`Q` of the pod
``qosched_controller_delivered_qos``                           class                        mean :math:`Q` of a class
``qosched_controller_qos_target``                              class                        the class target :math:`T`
``qosched_controller_gini``                                    class                        Gini of :math:`Q` in a class
``qosched_controller_sla_credit_fraction``                     class                        mean SLA credit :math:`f(Q/T)`
``qosched_controller_pods_below_target``                       class                        pods with :math:`Q < T`
``qosched_controller_setpoint_error_max``                      --                           :math:`\max |L/T^* - 1|`
``qosched_controller_pods_outside_deadband``                   --                           pods the law still moves
``qosched_controller_cycles_since_change``                     --                           cycles in a row, no change
``qosched_controller_cycles_total``                            result (ran, skipped)        cycles
``qosched_controller_changes_total``                           result (applied, failed,     share changes
                                                               planned)
``qosched_controller_last_cycle_timestamp_seconds``            --                           end of the last cycle
=============================================================  ===========================  =======================

**Delivered QoS.** The controller sees each pod once per cycle, so it measures SLO attainment
per cycle: :math:`a` = the fraction of the pod's last ``qos_window_cycles`` observed cycles in
which its latency met ``slo_ms``. A pod the controller sees is running, so its availability is
1 and :math:`Q = a` (``qosched.policies.fairness.qos.delivered_qos`` with :math:`A = 1`). Per class:
the mean of :math:`Q`, its Gini coefficient (``policies.fairness.gini.gini``), and the mean SLA
credit fraction :math:`f(Q/T)` of the EC2-shaped tiers (``policies.fairness.penalty.SlaTiers``).

**Observed latency** is recovered exactly from the law's error: :math:`L = e \cdot T^*` with
:math:`T^* = \sigma T` (``ControlStep.error`` is :math:`L / T^*`, NaN when the pod held without
an observation); while a pod settles after a change (no observation) its last observed value is
kept, so the series does not blink out after every change. **Predicted latency** is the extender's prediction written at bind
(``qosched.io/predicted-latency-ms``): the dashboard compares it with what was delivered.

Per-pod series are rebuilt from the last report at every scrape (a custom collector), so a
deleted pod's series disappear instead of lingering at their last value.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qosched.extender.controller.loop import CycleReport
from qosched.policies.control.law import ControlSettings
from qosched.policies.fairness.gini import gini
from qosched.policies.fairness.penalty import SlaTiers

PREFIX = "qosched_controller"


@dataclass(frozen=True, slots=True)
class PodSample:
    """One controlled pod as the last cycle left it."""

    namespace: str
    pod: str
    class_name: str
    resource: str
    pool: str
    slo_ms: float
    share: float
    observed_ms: float | None
    predicted_ms: float | None
    error: float | None  # L / T*, None without an observation


@dataclass(frozen=True, slots=True)
class ClassSample:
    """Delivered QoS of one class over its pods' attainment windows."""

    qos_target: float
    delivered_qos: float
    gini: float
    sla_credit_fraction: float
    pods_below_target: int


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def pod_samples(report: CycleReport, control: ControlSettings) -> list[PodSample]:
    """Every controlled pod of ``report``; observed latency :math:`L = e\\,\\sigma T` (see module)."""
    applied = {c.pod.uid: c.new_share for c in report.changes if c.applied}
    out: list[PodSample] = []
    for pool in report.pools:
        step = report.steps.get(pool.key)
        for i, pod in enumerate(pool.pods):
            error = _finite(step.error[i]) if step is not None else None
            observed = None if error is None else error * control.setpoint_frac * pod.slo_ms
            out.append(
                PodSample(
                    namespace=pod.namespace,
                    pod=pod.name,
                    class_name=pod.class_name,
                    resource=pod.resource,
                    pool=pool.label,
                    slo_ms=pod.slo_ms,
                    share=float(applied.get(pod.uid, pod.share)),
                    observed_ms=observed,
                    predicted_ms=pod.predicted_ms,
                    error=error,
                )
            )
    return out


class ControllerMetrics(Collector):
    """The controller's metrics; :meth:`observe` is ``run_loop``'s ``on_report``.

    Parameters
    ----------
    registry : CollectorRegistry or None
        Registered there when given (a dedicated registry: the controller's process has no other
        metrics, and tests need several instances).
    control : ControlSettings
        The law's settings (``setpoint_frac`` turns the error back into a latency).
    qos_window_cycles : int
        Attainment window per pod [cycles] (60 cycles of 60 s: the last hour).
    tiers : SlaTiers
        Credit table for ``sla_credit_fraction``.
    clock : callable
        Wall clock for ``last_cycle_timestamp_seconds`` (tests inject one).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None,
        control: ControlSettings,
        *,
        qos_window_cycles: int = 60,
        tiers: SlaTiers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if qos_window_cycles < 1:
            raise ValueError(f"qos_window_cycles: {qos_window_cycles!r} must be >= 1")
        self._control = control
        self._window = qos_window_cycles
        self._tiers = tiers or SlaTiers()
        self._clock = clock
        self._lock = threading.Lock()
        self._pods: list[PodSample] = []
        self._capacity: dict[tuple[str, str], float] = {}
        self._targets: dict[str, float] = {}
        self._met: dict[tuple[str, str], deque[bool]] = {}
        self._last_observed_ms: dict[tuple[str, str], float] = {}
        self._cycles = {"ran": 0, "skipped": 0}
        self._changes = {"applied": 0, "failed": 0, "planned": 0}
        self._since_change = 0
        self._last_cycle_s: float | None = None
        if registry is not None:
            registry.register(self)

    # ------------------------------------------------------------------ recording
    def observe(self, report: CycleReport) -> None:
        """Fold one cycle's report into the metrics (thread-safe; scrapes may run meanwhile)."""
        samples = pod_samples(report, self._control)
        with self._lock:
            self._last_cycle_s = self._clock()
            if report.skipped:
                self._cycles["skipped"] += 1
                return
            self._cycles["ran"] += 1
            self._count_changes(report)
            self._pods = samples
            self._capacity = {(p.label, p.key[0]): p.capacity for p in report.pools}
            self._targets = {p.class_name: p.qos_target for pool in report.pools for p in pool.pods}
            alive = {(s.namespace, s.pod) for s in samples}
            self._met = {k: v for k, v in self._met.items() if k in alive}
            self._last_observed_ms = {k: v for k, v in self._last_observed_ms.items() if k in alive}
            for s in samples:
                if s.observed_ms is not None:
                    self._last_observed_ms[(s.namespace, s.pod)] = s.observed_ms
                    window = self._met.setdefault((s.namespace, s.pod), deque(maxlen=self._window))
                    window.append(s.observed_ms <= s.slo_ms)

    def _count_changes(self, report: CycleReport) -> None:
        if report.dry_run:
            self._changes["planned"] += len(report.changes)
        else:
            self._changes["applied"] += report.applied
            self._changes["failed"] += report.failed
        # A change planned (written or not) restarts the count; sub-threshold moves do not.
        self._since_change = 0 if report.changes else self._since_change + 1

    # ------------------------------------------------------------------ derived
    def delivered_qos(self, namespace: str, pod: str) -> float | None:
        """:math:`Q` of one pod: the share of its observed cycles that met the SLO (None: none yet)."""
        window = self._met.get((namespace, pod))
        return None if not window else sum(window) / len(window)

    def class_samples(self) -> dict[str, ClassSample]:
        """Per class: mean delivered QoS, its Gini, mean SLA credit fraction, pods below target."""
        values: dict[str, list[float]] = {}
        for s in self._pods:
            q = self.delivered_qos(s.namespace, s.pod)
            if q is not None:
                values.setdefault(s.class_name, []).append(q)
        out = {}
        for name, target in sorted(self._targets.items()):
            qs = values.get(name, [])
            credit = float(self._tiers.credit_fraction([q / target for q in qs]).mean()) if qs else 0.0
            out[name] = ClassSample(
                qos_target=target,
                delivered_qos=sum(qs) / len(qs) if qs else 1.0,
                gini=gini(qs) if qs else 0.0,
                sla_credit_fraction=credit,
                pods_below_target=sum(q < target for q in qs),
            )
        return out

    # ------------------------------------------------------------------ exposition
    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._pod_families()
            yield from self._class_families()
            yield from self._loop_families()

    def _pod_families(self) -> Iterator[Metric]:
        labels = ["namespace", "pod", "class"]
        observed = GaugeMetricFamily(
            f"{PREFIX}_observed_latency_ms",
            "Latency the controller read (mean or its SLO percentile).",
            labels=labels,
        )
        predicted = GaugeMetricFamily(
            f"{PREFIX}_predicted_latency_ms", "Latency the extender predicted at bind.", labels=labels
        )
        slo = GaugeMetricFamily(f"{PREFIX}_slo_ms", "The pod's latency target.", labels=labels)
        qos = GaugeMetricFamily(
            f"{PREFIX}_pod_delivered_qos", "Share of the pod's recent cycles that met its SLO.", labels=labels
        )
        share = GaugeMetricFamily(
            f"{PREFIX}_share",
            "Share after the last cycle (millicores for cpu, milli-GPU for gpu).",
            labels=["namespace", "pod", "resource", "pool"],
        )
        for s in self._pods:
            key = [s.namespace, s.pod, s.class_name]
            slo.add_metric(key, s.slo_ms)
            share.add_metric([s.namespace, s.pod, s.resource, s.pool], s.share)
            last_ms = self._last_observed_ms.get((s.namespace, s.pod))
            if last_ms is not None:
                observed.add_metric(key, last_ms)
            if s.predicted_ms is not None:
                predicted.add_metric(key, s.predicted_ms)
            q = self.delivered_qos(s.namespace, s.pod)
            if q is not None:
                qos.add_metric(key, q)
        capacity = GaugeMetricFamily(
            f"{PREFIX}_pool_capacity", "Capacity the pool hands out.", labels=["pool", "resource"]
        )
        for (pool, resource), value in sorted(self._capacity.items()):
            capacity.add_metric([pool, resource], value)
        yield from (observed, predicted, slo, qos, share, capacity)

    def _class_families(self) -> Iterator[Metric]:
        fams = {
            "qos_target": GaugeMetricFamily(
                f"{PREFIX}_qos_target", "QoS target of the class.", labels=["class"]
            ),
            "delivered_qos": GaugeMetricFamily(
                f"{PREFIX}_delivered_qos", "Mean delivered QoS of the class's pods.", labels=["class"]
            ),
            "gini": GaugeMetricFamily(
                f"{PREFIX}_gini", "Gini coefficient of delivered QoS within the class.", labels=["class"]
            ),
            "sla_credit_fraction": GaugeMetricFamily(
                f"{PREFIX}_sla_credit_fraction",
                "Mean SLA credit fraction f(Q/T) of the class.",
                labels=["class"],
            ),
            "pods_below_target": GaugeMetricFamily(
                f"{PREFIX}_pods_below_target",
                "Pods whose delivered QoS is below the class target.",
                labels=["class"],
            ),
        }
        for name, sample in self.class_samples().items():
            for field_name, fam in fams.items():
                fam.add_metric([name], float(getattr(sample, field_name)))
        yield from fams.values()

    def _loop_families(self) -> Iterator[Metric]:
        errors = [abs(s.error - 1.0) for s in self._pods if s.error is not None]
        band = self._control.deadband_frac
        yield _gauge(
            "setpoint_error_max",
            "Largest |observed / set point - 1| of the last cycle.",
            max(errors, default=0.0),
        )
        yield _gauge(
            "pods_outside_deadband",
            "Observed pods outside the law's dead band.",
            sum(e > band for e in errors),
        )
        yield _gauge("cycles_since_change", "Cycles in a row that changed no share.", self._since_change)
        cycles = CounterMetricFamily(f"{PREFIX}_cycles", "Controller cycles, by result.", labels=["result"])
        for result, count in self._cycles.items():
            cycles.add_metric([result], count)
        changes = CounterMetricFamily(f"{PREFIX}_changes", "Share changes, by result.", labels=["result"])
        for result, count in self._changes.items():
            changes.add_metric([result], count)
        yield from (cycles, changes)
        if self._last_cycle_s is not None:
            yield _gauge(
                "last_cycle_timestamp_seconds", "Unix time of the end of the last cycle.", self._last_cycle_s
            )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))


def serve(registry: CollectorRegistry, port: int, address: str = "0.0.0.0") -> Callable[[], None]:
    """Serve ``registry`` on ``address:port`` (``/metrics``) in a daemon thread; returns a stopper."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=address, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


__all__ = ["ClassSample", "ControllerMetrics", "PodSample", "pod_samples", "serve"]
