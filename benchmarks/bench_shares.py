"""Time the fair-share optimiser and the placement-time fairness term, against baselines measured
in the same run.

Share problems (``FairShareSolver``), for each size (default 8 and 64 services, classes prod /
batch / free in turn, demands uniform in [0.02, 0.3] of the device, capacity 70 % of the total
demand so every instance is contended and both LP stages run):

* ``first``   building the solver and its first solve (cvxpy compiles both stages);
* ``warm``    re-solves of the same solver with new values (Parameters only), p50 / p99;
* ``rebuild`` the baseline without Parameters: a new problem built and compiled for every solve;
* ``prop``    the proportional heuristic (the fallback), no solver.

Ratios: ``rebuild p50 / warm p50`` (what compiling once buys) and ``warm p50 / prop p50`` (what
the optimiser costs over the heuristic). Quality over the same instances: the minimum normalised
QoS and the within-class Gini (mean over classes) of the optimiser and of the proportional split.

Placement term: ``fairness_term`` on a cached ``FairnessSnapshot`` of N services (default 5,000)
against the straightforward way, recomputing ``gini_by_class`` and the minimum over all services
with the node's changes applied.

Run: ``.venv/bin/python benchmarks/bench_shares.py [--sizes 8,64] [--warm 200] [--rebuild 20]
[--solver CLARABEL] [--services 5000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import cvxpy as cp
import numpy as np

from qosched.policies.fairness.gini import gini_by_class
from qosched.policies.fairness.shares import (
    FairnessSnapshot,
    FairShareSolver,
    ShareSettings,
    fairness_term,
    proportional_shares,
    qos_at_share,
)

CLASSES = ("prod", "batch", "free")
TARGETS = {"prod": 1.0, "batch": 0.9, "free": 0.5}


def instance(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Random contended instance: demand, target, lo, hi, capacity."""
    classes = [CLASSES[i % 3] for i in range(n)]
    demand = rng.uniform(0.02, 0.3, n)
    target = np.array([TARGETS[c] for c in classes])
    lo = np.where(rng.random(n) < 0.2, rng.uniform(0.0, 0.5, n) * demand, 0.0)
    hi = np.where(rng.random(n) < 0.2, rng.uniform(0.3, 1.0, n) * demand, 1.0)
    capacity = 0.7 * float(np.minimum(hi, demand).sum())
    return demand, target, lo, np.maximum(hi, lo), max(capacity, float(lo.sum()))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def mean_class_gini(nq: np.ndarray, classes: list[str]) -> float:
    return float(np.mean(list(gini_by_class(nq, classes).values())))


def bench_size(n: int, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    classes = [CLASSES[i % 3] for i in range(n)]
    settings = ShareSettings(solver=args.solver)
    instances = [instance(rng, n) for _ in range(max(args.warm, args.rebuild) + 1)]

    start = time.perf_counter()
    solver = FairShareSolver(n, classes, settings)
    first_res = solver.solve(*instances[0])
    first_ms = 1e3 * (time.perf_counter() - start)

    warm_ms, solver_ms, statuses = [], [], []
    q_opt_min, q_prop_min, g_opt, g_prop = [], [], [], []
    for inst in instances[1 : args.warm + 1]:
        start = time.perf_counter()
        res = solver.solve(*inst)
        warm_ms.append(1e3 * (time.perf_counter() - start))
        solver_ms.append(res.solve_ms or 0.0)
        statuses.append(res.status)
        demand, target, lo, hi, cap = inst
        prop_nq = qos_at_share(proportional_shares(demand, lo, hi, cap), demand) / target
        q_opt_min.append(res.min_normalised_qos)
        q_prop_min.append(float(prop_nq.min()))
        g_opt.append(mean_class_gini(res.normalised_qos, classes))
        g_prop.append(mean_class_gini(prop_nq, classes))

    rebuild_ms = []
    for inst in instances[1 : args.rebuild + 1]:
        start = time.perf_counter()
        FairShareSolver(n, classes, settings).solve(*inst)
        rebuild_ms.append(1e3 * (time.perf_counter() - start))

    prop_ms = []
    for inst in instances[1 : args.warm + 1]:
        demand, _, lo, hi, cap = inst
        start = time.perf_counter()
        proportional_shares(demand, lo, hi, cap)
        prop_ms.append(1e3 * (time.perf_counter() - start))

    ok = sum(s == "optimal" for s in statuses)
    print(
        f"\n== {n} services ({args.solver}); first solve status {first_res.status}; warm optimal {ok}/{len(statuses)}"
    )
    print(f"  first (build + compile + solve) {first_ms:9.2f} ms")
    print(
        f"  warm re-solve     p50 {pct(warm_ms, 50):8.3f} ms   p99 {pct(warm_ms, 99):8.3f} ms"
        f"   (solver-reported p50 {pct(solver_ms, 50):.3f} ms)"
    )
    print(f"  rebuild per solve p50 {pct(rebuild_ms, 50):8.3f} ms   p99 {pct(rebuild_ms, 99):8.3f} ms")
    print(f"  proportional      p50 {pct(prop_ms, 50):8.4f} ms   p99 {pct(prop_ms, 99):8.4f} ms")
    print(f"  ratio rebuild/warm p50 = {pct(rebuild_ms, 50) / pct(warm_ms, 50):.1f}x")
    print(f"  ratio warm/proportional p50 = {pct(warm_ms, 50) / pct(prop_ms, 50):.0f}x")
    print(
        f"  min normalised QoS (mean over instances): optimiser {np.mean(q_opt_min):.4f}"
        f" vs proportional {np.mean(q_prop_min):.4f}"
    )
    print(
        f"  within-class Gini (mean over classes and instances): optimiser {np.mean(g_opt):.4f}"
        f" vs proportional {np.mean(g_prop):.4f}"
    )


def bench_term(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    n = args.services
    classes = np.array([CLASSES[i % 3] for i in range(n)])
    nq = rng.uniform(0.3, 1.5, n)
    start = time.perf_counter()
    snap = FairnessSnapshot.from_values(nq, classes)
    build_ms = 1e3 * (time.perf_counter() - start)
    term_ms, naive_ms = [], []
    for _ in range(args.warm):
        on_node = rng.choice(n, size=4, replace=False)
        after = nq[on_node] * rng.uniform(0.8, 1.0, 4)
        cand_cls, cand = str(rng.choice(CLASSES)), float(rng.uniform(0.5, 1.2))
        start = time.perf_counter()
        delta = fairness_term(snap, cand_cls, cand, classes[on_node].tolist(), nq[on_node], after)
        term_ms.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        new = nq.copy()
        new[on_node] = after
        new = np.append(new, cand)
        new_cls = np.append(classes, cand_cls)
        before_g = gini_by_class(nq, classes)
        after_g = gini_by_class(new, new_cls)
        naive = {c: after_g[c] - before_g.get(c, 0.0) for c in after_g}
        naive_min = float(new.min()) - float(nq.min())
        naive_ms.append(1e3 * (time.perf_counter() - start))
        assert abs(naive_min - delta.delta_min_normalised_qos) < 1e-12
        for c, dg in delta.delta_gini_by_class.items():
            assert abs(naive[c] - dg) < 1e-9, (c, naive[c], dg)
    print(
        f"\n== fairness_term on a snapshot of {n} services (4 on the node); snapshot build {build_ms:.2f} ms"
    )
    print(f"  fairness_term       p50 {pct(term_ms, 50):8.4f} ms   p99 {pct(term_ms, 99):8.4f} ms")
    print(f"  recompute by class  p50 {pct(naive_ms, 50):8.4f} ms   p99 {pct(naive_ms, 99):8.4f} ms")
    print(f"  ratio recompute/term p50 = {pct(naive_ms, 50) / pct(term_ms, 50):.1f}x (same answers, checked)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,64")
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--rebuild", type=int, default=20)
    parser.add_argument("--solver", default="CLARABEL")
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"cvxpy {cp.__version__}; installed solvers: {', '.join(cp.installed_solvers())}")
    for n in (int(s) for s in args.sizes.split(",")):
        bench_size(n, args)
    bench_term(args)


if __name__ == "__main__":
    main()
