"""The QoE controller (DQoES, ``models.md`` §C): every interval, read → compute → apply.

1. **Read the cluster** (official ``kubernetes`` client): nodes and pods. A pod is *controlled*
   when it carries ``qosched.io/slo-ms``, is bound and ``Running``, and has something the
   controller can move:

   - a GPU share — it holds a fraction of exactly one GPU (``qosched.io/gpu-milli`` < 1000 and
     ``qosched.io/device`` naming one index): its time share of that device is written to the
     annotation :data:`A_GPU_SHARE_MILLI`, which the device layer enforces (HAMi-style core
     limit, MPS active-thread percentage, ...);
   - a CPU share, when it has no GPU at all — the sum of its containers' CPU requests, changed
     in place through the ``pods/resize`` subresource (Kubernetes >= 1.33).

   Pods with whole GPUs (or a fraction without a single device index) are not controlled.

   Controlled pods that share capacity form a *pool*: the CPU of one node, or one GPU.

2. **Pool capacity.** CPU: the node's allocatable CPU × ``cpu_pool_frac`` minus the CPU requests
   of every other pod on the node (any namespace, not controlled) and the ``spec.overhead`` of
   the controlled ones. GPU: 1000 milli-GPU minus the ``gpu-milli`` of the other pods bound to the
   same device index. So the controller never hands out what the scheduler gave someone else.

3. **Read latencies** (:mod:`qosched.extender.controller.prom`): mean or percentile per pod, as its SLO
   states, and its request rate. A pod without an observation, or changed less than
   ``settle_s`` ago (its window still mixes old and new shares), holds.

4. **Compute** one :func:`~qosched.policies.control.law.control_step` per pool.

5. **Apply** (unless ``dry_run``): all decreases first, then the increases, so a node never
   holds more than its capacity even for a moment; increases in a pool where a decrease failed
   are skipped this cycle. Changes smaller than ``min_change_frac`` of the share are not
   written (they would only churn the API server).

CPU patch: a strategic-merge patch of ``spec.containers[*].resources`` on ``pods/resize``. The
new pod total is split over the containers in proportion to their current requests; a
container whose limit equals its request keeps them equal (a Guaranteed pod stays Guaranteed,
since the API refuses a resize that changes the QoS class), any other limit keeps its ratio to
the request; memory is never touched.

Only the leader acts when the controller is replicated (:mod:`qosched.extender.kube.leader`): the
loop calls ``may_act()`` right before every write.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from qosched.extender.controller.listing import list_nodes_and_pods
from qosched.extender.controller.prom import PromSnapshot
from qosched.extender.kube.objects import (
    A_CLASS,
    A_PREDICTED_LATENCY_MS,
    A_RATE_RPS,
    A_SLO_MS,
    PREFIX,
    annotations_of,
    bound_devices,
    pod_demand,
    pod_key,
    pod_node,
    pod_requests,
)
from qosched.policies.control.law import ControlSettings, ControlStep, ServiceInput, control_step
from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig, UnknownClassError
from qosched.policies.fairness.shares import FairShareSolverCache
from qosched.policies.types import GPU_MILLI_PER_DEVICE, DemandError

log = logging.getLogger(__name__)

#: Time share of its GPU a controlled pod may use, in milli-GPU (1..1000), written by the
#: controller and read by the device layer. Not (yet) in the contract (§1): proposed there.
A_GPU_SHARE_MILLI = PREFIX + "gpu-share-milli"

Resource = Literal["cpu", "gpu"]
RateSource = Literal["measured", "annotation", "none"]
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Knobs of the controller loop; the law's own knobs are in ``control``.

    Attributes
    ----------
    interval_s : float
        Time between cycles [s]. At least the Prometheus ``rate()`` window, so that each cycle
        sees the effect of the previous one.
    settle_s : float
        A pod changed less than this long ago holds [s] (its window still mixes old and new
        shares). Default: the same as a 1-minute window.
    namespace : str or None
        Only control pods of this namespace (capacity still counts every pod on the node).
    dry_run : bool
        Plan and log the changes, write nothing.
    min_cpu_milli, max_cpu_milli : int
        Bounds of a CPU share [millicores]; ``max_cpu_milli`` 0 = the pool's capacity.
    min_gpu_milli, max_gpu_milli : int
        Bounds of a GPU time share [milli-GPU].
    cpu_pool_frac : float
        Fraction of a node's allocatable CPU the controller may hand out (0, 1].
    min_change_frac : float
        Changes smaller than this fraction of the current share (and smaller than 1 unit) are
        not written.
    rate_source : {"measured", "annotation", "none"}
        :math:`\\lambda` for the M/M/1 inversion: the measured request rate (falling back to
        ``qosched.io/rate-rps``), the annotation only, or none (multiplicative rule).
    control : ControlSettings
        The control law's knobs.
    classes : ClassConfig
        Service classes (QoS targets for fair degradation).
    """

    interval_s: float = 60.0
    settle_s: float = 60.0
    namespace: str | None = None
    dry_run: bool = False
    min_cpu_milli: int = 50
    max_cpu_milli: int = 0
    min_gpu_milli: int = 50
    max_gpu_milli: int = GPU_MILLI_PER_DEVICE
    cpu_pool_frac: float = 1.0
    min_change_frac: float = 0.02
    rate_source: RateSource = "measured"
    control: ControlSettings = field(default_factory=ControlSettings)
    classes: ClassConfig = DEFAULT_CLASS_CONFIG

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"ControllerSettings.interval_s: {self.interval_s!r} must be > 0")
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0):
            raise ValueError(f"ControllerSettings.settle_s: {self.settle_s!r} must be >= 0")
        if self.min_cpu_milli < 0 or self.max_cpu_milli < 0 or 0 < self.max_cpu_milli < self.min_cpu_milli:
            raise ValueError(
                "ControllerSettings.min_cpu_milli/max_cpu_milli: need 0 <= min <= max (or max 0)"
            )
        if not 0 <= self.min_gpu_milli <= self.max_gpu_milli <= GPU_MILLI_PER_DEVICE:
            raise ValueError("ControllerSettings.min_gpu_milli/max_gpu_milli: need 0 <= min <= max <= 1000")
        if not 0 < self.cpu_pool_frac <= 1:
            raise ValueError(f"ControllerSettings.cpu_pool_frac: {self.cpu_pool_frac!r} not in (0, 1]")
        if not 0 <= self.min_change_frac < 1:
            raise ValueError(f"ControllerSettings.min_change_frac: {self.min_change_frac!r} not in [0, 1)")
        if self.rate_source not in ("measured", "annotation", "none"):
            raise ValueError(
                f"ControllerSettings.rate_source: {self.rate_source!r} is not measured/annotation/none"
            )


# ------------------------------------------------------------------------------- domain shapes


@dataclass(frozen=True, slots=True)
class ContainerCpu:
    """CPU of one container [millicores]; ``limit_milli`` None when it has no CPU limit."""

    name: str
    request_milli: int
    limit_milli: int | None


@dataclass(frozen=True, slots=True)
class ControlledPod:
    """A pod the controller moves, parsed once per cycle from the API object."""

    namespace: str
    name: str
    uid: str
    node: str
    resource: Resource
    device: int | None
    share: int
    slo_ms: float
    percentile: float | None
    rate_annotation_rps: float | None
    class_name: str
    qos_target: float
    containers: tuple[ContainerCpu, ...] = ()
    predicted_ms: float | None = None  # the extender's prediction at bind (qosched.io/predicted-latency-ms)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


PoolKey = tuple[Resource, str, int | None]


@dataclass(frozen=True, slots=True)
class Pool:
    """Controlled pods sharing one capacity: a node's CPU or one GPU."""

    key: PoolKey
    capacity: float
    pods: tuple[ControlledPod, ...]

    @property
    def label(self) -> str:
        kind, node, device = self.key
        return f"{node}/cpu" if kind == "cpu" else f"{node}/gpu{device}"


@dataclass(frozen=True, slots=True)
class Change:
    """A share change planned (and, unless dry-run, applied) for one pod."""

    pod: ControlledPod
    pool: str
    old_share: int
    new_share: int
    observed_ms: float | None
    action: str
    applied: bool = False
    error: str | None = None

    @property
    def unit(self) -> str:
        return "m" if self.pod.resource == "cpu" else " milli-GPU"

    def describe(self) -> str:
        what = "mean" if self.pod.percentile is None else f"p{self.pod.percentile:g}"
        seen = "no observation" if self.observed_ms is None else f"{what} {self.observed_ms:.1f} ms"
        return (
            f"{self.pod.key} {self.pod.resource} {self.old_share}{self.unit} -> {self.new_share}{self.unit}"
            f" ({seen}, SLO {self.pod.slo_ms:g} ms, {self.action})"
        )


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle saw and did (the loop logs it; tests and the CLI read it)."""

    pools: tuple[Pool, ...] = ()
    steps: Mapping[PoolKey, ControlStep] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()
    skipped: str | None = None
    dry_run: bool = False

    @property
    def applied(self) -> int:
        return sum(c.applied for c in self.changes)

    @property
    def failed(self) -> int:
        return sum(c.error is not None for c in self.changes)


class LatencySource(Protocol):
    """What the controller needs from :class:`~qosched.extender.controller.prom.PromReader`."""

    def read(self, percentiles: Iterable[float | None], *, with_rate: bool = True) -> PromSnapshot | None: ...


# ------------------------------------------------------------------------------- parsing


def _milli(value: Any) -> int:
    return int((Decimal(parse_quantity(value)) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def container_cpu(pod: Mapping[str, Any]) -> tuple[ContainerCpu, ...]:
    """CPU request/limit of each regular container [millicores] (a limit alone is the request)."""
    out = []
    for c in (pod.get("spec") or {}).get("containers") or ():
        res = c.get("resources") or {}
        req = (res.get("requests") or {}).get("cpu")
        lim = (res.get("limits") or {}).get("cpu")
        if req is None:
            req = lim
        out.append(
            ContainerCpu(
                name=str(c.get("name", "")),
                request_milli=_milli(req) if req is not None else 0,
                limit_milli=_milli(lim) if lim is not None else None,
            )
        )
    return tuple(out)


def _float_annotation(ann: Mapping[str, str], key: str) -> float | None:
    raw = ann.get(key)
    if raw is None or not str(raw).strip():
        return None
    try:
        value = float(str(raw))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def gpu_share_of(pod: Mapping[str, Any], gpu_milli: int) -> int:
    """Current GPU time share: :data:`A_GPU_SHARE_MILLI` when valid, else the ``gpu-milli`` request."""
    raw = annotations_of(pod).get(A_GPU_SHARE_MILLI)
    try:
        value = int(str(raw).strip()) if raw is not None else 0
    except ValueError:
        log.warning(
            "pod %s: %s=%r is not an integer; using its gpu-milli", pod_key(pod), A_GPU_SHARE_MILLI, raw
        )
        value = 0
    return value if 1 <= value <= GPU_MILLI_PER_DEVICE else gpu_milli


def parse_controlled(pod: Mapping[str, Any], classes: ClassConfig) -> ControlledPod | None:
    """The pod as the controller moves it, or None (not controlled; the reason logged at debug)."""
    ann = annotations_of(pod)
    if A_SLO_MS not in ann:
        return None
    key = pod_key(pod)
    node = pod_node(pod)
    if node is None or (pod.get("status") or {}).get("phase") != "Running":
        log.debug("pod %s: not running on a node, not controlled", key)
        return None

    def class_of(annotation: str | None, priority_class: str | None) -> str:
        return classes.resolve({A_CLASS: annotation} if annotation else {}, priority_class).name

    try:
        demand = pod_demand(pod, class_of)
    except (DemandError, UnknownClassError) as exc:
        log.warning("pod %s: %s; not controlled", key, exc)
        return None
    if demand.slo_ms is None:
        return None
    meta = pod.get("metadata") or {}
    service_class = classes.get(demand.qos_class)
    common: dict[str, Any] = {
        "namespace": demand.namespace,
        "name": demand.name,
        "uid": str(meta.get("uid") or key),
        "node": node,
        "slo_ms": demand.slo_ms,
        "percentile": demand.slo_percentile,
        "rate_annotation_rps": _float_annotation(ann, A_RATE_RPS),
        "predicted_ms": _float_annotation(ann, A_PREDICTED_LATENCY_MS),
        "class_name": service_class.name,
        "qos_target": float(service_class.qos_target),
    }
    devices = bound_devices(pod)
    if 0 < demand.gpu_milli < GPU_MILLI_PER_DEVICE and len(devices) == 1:
        return ControlledPod(
            resource="gpu", device=devices[0], share=gpu_share_of(pod, demand.gpu_milli), **common
        )
    if demand.gpu_milli > 0:
        # Its latency is the GPU's; moving its CPU on that signal would be moving the wrong knob.
        log.debug("pod %s: whole GPUs or no single device index; not controlled", key)
        return None
    try:
        cpus = container_cpu(pod)
    except (ValueError, TypeError, ArithmeticError) as exc:
        log.warning("pod %s: unreadable CPU resources (%s); not controlled", key, exc)
        return None
    total = sum(c.request_milli for c in cpus)
    if total <= 0:
        log.debug("pod %s: no CPU request (BestEffort cannot be resized); not controlled", key)
        return None
    return ControlledPod(resource="cpu", device=None, share=total, containers=cpus, **common)


@dataclass
class _PoolUsage:
    """What the pods on the nodes hold: controlled members per pool, and everything else."""

    members: dict[PoolKey, list[ControlledPod]] = field(default_factory=dict)
    others_cpu_milli: dict[str, float] = field(default_factory=dict)
    others_gpu_milli: dict[tuple[str, int], float] = field(default_factory=dict)

    def add_cpu(self, node: str, milli: float) -> None:
        self.others_cpu_milli[node] = self.others_cpu_milli.get(node, 0.0) + milli

    def add_uncontrolled_gpu(self, pod: Mapping[str, Any], node: str) -> None:
        """A bound GPU pod qosched does not control: its milli per device count against the pool."""
        devices = bound_devices(pod)
        if not devices:
            return
        try:
            gpu_milli = pod_demand(pod).gpu_milli
        except (DemandError, UnknownClassError, ValueError):
            return
        per_device = gpu_milli / len(devices) if gpu_milli < GPU_MILLI_PER_DEVICE else GPU_MILLI_PER_DEVICE
        for d in devices:
            self.others_gpu_milli[(node, d)] = self.others_gpu_milli.get((node, d), 0.0) + per_device


def _allocatable_cpu_milli(nodes: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Allocatable (else capacity) CPU of every readable node, in millicores."""
    alloc_milli: dict[str, int] = {}
    for node_obj in nodes:
        name = str((node_obj.get("metadata") or {}).get("name", ""))
        status = node_obj.get("status") or {}
        cpu = (status.get("allocatable") or status.get("capacity") or {}).get("cpu", "0")
        try:
            alloc_milli[name] = _milli(cpu)
        except (ValueError, TypeError, ArithmeticError):
            log.warning("node %s: unreadable allocatable cpu %r; its pods are not controlled", name, cpu)
    return alloc_milli


def _account_pod(usage: _PoolUsage, pod: Mapping[str, Any], node: str, settings: ControllerSettings) -> None:
    """Put one bound pod in its pool (controlled) or in the pools' background usage (the rest)."""
    controlled = parse_controlled(pod, settings.classes)
    if controlled is not None and settings.namespace not in (None, controlled.namespace):
        controlled = None
    try:
        requests = pod_requests(pod)
    except (ValueError, ArithmeticError):
        requests = {}
    cpu_milli = float(requests.get("cpu", Decimal(0)) * 1000)
    if controlled is not None and controlled.resource == "cpu":
        usage.members.setdefault(("cpu", node, None), []).append(controlled)
        usage.add_cpu(node, max(0.0, cpu_milli - controlled.share))  # overhead, init containers
        return
    usage.add_cpu(node, cpu_milli)
    if controlled is not None:  # a GPU share
        usage.members.setdefault(("gpu", node, controlled.device), []).append(controlled)
        return
    usage.add_uncontrolled_gpu(pod, node)


def _pool_capacity(
    key: PoolKey,
    group: list[ControlledPod],
    alloc_milli: Mapping[str, int],
    usage: _PoolUsage,
    cpu_pool_frac: float,
) -> float | None:
    """What the controlled pods of one pool may share; None (logged) when the pool is unusable.

    CPU pool: allocatable × ``cpu_pool_frac`` − CPU of everything else on the node.
    GPU pool: 1,000 milli − milli of the device's uncontrolled pods.
    """
    kind, node, device = key
    if kind == "cpu":
        if node not in alloc_milli:
            log.warning("node %s: not found; its %d controlled pods hold", node, len(group))
            return None
        capacity = alloc_milli[node] * cpu_pool_frac - usage.others_cpu_milli.get(node, 0.0)
    else:
        capacity = GPU_MILLI_PER_DEVICE - usage.others_gpu_milli.get((node, device or 0), 0.0)
    if capacity <= 0:
        log.warning(
            "pool %s/%s%s: no capacity left for controlled pods", node, kind, "" if device is None else device
        )
        return None
    return float(capacity)


def build_pools(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    settings: ControllerSettings,
) -> tuple[Pool, ...]:
    """Group controlled pods by node CPU / GPU device and compute each pool's capacity."""
    alloc_milli = _allocatable_cpu_milli(nodes)
    usage = _PoolUsage()
    for pod in pods:
        node = pod_node(pod)
        if node is not None:
            _account_pod(usage, pod, node, settings)
    pools = []
    for key, group in sorted(usage.members.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        capacity = _pool_capacity(key, group, alloc_milli, usage, settings.cpu_pool_frac)
        if capacity is not None:
            pools.append(Pool(key, capacity, tuple(sorted(group, key=lambda p: p.key))))
    return tuple(pools)


# ------------------------------------------------------------------------------- the controller


def _supports_kwarg(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class QoEController:
    """Reads the cluster and Prometheus, runs the law per pool, applies the result.

    Parameters
    ----------
    core : kubernetes.client.CoreV1Api
    latency : LatencySource
        Usually a :class:`~qosched.extender.controller.prom.PromReader`.
    settings : ControllerSettings, optional
    may_act : callable, optional
        Checked right before every write; the leader elector's ``is_leader`` when replicated.
    monotonic : callable, optional
        Clock for ``settle_s`` (tests inject a fake).
    """

    def __init__(
        self,
        core: CoreV1Api,
        latency: LatencySource,
        settings: ControllerSettings | None = None,
        *,
        may_act: Callable[[], bool] = lambda: True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        self.latency = latency
        self.settings = settings or ControllerSettings()
        self.may_act = may_act
        self._monotonic = monotonic
        self._changed_at: dict[str, float] = {}
        self._solvers = FairShareSolverCache()
        resize = getattr(core, "patch_namespaced_pod_resize", None)
        if resize is None:
            raise RuntimeError(
                "this kubernetes client has no CoreV1Api.patch_namespaced_pod_resize "
                "(pods/resize): install kubernetes>=33"
            )
        self._resize_takes_content_type = _supports_kwarg(resize, "_content_type")

    # ------------------------------------------------------------------ read
    def discover(self) -> tuple[Pool, ...]:
        """List nodes and pods (raw JSON, no model objects) and build the pools."""
        nodes, pods = list_nodes_and_pods(self.core)
        return build_pools(nodes, pods, self.settings)

    # ------------------------------------------------------------------ compute
    def plan(
        self, pools: Iterable[Pool], snapshot: PromSnapshot
    ) -> tuple[dict[PoolKey, ControlStep], list[Change]]:
        """Run the law on every pool; the changes worth writing."""
        s = self.settings
        now = self._monotonic()
        self._changed_at = {uid: t for uid, t in self._changed_at.items() if now - t < s.settle_s}
        steps: dict[PoolKey, ControlStep] = {}
        changes: list[Change] = []
        for pool in pools:
            try:
                step, pool_changes = self._plan_pool(pool, snapshot, now)
            except (ValueError, ArithmeticError) as exc:  # one bad pool must not stop the others
                log.error("pool %s: control step failed (%s); its pods hold", pool.label, exc)
                continue
            steps[pool.key] = step
            changes.extend(pool_changes)
        return steps, changes

    def _plan_pool(self, pool: Pool, snapshot: PromSnapshot, now: float) -> tuple[ControlStep, list[Change]]:
        """One pool: inputs from the snapshot (held while settling), the law, integer shares."""
        s = self.settings
        changes: list[Change] = []
        inputs = []
        observed: list[float | None] = []
        for pod in pool.pods:
            obs = snapshot.latency_of(pod.namespace, pod.name, pod.percentile)
            changed = self._changed_at.get(pod.uid)
            if changed is not None and now - changed < s.settle_s:
                obs = None
            observed.append(obs)
            if pod.resource == "cpu":
                hi = float(min(s.max_cpu_milli or pool.capacity, pool.capacity))
                lo = float(min(s.min_cpu_milli, hi))
            else:
                hi = float(min(s.max_gpu_milli, pool.capacity))
                lo = float(min(s.min_gpu_milli, hi))
            inputs.append(
                ServiceInput(
                    share=float(pod.share),
                    slo_ms=pod.slo_ms,
                    observed_ms=obs,
                    lo=lo,
                    hi=hi,
                    qos_target=pod.qos_target,
                    class_name=pod.class_name,
                    rate_rps=self._rate(pod, snapshot),
                    percentile=pod.percentile,
                )
            )
        step = control_step(inputs, pool.capacity, s.control, self._solvers)
        old = [pod.share for pod in pool.pods]
        written = writable_shares(old, step.shares, pool.capacity, s.min_change_frac)
        for pod, new, action, obs in zip(pool.pods, written, step.actions, observed, strict=True):
            if new != pod.share:
                changes.append(Change(pod, pool.label, pod.share, new, obs, action))
        return step, changes

    def _rate(self, pod: ControlledPod, snapshot: PromSnapshot) -> float | None:
        source = self.settings.rate_source
        if source == "none":
            return None
        if source == "measured":
            measured = snapshot.rate_of(pod.namespace, pod.name)
            if measured is not None and math.isfinite(measured):
                return measured
        return pod.rate_annotation_rps

    # ------------------------------------------------------------------ apply
    def apply(self, changes: Iterable[Change]) -> list[Change]:
        """Write the changes, decreases first; returns them with ``applied``/``error`` filled in."""
        ordered = sorted(changes, key=lambda c: (c.new_share > c.old_share, c.pool, c.pod.key))
        failed_pools: set[str] = set()
        done: list[Change] = []
        for change in ordered:
            growing = change.new_share > change.old_share
            if growing and change.pool in failed_pools:
                done.append(_with(change, error="skipped: a decrease in its pool failed"))
                continue
            if not self.may_act():
                done.append(_with(change, error="skipped: not the leader"))
                continue
            try:
                if change.pod.resource == "cpu":
                    self._resize_cpu(change)
                else:
                    self._set_gpu_share(change)
            except ApiException as exc:
                if not growing:
                    failed_pools.add(change.pool)
                reason = f"HTTP {exc.status}: {_api_message(exc)}"
                log.warning("%s: not applied (%s)", change.describe(), reason)
                done.append(_with(change, error=reason))
                continue
            except Exception as exc:  # connection errors: report, keep going
                if not growing:
                    failed_pools.add(change.pool)
                log.warning("%s: not applied (%s)", change.describe(), exc)
                done.append(_with(change, error=str(exc) or type(exc).__name__))
                continue
            self._changed_at[change.pod.uid] = self._monotonic()
            log.info("applied: %s", change.describe())
            done.append(_with(change, applied=True))
        return done

    def _resize_cpu(self, change: Change) -> None:
        body = resize_patch(change.pod.containers, change.new_share)
        kwargs: dict[str, Any] = {}
        if self._resize_takes_content_type:
            kwargs["_content_type"] = STRATEGIC_MERGE_PATCH
        self.core.patch_namespaced_pod_resize(change.pod.name, change.pod.namespace, body, **kwargs)

    def _set_gpu_share(self, change: Change) -> None:
        body = {"metadata": {"annotations": {A_GPU_SHARE_MILLI: str(change.new_share)}}}
        self.core.patch_namespaced_pod(change.pod.name, change.pod.namespace, body)

    # ------------------------------------------------------------------ one cycle
    def cycle(self) -> CycleReport:
        """read → compute → apply once. Never raises for an unreachable API server or Prometheus."""
        s = self.settings
        try:
            pools = self.discover()
        except Exception as exc:
            log.error("controller: listing nodes/pods failed (%s); skipping this cycle", exc)
            return CycleReport(skipped=f"kubernetes: {exc}", dry_run=s.dry_run)
        if not pools:
            log.debug("controller: no controlled pods")
            return CycleReport(skipped="no controlled pods", dry_run=s.dry_run)
        wanted = {p.percentile for pool in pools for p in pool.pods}
        snapshot = self.latency.read(wanted, with_rate=s.rate_source == "measured")
        if snapshot is None:
            return CycleReport(pools=pools, skipped="prometheus unavailable", dry_run=s.dry_run)
        steps, changes = self.plan(pools, snapshot)
        if s.dry_run:
            for change in changes:
                log.info("dry-run, would apply: %s", change.describe())
            return CycleReport(pools, steps, tuple(changes), dry_run=True)
        done = self.apply(changes)
        return CycleReport(pools, steps, tuple(done))


def writable_shares(
    old: Iterable[int], new: Iterable[float], capacity: float, min_change_frac: float
) -> list[int]:
    """The integer shares to write: the law's shares floored, changes below the threshold dropped.

    A change is written when it is at least 1 unit and at least ``min_change_frac`` of the old
    share. Dropping a small *decrease* could leave the pool over capacity once the increases are
    written, so then every decrease is written after all and, if that is not enough, the
    increases are cut (proportionally, floored) until ``sum <= capacity``.
    """
    o = [int(v) for v in old]
    t = [math.floor(float(v) + 1e-9) for v in new]
    if len(o) != len(t):
        raise ValueError(f"writable_shares: {len(o)} old shares, {len(t)} new")

    def significant(i: int, value: int) -> bool:
        delta = abs(value - o[i])
        return delta >= 1 and delta >= min_change_frac * o[i]

    out = [t[i] if significant(i, t[i]) else o[i] for i in range(len(o))]
    if sum(out) > capacity:
        out = [min(out[i], t[i]) for i in range(len(o))]  # every decrease, however small
    excess = sum(out) - capacity
    if excess > 0:
        inc = [max(out[i] - o[i], 0) for i in range(len(o))]
        total_inc = sum(inc)
        if total_inc > 0:
            keep = max(0.0, 1.0 - excess / total_inc)
            out = [o[i] + math.floor(inc[i] * keep) if inc[i] else out[i] for i in range(len(o))]
            out = [v if v == o[i] or significant(i, v) else o[i] for i, v in enumerate(out)]
    return out


def resize_patch(containers: Iterable[ContainerCpu], new_total_milli: int) -> dict[str, Any]:
    """Strategic-merge patch body for ``pods/resize`` giving the pod ``new_total_milli`` of CPU.

    Split over the containers that have a CPU request, in proportion to it (floored, so the pod
    total never exceeds ``new_total_milli``; at least 1m each). Limits: equal to the request when
    they were equal (QoS class kept), scaled by the same factor otherwise (rounded up), absent
    when absent.
    """
    with_cpu = [c for c in containers if c.request_milli > 0]
    if not with_cpu:
        raise ValueError("resize_patch: no container has a CPU request")
    old_total = sum(c.request_milli for c in with_cpu)
    out = []
    for c in with_cpu:
        req = max(1, (new_total_milli * c.request_milli) // old_total)
        res: dict[str, dict[str, str]] = {"requests": {"cpu": f"{req}m"}}
        if c.limit_milli is not None:
            if c.limit_milli == c.request_milli:
                lim = req
            else:
                lim = max(req, -(-c.limit_milli * req // c.request_milli))
            res["limits"] = {"cpu": f"{lim}m"}
        out.append({"name": c.name, "resources": res})
    return {"spec": {"containers": out}}


def _with(change: Change, *, applied: bool = False, error: str | None = None) -> Change:
    return Change(
        change.pod,
        change.pool,
        change.old_share,
        change.new_share,
        change.observed_ms,
        change.action,
        applied,
        error,
    )


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


# ------------------------------------------------------------------------------- the loop


class Elector(Protocol):
    """What :func:`run_loop` needs from :class:`~qosched.extender.kube.leader.LeaderElector`."""

    def try_acquire_or_renew(self) -> bool: ...

    def release(self) -> bool: ...

    @property
    def is_leader(self) -> bool: ...


def run_loop(
    controller: QoEController,
    stop: threading.Event,
    *,
    elector: Elector | None = None,
    retry_period_s: float = 2.0,
    iterations: int | None = None,
    on_report: Callable[[CycleReport], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Run cycles every ``controller.settings.interval_s`` until ``stop`` is set; returns the count.

    With an ``elector`` the loop wakes every ``retry_period_s`` to acquire or renew the lease
    (so a long interval never lets the lease lapse), runs a cycle only while leading, and
    releases the lease when stopped. ``iterations`` bounds the number of cycles (tests).
    """
    interval = controller.settings.interval_s
    cycles = 0
    next_at = monotonic()
    try:
        while not stop.is_set() and (iterations is None or cycles < iterations):
            leading = elector.try_acquire_or_renew() if elector is not None else True
            now = monotonic()
            if leading and now >= next_at:
                try:
                    report = controller.cycle()
                except Exception as exc:  # a bug in one cycle must not end the controller
                    log.exception("controller cycle failed")
                    report = CycleReport(skipped=f"error: {exc}")
                cycles += 1
                next_at = now + interval
                _log_report(report)
                if on_report is not None:
                    on_report(report)
            elif not leading:
                next_at = monotonic()  # act as soon as we lead
            wait = max(0.0, next_at - monotonic())
            if elector is not None:
                wait = min(wait, retry_period_s) if leading else retry_period_s
            if iterations is not None and cycles >= iterations:
                break
            stop.wait(wait)
    finally:
        if elector is not None:
            elector.release()
    return cycles


def _log_report(report: CycleReport) -> None:
    if report.skipped:
        log.info("controller cycle skipped: %s", report.skipped)
        return
    moved = len(report.changes)
    pods = sum(len(p.pods) for p in report.pools)
    log.info(
        "controller cycle: %d pools, %d pods, %d changes%s (%d failed)",
        len(report.pools),
        pods,
        moved,
        " planned" if report.dry_run else " applied",
        report.failed,
    )
