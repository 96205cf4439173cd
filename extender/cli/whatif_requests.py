"""``qosched whatif --requests``: the request-level what-if of an end–edge–cloud cluster (the shell).

Reads the snapshot (nodes with ``qosched.io/tier`` and their links, pods naming services), the
REQUESTS and NETWORK CSV files, runs the named request-level policies
(:mod:`qosched.policies.requests.registry`) on the same arrivals, and writes into ``--out``:

* ``summary.json`` — ``{"workload": {...}, "policies": {name: {"requests": {...}, "stats": {...},
  "runtime_s": s}}, "speedup": {...}}`` (contract §4's ``requests`` object per policy);
* ``requests-<policy>.csv`` — one row per request;
* ``response_over_time.png``, ``regret_over_time.png``, ``actions_per_tier.png`` and
  ``report.html`` (the request-level report section: the table and the three plots).

Every error in an input names the file and line (``click.ClickException``); nothing is written
before the inputs parse.
"""

from __future__ import annotations

import csv
import html
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from qosched.extender.kube.objects import (
    pod_demand,
    pod_input_kb,
    pod_key,
    pod_service,
)

__all__ = [
    "RequestWhatif",
    "read_network",
    "read_requests",
    "request_whatif_command",
    "run_request_whatif",
    "scenario_from_snapshot",
]

PLOT_WINDOW_S = 5.0


@dataclass(frozen=True, slots=True)
class RequestWhatif:
    """The options of a request-level what-if (a slice of ``qosched whatif``'s)."""

    cluster_file: str
    requests_file: str
    network_file: str | None
    policies_text: str | None
    out_dir: str
    seed: int = 0
    window_s: float | None = None
    profiles_dir: str | None = None
    quiet: bool = False


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [(i + 2, dict(row)) for i, row in enumerate(reader)]
            return list(reader.fieldnames or ()), rows
    except OSError as err:
        raise click.ClickException(f"{path}: {err.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise click.ClickException(f"{path}: not a CSV file ({err})") from None


def _parse_csv(path: str | Path, parse: Callable[..., Any]) -> Any:
    """The core's ``parse(rows, columns, source=file)`` over a CSV file; its ``InputError`` (file:line) as a ClickException."""
    from qosched.policies.requests.inputs import InputError

    file = Path(path)
    columns, rows = _csv_rows(file)
    try:
        return parse(rows, columns, source=str(file))
    except InputError as err:
        raise click.ClickException(str(err)) from None


def read_requests(path: str | Path) -> Any:
    """REQUESTS.csv → :class:`~qosched.policies.requests.inputs.Requests` (errors name file:line)."""
    from qosched.policies.requests.inputs import parse_requests

    return _parse_csv(path, parse_requests)


def read_network(path: str | Path | None) -> Any:
    """NETWORK.csv → :class:`~qosched.policies.requests.inputs.NetworkTrace` (empty without a file)."""
    from qosched.policies.requests.inputs import NetworkTrace, parse_network

    return NetworkTrace() if path is None else _parse_csv(path, parse_network)


def _tier_nodes(file: Path, nodes: Iterable[Mapping[str, Any]]) -> list[Any]:
    from qosched.extender.kube.request_scenario import tier_node

    out = []
    for obj in nodes:
        try:
            node = tier_node(obj)
        except ValueError as err:  # ScenarioError included
            raise click.ClickException(f"{file}: {err}") from None
        if node is not None:
            out.append(node)
    return out


def _services(file: Path, pods: Iterable[Mapping[str, Any]]) -> list[Any]:
    from qosched.extender.kube.request_scenario import service_def
    from qosched.policies.requests.scenario import ScenarioError
    from qosched.policies.types import DemandError

    out = []
    for obj in pods:
        name = pod_service(obj)
        if name is None:
            continue
        try:
            demand = pod_demand(obj)
            kb = pod_input_kb(obj)
            if demand.slo_ms is None:
                raise DemandError("qosched.io/slo-ms is required for a routed service")
            out.append(service_def(name, demand, demand.slo_ms, kb))
        except (DemandError, ScenarioError) as err:
            raise click.ClickException(f"{file}: pod {pod_key(obj)}: {err}") from None
    return out


def scenario_from_snapshot(path: str | Path, lookup: Any) -> Any:
    """Snapshot → :class:`~qosched.policies.requests.scenario.Scenario` (tiered nodes, services of the pods)."""
    from qosched.extender.cli.whatif import read_snapshot
    from qosched.policies.requests.scenario import Scenario, ScenarioError

    file = Path(path)
    nodes, pods = read_snapshot(file)
    try:
        return Scenario.build(_tier_nodes(file, nodes), _services(file, pods), lookup)
    except ScenarioError as err:
        raise click.ClickException(f"{file}: {err}") from None


def _policy_names(text: str | None) -> list[str]:
    from qosched.policies.requests.registry import routing_policy_names

    known = routing_policy_names()
    names = [p.strip() for p in (text or "").split(",") if p.strip()] or [
        n
        for n in ("online", "always-end", "always-edge", "always-cloud", "best-static", "greedy")
        if n in known
    ]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(
            f"unknown request policy {', '.join(unknown)}; known: {', '.join(known)}", param_hint="--policies"
        )
    return names


def _write_records(path: Path, rec: Any) -> None:
    cols = (
        "time_s",
        "service",
        "tier",
        "variant",
        "node",
        "served",
        "transfer_ms",
        "wait_ms",
        "service_ms",
        "response_ms",
        "predicted_ms",
        "slo_ms",
        "accuracy",
        "accuracy_loss_pts",
        "reward",
    )
    arrays = [getattr(rec, c) for c in cols]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for row in zip(*arrays, strict=True):
            w.writerow(
                f"{v:.4f}"
                if isinstance(v, float | np.floating) and math.isfinite(v)
                else ("" if isinstance(v, float | np.floating) else v)
                for v in row
            )


def speedup_summary(summary: Mapping[str, Mapping[str, Any]], learner: str = "online") -> dict[str, Any]:
    """The learner's mean response against the best baseline, overall and among those within 0.9 points of accuracy.

    ``speedup = 1 − learner / baseline`` (0.35 = 35 % faster); baselines are every other policy.
    """
    if learner not in summary:
        return {}
    own = summary[learner]["requests"]
    others = {
        k: v["requests"] for k, v in summary.items() if k != learner and v["requests"]["mean_response_ms"]
    }
    if not others or not own["mean_response_ms"]:
        return {}

    def best(pool: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
        if not pool:
            return None
        name = min(pool, key=lambda k: pool[k]["mean_response_ms"])
        base = pool[name]["mean_response_ms"]
        return {
            "baseline": name,
            "baseline_mean_response_ms": base,
            "speedup": 1.0 - own["mean_response_ms"] / base,
            "accuracy_loss_difference": own["accuracy_loss"] - pool[name]["accuracy_loss"],
        }

    accurate = {k: v for k, v in others.items() if (v["accuracy_loss"] or 0.0) < 0.9}
    return {
        "learner": learner,
        "best_baseline": best(others),
        "best_baseline_within_0.9_points": best(accurate),
    }


def run_request_whatif(opts: RequestWhatif) -> dict[str, Any]:
    """The request-level what-if (see the module docstring); returns the summary it wrote."""
    from qosched.extender.cli.whatif import load_lookup
    from qosched.extender.cli.whatif_allocation import (
        allocation_options,
        pop_allocation_series,
        write_allocation_outputs,
    )
    from qosched.extender.cli.whatif_requests_report import write_report
    from qosched.policies.requests.engine import EngineConfig
    from qosched.policies.requests.evaluate import requests_summary
    from qosched.policies.requests.registry import run_policies

    if opts.window_s is not None and not (math.isfinite(opts.window_s) and opts.window_s > 0):
        raise click.BadParameter(f"must be a number > 0, got {opts.window_s!r}", param_hint="--window-s")
    names = _policy_names(opts.policies_text)
    lookup, device_memory = load_lookup(opts.profiles_dir)
    scenario = scenario_from_snapshot(opts.cluster_file, lookup)
    requests = read_requests(opts.requests_file)
    network = read_network(opts.network_file)
    unknown = sorted(set(requests.services) - set(scenario.services))
    if unknown:
        raise click.ClickException(
            f"{opts.requests_file}: service(s) {', '.join(unknown)} are not defined by any pod of {opts.cluster_file} "
            "(qosched.io/service or app.kubernetes.io/name)"
        )
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = EngineConfig()
    options = allocation_options(requests.time_s, requests.service, opts.window_s, device_memory)
    records: dict[str, Any] = {}
    policies: dict[str, Any] = {}
    for name in names:
        if not opts.quiet:
            click.echo(f"request what-if: {name} ...", err=True)
        t0 = time.perf_counter()
        rec = run_policies(
            scenario,
            requests,
            [name],
            seed=opts.seed,
            network=network,
            config=config,
            window_s=opts.window_s,
            options=options,
        )[name]
        records[name] = rec
        policies[name] = {
            "requests": requests_summary(rec),
            "stats": rec.stats,
            "runtime_s": time.perf_counter() - t0,
        }
        extra = getattr(rec, "extra", None)
        if isinstance(extra, Mapping):
            policies[name].update(extra)
        _write_records(out / f"requests-{name}.csv", rec)
    allocation_series = pop_allocation_series(policies)
    summary = {
        "workload": {
            "mode": "requests",
            "cluster": Path(opts.cluster_file).name,
            "requests_file": Path(opts.requests_file).name,
            "network_file": None if opts.network_file is None else Path(opts.network_file).name,
            "requests": len(requests),
            "horizon_s": float(requests.time_s[-1] - requests.time_s[0]),
            "services": {
                s.name: {
                    "variants": list(s.variants),
                    "allowed": list(scenario.allowed_variants(s.name)),
                    "slo_ms": s.slo_ms,
                    "min_accuracy": s.min_accuracy,
                    "input_kb": s.input_kb,
                }
                for s in scenario.services.values()
            },
            "nodes": {t: [n.name for n in scenario.nodes_of(t)] for t in scenario.tiers},
            "seed": opts.seed,
            "objective": {
                "latency_weight": config.objective.latency_weight,
                "latency_cap": config.objective.latency_cap,
                "accuracy_weight_per_point": config.objective.accuracy_weight,
            },
        },
        "policies": policies,
        "speedup": speedup_summary(policies),
    }
    summary = _finite(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    write_report(out, summary, records, scenario, network)
    write_allocation_outputs(out, allocation_series)
    _print_table(policies)
    return summary


def _finite(value: Any) -> Any:
    """The summary with NaN / inf numbers as null (JSON has neither) and numpy scalars as Python."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_table(policies: Mapping[str, Any]) -> None:
    click.echo(
        f"{'policy':<16}{'served':>8}{'mean ms':>10}{'p95 ms':>10}{'SLO att.':>10}{'acc.':>8}{'loss pts':>10}"
    )
    for name, entry in policies.items():
        r = entry["requests"]

        def f(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        click.echo(
            f"{name:<16}{r['served']:>8}{f(r['mean_response_ms'], '.1f'):>10}{f(r['p95_response_ms'], '.1f'):>10}"
            f"{f(r['slo_attainment'], '.3f'):>10}{f(r['mean_accuracy'], '.4f'):>8}{f(r['accuracy_loss'], '.2f'):>10}"
        )


def report_rows(policies: Mapping[str, Any]) -> Sequence[Sequence[str]]:
    """Rows of the report's table (escaped)."""
    rows = []
    for name, entry in policies.items():
        r = entry["requests"]
        rows.append(
            [
                html.escape(name),
                str(r["served"]),
                *(
                    "-" if r[k] is None else f"{r[k]:{fmt}}"
                    for k, fmt in (
                        ("mean_response_ms", ".1f"),
                        ("p95_response_ms", ".1f"),
                        ("slo_attainment", ".3f"),
                        ("mean_accuracy", ".4f"),
                        ("accuracy_loss", ".2f"),
                    )
                ),
            ]
        )
    return rows


def request_whatif_command(
    cluster_file: str | None,
    nodes_csv: str | None,
    requests_file: str | None,
    network_file: str | None,
    window_s: float | None,
    policies_text: str | None,
    out_dir: str,
    seed: int,
    profiles_dir: str | None,
    quiet: bool,
) -> None:
    """The ``--requests`` branch of ``qosched whatif``: check the option combination, run, report."""
    if not requests_file:
        raise click.UsageError("--network and --window-s apply with --requests")
    if not cluster_file or nodes_csv:
        raise click.UsageError(
            "--requests needs --cluster FILE (a snapshot with tiered nodes), not --nodes/--pods"
        )
    summary = run_request_whatif(
        RequestWhatif(
            cluster_file,
            requests_file,
            network_file,
            policies_text,
            out_dir,
            seed,
            window_s,
            profiles_dir,
            quiet,
        )
    )
    click.echo(
        f"wrote {Path(out_dir) / 'summary.json'}, {len(summary['policies'])} CSV file(s), plots and report.html"
    )
