"""``qosched profile``: benchmark models with PyTorch and write profile files.

``qosched profile run`` measures each model solo (closed-loop service time, then latency under
Poisson load) and co-located, writes ``<accelerator>__<model>.json`` profiles and the raw
``colocation.json`` into ``--out``, and prints predicted vs measured mean latency with the MAPE
(also written to ``report.md`` / ``report.json``). ``qosched profile report DIR`` rebuilds that
report from a ``colocation.json`` without measuring again. The work is done by
:mod:`qosched.profiles.profiler`; this module only parses options and prints.

torch is optional (``pip install 'qosched[profiler]'``); it is imported only when a command runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

_DEFAULT_MODELS = "resnet18,resnet50,mobilenet_v2"


def _floats(option: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=option
        ) from None
    if not values:
        raise click.BadParameter("give at least one value", param_hint=option)
    return values


class _RichProgress:
    """Progress on stderr: one bar over the plan's steps, one over the current step's seconds."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._overall: Any = None
        self._current: Any = None
        self._started = 0.0
        self._current_total = 0.0

    def begin(self, total_steps: int) -> None:
        self._bar.start()
        self._overall = self._bar.add_task("profile", total=total_steps)

    def step(self, description: str, expected_s: float) -> None:
        if self._current is not None:
            self._bar.update(self._current, completed=self._current_total)
            self._bar.advance(self._overall)
            self._bar.remove_task(self._current)
        self._started = time.monotonic()
        self._current_total = max(expected_s, 0.1)
        self._current = self._bar.add_task(description, total=self._current_total)

    def tick(self) -> None:
        if self._current is not None:
            self._bar.update(self._current, completed=time.monotonic() - self._started)

    def end(self) -> None:
        if self._current is not None:
            self._bar.advance(self._overall)
        self._bar.stop()


def _print_report(report: Any, out_dir: Path, quiet: bool) -> None:
    from rich.console import Console

    from qosched.profiles.profiler.report import render_table, write_report

    paths = write_report(report, out_dir)
    console = Console(width=None if sys.stdout.isatty() else 240)
    console.print(render_table(report))
    if not quiet:
        click.echo("wrote " + ", ".join(str(p) for p in paths), err=True)


@click.group("profile")
def profile() -> None:
    """Benchmark models with PyTorch (solo and co-located) and write profile files."""


@profile.command("run")
@click.option(
    "--models", default=_DEFAULT_MODELS, show_default=True, help="Comma-separated models to profile."
)
@click.option(
    "--colocate",
    default="auto",
    show_default=True,
    help="Co-located groups: 'a+b,a+b+c', 'a:5+b:20' (explicit rates, rps), 'auto' (every pair of "
    "--models) or 'none'.",
)
@click.option(
    "--rates",
    default="0.2,0.4,0.6",
    show_default=True,
    help="Solo load levels ρ = λ·E[S] (fractions of the solo capacity).",
)
@click.option(
    "--colocate-rates",
    default="0.3,0.6",
    show_default=True,
    help="Co-located load levels: fraction of the device's capacity the group offers, shared evenly "
    "in work (λᵢ = ρ·servers / (n·E[Sᵢ]); servers = CPUs // threads on cpu, 1 on cuda).",
)
@click.option(
    "--duration-s", default=20.0, show_default=True, type=float, help="Minimum measurement window per run."
)
@click.option(
    "--min-requests",
    default=200,
    show_default=True,
    type=int,
    help="Minimum measured requests per model and run (the window grows to reach it).",
)
@click.option("--warmup", default=20, show_default=True, type=int, help="Discarded inferences after loading.")
@click.option("--settle-s", default=2.0, show_default=True, type=float, help="Unmeasured start of each run.")
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=int,
    help="torch threads per server process (1: co-located servers share the cores).",
)
@click.option("--cpus", default=None, help="CPU affinity of the servers, e.g. '0,1' (default: all allowed).")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda if available."
)
@click.option("--accelerator", default=None, help="Accelerator key for the profiles (default: cpu, or cuda).")
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--out", "out_dir", default="out/profile", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=int,
    help="Interleaved rounds: every measurement is split into this many slices taken in turn, so a "
    "drifting host (other jobs) biases the solo profile and the co-located runs alike.",
)
@click.option(
    "--nice",
    default=0,
    show_default=True,
    type=int,
    help="os.nice increment of the servers; e.g. -10 on a shared host (needs root/CAP_SYS_NICE).",
)
@click.option(
    "--accuracy",
    "accuracy_text",
    default="",
    help="Top-1 accuracy of the trained weights each model is served with, copied into its profile: "
    "'resnet18=0.69758,mobilenet_v2=0.71878'.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_cmd(
    models: str,
    colocate: str,
    rates: str,
    colocate_rates: str,
    duration_s: float,
    min_requests: int,
    warmup: int,
    settle_s: float,
    threads: int,
    cpus: str | None,
    device: str | None,
    accelerator: str | None,
    batch_size: int,
    out_dir: str,
    seed: int,
    rounds: int,
    nice: int,
    accuracy_text: str,
    quiet: bool,
) -> None:
    """Measure solo service times, solo and co-located latency; write profiles and the report."""
    from qosched.profiles.profiler import ProfilerUnavailableError, require_torch

    try:
        torch = require_torch()
        from qosched.profiles.profiler.report import build_report
        from qosched.profiles.profiler.runner import (
            ProfilerConfig,
            ProfilerError,
            run_profile,
            write_outputs,
        )
    except ProfilerUnavailableError as exc:
        raise click.ClickException(str(exc)) from None

    model_names = tuple(m.strip() for m in models.split(",") if m.strip())
    groups = _colocate_groups(colocate, model_names)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu_set = _cpu_set(cpus)
    accuracy = _accuracy(accuracy_text)
    try:
        config = ProfilerConfig(
            models=model_names,
            colocate=groups,
            levels=_floats("--rates", rates),
            colocate_levels=_floats("--colocate-rates", colocate_rates),
            duration_s=duration_s,
            min_requests=min_requests,
            warmup=warmup,
            settle_s=settle_s,
            threads=threads,
            device=device,
            accelerator=accelerator or device,
            cpus=cpu_set,
            batch_size=batch_size,
            seed=seed,
            rounds=rounds,
            nice=nice,
            accuracy=accuracy,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        result = run_profile(config, progress=None if quiet else _RichProgress())
        paths = write_outputs(result, out_dir)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--models") from None
    except (ProfilerError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if not quiet:
        click.echo("wrote " + ", ".join(str(p) for p in paths), err=True)
    _print_report(build_report(result.colocation_dict()), Path(out_dir), quiet)


def _colocate_groups(text: str, model_names: tuple[str, ...]) -> tuple[Any, ...]:
    """``--colocate``: 'auto' (every pair of --models), '' or 'none', or explicit groups."""
    from qosched.profiles.profiler.runner import auto_pairs, parse_colocate

    if text.strip() == "auto":
        return tuple(auto_pairs(model_names))
    if text.strip() in ("", "none"):
        return ()
    try:
        return tuple(parse_colocate(text))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--colocate") from None


def _cpu_set(cpus: str | None) -> tuple[int, ...] | None:
    """``--cpus``: comma-separated CPU numbers (None: every allowed CPU)."""
    try:
        return None if cpus is None else tuple(int(c) for c in cpus.split(",") if c.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated CPU numbers, got {cpus!r}", param_hint="--cpus"
        ) from None


def _accuracy(text: str) -> tuple[tuple[str, float], ...]:
    """``--accuracy``: 'MODEL=FRACTION,...' (the range is checked by ProfilerConfig)."""
    accuracy: list[tuple[str, float]] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            accuracy.append((name.strip(), float(value)))
        except ValueError:
            raise click.BadParameter(
                f"expected MODEL=FRACTION, got {item!r}", param_hint="--accuracy"
            ) from None
    return tuple(accuracy)


@profile.command("report")
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--quiet", is_flag=True, help="Do not list the files written.")
def report_cmd(out_dir: str, quiet: bool) -> None:
    """Rebuild predicted vs measured latency (and the MAPE) from OUT_DIR/colocation.json."""
    from qosched.profiles.profiler.report import load_report

    try:
        report = load_report(out_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(report, Path(out_dir), quiet)


from qosched.extender.cli.profile_upload import upload as _upload  # noqa: E402

profile.add_command(_upload)
