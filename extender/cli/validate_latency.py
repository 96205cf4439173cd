"""``qosched validate-latency``: the latency models against the Ibis measurements.

Reads ``shared/data/ibis`` (see its PROVENANCE.md; copied from umassos/ibis) and prints every
table of docs/latency-models.md ("Validation against real data"): the queueing trace with the
paper's, the Bernoulli and the measured-physics methods, the swap frequency per level, and the
sequential-vs-concurrent batch checks. The maths is the core's
(:mod:`qosched.policies.latency.validation`); this module reads the files and the bundled
``edgetpu`` profiles (the ``paper`` methods' S and O) and hands them over.

Where the data is: ``--shared DIR`` (``DIR/data/ibis``), else ``$QOSCHED_SHARED_DIR``, else
``shared/`` in or beside the repository. The co-location traces of the held-out check are every
``queueing_validation/queuing_tpu_*.csv`` there plus the repository's
``data/ibis/queueing_validation/queuing_tpu_*.csv.gz`` (the Ibis traces shared/ lacks; see
data/ibis/PROVENANCE.md); a name in shared wins.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import click

from qosched.policies.latency import heldout
from qosched.policies.latency import validation as core
from qosched.policies.latency.calibration import CalibrationRun
from qosched.policies.latency.validation import (
    BatchRow,
    Measure,
    Method,
    PaperTable,
    Rates,
    TraceLevel,
    ValidationReport,
)

__all__ = [
    "EDGETPU_FCFS_CSV",
    "QUEUEING_CSV",
    "TRT_PS_CSV",
    "batch_check",
    "bundled_paper_table",
    "calibration_runs",
    "held_out_profiles",
    "held_out_report",
    "held_out_traces",
    "ibis_dir",
    "load_batch_csv",
    "load_queueing_trace",
    "report",
    "validate_latency",
    "validate_queueing",
]

QUEUEING_CSV: Final = "queueing_validation/queuing_tpu_inception_v3Xssd_mobilenet_v2.csv"
EDGETPU_FCFS_CSV: Final = "edgetpu_fcfs_validation.csv"
TRT_PS_CSV: Final = "trt_ps_validation.csv"
#: Accelerator key of the bundled profiles the ``paper`` methods read S and O from.
EDGETPU: Final = "edgetpu"
#: The repository's copies of the Ibis co-location traces that shared/ lacks (gzip).
REPO_TRACES: Final = Path(__file__).resolve().parents[2] / "data" / "ibis" / "queueing_validation"
TRACE_GLOB: Final = "queuing_tpu_*.csv"
#: The percentile of the held-out tail check.
TAIL_PERCENTILE: Final = 95.0


def ibis_dir(shared: str | Path | None = None) -> Path:
    """``shared/data/ibis``: under ``shared`` when given (only there), else under
    ``$QOSCHED_SHARED_DIR`` or ``shared/`` in or beside the repo.

    Raises
    ------
    FileNotFoundError
        Naming every place looked at.
    """
    repo = Path(__file__).resolve().parents[2]
    candidates = []
    if shared is not None:  # named: only there
        candidates.append(Path(shared))
    else:
        if env := os.environ.get("QOSCHED_SHARED_DIR"):
            candidates.append(Path(env))
        candidates += [repo / "shared", repo.parent / "shared"]
    for place in candidates:
        if (place / "data" / "ibis").is_dir():
            return place / "data" / "ibis"
    looked = ", ".join(str(c / "data" / "ibis") for c in candidates)
    raise FileNotFoundError(f"Ibis data not found; looked in {looked} (set QOSCHED_SHARED_DIR)")


def load_queueing_trace(path: str | Path | None = None) -> tuple[TraceLevel, ...]:
    """Read the queueing trace (default: :data:`QUEUEING_CSV` under :func:`ibis_dir`).

    Raises ``ValueError`` naming the file and line (from the core's parser) or ``OSError``.
    """
    file = Path(path) if path is not None else ibis_dir() / QUEUEING_CSV
    with file.open(newline="") as handle:
        return core.parse_queueing_trace(handle, str(file))


def load_batch_csv(path: str | Path) -> tuple[BatchRow, ...]:
    """Read a sequential-vs-concurrent file (:func:`~qosched.policies.latency.validation.parse_batch_csv`)."""
    file = Path(path)
    with file.open(newline="") as handle:
        return core.parse_batch_csv(handle, str(file))


def bundled_paper_table(models: Sequence[str]) -> PaperTable:
    """(S, O) per model from the bundled ``edgetpu`` profiles (the paper's table)."""
    from qosched.profiles.store import bundled_profiles

    profiles = bundled_profiles()
    return {
        m: (profiles.get(EDGETPU, m).service_time.mean_ms, profiles.get(EDGETPU, m).swap_overhead_ms)
        for m in models
    }


def held_out_traces(ibis: Path, repo_traces: Path = REPO_TRACES) -> tuple[heldout.CoLocationTrace, ...]:
    """Every co-location trace: ``ibis/queueing_validation/queuing_tpu_*.csv`` and
    ``repo_traces/queuing_tpu_*.csv.gz`` (a file name in ``ibis`` wins), sorted by name."""
    files = {f.name: f for f in sorted(repo_traces.glob(TRACE_GLOB + ".gz"))}
    files = {name.removesuffix(".gz"): f for name, f in files.items()}
    files.update({f.name: f for f in sorted((ibis / "queueing_validation").glob(TRACE_GLOB))})
    traces = []
    for name in sorted(files):
        file = files[name]
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt", newline="") as handle:
            traces.append(heldout.CoLocationTrace(core.parse_queueing_trace(handle, str(file))))
    return tuple(traces)


def profile_key(trace_model: str) -> str:
    """The bundled profile's model key of a trace's model name (``efficientnet-L`` →
    ``efficientnet_l``)."""
    return trace_model.lower().replace("-", "_")


def held_out_profiles(models: Sequence[str]) -> heldout.ProfileTable:
    """S, O and E[S²] of each trace model from the bundled ``edgetpu`` profiles, keyed by the
    trace's model name: what ``qosched predict`` predicts with."""
    from qosched.profiles.store import bundled_profiles

    profiles = bundled_profiles()
    table = {}
    for model in models:
        p = profiles.get(EDGETPU, profile_key(model))
        table[model] = heldout.ModelProfile(
            p.service_time.mean_ms, p.swap_overhead_ms, p.service_time.second_moment_ms2
        )
    return table


def held_out_reports(
    traces: Sequence[heldout.CoLocationTrace],
    methods: Sequence[heldout.HeldOutMethod] = heldout.HELD_OUT_METHODS,
) -> list[heldout.HeldOutReport]:
    """Both protocols (leave-one-level-out, leave-one-pair-out) for every method."""
    profiles = held_out_profiles(sorted({m for t in traces for m in t.models}))
    return [
        protocol(traces, method, profiles)
        for protocol in (heldout.leave_one_level_out, heldout.leave_one_pair_out)
        for method in methods
    ]


def held_out_report(ibis: Path) -> str:
    """The held-out section of the report: the summary per pair, protocol and method, the
    leave-one-pair-out points of ``predict`` (what ``qosched predict`` says), and the measured
    swap overhead per predecessor."""
    traces = held_out_traces(ibis)
    reports = held_out_reports(traces)
    out = [
        "**Held-out co-location points**: MAPE [%] of the mean latency (end − start).\n"
        "paper = models.md §A; predict = what `qosched predict` computes (docs/latency-models.md).",
        heldout.format_summary(reports),
    ]
    profiles = held_out_profiles(sorted({m for t in traces for m in t.models}))
    tail = [
        protocol(traces, method, profiles, percentile=TAIL_PERCENTILE)
        for protocol in (heldout.leave_one_level_out, heldout.leave_one_pair_out)
        for method in ("paper", "predict", "measured")
    ]
    out += [
        f"p{TAIL_PERCENTILE:g} of the latency (tail.py's exponential wait tail), MAPE [%]:",
        heldout.format_summary(tail),
    ]
    lopo = next(r for r in reports if r.protocol == "leave-one-pair-out" and r.method == "predict")
    for _, report in lopo.pairs:
        out.append(report.format_table())
    swaps = ["Swap overhead O[i | previous j] [ms], requests that found the device idle:"]
    for trace in traces:
        o = heldout.swap_by_predecessor(trace)
        for i, model in enumerate(trace.models):
            after = ", ".join(
                f"after {trace.models[j]} {o[i, j]:.2f}" for j in range(len(trace.models)) if j != i
            )
            swaps.append(f"- {model}: {after}")
    out.append("\n".join(swaps))
    return "\n\n".join(out)


def validate_queueing(
    method: Method = "measured",
    *,
    measure: Measure = "response",
    rates: Rates = "nominal",
    train_levels: Sequence[float] | None = None,
    path: str | Path | None = None,
    paper_table: PaperTable | None = None,
) -> ValidationReport:
    """:func:`~qosched.policies.latency.validation.validate_queueing` on the trace at ``path``
    (default: the bundled location), with the bundled profiles' S and O unless ``paper_table``."""
    levels = load_queueing_trace(path)
    table = paper_table
    if table is None and method in ("paper", "bernoulli"):
        table = bundled_paper_table(levels[0].models)
    return core.validate_queueing(
        levels, method, measure=measure, rates=rates, train_levels=train_levels, paper_table=table
    )


def batch_check(kind: Literal["fcfs", "ps"], path: str | Path | None = None) -> ValidationReport:
    """:func:`~qosched.policies.latency.validation.batch_check` on ``edgetpu_fcfs_validation.csv``
    (``fcfs``) or ``trt_ps_validation.csv`` (``ps``), or the file at ``path``."""
    default = {"fcfs": EDGETPU_FCFS_CSV, "ps": TRT_PS_CSV}
    if kind not in default:
        raise ValueError(f"kind must be 'fcfs' or 'ps' (got {kind!r})")
    file = Path(path) if path is not None else ibis_dir() / default[kind]
    return core.batch_check(kind, load_batch_csv(file))


def calibration_runs(
    *,
    measure: Measure = "response",
    rates: Rates = "nominal",
    path: str | Path | None = None,
    paper_table: PaperTable | None = None,
) -> tuple[CalibrationRun, ...]:
    """:func:`~qosched.policies.latency.validation.calibration_runs` on the queueing trace."""
    levels = load_queueing_trace(path)
    table = paper_table if paper_table is not None else bundled_paper_table(levels[0].models)
    return core.calibration_runs(levels, table, measure=measure, rates=rates)


def report(ibis: Path) -> str:
    """Every validation table, as docs/latency-models.md shows them (Markdown); ``ibis`` is the
    data directory (:func:`ibis_dir`)."""
    levels = load_queueing_trace(ibis / QUEUEING_CSV)
    table = bundled_paper_table(levels[0].models)
    parts = []
    for method in ("paper", "bernoulli", "measured"):
        for measure in ("response", "device"):
            parts.append(core.validate_queueing(levels, method, measure=measure, paper_table=table))
    parts.append(core.validate_queueing(levels, "measured", rates="realized"))
    parts.append(core.validate_queueing(levels, "measured", train_levels=(0.1, 0.3, 0.5)))
    out = [p.format_table() for p in parts]
    swaps = []
    for level in levels:
        measured, expected = core.swap_frequency(level)
        swaps.append(
            f"vary_rho={level.level:g}: swap frequency measured {measured.round(3)}, "
            f"1 - λi/λ {expected.round(3)}"
        )
    out.append("\n".join(swaps))
    out.append(batch_check("fcfs", ibis / EDGETPU_FCFS_CSV).format_table())
    out.append(batch_check("ps", ibis / TRT_PS_CSV).format_table())
    out.append(held_out_report(ibis))
    return "\n\n".join(out)


@click.command("validate-latency")
@click.option(
    "--shared",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The shared directory holding data/ibis (default: $QOSCHED_SHARED_DIR, else shared/ beside the repo).",
)
def validate_latency(shared: Path | None) -> None:
    """Print the latency models' errors against the Ibis measurements (docs/latency-models.md)."""
    try:
        click.echo(report(ibis_dir(shared)))
    except (OSError, ValueError) as err:
        raise click.ClickException(str(err)) from None
