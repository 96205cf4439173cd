r"""The latency models against real measurements: the maths of the Ibis validation (pure).

The functions here take the measurements as parsed rows and return reports; they read no file.
The tool that reads ``shared/data/ibis`` and prints every table is
``qosched validate-latency`` (:mod:`qosched.extender.cli.validate_latency`).

Data (``shared/data/ibis``, see its PROVENANCE.md; copied from umassos/ibis):

``queueing_validation/queuing_tpu_inception_v3Xssd_mobilenet_v2.csv``
    inception_v3 and ssd_mobilenet_v2 served by one Coral edge TPU under open-loop Poisson load,
    five load levels (``vary_rho`` 0.1..0.5; inception's rate varies, ssd's is fixed). One row per
    request with ``start_time``/``end_time`` (client) and ``tpu_submit_time``/``tpu_end_time``
    (device side), in seconds.
``edgetpu_fcfs_validation.csv`` / ``trt_ps_validation.csv``
    Five (three) models run one at a time ("Sequential") and all submitted at once
    ("Concurrent"), 100 rounds, on an edge TPU (FCFS) and a Jetson Nano GPU with TensorRT
    (processor sharing).

Methods compared on the queueing trace (:func:`validate_queueing`):

``paper``
    models.md §A exactly: the profile's S and O (bundled ``edgetpu__*.json``, from the paper's
    table), deterministic per-model S'ᵢ.
``bernoulli``
    The same with the exact second moment of the request mix (the swap is paid with
    probability qᵢ, so E[S'ᵢ²] = pᵢSᵢ² + qᵢ(Sᵢ + Oᵢ)²).
``measured``
    Physics measured from the device-side timestamps of *other* load levels (leave one level
    out: no level is predicted from its own data): per model the solo service-time mean and
    second moment, the swap overhead, and the **host tail** h — the part of a request that runs
    on the host after the device is done (SSD's detection post-processing on the CPU), during
    which the device already serves the next request. Evidence in the trace: a request that
    queued behind an SSD request completes ≈5.5 ms after it, one that found the device idle
    ≈5.5 ms later than that; behind inception the difference is ≈1 ms. The device is then an
    M/G/1 queue of device times S'ᵢ − hᵢ, and E[Rᵢ] = S'ᵢ + W.

The measured swap frequency equals the paper's 1 − λᵢ/λ within 0.02 at every level (random
interleaving holds), see :func:`swap_frequency`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from qosched.policies.latency.calibration import CalibrationRun
from qosched.policies.latency.sharing import DeviceServices, ModelParams, predict

__all__ = [
    "BatchRow",
    "MeasuredProfile",
    "PaperTable",
    "ServiceSamples",
    "TraceLevel",
    "ValidationReport",
    "ValidationRow",
    "batch_check",
    "calibration_runs",
    "fcfs_batch_completion_ms",
    "measure_profile",
    "parse_batch_csv",
    "parse_queueing_trace",
    "predict_level",
    "ps_batch_completion_ms",
    "reconstruct_services",
    "swap_frequency",
    "validate_queueing",
]

#: (S, O) per model [ms]: the profile's mean service time and swap overhead, what the
#: ``paper`` and ``bernoulli`` methods predict with (the tool reads them from the bundled
#: ``edgetpu`` profiles).
PaperTable = Mapping[str, tuple[float, float]]

Measure = Literal["response", "device"]
Rates = Literal["nominal", "realized"]
Method = Literal["paper", "bernoulli", "measured"]

_QUEUEING_COLUMNS: Final = (
    "model",
    "input_rate",
    "vary_rho",
    "start_time",
    "end_time",
    "tpu_submit_time",
    "tpu_end_time",
)


# ------------------------------------------------------------------------------------------
# the queueing trace
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceLevel:
    """The requests of one load level (``vary_rho``) of the queueing trace.

    ``model_idx`` indexes ``models``; times are seconds as in the file; ``nominal_rate_rps`` is
    the ``input_rate`` column (the Poisson rate the load generator was set to).
    """

    level: float
    models: tuple[str, ...]
    model_idx: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    submit_s: np.ndarray
    device_end_s: np.ndarray
    nominal_rate_rps: np.ndarray

    def realized_rate_rps(self) -> np.ndarray:
        """Arrivals per second actually generated: count / (last − first start) per model [rps]."""
        span_s = float(self.start_s.max() - self.start_s.min())
        return np.bincount(self.model_idx, minlength=len(self.models)) / span_s

    def rates_rps(self, rates: Rates) -> np.ndarray:
        if rates == "nominal":
            return self.nominal_rate_rps
        if rates == "realized":
            return self.realized_rate_rps()
        raise ValueError(f"rates must be 'nominal' or 'realized' (got {rates!r})")

    def mean_latency_ms(self, measure: Measure) -> np.ndarray:
        """Measured mean latency per model [ms].

        ``response``: end_time − start_time (what the client saw, including the hand-off to the
        device server); ``device``: tpu_end_time − tpu_submit_time (queueing + service at the
        device, what ``qosched predict`` predicts without ``--end-to-end``).
        """
        if measure == "response":
            latency_ms = (self.end_s - self.start_s) * 1000.0
        elif measure == "device":
            latency_ms = (self.device_end_s - self.submit_s) * 1000.0
        else:
            raise ValueError(f"measure must be 'response' or 'device' (got {measure!r})")
        counts = np.bincount(self.model_idx, minlength=len(self.models))
        return np.bincount(self.model_idx, weights=latency_ms, minlength=len(self.models)) / counts


def _float(row: Mapping[str, str], column: str, where: str) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: column {column!r} is not a number: {row.get(column)!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{where}: column {column!r} is not finite: {value!r}")
    return value


def parse_queueing_trace(lines: Iterable[str], file: str) -> tuple[TraceLevel, ...]:
    """Parse the queueing trace into one :class:`TraceLevel` per ``vary_rho``, sorted by level.

    Parameters
    ----------
    lines : iterable of str
        The CSV's lines, header first.
    file : str
        Its name in error messages.

    Raises
    ------
    ValueError
        A missing column, a non-numeric value, or an ``input_rate`` that changes within a level
        (the message names the file and line).
    """
    groups: dict[float, dict[str, list]] = {}
    rate_of: dict[tuple[float, str], float] = {}
    model_order: list[str] = []
    reader = csv.DictReader(lines)
    missing = [c for c in _QUEUEING_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{file}: missing column(s) {', '.join(missing)}")
    for line, row in enumerate(reader, start=2):
        where = f"{file}:{line}"
        model = row["model"]
        if not model:
            raise ValueError(f"{where}: empty model")
        level = _float(row, "vary_rho", where)
        rate = _float(row, "input_rate", where)
        if rate_of.setdefault((level, model), rate) != rate:
            raise ValueError(f"{where}: input_rate of {model} changes within vary_rho={level}")
        if model not in model_order:
            model_order.append(model)
        g = groups.setdefault(level, {"model": [], "t": []})
        g["model"].append(model)
        g["t"].append(
            [_float(row, c, where) for c in ("start_time", "end_time", "tpu_submit_time", "tpu_end_time")]
        )
    models = tuple(model_order)
    levels = []
    for level in sorted(groups):
        g = groups[level]
        idx = np.array([models.index(m) for m in g["model"]])
        t = np.array(g["t"])
        present = {models[i] for i in idx}
        if present != set(models):
            raise ValueError(f"{file}: vary_rho={level} lacks model(s) {sorted(set(models) - present)}")
        levels.append(
            TraceLevel(
                level=level,
                models=models,
                model_idx=idx,
                start_s=t[:, 0],
                end_s=t[:, 1],
                submit_s=t[:, 2],
                device_end_s=t[:, 3],
                nominal_rate_rps=np.array([rate_of[(level, m)] for m in models]),
            )
        )
    return tuple(levels)


@dataclass(frozen=True, slots=True)
class ServiceSamples:
    """Per-request service intervals of a trace, in device completion order (first one dropped).

    service_ms : time between the device becoming free for the request (the previous completion,
        or its own submission if the device was idle) and its completion [ms].
    model_idx, prev_idx : the request's model and its predecessor's.
    idle : the request found the device idle (its service started at submission).
    """

    model_idx: np.ndarray
    prev_idx: np.ndarray
    service_ms: np.ndarray
    idle: np.ndarray

    @property
    def swap(self) -> np.ndarray:
        return self.model_idx != self.prev_idx


def reconstruct_services(level: TraceLevel) -> ServiceSamples:
    r"""Service intervals of every request from the device-side timestamps.

    Requests are ordered by completion (``tpu_end_time``); request n's service began at
    max(submitᵢ, endₙ₋₁). About 1 % of the requests complete out of submission order (the Ibis
    server takes the device lock in no strict order), which is why completion order is used:
    the inter-completion intervals are then the device's service intervals.
    """
    order = np.argsort(level.device_end_s, kind="stable")
    end = level.device_end_s[order]
    submit = level.submit_s[order]
    model = level.model_idx[order]
    prev_end = end[:-1]
    begin = np.maximum(submit[1:], prev_end)
    return ServiceSamples(
        model_idx=model[1:],
        prev_idx=model[:-1],
        service_ms=(end[1:] - begin) * 1000.0,
        idle=submit[1:] >= prev_end,
    )


def swap_frequency(level: TraceLevel) -> tuple[np.ndarray, np.ndarray]:
    """(measured fraction of each model's requests that followed another model, 1 − λᵢ/λ)."""
    samples = reconstruct_services(level)
    m = len(level.models)
    measured = np.array([samples.swap[samples.model_idx == i].mean() for i in range(m)])
    rates = level.nominal_rate_rps
    return measured, 1.0 - rates / rates.sum()


@dataclass(frozen=True, slots=True)
class MeasuredProfile:
    """Per-model service physics measured from device timestamps (see :func:`measure_profile`).

    All arrays are indexed like ``models``: solo mean S [ms] and E[S²] [ms²] (same model resident,
    host tail included), swap overhead O [ms], host tail h [ms].
    """

    models: tuple[str, ...]
    service_ms: np.ndarray
    second_moment_ms2: np.ndarray
    swap_ms: np.ndarray
    host_tail_ms: np.ndarray


def measure_profile(levels: Sequence[TraceLevel]) -> MeasuredProfile:
    r"""Measure S, E[S²], O and the host tail h of each model from the given levels' requests.

    Notes
    -----
    With a host tail hⱼ (work after the device, overlapping the next request), a request that
    found the device idle shows its full time S'ᵢ, while one that queued behind model j shows
    S'ᵢ − hⱼ (the device started it hⱼ before j's completion). Hence

    - S'ᵢ,swap / S'ᵢ,same: mean interval of idle-start requests, by whether a swap happened;
    - hⱼ = mean of (S'ᵢ,· − interval) over queued requests whose predecessor was j (≥ 0);
    - device time of each request: interval + (hⱼ if it queued) − hᵢ; from these
      Sᵢ = mean(same) + hᵢ, Oᵢ = mean(swap) − mean(same), E[Sᵢ²] = mean((device + hᵢ)² | same).
    """
    if not levels:
        raise ValueError("measure_profile needs at least one level")
    models = levels[0].models
    parts = [reconstruct_services(lv) for lv in levels]
    model = np.concatenate([p.model_idx for p in parts])
    prev = np.concatenate([p.prev_idx for p in parts])
    svc = np.concatenate([p.service_ms for p in parts])
    idle = np.concatenate([p.idle for p in parts])
    swap = model != prev
    m = len(models)
    idle_mean = np.zeros((m, 2))
    for i in range(m):
        for s in (0, 1):
            sel = idle & (model == i) & (swap == bool(s))
            if not sel.any():
                raise ValueError(f"no idle-start request of {models[i]} with swap={bool(s)} to measure")
            idle_mean[i, s] = svc[sel].mean()
    tail = np.zeros(m)
    for j in range(m):
        sel = ~idle & (prev == j)
        if sel.any():
            tail[j] = max(0.0, float(np.mean(idle_mean[model[sel], swap[sel].astype(int)] - svc[sel])))
    device = svc + np.where(idle, 0.0, tail[prev]) - tail[model]
    service = np.zeros(m)
    second = np.zeros(m)
    swap_ms = np.zeros(m)
    for i in range(m):
        same = device[(model == i) & ~swap]
        other = device[(model == i) & swap]
        service[i] = same.mean() + tail[i]
        second[i] = max(float(np.mean((same + tail[i]) ** 2)), service[i] ** 2)
        swap_ms[i] = max(0.0, other.mean() - same.mean())
    tail = np.minimum(tail, service)
    return MeasuredProfile(models, service, second, swap_ms, tail)


def predict_level(
    level: TraceLevel,
    service_ms: np.ndarray,
    swap_ms: np.ndarray,
    *,
    second_moment_ms2: np.ndarray | None = None,
    host_tail_ms: np.ndarray | None = None,
    params: ModelParams | None = None,
    rates: Rates = "nominal",
) -> np.ndarray:
    """Predicted mean latency of each model at ``level`` with the production ``edgetpu`` model [ms]."""
    services = DeviceServices.build(
        level.rates_rps(rates),
        service_ms,
        second_moment_ms2=second_moment_ms2,
        swap_ms=swap_ms,
        host_tail_ms=0.0 if host_tail_ms is None else host_tail_ms,
    )
    return predict("edgetpu", services, params).latency_ms


@dataclass(frozen=True, slots=True)
class ValidationRow:
    """One (run, model) comparison. ``rel_error`` = (predicted − measured) / measured."""

    run: str
    model: str
    rate_rps: float | None
    measured_ms: float
    predicted_ms: float

    @property
    def rel_error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Rows of one validation and their mean absolute percentage error."""

    title: str
    rows: tuple[ValidationRow, ...]

    @property
    def mape(self) -> float:
        """Mean |relative error| (a fraction: 0.02 = 2 %)."""
        return float(np.mean([abs(r.rel_error) for r in self.rows]))

    @property
    def max_abs_error(self) -> float:
        return float(np.max([abs(r.rel_error) for r in self.rows]))

    def format_table(self) -> str:
        """A Markdown table of the rows and the MAPE."""
        lines = [
            f"**{self.title}** — MAPE {100 * self.mape:.2f} %, max {100 * self.max_abs_error:.1f} %",
            "",
            "| run | model | λ [rps] | measured [ms] | predicted [ms] | error |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.run} | {r.model} | {'—' if r.rate_rps is None else f'{r.rate_rps:.3f}'} | {r.measured_ms:.2f} | "
                f"{r.predicted_ms:.2f} | {100 * r.rel_error:+.1f} % |"
            )
        return "\n".join(lines)


def _paper_parameters(models: Sequence[str], table: PaperTable) -> np.ndarray:
    """(M, 2) array of (S, O) per model from ``table``."""
    missing = [m for m in models if m not in table]
    if missing:
        raise ValueError(f"paper_table: no (S, O) for model(s) {', '.join(missing)}")
    return np.array([table[m] for m in models], dtype=float)


def validate_queueing(
    levels: Sequence[TraceLevel],
    method: Method = "measured",
    *,
    measure: Measure = "response",
    rates: Rates = "nominal",
    train_levels: Sequence[float] | None = None,
    paper_table: PaperTable | None = None,
) -> ValidationReport:
    """Compare the edge-TPU model with the measured mean latency of every (level, model).

    Parameters
    ----------
    levels : sequence of TraceLevel
        The queueing trace (:func:`parse_queueing_trace`).
    method : {"paper", "bernoulli", "measured"}
        See the module docstring.
    measure : {"response", "device"}
        end − start (client) or device-side time (see :meth:`TraceLevel.mean_latency_ms`).
    rates : {"nominal", "realized"}
        The file's ``input_rate`` or the arrival rate actually generated.
    train_levels : sequence of float, optional
        ``measured`` only: measure on these levels and report the others. Default: leave one
        level out (each level predicted from the other four).
    paper_table : mapping model → (S, O)
        Required by ``paper``/``bernoulli`` (the tool passes the bundled ``edgetpu`` profiles').
    """
    models = levels[0].models
    if method in ("paper", "bernoulli") and paper_table is None:
        raise ValueError(f"method {method!r} needs a paper_table of (S, O) per model")
    rows: list[ValidationRow] = []
    for level in levels:
        if method in ("paper", "bernoulli"):
            assert paper_table is not None
            so = _paper_parameters(models, paper_table)
            params = ModelParams(swap_moment="paper" if method == "paper" else "bernoulli")
            predicted = predict_level(level, so[:, 0], so[:, 1], params=params, rates=rates)
        elif method == "measured":
            if train_levels is None:
                train = [lv for lv in levels if lv.level != level.level]
            elif level.level in train_levels:
                continue
            else:
                train = [lv for lv in levels if lv.level in train_levels]
            prof = measure_profile(train)
            predicted = predict_level(
                level,
                prof.service_ms,
                prof.swap_ms,
                second_moment_ms2=prof.second_moment_ms2,
                host_tail_ms=prof.host_tail_ms,
                params=ModelParams(),
                rates=rates,
            )
        else:
            raise ValueError(f"method must be 'paper', 'bernoulli' or 'measured' (got {method!r})")
        measured = level.mean_latency_ms(measure)
        lam = level.rates_rps(rates)
        for i, model in enumerate(models):
            rows.append(
                ValidationRow(
                    f"vary_rho={level.level:g}", model, float(lam[i]), float(measured[i]), float(predicted[i])
                )
            )
    split = "leave-one-level-out" if train_levels is None else f"measured on vary_rho {list(train_levels)}"
    detail = f", {split}" if method == "measured" else ""
    title = f"edge TPU, method={method}{detail}, measure={measure}, rates={rates}"
    return ValidationReport(title, tuple(rows))


# ------------------------------------------------------------------------------------------
# sequential vs concurrent batches (edge TPU FCFS, Jetson TensorRT processor sharing)
# ------------------------------------------------------------------------------------------


def fcfs_batch_completion_ms(service_ms: Sequence[float]) -> np.ndarray:
    """Completion times of jobs submitted together to a FCFS server, in submission order [ms].

    Examples
    --------
    >>> fcfs_batch_completion_ms([10.0, 20.0, 5.0]).tolist()
    [10.0, 30.0, 35.0]
    """
    return np.cumsum(np.asarray(service_ms, dtype=float))


def ps_batch_completion_ms(service_ms: Sequence[float]) -> np.ndarray:
    r"""Completion times of jobs submitted together to an egalitarian processor-sharing server [ms].

    Notes
    -----
    With sizes sorted x₍₁₎ ≤ … ≤ x₍ₙ₎, all n jobs progress at rate 1/n until the smallest is
    done, then n − 1 share, …: T₍ₖ₎ = T₍ₖ₋₁₎ + (n − k + 1)(x₍ₖ₎ − x₍ₖ₋₁₎). Results are in input order.

    Examples
    --------
    >>> ps_batch_completion_ms([30.0, 10.0, 20.0]).tolist()  # 3·10; 30 + 2·10; 50 + 10
    [60.0, 30.0, 50.0]
    """
    x = np.asarray(service_ms, dtype=float)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    steps = np.diff(np.concatenate([[0.0], sorted_x]))
    sharers = len(x) - np.arange(len(x))
    done = np.empty_like(x)
    done[order] = np.cumsum(steps * sharers)
    return done


@dataclass(frozen=True, slots=True)
class BatchRow:
    model: str
    sequential_ms: float
    concurrent_ms: float


def parse_batch_csv(lines: Iterable[str], file: str) -> tuple[BatchRow, ...]:
    """Mean response time per model, Sequential and Concurrent, in the file's model order.

    ``lines`` are the CSV's lines (header first), ``file`` its name in error messages. The first
    request of every (model, process_type) series is dropped: it includes one-off warm-up (e.g.
    78 ms instead of 25 ms for Yolo4-tiny's first TensorRT request).
    """
    series: dict[tuple[str, str], list[float]] = {}
    order: list[str] = []
    reader = csv.DictReader(lines)
    for col in ("model", "process_type", "response_time"):
        if col not in (reader.fieldnames or ()):
            raise ValueError(f"{file}: missing column {col}")
    for line, row in enumerate(reader, start=2):
        kind = row["process_type"]
        if kind not in ("Sequential", "Concurrent"):
            raise ValueError(f"{file}:{line}: process_type must be Sequential or Concurrent (got {kind!r})")
        if row["model"] not in order:
            order.append(row["model"])
        series.setdefault((row["model"], kind), []).append(_float(row, "response_time", f"{file}:{line}"))
    rows = []
    for model in order:
        seq, conc = series.get((model, "Sequential")), series.get((model, "Concurrent"))
        if not seq or not conc or len(seq) < 2 or len(conc) < 2:
            raise ValueError(f"{file}: model {model} lacks Sequential or Concurrent rows")
        rows.append(BatchRow(model, float(np.mean(seq[1:])), float(np.mean(conc[1:]))))
    return tuple(rows)


def batch_check(kind: Literal["fcfs", "ps"], rows: Sequence[BatchRow]) -> ValidationReport:
    """Predict the concurrent response times from the sequential ones and compare.

    ``fcfs`` (edge TPU, ``edgetpu_fcfs_validation.csv``): the five requests of a round are
    submitted together and served FCFS in the file's model order, so each waits for the ones
    before it; the sequential times already contain the swap (consecutive requests are for
    different models). ``ps`` (Jetson Nano, ``trt_ps_validation.csv``): TensorRT contexts share
    the GPU, modelled as egalitarian processor sharing. ``rows``: :func:`parse_batch_csv`.
    """
    sequential = [r.sequential_ms for r in rows]
    if kind == "fcfs":
        predicted = fcfs_batch_completion_ms(sequential)
        title = "edge TPU, 5 requests submitted together, FCFS"
    elif kind == "ps":
        predicted = ps_batch_completion_ms(sequential)
        title = "Jetson Nano TensorRT, 3 requests submitted together, processor sharing"
    else:
        raise ValueError(f"kind must be 'fcfs' or 'ps' (got {kind!r})")
    return ValidationReport(
        title,
        tuple(
            ValidationRow("concurrent", r.model, None, r.concurrent_ms, float(p))
            for r, p in zip(rows, predicted, strict=True)
        ),
    )


def calibration_runs(
    levels: Sequence[TraceLevel],
    paper_table: PaperTable,
    *,
    measure: Measure = "response",
    rates: Rates = "nominal",
) -> tuple[CalibrationRun, ...]:
    """The queueing trace as :class:`~.calibration.CalibrationRun` s (one per level), with the
    profile's S and O (deterministic), for fitting :class:`ModelParams` terms on some levels and
    judging them on the others."""
    so = _paper_parameters(levels[0].models, paper_table)
    return tuple(
        CalibrationRun(
            "edgetpu",
            DeviceServices.build(level.rates_rps(rates), so[:, 0], swap_ms=so[:, 1]),
            level.mean_latency_ms(measure),
            label=f"vary_rho={level.level:g}",
        )
        for level in levels
    )
