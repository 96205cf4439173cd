"""Predicted vs measured mean latency of the profiler's runs, and the MAPE.

The report is built from ``colocation.json`` alone (the solo service-time moments and every run's
rates and measurements are in it), so it can be rebuilt later — ``qosched profile report DIR`` —
when a latency model changes, without measuring again.

For every member of every run three predictions of the mean latency (queueing + service) are
made from the solo profile (E[S], E[S²]) and the offered rates only:

``qosched``
    :func:`qosched.policies.latency.sharing.predict`, the model the placement policies use
    (``cpu`` mode: one FCFS server per model, the cores shared among the busy servers,
    :mod:`qosched.policies.latency.cpu_node`; ``time-slicing`` on CUDA), uncalibrated.
``qosched_calibrated_heldout``
    The same model with ``colocation_overhead_frac`` fitted by
    :mod:`qosched.policies.latency.calibration` on the *other* co-located runs (leave one run
    out), so no reported point is predicted by a fit that saw it.
``reference_fcfs_servers``
    :func:`reference_fcfs_servers_ms`, a model of the profiler's own serving set-up (one FCFS
    server per model, cores shared among busy servers), to tell model error from host noise.
    Since issue 18 it is the ``cpu`` model itself, so on CPU runs it equals ``qosched``.

The error of a row is ``(predicted − measured) / measured``; the figure of merit is the mean
absolute percentage error over the co-located rows,

    MAPE = 100 % · (1/N) Σ |predicted − measured| / measured,

with saturated runs (requests left unserved) left out and listed. Solo runs get their own MAPE:
they check the single-model queue before any interference enters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Adapter to the latency models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberLoad:
    """One co-located model as the latency model sees it: offered rate and solo service moments."""

    model: str
    rate_rps: float
    service_mean_ms: float
    service_second_moment_ms2: float


def sharing_mode(device: str, accelerator: str) -> str:
    """The :mod:`qosched.policies.latency.sharing` mode of a profiled device.

    A run on the host CPU is the ``cpu`` mode whatever ``--accelerator`` was called; on CUDA the
    node's default sharing, time slicing (several processes on one GPU), resolved per accelerator.
    """
    from qosched.policies.latency.sharing import CPU_MODE, resolve_sharing

    return CPU_MODE if device == "cpu" else resolve_sharing(accelerator, "time-slicing")


def predict_mean_latency_ms(
    members: Sequence[MemberLoad],
    *,
    device: str,
    servers: int,
    accelerator: str = "cpu",
    params: Any = None,
) -> list[float]:
    """qosched's prediction of each member's mean latency [ms] (input order); ``inf`` if unbounded.

    Calls :func:`qosched.policies.latency.sharing.predict` — the model the placement policies
    use — with the solo profile (E[S], E[S²]) and the offered rates; ``servers`` is the device's
    ``cores`` (CPU cores // threads per server). ``params`` is a
    :class:`~qosched.policies.latency.sharing.ModelParams` (default: the uncalibrated model).
    """
    if not members:
        return []
    from qosched.policies.latency.sharing import DeviceServices, predict

    services = DeviceServices.build(
        [m.rate_rps for m in members],
        [m.service_mean_ms for m in members],
        second_moment_ms2=[m.service_second_moment_ms2 for m in members],
        cores=max(1, servers),
    )
    latency = predict(sharing_mode(device, accelerator), services, params).latency_ms
    return [float(x) for x in latency]


def reference_fcfs_servers_ms(members: Sequence[MemberLoad], servers: int) -> list[float]:
    r"""Reference model of the profiler's own serving set-up: one FCFS server process per model.

    Each model server is its own FCFS queue (one request at a time), and the OS shares the
    ``servers`` cores among the *servers* that are busy (not among requests): with k busy and c
    cores each runs at min(1, c/k) of full speed. Mean-field approximation: server i, while busy,
    sees each other server j busy independently with probability bⱼ, so its slowdown is

    .. math:: σᵢ = E[\max(1, (1 + Kᵢ) / c)],  Kᵢ ~ PoissonBinomial(bⱼ, j ≠ i),
              bⱼ = \min(1, λⱼ Sⱼ σⱼ)

    (fixed point), and each server is an M/G/1 queue with stretched service Tᵢ = σᵢ Sᵢ,
    E[Tᵢ²] = σᵢ² E[Sᵢ²]: E[Rᵢ] = Tᵢ + λᵢ E[Tᵢ²] / (2 (1 − λᵢ Tᵢ)), ``inf`` when λᵢ Tᵢ ≥ 1.
    Alone, or with n ≤ c servers, σ = 1 and this is the solo M/G/1 (models.md §A: "one model
    alone: M/D/1").

    Since issue 18 this is also qosched's ``cpu`` model (the measurements showed it is the
    discipline of a CPU node): it is computed by
    :func:`qosched.policies.latency.cpu_node.cpu_node_queue`, the one implementation, so on CPU
    runs this column equals the ``qosched`` one.
    """
    if not members:
        return []
    from qosched.policies.latency.cpu_node import cpu_node_queue

    latency = cpu_node_queue(
        [m.rate_rps for m in members],
        [m.service_mean_ms for m in members],
        [m.service_second_moment_ms2 for m in members],
        cores=max(1, servers),
    ).latency_ms
    return [float(x) for x in latency]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


#: The predictions in a report: qosched's model as is, with ``colocation_overhead_frac`` fitted
#: on the other co-located runs (leave one run out), and the FCFS-servers reference.
PREDICTORS: tuple[str, ...] = ("qosched", "qosched_calibrated_heldout", "reference_fcfs_servers")


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One model in one run: what was offered, measured and predicted (means in ms)."""

    run_id: str
    kind: str  # "solo" or "colocated"
    model: str
    instance: int
    rate_rps: float
    utilization: float  # λ·E[S] with the solo E[S]
    requests: int
    measured_mean_ms: float
    measured_p99_ms: float
    predicted_mean_ms: float  # qosched's model, uncalibrated
    calibrated_mean_ms: float  # qosched's model, overhead fitted without this run (nan: no fit)
    reference_mean_ms: float  # reference_fcfs_servers_ms
    saturated: bool
    background_cpu_cores: float  # other processes' CPU use on the device's CPUs (nan: unknown)

    def prediction_ms(self, predictor: str) -> float:
        """The prediction of one of :data:`PREDICTORS`."""
        return {
            "qosched": self.predicted_mean_ms,
            "qosched_calibrated_heldout": self.calibrated_mean_ms,
            "reference_fcfs_servers": self.reference_mean_ms,
        }[predictor]

    def error_frac(self, predictor: str = "qosched") -> float:
        """(predicted − measured) / measured; nan when either is missing, inf when unbounded."""
        pred = self.prediction_ms(predictor)
        if not (self.measured_mean_ms > 0 and math.isfinite(self.measured_mean_ms)) or math.isnan(pred):
            return math.nan
        return (pred - self.measured_mean_ms) / self.measured_mean_ms


@dataclass(frozen=True, slots=True)
class Report:
    """All rows and the summary figures."""

    accelerator: str
    sharing: str
    servers: int
    rows: tuple[ReportRow, ...]
    fitted_overhead_frac: dict[str, float]  # held-out run id → overhead fitted on the others

    def mape_pct(self, kind: str, predictor: str = "qosched") -> tuple[float, int]:
        """(MAPE [%], rows) over unsaturated rows of ``kind``; (nan, 0) when there are none.

        Rows whose prediction is missing (nan) or unbounded (the model says ρ ≥ 1 while the host
        served the load: see :meth:`unbounded_rows`) are left out.
        """
        errs = [
            abs(e)
            for r in self.rows
            if r.kind == kind and not r.saturated and math.isfinite(e := r.error_frac(predictor))
        ]
        return (100.0 * sum(errs) / len(errs), len(errs)) if errs else (math.nan, 0)

    def unbounded_rows(self, kind: str, predictor: str = "qosched") -> int:
        """Unsaturated rows of ``kind`` whose prediction is ``inf`` (left out of the MAPE)."""
        return sum(
            1
            for r in self.rows
            if r.kind == kind and not r.saturated and math.isinf(r.prediction_ms(predictor))
        )

    @property
    def mape_colocated_pct(self) -> float:
        """The headline: MAPE [%] of qosched's model over co-located, unsaturated rows."""
        return self.mape_pct("colocated")[0]

    @property
    def mape_solo_pct(self) -> float:
        """MAPE [%] of qosched's model over solo, unsaturated rows."""
        return self.mape_pct("solo")[0]

    def summary(self) -> dict[str, Any]:
        """The headline figures as a JSON-ready dict."""
        backgrounds = [r.background_cpu_cores for r in self.rows if math.isfinite(r.background_cpu_cores)]
        return {
            "accelerator": self.accelerator,
            "sharing": self.sharing,
            "servers": self.servers,
            "mape_colocated_pct": _finite_or_none(self.mape_colocated_pct),
            "colocated_rows": self.mape_pct("colocated")[1],
            "mape_solo_pct": _finite_or_none(self.mape_solo_pct),
            "solo_rows": self.mape_pct("solo")[1],
            "mape_pct_by_predictor": {
                kind: {p: _finite_or_none(self.mape_pct(kind, p)[0]) for p in PREDICTORS}
                for kind in ("colocated", "solo")
            },
            "unbounded_prediction_rows": {
                kind: {p: self.unbounded_rows(kind, p) for p in PREDICTORS} for kind in ("colocated", "solo")
            },
            "fitted_overhead_frac_heldout": {k: round(v, 4) for k, v in self.fitted_overhead_frac.items()},
            "saturated_runs": sorted({r.run_id for r in self.rows if r.saturated}),
            "max_background_cpu_cores": round(max(backgrounds), 3) if backgrounds else None,
        }


def _finite_or_none(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def _loads(run: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> list[MemberLoad]:
    loads = []
    for m in run["members"]:
        if m["model"] not in services:
            raise ValueError(f"run {run['id']!r}: no service time measured for {m['model']!r}")
        svc = services[m["model"]]
        loads.append(
            MemberLoad(
                model=m["model"],
                rate_rps=float(m["rate_rps"]),
                service_mean_ms=float(svc["mean"]),
                service_second_moment_ms2=float(svc.get("second_moment", float(svc["mean"]) ** 2)),
            )
        )
    return loads


def _measured_mean(member: Mapping[str, Any]) -> float:
    lat = member.get("latency_ms") or {}
    return float(lat.get("mean", math.nan))


def _heldout_calibration(
    runs: Sequence[Mapping[str, Any]], loads: Sequence[list[MemberLoad]], sharing: str, servers: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Leave-one-run-out fit of ``colocation_overhead_frac`` over the co-located, unsaturated runs.

    Uses :func:`qosched.policies.latency.calibration.leave_one_out`: for each run the overhead is
    fitted on the *other* runs only, so no reported point is predicted by a fit that saw it.
    Returns (run id → held-out predictions per member, run id → fitted overhead).
    """
    from qosched.policies.latency.calibration import CalibrationRun, leave_one_out
    from qosched.policies.latency.sharing import DeviceServices

    chosen = [
        i
        for i, run in enumerate(runs)
        if run["kind"] == "colocated"
        and not run.get("saturated", False)
        and all(_measured_mean(m) > 0 for m in run["members"])
        and sum(m.rate_rps * m.service_mean_ms / 1000.0 for m in loads[i]) < servers  # a stable queue
    ]
    if len(chosen) < 2:
        return {}, {}
    cal_runs = []
    for i in chosen:
        members = loads[i]
        services = DeviceServices.build(
            [m.rate_rps for m in members],
            [m.service_mean_ms for m in members],
            second_moment_ms2=[m.service_second_moment_ms2 for m in members],
            cores=max(1, servers),
        )
        measured = np.array([_measured_mean(m) for m in runs[i]["members"]])
        cal_runs.append(CalibrationRun(sharing, services, measured, label=str(runs[i]["id"])))
    _, folds = leave_one_out(cal_runs)
    predictions = {fold.test_labels[0]: [float(x) for x in fold.test_predicted_ms] for fold in folds}
    overheads = {fold.test_labels[0]: float(fold.params.colocation_overhead_frac) for fold in folds}
    return predictions, overheads


def build_report(colocation: Mapping[str, Any]) -> Report:
    """Predict every run of a ``colocation.json`` object and pair it with the measurement.

    Raises
    ------
    ValueError
        A run names a model with no service-time entry, or the object is not a colocation file.
    """
    if colocation.get("format") != "qosched-colocation-v1":
        raise ValueError(f"not a qosched colocation file (format {colocation.get('format')!r})")
    services: Mapping[str, Mapping[str, Any]] = colocation["service_ms"]
    settings = colocation.get("settings") or {}
    servers = int(settings.get("servers") or 1)
    device = str(colocation.get("device", "cpu"))
    accelerator = str(colocation.get("accelerator", device))
    sharing = sharing_mode(device, accelerator)
    runs = list(colocation["runs"])
    loads = [_loads(run, services) for run in runs]
    heldout, overheads = _heldout_calibration(runs, loads, sharing, servers)
    rows: list[ReportRow] = []
    for run, members in zip(runs, loads, strict=True):
        predicted = predict_mean_latency_ms(members, device=device, servers=servers, accelerator=accelerator)
        reference = reference_fcfs_servers_ms(members, servers) if device == "cpu" else predicted
        if run["kind"] == "solo":
            calibrated = predicted  # the co-location overhead applies only with ≥ 2 active services
        else:
            calibrated = heldout.get(str(run["id"]), [math.nan] * len(members))
        background = run.get("background_cpu_cores")
        for m, pred, cal, ref in zip(run["members"], predicted, calibrated, reference, strict=True):
            lat = m.get("latency_ms") or {}
            rows.append(
                ReportRow(
                    run_id=str(run["id"]),
                    kind=str(run["kind"]),
                    model=str(m["model"]),
                    instance=int(m.get("instance", 0)),
                    rate_rps=float(m["rate_rps"]),
                    utilization=float(m["offered_utilization"]),
                    requests=int(m.get("requests", 0)),
                    measured_mean_ms=float(lat.get("mean", math.nan)),
                    measured_p99_ms=float(lat.get("p99", math.nan)),
                    predicted_mean_ms=float(pred),
                    calibrated_mean_ms=float(cal),
                    reference_mean_ms=float(ref),
                    saturated=bool(run.get("saturated", False)),
                    background_cpu_cores=math.nan if background is None else float(background),
                )
            )
    return Report(
        accelerator=accelerator,
        sharing=sharing,
        servers=servers,
        rows=tuple(rows),
        fitted_overhead_frac=overheads,
    )


def load_report(out_dir: str | Path) -> Report:
    """Build the report of ``out_dir/colocation.json``."""
    path = Path(out_dir) / "colocation.json"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    try:
        return build_report(obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_HEADER: tuple[str, ...] = (
    "run",
    "model",
    "rate rps",
    "ρ",
    "n",
    "bg cores",
    "measured mean ms",
    "qosched ms",
    "err %",
    "calibrated ms",
    "err %",
    "fcfs-servers ms",
    "err %",
    "measured p99 ms",
)


def _fmt(x: float, spec: str) -> str:
    return "n/a" if math.isnan(x) else ("inf" if math.isinf(x) else format(x, spec))


def _cells(row: ReportRow) -> tuple[str, ...]:
    model = row.model if row.instance == 0 else f"{row.model}#{row.instance}"
    preds: list[str] = []
    for p in PREDICTORS:
        preds += [_fmt(row.prediction_ms(p), ".2f"), _fmt(100 * row.error_frac(p), "+.1f")]
    return (
        row.run_id + (" (saturated)" if row.saturated else ""),
        model,
        f"{row.rate_rps:.2f}",
        f"{row.utilization:.2f}",
        str(row.requests),
        _fmt(row.background_cpu_cores, ".2f"),
        _fmt(row.measured_mean_ms, ".2f"),
        *preds,
        _fmt(row.measured_p99_ms, ".2f"),
    )


_PREDICTOR_TITLES = {
    "qosched": "qosched model",
    "qosched_calibrated_heldout": "qosched model, overhead fitted on the other runs",
    "reference_fcfs_servers": "reference: FCFS server per model",
}


def _summary_lines(report: Report) -> list[str]:
    s = report.summary()
    lines = [f"device: {report.accelerator}, sharing mode `{report.sharing}`, {report.servers} core(s)"]
    for kind in ("colocated", "solo"):
        parts = []
        for p in PREDICTORS:
            mape, n = report.mape_pct(kind, p)
            unbounded = report.unbounded_rows(kind, p)
            extra = f", {unbounded} unbounded left out" if unbounded else ""
            parts.append(f"{_PREDICTOR_TITLES[p]} {_fmt(mape, '.2f')} % ({n} rows{extra})")
        lines.append(f"MAPE {kind} (mean latency): " + "; ".join(parts))
    if report.fitted_overhead_frac:
        vals = list(report.fitted_overhead_frac.values())
        lines.append(f"held-out fits of colocation_overhead_frac: {min(vals):.3f} .. {max(vals):.3f}")
    if s["saturated_runs"]:
        lines.append("saturated runs (left out): " + ", ".join(s["saturated_runs"]))
    if s["max_background_cpu_cores"] is not None:
        lines.append(
            f"background CPU load of other processes: up to {s['max_background_cpu_cores']:.2f} cores"
        )
    return lines


def render_table(report: Report) -> Any:
    """A :class:`rich.table.Table` of the rows, the MAPE lines as its caption."""
    from rich.table import Table

    table = Table(title=f"predicted vs measured mean latency on {report.accelerator}", caption_justify="left")
    for i, name in enumerate(_HEADER):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in report.rows:
        table.add_row(*_cells(row))
    table.caption = "\n".join(_summary_lines(report))
    return table


def report_markdown(report: Report) -> str:
    """The report as Markdown: summary lines, then one table row per (run, model)."""
    out = [f"# Predicted vs measured mean latency on `{report.accelerator}`", ""]
    out += [f"- {line}" for line in _summary_lines(report)]
    out += ["", "| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in report.rows]
    return "\n".join(out) + "\n"


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def report_json(report: Report) -> dict[str, Any]:
    """The report as a JSON object: ``summary`` and ``rows`` (non-finite numbers as null)."""
    rows = []
    for r in report.rows:
        d: dict[str, Any] = {k: (_json_float(v) if isinstance(v, float) else v) for k, v in asdict(r).items()}
        for p in PREDICTORS:
            d[f"error_frac_{p}"] = _json_float(r.error_frac(p))
        rows.append(d)
    return {"summary": report.summary(), "rows": rows}


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write ``report.md`` and ``report.json`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(report_markdown(report), encoding="utf-8")
    js = out / "report.json"
    js.write_text(json.dumps(report_json(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return [md, js]


__all__: Sequence[str] = (
    "PREDICTORS",
    "MemberLoad",
    "Report",
    "ReportRow",
    "build_report",
    "load_report",
    "predict_mean_latency_ms",
    "reference_fcfs_servers_ms",
    "render_table",
    "report_json",
    "report_markdown",
    "sharing_mode",
    "write_report",
)
