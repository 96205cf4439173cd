"""The edge-TPU wait against a simulated queue at the Ibis co-location operating points.

For every (trace, level) of the Ibis co-location traces (``qosched validate-latency``'s
held-out set), simulate one FCFS edge TPU with Poisson arrivals at the nominal rates,
deterministic service S (the bundled profiles) and swap O on a model change (Lindley's
recursion, ``--requests`` per point, the first tenth dropped), and print the mean wait next to
Pollaczek–Khinchine (``swap_moment="bernoulli"``) and the Markov wait (``"markov"``, the
default), with the relative differences and the simulation's standard error (40 batch means).

``--floor REPS``: instead, the sampling noise of the experiments. Each level is re-run REPS
times in simulation with its own request count (the queue starting empty, as a level of the
trace does), and the mean |simulated − predicted| / predicted of every (level, model) mean
latency is printed per pair: what an exact model would be expected to score on these points.

    .venv/bin/python benchmarks/swap_wait_simulation.py [--requests 800000] [--seed 1]
    .venv/bin/python benchmarks/swap_wait_simulation.py --floor 40

docs/latency-models.md, "Held-out co-location pairs", shows its output.
"""

from __future__ import annotations

import argparse

import numpy as np

from qosched.extender.cli import validate_latency as v
from qosched.policies.latency.heldout import operating_points, short_name
from qosched.policies.latency.queueing import edgetpu_swap_queue


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


def floor(traces, profiles, reps: int, rng) -> None:  # type: ignore[no-untyped-def]
    """Expected MAPE of the exact (Markov) model at each pair's points, from ``reps`` simulated
    re-runs of every level with the trace's request count."""
    print("| pair | points | expected MAPE of an exact model | 10th-90th percentile over re-runs |")
    print("|---|---:|---:|---|")
    pooled = []
    for trace in traces:
        s = np.array([profiles[m].service_ms for m in trace.models])
        o = np.array([profiles[m].swap_ms for m in trace.models])
        errors = np.zeros((reps, 0))
        for level, point in zip(trace.levels, operating_points(trace), strict=True):
            predicted = edgetpu_swap_queue(point.rate_rps, s, o, swap_moment="markov").latency_ms
            lam = point.rate_rps / 1000.0
            n = len(level.model_idx)
            err = np.zeros((reps, len(s)))
            for r in range(reps):
                cls = rng.choice(len(lam), size=n, p=lam / lam.sum())
                svc = s[cls].copy()
                svc[1:] += np.where(cls[1:] != cls[:-1], o[cls[1:]], 0.0)
                resp = lindley_wait_ms(rng.exponential(1.0 / lam.sum(), size=n), svc) + svc
                means = np.array([resp[cls == i].mean() for i in range(len(s))])
                err[r] = np.abs(means - predicted) / predicted
            errors = np.concatenate([errors, err], axis=1)
        pooled.append(errors)
        _row(short_name(trace.name), errors)
    _row("all pairs", np.concatenate(pooled, axis=1))


def _row(name: str, errors: np.ndarray) -> None:
    lo, hi = np.percentile(errors.mean(axis=1), [10, 90])
    print(f"| {name} | {errors.shape[1]} | {100 * errors.mean():.2f} % | {100 * lo:.2f}-{100 * hi:.2f} % |")


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
        floor(traces, profiles, args.floor, rng)
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
