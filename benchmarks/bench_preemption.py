"""Time of one ``preempt`` decision: 100 candidate nodes x 10 proposed victims, against baselines.

Cluster (built in memory, the production parsing path: a snapshot-backed cache): 100 ``nvidia-t4``
nodes with 2 GPUs, each holding 10 ``resnet50`` pods of 200 milli-GPU at 1 req/s (five per
device, so every device is full), classes and ages drawn from a seeded generator
(about half of the free/batch pods have slack). The preemptor asks for 400 milli (two victims on
one device). kube-scheduler's proposal: all 10 pods of every node.

Rows (same process, same cluster, run round-robin, median of ``--repeat`` rounds):

- ``qos-driven (trim)``         ``Runtime.preempt`` as shipped: the minimal allowed subset per node
                                 (victims' objects parsed once per ``resourceVersion``, as in a
                                 running extender);
- ``... (cold parse)``          the same with the parse cache emptied before every call;
- ``qos-driven (all-or-nothing)``  ``LiveConfig(trim_victims=False)``;
- ``legacy greedy trim``        the previous ``preempt``: remove all victims, evaluate, re-admit
                                 victims highest priority first with one policy evaluation each;
- ``filter, 100 nodes``         one ``filter`` decision of the same pod over the same nodes (the
                                 unit cost of a scheduling cycle), the baseline of the ratios.

Run::

    .venv/bin/python benchmarks/bench_preemption.py [--repeat 30] [--policy qosched]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from qosched.extender.kube.binding import SnapshotBinder
from qosched.extender.kube.cache import StaticCluster
from qosched.extender.kube.objects import is_managed
from qosched.extender.server import preempt_inputs as preemption_gathering
from qosched.extender.server.runtime import Runtime
from qosched.policies.placement.base import Reason, make_policy
from qosched.policies.preemption import LiveConfig
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.profiles.store import bundled_profiles

NOW = 1_800_000_000.0


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node(name: str) -> dict[str, Any]:
    alloc = {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "2"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"qosched.io/accelerator": "nvidia-t4"}},
        "status": {"allocatable": alloc, "capacity": alloc},
    }


def _pod(name: str, cls: str, milli: int, *, node: str | None, age_s: float, ran_s: float) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]
    }
    if node:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": "Running" if node else "Pending"}
    if node:
        status["startTime"] = _stamp(NOW - ran_s)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "creationTimestamp": _stamp(NOW - age_s),
            "annotations": {
                "qosched.io/model": "resnet50",
                "qosched.io/slo-ms": "1000",
                "qosched.io/rate-rps": "1",
                "qosched.io/gpu-milli": str(milli),
                "qosched.io/class": cls,
            },
        },
        "spec": spec,
        "status": status,
    }


def build(
    n_nodes: int, per_node: int, policy: str, seed: int
) -> tuple[Runtime, dict[str, Any], dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    nodes = [_node(f"n{i:03d}") for i in range(n_nodes)]
    pods: list[dict[str, Any]] = []
    proposal: dict[str, list[str]] = {}
    for i in range(n_nodes):
        for k in range(per_node):
            cls = str(rng.choice(["prod", "batch", "free"], p=[0.2, 0.3, 0.5]))
            age = float(rng.uniform(600.0, 20_000.0))
            ran = age * float(rng.uniform(0.5, 1.0))
            p = _pod(f"v{i:03d}-{k}", cls, 200, node=f"n{i:03d}", age_s=age, ran_s=ran)
            pods.append(p)
            proposal.setdefault(f"n{i:03d}", []).append(p["metadata"]["uid"])
    lookup, device_memory = lookup_from_profiles(bundled_profiles())
    cache = StaticCluster(lookup, device_memory)
    cache.replace_all(nodes, pods)
    cache.mark_synced()
    rt = Runtime(cache, make_policy(policy), SnapshotBinder(cache))
    rt.wall_clock = lambda: NOW  # type: ignore[method-assign]
    preemptor = _pod("new", "prod", 400, node=None, age_s=5.0, ran_s=0.0)
    return rt, preemptor, proposal


def legacy_preempt(
    rt: Runtime, pod: Mapping[str, Any], victims: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """The ``preempt`` this project shipped before the QoS-driven rule (for the comparison)."""
    if not is_managed(pod):
        return {node: list(uids) for node, uids in victims.items()}
    demand = rt.demand_of(pod)
    out: dict[str, list[str]] = {}
    with rt.cache.reading() as state:
        for node, uids in victims.items():
            row = state.node_index.get(node)
            if row is None:
                continue
            removed = [a for u in uids if (a := state.remove(u)) is not None]
            try:
                rows = np.array([row], dtype=np.int64)
                if Reason(int(rt.policy.evaluate(state, demand, rows).reason[0])) != Reason.OK:
                    continue
                needed: list[str] = []
                for alloc in sorted(removed, key=lambda a: (-a.pod.priority, a.pod.name)):
                    state.add(alloc, strict=False)
                    if Reason(int(rt.policy.evaluate(state, demand, rows).reason[0])) != Reason.OK:
                        state.remove(alloc.uid)
                        needed.append(alloc.uid)
                out[node] = [u for u in uids if u in needed]
            finally:
                for alloc in removed:
                    if alloc.uid not in state:
                        state.add(alloc, strict=False)
    return out


def _interleaved(rows: list[tuple[str, Callable[[], Any]]], repeat: int) -> list[tuple[str, float, Any]]:
    """Median wall time of each row, the rows run round-robin (a busy machine slows all alike)."""
    outs = [fn() for _, fn in rows]  # warm-up (caches, first-use allocations)
    samples: list[list[float]] = [[] for _ in rows]
    for _ in range(repeat):
        for k, (_, fn) in enumerate(rows):
            t0 = time.perf_counter()
            outs[k] = fn()
            samples[k].append(time.perf_counter() - t0)
    return [(label, statistics.median(samples[k]), outs[k]) for k, (label, _) in enumerate(rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--victims", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--policy", default="qosched")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rt, preemptor, proposal = build(args.nodes, args.victims, args.policy, args.seed)
    names = list(proposal)

    def trim() -> Any:
        rt.preemption_config = LiveConfig()
        return rt.preempt(preemptor, proposal)

    def trim_cold() -> Any:
        rt.preemption_config = LiveConfig()
        preemption_gathering._PARSED.clear()
        return rt.preempt(preemptor, proposal)

    def whole() -> Any:
        rt.preemption_config = LiveConfig(trim_victims=False)
        return rt.preempt(preemptor, proposal)

    rows = [
        ("filter, 100 nodes (baseline)", lambda: rt.filter(preemptor, names)),
        ("qos-driven (trim)", trim),
        ("qos-driven (trim, cold parse)", trim_cold),
        ("qos-driven (all-or-nothing)", whole),
        ("legacy greedy trim", lambda: legacy_preempt(rt, preemptor, proposal)),
    ]
    results = _interleaved(rows, args.repeat)
    base = results[0][1]
    print(
        f"policy {args.policy}: {args.nodes} nodes x {args.victims} proposed victims, median of {args.repeat}"
    )
    print(f"{'decision':32s} {'median ms':>10s} {'x filter':>9s}  nodes kept / victims")
    for label, median_s, out in results:
        kept = "" if not isinstance(out, dict) else f"{len(out)} / {sum(len(v) for v in out.values())}"
        print(f"{label:32s} {1000 * median_s:10.2f} {median_s / base:9.2f}  {kept}")


if __name__ == "__main__":
    main()
