"""Builders for Node and Pod objects carrying qosched's labels and annotations, and snapshot loading.

The names come from ``shared/spec/contract.md`` §1 through ``qosched.extender.kube.objects`` (one
source of truth). The builders produce the API (JSON) form the apiserver stores, so the same
dicts can be added to :class:`~tests.kubefake.server.FakeKubeAPI`, written into a snapshot file,
or fed to the client's deserialiser.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from qosched.extender.kube.objects import (
    A_CLASS,
    A_DEVICE,
    A_GPU_MILLI,
    A_MIN_ACCURACY,
    A_MODEL,
    A_POLICY,
    A_PREDICTED_LATENCY_MS,
    A_RATE_RPS,
    A_SLO_MS,
    A_SLO_PERCENTILE,
    A_VARIANT,
    A_VARIANTS,
    GPU_RESOURCE,
    L_ACCELERATOR,
    L_ACCELERATOR_COUNT,
    L_SHARING,
    L_TIER,
    SHARING_MODES,
    TIERS,
    USER_ANNOTATIONS,
)

JsonDict = dict[str, Any]

__all__ = [
    "BIND_ANNOTATIONS",
    "USER_ANNOTATIONS",
    "load_snapshot",
    "make_node",
    "make_pod",
]

#: Pod annotations qosched writes at bind (contract §1).
BIND_ANNOTATIONS = frozenset({A_DEVICE, A_PREDICTED_LATENCY_MS, A_POLICY, A_VARIANT})


def _number(value: float) -> str:
    """Annotation text of a number: ``20.0`` → ``"20"``, ``12.5`` → ``"12.5"`` (never exponent form)."""
    f = float(value)
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError(f"annotation numbers must be finite, got {value!r}")
    return str(int(f)) if f.is_integer() else format(Decimal(repr(f)), "f")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries whose value is not None (optional labels, annotations, spec fields)."""
    return {k: v for k, v in values.items() if v is not None}


def _opt_number(value: float | None) -> str | None:
    return None if value is None else _number(value)


def make_node(
    name: str,
    *,
    accelerator: str | None = "nvidia-t4",
    gpus: int | None = None,
    sharing: str | None = None,
    tier: str | None = None,
    accelerator_count: int | None = None,
    cpu: str = "8",
    memory: str = "32Gi",
    pods: str = "110",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
    taints: Iterable[Mapping[str, Any]] = (),
) -> JsonDict:
    """A Node in API form with the qosched node labels.

    Parameters
    ----------
    accelerator
        ``qosched.io/accelerator`` label; ``None`` leaves it off (an unmanaged node).
    gpus
        ``nvidia.com/gpu`` capacity; ``None`` means 1 for ``nvidia-*`` accelerators, else none.
    sharing, tier, accelerator_count
        The optional ``qosched.io/sharing``, ``qosched.io/tier``, ``qosched.io/accelerator-count``.
    """
    _check(
        sharing is None or sharing in SHARING_MODES,
        f"sharing must be one of {SHARING_MODES}, got {sharing!r}",
    )
    _check(tier is None or tier in TIERS, f"tier must be one of {TIERS}, got {tier!r}")
    if gpus is None:
        gpus = 1 if accelerator and accelerator.startswith("nvidia-") else 0
    _check(gpus >= 0, f"gpus must be >= 0, got {gpus}")
    node_labels: dict[str, str] = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    node_labels |= _present(
        {
            L_ACCELERATOR: accelerator,
            L_SHARING: sharing,
            L_TIER: tier,
            L_ACCELERATOR_COUNT: None if accelerator_count is None else str(accelerator_count),
        }
    )
    node_labels.update(labels or {})
    capacity = {"cpu": cpu, "memory": memory, "pods": pods}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
    metadata: JsonDict = {"name": name, "labels": node_labels}
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: JsonDict = _present({"unschedulable": True if unschedulable else None})
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "capacity": dict(capacity),
            "allocatable": dict(capacity),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def make_pod(
    name: str,
    namespace: str = "default",
    *,
    model: str | None = None,
    slo_ms: float | None = None,
    rate_rps: float | None = None,
    service_class: str | None = None,
    gpu_milli: int | None = None,
    slo_percentile: float | None = None,
    variants: Iterable[str] | None = None,
    min_accuracy: float | None = None,
    node_name: str | None = None,
    scheduler_name: str = "qosched",
    priority_class_name: str | None = None,
    priority: int | None = None,
    cpu: str | None = "500m",
    memory: str | None = "128Mi",
    gpus: int | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    phase: str | None = None,
    image: str = "registry.invalid/none",
) -> JsonDict:
    """A Pod in API form with the qosched pod annotations (only those given are set).

    ``service_class`` is ``qosched.io/class``; ``gpus`` sets an ``nvidia.com/gpu`` limit (whole
    GPUs); ``cpu``/``memory`` become equal requests and limits (Guaranteed) when both are given.
    ``annotations`` are added verbatim last, so tests can also build malformed pods. A pod with
    ``node_name`` is bound: phase ``Running`` and ``PodScheduled=True`` unless ``phase`` says
    otherwise.
    """
    _check(slo_ms is None or slo_ms > 0, f"slo_ms must be > 0, got {slo_ms!r}")
    _check(rate_rps is None or rate_rps >= 0, f"rate_rps must be >= 0, got {rate_rps!r}")
    _check(gpu_milli is None or gpu_milli >= 1, f"gpu_milli must be >= 1, got {gpu_milli!r}")
    _check(
        slo_percentile is None or 50 <= slo_percentile <= 99.9,
        f"slo_percentile must be in 50..99.9, got {slo_percentile!r}",
    )
    _check(
        min_accuracy is None or 0 <= min_accuracy <= 1, f"min_accuracy must be in 0..1, got {min_accuracy!r}"
    )
    ann = _present(
        {
            A_MODEL: model,
            A_SLO_MS: _opt_number(slo_ms),
            A_SLO_PERCENTILE: _opt_number(slo_percentile),
            A_RATE_RPS: _opt_number(rate_rps),
            A_CLASS: service_class,
            A_GPU_MILLI: None if gpu_milli is None else str(gpu_milli),
            A_VARIANTS: None if variants is None else ",".join(variants),
            A_MIN_ACCURACY: _opt_number(min_accuracy),
        }
    )
    ann.update(annotations or {})
    resources: JsonDict = {}
    amounts = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    if amounts:
        resources = {"requests": dict(amounts), "limits": dict(amounts)}
    metadata: JsonDict = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    if ann:
        metadata["annotations"] = ann
    spec: JsonDict = {
        "containers": [{"name": "server", "image": image, "resources": resources}],
        "schedulerName": scheduler_name,
        **_present({"priorityClassName": priority_class_name, "priority": priority}),
    }
    status: JsonDict = {"phase": phase or ("Running" if node_name else "Pending")}
    if node_name is not None:
        spec["nodeName"] = node_name
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def load_snapshot(path: str | Path) -> list[JsonDict]:
    """The objects of a snapshot file (contract §3): a ``List`` (YAML or JSON) or multi-doc YAML.

    Raises
    ------
    ValueError
        Naming the file and the document/item when something is not a Kubernetes object.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    out: list[JsonDict] = []
    for d, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc:
            raise ValueError(f"{path}: document {d} is not a Kubernetes object (no 'kind')")
        if str(doc["kind"]).endswith("List"):
            for i, item in enumerate(doc.get("items") or []):
                if not isinstance(item, dict) or "kind" not in item or "metadata" not in item:
                    raise ValueError(f"{path}: document {d} item {i} is not a Kubernetes object")
                out.append(item)
        else:
            out.append(doc)
    return out
