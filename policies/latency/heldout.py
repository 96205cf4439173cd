r"""Edge-TPU co-location predicted on data the model has not seen (pure; reads no file).

Two protocols over the Ibis co-location traces (each trace is one set of models sharing one
Coral edge TPU under Poisson load at five levels; a *pair* here, one of them has three models):

leave-one-level-out
    Each level of a trace is predicted from what was trained on the *other levels of the same
    trace*.
leave-one-pair-out
    Each trace is predicted from what was trained on the *other traces* only: its models, their
    profiles and the rates asked about are all the held-out pair contributes. Per-point
    constants cannot be fitted: a :class:`Predictor` sees an :class:`OperatingPoint` (models and
    rates, no latency).

Methods (what a :class:`Predictor` is trained to, :func:`train`):

``paper``
    models.md §A exactly with each model's profile (S, O), deterministic S'ᵢ. Trains nothing.
``bernoulli``
    The same with the exact second moment of the request mix and the Pollaczek–Khinchine wait
    (``swap_moment="bernoulli"``: what ``qosched predict`` computed before the Markov wait).
    Trains nothing.
``predict``
    What ``qosched predict --accelerator edgetpu`` computes: the production ``edgetpu`` model
    (:func:`~qosched.policies.latency.sharing.predict` with the default :class:`ModelParams`,
    the Markov wait) on the profile's S, O and E[S²]. Trains nothing. (The bundled profiles' E[S²] of
    inception_v3 and ssd_mobilenet_v2 were measured on the inception_v3 × ssd_mobilenet_v2 trace;
    ``bernoulli`` is the same model without them.)
``calibrated``
    The Markov wait plus the global terms ``colocation_overhead_frac`` and ``swap_prob_scale``
    fitted by least squares (:func:`~qosched.policies.latency.calibration.fit`) to the
    training traces' measured means.
``measured``
    Per-model physics (S, E[S²], O, host tail h) measured from the device timestamps of the
    training traces (:func:`~qosched.policies.latency.validation.measure_profile`), averaged
    over the traces that hold the model; a model no training trace holds keeps its profile. For
    the response time (end − start) it adds the host's hand-off d (:func:`handoff_ms`, measured
    on the training traces): the time from a request's start to its submission to the device
    server when it finds the system empty (0.26–0.27 ms in every trace). A constant delay of
    every arrival shifts a FCFS queue without changing it, so it adds to the mean exactly:
    R = d + (device response).

Swap overhead and the pair (:func:`swap_by_predecessor`): the Edge TPU caches a model's
parameters in its 8 MiB on-chip SRAM; models compiled separately share no cache, so every switch
reloads the incoming model's cached parameters (at most 8 MiB) and the cost depends on the
incoming model, not on which model ran before. Measured in the traces, Oᵢ after each
predecessor j agrees within 0.5 ms (see docs/latency-models.md), so the pair enters the model
only through the swap probability qᵢ = 1 − λᵢ/λ.

The experiments' own noise (:func:`noise_floor`): each level re-run in simulation with the
experiment's design (each model's request count, i.i.d. exponential gaps at its nominal rate, an
idle device at 0) and its trace's own physics (:func:`trace_physics`): the expectation an exact
model would predict, how far one run's means stray from it, and a replay of the measured arrivals
(:func:`replay_level_means`). Pure: the caller passes the random generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np

from qosched.policies.latency import calibration
from qosched.policies.latency.sharing import DeviceServices, ModelParams, Prediction, predict
from qosched.policies.latency.tail import percentile_latency_ms
from qosched.policies.latency.validation import (
    Measure,
    TraceLevel,
    ValidationReport,
    ValidationRow,
    measure_profile,
    reconstruct_services,
)

__all__ = [
    "HELD_OUT_METHODS",
    "CoLocationTrace",
    "HeldOutMethod",
    "HeldOutReport",
    "ModelProfile",
    "NoiseFloor",
    "OperatingPoint",
    "Predictor",
    "TracePhysics",
    "format_summary",
    "handoff_ms",
    "leave_one_level_out",
    "leave_one_pair_out",
    "measured_latency_ms",
    "noise_floor",
    "operating_points",
    "replay_level_means",
    "short_name",
    "simulate_level_means",
    "swap_by_predecessor",
    "trace_physics",
    "train",
]

HeldOutMethod = Literal["paper", "bernoulli", "predict", "calibrated", "measured"]
HELD_OUT_METHODS: Final[tuple[HeldOutMethod, ...]] = (
    "paper",
    "bernoulli",
    "predict",
    "calibrated",
    "measured",
)
#: The global terms the ``calibrated`` method fits.
CALIBRATED_FIELDS: Final = ("colocation_overhead_frac", "swap_prob_scale")


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What a profile says of one model on the edge TPU: mean solo S [ms], swap overhead O [ms],
    solo E[S²] [ms²] (None: deterministic)."""

    service_ms: float
    swap_ms: float
    second_moment_ms2: float | None = None


#: Profile per trace model name (the tool maps trace names to the bundled ``edgetpu`` profiles).
ProfileTable = Mapping[str, ModelProfile]


@dataclass(frozen=True, slots=True)
class CoLocationTrace:
    """One co-location experiment: the levels of one trace (all with the same models)."""

    levels: tuple[TraceLevel, ...]

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a CoLocationTrace needs at least one level")
        if any(lv.models != self.levels[0].models for lv in self.levels):
            raise ValueError("every level of a CoLocationTrace must hold the same models")

    @property
    def models(self) -> tuple[str, ...]:
        return self.levels[0].models

    @property
    def name(self) -> str:
        """The models joined by ``+``, e.g. ``inception_v3+ssd_mobilenet_v2``."""
        return "+".join(self.models)

    def without_level(self, level: float) -> CoLocationTrace:
        return CoLocationTrace(tuple(lv for lv in self.levels if lv.level != level))


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """What is asked about a point: the co-located models and their rates [rps]. No latency."""

    label: str
    models: tuple[str, ...]
    rate_rps: np.ndarray


def operating_points(trace: CoLocationTrace) -> tuple[OperatingPoint, ...]:
    """One point per level: the load generator's nominal rates (what a user asks about)."""
    return tuple(
        OperatingPoint(f"vary_rho={lv.level:g}", trace.models, lv.nominal_rate_rps.copy())
        for lv in trace.levels
    )


@dataclass(frozen=True, slots=True)
class _Physics:
    """Per-model inputs of the edge-TPU model: S, E[S²] (NaN: deterministic), O, h [ms, ms²]."""

    service_ms: float
    second_moment_ms2: float
    swap_ms: float
    host_tail_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Predictor:
    """A trained predictor: the model parameters and the per-model physics it predicts with."""

    method: HeldOutMethod
    params: ModelParams
    physics: Mapping[str, _Physics] = field(default_factory=dict)
    #: Host hand-off before the device server [ms], added to every latency (see :func:`handoff_ms`).
    handoff_ms: float = 0.0

    def predict(self, point: OperatingPoint, percentile: float | None = None) -> np.ndarray:
        """Mean latency of each model of ``point`` [ms] (inf where ρ ≥ 1), or its ``percentile``
        (50..99.9) by :func:`~qosched.policies.latency.tail.percentile_latency_ms`; plus the
        hand-off d (a constant shift of every request's latency moves its mean and percentiles
        alike)."""
        prediction = self.prediction(point)
        if percentile is None:
            return prediction.latency_ms + self.handoff_ms
        return percentile_latency_ms(prediction, percentile) + self.handoff_ms

    def prediction(self, point: OperatingPoint) -> Prediction:
        """The production ``edgetpu`` model's full :class:`Prediction` at ``point``."""
        missing = [m for m in point.models if m not in self.physics]
        if missing:
            raise ValueError(f"no profile for model(s) {', '.join(missing)}")
        phys = [self.physics[m] for m in point.models]
        service = np.array([p.service_ms for p in phys])
        second = np.array([p.second_moment_ms2 for p in phys])
        services = DeviceServices.build(
            point.rate_rps,
            service,
            second_moment_ms2=np.where(np.isnan(second), service**2, second),
            swap_ms=[p.swap_ms for p in phys],
            host_tail_ms=[p.host_tail_ms for p in phys],
        )
        return predict("edgetpu", services, self.params)


def _profile_physics(profiles: ProfileTable, *, moments: bool) -> dict[str, _Physics]:
    return {
        name: _Physics(
            p.service_ms,
            p.second_moment_ms2 if moments and p.second_moment_ms2 is not None else np.nan,
            p.swap_ms,
        )
        for name, p in profiles.items()
    }


def _measured_physics(training: Sequence[CoLocationTrace], profiles: ProfileTable) -> dict[str, _Physics]:
    """Per-model physics measured on the training traces, averaged over the traces that hold
    the model; the profile (deterministic) for the others."""
    samples: dict[str, list[tuple[float, float, float, float]]] = {}
    for trace in training:
        prof = measure_profile(trace.levels)
        for i, name in enumerate(prof.models):
            samples.setdefault(name, []).append(
                (
                    float(prof.service_ms[i]),
                    float(prof.second_moment_ms2[i]),
                    float(prof.swap_ms[i]),
                    float(prof.host_tail_ms[i]),
                )
            )
    physics = _profile_physics(profiles, moments=False)
    for name, rows in samples.items():
        physics[name] = _Physics(*(float(v) for v in np.mean(rows, axis=0)))
    return physics


def handoff_ms(traces: Sequence[CoLocationTrace]) -> float:
    """Mean hand-off d = tpu_submit − start [ms] of the requests that found the system empty.

    The client's request reaches the device server's queue d after its start; a request that
    arrives while others are in the system may also wait for a gRPC worker before its
    submission, which is queueing (the FCFS wait), so only requests that arrive to an empty
    system (every earlier request completed) measure d itself. One host constant: 0.27, 0.27,
    0.26 ms in the three Ibis traces, whatever the model or load.
    """
    samples = []
    for trace in traces:
        for lv in trace.levels:
            order = np.argsort(lv.start_s, kind="stable")
            start, end = lv.start_s[order], lv.end_s[order]
            last_end = np.maximum.accumulate(np.concatenate(([-np.inf], end[:-1])))
            empty = start > last_end
            samples.append((lv.submit_s[order] - start)[empty] * 1000.0)
    pooled = np.concatenate(samples) if samples else np.zeros(0)
    if not pooled.size:
        raise ValueError("no request found the system empty: cannot measure the hand-off")
    return float(pooled.mean())


def _calibration_runs(
    training: Sequence[CoLocationTrace], physics: Mapping[str, _Physics], measure: Measure
) -> list[calibration.CalibrationRun]:
    runs = []
    for trace in training:
        missing = [m for m in trace.models if m not in physics]
        if missing:
            raise ValueError(f"no profile for model(s) {', '.join(missing)}")
        phys = [physics[m] for m in trace.models]
        for lv in trace.levels:
            services = DeviceServices.build(
                lv.nominal_rate_rps, [p.service_ms for p in phys], swap_ms=[p.swap_ms for p in phys]
            )
            runs.append(calibration.CalibrationRun("edgetpu", services, lv.mean_latency_ms(measure)))
    return runs


def train(
    method: HeldOutMethod,
    training: Sequence[CoLocationTrace],
    profiles: ProfileTable,
    *,
    measure: Measure = "response",
) -> Predictor:
    """Train a :class:`Predictor` on ``training`` (the only measurements it sees).

    ``profiles`` must cover every model the predictor will be asked about (and, for
    ``calibrated``, every training model).
    """
    if method == "paper":
        return Predictor(method, ModelParams(swap_moment="paper"), _profile_physics(profiles, moments=False))
    if method == "bernoulli":
        return Predictor(
            method, ModelParams(swap_moment="bernoulli"), _profile_physics(profiles, moments=False)
        )
    if method == "predict":
        return Predictor(method, ModelParams(), _profile_physics(profiles, moments=True))
    if method == "calibrated":
        physics = _profile_physics(profiles, moments=False)
        runs = _calibration_runs(training, physics, measure)
        params = calibration.fit(runs, CALIBRATED_FIELDS, ModelParams()) if runs else ModelParams()
        return Predictor(method, params, physics)
    if method == "measured":
        handoff = handoff_ms(training) if measure == "response" and training else 0.0
        return Predictor(method, ModelParams(), _measured_physics(training, profiles), handoff)
    raise ValueError(f"method must be one of {', '.join(HELD_OUT_METHODS)} (got {method!r})")


@dataclass(frozen=True, slots=True)
class HeldOutReport:
    """The held-out rows of one (protocol, method), grouped by pair (trace name)."""

    protocol: str
    method: HeldOutMethod
    pairs: tuple[tuple[str, ValidationReport], ...]

    @property
    def rows(self) -> tuple[ValidationRow, ...]:
        return tuple(row for _, report in self.pairs for row in report.rows)

    @property
    def mape(self) -> float:
        """Mean |relative error| over every held-out point (a fraction)."""
        return float(np.mean([abs(r.rel_error) for r in self.rows]))

    def pair_mape(self) -> dict[str, float]:
        return {name: report.mape for name, report in self.pairs}


def measured_latency_ms(level: TraceLevel, measure: Measure, percentile: float | None = None) -> np.ndarray:
    """Measured mean latency per model [ms], or its ``percentile`` (linear interpolation)."""
    if percentile is None:
        return level.mean_latency_ms(measure)
    start, end = (
        (level.start_s, level.end_s) if measure == "response" else (level.submit_s, level.device_end_s)
    )
    latency_ms = (end - start) * 1000.0
    return np.array(
        [np.percentile(latency_ms[level.model_idx == i], percentile) for i in range(len(level.models))]
    )


def _rows(
    trace: CoLocationTrace,
    levels: Sequence[TraceLevel],
    predictor: Predictor,
    measure: Measure,
    percentile: float | None,
) -> list:
    rows = []
    by_label = {f"vary_rho={lv.level:g}": lv for lv in levels}
    for point in operating_points(CoLocationTrace(tuple(levels))):
        predicted = predictor.predict(point, percentile)
        measured = measured_latency_ms(by_label[point.label], measure, percentile)
        rows += [
            ValidationRow(point.label, m, float(point.rate_rps[i]), float(measured[i]), float(predicted[i]))
            for i, m in enumerate(trace.models)
        ]
    return rows


def leave_one_pair_out(
    traces: Sequence[CoLocationTrace],
    method: HeldOutMethod,
    profiles: ProfileTable,
    *,
    measure: Measure = "response",
    percentile: float | None = None,
) -> HeldOutReport:
    """Predict every trace with a predictor trained on the *other* traces only (the mean, or the
    ``percentile`` — training always fits means)."""
    pairs = []
    for k, held_out in enumerate(traces):
        predictor = train(method, [t for j, t in enumerate(traces) if j != k], profiles, measure=measure)
        rows = _rows(held_out, held_out.levels, predictor, measure, percentile)
        pairs.append((held_out.name, ValidationReport(f"{held_out.name}, {method}, held out", tuple(rows))))
    return HeldOutReport("leave-one-pair-out", method, tuple(pairs))


def leave_one_level_out(
    traces: Sequence[CoLocationTrace],
    method: HeldOutMethod,
    profiles: ProfileTable,
    *,
    measure: Measure = "response",
    percentile: float | None = None,
) -> HeldOutReport:
    """Predict every level of every trace with a predictor trained on the other levels of the
    same trace only (the mean, or the ``percentile``)."""
    pairs = []
    for trace in traces:
        rows = []
        for lv in trace.levels:
            predictor = train(method, [trace.without_level(lv.level)], profiles, measure=measure)
            rows += _rows(trace, [lv], predictor, measure, percentile)
        pairs.append((trace.name, ValidationReport(f"{trace.name}, {method}, level held out", tuple(rows))))
    return HeldOutReport("leave-one-level-out", method, tuple(pairs))


def swap_by_predecessor(trace: CoLocationTrace) -> np.ndarray:
    """Measured swap overhead O[i, j] of model i after model j [ms] (NaN on the diagonal).

    From requests that found the device idle (no queueing, no predecessor's host tail): the mean
    service interval of i after j minus that of i after i. NaN where a combination has no such
    request.
    """
    parts = [reconstruct_services(lv) for lv in trace.levels]
    model = np.concatenate([p.model_idx for p in parts])
    prev = np.concatenate([p.prev_idx for p in parts])
    svc = np.concatenate([p.service_ms for p in parts])
    idle = np.concatenate([p.idle for p in parts])
    m = len(trace.models)
    mean = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(m):
            sel = idle & (model == i) & (prev == j)
            if sel.any():
                mean[i, j] = svc[sel].mean()
    out = mean - np.diag(mean)[:, None]
    np.fill_diagonal(out, np.nan)
    return out


_SHORT: Final = (
    ("efficientnet", "effnet"),
    ("ssd_mobilenet_", "ssd-mnet"),
    ("mobilenet_", "mnet"),
    ("inception_", "inc"),
)


def short_name(name: str) -> str:
    """A pair's name with the model names abbreviated (``inception_v4+mobilenet_v2`` →
    ``incv4+mnetv2``), so the summary fits 100 columns."""
    for long, short in _SHORT:
        name = name.replace(long, short)
    return name


def format_summary(reports: Sequence[HeldOutReport]) -> str:
    """Markdown table of MAPE [%] per pair and method, one block per protocol (≤ 100 columns)."""
    methods = list(dict.fromkeys(r.method for r in reports))
    by_key = {(r.protocol, r.method): r for r in reports}
    names = [name for name, _ in reports[0].pairs]
    width = max(len(short_name(n)) for n in [*names, "all pairs"])
    lines = [
        f"| {'pair':<{width}} | pts | " + " | ".join(f"{m:>10}" for m in methods) + " |",
        "|" + "-" * (width + 2) + "|----:|" + "|".join("-" * 11 + ":" for _ in methods) + "|",
    ]
    for protocol in dict.fromkeys(r.protocol for r in reports):
        lines.append(
            f"| {'*' + protocol + '*':<{width}} |     | " + " | ".join(" " * 10 for _ in methods) + " |"
        )
        for name in [*names, "all pairs"]:
            cells, points = [], 0
            for method in methods:
                report = by_key.get((protocol, method))
                if report is None:
                    cells.append(f"{'—':>10}")
                    continue
                rows = report.rows if name == "all pairs" else dict(report.pairs)[name].rows
                points = len(rows)
                cells.append(f"{100 * float(np.mean([abs(r.rel_error) for r in rows])):>10.2f}")
            label = "all pairs" if name == "all pairs" else short_name(name)
            lines.append(f"| {label:<{width}} | {points:>3} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# the experiments' own noise
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TracePhysics:
    """What one Ibis host served a trace's models with, measured on the trace itself: per model
    the empirical same-model service times S' [ms] (host tail included), the swap overhead O and
    the host tail h [ms]; the hand-off d [ms]."""

    service_samples_ms: tuple[np.ndarray, ...]
    swap_ms: np.ndarray
    host_tail_ms: np.ndarray
    handoff_ms: float


def trace_physics(trace: CoLocationTrace) -> TracePhysics:
    """The physics of ``trace`` from all its levels (:func:`measure_profile`'s reconstruction):
    S' samples are the device times of the requests that followed their own model, plus hᵢ."""
    prof = measure_profile(trace.levels)
    parts = [reconstruct_services(lv) for lv in trace.levels]
    model = np.concatenate([p.model_idx for p in parts])
    prev = np.concatenate([p.prev_idx for p in parts])
    svc = np.concatenate([p.service_ms for p in parts])
    idle = np.concatenate([p.idle for p in parts])
    tail = prof.host_tail_ms
    device = svc + np.where(idle, 0.0, tail[prev]) - tail[model]
    samples = tuple(
        np.maximum(device[(model == i) & (prev == i)] + tail[i], tail[i]) for i in range(len(trace.models))
    )
    return TracePhysics(samples, prof.swap_ms.copy(), tail.copy(), handoff_ms([trace]))


def _serve_means(
    arrival_ms: np.ndarray, cls: np.ndarray, physics: TracePhysics, rng: np.random.Generator
) -> np.ndarray:
    r"""Mean response per model [ms], shape (reps, models), of one FCFS edge TPU serving the
    requests ``cls`` (reps, n) arriving at ``arrival_ms`` (reps, n, sorted per row).

    Request k's time S'ₖ is drawn from its model's samples, plus Oᵢ when the previous request
    was another model; the device is free hᵢ before the request completes (its host tail
    overlaps the next request), so Lindley's recursion runs on the busy time Dₖ = S'ₖ − hᵢ:
    Wₖ₊₁ = max(0, Wₖ + Dₖ − Aₖ₊₁); response = d + Wₖ + S'ₖ. The replicates (rows) advance
    together. A model with no request in a row gets NaN.
    """
    reps, n = cls.shape
    m = len(physics.service_samples_ms)
    service = np.empty((reps, n))
    for i in range(m):
        sel = cls == i
        service[sel] = rng.choice(physics.service_samples_ms[i], size=int(sel.sum()))
    swap = np.zeros((reps, n), dtype=bool)
    swap[:, 1:] = cls[:, 1:] != cls[:, :-1]
    service += np.where(swap, physics.swap_ms[cls], 0.0)
    busy = np.maximum(service - physics.host_tail_ms[cls], 0.0)
    wait = np.empty((reps, n))
    free = np.full(reps, -np.inf)
    for k in range(n):
        begin = np.maximum(arrival_ms[:, k], free)
        wait[:, k] = begin - arrival_ms[:, k]
        free = begin + busy[:, k]
    response = physics.handoff_ms + wait + service
    counts = np.stack([(cls == i).sum(axis=1) for i in range(m)], axis=1)
    sums = np.stack([(response * (cls == i)).sum(axis=1) for i in range(m)], axis=1)
    # NaN for a model with no request in a replicate (only in hand-made inputs)
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def simulate_level_means(
    rate_rps: np.ndarray,
    counts: np.ndarray,
    physics: TracePhysics,
    reps: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mean response time per model [ms] of ``reps`` simulated re-runs of one level, shape
    (reps, models).

    The Ibis experiment's design (read off the traces): model i sends exactly ``counts[i]``
    requests (its rate × 180 s) with i.i.d. exponential gaps at ``rate_rps[i]``, every stream
    starting at 0 with the device idle; the device as in :func:`_serve_means`.
    """
    rate = np.asarray(rate_rps, dtype=float)
    counts = np.asarray(counts, dtype=int)
    if rate.shape != counts.shape or rate.ndim != 1 or len(rate) != len(physics.service_samples_ms):
        raise ValueError("rate_rps, counts and physics must describe the same models")
    if np.any(rate <= 0) or np.any(counts <= 0) or reps < 1:
        raise ValueError("rates and counts must be positive and reps ≥ 1")
    m = len(rate)
    arrivals = np.concatenate(
        [np.cumsum(rng.exponential(1000.0 / rate[i], size=(reps, counts[i])), axis=1) for i in range(m)],
        axis=1,
    )
    order = np.argsort(arrivals, axis=1, kind="stable")
    cls = np.repeat(np.arange(m), counts)[order]
    return _serve_means(np.take_along_axis(arrivals, order, axis=1), cls, physics, rng)


def replay_level_means(
    level: TraceLevel, physics: TracePhysics, reps: int, rng: np.random.Generator
) -> np.ndarray:
    """Mean response time per model [ms], shape (reps, models), of the level's *measured*
    arrivals (start times, in order) served as in :func:`_serve_means` with freshly drawn
    service times: how much of a level's mean is the service's noise, and whether the
    simulated device reproduces the measured means given the arrivals."""
    if reps < 1:
        raise ValueError("reps must be ≥ 1")
    order = np.argsort(level.start_s, kind="stable")
    arrival_ms = (level.start_s[order] - level.start_s.min()) * 1000.0
    cls = level.model_idx[order]
    return _serve_means(np.tile(arrival_ms, (reps, 1)), np.tile(cls, (reps, 1)), physics, rng)


@dataclass(frozen=True, slots=True)
class NoiseFloor:
    """Simulated re-runs of every (trace, level) against the measured means.

    ``pair``, ``label``, ``model`` name each point; ``simulated_ms`` (reps, points) are the
    re-runs' means, ``expected_ms`` their average (the exact model's prediction for the
    experiment), ``measured_ms`` the trace's means (end − start), ``replayed_ms`` (replays,
    points) the means of the measured arrivals served with fresh service draws
    (:func:`replay_level_means`).
    """

    pair: tuple[str, ...]
    label: tuple[str, ...]
    model: tuple[str, ...]
    simulated_ms: np.ndarray
    measured_ms: np.ndarray
    replayed_ms: np.ndarray

    @property
    def expected_ms(self) -> np.ndarray:
        return self.simulated_ms.mean(axis=0)

    def _sel(self, pair: str | None) -> np.ndarray:
        return np.array([pair is None or p == pair for p in self.pair])

    def rerun_mape(self, predicted_ms: np.ndarray | None = None, pair: str | None = None) -> np.ndarray:
        """MAPE of ``predicted_ms`` (default: the exact model, ``expected_ms``) on each re-run,
        shape (reps,): mean |predicted − re-run| / re-run over the points of ``pair`` (or all)."""
        predicted = self.expected_ms if predicted_ms is None else np.asarray(predicted_ms)
        sel = self._sel(pair)
        sim = self.simulated_ms[:, sel]
        return np.mean(np.abs(predicted[sel] - sim) / sim, axis=1)

    def actual_mape(self, predicted_ms: np.ndarray | None = None, pair: str | None = None) -> float:
        """MAPE of ``predicted_ms`` (default ``expected_ms``) on the measured means."""
        predicted = self.expected_ms if predicted_ms is None else np.asarray(predicted_ms)
        sel = self._sel(pair)
        return float(np.mean(np.abs(predicted[sel] - self.measured_ms[sel]) / self.measured_ms[sel]))

    def sd_frac(self) -> np.ndarray:
        """Standard deviation of each point's re-run mean, relative to its expectation."""
        return self.simulated_ms.std(axis=0, ddof=1) / self.expected_ms


def noise_floor(
    traces: Sequence[CoLocationTrace], reps: int, rng: np.random.Generator, *, replays: int = 20
) -> NoiseFloor:
    """Re-run every level of every trace ``reps`` times in simulation
    (:func:`simulate_level_means`) with the trace's own physics (:func:`trace_physics`), its
    nominal rates and its request counts: what an exact model of these experiments predicts
    (``expected_ms``) and how far one run's means stray from it; and ``replays`` replays of
    its measured arrivals (:func:`replay_level_means`)."""
    pair, label, model, sims, measured, replayed = [], [], [], [], [], []
    for trace in traces:
        physics = trace_physics(trace)
        for lv in trace.levels:
            counts = np.bincount(lv.model_idx, minlength=len(trace.models))
            sims.append(simulate_level_means(lv.nominal_rate_rps, counts, physics, reps, rng))
            replayed.append(replay_level_means(lv, physics, replays, rng))
            measured.append(lv.mean_latency_ms("response"))
            pair += [trace.name] * len(trace.models)
            label += [f"vary_rho={lv.level:g}"] * len(trace.models)
            model += list(trace.models)
    return NoiseFloor(
        tuple(pair),
        tuple(label),
        tuple(model),
        np.concatenate(sims, axis=1),
        np.concatenate(measured),
        np.concatenate(replayed, axis=1),
    )
