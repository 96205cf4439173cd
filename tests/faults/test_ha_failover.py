"""HA: two scheduler pods (kube-scheduler + extender each), one lease; the leader's pod dies mid-run.

What manifests/components/ha/ deploys (docs/install.md "High availability"): two replicas of the
scheduler pod; kube-scheduler's leader election (scheduler-config.yaml: lease
qosched-system/qosched-scheduler) lets one replica schedule, and only the leader's kube-scheduler
calls its extender sidecar. Every extender watches the cluster from its start, leader or not.

Here each pod is a real ``qosched serve`` process against the fake API server plus a stand-in
kube-scheduler (:class:`~tests.faults.standin.StandInScheduler`) that schedules only while
:class:`~qosched.extender.kube.leader.LeaderElector` (the code the controller uses; the same
Lease protocol as client-go) says it leads. Mid-run the leader's pod dies: its extender is
SIGKILLed and its scheduler stops renewing, as when the node goes away. Promises checked:

* the standby's extender is warm: ready the whole time, and before it handles a single verb its
  cache already holds every bind the old leader made (``/placements`` equals the API's bound
  pods) — no relist, no restart;
* the standby takes over within one lease duration and schedules the rest;
* nothing is bound twice, no device is over-allocated, no pod is lost (the fault invariants);
  a bind of a pod the old leader placed, retried through the new leader, is "already bound".
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests
from kubernetes import client

from qosched.extender.kube.leader import LeaderElector, LeaseSettings
from tests.faults.conftest import ExtenderProcess
from tests.faults.invariants import assert_invariants, bound_pods
from tests.faults.standin import StandInScheduler
from tests.kubefake import FakeKubeAPI

FAST_WATCH = {"WATCH_BACKOFF_S": 0.05, "WATCH_BACKOFF_MAX_S": 0.5}
#: kube-scheduler's lease, shortened (manifests: 15 s / 10 s / 2 s) to keep the test short.
LEASE = LeaseSettings(
    namespace="qosched-system",
    name="qosched-scheduler",
    lease_duration_s=2.0,
    renew_deadline_s=1.5,
    retry_period_s=0.2,
)
WARM_BOUND_S = 2.0  # the standby's cache must match the API within this after the kill


@dataclass
class SchedulerPod:
    """One replica: a stand-in kube-scheduler that schedules through its own extender while leading."""

    name: str
    api: FakeKubeAPI
    extender: ExtenderProcess
    elector: LeaderElector
    alive: threading.Event = field(default_factory=threading.Event)
    led_at: float | None = None
    bound: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.standin = StandInScheduler(self.api, self.extender.url)
        self.alive.set()

    def run(self, done: threading.Event) -> None:
        """Renew/acquire every retry period; while leading, schedule one pending pod at a time."""
        nodes = [n["metadata"]["name"] for n in self.api.list_objects("nodes")]
        while self.alive.is_set() and not done.is_set():
            if not self.elector.try_acquire_or_renew():
                time.sleep(LEASE.retry_period_s)
                continue
            if self.led_at is None:
                self.led_at = time.monotonic()
            pending = self.standin.pending()
            if not pending:
                time.sleep(LEASE.retry_period_s)
                continue
            for pod in pending[:3]:  # a few pods per renewal, as kube-scheduler's queue does
                if not (self.alive.is_set() and self.elector.is_leader):
                    break
                node = self.standin.schedule_one(pod, nodes)
                if node is not None:
                    self.bound[pod["metadata"]["name"]] = node


def _cluster(api: FakeKubeAPI, nodes: int, pods: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    for i in range(nodes):
        api.add_node(f"gpu-{i:02d}", accelerator="nvidia-t4", gpus=2)
    created = []
    for j in range(pods):
        api.add_pod(f"p-{j:03d}", model="resnet50", slo_ms=500, rate_rps=2, gpu_milli=rng.choice([250, 500]))
        created.append(f"default/p-{j:03d}")
    return created


def _placements(ext: ExtenderProcess) -> dict[str, str]:
    placed = requests.get(f"{ext.url}/placements", timeout=5).json()
    return {key: value["node"] for key, value in placed.items()}


def _api_placements(api: FakeKubeAPI) -> dict[str, str]:
    return {f"default/{p['metadata']['name']}": p["spec"]["nodeName"] for p in bound_pods(api)}


def _wait(predicate: Callable[[], bool], timeout_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s")


@pytest.mark.slow
def test_failover_standby_is_warm_and_nothing_is_bound_twice(
    fault_api: FakeKubeAPI, extender: Callable[..., ExtenderProcess]
) -> None:
    created = _cluster(fault_api, nodes=8, pods=36)
    pods = []
    for name in ("sched-a", "sched-b"):
        ext = extender(fault_api.url, name=name, **FAST_WATCH)
        api_client = fault_api.api_client()
        elector = LeaderElector(client.CoordinationV1Api(api_client), f"{name}_x", LEASE)
        pods.append(SchedulerPod(name, fault_api, ext, elector))
    for p in pods:
        p.extender.wait_status(200, timeout_s=30)

    done = threading.Event()
    threads = [threading.Thread(target=p.run, args=(done,), daemon=True) for p in pods]
    threads[0].start()
    _wait(lambda: pods[0].led_at is not None, 10)  # a leads first (b starts after it holds the lease)
    threads[1].start()
    leader, standby = pods

    # The leader binds ~12 pods; then its pod dies: extender SIGKILLed, scheduler silent.
    _wait(lambda: len(leader.bound) >= 12, 30)
    leader.extender.kill()
    leader.alive.clear()
    killed_at = time.monotonic()
    threads[0].join(10)
    bound_by_leader = _api_placements(fault_api)
    assert len(bound_by_leader) >= 12

    # Warm standby: ready all along, and its cache already holds every bind of the old leader.
    assert standby.extender.readyz() == 200
    warm_s = _wait(lambda: _placements(standby.extender) == _api_placements(fault_api), WARM_BOUND_S)
    assert not standby.standin.timer.samples_s  # ... before serving a single verb

    # The standby takes over within the lease duration (plus a retry period and a loaded runner).
    _wait(lambda: standby.led_at is not None, LEASE.lease_duration_s * 3)
    assert standby.led_at is not None
    takeover_s = standby.led_at - killed_at
    _wait(lambda: not standby.standin.pending(), 60)  # every pod fits: 36 x <= 500 m on 16 GPUs
    done.set()
    threads[1].join(10)
    print(
        f"failover: standby cache equal to the API {warm_s * 1000:.0f} ms after the kill "
        f"({len(bound_by_leader)} binds of the old leader), leading {takeover_s:.2f} s after it, "
        f"then bound {len(standby.bound)} more"
    )
    assert takeover_s < LEASE.lease_duration_s + 3.0
    assert len(standby.bound) == len(created) - len(bound_by_leader)  # the rest, by the new leader
    assert not set(standby.bound) & {k.split("/", 1)[1] for k in bound_by_leader}

    # A bind of an old leader's pod retried through the new leader's extender: no second binding.
    name, node = sorted(bound_by_leader.items())[0]
    pod = fault_api.get("pods", name.split("/", 1)[1])
    assert pod is not None
    bind = {"PodName": pod["metadata"]["name"], "PodNamespace": "default", "PodUID": pod["metadata"]["uid"]}
    same = requests.post(f"{standby.extender.url}/bind", json={**bind, "Node": node}, timeout=5).json()
    assert same.get("Error", "") == ""

    assert _placements(standby.extender) == _api_placements(fault_api)
    assert_invariants(fault_api, created=created, timer=standby.standin.timer)
