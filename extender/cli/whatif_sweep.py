"""``qosched whatif sweep``: a study's grid of workloads × parameters × seeds × policies.

One **cell** is one policy replayed on one workload with one parameter set and one seed — what
``qosched whatif <workload options> <parameters> --seed S --policies P`` computes, bit for bit
(the replay reads no clock and draws only from the seed), wherever the cell runs. Each cell
writes ``DIR/runs/<workload>/<parameters>/seed-<S>/<policy>/`` (the policy's CSV and
``summary.json``) and, last, ``cell.json`` (its spec and compute time): a re-run skips the
cells whose ``cell.json`` holds the same spec (resumable). Then the cells are aggregated per
workload and parameter set: means with 95 % confidence intervals over the seeds (Student t:
``mean ± t(0.975, n−1) · s / √n``), policies ranked by the run's objective
(:mod:`qosched.extender.cli.whatif_ranking`), FGD's allocation curves with their bands, into
``DIR/sweep_summary.json``, ``DIR/report.html`` and ``DIR/curves-<group>.png``; one table per
group goes to the terminal.

Executors (:class:`Executor`): in this process (``--workers 1``), a local process pool
(default: one worker per core), or a Dask distributed cluster (``--cluster-address
tcp://host:8786``; its workers need qosched installed and the input files at the same paths).
Why Dask and not Ray: see docs/whatif.md (pure Python, pip-installable, a scheduler and workers
started with two commands, ``distributed.LocalCluster`` for tests; the cells are independent
Python calls, which is what ``Client.submit`` is for).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Protocol

import click
import numpy as np

__all__ = [
    "Cell",
    "DaskExecutor",
    "LocalExecutor",
    "aggregate",
    "grid",
    "run_cell",
    "run_sweep",
    "sweep",
]

#: Short labels of the terminal table (which leaves out scheduled pods and replay time).
TERMINAL_LABELS: dict[str, str] = {
    "gpu_allocation_ratio": "GPU %",
    "services_slo_met": "SLO met",
    "penalty": "penalty $",
    "pods_pending_end": "pending",
    "preemptions": "preempt.",
}
#: Metrics aggregated over seeds: (summary key, column label, scale, format).
METRICS: tuple[tuple[str, str, float, str], ...] = (
    ("gpu_allocation_ratio", "GPU alloc. at horizon [%]", 100.0, "{:.2f}"),
    ("services_slo_met", "services SLO met", 1.0, "{:.1f}"),
    ("penalty", "penalty [USD]", 1.0, "{:,.2f}"),
    ("pods_scheduled", "scheduled", 1.0, "{:,.0f}"),
    ("pods_pending_end", "pending at end", 1.0, "{:,.0f}"),
    ("preemptions", "preemptions", 1.0, "{:,.0f}"),
    ("runtime_s", "replay [s]", 1.0, "{:.2f}"),
)
CELL_FILE = "cell.json"


# ------------------------------------------------------------------------------------------ grid


@dataclass(frozen=True)
class Cell:
    """One replay of the grid: a workload (its ``qosched whatif`` options), parameters, a seed, a policy."""

    workload: str
    workload_args: tuple[str, ...]
    params: tuple[tuple[str, str], ...]
    seed: int
    policy: str

    @property
    def group(self) -> str:
        """``<workload>/<parameters>``: the cells aggregated together (over seeds)."""
        return f"{self.workload}/{','.join(f'{k}={v}' for k, v in self.params) or 'default'}"

    @property
    def rel_dir(self) -> str:
        return f"runs/{self.group}/seed-{self.seed}/{self.policy}"

    def args(self) -> list[str]:
        """The ``qosched whatif`` command line of this cell (without ``--out``)."""
        extra = [a for k, v in self.params for a in (f"--{k}", v)]
        return [*self.workload_args, *extra, "--seed", str(self.seed), "--policies", self.policy]

    def spec(self) -> dict[str, Any]:
        return {**asdict(self), "args": self.args()}


def _seeds(text: str) -> list[int]:
    """``0,1,2`` or ``42-51`` (inclusive) or a mix."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
        except ValueError:
            raise click.BadParameter(
                f"expected seeds like 0,1,2 or 42-51, got {part!r}", param_hint="--seeds"
            ) from None
    return list(dict.fromkeys(seeds))


def _named(text: str, hint: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint=hint)
    return name.strip(), value.strip()


def grid(
    workloads: Mapping[str, Sequence[str]],
    params: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    policies: Sequence[str],
) -> list[Cell]:
    """Every cell: workloads × parameter combinations × seeds × policies, in that order."""
    names = list(params)
    combos = [tuple(zip(names, values, strict=True)) for values in product(*(params[n] for n in names))]
    return [
        Cell(w, tuple(workloads[w]), combo, seed, policy)
        for w in workloads
        for combo in combos
        for seed in seeds
        for policy in policies
    ]


# ------------------------------------------------------------------------------------------ cell


def _options(args: Sequence[str], out_dir: Path) -> Any:
    """``qosched whatif`` options of a cell, parsed and checked by the command itself."""
    from qosched.extender.cli.whatif import WhatifOptions, check_options, whatif

    ctx = whatif.make_context("whatif", [*args, "--out", str(out_dir), "--quiet"])
    fields = WhatifOptions.__dataclass_fields__
    opts = WhatifOptions(**{k: v for k, v in ctx.params.items() if k in fields})
    check_options(opts)
    return opts


def run_cell(spec: Mapping[str, Any], root: str) -> dict[str, Any]:
    """Run one cell (``Cell.spec()``) under ``root``; returns its summary entry and compute time.

    A top-level function of plain arguments, so a process pool or a Dask worker can run it.
    ``cell.json`` is written last (atomically): its presence marks the cell done.
    """
    from qosched.extender.cli.whatif import load_classes, load_lookup, load_workload
    from qosched.extender.cli.whatif_run import run_whatif
    from qosched.policies.simulator.scenarios import CONTENDED_HORIZON_S

    started = time.perf_counter()
    out_dir = Path(root) / spec["rel_dir"]
    opts = _options(spec["args"], out_dir)
    classes = load_classes(opts.classes_file)
    lookup, device_memory = load_lookup(opts.profiles_dir)
    workload = load_workload(opts, classes)
    horizon_s = CONTENDED_HORIZON_S if opts.departures and opts.horizon_s is None else opts.horizon_s
    summary = run_whatif(
        workload, [spec["policy"]], out_dir, seed=opts.seed, lookup=lookup, device_memory=device_memory,
        classes=classes, mix=opts.mix, candidates=opts.candidates, simulate_latency=not opts.no_latency,
        horizon_s=horizon_s, quiet=True, report=False,
    )  # fmt: skip
    record = {
        "spec": {k: v for k, v in spec.items() if k != "rel_dir"},
        "workload": summary["workload"],
        "summary": summary["policies"][spec["policy"]],
        "compute_s": time.perf_counter() - started,
        "host": os.uname().nodename,
    }
    tmp = out_dir / f".{CELL_FILE}.tmp"
    tmp.write_text(json.dumps(_jsonable(record), indent=1) + "\n")
    tmp.replace(out_dir / CELL_FILE)
    return record


def _jsonable(value: Any) -> Any:
    from qosched.extender.cli.whatif_run import jsonable

    return jsonable(value)


def _cell_of(spec: Mapping[str, Any]) -> Cell:
    """The cell of a spec read back from JSON (lists where the cell has tuples)."""
    params = tuple((str(k), str(v)) for k, v in spec["params"])
    return Cell(spec["workload"], tuple(spec["workload_args"]), params, int(spec["seed"]), spec["policy"])


def _cell_spec(cell: Cell) -> dict[str, Any]:
    return {**cell.spec(), "rel_dir": cell.rel_dir}


def finished(cell: Cell, root: Path) -> dict[str, Any] | None:
    """The record of a cell already done under ``root`` with the same spec, else None."""
    path = root / cell.rel_dir / CELL_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    spec = json.loads(json.dumps(cell.spec()))  # tuples as lists, as read back
    return record if record.get("spec") == spec else None


# ------------------------------------------------------------------------------------- executors


class Executor(Protocol):
    """Runs ``run_cell`` over specs; yields records as cells finish (any order)."""

    workers: int

    def run(self, specs: Sequence[dict[str, Any]], root: str) -> Iterator[dict[str, Any]]: ...


@dataclass
class InProcessExecutor:
    """One cell after another in this process (``--workers 1``; the speed-up baseline)."""

    workers: int = 1

    def run(self, specs: Sequence[dict[str, Any]], root: str) -> Iterator[dict[str, Any]]:
        for spec in specs:
            yield run_cell(spec, root)


@dataclass
class LocalExecutor:
    """A process pool on this machine (``spawn``: fresh interpreters, no inherited threads)."""

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def run(self, specs: Sequence[dict[str, Any]], root: str) -> Iterator[dict[str, Any]]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            futures = [pool.submit(run_cell, spec, root) for spec in specs]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


@dataclass
class DaskExecutor:
    """Cells as tasks of an existing Dask distributed cluster (``--cluster-address``)."""

    address: str
    workers: int = 0

    def _client(self) -> Any:
        try:
            from distributed import Client
        except ImportError:
            raise click.ClickException(
                "--cluster-address needs Dask: pip install 'qosched[cluster]'"
            ) from None
        try:
            return Client(self.address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise click.ClickException(
                f"--cluster-address {self.address}: no Dask scheduler there ({err})"
            ) from None

    def run(self, specs: Sequence[dict[str, Any]], root: str) -> Iterator[dict[str, Any]]:
        from distributed import as_completed

        with self._client() as client:
            self.workers = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
            futures = [
                client.submit(run_cell, spec, root, key=f"qosched-cell-{i}-{spec['rel_dir']}", pure=False)
                for i, spec in enumerate(specs)
            ]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                client.cancel(futures)
                raise


# ------------------------------------------------------------------------------------ aggregate


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), 0.0
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), half


def _curve_band(curves: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, list[float]] | None:
    """Allocation curves of the seeds on their common grid: mean and 95 % CI per point."""
    curves = [c for c in curves if c.get("arrived")]
    if not curves:
        return None
    n = min(len(c["arrived"]) for c in curves)
    stack = np.array([c["allocated"][:n] for c in curves], dtype=np.float64)
    half = np.array([mean_ci(stack[:, j])[1] for j in range(n)]) if len(curves) > 1 else np.zeros(n)
    mean = stack.mean(axis=0)
    return {
        "arrived": [float(v) for v in curves[0]["arrived"][:n]],
        "mean": mean.tolist(),
        "low": (mean - half).tolist(),
        "high": (mean + half).tolist(),
    }


def _policy_stats(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    entries = [r["summary"] for r in records]
    out: dict[str, Any] = {"seeds": sorted(r["spec"]["seed"] for r in records), "n": len(entries)}
    for key, *_ in METRICS:
        mean, half = mean_ci([float(e[key]) for e in entries])
        out[key] = {"mean": mean, "ci95": half}
    out["services_total"] = {"mean": float(np.mean([e["services_total"] for e in entries]))}
    classes = sorted({c for e in entries for c in e.get("mean_qos_by_class", {})})
    out["mean_qos_by_class"] = {
        c: mean_ci([float(e["mean_qos_by_class"][c]) for e in entries if c in e["mean_qos_by_class"]])[0]
        for c in classes
    }
    out["allocation_curve"] = _curve_band([e.get("allocation_curve", {}) for e in entries])
    return out


def aggregate(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per group (workload/parameters), per policy: :data:`METRICS` as mean and 95 % CI over seeds."""
    groups: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    modes: dict[str, Any] = {}
    for r in records:
        cell = _cell_of(r["spec"])
        groups.setdefault(cell.group, {}).setdefault(cell.policy, []).append(r)
        modes[cell.group] = r["workload"]
    return {
        group: {
            "workload": modes[group],
            "policies": {p: _policy_stats(rs) for p, rs in sorted(by_policy.items())},
        }
        for group, by_policy in groups.items()
    }


def _means(group: Mapping[str, Any]) -> dict[str, Any]:
    """A summary-shaped view of a group's means (for the objective and the ranking)."""
    policies = {}
    for name, stats_ in group["policies"].items():
        entry = {key: stats_[key]["mean"] for key, *_ in METRICS}
        entry["services_total"] = stats_["services_total"]["mean"]
        entry["mean_qos_by_class"] = stats_["mean_qos_by_class"]
        policies[name] = entry
    return {"workload": group["workload"], "policies": policies}


# -------------------------------------------------------------------------------------- outputs


def _cell_text(stats_: Mapping[str, Any], key: str, scale: float, fmt: str, sep: str = " ± ") -> str:
    value = stats_[key]
    text = fmt.format(scale * value["mean"])
    return text if stats_["n"] < 2 else f"{text}{sep}{fmt.format(scale * value['ci95'])}"


def _columns(group: Mapping[str, Any]) -> list[tuple[str, str, float, str]]:
    policies = group["policies"].values()
    services = any(s["services_total"]["mean"] for s in policies)
    gpus = any(s["gpu_allocation_ratio"]["mean"] for s in policies)
    return [
        m
        for m in METRICS
        if not (m[0] == "services_slo_met" and not services)
        and not (m[0] == "gpu_allocation_ratio" and not gpus)
    ]


def group_rows(
    group: Mapping[str, Any], *, compact: bool = False
) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    """Header, rows (rank, cells) in rank order, and the ranking rule of one group's table
    (``compact``: the terminal's columns and labels, ``mean±ci``)."""
    from qosched.extender.cli.whatif_ranking import objective_of, rank_policies

    means = _means(group)
    classes = group["workload"].get("classes")
    objective = objective_of(means, classes)
    ranks = rank_policies(means, objective)
    columns = _columns(group)
    if compact:
        columns = [
            (k, TERMINAL_LABELS[k], scale, fmt) for k, _, scale, fmt in columns if k in TERMINAL_LABELS
        ]
    header = ["policy", "rank", "seeds", *(label for _, label, _, _ in columns)]
    sep = "±" if compact else " ± "
    rows = []
    for name in sorted(group["policies"], key=lambda n: (ranks[n], n)):
        stats_ = group["policies"][name]
        cells = [name, str(ranks[name]), str(stats_["n"])]
        cells += [_cell_text(stats_, key, scale, fmt, sep) for key, _, scale, fmt in columns]
        rows.append((ranks[name], cells))
    rule = objective.rule.replace("anked by", "anked by the mean over seeds of")
    return header, rows, rule


def _curves_png(group: Mapping[str, Any], path: Path) -> bytes | None:
    from qosched.extender.cli.whatif_plots import Curve, plot_allocation_curves

    curves = {}
    n = 0
    for name, stats_ in group["policies"].items():
        band = stats_.get("allocation_curve")
        if band and band["arrived"] and band["arrived"][-1] > 0:
            arr = np.asarray
            curves[name] = Curve(arr(band["arrived"]), arr(band["mean"]), arr(band["low"]), arr(band["high"]))
            n = max(n, stats_["n"])
    label = f"mean, band: 95 % CI over {n} seeds" if n > 1 else "one seed"
    return plot_allocation_curves(curves, path, band_label=label)


def write_sweep_report(out: Path, groups: Mapping[str, Any], notes: Sequence[str]) -> Path:
    """``report.html`` (one section per group: table and curves) and ``curves-<n>.png``."""
    from qosched.extender.cli.whatif_report import Row, Section, Table, _image, render_report

    sections = []
    for i, (name, group) in enumerate(groups.items()):
        header, rows, rule = group_rows(group)
        table = Table(header, [Row(cells, "best" if rank == 1 else "") for rank, cells in rows])
        png = _curves_png(group, out / f"curves-{i}.png")
        notes_ = [rule + " Highlighted: rank 1. Values: mean ± half-width of the 95 % CI (Student t)."]
        sections.append(Section(f"{name}", notes_, [table], _image(png, f"allocation curves of {name}")))
    path = out / "report.html"
    path.write_text(render_report(sections, warnings=notes, title="qosched what-if sweep"), encoding="utf-8")
    return path


def print_sweep_tables(groups: Mapping[str, Any], console: Any = None) -> None:
    """One rich table per group, at most 100 columns wide."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from qosched.extender.cli.whatif_console import TABLE_WIDTH

    if console is None:
        console = Console()
        console = Console(width=min(console.width, TABLE_WIDTH) if console.is_terminal else TABLE_WIDTH)
    for name, group in groups.items():
        header, rows, rule = group_rows(group, compact=True)
        table = Table(title=escape(name), box=box.SIMPLE_HEAD, pad_edge=False, caption=escape(rule))
        table.add_column(header[0], overflow="fold", min_width=10, max_width=20)
        for label in header[1:]:
            table.add_column(escape(label), justify="right", no_wrap=True)
        for rank, cells in rows:
            table.add_row(*cells, style="bold green" if rank == 1 else None)
        console.print(table)


# ------------------------------------------------------------------------------------------ run


@dataclass
class SweepStats:
    """What a sweep did: cells run and skipped, wall time, compute time summed over cells."""

    cells: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    compute_s: float = 0.0
    workers: int = 1

    def overhead_per_cell_s(self) -> float:
        """Wall time not spent computing, per cell run: ``(wall × workers − Σ compute) / cells``."""
        return (self.wall_s * self.workers - self.compute_s) / self.cells if self.cells else math.nan


def run_sweep(
    cells: Sequence[Cell],
    out: Path,
    executor: Executor,
    *,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], SweepStats]:
    """Run the cells not yet done (resumable), aggregate every cell, write the outputs."""
    out.mkdir(parents=True, exist_ok=True)
    records = {}
    todo = []
    for cell in cells:
        done = finished(cell, out)
        if done is None:
            todo.append(cell)
        else:
            records[cell.rel_dir] = done
    stats_ = SweepStats(skipped=len(records), workers=executor.workers)
    started = time.perf_counter()
    for k, record in enumerate(executor.run([_cell_spec(c) for c in todo], str(out.resolve())), start=1):
        cell = _cell_of(record["spec"])
        records[cell.rel_dir] = record
        stats_.compute_s += record["compute_s"]
        if progress is not None:
            elapsed = time.perf_counter() - started
            eta = elapsed * (len(todo) - k) / k
            progress(f"sweep: cell {k} of {len(todo)} done ({cell.rel_dir}, {record['compute_s']:.1f} s), "
                     f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s")  # fmt: skip
    stats_.cells = len(todo)
    stats_.workers = executor.workers or stats_.workers
    stats_.wall_s = time.perf_counter() - started
    groups = aggregate(records.values())
    summary = {
        "groups": groups,
        "run": {**asdict(stats_), "overhead_per_cell_s": stats_.overhead_per_cell_s()},
    }
    (out / "sweep_summary.json").write_text(json.dumps(_jsonable(summary), indent=1) + "\n")
    write_sweep_report(out, groups, [f"{stats_.cells} cell(s) run, {stats_.skipped} already done (skipped)."])
    return groups, stats_


# ------------------------------------------------------------------------------------------ CLI


def _executor(workers: int | None, cluster_address: str | None) -> Executor:
    if cluster_address:
        return DaskExecutor(cluster_address)
    if workers == 1:
        return InProcessExecutor()
    return LocalExecutor(workers or os.cpu_count() or 1)


@click.command("sweep")
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    required=True,
    help="NAME='qosched whatif options' (repeatable), e.g. fgd='--nodes N.csv --pods P.csv --inflate 1.3 --no-latency'.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    help="NAME=V1,V2,...: a whatif option swept over values, e.g. inflate=1.3,2.0.",
)
@click.option("--seeds", default="0", show_default=True, help="Seeds: 0,1,2 or 42-51.")
@click.option(
    "--policies",
    "policies_text",
    default=None,
    help="Comma-separated policies (default: every registered one).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory (re-run: finished cells are skipped).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local processes (default: one per core; 1: in this process).",
)
@click.option(
    "--cluster-address",
    default=None,
    help="Dask scheduler address (tcp://host:8786): run the cells on that cluster.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
def sweep(
    workloads: tuple[str, ...],
    params: tuple[str, ...],
    seeds: str,
    policies_text: str | None,
    out_dir: str,
    workers: int | None,
    cluster_address: str | None,
    quiet: bool,
) -> None:
    """Run a grid of workloads × parameters × seeds × policies; aggregate over seeds (means, 95 % CI)."""  # fmt: skip
    from qosched.extender.cli.whatif import _policy_list
    from qosched.policies.registry import policy_names

    named = dict(_named(w, "--workload") for w in workloads)
    parsed = {name: shlex.split(args) for name, args in named.items()}
    grid_params = {
        k: [v.strip() for v in vs.split(",") if v.strip()] for k, vs in (_named(p, "--param") for p in params)
    }
    policies = _policy_list(policies_text, policy_names())
    cells = grid(parsed, grid_params, _seeds(seeds), policies)
    for cell in {c.group: c for c in cells}.values():  # check each workload's options once, up front
        _options(cell.args(), Path(out_dir))
    executor = _executor(workers, cluster_address)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    groups, stats_ = run_sweep(cells, Path(out_dir), executor, progress=None if quiet else say)
    print_sweep_tables(groups)
    click.echo(
        f"{stats_.cells} cell(s) run, {stats_.skipped} skipped (done before); {stats_.wall_s:.1f} s wall, "
        f"{stats_.compute_s:.1f} s computing on {stats_.workers} worker(s); wrote {Path(out_dir) / 'report.html'}, "
        f"sweep_summary.json and runs/"
    )
