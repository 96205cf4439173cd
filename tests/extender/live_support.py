"""Shared by the live-cluster tests (test_watch, test_kube_binder, test_live_app).

Watch settings with short timeouts, profile lookups with round numbers, a deterministic
first-fit test policy (so binder and cache tests do not depend on the real policies' scores), a
``LiveCluster`` context manager that always stops its threads, and a polling helper.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from qosched.extender.kube.watch import LiveCluster, Resource, WatchSettings
from qosched.policies.placement.base import Evaluation, Reason
from qosched.policies.state import ClusterState, ServiceParams
from qosched.policies.types import GPU_MILLI_PER_DEVICE, PodDemand
from tests.kubefake import FakeKubeAPI

#: Fast loop for tests: no jitter, tiny backoff, streams that would outlive any test.
FAST = WatchSettings(
    server_timeout_s=60.0,
    server_timeout_spread_frac=0.0,
    client_read_timeout_s=30.0,
    connect_timeout_s=2.0,
    list_timeout_s=10.0,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    backoff_jitter_frac=0.0,
    gc_freeze_after_list=False,  # keep the test process's collector as pytest expects it
)

SERVICE_MS = 10.0


def lookup(accelerator: str, model: str) -> ServiceParams | None:
    """Every model runs 10 ms (deterministic service, E[S²] = S²) on every accelerator."""
    return ServiceParams(service_ms=SERVICE_MS, second_moment_ms2=SERVICE_MS**2, memory_mib=100.0)


def device_memory(accelerator: str) -> float:
    return 16_384.0


class FirstFitPolicy:
    """Test double: lowest free device indexes that fit; prefers earlier candidates; 10 ms latency."""

    name = "first-fit-test"

    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        m = len(candidates)
        g = max(1, pod.gpu_count)
        reason = np.zeros(m, dtype=np.int64)
        devices = np.full((m, g), -1, dtype=np.int64)
        free = state.free_gpu_milli()
        for j, row in enumerate(candidates.tolist()):
            if state.node_views[row].accelerator is None or not state.schedulable[row]:
                reason[j] = Reason.NO_ACCELERATOR
                continue
            if pod.gpu_milli <= 0:
                continue
            fits = np.flatnonzero(free[row] >= pod.milli_per_device)[: pod.gpu_count]
            if len(fits) < pod.gpu_count:
                reason[j] = Reason.INSUFFICIENT_GPU
                continue
            devices[j, : len(fits)] = fits
        return Evaluation(
            node_idx=np.asarray(candidates, dtype=np.int64),
            reason=reason,
            raw_score=-np.arange(m, dtype=np.float64),
            devices=devices,
            latency_ms=np.full(m, SERVICE_MS),
            variant=np.zeros(m, dtype=np.int64),
            policy=self.name,
        )


class FakeClock:
    """Monotonic clock the test advances by hand (assumption expiry)."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` every 5 ms; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    assert predicate(), f"timed out after {timeout_s} s waiting for {what}"


@contextmanager
def live_cluster(
    api: FakeKubeAPI,
    *,
    start: bool = True,
    watch: WatchSettings = FAST,
    **cache_kw: Any,
) -> Iterator[LiveCluster]:
    """A ``LiveCluster`` on ``api``; started and synced unless ``start=False``; always stopped."""
    client = api.api_client()
    cache = LiveCluster(client, lookup, device_memory, watch=watch, rng=random.Random(7), **cache_kw)
    try:
        if start:
            cache.start()
            assert cache.wait_synced(5.0), "cache did not sync"
            assert api.wait_for_watches(2, timeout_s=5.0), "watches did not open"
        yield cache
    finally:
        cache.stop()
        client.close()


@contextmanager
def looping(cache: LiveCluster, resource: Resource, rv: str | None) -> Iterator[threading.Thread]:
    """Run ``cache.watch_loop(resource, rv)`` in a thread (a cache synced by hand); stop it after."""
    thread = threading.Thread(target=cache.watch_loop, args=(resource, rv), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        cache.stop()
        thread.join(5.0)
        assert not thread.is_alive(), "watch loop did not stop"


def used_milli(cache: LiveCluster, node: str) -> list[int] | None:
    """Milli-GPU used per device of ``node`` in the cache's accounts (None: node unknown)."""
    with cache.lock:
        row = cache.state.node_index.get(node)
        if row is None:
            return None
        n = int(cache.state.device_count[row])
        return [int(x) for x in cache.state.gpu_used_milli[row, :n]]


def watch_queries(api: FakeKubeAPI, resource: str) -> list[str | None]:
    """``resourceVersion`` of every watch request on ``/api/v1/<resource>``, in order."""
    return [r.query.get("resourceVersion") for r in api.calls(verb="watch", path=f"^/api/v1/{resource}$")]


def device_sum(annotations: Sequence[tuple[str, int]], devices: int) -> list[int]:
    """Milli per device from (``qosched.io/device`` value, milli) pairs, e.g. ``[("0", 250)]``."""
    out = [0] * devices
    for value, milli in annotations:
        for d in value.split(","):
            out[int(d)] += milli
    return out


assert GPU_MILLI_PER_DEVICE == 1000  # the hand-computed values in these tests assume it
