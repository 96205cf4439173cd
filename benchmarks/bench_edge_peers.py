"""Never below a simpler peer: services hosted with no SLO violation, ``qosched`` vs the Ibis policies.

On heterogeneous edge clusters (edge TPUs, Jetson Nanos, CPU nodes) ``qosched`` should host at
least as many services that meet their SLO at every request-level checkpoint as the best of
``ibis-pack``, ``ibis-spread`` and ``ibis-hetero``, at every load (docs/placement.md, "Never below
a simpler peer"). This runs, exactly as ``qosched whatif`` does (same scheduler construction,
same replay, same latency checkpoints and seed), the shipped cluster
(``extender/demo/edge-cluster.yaml``) and the generated scenarios of
:func:`qosched.policies.simulator.edge_scenarios.edge_workload` at each rate scale, and prints
services met per policy, qosched's margin over the best peer, and a summary.

Usage::

    .venv/bin/python benchmarks/bench_edge_peers.py [--seeds 0-19] [--scales 0.25,0.5,1.0]
        [--policies qosched,ibis-pack,ibis-spread,ibis-hetero] [--no-shipped] [--json out.json]
        [--write-yaml DIR]

``--write-yaml DIR`` also writes each generated scenario as a snapshot file
(``DIR/edge-<seed>.yaml``) that ``qosched whatif --cluster`` replays the same way. One replay
takes 0.2-1 s (2 shared cores); 20 seeds × 3 scales × 4 policies about 3-5 min.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qosched.policies.simulator.edge_scenarios import edge_workload
from qosched.policies.simulator.metrics import pod_outcomes, summarize
from qosched.policies.simulator.replay import ReplayConfig, build_scheduler, replay
from qosched.policies.simulator.scenarios import Workload

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "extender" / "demo" / "edge-cluster.yaml"
PEERS = ("ibis-pack", "ibis-spread", "ibis-hetero")


def services_met(workload: Workload, policy: str, *, seed: int = 0) -> tuple[int, int]:
    """(services meeting their SLO at every checkpoint, services placed) of one replay, as
    ``qosched whatif`` computes them (``candidates="fit"``, learned mix, latency stream of ``seed``)."""
    from qosched.extender.cli.whatif import load_classes, load_lookup

    classes = load_classes(None)
    lookup, device_memory = load_lookup(None)
    scheduler = build_scheduler(
        policy, seed=seed, workload=workload, classes=classes, mix="learned", candidates="fit"
    )
    rng = np.random.default_rng([seed, 0x5EED])
    result = replay(
        workload,
        scheduler,
        rng,
        lookup=lookup,
        device_memory=device_memory,
        config=ReplayConfig(),
        classes=classes,
    )
    summary = summarize(result, runtime_s=0.0, classes=classes, outcomes=pod_outcomes(result, classes))
    return int(summary["services_slo_met"]), int(summary["services_total"])


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _row(name: str, scale: float, met: dict[str, int], policies: Sequence[str]) -> str:
    peers = [met[p] for p in policies if p in PEERS]
    margin = met["qosched"] - max(peers) if "qosched" in met and peers else 0
    cells = " ".join(f"{met[p]:>11d}" for p in policies)
    return f"{name:<14s} {scale:>5.2f} {cells} {margin:>+7d}"


def _scenarios(args: argparse.Namespace) -> list[tuple[str, Workload]]:
    out: list[tuple[str, Workload]] = []
    if not args.no_shipped:
        from qosched.extender.cli.whatif import load_classes, workload_from_snapshot

        out.append(("edge-cluster", workload_from_snapshot(SHIPPED, load_classes(None))))
    for seed in _seeds(args.seeds):
        workload, _shape = edge_workload(seed)
        out.append((f"gen-{seed}", workload))
        if args.write_yaml:
            from qosched.policies.simulator.edge_scenarios import snapshot_document

            Path(args.write_yaml).mkdir(parents=True, exist_ok=True)
            import yaml

            (Path(args.write_yaml) / f"edge-{seed}.yaml").write_text(
                yaml.safe_dump(snapshot_document(workload), sort_keys=False, width=120)
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-19", help="generated scenarios, e.g. 0-19 (default)")
    parser.add_argument("--scales", default="0.25,0.5,1.0", help="rate scales (default 0.25,0.5,1.0)")
    parser.add_argument("--policies", default=",".join(("qosched", *PEERS)))
    parser.add_argument("--no-shipped", action="store_true", help="skip extender/demo/edge-cluster.yaml")
    parser.add_argument("--json", help="write every cell to this file")
    parser.add_argument("--write-yaml", help="write the generated scenarios as snapshot files here")
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    scales = [float(s) for s in args.scales.split(",")]
    print(f"{'scenario':<14s} {'scale':>5s} " + " ".join(f"{p:>11s}" for p in policies) + "  margin")
    cells: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name, base in _scenarios(args):
        for scale in scales:
            workload = base.with_rate_scale(scale)
            met = {p: services_met(workload, p)[0] for p in policies}
            cells.append({"scenario": name, "scale": scale, "met": met})
            print(_row(name, scale, met, policies), flush=True)
    _summary(cells, policies)
    print(f"{len(cells)} cells in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(cells, indent=1) + "\n")
    return 0


def _summary(cells: list[dict[str, Any]], policies: Sequence[str]) -> None:
    if "qosched" not in policies or not any(p in PEERS for p in policies):
        return
    margins = [c["met"]["qosched"] - max(c["met"][p] for p in policies if p in PEERS) for c in cells]
    below = [f"{c['scenario']}@{c['scale']}" for c, m in zip(cells, margins, strict=True) if m < 0]
    totals = {p: sum(c["met"][p] for c in cells) for p in policies}
    print(
        f"qosched >= best peer in {len(cells) - len(below)} of {len(cells)} cells; margin "
        f"min {min(margins):+d}, mean {np.mean(margins):+.2f}; below: {', '.join(below) or 'none'}"
    )
    print("services met, all cells: " + ", ".join(f"{p} {t}" for p, t in totals.items()))


if __name__ == "__main__":
    sys.exit(main())
