"""The edge-TPU wait against a simulated queue at the Ibis co-location operating points.

For every (trace, level) of the Ibis co-location traces (``qosched validate-latency``'s
held-out set), simulate one FCFS edge TPU with Poisson arrivals at the nominal rates,
deterministic service S (the bundled profiles) and swap O on a model change (Lindley's
recursion, ``--requests`` per point, the first tenth dropped), and print the mean wait next to
Pollaczek–Khinchine (``swap_moment="bernoulli"``) and the Markov wait (``"markov"``, the
default), with the relative differences and the simulation's standard error (40 batch means).

``--floor REPS``: instead, the sampling noise of the experiments
(``qosched.policies.latency.heldout.noise_floor``). Each level is re-run REPS times in
simulation with the experiment's design (each model's request count, i.i.d. exponential gaps at
its nominal rate, the device idle at 0) and its trace's own physics (empirical service times,
swap overhead, host tail, hand-off): the expected MAPE of an exact model on re-runs, what that
exact model scores on the measured runs, the noise's sources (re-runs' SD, the data's own batch
means, a replay of the measured arrivals), and the held-out methods against the exact model's
expectation.

    .venv/bin/python benchmarks/swap_wait_simulation.py [--requests 800000] [--seed 1]
    .venv/bin/python benchmarks/swap_wait_simulation.py --floor 400

docs/latency-models.md, "Held-out co-location pairs", shows its output.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import numpy as np

from qosched.extender.cli import validate_latency as v
from qosched.policies.latency.heldout import (
    CoLocationTrace,
    Predictor,
    noise_floor,
    operating_points,
    short_name,
    simulate_level_means,
    trace_physics,
    train,
)
from qosched.policies.latency.queueing import edgetpu_swap_queue
from qosched.policies.latency.sharing import ModelParams
from qosched.policies.latency.validation import TraceLevel


def lindley_wait_ms(gaps_ms: np.ndarray, service_ms: np.ndarray) -> np.ndarray:
    """Wait of each request of a FCFS single server: W_{k+1} = max(0, W_k + D_k − A_{k+1})."""
    wait = np.empty(len(service_ms))
    w = 0.0
    for k in range(len(service_ms)):
        wait[k] = w
        w = max(0.0, w + service_ms[k] - gaps_ms[k])
    return wait


def simulate(
    rates_rps: np.ndarray, service_ms: np.ndarray, swap_ms: np.ndarray, n: int, rng
) -> tuple[float, float]:
    """(mean wait, its standard error) of the simulated queue [ms]."""
    lam = rates_rps / 1000.0
    cls = rng.choice(len(lam), size=n, p=lam / lam.sum())
    gaps = rng.exponential(1.0 / lam.sum(), size=n)
    svc = service_ms[cls].copy()
    svc[1:] += np.where(cls[1:] != cls[:-1], swap_ms[cls[1:]], 0.0)
    wait = lindley_wait_ms(gaps, svc)[n // 10 :]
    batches = np.array([b.mean() for b in np.array_split(wait, 40)])
    return float(wait.mean()), float(batches.std(ddof=1) / np.sqrt(len(batches)))


def batch_means_se(level: TraceLevel, model: int, batches: int = 20) -> float:
    """Standard error of a level's mean response of ``model`` from its own data: ``batches``
    batch means of consecutive requests (arrival order), which keeps the queue's correlation."""
    order = np.argsort(level.start_s, kind="stable")
    latency_ms = (level.end_s - level.start_s)[order][level.model_idx[order] == model] * 1000.0
    means = np.array([b.mean() for b in np.array_split(latency_ms, batches)])
    return float(means.std(ddof=1) / np.sqrt(batches))


def floor(traces: Sequence[CoLocationTrace], reps: int, rng: np.random.Generator) -> None:
    """The experiments' noise: ``reps`` simulated re-runs of every level with its own design and
    physics (heldout.noise_floor), against the measured means and the held-out methods."""
    nf = noise_floor(traces, reps, rng)
    names = [t.name for t in traces]
    print("Exact model (each trace's own physics, the experiment's design) on re-runs and on the runs:\n")
    print(
        "| pair | points | expected MAPE on re-runs (10th-90th pct) | P(MAPE <= 3 %) | on the measured runs | re-runs it beats |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for name in [*names, None]:
        r = nf.rerun_mape(pair=name)
        actual = nf.actual_mape(pair=name)
        lo, hi = np.percentile(r, [10, 90])
        points = sum(p == name or name is None for p in nf.pair)
        print(
            f"| {short_name(name) if name else 'all pairs'} | {points} | {100 * r.mean():.2f} % "
            f"({100 * lo:.2f}-{100 * hi:.2f} %) | {np.mean(r <= 0.03):.3f} | {100 * actual:.2f} % | "
            f"{np.mean(r > actual):.3f} |"
        )
    sd = nf.sd_frac()
    service_sd = nf.replayed_ms.std(axis=0, ddof=1) / nf.expected_ms
    replay_err = np.abs(nf.replayed_ms.mean(axis=0) - nf.measured_ms) / nf.measured_ms
    z = (nf.measured_ms - nf.expected_ms) / nf.simulated_ms.std(axis=0, ddof=1)
    data_se = []
    for trace in traces:
        for lv in trace.levels:
            data_se += [
                batch_means_se(lv, i) / lv.mean_latency_ms("response")[i] for i in range(len(trace.models))
            ]
    data_se_arr = np.array(data_se)
    print("\nWhere a level's mean comes from (mean over the points) [%]:\n")
    print(
        "| pair | SD over re-runs | data's own SE (20 batch means) | SD with the measured arrivals | replay vs measured (MAPE) | mean z^2 |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in [*names, None]:
        sel = np.array([p == name or name is None for p in nf.pair])
        print(
            f"| {short_name(name) if name else 'all pairs'} | {100 * sd[sel].mean():.2f} | "
            f"{100 * data_se_arr[sel].mean():.2f} | {100 * service_sd[sel].mean():.2f} | "
            f"{100 * replay_err[sel].mean():.2f} | {np.mean(z[sel] ** 2):.2f} |"
        )
    reports = {r.method: r for r in v.held_out_reports(traces) if r.protocol == "leave-one-pair-out"}
    key = list(zip(nf.pair, nf.label, nf.model, strict=True))
    print("\nLeave-one-pair-out methods: MAPE [%] on the measured runs, against the exact model's")
    print("expectation (no run noise), and expected on re-runs:\n")
    print("| method | measured runs | vs expectation | expected on re-runs |")
    print("|---|---:|---:|---:|")
    for method, report in reports.items():
        by_key = {
            (pair, row.run, row.model): row.predicted_ms for pair, rep in report.pairs for row in rep.rows
        }
        predicted = np.array([by_key[k] for k in key])
        bias = np.mean(np.abs(predicted - nf.expected_ms) / nf.expected_ms)
        print(
            f"| {method} | {100 * nf.actual_mape(predicted):.2f} | {100 * bias:.2f} | "
            f"{100 * nf.rerun_mape(predicted).mean():.2f} |"
        )
    steady = []
    for trace in traces:
        physics = trace_physics(trace)
        for lv in trace.levels:
            counts = np.bincount(lv.model_idx, minlength=len(trace.models))
            long_run = simulate_level_means(lv.nominal_rate_rps, counts * 60, physics, 3, rng)
            steady.append(long_run.mean(axis=0))
    design = nf.expected_ms / np.concatenate(steady) - 1.0
    print(
        f"\nThe design (finite runs of fixed counts) against the steady state (3 runs 60x as long): "
        f"mean {100 * design.mean():+.2f} %, range {100 * design.min():+.1f}..{100 * design.max():+.1f} %"
    )
    design_check(traces, rng)
    oracle_report(traces)
    profiles = v.held_out_profiles(sorted({m for t in traces for m in t.models}))
    deterministic = Predictor("predict", ModelParams(), train("bernoulli", [], profiles).physics)
    errors = [
        np.abs(deterministic.predict(point) / lv.mean_latency_ms("response") - 1.0)
        for trace in traces
        for lv, point in zip(trace.levels, operating_points(trace), strict=True)
    ]
    print(
        "\npredict without the bundled E[S^2] (measured on the incv3+ssd-mnetv2 trace), held out: "
        f"{100 * np.concatenate(errors).mean():.2f} %"
    )


def _dispersion(times_s: np.ndarray, window_s: float, horizon_s: float) -> float:
    """Index of dispersion (variance / mean) of the counts in windows of ``window_s``."""
    n = int(horizon_s // window_s)
    counts = np.bincount((times_s[times_s < n * window_s] // window_s).astype(int), minlength=n)
    return float(counts.var() / counts.mean())


def design_check(traces: Sequence[CoLocationTrace], rng: np.random.Generator) -> None:
    """Is each level the design the simulation assumes? Per stream (model): its span against
    count/rate (z = (span − N/λ)/(√N/λ), Gamma), the dispersion of its counts in 1-20 s windows
    against the same stream simulated, and whether a request's next gap depends on the number
    of requests in the system (an open loop does not)."""
    z, corr, span = [], [], []
    windows = (1.0, 5.0, 10.0, 20.0)
    real: dict[float, list[float]] = {w: [] for w in windows}
    simulated: dict[float, list[float]] = {w: [] for w in windows}
    for trace in traces:
        for lv in trace.levels:
            order = np.argsort(lv.start_s, kind="stable")
            start = lv.start_s[order]
            in_system = np.arange(len(start)) - np.searchsorted(np.sort(lv.end_s), start, side="right")
            for i, rate in enumerate(lv.nominal_rate_rps):
                mine = lv.model_idx[order] == i
                times = start[mine] - lv.start_s.min()
                n = len(times)
                span.append(times[-1])
                z.append((times[-1] - n / rate) / (np.sqrt(n) / rate))
                corr.append(abs(np.corrcoef(in_system[mine][:-1], np.diff(times))[0, 1]))
                horizon = min(150.0, times[-1])
                for w in windows:
                    real[w].append(_dispersion(times, w, horizon))
                    sims = [np.cumsum(rng.exponential(1.0 / rate, n)) for _ in range(50)]
                    simulated[w].append(float(np.mean([_dispersion(t, w, min(150.0, t[-1])) for t in sims])))
    zs = np.array(z)
    print(
        f"\nDesign check over {len(zs)} streams: spans {min(span):.0f}-{max(span):.0f} s, span z mean "
        f"{zs.mean():+.2f}, mean z^2 {np.mean(zs**2):.2f} (Gamma: 0, 1); max |corr(in system, next gap)| "
        f"{max(corr):.3f}; dispersion of counts, measured / simulated: "
        + ", ".join(f"{w:g} s {np.mean(real[w]):.2f} / {np.mean(simulated[w]):.2f}" for w in windows)
    )


def oracle_report(traces: Sequence[CoLocationTrace]) -> None:
    """``measured`` held out, with the held-out pair's single-pair models given their own
    measured physics (an oracle, not a method): how much of its error those models carry."""
    profiles = v.held_out_profiles(sorted({m for t in traces for m in t.models}))
    everything = train("measured", traces, profiles).physics
    single = [m for m in everything if sum(m in t.models for t in traces) == 1]
    print("\nmeasured, leave-one-pair-out, with the own physics of (oracle):\n")
    print("| oracle for | " + " | ".join(short_name(t.name) for t in traces) + " | all pairs |")
    print("|---|" + "---:|" * (len(traces) + 1))
    for oracle in [(), *((m,) for m in single), tuple(single)]:
        errors: list[np.ndarray] = []
        cells = []
        for k, held_out in enumerate(traces):
            predictor = train("measured", [t for j, t in enumerate(traces) if j != k], profiles)
            physics = dict(predictor.physics) | {m: everything[m] for m in oracle if m in held_out.models}
            predictor = dataclasses.replace(predictor, physics=physics)
            err = np.concatenate(
                [
                    np.abs(predictor.predict(point) / lv.mean_latency_ms("response") - 1.0)
                    for lv, point in zip(held_out.levels, operating_points(held_out), strict=True)
                ]
            )
            cells.append(f"{100 * err.mean():.2f}")
            errors.append(err)
        label = " + ".join(oracle) if oracle else "none"
        print(f"| {label} | " + " | ".join(cells) + f" | {100 * np.concatenate(errors).mean():.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--floor", type=int, default=0, metavar="REPS")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    traces = v.held_out_traces(v.ibis_dir())
    profiles = v.held_out_profiles(sorted({m for t in traces for m in t.models}))
    if args.floor:
        floor(traces, args.floor, rng)
        return
    print("| pair | level | ρ | simulated W [ms] | P-K | Markov |")
    print("|---|---|---:|---:|---:|---:|")
    for trace in traces:
        s = np.array([profiles[m].service_ms for m in trace.models])
        o = np.array([profiles[m].swap_ms for m in trace.models])
        for point in operating_points(trace):
            sim, se = simulate(point.rate_rps, s, o, args.requests, rng)
            pk = edgetpu_swap_queue(point.rate_rps, s, o, swap_moment="bernoulli")
            markov = edgetpu_swap_queue(point.rate_rps, s, o, swap_moment="markov")
            w_pk, w_mk = float(pk.wait_ms[0]), float(markov.wait_ms[0])
            print(
                f"| {short_name(trace.name)} | {point.label} | {float(pk.utilization):.3f} | "
                f"{sim:.2f} ± {se:.2f} | {w_pk:.2f} ({100 * (w_pk / sim - 1):+.1f} %) | "
                f"{w_mk:.2f} ({100 * (w_mk / sim - 1):+.1f} %) |"
            )


if __name__ == "__main__":
    main()
