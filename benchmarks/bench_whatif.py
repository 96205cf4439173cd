"""Benchmark of the what-if replay on the default openb trace, FGD's protocol, every policy.

For each policy: one full replay of ``openb_pod_list_default.csv`` (8,152 pods, inflated to
``--inflate`` × the GPU capacity with FGD's tuning rule, no departures) on the node list
(``--nodes all``: the 1,523 nodes of ``openb_node_list_all_node.csv``; ``gpu``: the 1,213 GPU
nodes FGD's scripts use), through ``qosched.policies.simulator.replay`` exactly as
``qosched whatif`` runs it. Printed per policy: wall time, time per decision, the GPU allocation
ratio at the end of the arrivals (FGD's metric) and failed pods; then the total.

``--policies contract`` runs the 14 policies of the contract (``CONTRACT_POLICIES``). Each row
also shows the process's peak RSS so far and the 1-minute load average when the replay ended
(the machine is shared: compare runs only at similar load).

Baseline, measured in the same run: the bare accounting of the same placements — the random
policy's allocations re-applied with ``ClusterState.add`` in a plain loop (no evaluation, no
event loop) — and every replay's time as a ratio to it, so the numbers survive a faster or
slower machine. Memory: peak RSS of the process (``resource.getrusage``) before and after;
``--tracemalloc`` adds the Python-heap peak of each replay (tracing slows the replay down, so
its times are then not comparable and are marked).

Usage::

    .venv/bin/python benchmarks/bench_whatif.py [--nodes all|gpu] [--inflate 1.3] [--seed 42]
        [--policies a,b,...|contract] [--candidates fit|all] [--mix learned|workload] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from qosched.extender.cli.trace_files import read_openb_trace
from qosched.policies.placement.base import policy_names
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.simulator.metrics import summarize
from qosched.policies.simulator.replay import ReplayConfig, build_scheduler, replay
from qosched.policies.simulator.scenarios import fgd_workload
from qosched.policies.state import ClusterState
from qosched.policies.types import Allocation
from qosched.profiles.store import bundled_profiles

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alibaba-gpu-v2023"
NODE_FILES = {"all": "openb_node_list_all_node.csv", "gpu": "openb_node_list_gpu_node.csv"}
#: The policy names of the contract (``../shared/spec/contract.md``), in its order.
CONTRACT_POLICIES = (
    "default",
    "binpack",
    "knapsack-first-fit",
    "knapsack-best-fit",
    "knapsack-worst-fit",
    "random",
    "dot-product",
    "gpu-clustering",
    "gpu-packing",
    "best-fit",
    "fgd",
    "priority",
    "qos-driven",
    "qosched",
)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far [MiB] (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", choices=sorted(NODE_FILES), default="all")
    parser.add_argument("--inflate", type=float, default=1.3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--policies", default=None, help="comma-separated, or 'contract' (default: all registered)"
    )
    parser.add_argument("--candidates", choices=["fit", "all"], default="fit")
    parser.add_argument("--mix", choices=["learned", "workload"], default="learned")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"trace not found at {DATA}", file=sys.stderr)
        return 1
    if args.policies == "contract":
        policies = list(CONTRACT_POLICIES)
    else:
        policies = args.policies.split(",") if args.policies else policy_names()
    rss_start = peak_rss_mib()
    started = time.perf_counter()
    workload = fgd_workload(
        read_openb_trace(DATA / NODE_FILES[args.nodes], DATA / "openb_pod_list_default.csv"),
        args.inflate,
        np.random.default_rng(args.seed),
    )
    load_s = time.perf_counter() - started
    lookup, device_memory = lookup_from_profiles(bundled_profiles())
    n = len(workload)
    print(
        f"workload: {len(workload.nodes)} nodes ({NODE_FILES[args.nodes]}), {n} pods "
        f"({workload.description['trace_pods']} trace + {workload.description['clones']} clones, "
        f"arrived {100 * workload.description['arrived_gpu_frac_end']:.1f} % of "
        f"{workload.capacity_gpu_milli // 1000} GPUs), built in {load_s:.2f} s; "
        f"candidates={args.candidates}, mix={args.mix}, seed={args.seed}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    config = ReplayConfig(simulate_latency=False)
    rows = []
    baseline_allocs: list[Allocation] | None = None
    total = 0.0
    for name in policies:
        scheduler = build_scheduler(
            name, seed=args.seed, workload=workload, mix=args.mix, candidates=args.candidates
        )
        if args.tracemalloc:
            tracemalloc.start()
        t0 = time.perf_counter()
        result = replay(
            workload,
            scheduler,
            np.random.default_rng(args.seed),
            lookup=lookup,
            device_memory=device_memory,
            config=config,
        )
        elapsed = time.perf_counter() - t0
        heap_mib = float("nan")
        if args.tracemalloc:
            heap_mib = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        total += elapsed
        s = summarize(result, runtime_s=elapsed)
        rows.append(
            (
                name,
                elapsed,
                s["gpu_allocation_ratio"],
                s["pods_failed"],
                heap_mib,
                peak_rss_mib(),
                os.getloadavg()[0],
            )
        )
        if baseline_allocs is None or name == "random":
            baseline_allocs = list(result.state.allocations())
    # Baseline: the same kind of placements, accounted with ClusterState.add alone.
    assert baseline_allocs is not None
    state = ClusterState(workload.nodes, lookup, device_memory)
    t0 = time.perf_counter()
    for alloc in baseline_allocs:
        state.add(alloc)
    bare_s = time.perf_counter() - t0
    per_add_us = 1e6 * bare_s / max(len(baseline_allocs), 1)

    print(
        f"\n{'policy':20s} {'wall s':>8s} {'ms/pod':>8s} {'x bare':>8s} {'GPU alloc':>10s} {'failed':>7s}"
        f" {'RSS MiB':>8s} {'load':>5s}",
        end="",
    )
    print(f" {'heap MiB':>9s}" if args.tracemalloc else "")
    for name, elapsed, alloc, failed, heap, rss, load in rows:
        line = (
            f"{name:20s} {elapsed:8.2f} {1e3 * elapsed / n:8.3f} {elapsed / bare_s:8.1f} "
            f"{100 * alloc:9.2f}% {failed:7d} {rss:8.0f} {load:5.2f}"
        )
        print(line + (f" {heap:9.1f}" if args.tracemalloc else ""))
    print(f"{'total':20s} {total:8.2f} {1e3 * total / (n * len(rows)):8.3f}")
    print(
        f"\nbaseline: ClusterState.add of {len(baseline_allocs)} allocations in {bare_s:.3f} s "
        f"({per_add_us:.1f} µs each)"
    )
    print(f"peak RSS: {rss_start:.0f} MiB at start, {peak_rss_mib():.0f} MiB at the end")
    if args.tracemalloc:
        print("(times measured under tracemalloc: slower than normal, compare only with each other)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
