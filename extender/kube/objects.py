"""Kubernetes objects → qosched domain types, at the boundary, once.

Objects arrive as API-shaped dicts (from the wire, the watch's ``raw_object``, or a snapshot
file). Annotation and label names are those of ``../shared/spec/contract.md`` §1 and are defined
here only. Resource quantities are parsed with ``kubernetes.utils.parse_quantity``, never by hand
(loaded without the rest of the client: :mod:`.quantity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from qosched.extender.kube.quantity import parse_quantity
from qosched.policies.types import (
    DEFAULT_SHARING,
    GPU_MILLI_PER_DEVICE,
    SHARING_MODES,
    TIERS,
    Allocation,
    DemandError,
    NodeView,
    PodDemand,
)

PREFIX = "qosched.io/"
# Pod annotations set by the user (contract §1).
A_MODEL = PREFIX + "model"
A_SLO_MS = PREFIX + "slo-ms"
A_SLO_PERCENTILE = PREFIX + "slo-percentile"
A_RATE_RPS = PREFIX + "rate-rps"
A_CLASS = PREFIX + "class"
A_GPU_MILLI = PREFIX + "gpu-milli"
A_VARIANTS = PREFIX + "variants"
A_MIN_ACCURACY = PREFIX + "min-accuracy"
USER_ANNOTATIONS = frozenset(
    {A_MODEL, A_SLO_MS, A_SLO_PERCENTILE, A_RATE_RPS, A_CLASS, A_GPU_MILLI, A_VARIANTS, A_MIN_ACCURACY}
)
# Pod annotations written by qosched at bind (contract §1).
A_DEVICE = PREFIX + "device"
A_PREDICTED_LATENCY_MS = PREFIX + "predicted-latency-ms"
A_POLICY = PREFIX + "policy"
A_VARIANT = PREFIX + "variant"
# Bind annotations the device layer reads (issue 15; README contract section): the share of each
# device in ``qosched.io/device`` in 1/100 GPU (= the device plugin's units = MPS active-thread
# percentage) and, on MPS nodes only, the pinned device-memory limit per device [MiB].
A_GPU_SHARE_PCT = PREFIX + "gpu-share-pct"
A_GPU_MEMORY_LIMIT_MIB = PREFIX + "gpu-memory-limit-mib"
# What-if replay annotations (contract §3, snapshot file).
A_ARRIVAL_S = PREFIX + "arrival-s"
A_DURATION_S = PREFIX + "duration-s"
# Node labels (contract §1).
L_ACCELERATOR = PREFIX + "accelerator"
L_ACCELERATOR_COUNT = PREFIX + "accelerator-count"
L_SHARING = PREFIX + "sharing"
L_TIER = PREFIX + "tier"

GPU_RESOURCE = "nvidia.com/gpu"
#: The device plugin's extended resource: one unit is 1/100 of one GPU (or MIG instance).
GPU_SHARE_RESOURCE = PREFIX + "gpu-share"
GPU_SHARE_UNITS_PER_DEVICE = 100
#: MPS memory limit = profile memory x (1 + frac) + fixed [MiB]: the fraction covers allocator
#: fragmentation and batch-size variation, the fixed part the CUDA context (300-500 MiB on
#: recent GPUs) the profile's model memory does not include.
MPS_MEMORY_MARGIN_FRAC = 0.10
MPS_MEMORY_MARGIN_MIB = 512
MIB = 1024 * 1024
#: Refuse numbers no real pod asks for (a typo of several orders of magnitude).
MAX_RATE_RPS = 1e6
MAX_SLO_MS = 1e7

#: ``class_of(annotation value or None, priorityClassName or None) -> class name``.
ClassMapper = Callable[[str | None, str | None], str]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    ann = _meta(obj).get("annotations")
    return ann if isinstance(ann, Mapping) else {}


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = _meta(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def is_managed(pod: Mapping[str, Any]) -> bool:
    """A pod is managed by qosched when it carries any of the user annotations of the contract."""
    return any(key in USER_ANNOTATIONS for key in annotations_of(pod))


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = _meta(pod)
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _float(ann: Mapping[str, str], key: str, *, lo: float, hi: float) -> float | None:
    raw = ann.get(key)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise DemandError(f"{key}: {raw!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise DemandError(f"{key}: {raw!r} is outside {lo:g}..{hi:g}")
    return value


def _quantity(raw: Any, what: str) -> Decimal:
    try:
        return Decimal(parse_quantity(raw))
    except (ValueError, TypeError, ArithmeticError):
        raise DemandError(f"{what}: {raw!r} is not a Kubernetes quantity") from None


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """Effective requests of a pod, as kube-scheduler computes them.

    max(sum over containers, max over init containers) per resource, plus ``spec.overhead``;
    a container with limits but no requests requests its limits (API defaulting).
    """
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)

    def container_requests(c: Mapping[str, Any]) -> dict[str, Decimal]:
        res = c.get("resources") if isinstance(c.get("resources"), Mapping) else {}
        assert isinstance(res, Mapping)
        req = dict(res.get("requests") or {})
        for name, value in (res.get("limits") or {}).items():
            req.setdefault(name, value)
        return {name: _quantity(value, f"resources.requests[{name}]") for name, value in req.items()}

    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or ():
        for name, q in container_requests(c).items():
            total[name] = total.get(name, Decimal(0)) + q
    for c in spec.get("initContainers") or ():
        for name, q in container_requests(c).items():
            total[name] = max(total.get(name, Decimal(0)), q)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, Decimal(0)) + _quantity(value, f"overhead[{name}]")
    return total


def default_class_of(annotation: str | None, priority_class: str | None) -> str:
    """Fallback class mapping (the fairness config supplies the configurable one)."""
    if annotation:
        return annotation
    return "batch"


def pod_demand(pod: Mapping[str, Any], class_of: ClassMapper = default_class_of) -> PodDemand:
    """Parse a pod's qosched request. Raises ``DemandError`` naming the bad annotation."""
    meta = _meta(pod)
    ann = annotations_of(pod)
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    requests = pod_requests(pod)
    variants_raw = ann.get(A_VARIANTS, "")
    variants = tuple(v.strip() for v in str(variants_raw).split(",") if v.strip())
    model = str(ann.get(A_MODEL, "")).strip() or None
    if model and model not in variants:
        variants = (model, *variants)
    elif model:
        variants = (model, *(v for v in variants if v != model))
    gpu_milli_f = _float(ann, A_GPU_MILLI, lo=0, hi=64 * GPU_MILLI_PER_DEVICE)
    if gpu_milli_f is not None:
        if gpu_milli_f != int(gpu_milli_f) or gpu_milli_f < 1:
            raise DemandError(f"{A_GPU_MILLI}: {ann.get(A_GPU_MILLI)!r} must be an integer >= 1")
        gpu_milli = int(gpu_milli_f)
    else:
        gpu_milli = int(requests.get(GPU_RESOURCE, Decimal(0)) * GPU_MILLI_PER_DEVICE)
    cpu = requests.get("cpu", Decimal(0))
    mem = requests.get("memory", Decimal(0))
    try:
        priority = int(spec.get("priority") or 0)
    except (TypeError, ValueError):
        priority = 0
    return PodDemand(
        uid=str(meta.get("uid") or pod_key(pod)),
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace") or "default"),
        managed=is_managed(pod),
        variants=variants,
        slo_ms=_float(ann, A_SLO_MS, lo=1e-9, hi=MAX_SLO_MS),
        slo_percentile=_float(ann, A_SLO_PERCENTILE, lo=50.0, hi=99.9),
        rate_rps=_float(ann, A_RATE_RPS, lo=0.0, hi=MAX_RATE_RPS) or 0.0,
        qos_class=class_of(ann.get(A_CLASS), spec.get("priorityClassName")),
        gpu_milli=gpu_milli,
        cpu_milli=int(cpu * 1000),
        memory_mib=float(mem / MIB),
        min_accuracy=_float(ann, A_MIN_ACCURACY, lo=0.0, hi=1.0),
        priority=priority,
    )


def checked_demand(pod: Mapping[str, Any], class_of: ClassMapper = default_class_of) -> PodDemand:
    """``pod_demand`` with a malformed spec reported as ``DemandError`` too: the one validation of
    a pod's qosched request, used by the extender's verbs and by the admission webhook.

    A spec of the wrong shape (``containers: "x"``, ``requests: [1]``) makes the parser fail with
    a ``TypeError`` or ``AttributeError``; that is the pod's fault ("invalid request"), not an
    internal error.
    """
    try:
        return pod_demand(pod, class_of)
    except DemandError:
        raise
    except (TypeError, AttributeError, ValueError, ArithmeticError) as err:
        raise DemandError(f"pod spec is malformed ({type(err).__name__}: {err})") from None


def invalid_request_message(err: Exception) -> str:
    """What the extender (filter/bind) and the webhook (denial) say about an invalid request."""
    return f"qosched: invalid request: {err}"


def share_pct_per_device(gpu_milli: int) -> int:
    """Share of each occupied device in 1/100 GPU: ceil(min(milli, 1000) / 10); 0 without GPU.

    Rounded up so a pod never gets less than it asked for (125 milli -> 13 %).
    """
    if gpu_milli <= 0:
        return 0
    per_device = min(gpu_milli, GPU_MILLI_PER_DEVICE)
    return -(-per_device * GPU_SHARE_UNITS_PER_DEVICE // GPU_MILLI_PER_DEVICE)


def gpu_share_units(gpu_milli: int) -> int:
    """Units of :data:`GPU_SHARE_RESOURCE` a pod requests: devices x share per device."""
    if gpu_milli <= 0:
        return 0
    devices = max(1, gpu_milli // GPU_MILLI_PER_DEVICE)
    return devices * share_pct_per_device(gpu_milli)


def mps_memory_limit_mib(profile_memory_mib: float) -> int:
    """Pinned device-memory limit on MPS nodes [MiB]:
    ceil(memory x (1 + MPS_MEMORY_MARGIN_FRAC) + MPS_MEMORY_MARGIN_MIB)."""
    return math.ceil(profile_memory_mib * (1.0 + MPS_MEMORY_MARGIN_FRAC) + MPS_MEMORY_MARGIN_MIB)


def device_layer_annotations(view: NodeView, gpu_milli: int, model_memory_mib: float) -> dict[str, str]:
    """Bind annotations the device layer reads, besides ``qosched.io/device``: the share per
    device (:data:`A_GPU_SHARE_PCT`) for GPU pods and, on MPS nodes with a known model memory,
    the pinned memory limit (:data:`A_GPU_MEMORY_LIMIT_MIB`, :func:`mps_memory_limit_mib`)."""
    out: dict[str, str] = {}
    pct = share_pct_per_device(gpu_milli)
    if pct:
        out[A_GPU_SHARE_PCT] = str(pct)
        if view.sharing == "mps" and model_memory_mib > 0:
            out[A_GPU_MEMORY_LIMIT_MIB] = str(mps_memory_limit_mib(model_memory_mib))
    return out


def _ready(node: Mapping[str, Any]) -> bool:
    status = node.get("status") if isinstance(node.get("status"), Mapping) else {}
    assert isinstance(status, Mapping)
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return True  # a node without conditions (snapshot files) counts as ready


def node_view(node: Mapping[str, Any]) -> NodeView:
    """Parse a Node: accelerator type/count/sharing/tier from labels, allocatable from status.

    Device count: ``qosched.io/accelerator-count``, else ``nvidia.com/gpu``, else the capacity
    of the device plugin's ``qosched.io/gpu-share`` / 100, else 1 for an accelerator node.
    """
    meta = _meta(node)
    labels = labels_of(node)
    status = node.get("status") if isinstance(node.get("status"), Mapping) else {}
    spec = node.get("spec") if isinstance(node.get("spec"), Mapping) else {}
    assert isinstance(status, Mapping)
    assert isinstance(spec, Mapping)
    alloc = status.get("allocatable") or status.get("capacity") or {}
    accelerator = labels.get(L_ACCELERATOR) or None
    gpus = int(_quantity(alloc.get(GPU_RESOURCE, "0"), f"{GPU_RESOURCE}"))
    if not gpus:  # a node of qosched's device plugin: 100 units per device, unhealthy ones included
        capacity = status.get("capacity") or alloc
        shares = _quantity(capacity.get(GPU_SHARE_RESOURCE, "0"), GPU_SHARE_RESOURCE)
        gpus = int(shares) // GPU_SHARE_UNITS_PER_DEVICE
    count_label = labels.get(L_ACCELERATOR_COUNT)
    if count_label not in (None, ""):
        try:
            count = int(str(count_label))
        except ValueError:
            raise ValueError(
                f"node {meta.get('name')}: {L_ACCELERATOR_COUNT}={count_label!r} is not an integer"
            ) from None
    elif gpus:
        count = gpus
    else:
        count = 1 if accelerator else 0
    sharing = labels.get(L_SHARING) or DEFAULT_SHARING
    if sharing not in SHARING_MODES:
        raise ValueError(
            f"node {meta.get('name')}: {L_SHARING}={sharing!r} is not one of {', '.join(SHARING_MODES)}"
        )
    tier = labels.get(L_TIER) or None
    if tier is not None and tier not in TIERS:
        raise ValueError(f"node {meta.get('name')}: {L_TIER}={tier!r} is not one of {', '.join(TIERS)}")
    return NodeView(
        name=str(meta.get("name", "")),
        accelerator=accelerator,
        device_count=max(0, count),
        sharing=sharing,
        tier=tier,
        cpu_milli=int(_quantity(alloc.get("cpu", "0"), "cpu") * 1000),
        memory_mib=float(_quantity(alloc.get("memory", "0"), "memory") / MIB),
        schedulable=_ready(node) and not spec.get("unschedulable", False),
        gpu_model=accelerator,
    )


def pod_node(pod: Mapping[str, Any]) -> str | None:
    """The node a pod is bound to, or None while pending or once terminated."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    status = pod.get("status") if isinstance(pod.get("status"), Mapping) else {}
    assert isinstance(spec, Mapping)
    assert isinstance(status, Mapping)
    if status.get("phase") in TERMINAL_PHASES or (
        _meta(pod).get("deletionTimestamp") and not spec.get("nodeName")
    ):
        return None
    node = spec.get("nodeName")
    return str(node) if node else None


def bound_devices(pod: Mapping[str, Any]) -> tuple[int, ...]:
    """Devices qosched chose at bind (``qosched.io/device``), () when absent or unreadable."""
    raw = annotations_of(pod).get(A_DEVICE, "")
    try:
        return tuple(int(p) for p in str(raw).split(",") if p.strip())
    except ValueError:
        return ()


def running_allocation(pod: Mapping[str, Any], demand: PodDemand) -> Allocation | None:
    """The allocation of a pod the API server says is bound (None when it is not)."""
    node = pod_node(pod)
    if node is None:
        return None
    variant = annotations_of(pod).get(A_VARIANT) or None
    return Allocation(pod=demand, node=node, devices=bound_devices(pod), model=variant)


def split_list(
    objects: Iterable[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Nodes and pods of a v1 ``List`` / multi-document YAML (other kinds are ignored)."""
    nodes, pods = [], []
    for obj in objects:
        kind = obj.get("kind")
        if kind == "Node":
            nodes.append(obj)
        elif kind == "Pod":
            pods.append(obj)
        elif kind and str(kind).endswith("List"):
            sub_kind = str(kind)[: -len("List")]
            for item in obj.get("items") or ():
                item = dict(item)
                item.setdefault("kind", sub_kind or item.get("kind"))
                n, p = split_list([item])
                nodes += n
                pods += p
    return nodes, pods


# Second-wave names (contract §4): online tier/variant learning (issue 13) and INFIDA (issue 14).
A_RTT_MS = PREFIX + "rtt-ms"
A_BANDWIDTH_MBPS = PREFIX + "bandwidth-mbps"
A_INPUT_KB = PREFIX + "input-kb"
A_SERVICE = PREFIX + "service"
A_ROUTE = PREFIX + "route"
L_APP_NAME = "app.kubernetes.io/name"
#: Largest link figures accepted (a typo of several orders of magnitude is refused).
MAX_RTT_MS = 1e6
MAX_BANDWIDTH_MBPS = 1e7
MAX_INPUT_KB = 1e7


def node_link(node: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """``(rtt_ms, bandwidth_mbps)`` of a node from ``qosched.io/rtt-ms`` / ``qosched.io/bandwidth-mbps``.

    Read from the annotations, else the labels; None where absent. Raises ``ValueError`` naming
    the node and the key (RTT must be >= 0, bandwidth > 0).
    """
    merged = {**labels_of(node), **annotations_of(node)}
    name = _meta(node).get("name")
    try:
        rtt = _float(merged, A_RTT_MS, lo=0.0, hi=MAX_RTT_MS)
        bandwidth = _float(merged, A_BANDWIDTH_MBPS, lo=1e-9, hi=MAX_BANDWIDTH_MBPS)
    except DemandError as err:
        raise ValueError(f"node {name}: {err}") from None
    return rtt, bandwidth


def pod_service(pod: Mapping[str, Any]) -> str | None:
    """The service a pod serves: ``qosched.io/service``, else its ``app.kubernetes.io/name`` label."""
    name = (
        str(annotations_of(pod).get(A_SERVICE) or "").strip()
        or str(labels_of(pod).get(L_APP_NAME) or "").strip()
    )
    return name or None


def pod_input_kb(pod: Mapping[str, Any]) -> float | None:
    """Request payload of the pod's service [kB] (``qosched.io/input-kb``), None when absent."""
    return _float(annotations_of(pod), A_INPUT_KB, lo=0.0, hi=MAX_INPUT_KB)


def pod_route(pod: Mapping[str, Any]) -> str | None:
    """The HTTPRoute the learner may re-weight (``qosched.io/route``: ``name`` or ``namespace/name``)."""
    raw = str(annotations_of(pod).get(A_ROUTE) or "").strip()
    return raw or None
