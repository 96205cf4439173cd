"""Pack or spread: inference services on shared GPUs, then whole-GPU training pods, per setting of
``qosched``'s ``gpu_consolidation`` knob (docs/placement.md, "Pack or spread").

The scenario (:func:`scenario`, seeded, deterministic): ``--nodes`` nodes × 4 ``nvidia-t4``
GPUs; ``--services`` inference pods (``resnet50``, 100 milli-GPU each, 200 ms SLO, 5 requests/s,
class ``prod``) arriving 0.1 s apart; then (``--order after``) or among them (``--order
interleaved``) a stream of training jobs of 1, 2, 4 and 8 whole GPUs (drawn with probabilities
0.3, 0.3, 0.25, 0.15; the last ones sized to fit) adding up to ``--training-gpus`` GPUs
(default: the capacity less the services' GPUs' worth, i.e. exactly what perfect packing
leaves). A 4-GPU node cannot host an 8-GPU job, so an 8-GPU job is two 4-GPU pods (its two
workers); every training pod asks ``nvidia.com/gpu: k`` with 8 CPUs and 32 GiB per GPU, class
``batch``, and no pod leaves.

The replay is the what-if's (:func:`qosched.policies.simulator.replay.replay` over the snapshot
parsed by :func:`qosched.extender.cli.whatif.workload_from_snapshot`), once per setting, with
the request-level latency simulation on. Printed per setting, both sides of the choice:

- inference: GPUs used, nodes touched, the most services on one GPU (what one GPU failure takes
  down), SLOs met in the request-level simulation (every checkpoint within the SLO), the latency
  models' mean (over services) and worst p99 on the final placement, the simulated worst p99,
  and the services still within their SLO by the models if every rate grew 4× or 8× in place
  (:data:`HEADROOM`: nothing is re-placed; what spreading buys);
- training: pods and whole GPUs placed of those asked, and the GPU allocation at the end.

Usage::

    .venv/bin/python benchmarks/bench_pack_or_spread.py [--seed 0] [--order after|interleaved|both]
        [--settings spread,pack-gpu,pack] [--nodes 500] [--services 1500] [--json out.json]
    .venv/bin/python benchmarks/bench_pack_or_spread.py --order after --write-snapshot out/mixed.yaml
    # the same scenario through the what-if CLI, one setting per run:
    qosched whatif --cluster out/mixed.yaml --policies qosched --policy-option gpu_consolidation=spread --out out/spread
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

GPUS_PER_NODE = 4
ACCELERATOR = "nvidia-t4"
#: Training job sizes [GPUs] and the probability of each.
JOB_GPUS = (1, 2, 4, 8)
JOB_PROBS = (0.3, 0.3, 0.25, 0.15)
#: Seconds between two arrivals.
GAP_S = 0.1


@dataclass(frozen=True, slots=True)
class Scenario:
    """The knobs of :func:`scenario` (defaults: the issue's cluster and services)."""

    nodes: int = 500
    services: int = 1500
    service_milli: int = 100
    slo_ms: float = 200.0
    rate_rps: float = 5.0
    model: str = "resnet50"
    #: Training GPUs in all; None: capacity − services' GPUs' worth.
    training_gpus: int | None = None
    #: ``after``: every service first, then the training stream; ``interleaved``: one stream,
    #: the arrival order shuffled by the seed.
    order: str = "after"

    def __post_init__(self) -> None:
        if self.order not in ("after", "interleaved"):
            raise ValueError(f"order must be 'after' or 'interleaved' (got {self.order!r})")

    def training_total(self) -> int:
        if self.training_gpus is not None:
            return self.training_gpus
        return self.nodes * GPUS_PER_NODE - -(-self.services * self.service_milli // 1000)


def _node(i: int) -> dict[str, Any]:
    name = f"gpu-node-{i:04d}"
    alloc = {"cpu": "128", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(GPUS_PER_NODE)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"kubernetes.io/hostname": name, "qosched.io/accelerator": ACCELERATOR},
        },
        "status": {"allocatable": alloc, "capacity": dict(alloc)},
    }


def _pod(name: str, annotations: dict[str, str], requests: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": annotations},
        "spec": {"containers": [{"name": "c", "resources": {"requests": requests, "limits": requests}}]},
        "status": {"phase": "Pending"},
    }


def _service(sc: Scenario, i: int) -> dict[str, Any]:
    ann = {
        "qosched.io/model": sc.model,
        "qosched.io/slo-ms": f"{sc.slo_ms:g}",
        "qosched.io/rate-rps": f"{sc.rate_rps:g}",
        "qosched.io/gpu-milli": str(sc.service_milli),
        "qosched.io/class": "prod",
    }
    return _pod(f"infer-{i:05d}", ann, {"cpu": "500m", "memory": "2Gi"})


def _training_pods(sc: Scenario, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Jobs drawn from :data:`JOB_GPUS` until ``training_total`` GPUs (a job larger than what is
    left becomes the largest size that fits); an 8-GPU job is two 4-GPU worker pods."""
    pods: list[dict[str, Any]] = []
    left, job = sc.training_total(), 0
    while left > 0:
        gpus = int(rng.choice(JOB_GPUS, p=JOB_PROBS))
        if gpus > left:
            gpus = max(g for g in JOB_GPUS if g <= left)
        left -= gpus
        workers = [GPUS_PER_NODE, gpus - GPUS_PER_NODE] if gpus > GPUS_PER_NODE else [gpus]
        for w, k in enumerate(workers):
            requests = {"cpu": str(8 * k), "memory": f"{32 * k}Gi", "nvidia.com/gpu": str(k)}
            ann = {"qosched.io/class": "batch", "qosched.io/job-gpus": str(gpus)}
            pods.append(_pod(f"train-{job:05d}-{w}", ann, requests))
        job += 1
    return pods


def scenario(sc: Scenario, seed: int) -> list[dict[str, Any]]:
    """Nodes then pods, in arrival order, each pod with ``qosched.io/arrival-s`` (deterministic
    in ``seed``: the jobs' sizes and, interleaved, the order)."""
    rng = np.random.default_rng(seed)
    services = [_service(sc, i) for i in range(sc.services)]
    training = _training_pods(sc, rng)
    if sc.order == "after":
        pods = services + training
    else:
        pods = [*services, *training]
        pods = [pods[i] for i in rng.permutation(len(pods))]
    for k, pod in enumerate(pods):
        pod["metadata"]["annotations"]["qosched.io/arrival-s"] = f"{k * GAP_S:.1f}"
    return [*(_node(i) for i in range(sc.nodes)), *pods]


def write_snapshot(objects: Sequence[dict[str, Any]], path: Path) -> None:
    """A ``v1 List`` snapshot file ``qosched whatif --cluster`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=200))


# ----------------------------------------------------------------------------- measurement

#: Rate multipliers of the headroom columns: the latency models on the final placement with every
#: service's rate × k, nothing moved (what spreading buys: room for load to grow in place).
HEADROOM = (4.0, 8.0)


def model_latency(state: Any, rate_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, p99, SLO) [ms] of every service on the final placement, by the latency models the
    policies decide with (:func:`qosched.policies.latency.sharing.predict`, the tail of
    :func:`qosched.policies.latency.tail.percentile_latency_ms`), every rate × ``rate_scale``."""
    from qosched.policies.latency.sharing import DeviceServices, ModelParams, predict, resolve_sharing
    from qosched.policies.latency.tail import percentile_latency_ms
    from qosched.policies.types import SHARING_MODES

    params = ModelParams()
    means, p99s, slos = [], [], []
    rows, devices = np.nonzero(state.svc_mask.any(axis=-1))
    for row, device in zip(rows.tolist(), devices.tolist(), strict=True):
        slots = np.flatnonzero(state.svc_mask[row, device])
        mean = state.svc_service_ms[row, device, slots]
        services = DeviceServices.build(
            state.svc_rate_rps[row, device, slots] * rate_scale,
            mean,
            second_moment_ms2=np.maximum(state.svc_second_ms2[row, device, slots], mean * mean),
            swap_ms=state.svc_swap_ms[row, device, slots],
            share_frac=1.0,
            overhead_frac=state.svc_overhead_frac[row, device, slots],
            cores=max(1, int(state.cpu_cap_milli[row]) // 1000),
        )
        view = state.node_views[row]
        sharing = SHARING_MODES[int(state.sharing_code[row])]
        prediction = predict(resolve_sharing(view.accelerator, sharing), services, params)
        means.append(prediction.latency_ms)
        p99s.append(percentile_latency_ms(prediction, 99.0))
        slos.append(state.svc_slo_ms[row, device, slots])
    if not means:
        empty = np.zeros(0)
        return empty, empty, empty
    return np.concatenate(means), np.concatenate(p99s), np.concatenate(slos)


def measure(result: Any, classes: Any) -> dict[str, Any]:
    """The table's figures of one replay (module docstring)."""
    from qosched.policies.simulator.metrics import pod_outcomes, summarize

    lg, pods = result.ledger, result.workload.pods
    service = np.array([p.is_inference for p in pods])
    placed = lg.node_row >= 0
    per_gpu = Counter(
        (int(lg.node_row[i]), d) for i in np.flatnonzero(service & placed) for d in lg.devices[i]
    )
    gpus = set(per_gpu)
    training = ~service
    train_gpus = np.array([p.gpu_milli // 1000 for p in pods])
    outcomes = pod_outcomes(result, classes)
    summary = summarize(result, runtime_s=0.0, classes=classes, outcomes=outcomes)
    sim_p99 = np.array([result.latency.last[p.uid][2] for p in pods if p.uid in result.latency.last])
    mean_ms, p99_ms, _ = model_latency(result.state)
    row: dict[str, Any] = {
        "services": int(service.sum()),
        "services_placed": int((service & placed).sum()),
        "services_slo_met": int(summary["services_slo_met"]),
        "inference_gpus": len(gpus),
        "inference_nodes": len({g[0] for g in gpus}),
        "services_per_gpu_max": max(per_gpu.values(), default=0),
        "model_mean_ms": float(mean_ms.mean()) if mean_ms.size else float("nan"),
        "model_p99_ms_max": float(p99_ms.max()) if p99_ms.size else float("nan"),
        "sim_p99_ms_max": float(sim_p99.max()) if sim_p99.size else float("nan"),
        "training_pods": int(training.sum()),
        "training_placed": int((training & placed).sum()),
        "training_gpus_placed": int(train_gpus[training & placed].sum()),
        "training_gpus": int(train_gpus[training].sum()),
        "gpu_allocation": float(summary["gpu_allocation_ratio"]),
    }
    for k in HEADROOM:
        mean_k, _, slo_k = model_latency(result.state, k)
        row[f"slo_met_at_{k:g}x"] = int((mean_k <= slo_k).sum())
    return row


def run_setting(workload: Any, setting: str, seed: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """One replay of ``qosched`` with ``gpu_consolidation=setting`` (the what-if's replay and seed)."""
    from qosched.policies.simulator.replay import ReplayConfig, build_scheduler, replay

    started = time.perf_counter()
    scheduler = build_scheduler(
        "qosched",
        seed=seed,
        workload=workload,
        classes=inputs["classes"],
        candidates="fit",
        options={"gpu_consolidation": setting},
    )
    result = replay(
        workload,
        scheduler,
        np.random.default_rng([seed, 0x5EED]),
        lookup=inputs["lookup"],
        device_memory=inputs["device_memory"],
        config=ReplayConfig(simulate_latency=True),
        classes=inputs["classes"],
    )
    row = measure(result, inputs["classes"])
    row.update(setting=setting, runtime_s=time.perf_counter() - started)
    return row


COLUMNS = (
    ("order", "order"),
    ("setting", "setting"),
    ("inference_gpus", "inference GPUs"),
    ("inference_nodes", "nodes"),
    ("services_per_gpu_max", "services per GPU (max)"),
    ("services_slo_met", "SLO met (sim)"),
    ("model_mean_ms", "model mean ms"),
    ("model_p99_ms_max", "model p99 ms (worst)"),
    ("sim_p99_ms_max", "sim p99 ms (worst)"),
    ("slo_met_at_4x", "SLO met at 4x rate"),
    ("slo_met_at_8x", "SLO met at 8x rate"),
    ("training", "training pods placed"),
    ("training_gpu", "training GPUs placed"),
    ("gpu_allocation", "GPU allocation"),
)


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "training":
        return f"{row['training_placed']:,} / {row['training_pods']:,}"
    if key == "training_gpu":
        return f"{row['training_gpus_placed']:,} / {row['training_gpus']:,}"
    if key == "services_slo_met":
        return f"{row['services_slo_met']:,} / {row['services']:,}"
    if key.startswith("slo_met_at"):
        return f"{row[key]:,} / {row['services']:,}"
    if key == "gpu_allocation":
        return f"{100 * row[key]:.1f} %"
    value = row[key]
    return (
        f"{value:.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
    )


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (docs/placement.md's form)."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(r, key) for key, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from qosched.policies.placement.qosched.consolidation import CONSOLIDATION_SETTINGS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--order", choices=("after", "interleaved", "both"), default="both")
    ap.add_argument("--settings", default=",".join(CONSOLIDATION_SETTINGS))
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--services", type=int, default=1500)
    ap.add_argument("--training-gpus", type=int, default=None)
    ap.add_argument("--rate-rps", type=float, default=5.0, help="Each service's declared rate.")
    ap.add_argument("--json", type=Path, default=None, help="Write the rows here.")
    ap.add_argument(
        "--write-snapshot", type=Path, default=None, help="Write the scenario (first order) and stop."
    )
    args = ap.parse_args(argv)
    unknown = [s for s in args.settings.split(",") if s not in CONSOLIDATION_SETTINGS]
    if unknown:
        ap.error(f"--settings: unknown {', '.join(unknown)}; known: {', '.join(CONSOLIDATION_SETTINGS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    from qosched.extender.cli.whatif import load_classes, load_lookup, workload_from_snapshot

    args = parse_args(argv)
    orders = ("after", "interleaved") if args.order == "both" else (args.order,)
    scenarios = {
        o: Scenario(
            nodes=args.nodes,
            services=args.services,
            training_gpus=args.training_gpus,
            order=o,
            rate_rps=args.rate_rps,
        )
        for o in orders
    }
    if args.write_snapshot is not None:
        write_snapshot(scenario(scenarios[orders[0]], args.seed), args.write_snapshot)
        print(f"wrote {args.write_snapshot}")
        return 0
    classes = load_classes(None)
    lookup, device_memory = load_lookup(None)
    inputs = {"classes": classes, "lookup": lookup, "device_memory": device_memory}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for order, sc in scenarios.items():
            path = Path(tmp) / f"{order}.yaml"
            write_snapshot(scenario(sc, args.seed), path)  # the what-if's own parser reads it
            workload = workload_from_snapshot(path, classes)
            for setting in args.settings.split(","):
                row = run_setting(workload, setting, args.seed, inputs)
                row["order"] = order
                rows.append(row)
                print(f"{order} {setting}: {row['runtime_s']:.1f} s", file=sys.stderr)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
