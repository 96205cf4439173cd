"""``qosched whatif``: replay a cluster and a workload through placement policies, offline.

Two inputs (contract §3):

* ``--cluster FILE`` — a snapshot (YAML/JSON ``List`` or multi-document YAML of Nodes and Pods).
  Every pod is replayed, bound or not (the question is "where would this policy have put it"),
  in file order; ``qosched.io/arrival-s`` and ``qosched.io/duration-s`` give its arrival and
  running time (absent: it arrives at 0 and stays).
* ``--nodes CSV --pods CSV --format openb`` — the Alibaba GPU trace v2023; ``--inflate X`` grows
  the workload to X times the cluster's GPU capacity as the FGD paper does (pods then never
  depart), otherwise the trace's own creation and deletion times are used. ``--inflate X
  --departures`` is the contention mode: the same pods arrive ``--interarrival-s`` apart
  (default 0.05 s) and each leaves after its trace lifetime; QoS is measured at ``--horizon-s``
  (default 3,600 s), so availability, fairness and penalties of queue/preemption policies
  (``priority``, ``qos-driven``, preemptive ``qosched``) can be compared.

For each policy (``--policies``, default every policy of :mod:`qosched.policies.registry`) it
writes ``DIR/<policy>.csv`` (one row per pod), and for all of them ``DIR/summary.json``, PNG
plots and a self-contained ``DIR/report.html`` (:mod:`qosched.extender.cli.whatif_report`), then
prints a summary table. Each replay's wall time is measured here (the simulator core never reads
a clock) and reported as ``runtime_s``. Progress goes to stderr unless ``--quiet``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from qosched.extender.kube.class_mapping import class_mapper
from qosched.extender.kube.objects import (
    A_ARRIVAL_S,
    A_DURATION_S,
    annotations_of,
    node_view,
    pod_demand,
    pod_key,
)

__all__ = ["run_whatif", "whatif", "workload_from_snapshot"]


def _time_annotation(
    path: Path, pod: Mapping[str, Any], key: str, *, default: float, positive: bool
) -> float:
    raw = annotations_of(pod).get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        rule = "> 0" if positive else ">= 0"
        raise click.ClickException(
            f"{path}: pod {pod_key(pod)}: {key}: {raw!r} is not a number {rule} (seconds)"
        )
    return value


def read_snapshot(path: str | Path) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Nodes and pods of a snapshot file; a missing or bad one is a one-line ``click.ClickException``."""
    from qosched.extender.kube.cache import load_snapshot

    try:
        return load_snapshot(path)
    except ValueError as err:
        raise click.ClickException(str(err)) from None


def workload_from_snapshot(path: str | Path, classes: Any) -> Any:
    """Parse a snapshot file into a :class:`~qosched.policies.simulator.scenarios.Workload`.

    Errors name the file and the pod or node (``click.ClickException``).
    """
    from qosched.policies.fairness.classes import UnknownClassError
    from qosched.policies.simulator.scenarios import Workload, WorkloadError
    from qosched.policies.types import DemandError

    file = Path(path)
    nodes, pods = read_snapshot(file)
    try:
        views = [node_view(n) for n in nodes]
    except ValueError as err:
        raise click.ClickException(f"{file}: {err}") from None
    class_of = class_mapper(classes)  # the one adapter: the same classes as the extender
    demands, arrivals, durations = [], [], []
    for obj in pods:
        try:
            demands.append(pod_demand(obj, class_of))
        except (DemandError, UnknownClassError) as err:
            raise click.ClickException(f"{file}: pod {pod_key(obj)}: {err}") from None
        arrivals.append(_time_annotation(file, obj, A_ARRIVAL_S, default=0.0, positive=False))
        durations.append(_time_annotation(file, obj, A_DURATION_S, default=math.inf, positive=True))
    from qosched.extender.cli.whatif_run import snapshot_warning

    ignored = snapshot_warning(file)  # e.g. a Deployment: said (run_whatif warns), not silently dropped
    description = {
        "source": "snapshot",
        "file": file.name,
        **({"ignored": ignored} if ignored else {}),
        "nodes": len(views),
        "pods": len(demands),
        "inference_pods": sum(d.is_inference for d in demands),
        "pods_with_duration": int(sum(math.isfinite(d) for d in durations)),
        "rule": "every pod replayed in file order at qosched.io/arrival-s (default 0), "
        "leaving after qosched.io/duration-s (default: stays)",
    }
    try:
        return Workload.build(views, demands, arrivals, durations, description)
    except WorkloadError as err:
        raise click.ClickException(f"{file}: {err}") from None


def _policy_list(text: str | None, known: Sequence[str]) -> list[str]:
    if text is None or not text.strip():
        return list(known)
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown polic{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; known: {', '.join(known)}",
            param_hint="--policies",
        )
    seen: list[str] = []
    for p in names:
        if p not in seen:
            seen.append(p)
    return seen


def run_whatif(workload: Any, policies: Sequence[str], out_dir: Path, **options: Any) -> dict[str, Any]:
    """Replay and write the outputs (:func:`qosched.extender.cli.whatif_run.run_whatif`: progress,
    warnings, stale outputs, Ctrl-C). A run cut short prints what finished and exits 130."""
    from qosched.extender.cli.whatif_run import RunInterrupted
    from qosched.extender.cli.whatif_run import run_whatif as run

    try:
        return run(workload, policies, out_dir, **options)
    except RunInterrupted as err:
        if err.summary["policies"]:
            _print_table(err.summary)
        click.echo(f"whatif: {err}", err=True)
        raise SystemExit(130) from None


def _print_table(summary: Mapping[str, Any]) -> None:
    """The terminal summary (:mod:`qosched.extender.cli.whatif_console`: fits 100 columns)."""
    from qosched.extender.cli.whatif_console import print_summary

    print_summary(summary)


@dataclass(frozen=True, slots=True)
class WhatifOptions:
    """The ``qosched whatif`` command line, as one value (the click options, same names)."""

    cluster_file: str | None
    nodes_csv: str | None
    pods_csv: str | None
    fmt: str
    policies_text: str | None
    out_dir: str
    seed: int
    inflate: float | None
    departures: bool
    interarrival_s: float | None
    quiet: bool
    profiles_dir: str | None
    classes_file: str | None
    max_pods: int | None
    horizon_s: float | None
    mix: str
    candidates: str
    rate_scale: float | None
    no_latency: bool
    policy_option: tuple[str, ...] = ()


def _positive(value: float | None, hint: str, *, zero_ok: bool = False) -> None:
    """A number option must be finite and > 0 (>= 0 with ``zero_ok``); None (absent) passes."""
    if value is None:
        return
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        rule = ">= 0" if zero_ok else "> 0"
        raise click.BadParameter(f"must be a number {rule}, got {value!r}", param_hint=hint)


def check_options(opts: WhatifOptions) -> None:
    """Reject contradicting or out-of-range options before anything is read (click errors)."""
    if opts.cluster_file and (opts.nodes_csv or opts.pods_csv):
        raise click.UsageError("give either --cluster or --nodes/--pods, not both")
    if not opts.cluster_file and not (opts.nodes_csv and opts.pods_csv):
        raise click.UsageError("give --cluster FILE, or --nodes CSV and --pods CSV")
    if opts.inflate is not None and opts.cluster_file:
        raise click.UsageError("--inflate applies to a trace (--nodes/--pods), not to --cluster")
    _positive(opts.inflate, "--inflate")
    if (opts.departures or opts.interarrival_s is not None) and opts.inflate is None:
        raise click.UsageError(
            "--departures and --interarrival-s apply with --inflate (the trace's own times already "
            "have arrivals and departures)"
        )
    _positive(opts.interarrival_s, "--interarrival-s")
    _positive(opts.horizon_s, "--horizon-s", zero_ok=True)


def policy_option_mapping(items: Sequence[str], policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--policy-option KEY=VALUE`` (repeatable) → ``{policy: {KEY: value}}`` for each of
    ``policies`` that declares KEY (values read as YAML scalars: ``0.3`` a number, ``pack`` a
    string). A malformed item, a KEY none of them declares or a value the policy's options refuse
    is a one-line ``click.BadParameter``.
    """
    import yaml

    from qosched.policies.registry import policy_options, policy_spec

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--policy-option")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        takers = [p for p in policies if policy_spec(p).takes(key)]
        if not takers:
            raise click.BadParameter(
                f"no policy of this run ({', '.join(policies)}) takes option {key!r}",
                param_hint="--policy-option",
            )
        for name in takers:
            out.setdefault(name, {})[key] = value
    for name, given in out.items():
        try:
            policy_options(name, given)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--policy-option") from None
    return out


def load_classes(classes_file: str | None) -> Any:
    """The service classes of ``--classes`` (default prod/batch/free); errors name the file."""
    import yaml

    from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig

    if not classes_file:
        return DEFAULT_CLASS_CONFIG
    try:
        return ClassConfig.from_mapping(yaml.safe_load(Path(classes_file).read_text()) or {})
    except (OSError, yaml.YAMLError, ValueError) as err:
        raise click.ClickException(f"{classes_file}: {err}") from None


def load_lookup(profiles_dir: str | None) -> tuple[Any, Any]:
    """``(lookup, device_memory)`` of the bundled profiles, with ``--profiles`` layered over them."""
    from qosched.policies.profile_lookup import lookup_from_profiles
    from qosched.profiles.schema import ProfileError
    from qosched.profiles.store import bundled_profiles, load_profile_dir, merge

    profiles = bundled_profiles()
    if profiles_dir:
        try:
            profiles = merge(profiles, load_profile_dir(profiles_dir))
        except ProfileError as err:
            raise click.ClickException(str(err)) from None
    return lookup_from_profiles(profiles)


def trace_workload(opts: WhatifOptions, classes: Any) -> Any:
    """The workload of ``--nodes/--pods`` (openb format), in the mode the options choose."""
    from qosched.extender.cli.trace_files import workload_from_trace_files
    from qosched.policies.traces import TraceFormatError

    assert opts.nodes_csv
    assert opts.pods_csv
    assert opts.fmt == "openb"
    try:
        return workload_from_trace_files(
            opts.nodes_csv,
            opts.pods_csv,
            inflate=opts.inflate,
            rng=np.random.default_rng(opts.seed),
            classes=classes,
            max_pods=opts.max_pods,
            departures=opts.departures,
            interarrival_s=opts.interarrival_s,
        )
    except TraceFormatError as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"{err.filename}: {err.strerror}") from None
    except ValueError as err:
        raise click.ClickException(str(err)) from None


def load_workload(opts: WhatifOptions, classes: Any) -> Any:
    """The workload to replay: a snapshot (``--cluster``) or a trace, cut and rate-scaled."""
    if opts.cluster_file:
        workload = workload_from_snapshot(opts.cluster_file, classes)
        if opts.max_pods is not None:
            workload = workload.head(opts.max_pods)
    else:
        workload = trace_workload(opts, classes)
    if opts.rate_scale is not None:
        _positive(opts.rate_scale, "--rate-scale", zero_ok=True)
        workload = workload.with_rate_scale(opts.rate_scale)
    return workload


def replay_policies(opts: WhatifOptions) -> None:
    """The placement what-if: replay the workload through each policy, write and print the results."""
    from qosched.policies.registry import policy_names
    from qosched.policies.simulator.scenarios import CONTENDED_HORIZON_S

    policies = _policy_list(opts.policies_text, policy_names())
    own_options = policy_option_mapping(opts.policy_option, policies)
    classes = load_classes(opts.classes_file)
    lookup, device_memory = load_lookup(opts.profiles_dir)
    workload = load_workload(opts, classes)
    horizon_s = opts.horizon_s
    if opts.departures and horizon_s is None:
        horizon_s = CONTENDED_HORIZON_S
    summary = run_whatif(
        workload,
        policies,
        Path(opts.out_dir),
        seed=opts.seed,
        lookup=lookup,
        device_memory=device_memory,
        classes=classes,
        mix=opts.mix,
        candidates=opts.candidates,
        simulate_latency=not opts.no_latency,
        horizon_s=horizon_s,
        quiet=opts.quiet,
        policy_options=own_options,
    )
    _print_table(summary)
    click.echo(
        f"wrote {Path(opts.out_dir) / 'summary.json'}, {len(policies)} CSV file(s), plots and report.html"
    )


class _WhatifCommand(click.Command):
    """``qosched whatif ...`` replays; ``qosched whatif sweep ...`` runs a study's grid
    (:mod:`qosched.extender.cli.whatif_sweep`), so ``qosched whatif --cluster FILE`` keeps its form."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        if args and args[0] == "sweep":
            from qosched.extender.cli.whatif_sweep import sweep

            return sweep.make_context(f"{info_name} sweep", args[1:], parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@click.command("whatif", cls=_WhatifCommand, epilog="Study grids: qosched whatif sweep --help.")
@click.option(
    "--cluster", "cluster_file", type=click.Path(dir_okay=False), help="Snapshot file (Nodes and Pods)."
)
@click.option("--nodes", "nodes_csv", type=click.Path(dir_okay=False), help="Trace node list (CSV).")
@click.option("--pods", "pods_csv", type=click.Path(dir_okay=False), help="Trace pod list (CSV).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["openb"]),
    default="openb",
    show_default=True,
    help="Format of --nodes/--pods: the Alibaba GPU trace v2023 columns.",
)
@click.option(
    "--policies",
    "policies_text",
    default=None,
    help="Comma-separated policy names (default: every policy of the registry).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw.")
@click.option(
    "--inflate",
    type=float,
    default=None,
    help="Grow the trace workload to X times the GPU capacity (FGD); pods then never depart.",
)
@click.option(
    "--departures",
    is_flag=True,
    help="With --inflate: each pod leaves after its trace lifetime (contention mode; QoS measured "
    "at --horizon-s, default 3600 s). Without it no pod leaves (FGD mode).",
)
@click.option(
    "--interarrival-s",
    type=float,
    default=None,
    help="With --inflate: seconds between arrivals (default 0.05 with --departures, else 1).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--profiles",
    "profiles_dir",
    type=click.Path(file_okay=False),
    help="Profile directory layered over the bundled profiles.",
)
@click.option(
    "--classes",
    "classes_file",
    type=click.Path(dir_okay=False),
    help="Service classes (YAML/JSON mapping, ClassConfig.from_mapping form); default prod/batch/free.",
)
@click.option("--max-pods", type=int, default=None, help="Replay only the first N pods of the trace.")
@click.option(
    "--horizon-s",
    type=float,
    default=None,
    help="End of the replay [s] (default: the last arrival + 1 s; 3600 s with --departures).",
)
@click.option(
    "--mix",
    type=click.Choice(["learned", "workload"]),
    default="learned",
    show_default=True,
    help="FGD's expected workload: learned from the pods seen, or the whole workload's mix.",
)
@click.option(
    "--candidates",
    type=click.Choice(["fit", "all"]),
    default="fit",
    show_default=True,
    help="Nodes offered to a policy: those whose free resources fit the pod (as kube-scheduler "
    "filters before an extender; same decisions, faster), or all.",
)
@click.option(
    "--rate-scale",
    type=float,
    default=None,
    help="Multiply every pod's qosched.io/rate-rps by X (load what-if).",
)
@click.option("--no-latency", is_flag=True, help="Skip the request-level latency simulation.")
@click.option(
    "--policy-option",
    "policy_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="A policy's own option, for every policy of the run that declares KEY (repeatable), e.g. "
    "gpu_consolidation=spread|pack-gpu|pack for qosched (docs/placement.md, 'Pack or spread').",
)
@click.option(
    "--requests",
    "requests_file",
    type=click.Path(dir_okay=False),
    help="Request-level what-if (docs/request-whatif.md): REQUESTS.csv with time_s,service[,input_kb]; "
    "--policies then names request policies (online, always-end, always-edge, always-cloud, best-static, greedy, ...).",
)
@click.option(
    "--network",
    "network_file",
    type=click.Path(dir_okay=False),
    help="With --requests: NETWORK.csv with time_s,tier,rtt_ms,bandwidth_mbps (piecewise constant per tier).",
)
@click.option(
    "--window-s",
    type=float,
    default=None,
    help="With --requests: allocation window of allocation policies [s].",
)
def whatif(
    cluster_file: str | None,
    nodes_csv: str | None,
    pods_csv: str | None,
    fmt: str,
    policies_text: str | None,
    out_dir: str,
    seed: int,
    inflate: float | None,
    departures: bool,
    interarrival_s: float | None,
    quiet: bool,
    profiles_dir: str | None,
    classes_file: str | None,
    max_pods: int | None,
    horizon_s: float | None,
    mix: str,
    candidates: str,
    rate_scale: float | None,
    no_latency: bool,
    policy_option: tuple[str, ...],
    requests_file: str | None,
    network_file: str | None,
    window_s: float | None,
) -> None:
    """Replay a cluster and a workload through placement policies; write CSVs, plots, summary.json, report.html."""
    if requests_file or network_file or window_s is not None:
        from qosched.extender.cli.whatif_requests import request_whatif_command

        request_whatif_command(
            cluster_file,
            nodes_csv,
            requests_file,
            network_file,
            window_s,
            policies_text,
            out_dir,
            seed,
            profiles_dir,
            quiet,
        )
        return
    opts = WhatifOptions(
        cluster_file=cluster_file,
        nodes_csv=nodes_csv,
        pods_csv=pods_csv,
        fmt=fmt,
        policies_text=policies_text,
        out_dir=out_dir,
        seed=seed,
        inflate=inflate,
        departures=departures,
        interarrival_s=interarrival_s,
        quiet=quiet,
        profiles_dir=profiles_dir,
        classes_file=classes_file,
        max_pods=max_pods,
        horizon_s=horizon_s,
        mix=mix,
        candidates=candidates,
        rate_scale=rate_scale,
        no_latency=no_latency,
        policy_option=policy_option,
    )
    check_options(opts)
    replay_policies(opts)
