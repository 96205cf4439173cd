"""Predicted vs measured mean latency of the profiler's runs, and the MAPE.

The report is built from ``colocation.json`` alone (the solo service-time moments and every run's
rates and measurements are in it), so it can be rebuilt later — ``qosched profile report DIR`` —
when a latency model changes, without measuring again.

For every member of every run the prediction is the mean latency (queueing + service) from the
latency model for the device (:func:`predict_mean_latency_ms`), given only the solo profile
(E[S], E[S²]) and the offered rates. The error of a row is ``(predicted − measured) / measured``;
the report's figure of merit is the mean absolute percentage error over the co-located rows,

    MAPE = 100 % · (1/N) Σ |predicted − measured| / measured,

with saturated runs (requests left unserved) left out and listed separately. Solo runs get their
own MAPE: they check the single-model queue (models.md §A: M/D/1 or M/G/1) before any
interference enters.
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


def predictor_name(device: str, servers: int) -> str:
    """Which latency model :func:`predict_mean_latency_ms` uses for this device."""
    if device == "cuda":
        return "time-sliced device (models.md §A: mixture M/M/1 wait + own service); M/G/1 alone"
    return f"processor sharing over {servers} core(s), mean-field slowdown + per-server M/G/1"


def predict_mean_latency_ms(members: Sequence[MemberLoad], *, device: str, servers: int) -> list[float]:
    """Predicted mean latency [ms] of each member (in input order); ``inf`` when a queue is unstable.

    ``servers`` is how many requests the device serves at once at full speed (CPU cores divided
    by threads per server). See :func:`_cpu_processor_sharing_ms` and :func:`_time_sliced_ms`.
    """
    if not members:
        return []
    if device == "cuda":
        return _time_sliced_ms(members)
    return _cpu_processor_sharing_ms(members, servers)


def _time_sliced_ms(members: Sequence[MemberLoad]) -> list[float]:
    r"""models.md §A, time-sliced GPU; one model alone: M/G/1 (Pollaczek–Khinchine).

    λ = Σλᵢ, E[S] = Σλᵢ Sᵢ / λ, μ = 1/E[S], E[W] = 1/(μ − λ) − 1/μ, E[Rᵢ] = Sᵢ + E[W].
    """
    lam = np.array([m.rate_rps / 1000.0 for m in members])  # per ms
    s = np.array([m.service_mean_ms for m in members])
    if len(members) == 1:
        return _cpu_processor_sharing_ms(members, 1)
    total = float(lam.sum())
    if total <= 0:
        return [float(x) for x in s]
    mu = total / float((lam * s).sum())
    if total >= mu:
        return [math.inf] * len(members)
    wait = 1.0 / (mu - total) - 1.0 / mu
    return [float(x) + wait for x in s]


def _cpu_processor_sharing_ms(members: Sequence[MemberLoad], servers: int) -> list[float]:
    r"""Mean latency of single-threaded FCFS model servers sharing ``servers`` cores.

    Each model server is its own FCFS queue (one request at a time). The OS shares the cores
    among the servers that are busy: with k busy and c cores each runs at min(1, c/k) of full
    speed (processor sharing; Linux CFS with time slices much shorter than S). Mean-field
    approximation: server i, while busy, sees each other server j busy independently with
    probability bⱼ, so its slowdown is

    .. math:: σᵢ = E[\max(1, (1 + Kᵢ) / c)],  Kᵢ ~ PoissonBinomial(bⱼ, j ≠ i),
              bⱼ = min(1, λⱼ Sⱼ σⱼ)

    solved by fixed-point iteration; then each server is an M/G/1 queue with stretched service
    Tᵢ = σᵢ Sᵢ (E[Tᵢ²] = σᵢ² E[Sᵢ²]): E[Rᵢ] = Tᵢ + λᵢ E[Tᵢ²] / (2 (1 − λᵢ Tᵢ)), ``inf`` when
    λᵢ Tᵢ ≥ 1. With n ≤ c servers σ = 1 (each keeps a core) and E[Rᵢ] is the solo M/G/1 latency.
    """
    c = max(1, servers)
    lam = np.array([m.rate_rps / 1000.0 for m in members])  # per ms
    s = np.array([m.service_mean_ms for m in members])
    s2 = np.array([m.service_second_moment_ms2 for m in members])
    n = len(members)
    sigma = np.ones(n)
    for _ in range(500):
        busy = np.minimum(lam * s * sigma, 1.0)
        new = np.empty(n)
        for i in range(n):
            dist = np.array([1.0])  # P(K = k) over the others, built one server at a time
            for j in range(n):
                if j != i:
                    dist = np.append(dist * (1.0 - busy[j]), 0.0) + np.append(0.0, dist * busy[j])
            k = np.arange(dist.size)
            new[i] = float(np.sum(dist * np.maximum(1.0, (1.0 + k) / c)))
        if np.max(np.abs(new - sigma)) < 1e-10:
            sigma = new
            break
        sigma = 0.5 * (sigma + new)  # damped: the map is monotone, damping avoids oscillation
    t = sigma * s
    rho = lam * t
    out = []
    for i in range(n):
        if rho[i] >= 1.0:
            out.append(math.inf)
        else:
            out.append(float(t[i] + lam[i] * sigma[i] ** 2 * s2[i] / (2.0 * (1.0 - rho[i]))))
    return out


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One model in one run: what was offered, measured and predicted."""

    run_id: str
    kind: str  # "solo" or "colocated"
    model: str
    instance: int
    rate_rps: float
    utilization: float  # λ·E[S] with the solo E[S]
    requests: int
    measured_mean_ms: float
    measured_p99_ms: float
    predicted_mean_ms: float
    saturated: bool

    @property
    def error_frac(self) -> float:
        """(predicted − measured) / measured; nan when either is missing, inf when predicted is."""
        if not (self.measured_mean_ms > 0 and math.isfinite(self.measured_mean_ms)):
            return math.nan
        return (self.predicted_mean_ms - self.measured_mean_ms) / self.measured_mean_ms


@dataclass(frozen=True, slots=True)
class Report:
    """All rows and the summary figures."""

    accelerator: str
    predictor: str
    rows: tuple[ReportRow, ...]

    def _mape(self, kind: str) -> tuple[float, int]:
        errs = [
            abs(r.error_frac)
            for r in self.rows
            if r.kind == kind and not r.saturated and math.isfinite(r.error_frac)
        ]
        return (100.0 * sum(errs) / len(errs), len(errs)) if errs else (math.nan, 0)

    @property
    def mape_colocated_pct(self) -> float:
        """MAPE [%] of the predicted mean latency over co-located, unsaturated rows (nan if none)."""
        return self._mape("colocated")[0]

    @property
    def mape_solo_pct(self) -> float:
        """MAPE [%] over solo, unsaturated rows (nan if none)."""
        return self._mape("solo")[0]

    def summary(self) -> dict[str, Any]:
        """The headline figures as a JSON-ready dict."""
        return {
            "accelerator": self.accelerator,
            "predictor": self.predictor,
            "mape_colocated_pct": _finite_or_none(self.mape_colocated_pct),
            "colocated_rows": self._mape("colocated")[1],
            "mape_solo_pct": _finite_or_none(self.mape_solo_pct),
            "solo_rows": self._mape("solo")[1],
            "saturated_runs": sorted({r.run_id for r in self.rows if r.saturated}),
        }


def _finite_or_none(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def build_report(colocation: Mapping[str, Any]) -> Report:
    """Predict every run of a ``colocation.json`` object and pair it with the measurement.

    Raises
    ------
    ValueError
        A run names a model with no service-time entry, or the object is not a colocation file.
    """
    if colocation.get("format") != "qosched-colocation-v1":
        raise ValueError(f"not a qosched colocation file (format {colocation.get('format')!r})")
    services: Mapping[str, Mapping[str, float]] = colocation["service_ms"]
    settings = colocation.get("settings", {})
    servers = int(settings.get("servers") or 1)
    device = str(colocation.get("device", "cpu"))
    accelerator = str(colocation.get("accelerator", device))
    rows: list[ReportRow] = []
    for run in colocation["runs"]:
        members = run["members"]
        loads = []
        for m in members:
            if m["model"] not in services:
                raise ValueError(f"run {run['id']!r}: no service time measured for {m['model']!r}")
            svc = services[m["model"]]
            loads.append(
                MemberLoad(
                    model=m["model"],
                    rate_rps=float(m["rate_rps"]),
                    service_mean_ms=float(svc["mean"]),
                    service_second_moment_ms2=float(svc["second_moment"]),
                )
            )
        predicted = predict_mean_latency_ms(loads, device=device, servers=servers)
        for m, pred in zip(members, predicted, strict=True):
            lat = m.get("latency_ms") or {}
            rows.append(
                ReportRow(
                    run_id=run["id"],
                    kind=run["kind"],
                    model=m["model"],
                    instance=int(m.get("instance", 0)),
                    rate_rps=float(m["rate_rps"]),
                    utilization=float(m["offered_utilization"]),
                    requests=int(m.get("requests", 0)),
                    measured_mean_ms=float(lat.get("mean", math.nan)),
                    measured_p99_ms=float(lat.get("p99", math.nan)),
                    predicted_mean_ms=float(pred),
                    saturated=bool(run.get("saturated", False)),
                )
            )
    return Report(accelerator=accelerator, predictor=predictor_name(device, servers), rows=tuple(rows))


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
    "measured mean ms",
    "predicted mean ms",
    "error %",
    "measured p99 ms",
)


def _cells(row: ReportRow) -> tuple[str, ...]:
    err = row.error_frac
    model = row.model if row.instance == 0 else f"{row.model}#{row.instance}"
    return (
        row.run_id + (" (saturated)" if row.saturated else ""),
        model,
        f"{row.rate_rps:.2f}",
        f"{row.utilization:.2f}",
        str(row.requests),
        f"{row.measured_mean_ms:.2f}",
        f"{row.predicted_mean_ms:.2f}",
        f"{100 * err:+.1f}" if math.isfinite(err) else "n/a",
        f"{row.measured_p99_ms:.2f}",
    )


def _summary_lines(report: Report) -> list[str]:
    s = report.summary()
    lines = [f"predictor: {report.predictor}"]
    for kind in ("colocated", "solo"):
        mape = s[f"mape_{kind}_pct"]
        shown = "n/a" if mape is None else f"{mape:.2f} %"
        lines.append(f"MAPE {kind} (mean latency): {shown} over {s[f'{kind}_rows']} rows")
    if s["saturated_runs"]:
        lines.append("saturated runs (left out): " + ", ".join(s["saturated_runs"]))
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


def report_json(report: Report) -> dict[str, Any]:
    """The report as a JSON object: ``summary`` and ``rows`` (with ``error_frac``)."""
    rows = []
    for r in report.rows:
        d = asdict(r)
        d["error_frac"] = r.error_frac if math.isfinite(r.error_frac) else None
        d["predicted_mean_ms"] = r.predicted_mean_ms if math.isfinite(r.predicted_mean_ms) else None
        d["measured_mean_ms"] = r.measured_mean_ms if math.isfinite(r.measured_mean_ms) else None
        d["measured_p99_ms"] = r.measured_p99_ms if math.isfinite(r.measured_p99_ms) else None
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
    "Report",
    "ReportRow",
    "build_report",
    "load_report",
    "render_table",
    "report_json",
    "report_markdown",
    "write_report",
)
