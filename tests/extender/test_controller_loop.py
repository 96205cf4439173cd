"""Closed loop: the QoE controller against a REAL Prometheus, a fake kube-apiserver and a simulated
plant, everything on 127.0.0.1.

- **Plant** (:class:`Plant`): eight inference services, six sharing the CPU of node ``cpu-0``
  (4000 millicores) and two sharing GPU 0 of node ``gpu-0`` (1000 milli-GPU). Each is an FCFS
  single server whose service rate is proportional to its current share, read every tick from
  the fake apiserver exactly as the controller leaves it (CPU: the containers' requests after
  ``pods/resize``; GPU: ``qosched.io/gpu-share-milli``). Service times are exponential; arrivals
  replay the **Azure LLM inference trace 2023** (conversation service, 2023-11-16; Patel et al.,
  "Splitwise", ISCA 2024; ``../shared/data/azure-llm-2023/``), time-compressed per service to its
  rate, from a different offset per service (Poisson arrivals when ``shared/`` is absent). Every
  request's latency goes into a per-pod histogram (prometheus_client, its own registry).
- **Prometheus** 2.x (``/usr/bin/prometheus``; skipped with a reason when absent) scrapes the
  exporter every second, TSDB in a temp dir.
- **Controller**: :class:`~qosched.extender.controller.loop.QoEController` with a
  :class:`~qosched.extender.controller.prom.PromReader` (3 s window), one cycle every 4 s for 8 cycles.

Starting from static equal shares (500m / 500 milli-GPU each; only two services meet their SLO)
the test asserts that the controller satisfies more services than equal shares (observed through
Prometheus), that shares converge, and that no pool is ever over capacity (sampled every plant
tick and after every cycle). The counts are printed (``-s``) for ``docs/controller.md``.
"""

from __future__ import annotations

import csv
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily

from qosched.extender.cli.main import main
from qosched.extender.controller.loop import (
    A_GPU_SHARE_MILLI,
    ContainerCpu,
    ControllerSettings,
    CycleReport,
    QoEController,
    build_pools,
    resize_patch,
    run_loop,
    writable_shares,
)
from qosched.extender.controller.prom import PromQueries, PromReader, PromSnapshot
from qosched.extender.kube.leader import LeaderElector, LeaseSettings
from qosched.extender.kube.objects import A_DEVICE
from qosched.policies.control.law import ControlSettings
from tests import prometheus_support as prom_support
from tests.extender.controller_support import add_two_pools
from tests.extender.test_prom import FakePrometheus, vector
from tests.kubefake import RbacAuthorizer, load_snapshot, write_kubeconfig
from tests.kubefake.objects import make_node, make_pod
from tests.kubefake.server import FakeKubeAPI

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
AZURE_CONV = SHARED / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
METRIC = "qosched_plant_request_latency_seconds"
NAMESPACE = "inference"
CPU_CAPACITY_MILLI = 4000
GPU_CAPACITY_MILLI = 1000
TICK_S = 0.1
INTERVAL_S = 4.0
CYCLES = 8
FINAL_WINDOW_S = 6.0
# Latency buckets: 0.05 ms .. ~10 s, factor 1.1 (a quantile interpolated inside one is within 10 %).
BUCKETS_S = tuple(float(f"{b:.6g}") for b in 0.00005 * 1.1 ** np.arange(0, 129))


#: The plant runs this many times faster than the services it stands for: rates x10, service
#: times and SLOs /10. Windowed latency estimates then average ten times more busy periods
#: (3 s of plant time = 30 s of service time), which keeps their noise near 5-10 %.
SPEEDUP = 10.0


@dataclass(frozen=True, slots=True)
class Service:
    """One service, in real-service units (the plant applies :data:`SPEEDUP`). ``work_ms``: the
    service time at one whole core / GPU (1000 milli), so at share x [milli] the service rate is
    x / work_ms requests per second."""

    name: str
    resource: str  # "cpu" or "gpu"
    rate_rps: float
    work_ms: float
    slo_ms: float
    percentile: float | None
    service_class: str

    @property
    def plant_rate_rps(self) -> float:
        return self.rate_rps * SPEEDUP

    @property
    def plant_work_ms(self) -> float:
        return self.work_ms / SPEEDUP

    @property
    def plant_slo_ms(self) -> float:
        return self.slo_ms / SPEEDUP

    def latency_ms(self, share_milli: float) -> float:
        """Plant latency, M/M/1 steady state (mean, or the percentile k/(mu - lambda)); inf if unstable."""
        slack = share_milli / self.plant_work_ms - self.plant_rate_rps
        k = 1.0 if self.percentile is None else -np.log1p(-self.percentile / 100.0)
        return 1000.0 * k / slack if slack > 0 else float("inf")


# At equal shares (500 each) only cpu-small and gpu-small meet their SLO; all queues are stable.
# Demands at the 0.9 * SLO set point: CPU ~3,280 of 4,000 millicores, GPU ~870 of 1,000.
SERVICES = (
    Service("cpu-small", "cpu", 200.0, 1.0, 10.0, None, "prod"),
    Service("cpu-resnet", "cpu", 300.0, 1.5, 10.0, None, "prod"),
    Service("cpu-inception", "cpu", 150.0, 3.0, 60.0, 95.0, "batch"),
    Service("cpu-mobilenet", "cpu", 400.0, 1.1, 8.0, None, "batch"),
    Service("cpu-effnet", "cpu", 100.0, 4.5, 40.0, None, "free"),
    Service("cpu-ssd", "cpu", 350.0, 1.3, 40.0, 95.0, "prod"),
    Service("gpu-resnet", "gpu", 300.0, 1.5, 15.0, None, "prod"),
    Service("gpu-small", "gpu", 200.0, 1.0, 10.0, None, "batch"),
)


# ------------------------------------------------------------------------------ arrivals


def azure_conv_gaps() -> np.ndarray | None:
    """Inter-arrival times of the Azure LLM conversation trace, normalised to mean 1 (None if absent).

    The test draws gaps from this empirical distribution (coefficient of variation 1.09, a
    heavier tail than the exponential): a stationary renewal process with the trace's
    burstiness at the request scale. Replaying the timestamps in order would also replay the
    trace's minute-scale rate swings, which at a 50x time compression turn into load steps every
    few seconds: a moving target, not a plant to converge on.
    """
    if not AZURE_CONV.is_file():
        return None
    with AZURE_CONV.open(newline="") as fh:
        stamps = [datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp() for row in csv.DictReader(fh)]
    gaps = np.diff(np.sort(np.asarray(stamps, dtype=np.float64)))
    return gaps / gaps.mean()


class Arrivals:
    """Arrival times [s, plant clock] at ``rate_rps``: gaps from the trace's distribution scaled to
    mean ``1/rate_rps``, or exponential gaps (Poisson) without the trace."""

    def __init__(self, gaps: np.ndarray | None, rate_rps: float, rng: np.random.Generator) -> None:
        self.gaps = gaps
        self.rate_rps = rate_rps
        self.rng = rng
        self.pending = np.zeros(0)
        self.last_s = 0.0

    def until(self, t_s: float) -> np.ndarray:
        while self.last_s <= t_s:
            n = max(64, int((t_s - self.last_s + 0.5) * self.rate_rps * 1.2))
            draw = self.rng.choice(self.gaps, n) if self.gaps is not None else self.rng.exponential(1.0, n)
            times = self.last_s + np.cumsum(draw / self.rate_rps)
            self.pending = np.concatenate([self.pending, times])
            self.last_s = float(times[-1])
        cut = int(np.searchsorted(self.pending, t_s, side="right"))
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out


# ------------------------------------------------------------------------------ plant


class LatencyHistograms:
    """Per-pod latency histograms held as numpy counts and exported at scrape time (a custom
    collector: a plant tick observes thousands of requests at once, ``Histogram.observe`` one)."""

    def __init__(self, name: str, buckets_s: tuple[float, ...]) -> None:
        self.name = name
        self.bounds = np.asarray(buckets_s)
        self.les = [repr(float(b)) for b in buckets_s]
        self.counts: dict[str, np.ndarray] = {}
        self.sums: dict[str, float] = {}
        self.lock = threading.Lock()

    def observe_many(self, pod: str, latencies_s: np.ndarray) -> None:
        idx = np.searchsorted(self.bounds, latencies_s, side="left")  # le: value <= bound
        add = np.bincount(idx, minlength=len(self.bounds) + 1)
        with self.lock:
            self.counts[pod] = self.counts.get(pod, np.zeros(len(self.bounds) + 1, dtype=np.int64)) + add
            self.sums[pod] = self.sums.get(pod, 0.0) + float(latencies_s.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name, "Request latency of the simulated inference services.", labels=["namespace", "pod"]
        )
        with self.lock:
            for pod, counts in sorted(self.counts.items()):
                cumulative = np.cumsum(counts)
                buckets = [(le, float(c)) for le, c in zip(self.les, cumulative[:-1], strict=True)]
                buckets.append(("+Inf", float(cumulative[-1])))
                family.add_metric([NAMESPACE, pod], buckets, self.sums[pod])
        yield family


class Plant:
    """Real-time FCFS simulation of the services; reads shares from the fake apiserver each tick.

    Departures follow Lindley's recursion, vectorised per tick: with arrivals A, service times S,
    cumulative work C_n = S_1 + ... + S_n and D_0 the time the server frees from the last tick,
    D_n = C_n + max(D_0, max_{k<=n}(A_k - C_{k-1})).
    """

    def __init__(self, api: FakeKubeAPI, registry: CollectorRegistry, seed: int = 7) -> None:
        self.api = api
        self.hist = LatencyHistograms(METRIC, BUCKETS_S)
        registry.register(self.hist)  # type: ignore[arg-type]
        rng = np.random.default_rng(seed)
        gaps = azure_conv_gaps()
        self.trace_used = gaps is not None
        self.arrivals = [Arrivals(gaps, s.plant_rate_rps, rng) for s in SERVICES]
        self.rng = rng
        self.free_at = [0.0] * len(SERVICES)
        self.max_pool_milli = {"cpu": 0.0, "gpu": 0.0}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plant", daemon=True)

    def shares(self) -> list[float]:
        out = []
        for s in SERVICES:
            pod = self.api.get("pods", s.name, NAMESPACE)
            assert pod is not None
            if s.resource == "gpu":
                out.append(float(pod["metadata"]["annotations"].get(A_GPU_SHARE_MILLI, "500")))
            else:
                total = 0.0
                for c in pod["spec"]["containers"]:
                    cpu = str(c["resources"]["requests"]["cpu"])
                    total += float(cpu[:-1]) if cpu.endswith("m") else 1000.0 * float(cpu)
                out.append(total)
        return out

    def start(self) -> Plant:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(TICK_S):
                self._tick(time.monotonic() - self.t0)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def _tick(self, now_s: float) -> None:
        shares = self.shares()
        for kind in ("cpu", "gpu"):
            used = sum(x for x, s in zip(shares, SERVICES, strict=True) if s.resource == kind)
            self.max_pool_milli[kind] = max(self.max_pool_milli[kind], used)
        for i, s in enumerate(SERVICES):
            arrivals = self.arrivals[i].until(now_s)
            if arrivals.size == 0:
                continue
            mu = shares[i] / s.plant_work_ms  # requests per second at the current share
            work = self.rng.exponential(1.0 / mu, arrivals.size)
            cum = np.cumsum(work)
            before = np.concatenate([[0.0], cum[:-1]])
            departures = cum + np.maximum(self.free_at[i], np.maximum.accumulate(arrivals - before))
            self.free_at[i] = float(departures[-1])
            self.hist.observe_many(s.name, departures - arrivals)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def exporter() -> Iterator[tuple[CollectorRegistry, int]]:
    with prom_support.exporter() as served:
        yield served


@pytest.fixture
def prometheus(tmp_path: Path, exporter: tuple[CollectorRegistry, int]) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping the exporter every second; killed afterwards."""
    _, exporter_port = exporter
    with prom_support.prometheus(
        tmp_path,
        {"plant": f"127.0.0.1:{exporter_port}"},
        honor_labels=True,
        flags=["--storage.tsdb.retention.time=1h"],
    ) as url:
        yield url


@pytest.fixture
def cluster() -> Iterator[FakeKubeAPI]:
    """Node cpu-0 (4 CPUs) with six CPU services, node gpu-0 with two services on GPU 0."""
    with FakeKubeAPI() as api:
        api.add_node("cpu-0", accelerator="cpu", cpu=str(CPU_CAPACITY_MILLI // 1000), gpus=0)
        api.add_node("gpu-0", accelerator="nvidia-t4", gpus=1, cpu="8")
        for s in SERVICES:
            extra = {"qosched.io/slo-percentile": str(s.percentile)} if s.percentile else {}
            if s.resource == "gpu":
                extra[A_DEVICE] = "0"
            api.add_pod(
                s.name,
                NAMESPACE,
                model="resnet50",
                slo_ms=s.plant_slo_ms,
                rate_rps=s.plant_rate_rps,
                service_class=s.service_class,
                gpu_milli=500 if s.resource == "gpu" else None,
                node_name="cpu-0" if s.resource == "cpu" else "gpu-0",
                cpu="500m" if s.resource == "cpu" else "100m",
                memory="256Mi",
                annotations=extra,
            )
        yield api


# ------------------------------------------------------------------------------ the test


def wait_for_data(reader: PromReader, timeout_s: float) -> None:
    """Until Prometheus has a rate for every pod (two scrapes inside the window)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        snap = reader.read([None, 95.0])
        if snap is not None and all(snap.rate_of(NAMESPACE, s.name) for s in SERVICES):
            return
        time.sleep(0.5)
    pytest.fail("prometheus never returned data for every pod")


def observed_satisfied(reader: PromReader) -> tuple[int, dict[str, float]]:
    """Services whose latency, as Prometheus reports it over the reader's window, meets the SLO."""
    snap = reader.read([None, 95.0], with_rate=False)
    assert snap is not None
    lat = {s.name: snap.latency_of(NAMESPACE, s.name, s.percentile) for s in SERVICES}
    values = {k: (float("nan") if v is None else v) for k, v in lat.items()}
    met = sum(values[s.name] <= s.plant_slo_ms for s in SERVICES)
    return met, values


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.timeout(120)
def test_closed_loop_with_real_prometheus(
    prometheus: str, exporter: tuple[CollectorRegistry, int], cluster: FakeKubeAPI
) -> None:
    registry, _ = exporter
    plant = Plant(cluster, registry).start()
    t_start = time.monotonic()
    reader = PromReader(prometheus, PromQueries(metric=METRIC, window="3s"), timeout_s=3.0)
    judge = PromReader(prometheus, PromQueries(metric=METRIC, window=f"{FINAL_WINDOW_S:g}s"), timeout_s=3.0)
    api_client = cluster.api_client()
    reports: list[CycleReport] = []
    try:
        wait_for_data(reader, timeout_s=15.0)
        time.sleep(1.0)  # a full 3 s window at equal shares
        base_met, base_lat = observed_satisfied(reader)
        equal = plant.shares()
        analytic_equal = sum(s.latency_ms(x) <= s.plant_slo_ms for s, x in zip(SERVICES, equal, strict=True))

        settings = ControllerSettings(
            interval_s=INTERVAL_S,
            settle_s=INTERVAL_S - 0.5,
            min_cpu_milli=50,
            min_gpu_milli=50,
            control=ControlSettings(),
        )
        controller = QoEController(k8s.CoreV1Api(api_client), reader, settings)

        def check(report: CycleReport) -> None:
            reports.append(report)
            now = plant.shares()
            cpu = sum(x for x, s in zip(now, SERVICES, strict=True) if s.resource == "cpu")
            gpu = sum(x for x, s in zip(now, SERVICES, strict=True) if s.resource == "gpu")
            assert cpu <= CPU_CAPACITY_MILLI, (cpu, gpu)
            assert gpu <= GPU_CAPACITY_MILLI, (cpu, gpu)

        t_loop = time.monotonic()
        cycles = run_loop(controller, threading.Event(), iterations=CYCLES, on_report=check)
        loop_s = time.monotonic() - t_loop
        assert cycles == CYCLES
        # Judge over a longer window than the controller's (less noise): the last cycle's
        # changes are small, so 6 s after it the window shows the converged shares.
        time.sleep(FINAL_WINDOW_S)
        final_met, final_lat = observed_satisfied(judge)
        final = plant.shares()
    finally:
        plant.stop()
        reader.close()
        judge.close()
        api_client.close()

    assert not plant.errors, plant.errors
    analytic_final = sum(s.latency_ms(x) <= s.plant_slo_ms for s, x in zip(SERVICES, final, strict=True))
    history = _share_history(reports, equal)
    print(
        f"\nclosed loop ({'Azure conv trace' if plant.trace_used else 'Poisson'} arrivals): "
        f"satisfied at equal shares {base_met}/8 observed ({analytic_equal} M/M/1), "
        f"with the controller {final_met}/8 observed ({analytic_final} M/M/1)"
    )
    for s, x0, x1 in zip(SERVICES, equal, final, strict=True):
        print(
            f"  {s.name:14s} {s.resource} share {x0:6.0f} -> {x1:6.0f}  "
            f"latency {base_lat[s.name]:7.2f} -> {final_lat[s.name]:5.2f} ms (SLO {s.plant_slo_ms:g}"
            f"{'' if s.percentile is None else f', p{s.percentile:g}'})"
        )
    print("  share history per cycle:", [[round(v) for v in row] for row in history])
    print("  max pool use sampled per tick:", plant.max_pool_milli)
    print(f"  controller loop {loop_s:.1f} s, test body {time.monotonic() - t_start:.1f} s")

    # Every cycle ran on data (none skipped), and it never overfilled a pool.
    assert all(r.skipped is None for r in reports), [r.skipped for r in reports]
    assert all(r.failed == 0 for r in reports), [c.error for r in reports for c in r.changes]
    assert plant.max_pool_milli["cpu"] <= CPU_CAPACITY_MILLI
    assert plant.max_pool_milli["gpu"] <= GPU_CAPACITY_MILLI
    # Equal shares satisfy few; the controller satisfies more (the design: 2 -> 8).
    assert analytic_equal == 2
    assert base_met <= 3
    # Observed over a 6 s window: typically 7-8 of 8 (runs vary: the plant runs in real time).
    assert final_met >= base_met + 3, (base_met, final_met)
    assert analytic_final >= 6, analytic_final
    # Converged: over the last two cycles no share moved by more than 5 % of its pool.
    caps = np.array([CPU_CAPACITY_MILLI if s.resource == "cpu" else GPU_CAPACITY_MILLI for s in SERVICES])
    moves = np.abs(np.diff(np.array(history[-3:]), axis=0)) / caps
    print(f"  largest share move in the last two cycles: {100 * moves.max():.2f} % of its pool")
    assert moves.max() <= 0.05, moves.round(3)


def _share_history(reports: list[CycleReport], start: list[float]) -> list[list[float]]:
    """Shares after each cycle, reconstructed from the applied changes."""
    names = [s.name for s in SERVICES]
    row = list(start)
    out = [list(row)]
    for r in reports:
        for c in r.changes:
            if c.applied:
                row[names.index(c.pod.name)] = float(c.new_share)
        out.append(list(row))
    return out


# ============================================================================== fast unit tests
# The controller's parts without Prometheus: parsing and pools from API objects, the resize
# patch, integer shares, and whole cycles against the fake apiserver with a canned sensor.


class CannedLatency:
    """A LatencySource with fixed observations: ``{(pod, percentile): ms}``; None = unavailable."""

    def __init__(self, latency: dict[tuple[str, float | None], float] | None, ns: str = "default") -> None:
        self.latency = latency
        self.ns = ns
        self.asked: list[set[float | None]] = []

    def read(self, percentiles: Any, *, with_rate: bool = True) -> PromSnapshot | None:
        self.asked.append(set(percentiles))
        if self.latency is None:
            return None
        by_pct: dict[float | None, dict[tuple[str | None, str], float]] = {}
        for (pod, pct), ms in self.latency.items():
            by_pct.setdefault(pct, {})[(self.ns, pod)] = ms
        return PromSnapshot(by_pct)


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def ctn(name: str, req: int, lim: int | None) -> ContainerCpu:
    return ContainerCpu(name, req, lim)


@pytest.mark.parametrize(
    ("containers", "new_total", "want"),
    [
        ([ctn("s", 500, 500)], 800, [("s", "800m", "800m")]),
        ([ctn("s", 500, 1000)], 250, [("s", "250m", "500m")]),
        ([ctn("s", 500, None)], 640, [("s", "640m", None)]),
        ([ctn("a", 300, 300), ctn("b", 100, None)], 1000, [("a", "750m", "750m"), ("b", "250m", None)]),
        ([ctn("a", 1, 1), ctn("b", 2, 2)], 2, [("a", "1m", "1m"), ("b", "1m", "1m")]),
        ([ctn("side", 0, None), ctn("s", 400, 400)], 100, [("s", "100m", "100m")]),
        ([ctn("s", 300, 700)], 500, [("s", "500m", "1167m")]),
    ],
    ids=[
        "guaranteed-stays-equal",
        "burstable-ratio-kept",
        "no-limit",
        "split-by-request",
        "at-least-1m",
        "container-without-cpu-untouched",
        "limit-rounded-up",
    ],
)
def test_resize_patch(
    containers: list[ContainerCpu], new_total: int, want: list[tuple[str, str, str | None]]
) -> None:
    body = resize_patch(containers, new_total)
    got = [
        (c["name"], c["resources"]["requests"]["cpu"], (c["resources"].get("limits") or {}).get("cpu"))
        for c in body["spec"]["containers"]
    ]
    assert got == want
    assert set(body) == {"spec"}
    assert all(set(c["resources"]) <= {"requests", "limits"} for c in body["spec"]["containers"])


def test_resize_patch_needs_a_cpu_request() -> None:
    with pytest.raises(ValueError, match="no container"):
        resize_patch([ctn("s", 0, None)], 100)


@pytest.mark.parametrize(
    ("old", "new", "cap", "want"),
    [
        ([500, 500], [600.7, 399.2], 1000, [600, 399]),  # floored
        ([500, 500], [505.0, 495.0], 1000, [500, 500]),  # 1 % < 2 %: not written
        ([1000, 1000], [1010.0, 985.0], 2000, [1000, 1000]),  # both small
        # the small decrease must be written, else the increase would overfill the pool
        ([500, 490], [515.0, 481.0], 996, [515, 481]),
        ([800, 200], [700.0, 300.0], 1000, [700, 300]),
        ([600, 600], [600.0, 400.0], 1000, [600, 400]),  # overcommitted input: decrease written
    ],
    ids=["floor", "below-threshold", "both-below", "small-decrease-forced", "plain-move", "overcommitted"],
)
def test_writable_shares(old: list[int], new: list[float], cap: float, want: list[int]) -> None:
    got = writable_shares(old, new, cap, 0.02)
    assert got == want
    assert sum(got) <= cap or sum(got) <= sum(old)


def pool_objects() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [
        make_node("n1", accelerator="cpu", cpu="4", gpus=0),
        make_node("g1", accelerator="nvidia-t4", gpus=2),
    ]
    pods = [
        make_pod("p1", "default", slo_ms=20, node_name="n1", cpu="500m"),
        make_pod("p2", "other", slo_ms=30, slo_percentile=95, node_name="n1", cpu="1", service_class="free"),
        make_pod("u", "default", node_name="n1", cpu="700m"),  # unmanaged neighbour
        make_pod("done", "default", slo_ms=20, node_name="n1", cpu="2", phase="Succeeded"),
        make_pod("pending", "default", slo_ms=20, cpu="1"),
        make_pod("besteffort", "default", slo_ms=20, node_name="n1", cpu=None, memory=None),
        make_pod("bad", "default", node_name="n1", cpu="100m", annotations={"qosched.io/slo-ms": "fast"}),
        make_pod(
            "ga", "default", slo_ms=10, gpu_milli=300, node_name="g1", cpu="200m", annotations={A_DEVICE: "0"}
        ),
        make_pod(
            "gb",
            "default",
            slo_ms=10,
            gpu_milli=200,
            node_name="g1",
            cpu="200m",
            annotations={A_DEVICE: "0", A_GPU_SHARE_MILLI: "350"},
        ),
        make_pod("gc", "default", gpu_milli=250, node_name="g1", cpu="100m", annotations={A_DEVICE: "0"}),
        make_pod("whole", "default", slo_ms=10, gpus=1, node_name="g1", annotations={A_DEVICE: "1"}),
    ]
    return nodes, pods


@pytest.mark.parametrize(
    ("namespace", "want"),
    [
        (
            None,
            {
                "n1/cpu": (4000 - 700 - 100, {"default/p1": 500, "other/p2": 1000}),
                "g1/gpu0": (1000 - 250, {"default/ga": 300, "default/gb": 350}),
            },
        ),
        (
            "default",
            {
                "n1/cpu": (4000 - 700 - 100 - 1000, {"default/p1": 500}),
                "g1/gpu0": (1000 - 250, {"default/ga": 300, "default/gb": 350}),
            },
        ),
        ("other", {"n1/cpu": (4000 - 700 - 100 - 500, {"other/p2": 1000})}),
    ],
    ids=["all-namespaces", "namespace-default", "namespace-other"],
)
def test_build_pools(
    namespace: str | None, want: dict[str, tuple[float, dict[str, int]]], caplog: pytest.LogCaptureFixture
) -> None:
    nodes, pods = pool_objects()
    with caplog.at_level(logging.WARNING, logger="qosched.extender.controller.loop"):
        pools = build_pools(nodes, pods, ControllerSettings(namespace=namespace))
    got = {p.label: (p.capacity, {q.key: q.share for q in p.pods}) for p in pools}
    assert got == want
    assert "default/bad" in caplog.text
    assert "slo-ms" in caplog.text
    by_key = {q.key: q for p in pools for q in p.pods}
    if "other/p2" in by_key:
        p2 = by_key["other/p2"]
        assert (p2.percentile, p2.class_name, p2.qos_target) == (95.0, "free", 0.5)


@pytest.fixture
def two_pods(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    """Node n1 with 2 CPUs: 'miss' and 'beat', Guaranteed 1000m each, SLO 10 ms (mean)."""
    add_two_pools(kube_api)
    kube_api.clear_requests()
    return kube_api


# observed 20 ms -> demand 1000 (20/9)^0.5 = 1490.7; 2 ms -> 471.4; damped 0.5: 1245, 735.
CANNED = {("miss", None): 20.0, ("beat", None): 2.0, ("gpu-miss", None): 20.0, ("gpu-beat", None): 2.0}
NO_RATE = ControllerSettings(rate_source="none", settle_s=10.0, interval_s=10.0)


def cpu_of(api: FakeKubeAPI, name: str) -> tuple[str, str]:
    pod = api.get("pods", name)
    assert pod is not None
    res = pod["spec"]["containers"][0]["resources"]
    return res["requests"]["cpu"], res["limits"]["cpu"]


def test_cycle_moves_cpu_and_gpu_decreases_first(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    ctl = QoEController(core_v1, CannedLatency(CANNED), NO_RATE)
    report = ctl.cycle()
    assert report.skipped is None
    assert report.failed == 0
    assert report.applied == 4
    assert {(c.pod.name, c.old_share, c.new_share) for c in report.changes} == {
        ("miss", 1000, 1245),
        ("beat", 1000, 735),
        ("gpu-miss", 500, 622),
        ("gpu-beat", 500, 367),
    }
    assert cpu_of(two_pods, "miss") == ("1245m", "1245m")
    assert cpu_of(two_pods, "beat") == ("735m", "735m")
    for name, want in (("gpu-miss", "622"), ("gpu-beat", "367")):
        pod = two_pods.get("pods", name)
        assert pod is not None
        assert pod["metadata"]["annotations"][A_GPU_SHARE_MILLI] == want
    patches = [(r.name, r.subresource) for r in two_pods.calls(method="PATCH")]
    assert patches[:2] in ([("beat", "resize"), ("gpu-beat", None)], [("gpu-beat", None), ("beat", "resize")])
    assert set(patches[2:]) == {("miss", "resize"), ("gpu-miss", None)}
    assert all(r.status == 200 for r in two_pods.calls(method="PATCH"))
    pod = two_pods.get("pods", "miss")
    assert pod is not None
    assert pod["status"]["qosClass"] == "Guaranteed"


def test_dry_run_writes_nothing(
    two_pods: FakeKubeAPI, core_v1: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ControllerSettings(rate_source="none", dry_run=True)
    with caplog.at_level(logging.INFO, logger="qosched.extender.controller.loop"):
        report = QoEController(core_v1, CannedLatency(CANNED), settings).cycle()
    assert report.dry_run
    assert len(report.changes) == 4
    assert report.applied == 0
    assert two_pods.count(method="PATCH") == 0
    assert (
        "dry-run, would apply: default/miss cpu 1000m -> 1245m (mean 20.0 ms, SLO 10 ms, grow)" in caplog.text
    )


def test_settle_holds_recently_changed_pods(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    clock = StepClock()
    ctl = QoEController(core_v1, CannedLatency(CANNED), NO_RATE, monotonic=clock)
    assert ctl.cycle().applied == 4
    clock.t = 5.0  # < settle_s = 10
    again = ctl.cycle()
    assert again.changes == ()
    assert all(a == "hold-no-data" for step in again.steps.values() for a in step.actions)
    clock.t = 10.5
    assert ctl.cycle().applied > 0


@pytest.mark.parametrize(
    ("latency", "may_act", "skipped", "error"),
    [
        (None, True, "prometheus unavailable", None),
        ({}, True, None, None),  # no observation for anyone: nothing moves
        (CANNED, False, None, "skipped: not the leader"),
    ],
    ids=["prometheus-down", "no-observations", "not-leader"],
)
def test_cycle_never_acts_without_data_or_leadership(
    two_pods: FakeKubeAPI,
    core_v1: Any,
    latency: dict[tuple[str, float | None], float] | None,
    may_act: bool,
    skipped: str | None,
    error: str | None,
) -> None:
    ctl = QoEController(core_v1, CannedLatency(latency), NO_RATE, may_act=lambda: may_act)
    report = ctl.cycle()
    assert report.skipped == skipped
    assert two_pods.count(method="PATCH") == 0
    assert all(c.error == error for c in report.changes)


def test_failed_decrease_blocks_the_pools_increases(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    two_pods.fail_next(r"/pods/beat/resize$", 500, method="PATCH")
    report = QoEController(core_v1, CannedLatency(CANNED), NO_RATE).cycle()
    by_pod = {c.pod.name: c for c in report.changes}
    assert by_pod["beat"].error is not None
    assert "500" in by_pod["beat"].error
    assert by_pod["miss"].error == "skipped: a decrease in its pool failed"
    assert by_pod["gpu-miss"].applied
    assert by_pod["gpu-beat"].applied
    assert cpu_of(two_pods, "miss") == ("1", "1")


def test_asks_prometheus_for_the_percentiles_in_use(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    two_pods.add_pod("tail", slo_ms=50, slo_percentile=99, node_name="n1", cpu="100m")
    source = CannedLatency(CANNED)
    QoEController(core_v1, source, NO_RATE).cycle()
    assert source.asked == [{None, 99.0}]


def test_measured_rate_selects_the_mm1_inversion(two_pods: FakeKubeAPI, core_v1: Any) -> None:
    class WithRate(CannedLatency):
        def read(self, percentiles: Any, *, with_rate: bool = True) -> PromSnapshot | None:
            snap = super().read(percentiles, with_rate=with_rate)
            assert snap is not None
            assert with_rate
            return PromSnapshot(snap.latency_ms, {("default", "miss"): 900.0})

    settings = ControllerSettings(settle_s=10.0)  # rate_source "measured"
    report = QoEController(core_v1, WithRate(CANNED), settings).cycle()
    pool = next(p for p in report.pools if p.key == ("cpu", "n1", None))
    inversions = dict(zip((p.name for p in pool.pods), report.steps[pool.key].inversions, strict=True))
    # "miss" has a measured rate (M/M/1 inversion); "beat" has neither rate nor annotation.
    assert inversions == {"beat": "power", "miss": "mm1"}


def test_cli_once_dry_run(two_pods: FakeKubeAPI, tmp_path: Path) -> None:
    def respond(query: str) -> tuple[int, Any]:
        if "_sum" in query:
            return 200, vector(
                ({"namespace": "default", "pod": "miss"}, "0.020"),
                ({"namespace": "default", "pod": "beat"}, "0.002"),
            )
        return 200, vector()

    with FakePrometheus(respond) as prom:
        result = CliRunner().invoke(
            main,
            [
                "controller",
                "--kubeconfig",
                str(write_kubeconfig(two_pods.url, tmp_path / "kubeconfig")),
                "--prometheus-url",
                prom.url,
                "--once",
                "--dry-run",
                "--metric",
                "lat_seconds",
                "--window",
                "30s",
            ],
        )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["dry_run"] is True
    assert out["skipped"] is None
    assert {(c["pod"], c["new"], c["applied"]) for c in out["changes"]} == {
        ("default/miss", 1245, False),
        ("default/beat", 735, False),
    }
    assert two_pods.count(method="PATCH") == 0
    assert any("lat_seconds_sum[30s]" in q for q in prom.queries)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "5"], "PromQueries.window"),
        (["--damping", "0"], "ControlSettings.damping"),
        (["--query", "histogram_quantile(0.9, x)"], "$quantile"),
        (["--renew-deadline-s", "30"], "LeaseSettings"),
    ],
    ids=["bad-window", "bad-damping", "query-without-quantile", "bad-lease"],
)
def test_cli_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["controller", "--prometheus-url", "http://127.0.0.1:1", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_once_with_prometheus_down(two_pods: FakeKubeAPI, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(
        main,
        [
            "controller",
            "--kubeconfig",
            str(write_kubeconfig(two_pods.url, tmp_path / "kubeconfig")),
            "--prometheus-url",
            f"http://127.0.0.1:{port}",
            "--prometheus-timeout-s",
            "1",
            "--once",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{") :])["skipped"] == "prometheus unavailable"
    assert two_pods.count(method="PATCH") == 0


def test_manifest_rbac_allows_everything_the_controller_does() -> None:
    """Against a fake apiserver enforcing the controller component's RBAC
    (manifests/components/controller/rbac.yaml) for its ServiceAccount: one cycle (list nodes and
    pods, pods/resize, pod annotation patch) and the lease election."""
    rbac = Path(__file__).resolve().parents[2] / "manifests" / "components" / "controller" / "rbac.yaml"
    user = "system:serviceaccount:qosched-system:qosched-controller"
    with FakeKubeAPI(authorizer=RbacAuthorizer(load_snapshot(rbac), user=user)) as api:
        add_two_pools(api)
        api_client = api.api_client()
        try:
            core = k8s.CoreV1Api(api_client)
            elector = LeaderElector(k8s.CoordinationV1Api(api_client), "me", LeaseSettings())
            assert elector.try_acquire_or_renew()
            report = QoEController(
                core, CannedLatency(CANNED), NO_RATE, may_act=lambda: elector.is_leader
            ).cycle()
            assert elector.release()
        finally:
            api_client.close()
        assert report.applied == 4, [c.error for c in report.changes]
        assert report.failed == 0, [c.error for c in report.changes]
        assert api.count(status=403) == 0
