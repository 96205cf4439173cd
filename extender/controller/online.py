"""The online learner in the controller process: Prometheus → LinUCB → hints, routes, state.

Every cycle (only the leader writes; see :mod:`qosched.extender.kube.leader`):

1. **Read the cluster** (official ``kubernetes`` client, LIST nodes and pods). A *serving pod* is
   bound, ``Running``, names a service (``qosched.io/service``, else ``app.kubernetes.io/name``),
   has ``qosched.io/slo-ms``, and serves one variant (``qosched.io/variant`` written at bind, else
   its only model) on a node with a ``qosched.io/tier``. Its (tier, variant) is an *action* of the
   service. The transfer time of an action is :func:`~qosched.policies.requests.scenario.
   transfer_ms` over its nodes' ``qosched.io/rtt-ms`` / ``qosched.io/bandwidth-mbps`` with the
   service's ``qosched.io/input-kb`` (mean over the action's nodes).
2. **Read latencies** with the QoE controller's reader (:class:`~qosched.extender.controller.prom.
   PromReader`): mean latency and request rate per pod, aggregated per (service, tier, variant)
   weighted by rate. A failed query skips the cycle (nothing is learnt from half a picture).
3. **Learn and decide**: :func:`qosched.policies.online.live.live_step`.
4. **Act** (unless ``dry_run``): persist the learner (ConfigMap ``state_configmap``, key
   ``state.json``), write the placement hints (ConfigMap ``hints_configmap``, key ``hints.json``,
   read by the extender), and set the ``backendRefs`` weights of each service's HTTPRoute
   (Gateway API ``gateway.networking.k8s.io/v1``, through the custom objects API): a backend named
   ``<service>-<tier>-<variant>`` (variant with ``_`` as ``-``) is the backend of that action and
   gets the action's weight in percent (0 when not chosen); other backends are left alone. The
   route comes from ``--online-route SERVICE=NAMESPACE/NAME`` or the pods' ``qosched.io/route``.

State: loaded once from the ConfigMap at the first cycle; a missing ConfigMap starts fresh; a bad
or old document is logged (with the reason) and the learner starts fresh (the next write replaces
it). Writes use the read ``resourceVersion``: a conflict is logged and retried next cycle.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from qosched.extender.controller.configmaps import ConfigMapStore
from qosched.extender.controller.listing import list_nodes_and_pods
from qosched.extender.controller.prom import PromSnapshot
from qosched.extender.kube.objects import (
    A_VARIANT,
    annotations_of,
    node_view,
    pod_demand,
    pod_input_kb,
    pod_node,
    pod_route,
    pod_service,
)
from qosched.extender.kube.request_scenario import node_client_link, service_def
from qosched.policies.online.linucb import LearnerStateError, LinUCB
from qosched.policies.online.live import (
    ActionObservation,
    LiveAction,
    LiveDecision,
    live_step,
    percent_weights,
)
from qosched.policies.online.policy import OnlineRouting
from qosched.policies.requests.hints import CONFIGMAP_KEY
from qosched.policies.requests.scenario import ServiceDef, transfer_ms
from qosched.policies.state import ServiceLookup
from qosched.policies.types import DemandError

log = logging.getLogger(__name__)

ROUTE_GROUP = "gateway.networking.k8s.io"
ROUTE_VERSION = "v1"
ROUTE_PLURAL = "httproutes"
STATE_KEY = "state.json"


@dataclass(frozen=True, slots=True)
class OnlineSettings:
    """Where the learner keeps its state and hints, which routes it may set, and how much it explores."""

    namespace: str = "qosched-system"
    state_configmap: str = "qosched-online-state"
    hints_configmap: str = "qosched-placement-hints"
    routes: Mapping[str, str] = field(default_factory=dict)
    pod_namespace: str | None = None
    dry_run: bool = False
    explore_share: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.explore_share < 0.5:
            raise ValueError(f"explore share must be in [0, 0.5), got {self.explore_share!r}")


@dataclass(frozen=True, slots=True)
class ServingPod:
    namespace: str
    name: str
    service: str
    tier: str
    variant: str
    node: str
    accelerator: str | None


@dataclass
class OnlineReport:
    """One cycle: what was observed, decided and written (``skipped`` says why nothing was)."""

    skipped: str | None = None
    dry_run: bool = False
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "dry_run": self.dry_run,
            "weights": self.weights,
            "updates": self.updates,
            "routes": self.routes,
            "writes": self.writes,
            "errors": self.errors,
        }


def backend_name(service: str, tier: str, variant: str) -> str:
    """The HTTPRoute backend of an action: ``<service>-<tier>-<variant>`` with ``_`` → ``-``."""
    return f"{service}-{tier}-{variant.replace('_', '-')}"


def _accuracy(
    lookup: ServiceLookup, accelerators: Iterable[str], accelerator: str | None, variant: str
) -> float | None:
    """As ``VariantCatalog.accuracy``: this accelerator's profile, else the others'."""
    if accelerator is not None:
        p = lookup(accelerator, variant)
        if p is not None and p.accuracy is not None:
            return p.accuracy
    known = [
        p.accuracy for a in accelerators if (p := lookup(a, variant)) is not None and p.accuracy is not None
    ]
    return max(known) if known else None


@dataclass
class _Discovery:
    services: dict[str, ServiceDef]
    actions: dict[str, list[LiveAction]]
    pods: list[ServingPod]
    routes: dict[str, tuple[str, str]]


class OnlineController:
    """One learner, its state and its writers (see the module docstring)."""

    def __init__(
        self,
        core: CoreV1Api,
        custom: CustomObjectsApi,
        reader: Any,
        settings: OnlineSettings,
        lookup: ServiceLookup,
        *,
        may_act: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.custom = custom
        self.reader = reader
        self.settings = settings
        self.lookup = lookup
        self.may_act = may_act
        self.clock = clock
        self.policy: OnlineRouting | None = None
        self.previous: dict[tuple[str, str], Any] = {}
        self.configmaps = ConfigMapStore(core, settings.namespace, log)

    # ------------------------------------------------------------------ state
    def load_state(self) -> OnlineRouting:
        """The learner from its ConfigMap; fresh when missing or unusable (logged with the reason)."""
        data, _ = self.configmaps.read(self.settings.state_configmap)
        learner = LinUCB()
        if data is not None and STATE_KEY in data:
            try:
                learner = LinUCB.from_json(json.loads(data[STATE_KEY]))
                log.info(
                    "online learner: state loaded from %s/%s",
                    self.settings.namespace,
                    self.settings.state_configmap,
                )
            except (ValueError, LearnerStateError) as exc:
                log.error(
                    "online learner: %s/%s unusable (%s); starting fresh",
                    self.settings.namespace,
                    self.settings.state_configmap,
                    exc,
                )
                learner = LinUCB()
        return OnlineRouting(learner=learner)

    # ------------------------------------------------------------------ read
    def discover(self) -> _Discovery:
        """LIST nodes and pods (raw JSON, as the QoE controller reads them) and group the serving pods."""
        nodes, pods = list_nodes_and_pods(self.core, self.settings.pod_namespace)
        node_info: dict[str, tuple[Any, ...]] = {}
        for obj in nodes:
            try:
                view = node_view(obj)
                link = node_client_link(obj)
            except ValueError as exc:
                log.warning("online learner: %s", exc)
                continue
            node_info[view.name] = (view.tier, view.accelerator, link.rtt_ms, link.bandwidth_mbps)
        return self._services(pods, node_info)

    def _services(
        self, pods: Iterable[Mapping[str, Any]], node_info: Mapping[str, tuple[Any, ...]]
    ) -> _Discovery:
        services: dict[str, ServiceDef] = {}
        serving: list[ServingPod] = []
        routes: dict[str, tuple[str, str]] = {}
        links: dict[tuple[str, str, str], list[tuple[float, float, str | None]]] = {}
        for pod in pods:
            found = self._serving(pod, node_info)
            if found is None:
                continue
            sp, svc, route = found
            services.setdefault(sp.service, svc)
            serving.append(sp)
            if route:
                routes.setdefault(sp.service, route)
            tier, accel, rtt, bw = node_info[sp.node]
            links.setdefault((sp.service, sp.tier, sp.variant), []).append((rtt, bw, accel))
        for service, spec in self.settings.routes.items():
            routes[service] = _split_route(spec, "default")
        accelerators = {info[1] for info in node_info.values() if info[1]}
        actions: dict[str, list[LiveAction]] = {}
        for (service, tier, variant), items in sorted(links.items()):
            svc = services[service]
            accel = items[0][2]
            acc = _accuracy(self.lookup, accelerators, accel, variant)
            if svc.min_accuracy is not None and (acc is None or acc < svc.min_accuracy):
                continue
            tr = sum(transfer_ms(r, svc.input_kb, b) for r, b, _ in items) / len(items)
            p = self.lookup(accel, variant) if accel else None
            expected = p.service_ms if p is not None else svc.slo_ms / 2
            rtt = sum(r for r, _, _ in items) / len(items)
            bw = sum(b for _, b, _ in items) / len(items)
            actions.setdefault(service, []).append(LiveAction(tier, variant, acc, tr, expected, rtt, bw))
        return _Discovery(services, actions, serving, routes)

    def _serving(
        self, pod: Mapping[str, Any], node_info: Mapping[str, tuple[Any, ...]]
    ) -> tuple[ServingPod, ServiceDef, tuple[str, str] | None] | None:
        service = pod_service(pod)
        node = pod_node(pod)
        phase = (pod.get("status") or {}).get("phase")
        if service is None or node is None or phase != "Running" or node not in node_info:
            return None
        tier, accel = node_info[node][0], node_info[node][1]
        if tier is None:
            return None
        try:
            demand = pod_demand(pod)
            kb = pod_input_kb(pod)
        except DemandError as exc:
            log.warning(
                "online learner: pod %s/%s: %s", demand_ns(pod), (pod.get("metadata") or {}).get("name"), exc
            )
            return None
        variant = str(annotations_of(pod).get(A_VARIANT) or "").strip() or (
            demand.variants[0] if len(demand.variants) == 1 else ""
        )
        if demand.slo_ms is None or not variant:
            return None
        svc = service_def(service, demand, demand.slo_ms, kb)
        route_raw = pod_route(pod)
        route = _split_route(route_raw, demand.namespace) if route_raw else None
        return ServingPod(demand.namespace, demand.name, service, tier, variant, node, accel), svc, route

    def observe(self, found: _Discovery, snapshot: PromSnapshot) -> list[ActionObservation]:
        """Rate-weighted mean latency per (service, tier, variant) from the per-pod snapshot."""
        sums: dict[tuple[str, str, str], list[float]] = {}
        for sp in found.pods:
            lat = snapshot.latency_of(sp.namespace, sp.name, None)
            rate = snapshot.rate_of(sp.namespace, sp.name)
            if lat is None or rate is None or rate <= 0 or not math.isfinite(lat):
                continue
            p = self.lookup(sp.accelerator, sp.variant) if sp.accelerator else None
            acc = sums.setdefault((sp.service, sp.tier, sp.variant), [0.0, 0.0, 0.0, 0.0])
            acc[0] += rate
            acc[1] += rate * lat
            acc[2] += rate * (p.service_ms if p is not None else 0.0) / 1000.0
            acc[3] += 1
        return [
            ActionObservation(s, t, v, r, weighted / r, min(busy / n, 1.5))
            for (s, t, v), (r, weighted, busy, n) in sorted(sums.items())
        ]

    # ------------------------------------------------------------------ act
    def cycle(self) -> OnlineReport:
        report = OnlineReport(dry_run=self.settings.dry_run)
        try:
            if self.policy is None:
                self.policy = self.load_state()
            found = self.discover()
        except ApiException as exc:
            report.skipped = f"API server: {exc.status} {exc.reason}"
            return report
        if not found.actions:
            report.skipped = "no serving pod of a routed service (qosched.io/service, tier, variant)"
            return report
        snapshot = self.reader.read([None], with_rate=True)
        if snapshot is None:
            report.skipped = "prometheus query failed"
            return report
        decision = live_step(
            self.policy,
            found.services,
            found.actions,
            self.observe(found, snapshot),
            self.previous,
            self.clock(),
            self.settings.explore_share,
        )
        self.previous = decision.contexts
        report.weights = decision.weights
        report.updates = list(decision.updates)
        report.routes = self._plan_routes(found, decision, report)
        if self.settings.dry_run or not self.may_act():
            return report
        self._apply(decision, report)
        return report

    def _apply(self, decision: LiveDecision, report: OnlineReport) -> None:
        assert self.policy is not None
        s = self.settings
        for name, key, text in (
            (s.state_configmap, STATE_KEY, json.dumps(self.policy.learner.to_json())),
            (s.hints_configmap, CONFIGMAP_KEY, json.dumps(decision.hints.to_json())),
        ):
            try:
                self.configmaps.write(name, key, text)
                report.writes.append(f"configmap {s.namespace}/{name}")
            except ApiException as exc:
                report.errors.append(f"configmap {s.namespace}/{name}: {exc.status} {exc.reason}")
        for plan in report.routes:
            if not plan.get("changed"):
                continue
            try:
                self.custom.replace_namespaced_custom_object(
                    ROUTE_GROUP,
                    ROUTE_VERSION,
                    plan["namespace"],
                    ROUTE_PLURAL,
                    plan["name"],
                    plan.pop("body"),
                )
                plan["applied"] = True
                report.writes.append(f"httproute {plan['namespace']}/{plan['name']}")
            except ApiException as exc:
                report.errors.append(
                    f"httproute {plan['namespace']}/{plan['name']}: {exc.status} {exc.reason}"
                )
        for plan in report.routes:
            plan.pop("body", None)

    def _plan_routes(
        self, found: _Discovery, decision: LiveDecision, report: OnlineReport
    ) -> list[dict[str, Any]]:
        plans = []
        for service, (namespace, name) in sorted(found.routes.items()):
            weights = decision.weights.get(service)
            if not weights:
                continue
            try:
                route: Any = self.custom.get_namespaced_custom_object(
                    ROUTE_GROUP, ROUTE_VERSION, namespace, ROUTE_PLURAL, name
                )
            except ApiException as exc:
                report.errors.append(f"httproute {namespace}/{name}: {exc.status} {exc.reason}")
                continue
            pct = percent_weights(weights)
            names = {
                backend_name(service, a.tier, a.variant): pct.get(a.key, 0) for a in found.actions[service]
            }
            body, changed, matched = route_with_weights(route, names)
            plans.append(
                {
                    "service": service,
                    "namespace": namespace,
                    "name": name,
                    "weights": {k: v for k, v in names.items() if k in matched},
                    "changed": changed,
                    "applied": False,
                    "body": body,
                }
            )
        return plans


def route_with_weights(
    route: Mapping[str, Any], weights: Mapping[str, int]
) -> tuple[dict[str, Any], bool, set[str]]:
    """The HTTPRoute with the weights of the named backends set; (new object, changed?, matched names)."""
    body = json.loads(json.dumps(route))
    changed = False
    matched: set[str] = set()
    for rule in (body.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            name = ref.get("name")
            if name in weights:
                matched.add(name)
                if ref.get("weight", 1) != weights[name]:
                    ref["weight"] = weights[name]
                    changed = True
    return body, changed, matched


def _split_route(spec: str, default_namespace: str) -> tuple[str, str]:
    ns, _, name = spec.rpartition("/")
    return (ns or default_namespace), name


def demand_ns(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("namespace") or "default")


class CombinedController:
    """The QoE controller and the learner in one leader-elected loop (``run_loop`` drives it).

    ``cycle()`` runs the QoE cycle (when there is one) and then the learner's, logs the learner's
    report, and returns the QoE report (what ``run_loop`` logs).
    """

    def __init__(self, qoe: Any | None, online: OnlineController, settings: Any) -> None:
        self.qoe = qoe
        self.online = online
        self.settings = settings
        self.last_online: OnlineReport | None = None

    def cycle(self) -> Any:
        from qosched.extender.controller.loop import CycleReport

        report = (
            self.qoe.cycle() if self.qoe is not None else CycleReport(skipped="QoE controller off (--no-qoe)")
        )
        online = self.online.cycle()
        self.last_online = online
        if online.skipped:
            log.info("online learner: cycle skipped: %s", online.skipped)
        else:
            log.info(
                "online learner: %d services, %d updates, weights %s%s; writes %s; errors %s",
                len(online.weights),
                len(online.updates),
                online.weights,
                " (dry run)" if online.dry_run else "",
                online.writes,
                online.errors,
            )
        return report
