"""Decision time of every placement policy at 1,000 and 5,000 nodes (4 GPUs, ~3 services each).

A decision is ``evaluate(state, pod, all nodes)`` followed by ``scheduler_scores``: what one
``filter`` + ``prioritize`` answer costs, and what the simulator pays per pod. The cluster is
``nvidia-t4`` nodes with 4 GPUs, each GPU time-sliced by 3 inference services drawn from the
bundled profiles (ResNet-50, ResNet-18, MobileNetV2; 100–250 milli-GPU, 10–60 req/s, SLO 20, 50
or 100 ms); the pod placed is a 200-milli ResNet-50 inference pod (ResNet-18 as second variant),
40 req/s, SLO 30 ms.

Three figures per policy:

- ``cold``: the policy's verdict cache emptied before every decision (a pod never seen, on a
  cluster where every node changed since the last decision) — what ``filter`` costs for a new
  pod in a running extender, where the memo of a dropped pod signature is recycled;
- ``warm``: the same pod again on the unchanged cluster (kube-scheduler's ``prioritize`` after
  ``filter``; replicas of one deployment in a row), where only changed nodes are re-judged;
- ``fresh``: a new policy object for every decision (built outside the timer), so its verdict
  memo is allocated anew: the first decisions of a process.

``--route general`` judges every device the general way (``judge(..., shared_wait=False)``:
the appended service arrays through ``predict`` and ``feasible``), the reference the
shared-wait fast route of time-sliced devices is measured against.

Each is the minimum over ``--repeat`` runs of the process CPU time (robust on a shared machine),
printed with its ratio to a baseline measured in the same run: one bare numpy pass over the
same state arrays (the offered load Σλ·S of every device), the least any per-node policy must do.

Usage::

    .venv/bin/python benchmarks/bench_policies.py [--nodes 1000,5000] [--repeat 30] [--policies a,b]
        [--route auto|general]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np

from qosched.policies.placement import common, interference, verdict_cache
from qosched.policies.placement.base import PlacementPolicy, make_policy, policy_names, scheduler_scores
from qosched.policies.placement.verdict_cache import VerdictCache
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.state import ClusterState
from qosched.policies.types import Allocation, NodeView, PodDemand
from qosched.profiles.store import bundled_profiles

MODELS = ("resnet50", "resnet18", "mobilenet_v2")
GPUS_PER_NODE = 4
SERVICES_PER_GPU = 3


def build_cluster(n_nodes: int, seed: int = 1) -> ClusterState:
    """``n_nodes`` T4 nodes, 4 GPUs each, 3 services per GPU (see the module docstring)."""
    lookup, device_memory = lookup_from_profiles(bundled_profiles())
    rng = np.random.default_rng(seed)
    nodes = [
        NodeView(
            f"node-{i:05d}",
            accelerator="nvidia-t4",
            device_count=GPUS_PER_NODE,
            cpu_milli=64_000,
            memory_mib=256_000,
        )
        for i in range(n_nodes)
    ]
    state = ClusterState(nodes, lookup, device_memory)
    uid = 0
    for node in nodes:
        for device in range(GPUS_PER_NODE):
            for _ in range(SERVICES_PER_GPU):
                model = MODELS[int(rng.integers(len(MODELS)))]
                pod = PodDemand(
                    uid=f"svc-{uid}",
                    name=f"svc-{uid}",
                    variants=(model,),
                    slo_ms=float(rng.choice([20.0, 50.0, 100.0])),
                    rate_rps=float(rng.uniform(10.0, 60.0)),
                    gpu_milli=int(rng.choice([100, 200, 250])),
                    cpu_milli=2000,
                    memory_mib=4000.0,
                )
                state.add(Allocation(pod, node.name, (device,), model=model))
                uid += 1
    return state


def probe_pod() -> PodDemand:
    return PodDemand(
        uid="probe",
        name="probe",
        variants=("resnet50", "resnet18"),
        slo_ms=30.0,
        rate_rps=40.0,
        gpu_milli=200,
        cpu_milli=2000,
        memory_mib=4000.0,
    )


def cpu_time_ms(fn: Callable[[], object], repeat: int) -> float:
    """Minimum process CPU time of ``fn`` over ``repeat`` runs [ms] (after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1e3


def bare_pass(state: ClusterState) -> Callable[[], object]:
    """The baseline: one vectorised pass over the service arrays (offered load per device)."""

    def run() -> object:
        load = state.svc_rate_rps * state.svc_service_ms
        return np.add.reduce(load, axis=-1)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1000,5000", help="comma-separated cluster sizes")
    parser.add_argument("--repeat", type=int, default=30, help="runs per figure (minimum is reported)")
    parser.add_argument("--policies", default="", help="comma-separated policy names (default: all)")
    parser.add_argument(
        "--route",
        choices=("auto", "general"),
        default="auto",
        help="general: judge every device through predict + feasible (no shared-wait route)",
    )
    args = parser.parse_args(argv)
    names = [p for p in args.policies.split(",") if p] or policy_names()
    judge = interference.judge
    if args.route == "general":
        general = functools.partial(judge, shared_wait=False)
        verdict_cache.judge = general  # type: ignore[assignment]
        common.judge = general  # type: ignore[assignment]
    try:
        run(names, args)
    finally:
        verdict_cache.judge = judge
        common.judge = judge


def run(names: list[str], args: argparse.Namespace) -> None:
    pod = probe_pod()
    for n in (int(x) for x in args.nodes.split(",")):
        state = build_cluster(n)
        cands = np.arange(state.n_nodes)
        base_ms = cpu_time_ms(bare_pass(state), args.repeat)
        print(
            f"\n{n} nodes x {GPUS_PER_NODE} GPUs x {SERVICES_PER_GPU} services "
            f"(K={state.n_slots} slots, route {args.route}); baseline bare numpy pass: {base_ms:.3f} ms"
        )
        print(
            f"{'policy':<20} {'cold ms':>9} {'x base':>7} {'warm ms':>9} {'x base':>7}"
            f" {'fresh ms':>9} {'x base':>7}  feasible"
        )
        for name in names:
            policy = make_policy(name)
            cold_ms, warm_ms = measure(policy, state, pod, cands, args.repeat)
            fresh_ms = measure_fresh(name, state, pod, cands, args.repeat)
            feasible = int(policy.evaluate(state, pod, cands).feasible.sum())
            print(
                f"{name:<20} {cold_ms:9.3f} {cold_ms / base_ms:7.1f} {warm_ms:9.3f} {warm_ms / base_ms:7.1f}"
                f" {fresh_ms:9.3f} {fresh_ms / base_ms:7.1f}  {feasible}/{n}"
            )


def measure(
    policy: PlacementPolicy, state: ClusterState, pod: PodDemand, cands: np.ndarray, repeat: int
) -> tuple[float, float]:
    """(cold, warm) decision CPU time [ms]; cold empties the policy's verdict cache first."""
    cache: VerdictCache | None = getattr(policy, "cache", None)

    def cold() -> object:
        if cache is not None:
            cache.clear()
        return scheduler_scores(policy.evaluate(state, pod, cands))

    def warm() -> object:
        return scheduler_scores(policy.evaluate(state, pod, cands))

    return cpu_time_ms(cold, repeat), cpu_time_ms(warm, repeat)


def measure_fresh(name: str, state: ClusterState, pod: PodDemand, cands: np.ndarray, repeat: int) -> float:
    """Decision CPU time [ms] of a policy object built just before (outside the timer)."""
    best = float("inf")
    for _ in range(repeat + 1):
        policy = make_policy(name)
        start = time.process_time()
        scheduler_scores(policy.evaluate(state, pod, cands))
        best = min(best, time.process_time() - start)
    return best * 1e3


if __name__ == "__main__":
    main()
