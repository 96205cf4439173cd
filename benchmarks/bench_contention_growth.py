"""How a contention replay's time grows with the workload: node slices of the openb cluster.

A slice keeps a seeded random ``--frac`` of the GPU nodes; the pod list is inflated to
``--inflate`` x that slice's GPU capacity (FGD's rule, ``contended_workload``) and the arrivals
are spread over the same span as the full workload's (0.05 s / frac apart), so each slice is the
full contention scene at a smaller scale. Replays one policy per slice (``build_scheduler``, as
``qosched whatif --departures``) and prints the replay time, the counters and the growth
exponent (least squares of log time on log pods).

``--old-retry`` replays with the retry test of before issue 18 (no GPU-type entry: a pod
restricted by ``gpu_spec`` is retried at every departure that frees room on any node), for the
before/after comparison of docs/qos-driven.md ("Runtime per workload")::

    .venv/bin/python benchmarks/bench_contention_growth.py \\
        --pods <upstream>/openb_pod_list_gpuspec33.csv --fracs 0.0625,0.125,0.25 --policy priority
    .venv/bin/python benchmarks/bench_contention_growth.py ... --old-retry
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import math
import pstats
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import qosched.policies.simulator.replay as replay_mod
from qosched.extender.cli.trace_files import read_openb_trace
from qosched.policies.simulator.replay import ReplayConfig, build_scheduler, replay
from qosched.policies.simulator.scenarios import CONTENDED_INTERARRIVAL_S, contended_workload
from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand

TRACE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alibaba-gpu-v2023"


def _no_gpu_types(state: ClusterState, pods: Sequence[PodDemand]) -> tuple[np.ndarray, np.ndarray]:
    """The retry test before issue 18: no pod's GPU-type constraint is looked at."""
    return np.full(len(pods), -1, dtype=np.int64), np.ones((0, state.n_nodes), dtype=bool)


def run_slice(args: argparse.Namespace, frac: float) -> tuple[int, float, dict[str, int]]:
    """(pods, replay seconds, counters) of one slice."""
    trace = read_openb_trace(args.nodes, args.pods)
    if frac < 1.0:
        rng = np.random.default_rng(123)
        keep = np.sort(rng.choice(len(trace.nodes), round(len(trace.nodes) * frac), replace=False))
        trace = dataclasses.replace(trace, nodes=tuple(trace.nodes[i] for i in keep))
    wl = contended_workload(
        trace,
        args.inflate,
        np.random.default_rng(args.seed),
        interarrival_s=CONTENDED_INTERARRIVAL_S / frac,
    )
    sched = build_scheduler(args.policy, seed=args.seed, workload=wl, candidates="fit")
    profile = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if profile is not None:
        profile.enable()
    result = replay(
        wl,
        sched,
        np.random.default_rng(args.seed),
        lookup=lambda accelerator, model: None,
        device_memory=lambda accelerator: math.inf,
        config=ReplayConfig(horizon_s=3600.0, simulate_latency=False),
    )
    wall_s = time.perf_counter() - t0
    if profile is not None:
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    return len(wl), wall_s, dict(result.stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", default=str(TRACE / "openb_node_list_gpu_node.csv"))
    ap.add_argument("--pods", default=str(TRACE / "openb_pod_list_default.csv"))
    ap.add_argument("--fracs", default="0.0625,0.125,0.25", help="comma-separated node fractions")
    ap.add_argument("--policy", default="priority")
    ap.add_argument("--inflate", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old-retry", action="store_true", help="the retry test without GPU types")
    ap.add_argument("--profile", action="store_true", help="cProfile each slice (top 25 by cumulative)")
    args = ap.parse_args()
    if args.old_retry:
        replay_mod._gpu_spec_table = _no_gpu_types
    sizes, times = [], []
    for frac in (float(f) for f in args.fracs.split(",")):
        pods, wall_s, stats = run_slice(args, frac)
        sizes.append(pods)
        times.append(wall_s)
        print(
            f"frac {frac:g}: {pods} pods, {wall_s:.2f} s, failed tries {stats.get('failed_attempts')}, "
            f"preemptions {stats.get('preemptions')}, skipped checks {stats.get('skipped_checks')}",
            flush=True,
        )
    if len(sizes) >= 2:
        slope = float(np.polyfit(np.log(sizes), np.log(times), 1)[0])
        print(f"growth exponent (log time on log pods): {slope:.2f}")


if __name__ == "__main__":
    main()
