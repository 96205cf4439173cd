"""A relist at 50,000 pods never holds the cache lock longer than a few ms (issue 12).

Before: ``replace_pods`` rebuilt the accounts under the lock (~1–2 s at 50k pods: every filter,
bind and watch event waited that long). Now the index is built outside the lock and swapped in;
mutations made meanwhile are journaled and replayed at the swap, so nothing is lost.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import pytest

from qosched.extender.kube.cache import ClusterCache, TimedLock
from qosched.extender.kube.watch import slim_pod
from qosched.policies.types import Allocation
from tests.extender.live_support import device_memory, lookup
from tests.kubefake import make_node, make_pod

#: "A few ms": the bound asserted for the longest hold (measured ~0.3 ms for replace_pods at 50k
#: pods on the shared 2-core machine; the margin covers a loaded CI runner's preemption).
MAX_HOLD_S = 0.050


def _cluster(n_nodes: int, n_pods: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [make_node(f"node-{i:05d}", accelerator="nvidia-t4", gpus=4) for i in range(n_nodes)]
    pods = []
    for j in range(n_pods):
        pod = make_pod(
            f"pod-{j:06d}",
            model="resnet50",
            slo_ms=100,
            rate_rps=5,
            gpu_milli=250,
            node_name=f"node-{j % n_nodes:05d}",
            annotations={"qosched.io/device": str(j // n_nodes % 4)},
        )
        pod["metadata"]["uid"] = f"uid-{j:06d}"
        pods.append(slim_pod(pod))
    return nodes, pods


def _bound(name: str, node: str, device: int) -> dict[str, Any]:
    pod = make_pod(
        name, model="resnet50", slo_ms=100, rate_rps=5, gpu_milli=250, node_name=node,
        annotations={"qosched.io/device": str(device)},
    )  # fmt: skip
    pod["metadata"]["uid"] = f"uid-{name}"
    return pod


@pytest.mark.slow
def test_relist_at_50k_pods_holds_the_lock_a_few_ms_and_loses_no_concurrent_event(
    request: pytest.FixtureRequest,
) -> None:
    nodes, pods = _cluster(5_000, 50_000)
    cache = ClusterCache(lookup, device_memory)
    cache.replace_all(nodes, pods)
    gc.freeze()  # what LiveCluster does after each list (WatchSettings.gc_freeze_after_list)
    request.addfinalizer(gc.unfreeze)
    lock = TimedLock()
    cache.lock = lock
    # The nodes watch keeps writing during the pods relist (two independent watches).
    stop = threading.Event()
    applied: list[str] = []

    def writer() -> None:
        k = 0
        while not stop.is_set():
            node = make_node(f"node-{k:05d}", accelerator="nvidia-t4", gpus=4)
            node["spec"]["unschedulable"] = True  # MODIFIED: the node was cordoned
            cache.apply_node(node)
            applied.append(f"node-{k:05d}")
            k += 1
            time.sleep(0.002)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    cache.replace_pods(pods)  # the relist (the list predates the late pods: they are not in it)
    relist_s = time.perf_counter() - t0
    stop.set()
    thread.join(5)
    assert applied, "the writer never ran during the relist"
    print(f"relist of 50,000 pods: {relist_s:.2f} s, longest lock hold {lock.max_hold_s * 1e3:.2f} ms")
    assert lock.max_hold_s < MAX_HOLD_S, f"lock held {lock.max_hold_s * 1e3:.1f} ms during a relist"
    stats = cache.stats()
    assert (stats.placed, stats.nodes) == (50_000, 5_000)
    with cache.lock:  # nothing lost: every cordon made during the relist is in the new index
        state = cache.state
        assert not any(state.schedulable[state.node_index[name]] for name in applied)


def test_mutations_during_a_rebuild_are_replayed_on_the_new_index(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, pods = _cluster(4, 8)
    cache = ClusterCache(lookup, device_memory)
    cache.replace_all(nodes, pods)
    late = _bound("late", "node-00001", 3)
    assumed = Allocation(
        pod=cache._demand(_bound("assumed", "node-00002", 3)), node="node-00002", devices=(3,), model=None
    )
    real_add = ClusterCache._add_locked
    fired: list[bool] = []

    def add_and_interleave(self: ClusterCache, alloc: Allocation, *, strict: bool) -> None:
        real_add(self, alloc, strict=strict)
        if self is not cache and not fired:  # inside the off-lock build: the live cache moves on
            fired.append(True)
            cache.apply_pod(late)  # a watch event of the other resource
            cache.delete_pod(pods[0])  # a deletion the list did not see yet
            cache.assume(assumed)  # a bind reserving devices

    monkeypatch.setattr(ClusterCache, "_add_locked", add_and_interleave)
    version = cache.state.version
    cache.replace_pods(pods)
    assert fired
    with cache.lock:
        assert "uid-late" in cache.state
        assert pods[0]["metadata"]["uid"] not in cache.state
        assert cache.is_assumed_locked(assumed.uid)
        assert cache.state.allocation(assumed.uid) == assumed
        assert len(cache.state) == 8 - 1 + 2
        assert cache.state.version > version


def test_a_failed_build_leaves_the_live_index_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, pods = _cluster(4, 8)
    cache = ClusterCache(lookup, device_memory)
    cache.replace_all(nodes, pods)

    def boom(self: ClusterCache, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("build failed")

    monkeypatch.setattr(ClusterCache, "_set_pods_locked", boom)
    with pytest.raises(RuntimeError, match="build failed"):
        cache.replace_pods(pods[:2])
    cache.apply_pod(_bound("after", "node-00000", 3))  # no journal left behind
    assert cache.stats().placed == 9
