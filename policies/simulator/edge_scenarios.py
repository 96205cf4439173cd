r"""Seeded heterogeneous edge clusters for the what-if: edge TPUs, Jetson Nanos, CPU nodes.

``qosched`` is meant to subsume the Ibis placement policies (``ibis-pack``, ``ibis-spread``,
``ibis-hetero``): on an edge cluster it should host at least as many services with no SLO
violation as the best of them, at every load (docs/placement.md, "Never below a simpler
peer"). One shipped cluster (``extender/demo/edge-cluster.yaml``) cannot show that, so
:func:`edge_workload` draws others, each a function of its seed alone:

- **nodes**: 2–10 Coral edge TPU hosts, 1–8 Jetson Nanos and 0–3 CPU nodes (4, 8 or 16 cores;
  memory 2 GiB per core), every one ``time-slicing``, listed in a shuffled order (so that no
  policy gains from the order the file happens to list device types in: ``ibis-pack`` and the
  ties of ``ibis-spread`` follow it);
- **services**: 40–140, arriving ``interarrival_s`` apart (10–30 s); a model drawn from a mix
  over the 13 models the bundled ``edgetpu`` / ``jetson-nano`` / ``cpu`` profiles cover
  (Dirichlet weights, so some scenarios lean to TPU-only models, others to Jetson-only ones);
  SLO 200, 400 or 600 ms (mean latency); rate 2–20 requests/s; class prod/batch/free
  (30/40/30 %); a share (0–50 %) of them leaving after 300–1,500 s, the rest staying.

:data:`EDGE_MODELS` lists the models; the shipped cluster's own draw is in docs/whatif.md (same
kinds of nodes and pods, fixed counts). Rates are the base rates: the what-if's load axis is
:meth:`Workload.with_rate_scale` (0.25, 0.5, 1.0 in the peer comparison). Pure: numpy's
``default_rng(seed)`` is the only source of randomness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qosched.policies.simulator.scenarios import Workload
from qosched.policies.types import NodeView, PodDemand

__all__ = ["EDGE_MODELS", "EdgeScenarioShape", "edge_workload", "snapshot_document"]

#: The models the bundled edge profiles cover (edge TPU: 9, Jetson Nano: 6, CPU: 3; overlapping).
EDGE_MODELS: tuple[str, ...] = (
    "mobilenet_v2",
    "inception_v3",
    "efficientnet_s",
    "efficientnet_m",
    "efficientnet_l",
    "mobilenet_v1",
    "ssd_mobilenet_v1",
    "ssd_mobilenet_v2",
    "inception_v4",
    "resnet18",
    "resnet34",
    "resnet50",
    "googlenet",
)
_SLO_MS = (200.0, 400.0, 600.0)
_RATE_RPS = (2.0, 5.0, 10.0, 15.0, 20.0)
_CLASSES = ("prod", "batch", "free")
_CLASS_P = (0.3, 0.4, 0.3)
#: Node kinds: (name prefix, accelerator key). Each node has one device of its kind.
_KINDS = (("tpu", "edgetpu"), ("nano", "jetson-nano"), ("cpu", "cpu"))


@dataclass(frozen=True, slots=True)
class EdgeScenarioShape:
    """The drawn counts of one scenario (for reports): nodes per kind, services, departures."""

    tpus: int
    nanos: int
    cpus: int
    services: int
    leaving: int
    interarrival_s: float


def _nodes(rng: np.random.Generator) -> list[NodeView]:
    counts = (int(rng.integers(2, 11)), int(rng.integers(1, 9)), int(rng.integers(0, 4)))
    nodes = []
    for (prefix, accelerator), count in zip(_KINDS, counts, strict=True):
        for i in range(count):
            cores = 4 if accelerator != "cpu" else int(rng.choice([4, 8, 16]))
            nodes.append(
                NodeView(
                    name=f"{prefix}-{i}",
                    accelerator=accelerator,
                    device_count=1,
                    sharing="time-slicing",
                    tier="edge",
                    cpu_milli=cores * 1000,
                    memory_mib=4096.0 if accelerator != "cpu" else 2048.0 * cores,
                    gpu_model=accelerator,
                )
            )
    order = rng.permutation(len(nodes))
    return [nodes[i] for i in order]


def _pod(i: int, model: str, rng: np.random.Generator) -> PodDemand:
    return PodDemand(
        uid=f"gen-{i:03d}",
        name=f"svc-{i:03d}-{model.replace('_', '-')}",
        namespace="edge",
        variants=(model,),
        slo_ms=float(rng.choice(_SLO_MS)),
        rate_rps=float(rng.choice(_RATE_RPS)),
        qos_class=str(rng.choice(_CLASSES, p=_CLASS_P)),
        cpu_milli=250,
        memory_mib=128.0,
    )


def edge_workload(seed: int) -> tuple[Workload, EdgeScenarioShape]:
    """The edge scenario of ``seed`` (see the module docstring) and its drawn counts."""
    rng = np.random.default_rng([seed, 0xED6E])
    nodes = _nodes(rng)
    n = int(rng.integers(40, 141))
    interarrival_s = float(rng.choice([10.0, 20.0, 30.0]))
    leave_share = float(rng.uniform(0.0, 0.5))
    weights = rng.dirichlet(np.ones(len(EDGE_MODELS)))
    models = rng.choice(len(EDGE_MODELS), size=n, p=weights)
    pods = [_pod(i, EDGE_MODELS[int(m)], rng) for i, m in enumerate(models)]
    leaves = rng.random(n) < leave_share
    duration_s = np.where(leaves, rng.integers(300, 1501, size=n).astype(np.float64), np.inf)
    arrival_s = interarrival_s * np.arange(n, dtype=np.float64)
    shape = EdgeScenarioShape(
        tpus=sum(v.accelerator == "edgetpu" for v in nodes),
        nanos=sum(v.accelerator == "jetson-nano" for v in nodes),
        cpus=sum(v.accelerator == "cpu" for v in nodes),
        services=n,
        leaving=int(leaves.sum()),
        interarrival_s=interarrival_s,
    )
    description = {
        "source": "generated edge scenario",
        "seed": int(seed),
        "nodes": len(nodes),
        "pods": n,
        "inference_pods": n,
        "pods_with_duration": shape.leaving,
        "rule": "qosched.policies.simulator.edge_scenarios.edge_workload(seed)",
    }
    return Workload.build(nodes, pods, arrival_s, duration_s, description), shape


def _node_object(view: NodeView) -> dict[str, Any]:
    allocatable = {"cpu": str(view.cpu_milli // 1000), "memory": f"{int(view.memory_mib)}Mi", "pods": "110"}
    if view.accelerator == "jetson-nano":
        allocatable["nvidia.com/gpu"] = str(view.device_count)
    labels = {
        "kubernetes.io/hostname": view.name,
        "qosched.io/accelerator": str(view.accelerator),
        "qosched.io/tier": "edge",
        "qosched.io/sharing": view.sharing,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": view.name, "labels": labels},
        "status": {
            "allocatable": allocatable,
            "capacity": dict(allocatable),
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _pod_object(pod: PodDemand, arrival_s: float, duration_s: float) -> dict[str, Any]:
    annotations = {
        "qosched.io/model": pod.variants[0],
        "qosched.io/slo-ms": f"{pod.slo_ms:g}",
        "qosched.io/rate-rps": f"{pod.rate_rps:g}",
        "qosched.io/class": pod.qos_class,
        "qosched.io/arrival-s": f"{arrival_s:g}",
    }
    if np.isfinite(duration_s):
        annotations["qosched.io/duration-s"] = f"{duration_s:g}"
    image = pod.variants[0].replace("_", "-")
    requests = {"cpu": f"{pod.cpu_milli}m", "memory": f"{int(pod.memory_mib)}Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "annotations": annotations,
        },
        "spec": {
            "schedulerName": "qosched",
            "containers": [
                {
                    "name": "server",
                    "image": f"example.org/serve-{image}:1",
                    "resources": {"requests": requests},
                }
            ],
        },
    }


def snapshot_document(workload: Workload) -> dict[str, Any]:
    """A generated scenario as a snapshot document (a ``v1`` ``List`` of Nodes and Pods, the form
    of ``extender/demo/edge-cluster.yaml``) for ``qosched whatif --cluster``; the caller writes it."""
    items = [_node_object(v) for v in workload.nodes] + [
        _pod_object(p, float(a), float(d))
        for p, a, d in zip(workload.pods, workload.arrival_s, workload.duration_s, strict=True)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}
