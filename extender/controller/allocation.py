"""INFIDA in the controller process: Prometheus counts → mirror ascent → allocation, hints, replicas.

Every allocation window (``window_s``; the controller loop calls :meth:`AllocationController.cycle`
every interval and a cycle before the window has passed does nothing), the leader:

1. **Reads the cluster** (official ``kubernetes`` client): nodes with ``qosched.io/tier`` and an
   accelerator label (their links from ``qosched.io/rtt-ms`` / ``qosched.io/bandwidth-mbps``), and
   the services of the pods (``qosched.io/service`` or ``app.kubernetes.io/name``, with
   ``qosched.io/variants``, ``qosched.io/slo-ms``, ``qosched.io/input-kb``). The allocation
   network is :func:`qosched.policies.infida.routing.allocation_model` of that scenario (the same
   as the what-if's).
2. **Reads the request counts** of the window per serving pod from Prometheus (the QoE
   controller's reader and rate query, with the range set to the window: ``rate × window_s``),
   and sums them per (node, service, variant) — a pod serves the variant of its
   ``qosched.io/variant`` (written at bind) or its only model.
3. **Updates** the allocation: one INFIDA step (:class:`~qosched.policies.infida.allocators.
   InfidaAllocator`) built by :func:`~qosched.policies.infida.routing.infida_allocator`, as the
   what-if runs it (adaptive step, rounding over nodes × services).
4. **Acts** (unless ``dry_run`` or not the leader): writes the allocation document (with the
   allocator's state) to the ConfigMap ``configmap`` (key ``allocation.json``; the extender serves
   it at ``GET /allocation``), merges its node weights into the placement hints ConfigMap (the
   one the online learner writes and the extender reads), and, with ``scale_deployments``, sets
   the replicas of the Deployments labelled ``qosched.io/allocation`` (module
   :func:`~qosched.policies.infida.live.replica_plan`; bounds from their annotations
   ``qosched.io/allocation-min-replicas`` / ``qosched.io/allocation-max-replicas``; service and
   variant from the pod template's ``qosched.io/service`` and ``qosched.io/model``).

State: at the first cycle the allocation ConfigMap is read and the allocator resumes from its
``state`` (a missing one starts fresh; an unusable one is logged with the reason and replaced).
Writes use the resourceVersion read; a conflict is reported and retried the next window.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from qosched.extender.controller.configmaps import ConfigMapStore
from qosched.extender.controller.listing import list_nodes_and_pods
from qosched.extender.kube.objects import (
    A_MODEL,
    A_VARIANT,
    annotations_of,
    pod_demand,
    pod_input_kb,
    pod_node,
    pod_service,
)
from qosched.extender.kube.request_scenario import service_def, tier_node
from qosched.policies.infida.allocators import InfidaAllocator, StateError
from qosched.policies.infida.gain import window_capacity
from qosched.policies.infida.live import (
    ALLOCATION_KEY,
    ReplicaBounds,
    allocation_document,
    allocation_hints,
    merge_hints,
    replica_plan,
    window_counts,
)
from qosched.policies.infida.oma import gradient_bound_per_mib
from qosched.policies.infida.routing import AllocationModel, allocation_model, infida_allocator
from qosched.policies.requests.hints import CONFIGMAP_KEY, PlacementHints
from qosched.policies.requests.scenario import Scenario, ScenarioError, ServiceDef
from qosched.policies.state import DeviceMemoryLookup, ServiceLookup
from qosched.policies.types import DemandError

log = logging.getLogger(__name__)

#: Deployment label selecting the per-variant Deployments the controller may scale.
L_ALLOCATION = "qosched.io/allocation"
A_MIN_REPLICAS = "qosched.io/allocation-min-replicas"
A_MAX_REPLICAS = "qosched.io/allocation-max-replicas"


@dataclass(frozen=True, slots=True)
class AllocationSettings:
    """Where the allocation lives, how long a window is, what INFIDA may assume, whether to scale."""

    namespace: str = "qosched-system"
    configmap: str = "qosched-allocation"
    hints_configmap: str = "qosched-placement-hints"
    window_s: float = 600.0
    horizon_windows: int = 1008  # a week of 10-minute windows
    max_requests_per_window: float = 1e5
    accuracy_weight_ms_per_pp: float = 2.0
    scale_deployments: bool = False
    dry_run: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"allocation window must be > 0 s, got {self.window_s}")
        if self.horizon_windows < 1 or not self.max_requests_per_window > 0:
            raise ValueError("allocation horizon must be >= 1 window and max requests per window > 0")


@dataclass
class AllocationReport:
    """What one cycle did (logged; ``--once`` prints it)."""

    dry_run: bool
    skipped: str | None = None
    window: int | None = None
    loaded: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    scale: dict[str, int] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _service_def(pod: Mapping[str, Any]) -> ServiceDef | None:
    name = pod_service(pod)
    if name is None:
        return None
    demand = pod_demand(pod)
    if demand.slo_ms is None or not demand.variants:
        return None
    return service_def(name, demand, demand.slo_ms, pod_input_kb(pod))


def _served_variant(pod: Mapping[str, Any]) -> str | None:
    ann = annotations_of(pod)
    variant = str(ann.get(A_VARIANT) or "").strip()
    if variant:
        return variant
    models = [
        m.strip()
        for m in str(ann.get("qosched.io/variants") or ann.get(A_MODEL) or "").split(",")
        if m.strip()
    ]
    return models[0] if len(models) == 1 else None


@dataclass
class _Cluster:
    scenario: Scenario
    serving: list[tuple[str, str, str, str, str]]  # namespace, pod, node, service, variant


class AllocationController:
    """One INFIDA step per window (module docstring)."""

    def __init__(
        self,
        core: CoreV1Api,
        apps: AppsV1Api | None,
        reader: Any,
        settings: AllocationSettings,
        lookup: ServiceLookup,
        device_memory: DeviceMemoryLookup,
        *,
        may_act: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.apps = apps
        self.reader = reader
        self.settings = settings
        self.lookup = lookup
        self.device_memory = device_memory
        self.may_act = may_act
        self.clock = clock
        self.allocator: InfidaAllocator | None = None
        self.model: AllocationModel | None = None
        self.window = 0
        self.last_time_s: float | None = None
        self._loaded_state: Mapping[str, Any] | None = None
        self._state_read = False
        self.configmaps = ConfigMapStore(core, settings.namespace, log)

    def _read_state(self) -> None:
        """The last document's window, time and allocator state (once, at the first cycle)."""
        self._state_read = True
        data, _ = self.configmaps.read(self.settings.configmap)
        if not data or ALLOCATION_KEY not in data:
            return
        try:
            doc = json.loads(data[ALLOCATION_KEY])
            self.window = int(doc["window"])
            self.last_time_s = float(doc["time_s"])
            self._loaded_state = doc.get("state")
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "allocation: %s/%s unusable (%s); starting fresh",
                self.settings.namespace,
                self.settings.configmap,
                exc,
            )
            self.window, self.last_time_s, self._loaded_state = 0, None, None

    # ------------------------------------------------------------------ read
    def discover(self) -> _Cluster:
        node_objs, pods = list_nodes_and_pods(self.core)
        nodes = []
        for obj in node_objs:
            try:
                tn = tier_node(obj)
            except (ValueError, ScenarioError) as exc:
                log.warning("allocation: %s", exc)
                continue
            if tn is not None:
                nodes.append(tn)
        services: dict[str, ServiceDef] = {}
        serving: list[tuple[str, str, str, str, str]] = []
        for pod in pods:
            self._add_pod(pod, services, serving, {n.name for n in nodes})
        return _Cluster(Scenario.build(nodes, services.values(), self.lookup), serving)

    def _add_pod(
        self, pod: Mapping[str, Any], services: dict[str, ServiceDef], serving: list[Any], nodes: set[str]
    ) -> None:
        try:
            svc = _service_def(pod)
        except (DemandError, ScenarioError) as exc:
            log.warning("allocation: pod %s: %s", (pod.get("metadata") or {}).get("name"), exc)
            return
        if svc is None:
            return
        services.setdefault(svc.name, svc)
        node, variant = pod_node(pod), _served_variant(pod)
        phase = (pod.get("status") or {}).get("phase")
        if node in nodes and variant and phase == "Running":
            meta = pod.get("metadata") or {}
            serving.append((meta.get("namespace", "default"), meta.get("name", ""), node, svc.name, variant))

    def served_counts(self, cluster: _Cluster, elapsed_s: float) -> dict[tuple[str, str, str], float] | None:
        """Requests of the window per (node, service, variant): per-pod rate over the window × its length."""
        seconds = max(1, round(elapsed_s))
        queries = dataclasses.replace(self.reader.queries, window=f"{seconds}s")
        rates = self.reader.query_vector(queries.rate())
        if rates is None:
            return None
        out: dict[tuple[str, str, str], float] = {}
        for ns, pod, node, service, variant in cluster.serving:
            rate = rates.get((ns, pod), rates.get((None, pod)))
            if rate is not None and math.isfinite(rate) and rate > 0:
                key = (node, service, variant)
                out[key] = out.get(key, 0.0) + rate * seconds
        return out

    # ------------------------------------------------------------------ decide
    def _allocator(self, model: AllocationModel) -> InfidaAllocator:
        s = self.settings
        bound = gradient_bound_per_mib(model.catalog, model.gap_ms(), s.max_requests_per_window, s.window_s)
        allocator = infida_allocator(
            model,
            np.random.default_rng([s.seed, self.window]),
            bound=bound,
            windows=s.horizon_windows,
            round_seed=s.seed,  # the same uniforms every window, across restarts too
        )
        state = self._loaded_state if self.allocator is None else self.allocator.state()
        if state is not None:
            try:
                allocator.resume(state)
            except StateError as exc:
                log.error("allocation: saved state unusable (%s); starting from y1", exc)
        return allocator

    def cycle(self) -> AllocationReport:
        report = AllocationReport(dry_run=self.settings.dry_run)
        now = self.clock()
        try:
            if not self._state_read:
                self._read_state()
            if self.last_time_s is not None and now - self.last_time_s < self.settings.window_s:
                report.skipped = (
                    f"window not over ({now - self.last_time_s:.0f} of {self.settings.window_s:g} s)"
                )
                return report
            cluster = self.discover()
        except ApiException as exc:
            report.skipped = f"API server: {exc.status} {exc.reason}"
            return report
        except ScenarioError as exc:
            report.skipped = f"no allocation network: {exc}"
            return report
        elapsed = self.settings.window_s if self.last_time_s is None else now - self.last_time_s
        served = self.served_counts(cluster, elapsed)
        if served is None:
            report.skipped = "prometheus query failed"
            return report
        self._step(cluster, served, now, report)
        return report

    def _step(
        self,
        cluster: _Cluster,
        served: Mapping[tuple[str, str, str], float],
        now: float,
        report: AllocationReport,
    ) -> None:
        model = allocation_model(
            cluster.scenario,
            self.device_memory,
            accuracy_weight_ms_per_pp=self.settings.accuracy_weight_ms_per_pp,
        )
        self.allocator = self._allocator(model)  # rebuilt each window: the cluster may have changed
        self.model = model
        counts = window_counts(model, served)
        table = model.table(model.base_links())
        capacity = window_capacity(table, model.catalog, counts, self.settings.window_s)
        decision = self.allocator.observe(table, counts, capacity)
        self.window += 1
        self.last_time_s = now
        report.window = self.window
        report.counts = {t.service: float(counts[r]) for r, t in enumerate(model.types)}
        for i, slot in enumerate(model.catalog.slots):
            if decision.integral[i]:
                report.loaded.setdefault(slot.node, []).append(slot.model)
        doc = allocation_document(
            model,
            decision,
            window=self.window,
            window_s=self.settings.window_s,
            time_s=now,
            counts=counts,
            state=self.allocator.state(),
            eta=self.allocator.eta,
        )
        deployments = self._deployments(report) if self.settings.scale_deployments else []
        report.scale = replica_plan(model, decision, deployments) if deployments else {}
        if self.settings.dry_run or not self.may_act():
            return
        self._apply(doc, allocation_hints(model, decision, now), report)

    # ------------------------------------------------------------------ act
    def _apply(self, doc: Mapping[str, Any], hints: PlacementHints, report: AllocationReport) -> None:
        s = self.settings
        try:
            self.configmaps.write(s.configmap, ALLOCATION_KEY, json.dumps(doc))
            report.writes.append(f"configmap {s.namespace}/{s.configmap}")
            merged = merge_hints(self.configmaps.read_hints(s.hints_configmap, "allocation"), hints)
            self.configmaps.write(s.hints_configmap, CONFIGMAP_KEY, json.dumps(merged.to_json()))
            report.writes.append(f"configmap {s.namespace}/{s.hints_configmap}")
        except ApiException as exc:
            report.errors.append(f"configmap: {exc.status} {exc.reason}")
        for ref, replicas in report.scale.items():
            ns, name = ref.split("/", 1)
            try:
                assert self.apps is not None
                self.apps.patch_namespaced_deployment(name, ns, {"spec": {"replicas": replicas}})
                report.writes.append(f"deployment {ref} replicas={replicas}")
            except ApiException as exc:
                report.errors.append(f"deployment {ref}: {exc.status} {exc.reason}")

    def _deployments(self, report: AllocationReport) -> list[ReplicaBounds]:
        if self.apps is None:
            return []
        try:
            raw: Any = self.apps.list_deployment_for_all_namespaces(
                label_selector=L_ALLOCATION, _preload_content=False
            )
        except ApiException as exc:
            report.errors.append(f"deployments: {exc.status} {exc.reason}")
            return []
        return [b for obj in json.loads(raw.data)["items"] if (b := _bounds(obj)) is not None]


def _int(value: Any, default: int) -> int:
    try:
        return int(str(value).strip()) if value is not None else default
    except ValueError:
        return default


def _bounds(obj: Mapping[str, Any]) -> ReplicaBounds | None:
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    t_ann = template.get("annotations") or {}
    service = t_ann.get("qosched.io/service") or (template.get("labels") or {}).get("app.kubernetes.io/name")
    variant = t_ann.get(A_MODEL)
    if not service or not variant:
        log.warning(
            "allocation: deployment %s lacks qosched.io/service or qosched.io/model on its pods",
            meta.get("name"),
        )
        return None
    return ReplicaBounds(
        namespace=meta.get("namespace", "default"),
        name=meta.get("name", ""),
        service=str(service),
        variant=str(variant),
        min_replicas=max(0, _int(ann.get(A_MIN_REPLICAS), 0)),
        max_replicas=max(0, _int(ann.get(A_MAX_REPLICAS), 1 << 30)),
        replicas=_int((obj.get("spec") or {}).get("replicas"), 1),
    )


class AllocationChain:
    """Runs another controller's cycle, then the allocation's; returns the other's report (for ``run_loop``)."""

    def __init__(self, base: Any, allocation: AllocationController, settings: Any) -> None:
        self.base = base
        self.allocation = allocation
        self.settings = settings
        self.last: AllocationReport | None = None

    def cycle(self) -> Any:
        from qosched.extender.controller.loop import CycleReport

        report = self.base.cycle() if self.base is not None else CycleReport(skipped="QoE controller off")
        self.last = self.allocation.cycle()
        if self.last.skipped:
            log.debug("allocation: %s", self.last.skipped)
        else:
            log.info(
                "allocation: window %s, loaded %s, scale %s, writes %s, errors %s",
                self.last.window,
                {k: len(v) for k, v in self.last.loaded.items()},
                self.last.scale,
                self.last.writes,
                self.last.errors,
            )
        return report


def iter_loaded(doc: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """``(node, service/variant)`` of every loaded slot of an allocation document."""
    for node, slots in (doc.get("nodes") or {}).items():
        for key, value in slots.items():
            if isinstance(value, Mapping) and value.get("integral"):
                yield node, key
