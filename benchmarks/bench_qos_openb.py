"""``priority`` vs ``qos-driven`` vs preemptive ``qosched`` on the openb trace under contention.

Workload ("FGD inflation with departures", :func:`qosched.policies.simulator.scenarios.contended_workload`,
the workload of ``qosched whatif --inflate X --departures --seed N``): the Alibaba GPU trace v2023
default pod list, grown to ``--inflate`` x the cluster's GPU capacity by FGD's rule (trace pods
shuffled, random clones appended), submitted one every ``--interarrival-s`` seconds in that
order; each pod runs its trace lifetime (``deletion − scheduled``, at least 1 s) and leaves, so
the cluster goes from empty to oversubscribed, pods queue, are preempted and come back, and
QoS = availability varies. QoS is measured at ``--horizon-s`` (or at a pod's departure). Everything else is the
what-if replay (:func:`qosched.policies.simulator.replay.replay`) and its summary
(:func:`qosched.policies.simulator.metrics.summarize`).

Run (about 2-3 min per policy on one core)::

    .venv/bin/python benchmarks/bench_qos_openb.py --inflate 2.0 --interarrival-s 0.05 \\
        --horizon-s 3600 --seed 0 --out /tmp/qos-openb

Prints per policy: mean QoS, Gini and penalty per class, and the ratios between policies;
writes ``summary.json`` (contract keys + extras) and ``qos_cdf.png`` into ``--out``.
``--write-snapshot FILE`` writes the same workload as a snapshot for ``qosched whatif --cluster``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from qosched.extender.cli.trace_files import read_openb_trace
from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG
from qosched.policies.fairness.gini import gini_by_class
from qosched.policies.placement.base import make_policy
from qosched.policies.placement.baselines.kube import WorstFitPolicy
from qosched.policies.preemption import (
    PauseModel,
    PriorityPolicy,
    QosDrivenPolicy,
    SchedulerConfig,
    preemptive_qosched,
)
from qosched.policies.simulator.metrics import pod_outcomes, summarize
from qosched.policies.simulator.replay import PolicyScheduler, ReplayConfig, replay
from qosched.policies.simulator.scenarios import Workload
from qosched.policies.simulator.scenarios import contended_workload as scenario_workload

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
TRACE = SHARED / "data" / "alibaba-gpu-v2023"
NODE_FILES = {"all": "openb_node_list_all_node.csv", "gpu": "openb_node_list_gpu_node.csv"}


def contended_workload(
    inflate: float, interarrival_s: float, seed: int, pods_file: str, nodes_file: str
) -> Workload:
    """The contention workload of ``qosched whatif --inflate X --departures --seed N`` (one
    implementation: :func:`qosched.policies.simulator.scenarios.contended_workload`)."""
    wl = scenario_workload(
        read_openb_trace(TRACE / nodes_file, TRACE / pods_file),
        inflate,
        np.random.default_rng(seed),
        interarrival_s=interarrival_s,
    )
    return Workload.build(wl.nodes, wl.pods, wl.arrival_s, wl.duration_s, dict(wl.description, seed=seed))


def write_snapshot(wl: Workload, path: Path) -> None:
    """The workload as a contract snapshot (``qosched whatif --cluster``): Nodes with
    ``qosched.io/accelerator`` and ``nvidia.com/gpu``; Pods with ``qosched.io/gpu-milli``,
    ``qosched.io/class``, ``qosched.io/arrival-s`` and ``qosched.io/duration-s``. The trace's
    ``gpu_spec`` (allowed GPU models) has no contract annotation and is dropped."""
    items: list[dict[str, Any]] = []
    for n in wl.nodes:
        alloc = {"cpu": f"{n.cpu_milli}m", "memory": f"{int(n.memory_mib)}Mi", "pods": "1000"}
        labels = {"kubernetes.io/hostname": n.name}
        if n.accelerator and n.device_count:
            alloc["nvidia.com/gpu"] = str(n.device_count)
            labels["qosched.io/accelerator"] = n.accelerator
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": n.name, "labels": labels},
                "status": {"allocatable": alloc, "capacity": alloc},
            }
        )
    for pod, arrival, duration in zip(wl.pods, wl.arrival_s.tolist(), wl.duration_s.tolist(), strict=True):
        ann = {"qosched.io/class": pod.qos_class, "qosched.io/arrival-s": repr(float(arrival))}
        if math.isfinite(duration):
            ann["qosched.io/duration-s"] = repr(float(duration))
        if pod.gpu_milli:
            ann["qosched.io/gpu-milli"] = str(pod.gpu_milli)
        requests = {"cpu": f"{pod.cpu_milli}m", "memory": f"{int(pod.memory_mib)}Mi"}
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod.name,
                    "namespace": pod.namespace,
                    "uid": pod.uid,
                    "annotations": ann,
                },
                "spec": {"containers": [{"name": "c", "resources": {"requests": requests}}]},
                "status": {"phase": "Pending"},
            }
        )
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def _policy(name: str, config: SchedulerConfig) -> Any:
    if name == "priority":
        return PriorityPolicy(config=config)
    if name == "qos-driven":
        return QosDrivenPolicy(config=config)
    if name == "qosched":
        return preemptive_qosched(config=config)
    if name == "qosched-priority":  # ablation: qosched's hosts with the priority queue and victims
        return PriorityPolicy(config=config, placement=make_policy("qosched"), name="qosched-priority")
    if name == "worst-fit":  # reference: worst-fit hosts, FIFO queue, no preemption
        return WorstFitPolicy(name="worst-fit")
    raise SystemExit(f"unknown policy {name!r}: priority, qos-driven, qosched, qosched-priority, worst-fit")


def _by_class(values: np.ndarray, classes: np.ndarray, op: Any) -> dict[str, float]:
    return {str(c): float(op(values[classes == c])) for c in np.unique(classes)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    wl = contended_workload(
        args.inflate, args.interarrival_s, args.seed, args.pods_file, NODE_FILES[args.nodes]
    )
    if args.write_snapshot:
        write_snapshot(wl, Path(args.write_snapshot))
        print(f"wrote {args.write_snapshot} ({len(wl)} pods, {len(wl.nodes)} nodes)")
        return {}
    config = SchedulerConfig(
        victims_any_class=not args.same_or_lower,
        pause=PauseModel(floor_s=args.pause_floor_s, safety=args.pause_safety),
        retry_interval_s=args.retry_interval_s,
    )
    out: dict[str, Any] = {
        "workload": dict(wl.description, horizon_s=args.horizon_s),
        "config": {
            "pause_floor_s": args.pause_floor_s,
            "pause_safety": args.pause_safety,
            "victims_any_class": not args.same_or_lower,
            "retry_interval_s": config.retry_interval_s,
        },
        "policies": {},
    }
    cdfs: dict[str, dict[str, np.ndarray]] = {}
    for name in args.policies.split(","):
        policy = _policy(name, config)
        # Policies that learn the workload (qosched's FGD mix) see every submitted pod, as in
        # ``build_scheduler`` and ``qosched whatif``.
        own = getattr(policy, "observe", None)
        sched = PolicyScheduler(policy, candidates="fit", observe=own if callable(own) else None)
        t0 = time.perf_counter()
        result = replay(
            wl,
            sched,
            np.random.default_rng(args.seed),
            lookup=lambda accelerator, model: None,
            device_memory=lambda accelerator: math.inf,
            config=ReplayConfig(horizon_s=args.horizon_s, simulate_latency=False),
        )
        runtime = time.perf_counter() - t0
        outcomes = pod_outcomes(result)
        summary = summarize(result, runtime_s=runtime, outcomes=outcomes)
        cls = result.ledger.class_name
        arrived = outcomes.arrived
        target = result.ledger.target
        summary["penalty_by_class"] = _by_class(outcomes.penalty_usd[arrived], cls[arrived], np.sum)
        summary["violations_by_class"] = _by_class(
            (outcomes.qos < target - 1e-12)[arrived].astype(float), cls[arrived], np.sum
        )
        summary["gini_check"] = gini_by_class(outcomes.qos[arrived], cls[arrived])
        summary.pop("allocation_curve", None)
        out["policies"][name] = summary
        cdfs[name] = {str(c): np.sort(outcomes.qos[arrived & (cls == c)]) for c in np.unique(cls[arrived])}
        print(
            f"{name:11s} runtime {runtime:6.1f} s  preemptions {summary['preemptions']:5d}  "
            f"failed {summary['pods_failed']:4d}  penalty {summary['penalty']:9.2f} USD"
        )
        for c in sorted(summary["mean_qos_by_class"], key=lambda c: DEFAULT_CLASS_CONFIG.get(c).rank):
            print(
                f"    {c:5s} mean QoS {summary['mean_qos_by_class'][c]:.4f}  Gini {summary['gini_by_class'][c]:.4f}  "
                f"penalty {summary['penalty_by_class'][c]:9.2f}  below target {int(summary['violations_by_class'][c])}"
            )
    pols = out["policies"]
    if "priority" in pols:
        base = pols["priority"]
        for other in [p for p in pols if p != "priority"]:
            o = pols[other]
            ratio = base["penalty"] / o["penalty"] - 1 if o["penalty"] > 0 else math.inf
            print(
                f"priority penalty vs {other}: {100 * ratio:+.1f} % (paper: priority up to +193 % vs qos-driven)"
            )
            for c in base["gini_by_class"]:
                print(
                    f"    Gini {c}: priority {base['gini_by_class'][c]:.4f} vs {other} {o['gini_by_class'].get(c, float('nan')):.4f}"
                )
    if args.out:
        outdir = Path(args.out)
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "summary.json").write_text(json.dumps(out, indent=1, default=float))
        _plot(cdfs, outdir / "qos_cdf.png")
        print(f"wrote {outdir / 'summary.json'} and {outdir / 'qos_cdf.png'}")
    return out


def _plot(cdfs: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted({c for d in cdfs.values() for c in d}, key=lambda c: DEFAULT_CLASS_CONFIG.get(c).rank)
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 3.4), squeeze=False)
    for ax, c in zip(axes[0], classes, strict=True):
        for name, d in cdfs.items():
            q = d.get(c)
            if q is None or q.size == 0:
                continue
            ax.plot(q, np.arange(1, q.size + 1) / q.size, label=name)
        ax.axvline(DEFAULT_CLASS_CONFIG.get(c).qos_target, color="grey", ls=":", lw=1)
        ax.set_title(f"{c} (target {DEFAULT_CLASS_CONFIG.get(c).qos_target})")
        ax.set_xlabel("delivered QoS (availability)")
        ax.set_ylabel("fraction of pods")
        ax.set_xlim(0, 1.01)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inflate", type=float, default=2.0)
    ap.add_argument("--interarrival-s", type=float, default=0.05)
    ap.add_argument("--horizon-s", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pods-file", default="openb_pod_list_default.csv")
    ap.add_argument(
        "--nodes", choices=sorted(NODE_FILES), default="all", help="node list: all 1,523 or the GPU nodes"
    )
    ap.add_argument("--policies", default="priority,qos-driven,qosched")
    ap.add_argument(
        "--same-or-lower", action="store_true", help="qos-driven victims: own class and lower only"
    )
    ap.add_argument("--pause-floor-s", type=float, default=60.0, help="PauseModel.floor_s")
    ap.add_argument("--pause-safety", type=float, default=2.0, help="PauseModel.safety")
    ap.add_argument("--retry-interval-s", type=float, default=60.0, help="SchedulerConfig.retry_interval_s")
    ap.add_argument("--out", default="")
    ap.add_argument(
        "--write-snapshot", default="", help="only write the workload as a snapshot file and exit"
    )
    run(ap.parse_args())


if __name__ == "__main__":
    main()
