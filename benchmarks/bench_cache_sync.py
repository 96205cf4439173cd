"""Cost of keeping the live cache at scale: list parsing, first sync, relists, one watch event.

Synthetic cluster (default 5,000 nodes of 4 GPUs and 50,000 bound pods of 250 milli-GPU, each pod
with the managedFields a real API server attaches); no network, so the figures are the
extender's own CPU:

* ``parse``          one pod list body: orjson (what ``LiveCluster`` uses) vs stdlib ``json``.
* ``paged list``     ``LiveCluster``'s list path (orjson per 500-pod page, slim), collector on,
                     with and without the per-page ``gc.freeze()``.
* ``slim``           :func:`qosched.extender.kube.watch.slim_pod` over every pod, and the memory the
                     kept pods take, slim vs full (tracemalloc).
* ``replace_all``    the first sync: parse every node and pod, rebuild the accounts.
* ``replace_pods`` / ``replace_nodes``  a relist of one resource, with the longest time the
                     cache lock is held (decisions wait that long), measured with
                     ``qosched.extender.kube.cache.TimedLock``, against the baseline measured in
                     the same run: the same rebuild done under the lock, as before issue 12
                     (the index is now built outside the lock and swapped in).
* ``gc``             one full collection with the cache alive, before and after ``gc.freeze()``
                     (what ``LiveCluster`` does after each list): the pause a decision can hit.
* ``apply_pod``      one MODIFIED event of a running pod (parse + account), per event.

Run: ``.venv/bin/python benchmarks/bench_cache_sync.py [--nodes 5000] [--pods 50000] [--relist-only]``
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the pod/node builders live in tests/kubefake
    sys.path.insert(0, str(ROOT))


class _Page:
    """A list answer as ``_preload_content=False`` returns it (``.data`` bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _cluster(n_nodes: int, n_pods: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from tests.kubefake import make_node, make_pod

    rng = random.Random(seed)
    nodes = [make_node(f"node-{i:05d}", accelerator="nvidia-t4", gpus=4) for i in range(n_nodes)]
    managed = [
        {"manager": m, "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {".": {}}}, "f:spec": {"f:containers": {}}}}
        for m in ("kubectl", "kube-scheduler", "kubelet")
    ]  # fmt: skip
    pods = []
    for j in range(n_pods):
        node = rng.randrange(n_nodes)
        pod = make_pod(
            f"pod-{j:06d}",
            model="resnet50",
            slo_ms=100,
            rate_rps=5,
            gpu_milli=250,
            node_name=f"node-{node:05d}",
            annotations={"qosched.io/device": str(rng.randrange(4))},
        )
        pod["metadata"]["uid"] = f"00000000-0000-0000-0000-{j:012d}"
        pod["metadata"]["managedFields"] = managed
        pods.append(pod)
    return nodes, pods


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relist-only", action="store_true", help="only the relist lock figures")
    args = parser.parse_args(argv)
    if args.relist_only:
        _relist_figures(args)
        return

    from kubernetes import client

    from qosched.extender.kube.cache import ClusterCache
    from qosched.extender.kube.watch import LiveCluster, WatchSettings, slim_pod
    from qosched.policies.profile_lookup import lookup_from_profiles
    from qosched.profiles.store import ProfileStore

    lookup, device_memory = lookup_from_profiles(ProfileStore(directories=[]).current())
    nodes, pods = _cluster(args.nodes, args.pods, args.seed)
    body = orjson.dumps({"kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": pods})

    gc.disable()  # pure parse cost; the collector's share is measured below
    t_json, _ = _timed(lambda: json.loads(body))
    t_orjson, parsed = _timed(lambda: orjson.loads(body))
    gc.enable()
    t_orjson_gc, _ = _timed(lambda: orjson.loads(body))
    parsed_items = parsed["items"]
    t_slim, slim = _timed(lambda: [slim_pod(p) for p in parsed_items])

    tracemalloc.start()
    full_copy = orjson.loads(body)["items"]
    full_mib = tracemalloc.get_traced_memory()[0] / 2**20
    del full_copy
    tracemalloc.stop()
    tracemalloc.start()
    slim_copy = [slim_pod(p) for p in orjson.loads(body)["items"]]
    slim_mib = tracemalloc.get_traced_memory()[0] / 2**20
    del slim_copy
    tracemalloc.stop()

    # The paged list as LiveCluster reads it (500 pods a page), collector on, with and without
    # the per-page gc.freeze() of WatchSettings.gc_freeze_after_list.
    size = 500
    pages = [
        orjson.dumps(
            {
                "metadata": {
                    "resourceVersion": "1",
                    "continue": str(k + 1) if (k + 1) * size < len(slim) else "",
                },
                "items": parsed_items[k * size : (k + 1) * size],
            }
        )
        for k in range((len(slim) + size - 1) // size)
    ]

    def serve_page(**kwargs: Any) -> _Page:
        return _Page(pages[int(kwargs.get("_continue") or 0)])

    offline = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    t_list: dict[bool, float] = {}
    for freeze in (False, True):
        live = LiveCluster(offline, lookup, device_memory, watch=WatchSettings(gc_freeze_after_list=freeze))
        t_list[freeze], (listed, _) = _timed(lambda: live._list_pages("pods", serve_page, size))  # noqa: B023
        assert len(listed) == args.pods
        del listed
        gc.unfreeze()
        gc.collect()

    cache = ClusterCache(lookup, device_memory)
    t_all, _ = _timed(lambda: cache.replace_all(nodes, slim))
    relist = _relist_holds(cache, nodes, slim)
    parsed.clear()
    parsed_items = []
    pages = []
    pods.clear()
    t_collect, _ = _timed(gc.collect)
    gc.freeze()  # what LiveCluster does after a list (WatchSettings.gc_freeze_after_list)
    t_collect_frozen, _ = _timed(gc.collect)
    event = copy.deepcopy(slim[0])
    event["metadata"]["labels"] = {"touched": "1"}
    n_events = 2000
    t_events, _ = _timed(lambda: [cache.apply_pod(event) for _ in range(n_events)])
    stats = cache.stats()
    assert (stats.nodes, stats.placed) == (args.nodes, args.pods), stats

    mb = len(body) / 1e6
    print(f"{args.nodes} nodes, {args.pods} pods; pod list body {mb:.1f} MB")
    print(
        f"parse   json {t_json:6.2f} s   orjson {t_orjson:6.2f} s   ratio json/orjson {t_json / t_orjson:5.2f}"
        f"   (orjson with the collector on: {t_orjson_gc:.2f} s)"
    )
    print(
        f"slim    {t_slim:6.2f} s   memory full {full_mib:7.1f} MiB   slim {slim_mib:7.1f} MiB   ratio {full_mib / slim_mib:5.2f}"
    )
    print(
        f"paged list  {t_list[False]:6.2f} s   with per-page gc.freeze() {t_list[True]:6.2f} s   "
        f"ratio {t_list[False] / t_list[True]:5.2f}"
    )
    print(f"replace_all   {t_all:6.2f} s  (first sync: parse + account every object)")
    _print_relist(relist)
    print(f"full gc.collect() {t_collect * 1e3:7.1f} ms   after gc.freeze() {t_collect_frozen * 1e3:7.1f} ms")
    print(f"apply_pod     {t_events / n_events * 1e6:6.1f} µs per MODIFIED event")


def _relist_holds(cache: Any, nodes: list[Any], slim: list[Any]) -> dict[str, tuple[float, float, float]]:
    """Per relist: (wall s, longest lock hold s now, lock hold s of the baseline under the lock)."""
    from qosched.extender.kube.cache import TimedLock

    lock = TimedLock()
    cache.lock = lock
    out: dict[str, tuple[float, float, float]] = {}
    t_pods, _ = _timed(lambda: cache.replace_pods(slim))
    hold_pods = lock.max_hold_s
    parsed = [(obj, cache._demand(obj)) for obj in slim]
    lock.reset()
    with lock:  # baseline: the body of replace_pods before issue 12, all under the lock
        assumed = cache._assumed_allocations_locked()
        cache._reset_state_locked(list(cache._nodes.values()))
        cache._set_pods_locked(parsed, assumed)
    out["replace_pods"] = (t_pods, hold_pods, lock.max_hold_s)
    lock.reset()
    t_nodes, _ = _timed(lambda: cache.replace_nodes(nodes))
    hold_nodes = lock.max_hold_s
    views = cache._node_views(nodes)
    lock.reset()
    with lock:  # baseline: replace_nodes before issue 12
        allocs = list(cache.state.allocations())
        cache._reset_state_locked(views)
        for alloc in allocs:
            cache._add_locked(alloc, strict=False)
    out["replace_nodes"] = (t_nodes, hold_nodes, lock.max_hold_s)
    return out


def _print_relist(relist: dict[str, tuple[float, float, float]]) -> None:
    for name, (wall_s, hold_s, base_s) in relist.items():
        print(
            f"{name:13s} {wall_s:6.2f} s  longest lock hold {hold_s * 1e3:8.2f} ms   "
            f"baseline (rebuilt under the lock) {base_s * 1e3:8.1f} ms   ratio {base_s / hold_s:7.1f}"
        )


def _relist_figures(args: argparse.Namespace) -> None:
    from qosched.extender.kube.cache import ClusterCache
    from qosched.extender.kube.watch import slim_pod
    from qosched.policies.profile_lookup import lookup_from_profiles
    from qosched.profiles.store import ProfileStore

    lookup, device_memory = lookup_from_profiles(ProfileStore(directories=[]).current())
    nodes, pods = _cluster(args.nodes, args.pods, args.seed)
    slim = [slim_pod(p) for p in pods]
    del pods
    cache = ClusterCache(lookup, device_memory)
    t_all, _ = _timed(lambda: cache.replace_all(nodes, slim))
    print(f"{args.nodes} nodes, {args.pods} pods; replace_all {t_all:.2f} s")
    _print_relist(_relist_holds(cache, nodes, slim))


if __name__ == "__main__":
    main()
