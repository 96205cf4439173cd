"""Decision time per ``filter`` at 5,000 and 20,000 nodes, and the cache's memory per node and per pod.

kube-scheduler sends the extender at most a sample of the nodes (230 of 500 by default; 5 % of
20,000 = 1,000), but the cache holds every node and pod, so both matter:

* **decision time**: ``Runtime.filter`` (the policy's evaluation, the reasons, the kept list; no
  HTTP) in process on a cache of ``N`` T4 nodes with 4 GPUs and ``--pods-per-node`` running
  services, for a new pod each call, with (a) kube-scheduler's sample of names
  (``numFeasibleNodesToFind``) and (b) every node name; CPU time per call (``thread_time``),
  median over ``--calls`` calls after a warm-up; *cold*: the per-node verdict memo
  (``policies/placement/row_memo.py``) emptied before each call, as for the first pod of a
  shape; *warm*: a replica of the previous pod with no node changed since (every verdict reused).
* **memory**: ``tracemalloc`` around building the cache from already-parsed objects
  (``ClusterCache.replace_all``), once with the nodes alone and once with nodes and pods; the
  parsed objects are kept by the cache (it serves ``/placements`` and binds from them), so they
  count. Per node = nodes-only bytes / N; per pod = (with pods − nodes only) / pods.

Run: ``.venv/bin/python benchmarks/bench_extender_scale.py [--nodes 5000,20000] [--calls 50]``
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_extender
from bench_extender import new_pod, node_name
from bench_scheduler_loop import num_feasible_nodes_to_find


def make_snapshot(n_nodes: int, services_per_gpu: int) -> dict[str, Any]:
    """``bench_extender``'s cluster (T4 nodes, 4 GPUs) with ``services_per_gpu`` running services."""
    bench_extender.SERVICES_PER_GPU = services_per_gpu
    return bench_extender.make_snapshot(n_nodes, pending=0)


def split(snapshot: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    items = snapshot["items"]
    return [o for o in items if o["kind"] == "Node"], [o for o in items if o["kind"] == "Pod"]


def build(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> Any:
    from qosched.extender.kube.cache import StaticCluster
    from qosched.policies.profile_lookup import lookup_from_profiles
    from qosched.profiles.store import bundled_profiles

    cache = StaticCluster(*lookup_from_profiles(bundled_profiles()))
    cache.replace_all(nodes, pods)
    cache.mark_synced()
    return cache


def traced_bytes(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> int:
    """Bytes allocated and still held after building a cache of copies of these objects."""
    import orjson

    nodes_b, pods_b = orjson.dumps(nodes), orjson.dumps(pods)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = build(orjson.loads(nodes_b), orjson.loads(pods_b))  # the cache owns these objects
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del cache
    return held


def filter_cpu_ms(n_nodes: int, pods_per_node: int, calls: int) -> dict[str, float]:
    from qosched.extender.kube.binding import SnapshotBinder
    from qosched.extender.server.runtime import Runtime
    from qosched.policies.placement.base import make_policy

    nodes, pods = split(make_snapshot(n_nodes, pods_per_node))
    t0 = time.perf_counter()
    cache = build(nodes, pods)
    load_s = time.perf_counter() - t0
    gc.freeze()  # as gunicorn_conf.post_worker_init does
    runtime = Runtime(cache, make_policy("qosched"), SnapshotBinder(cache))
    names = [node_name(i) for i in range(n_nodes)]
    sample = names[: num_feasible_nodes_to_find(n_nodes)]
    out = {"load_s": load_s, "pods": float(len(pods)), "sample": float(len(sample))}
    for label, chosen in (("sample", sample), ("all", names)):
        for memo in ("cold", "warm"):
            times = []
            for i in range(calls + 5):
                pod = new_pod(10_000 * len(chosen) + i + (0 if memo == "cold" else 5_000))
                if memo == "cold":  # the first pod of its shape: every node judged
                    runtime._row_memo.clear()
                t = time.thread_time()
                outcome = runtime.filter(pod, chosen)
                if i >= 5:
                    times.append(time.thread_time() - t)
                assert outcome.kept, "every node should fit the benchmark pod"
            out[f"filter_{label}_{memo}_ms"] = 1000 * median(times)
    gc.unfreeze()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", default="5000,20000")
    parser.add_argument("--pods-per-node", type=int, default=12, help="running services per node (3 per GPU)")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument(
        "--memory-nodes", type=int, default=5000, help="cluster size of the memory measurement"
    )
    args = parser.parse_args(argv)
    per_gpu = max(1, args.pods_per_node // 4)
    for n in (int(x) for x in args.nodes.split(",")):
        r = filter_cpu_ms(n, per_gpu, args.calls)
        print(
            f"{n:>6,} nodes, {int(r['pods']):,} pods: load {r['load_s']:.1f} s; filter CPU per call (median of"
            f" {args.calls}), first pod of its shape / a replica with no node changed since:"
            f" {int(r['sample']):,} names {r['filter_sample_cold_ms']:.2f} / {r['filter_sample_warm_ms']:.2f} ms,"
            f" all {n:,} names {r['filter_all_cold_ms']:.2f} / {r['filter_all_warm_ms']:.2f} ms",
            flush=True,
        )
    nodes, pods = split(make_snapshot(args.memory_nodes, per_gpu))
    only_nodes = traced_bytes(nodes, [])
    with_pods = traced_bytes(nodes, pods)
    print(
        f"cache memory ({args.memory_nodes:,} nodes, {len(pods):,} pods, tracemalloc): "
        f"{only_nodes / len(nodes) / 1024:.1f} KiB per node, {(with_pods - only_nodes) / len(pods) / 1024:.2f} KiB per pod,"
        f" {with_pods / 2**20:.0f} MiB in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
