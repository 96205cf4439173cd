"""Time one step of the QoE control law and its convergence on the simulated plant, against
baselines measured in the same run.

**Step cost** for each size (default 8 and 64 services on one pool, classes prod / batch / free in
turn, M/M/1 services with random rates and service times, observations from the plant):

* ``contended``  capacity 85 % of the total set-point demand: the law calls the two-stage
  ``FairShareSolver`` (warm: compiled once, Parameters only); p50 / p99 over repeats with
  perturbed observations (±10 %);
* ``first``      the first contended step (building and compiling both cvxpy problems);
* ``uncontended`` capacity 150 % of demand: the same law without the LP (closed-form fast path),
  the baseline: ratio ``contended / uncontended`` is what the fair allocation costs;
* ``proportional`` the proportional split of the same demands (``proportional_shares``), the
  heuristic the solver falls back to.

**Convergence** on the M/M/1 plant (``run_closed_loop``), from a bad start (one service holds
half the pool, the others split the rest; every queue stable), 20 seeded plants per size and per
utilisation band at the set point (0.3-0.8, and 0.8-0.95 where the theory says the
multiplicative rule with the defaults must oscillate: alpha*beta*eps >= 2 from rho = 7/8): steps
until no share moves by more than 0.5 % of the pool any more, and services satisfied (latency
<= SLO) at the start and at the end, for the M/M/1 inversion (rates known) and for the
multiplicative rule (rates unknown); plus the wall time of one closed-loop step.

Run: ``.venv/bin/python benchmarks/bench_controller.py [--sizes 8,64] [--repeats 200] [--plants 20]
[--seed 0]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import cvxpy as cp
import numpy as np

from qosched.policies.control import ControlSettings, MM1Plant, ServiceInput, control_step, run_closed_loop
from qosched.policies.fairness.shares import FairShareSolverCache, proportional_shares

CLASSES = ("prod", "batch", "free")
TARGETS = {"prod": 1.0, "batch": 0.9, "free": 0.5}


def random_plant(
    rng: np.random.Generator, n: int, capacity: float, rho: tuple[float, float]
) -> tuple[MM1Plant, np.ndarray]:
    """n M/M/1 services whose set-point demands x* sum to 0.8 * capacity, with utilisation at the
    set point uniform in ``rho``; SLOs follow: T = 1000 k w / (0.9 x* (1 - rho)) ms."""
    work_ms = rng.uniform(0.5, 5.0, n)  # ms of one whole unit (1000 milli) per request
    pct = np.where(rng.random(n) < 0.3, 95.0, np.nan)
    k = np.where(np.isnan(pct), 1.0, -np.log1p(-np.nan_to_num(pct) / 100.0))
    x_star = rng.dirichlet(np.full(n, 4.0)) * 0.8 * capacity
    util = rng.uniform(*rho, n)
    lam = util * x_star / work_ms
    slo_ms = 1000.0 * k * work_ms / (0.9 * x_star * (1.0 - util))
    return MM1Plant(1.0 / work_ms, lam, pct), slo_ms


def inputs(plant: MM1Plant, slo_ms: np.ndarray, shares: np.ndarray, cap: float) -> list[ServiceInput]:
    lat = plant.latency_ms(shares)
    n = len(shares)
    return [
        ServiceInput(
            share=float(shares[i]),
            slo_ms=float(slo_ms[i]),
            observed_ms=float(lat[i]),
            lo=0.0,
            hi=cap,
            qos_target=TARGETS[CLASSES[i % 3]],
            class_name=CLASSES[i % 3],
            rate_rps=float(plant.rate_rps[i]),
            percentile=None if np.isnan(plant.percentile[i]) else float(plant.percentile[i]),
        )
        for i in range(n)
    ]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_step(n: int, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed + n)
    cap = 1000.0 * n
    plant, slo = random_plant(rng, n, cap, (0.3, 0.8))
    demand = plant.share_for_latency(0.9 * slo)
    start_shares = np.full(n, cap / n)
    base = inputs(plant, slo, start_shares, cap)
    settings = ControlSettings()

    def perturbed() -> list[ServiceInput]:
        noise = rng.uniform(0.9, 1.1, n)
        return [replace(s, observed_ms=s.observed_ms * noise[i]) for i, s in enumerate(base)]  # type: ignore[operator]

    contended_cap = 0.85 * float(demand.sum())
    cache = FairShareSolverCache()
    t = time.perf_counter()
    first = control_step(perturbed(), contended_cap, settings, cache)
    first_ms = 1e3 * (time.perf_counter() - t)

    def timed(cap_: float) -> tuple[list[float], list[str]]:
        out, statuses = [], []
        for _ in range(args.repeats):
            batch = perturbed()
            t0 = time.perf_counter()
            step = control_step(batch, cap_, settings, cache)
            out.append(1e3 * (time.perf_counter() - t0))
            statuses.append(step.status)
        return out, statuses

    contended_ms, c_status = timed(contended_cap)
    uncontended_ms, u_status = timed(1.5 * float(demand.sum()))
    prop_ms = []
    for _ in range(args.repeats):
        d = demand * rng.uniform(0.9, 1.1, n)
        t0 = time.perf_counter()
        proportional_shares(d, np.zeros(n), np.full(n, cap), contended_cap)
        prop_ms.append(1e3 * (time.perf_counter() - t0))

    print(f"\n== one step of the law, {n} services (first contended step status {first.status})")
    print(f"  first contended step (build + compile + solve) {first_ms:9.1f} ms")
    print(
        f"  contended (LP)      p50 {pct(contended_ms, 50):8.3f} ms  p99 {pct(contended_ms, 99):8.3f} ms"
        f"  status {sorted(set(c_status))}"
    )
    print(
        f"  uncontended (no LP) p50 {pct(uncontended_ms, 50):8.3f} ms  p99 {pct(uncontended_ms, 99):8.3f} ms"
        f"  status {sorted(set(u_status))}"
    )
    print(f"  proportional split  p50 {pct(prop_ms, 50):8.4f} ms")
    print(f"  ratio contended/uncontended p50 = {pct(contended_ms, 50) / pct(uncontended_ms, 50):.1f}x")


def bench_convergence(n: int, rho: tuple[float, float], args: argparse.Namespace) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for rule in ("mm1-inversion", "multiplicative"):
        acc: dict[str, list[float]] = {"steps": [], "sat0": [], "sat1": [], "step_ms": [], "unconverged": []}
        for p in range(args.plants):
            rng = np.random.default_rng(args.seed + 1000 * n + p)
            cap = 1000.0 * n
            plant, slo = random_plant(rng, n, cap, rho)
            # Bad start: service 0 holds half the pool, the rest is split evenly; every queue stable.
            x0 = np.full(n, 0.5 * cap / max(n - 1, 1))
            x0[0] = 0.5 * cap
            floor = 1.05 * plant.rate_rps / plant.service_rate_per_share_rps
            x0 = np.maximum(x0, floor)
            x0 *= min(1.0, cap / x0.sum())
            svc = [replace(s, rate_rps=None) for s in inputs(plant, slo, x0, cap)]
            est = None if rule == "mm1-inversion" else np.full(n, np.nan)
            cache = FairShareSolverCache()
            t0 = time.perf_counter()
            trace = run_closed_loop(plant, svc, cap, args.steps, rate_estimate_rps=est, solvers=cache)
            acc["step_ms"].append(1e3 * (time.perf_counter() - t0) / args.steps)
            k = trace.converged_at(rel_tol=0.005)
            acc["unconverged"].append(float(k is None))
            acc["steps"].append(float(args.steps if k is None else k))
            sat = trace.satisfied(slo)
            acc["sat0"].append(float(sat[0].sum()))
            acc["sat1"].append(float(sat[-1].sum()))
        rows[rule] = acc
    print(
        f"\n== convergence on the M/M/1 plant, {n} services, utilisation at the set point"
        f" {rho[0]:g}-{rho[1]:g}, {args.plants} plants, bad start"
    )
    for rule, acc in rows.items():
        steps = np.array(acc["steps"])
        print(
            f"  {rule:15s} steps to converge median {np.median(steps):4.0f}  max {steps.max():4.0f}"
            f"  (not converged in {args.steps}: {int(sum(acc['unconverged']))})"
            f"  satisfied {np.mean(acc['sat0']):5.1f} -> {np.mean(acc['sat1']):5.1f} of {n}"
            f"  one step {np.median(acc['step_ms']):6.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,64")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--plants", type=int, default=20)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"cvxpy {cp.__version__}; solver CLARABEL")
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        bench_step(n, args)
    for rho in ((0.3, 0.8), (0.8, 0.95)):
        for n in sizes:
            bench_convergence(n, rho, args)


if __name__ == "__main__":
    main()
