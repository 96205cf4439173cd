"""``qosched controller``: run the QoE controller (read Prometheus, move CPU/GPU shares).

See ``docs/controller.md`` for the law, RBAC and a deployment example. Exit codes: 0 normal
stop (SIGTERM/SIGINT, or after ``--once``), 1 a ``--once`` cycle that could not reach the API
server, 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import yaml

log = logging.getLogger(__name__)

UNIT_TO_MS = {"seconds": 1000.0, "milliseconds": 1.0}


def _api_client(kubeconfig: str | None, context: str | None) -> Any:
    """The extender's client loader (``watch.api_client_from``); a bad config is a usage error."""
    from qosched.extender.kube.watch import api_client_from
    from qosched.extender.server.settings import ConfigError

    try:
        return api_client_from({"KUBECONFIG": kubeconfig}, context=context)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _classes(path: str | None) -> Any:
    from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig

    if path is None:
        return DEFAULT_CLASS_CONFIG
    try:
        data = yaml.safe_load(Path(path).read_text())
        return ClassConfig.from_mapping(data or {})
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise click.UsageError(f"--classes {path}: {exc}") from None


def _fail_if_unreachable(report: Any) -> None:
    """``--once``: a cycle that could not list nodes and pods (API server unreachable, refused)
    exits 1, so a script or a Job sees it (Prometheus down is a normal skipped cycle: exit 0)."""
    if (report.skipped or "").startswith("kubernetes:"):
        click.echo(f"qosched controller: the cycle could not read the cluster: {report.skipped}", err=True)
        sys.exit(1)


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "skipped": report.skipped,
        "dry_run": report.dry_run,
        "pools": [
            {"pool": p.label, "capacity": p.capacity, "pods": [q.key for q in p.pods]} for p in report.pools
        ],
        "changes": [
            {
                "pod": c.pod.key,
                "pool": c.pool,
                "resource": c.pod.resource,
                "old": c.old_share,
                "new": c.new_share,
                "observed_ms": c.observed_ms,
                "slo_ms": c.pod.slo_ms,
                "action": c.action,
                "applied": c.applied,
                "error": c.error,
            }
            for c in report.changes
        ],
    }


def _online_settings(opts: dict[str, Any]) -> Any:
    """The learner's settings from the ``--online*`` flags (None without ``--online``); usage errors."""
    if not opts["online"]:
        if not opts["qoe"]:
            raise click.UsageError("--no-qoe needs --online (nothing would run)")
        return None
    from qosched.extender.controller.online import OnlineSettings

    routes = {}
    for item in opts["online_routes"]:
        service, sep, route = item.partition("=")
        if not sep or not service.strip() or not route.strip():
            raise click.UsageError(f"--online-route {item!r}: expected SERVICE=NAMESPACE/NAME")
        routes[service.strip()] = route.strip()
    try:
        return OnlineSettings(
            namespace=opts["online_namespace"],
            state_configmap=opts["online_state_configmap"],
            hints_configmap=opts["hints_configmap"],
            routes=routes,
            pod_namespace=opts["namespace"],
            dry_run=opts["dry_run"],
            explore_share=opts["online_explore_share"],
        )
    except ValueError as exc:
        raise click.UsageError(f"--online-explore-share: {exc}") from None


def _online_controller(api: Any, core: Any, reader: Any, settings: Any, may_act: Any) -> Any:
    from kubernetes import client as k8s

    from qosched.extender.cli.whatif import load_lookup
    from qosched.extender.controller.online import OnlineController

    lookup, _ = load_lookup(None)  # the bundled profiles, as the allocation's
    return OnlineController(core, k8s.CustomObjectsApi(api), reader, settings, lookup, may_act=may_act)


def _allocation(opts: dict[str, Any], api: Any, core: Any, reader: Any, may_act: Any) -> Any:
    """INFIDA's controller from the ``--allocation*`` flags (None without ``--allocation``)."""
    if not opts["allocation"]:
        return None
    from kubernetes import client as k8s

    from qosched.extender.cli.whatif import load_lookup
    from qosched.extender.controller.allocation import AllocationController, AllocationSettings

    try:
        settings = AllocationSettings(
            namespace=opts["online_namespace"],
            configmap=opts["allocation_configmap"],
            hints_configmap=opts["hints_configmap"],
            window_s=opts["allocation_window_s"],
            horizon_windows=opts["allocation_horizon_windows"],
            max_requests_per_window=opts["allocation_max_requests"],
            scale_deployments=opts["allocation_scale"],
            dry_run=opts["dry_run"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    lookup, device_memory = load_lookup(None)
    apps = k8s.AppsV1Api(api) if settings.scale_deployments else None
    return AllocationController(core, apps, reader, settings, lookup, device_memory, may_act=may_act)


def _metrics(opts: dict[str, Any], law: Any) -> tuple[Any, Any]:
    """``on_report`` and a stopper for ``--metrics-port`` (no-ops when it is 0); a busy port is a usage error."""
    if not opts["metrics_port"]:
        return None, lambda: None
    from prometheus_client import CollectorRegistry

    from qosched.extender.controller.metrics import ControllerMetrics, serve

    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry, law)
    try:
        stop = serve(registry, opts["metrics_port"], opts["metrics_address"])
    except OSError as exc:
        raise click.UsageError(f"--metrics-port {opts['metrics_port']}: {exc}") from None
    log.info("controller: metrics on %s:%d/metrics", opts["metrics_address"], opts["metrics_port"])
    return metrics.observe, stop


@click.command("controller")
@click.option(
    "--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Default: in-cluster config."
)
@click.option("--context", default=None, help="kubeconfig context (default: the current one).")
@click.option(
    "--prometheus-url", envvar="QOSCHED_PROMETHEUS_URL", required=True, help="e.g. http://prometheus:9090"
)
@click.option(
    "--interval-s",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Time between cycles.",
)
@click.option(
    "--settle-s",
    default=None,
    type=click.FloatRange(min=0),
    help="Hold a pod this long after a change [default: --interval-s].",
)
@click.option("--dry-run", is_flag=True, help="Plan and log changes, write nothing.")
@click.option("--once", is_flag=True, help="Run one cycle, print it as JSON, exit (no leader election).")
@click.option("--namespace", default=None, help="Only control pods of this namespace.")
@click.option(
    "--metric", default=None, help="Latency histogram name [default: inference_request_duration_seconds]."
)
@click.option("--window", default="1m", show_default=True, help="PromQL rate() window.")
@click.option(
    "--query", "quantile_query", default=None, help="Percentile query template ($metric, $window, $quantile)."
)
@click.option("--mean-query", default=None, help="Mean-latency query template ($metric, $window).")
@click.option("--rate-query", default=None, help="Request-rate query template ($metric, $window).")
@click.option("--latency-unit", type=click.Choice(sorted(UNIT_TO_MS)), default="seconds", show_default=True)
@click.option("--pod-label", default="pod", show_default=True)
@click.option("--namespace-label", default="namespace", show_default=True)
@click.option("--prometheus-timeout-s", default=5.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option(
    "--classes", "classes_file", type=click.Path(exists=True, dir_okay=False), help="Service classes YAML."
)
@click.option(
    "--rate-source",
    type=click.Choice(["measured", "annotation", "none"]),
    default="measured",
    show_default=True,
)
@click.option("--setpoint-frac", default=0.9, show_default=True, type=float)
@click.option("--deadband-frac", default=0.05, show_default=True, type=float)
@click.option("--damping", default=0.5, show_default=True, type=float)
@click.option("--exponent", default=0.5, show_default=True, type=float)
@click.option("--max-step-frac", default=0.25, show_default=True, type=float)
@click.option("--slack", type=click.Choice(["keep", "proportional"]), default="keep", show_default=True)
@click.option("--min-cpu-milli", default=50, show_default=True, type=int)
@click.option("--max-cpu-milli", default=0, show_default=True, type=int, help="0: the pool's capacity.")
@click.option("--min-gpu-milli", default=50, show_default=True, type=int)
@click.option("--max-gpu-milli", default=1000, show_default=True, type=int)
@click.option("--cpu-pool-frac", default=1.0, show_default=True, type=float)
@click.option("--min-change-frac", default=0.02, show_default=True, type=float)
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True)
@click.option("--lease-name", default="qosched-controller", show_default=True)
@click.option("--lease-namespace", default="qosched-system", show_default=True)
@click.option(
    "--identity", default=None, help="holderIdentity [default: $POD_NAME or hostname, plus a random suffix]."
)
@click.option("--lease-duration-s", default=15.0, show_default=True, type=float)
@click.option("--renew-deadline-s", default=10.0, show_default=True, type=float)
@click.option("--retry-period-s", default=2.0, show_default=True, type=float)
@click.option("--qoe/--no-qoe", default=True, show_default=True, help="Run the QoE share controller.")
@click.option(
    "--online/--no-online",
    default=False,
    show_default=True,
    help="Run the online tier/variant learner (docs/online-learning.md) in the same loop.",
)
@click.option(
    "--online-route",
    "online_routes",
    multiple=True,
    metavar="SERVICE=NAMESPACE/NAME",
    help="HTTPRoute whose backend weights the learner sets for SERVICE (overrides qosched.io/route).",
)
@click.option(
    "--online-namespace", default="qosched-system", show_default=True, help="Namespace of its ConfigMaps."
)
@click.option("--online-state-configmap", default="qosched-online-state", show_default=True)
@click.option("--hints-configmap", default="qosched-placement-hints", show_default=True)
@click.option(
    "--allocation/--no-allocation",
    default=False,
    show_default=True,
    help="Run INFIDA's model allocation (docs/infida.md) in the same loop.",
)
@click.option("--allocation-window-s", default=600.0, show_default=True, type=click.FloatRange(min=1.0))
@click.option("--allocation-configmap", default="qosched-allocation", show_default=True)
@click.option(
    "--allocation-horizon-windows",
    default=1008,
    show_default=True,
    type=click.IntRange(min=1),
    help="T of INFIDA's step size (the regret theorem's horizon).",
)
@click.option(
    "--allocation-max-requests",
    default=1e5,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="R: most requests of one service in one window (INFIDA's gradient bound).",
)
@click.option(
    "--allocation-scale/--no-allocation-scale",
    default=False,
    show_default=True,
    help="Scale Deployments labelled qosched.io/allocation to the integral allocation.",
)
@click.option(
    "--metrics-port",
    default=0,
    show_default=True,
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on this port (0: off).",
)
@click.option("--metrics-address", default="0.0.0.0", show_default=True, help="Address for --metrics-port.")
@click.option(
    "--online-explore-share",
    default=0.05,
    show_default=True,
    type=float,
    help="Share of a service's traffic the learner may send to an exploratory action.",
)
def controller(**opts: Any) -> None:
    """Move CPU / GPU shares between co-located services toward their latency targets (DQoES)."""
    from kubernetes import client as k8s

    from qosched.extender.controller.loop import ControllerSettings, QoEController, run_loop
    from qosched.extender.controller.prom import PromQueries, PromReader
    from qosched.extender.kube.leader import LeaderElector, LeaseSettings, default_identity
    from qosched.policies.control.law import ControlSettings

    try:
        query_kw = {
            k: opts[k]
            for k in ("metric", "quantile_query", "mean_query", "rate_query")
            if opts[k] is not None
        }
        queries = PromQueries(
            window=opts["window"],
            pod_label=opts["pod_label"],
            namespace_label=opts["namespace_label"],
            unit_to_ms=UNIT_TO_MS[opts["latency_unit"]],
            **query_kw,
        )
        law = ControlSettings(
            setpoint_frac=opts["setpoint_frac"],
            deadband_frac=opts["deadband_frac"],
            damping=opts["damping"],
            exponent=opts["exponent"],
            max_step_frac=opts["max_step_frac"],
            slack=opts["slack"],
        )
        settings = ControllerSettings(
            interval_s=opts["interval_s"],
            settle_s=opts["settle_s"] if opts["settle_s"] is not None else opts["interval_s"],
            namespace=opts["namespace"],
            dry_run=opts["dry_run"],
            min_cpu_milli=opts["min_cpu_milli"],
            max_cpu_milli=opts["max_cpu_milli"],
            min_gpu_milli=opts["min_gpu_milli"],
            max_gpu_milli=opts["max_gpu_milli"],
            cpu_pool_frac=opts["cpu_pool_frac"],
            min_change_frac=opts["min_change_frac"],
            rate_source=opts["rate_source"],
            control=law,
            classes=_classes(opts["classes_file"]),
        )
        lease = LeaseSettings(
            namespace=opts["lease_namespace"],
            name=opts["lease_name"],
            lease_duration_s=opts["lease_duration_s"],
            renew_deadline_s=opts["renew_deadline_s"],
            retry_period_s=opts["retry_period_s"],
        )
        reader = PromReader(opts["prometheus_url"], queries, timeout_s=opts["prometheus_timeout_s"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    online_settings = _online_settings(opts)
    api = _api_client(opts["kubeconfig"], opts["context"])
    core = k8s.CoreV1Api(api)
    try:
        if opts["once"]:
            allocation = _allocation(opts, api, core, reader, lambda: True)
            if allocation is not None:
                click.echo(json.dumps(allocation.cycle().to_json(), indent=2))
                return
            report = QoEController(core, reader, settings).cycle() if opts["qoe"] else None
            if online_settings is None:
                assert report is not None
                click.echo(json.dumps(_report_json(report), indent=2))
                _fail_if_unreachable(report)
                return
            online = _online_controller(api, core, reader, online_settings, lambda: True)
            both = {
                "qoe": None if report is None else _report_json(report),
                "online": online.cycle().to_json(),
            }
            click.echo(json.dumps(both, indent=2))
            return
        elector = None
        if opts["leader_elect"]:
            elector = LeaderElector(k8s.CoordinationV1Api(api), opts["identity"] or default_identity(), lease)
        may_act = (lambda: elector.is_leader) if elector else lambda: True
        qoe: Any = QoEController(core, reader, settings, may_act=may_act)
        if online_settings is not None:
            from qosched.extender.controller.online import CombinedController

            online = _online_controller(api, core, reader, online_settings, may_act)
            qoe = CombinedController(qoe if opts["qoe"] else None, online, settings)
        allocation = _allocation(opts, api, core, reader, may_act)
        if allocation is not None:
            from qosched.extender.controller.allocation import AllocationChain

            qoe = AllocationChain(qoe, allocation, settings)
        on_report, stop_metrics = _metrics(opts, law)  # a busy port fails before signals are taken
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("controller: signal %d, stopping", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info(
            "controller: prometheus %s, every %gs%s, law %s",
            reader.url,
            settings.interval_s,
            " (dry run)" if settings.dry_run else "",
            asdict(law),
        )
        try:
            run_loop(qoe, stop, elector=elector, retry_period_s=lease.retry_period_s, on_report=on_report)
        finally:
            stop_metrics()
    finally:
        reader.close()
        api.close()
    sys.exit(0)
