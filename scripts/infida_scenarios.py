#!/usr/bin/env python3
"""INFIDA scenarios on the shipped end–edge–cloud cluster, and the regret-vs-horizon experiment.

``cluster``: the nodes of ``extender/demo/edge-cloud/cluster.yaml`` (2 Jetson Nanos and 2 edge
TPUs at the end, 2 T4 edge nodes, a 2 × 4 A100 cloud pool) with ``--services`` inference services
(``svc-00``…), each able to serve ResNet-50, MobileNet-v2 or ResNet-18 (accuracy ≥ 0.69, SLO
200 ms, 150 kB images). Every service has its own fine-tuned copy of each variant, so the end and
edge nodes cannot hold them all (two T4s fit 26 ResNet-50s at 0.8 of 16 GiB, a Jetson three
models): which copies to hold where is INFIDA's problem.

``requests --kind K``: arrival instants from the Azure LLM inference trace 2023 (conversation and
code traces merged, timestamps only; ``../shared/data/azure-llm-2023``), compressed to
``--rate-rps`` on average (``qosched.policies.requests.arrivals.scale_arrivals``); each arrival is
given a service drawn from the popularity in force at its instant:

- ``stationary``: Zipf(``--zipf``) over the services in a random order (seeded), all along;
- ``shift``: the same, and at half the horizon the ranking is reversed (the popular become rare);
- ``adversarial``: the services split in two halves; in window ``k`` (``--window-s``) half
  ``k mod 2`` gets ``--hot-share`` of the requests (uniformly), the other half the rest, so the
  hot set flips every window and an allocation fitted to the last window is always the wrong one.
- ``--arrivals poisson`` draws Poisson arrivals instead (scenarios the repo does not ship).

``ablation FILE…``: per requests file, at the model level, INFIDA with each step (``theorem``,
``adaptive``) × rounding (``node``, ``network``) — fractional gain and the integral gain averaged
over ``--seeds`` rounding seeds, model loads — against greedy, static and the best fixed allocation
in hindsight (docs/infida.md's ablation table).

``regret``: the model-level experiment of docs/infida.md on the adversarial sequence (expected
counts per window, deterministic): for each horizon T, INFIDA (``--step adaptive``: the
horizon-free DS-OMD step, its bound computed from the gradients seen; ``--step theorem``: η* for
T; ``--rounding network|node``), greedy and static are played; the best fixed integral and fractional allocations in hindsight are
solved (HiGHS); regret, regret/T and the log-log slope are printed and written as CSV and PNG.

The shipped files (extender/demo/infida/) were made with::

    .venv/bin/python scripts/infida_scenarios.py cluster --out extender/demo/infida/cluster.yaml
    for k in stationary shift adversarial; do
      .venv/bin/python scripts/infida_scenarios.py requests --kind $k --out extender/demo/infida/requests-$k.csv
    done
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import math
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
AZURE = ROOT.parent / "shared" / "data" / "azure-llm-2023"
BASE_CLUSTER = ROOT / "extender" / "demo" / "edge-cloud" / "cluster.yaml"
TRACES = ("AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv")
VARIANTS = "resnet50,mobilenet_v2,resnet18"


def service_names(n: int) -> list[str]:
    return [f"svc-{i:02d}" for i in range(n)]


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-0",
            "namespace": "default",
            "labels": {"app.kubernetes.io/name": name},
            "annotations": {
                "qosched.io/service": name,
                "qosched.io/variants": VARIANTS,
                "qosched.io/min-accuracy": "0.69",
                "qosched.io/slo-ms": "200",
                "qosched.io/input-kb": "150",
            },
        },
        "spec": {
            "schedulerName": "qosched",
            "containers": [{"name": "serve", "image": "example.com/serve:1"}],
        },
    }


def write_cluster(out: Path, services: int) -> None:
    base = yaml.safe_load(BASE_CLUSTER.read_text())
    nodes = [copy.deepcopy(o) for o in base["items"] if o.get("kind") == "Node"]
    items = nodes + [_pod(s) for s in service_names(services)]
    header = (
        "# INFIDA scenario cluster (docs/infida.md): the nodes of extender/demo/edge-cloud/cluster.yaml and\n"
        f"# {services} services with their own ResNet-50 / MobileNet-v2 / ResNet-18 copies.\n"
        "# Made by scripts/infida_scenarios.py cluster.\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        header + yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)
    )


def azure_times(duration_s: float, rate_rps: float, offset_s: float) -> np.ndarray:
    from qosched.policies.requests.arrivals import scale_arrivals

    stamps: list[float] = []
    for name in TRACES:
        with (AZURE / name).open(newline="") as fh:
            ts = [dt.datetime.fromisoformat(row["TIMESTAMP"][:26]) for row in csv.DictReader(fh)]
        t0 = ts[0]
        stamps += [(t - t0).total_seconds() for t in ts]
    t = np.sort(np.array(stamps))
    trace_rate = len(t) / float(t[-1] - t[0])
    speedup = rate_rps / trace_rate
    return scale_arrivals(t, offset_s, duration_s, speedup)


def popularity(
    kind: str,
    n: int,
    t: float,
    horizon_s: float,
    window_s: float,
    rng_perm: np.ndarray,
    zipf: float,
    hot: float,
) -> np.ndarray:
    if kind == "adversarial":
        half = n // 2
        k = int(t // window_s) % 2
        group = (np.arange(n) < half) if k == 0 else (np.arange(n) >= half)
        return np.where(group, hot / group.sum(), (1.0 - hot) / (~group).sum())
    ranks = np.arange(1, n + 1, dtype=float) ** -zipf
    ranks /= ranks.sum()
    order = rng_perm if (kind == "stationary" or t < horizon_s / 2) else rng_perm[::-1]
    p = np.empty(n)
    p[order] = ranks
    return p


def write_requests(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    if args.arrivals == "azure":
        times = azure_times(args.duration_s, args.rate_rps, args.offset_s)
    else:
        times = np.cumsum(rng.exponential(1.0 / args.rate_rps, int(args.rate_rps * args.duration_s * 1.2)))
        times = times[times < args.duration_s]
    names = service_names(args.services)
    perm = rng.permutation(args.services)
    rows = []
    for t in times:
        p = popularity(
            args.kind,
            args.services,
            float(t),
            args.duration_s,
            args.window_s,
            perm,
            args.zipf,
            args.hot_share,
        )
        rows.append((float(t), names[int(rng.choice(args.services, p=p))]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_s", "service"])
        w.writerows((f"{t:.3f}", s) for t, s in rows)
    print(f"wrote {args.out}: {len(rows)} requests over {args.duration_s:g} s ({args.kind}, {args.arrivals})")


def _model(cluster: Path):
    from qosched.extender.cli.whatif import load_lookup
    from qosched.extender.cli.whatif_requests import scenario_from_snapshot
    from qosched.policies.infida.routing import allocation_model

    lookup, device_memory = load_lookup(None)
    scenario = scenario_from_snapshot(cluster, lookup)
    return allocation_model(scenario, device_memory)


def regret(args: argparse.Namespace) -> None:
    from qosched.policies.infida.allocators import GreedyAllocator, InfidaAllocator, StaticAllocator
    from qosched.policies.infida.oma import AdaptiveStep, gradient_bound_per_mib, step_size
    from qosched.policies.infida.regret import best_fixed_gain, run_sequence

    model = _model(args.cluster)
    table = model.table(model.base_links())
    n = len(model.types)
    per_window = args.rate_rps * args.window_s
    perm = np.arange(n)
    patterns = [
        per_window
        * popularity("adversarial", n, k * args.window_s, 0.0, args.window_s, perm, 0.0, args.hot_share)
        for k in (0, 1)
    ]
    rows = []
    for horizon in args.horizons:
        counts = [patterns[t % 2] for t in range(horizon)]
        peak = {t.service: float(max(p[r] for p in patterns)) for r, t in enumerate(model.types)}
        bound = gradient_bound_per_mib(
            model.catalog, model.gap_ms(), model.requests_per_slot(peak), args.window_s
        )
        eta = step_size(model.catalog, bound, horizon)
        adaptive = AdaptiveStep.for_catalog(model.catalog, bound) if args.step == "adaptive" else None
        infida = InfidaAllocator(
            model.catalog,
            eta.eta * args.eta_scale,
            np.random.default_rng(args.seed),
            antithetic=True,
            coupled=True,
            adaptive=adaptive,
            groups=model.slot_groups() if args.rounding == "network" else None,
        )
        eta_first = infida.eta
        t0 = time.perf_counter()
        runs = {
            "infida": run_sequence(infida, model.catalog, table, counts, args.window_s),
            "greedy-allocation": run_sequence(
                GreedyAllocator(model.catalog), model.catalog, table, counts, args.window_s
            ),
            "static-allocation": run_sequence(
                StaticAllocator(model.catalog), model.catalog, table, counts, args.window_s
            ),
        }
        best_int = best_fixed_gain(model.catalog, table, counts, args.window_s, integral=True)
        best_frac = best_fixed_gain(model.catalog, table, counts, args.window_s, integral=False)
        row = {
            "T": horizon,
            "eta": eta_first,
            "eta_last": infida.eta,
            "bound": eta.regret_bound if adaptive is None else adaptive.regret_bound(infida.grad_sq_sum),
            "best_integral": best_int,
            "best_fractional": best_frac,
        }
        for name, run in runs.items():
            row[f"{name}_regret"] = best_int - float(run.integral.sum())
            row[f"{name}_loads"] = run.loads
        frac = runs["infida"].fractional
        assert frac is not None
        row["infida_fractional_regret"] = best_frac - float(frac.sum())
        row["infida_psi_regret"] = (1.0 - 1.0 / math.e) * best_int - float(runs["infida"].integral.sum())
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(
            f"T={horizon:5d}  eta={eta_first:.3g}->{infida.eta:.3g}  regret infida={row['infida_regret']:.4g} "
            f"(/T {row['infida_regret'] / horizon:.4g}; fractional {row['infida_fractional_regret']:.4g}, bound {row['bound']:.4g})  "
            f"greedy={row['greedy-allocation_regret']:.4g} (/T {row['greedy-allocation_regret'] / horizon:.4g})  "
            f"static={row['static-allocation_regret']:.4g}  [{row['seconds']:.1f} s]",
            flush=True,
        )
    _write_regret(args.out, rows)


def window_counts(model, path: Path, window_s: float) -> list[np.ndarray]:
    """Requests per service and window of a requests CSV (``time_s,service``)."""
    row = {t.service: r for r, t in enumerate(model.types)}
    with path.open(newline="") as fh:
        rows = [(float(r["time_s"]), r["service"]) for r in csv.DictReader(fh)]
    t0 = rows[0][0]
    out: list[np.ndarray] = []
    for t, service in rows:
        k = int((t - t0) // window_s)
        while len(out) <= k:
            out.append(np.zeros(len(model.types)))
        out[k][row[service]] += 1.0
    return out


def ablation(args: argparse.Namespace) -> None:
    """Model level, per requests file: INFIDA's step × rounding (fractional and expected integral
    gain over ``--seeds`` rounding seeds, model loads), greedy, static, best fixed in hindsight."""
    from qosched.policies.infida.allocators import GreedyAllocator, InfidaAllocator, StaticAllocator
    from qosched.policies.infida.oma import AdaptiveStep, gradient_bound_per_mib, step_size
    from qosched.policies.infida.regret import best_fixed_gain, run_sequence

    model = _model(args.cluster)
    cat, table, groups = model.catalog, model.table(model.base_links()), model.slot_groups()
    for path in args.requests:
        counts = window_counts(model, path, args.window_s)
        peak = {t.service: float(max(c[r] for c in counts)) for r, t in enumerate(model.types)}
        bound = gradient_bound_per_mib(cat, model.gap_ms(), model.requests_per_slot(peak), args.window_s)
        eta = step_size(cat, bound, len(counts)).eta
        print(f"{path.name}: {len(counts)} windows (gain in s; INFIDA: fractional / integral, mean of seeds)")
        for step in ("theorem", "adaptive"):
            for rounding in ("node", "network"):
                runs = [
                    run_sequence(
                        InfidaAllocator(
                            cat,
                            eta,
                            np.random.default_rng(seed),
                            antithetic=True,
                            coupled=True,
                            adaptive=AdaptiveStep.for_catalog(cat, bound) if step == "adaptive" else None,
                            groups=groups if rounding == "network" else None,
                        ),
                        cat,
                        table,
                        counts,
                        args.window_s,
                    )
                    for seed in range(args.seeds)
                ]
                frac = np.mean([float(r.fractional.sum()) for r in runs if r.fractional is not None]) / 1e3
                integral = np.mean([float(r.integral.sum()) for r in runs]) / 1e3
                loads = np.mean([r.loads for r in runs])
                print(f"  infida {step:8s} {rounding:7s}  {frac:8.1f} / {integral:8.1f}   loads {loads:7.0f}")
        for name, alloc in (("greedy", GreedyAllocator(cat)), ("static", StaticAllocator(cat))):
            run = run_sequence(alloc, cat, table, counts, args.window_s)
            print(f"  {name:24s}  {float(run.integral.sum()) / 1e3:19.1f}   loads {run.loads:7d}")
        best_frac = best_fixed_gain(cat, table, counts, args.window_s, integral=False) / 1e3
        best_int = best_fixed_gain(cat, table, counts, args.window_s, integral=True) / 1e3
        print(f"  best fixed in hindsight   {best_frac:8.1f} / {best_int:8.1f}", flush=True)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = y > 0
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _write_regret(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with (out / "regret.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    t = np.array([r["T"] for r in rows], dtype=float)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("infida_regret", "INFIDA (integral)"),
        ("infida_fractional_regret", "INFIDA (fractional y_t)"),
        ("greedy-allocation_regret", "greedy"),
        ("static-allocation_regret", "static"),
        ("bound", "theorem bound (fractional)"),
    ):
        y = np.array([r[key] for r in rows], dtype=float)
        slope = _slope(t, y)
        ax.loglog(t, np.maximum(y, 1e-9), marker="o", label=f"{label} (slope {slope:.2f})")
        if key != "bound":
            ax2.semilogx(t, y / t / 1000.0, marker="o", label=label)
    ax.set_xlabel("horizon T [windows]")
    ax.set_ylabel("regret vs best fixed allocation [ms saved]")
    ax.set_title("Regret on the adversarial sequence (log-log)")
    ax2.set_xlabel("horizon T [windows]")
    ax2.set_ylabel("regret / T [s per window]")
    ax2.set_title("Average regret per window")
    for a in (ax, ax2):
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "regret.png", dpi=110)
    print(f"wrote {out / 'regret.csv'} and {out / 'regret.png'}")
    for key in (
        "infida_regret",
        "infida_fractional_regret",
        "greedy-allocation_regret",
        "static-allocation_regret",
    ):
        y = np.array([r[key] for r in rows], dtype=float)
        print(f"log-log slope of {key}: {_slope(t, y):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cluster")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--services", type=int, default=40)
    r = sub.add_parser("requests")
    r.add_argument("--kind", choices=["stationary", "shift", "adversarial"], required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--services", type=int, default=40)
    r.add_argument("--duration-s", type=float, default=300.0)
    r.add_argument("--rate-rps", type=float, default=40.0)
    r.add_argument("--window-s", type=float, default=10.0)
    r.add_argument("--zipf", type=float, default=0.9)
    r.add_argument("--hot-share", type=float, default=0.9)
    r.add_argument("--arrivals", choices=["azure", "poisson"], default="azure")
    r.add_argument("--offset-s", type=float, default=0.0)
    r.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("regret")
    g.add_argument("--cluster", type=Path, default=ROOT / "extender" / "demo" / "infida" / "cluster.yaml")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument(
        "--horizons", type=lambda s: [int(x) for x in s.split(",")], default=[25, 50, 100, 200, 400, 800]
    )
    g.add_argument("--rate-rps", type=float, default=40.0)
    g.add_argument("--window-s", type=float, default=10.0)
    g.add_argument("--hot-share", type=float, default=0.9)
    g.add_argument("--eta-scale", type=float, default=1.0, help="only with --step theorem")
    g.add_argument("--step", choices=["adaptive", "theorem"], default="adaptive")
    g.add_argument("--rounding", choices=["network", "node"], default="network")
    g.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("ablation")
    a.add_argument("requests", type=Path, nargs="+")
    a.add_argument("--cluster", type=Path, default=ROOT / "extender" / "demo" / "infida" / "cluster.yaml")
    a.add_argument("--window-s", type=float, default=10.0)
    a.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    if args.cmd == "ablation":
        ablation(args)
    elif args.cmd == "cluster":
        write_cluster(args.out, args.services)
        print(f"wrote {args.out}")
    elif args.cmd == "requests":
        write_requests(args)
    else:
        regret(args)


if __name__ == "__main__":
    main()
