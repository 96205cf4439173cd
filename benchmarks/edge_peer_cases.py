"""Why ``qosched`` hosts fewer services than the best Ibis peer, cell by cell (issue 18).

For every generated edge scenario × rate scale where ``qosched`` meets fewer SLOs than the best of
``ibis-pack``, ``ibis-spread`` and ``ibis-hetero`` (docs/placement.md, "Never below a simpler
peer"), this replays both exactly as ``benchmarks/bench_edge_peers.py`` does (same scheduler
construction, replay and latency checkpoints) and prints, for qosched and the winning peer:

- services met / placed / placed but over their SLO at some checkpoint (so a cell is lost either
  by placing fewer services or by placing them where the request simulation misses the SLO);
- per group of models, by the device types that can serve them (bundled profiles: ``T`` edge TPU
  only, ``J`` Jetson only, ``TJ`` inception_v3, ``TJC`` mobilenet_v2, ``JC`` resnet18/50), met and
  never placed;
- where the flexible services (``TJ``, ``TJC``, ``JC``) ran, by device type (``e`` edge TPU,
  ``j`` Jetson, ``c`` CPU node, ``-`` never placed);
- the services one policy placed and the other never did (model, rate, SLO).

Usage::

    .venv/bin/python benchmarks/edge_peer_cases.py [--seeds 0-19] [--scales 0.25,0.5,1.0]

About 1-3 s per cell replayed (2 shared cores); the 20 screen seeds take about 3 min.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qosched.policies.simulator.edge_scenarios import edge_workload
from qosched.policies.simulator.metrics import pod_outcomes
from qosched.policies.simulator.replay import ReplayConfig, ReplayResult, build_scheduler, replay
from qosched.policies.simulator.scenarios import Workload

PEERS = ("ibis-pack", "ibis-spread", "ibis-hetero")
#: Device types that can serve each model of the bundled profiles (models not listed: edge TPU only).
GROUPS = {
    "googlenet": "J",
    "resnet34": "J",
    "inception_v3": "TJ",
    "mobilenet_v2": "TJC",
    "resnet18": "JC",
    "resnet50": "JC",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One replay's per-pod outcome: met its SLO at every checkpoint, ever placed, device type."""

    met: np.ndarray
    placed: np.ndarray
    kind: list[str]


def replay_outcome(workload: Workload, policy: str, *, seed: int = 0) -> Outcome:
    """The replay of ``benchmarks/bench_edge_peers.services_met``, per pod."""
    from qosched.extender.cli.whatif import load_classes, load_lookup

    classes = load_classes(None)
    lookup, device_memory = load_lookup(None)
    scheduler = build_scheduler(
        policy, seed=seed, workload=workload, classes=classes, mix="learned", candidates="fit"
    )
    result: ReplayResult = replay(
        workload,
        scheduler,
        np.random.default_rng([seed, 0x5EED]),
        lookup=lookup,
        device_memory=device_memory,
        config=ReplayConfig(),
        classes=classes,
    )
    outcomes = pod_outcomes(result, classes)
    rows = result.ledger.node_row
    kind = [str(workload.nodes[r].accelerator)[0] if r >= 0 else "-" for r in rows.tolist()]
    return Outcome(outcomes.slo_met.copy(), ~np.isnan(result.ledger.first_start_s), kind)


def _groups(workload: Workload, out: Outcome) -> str:
    tally: dict[str, list[int]] = {}
    for i, pod in enumerate(workload.pods):
        cell = tally.setdefault(GROUPS.get(pod.variants[0], "T"), [0, 0])
        cell[0] += int(out.met[i])
        cell[1] += int(not out.placed[i])
    return " ".join(f"{g}:{m}/{p}" for g, (m, p) in sorted(tally.items()))


def _flexible(workload: Workload, out: Outcome) -> str:
    tally: dict[str, int] = {}
    for i, pod in enumerate(workload.pods):
        group = GROUPS.get(pod.variants[0], "T")
        if len(group) > 1:
            key = f"{group}>{out.kind[i]}"
            tally[key] = tally.get(key, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(tally.items()))


def _only(workload: Workload, a: Outcome, b: Outcome) -> str:
    names = [
        f"{p.variants[0]}@{p.rate_rps:g}rps/{p.slo_ms:g}ms"
        for i, p in enumerate(workload.pods)
        if a.placed[i] and not b.placed[i]
    ]
    return ", ".join(names) or "-"


def diagnose(seed: int, scale: float) -> str | None:
    """The report of one cell, or None where qosched is not below the best peer."""
    base, shape = edge_workload(seed)
    workload = base.with_rate_scale(scale)
    runs = {p: replay_outcome(workload, p) for p in ("qosched", *PEERS)}
    met = {p: int(o.met.sum()) for p, o in runs.items()}
    best = max(PEERS, key=lambda p: met[p])
    if met["qosched"] >= met[best]:
        return None
    q, w = runs["qosched"], runs[best]
    lines = [
        f"gen-{seed}@{scale:g} (TPU {shape.tpus}, Jetson {shape.nanos}, CPU {shape.cpus}, "
        f"{shape.services} services): qosched {met['qosched']} < {best} {met[best]}"
    ]
    for name, out in (("qosched", q), (best, w)):
        violated = int((out.placed & ~out.met).sum())
        lines.append(
            f"  {name:<11s} met/placed/over-SLO {int(out.met.sum())}/{int(out.placed.sum())}/{violated}"
            f"  group met/never-placed {_groups(workload, out)}  flexible on {_flexible(workload, out)}"
        )
    lines.append(f"  placed only by qosched: {_only(workload, q, w)}")
    lines.append(f"  placed only by {best}: {_only(workload, w, q)}")
    return "\n".join(lines)


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", default="0-19", help="generated scenarios, e.g. 0-19 (default)")
    parser.add_argument("--scales", default="0.25,0.5,1.0", help="rate scales (default 0.25,0.5,1.0)")
    args = parser.parse_args(argv)
    below = 0
    for seed in _seeds(args.seeds):
        for scale in (float(s) for s in args.scales.split(",")):
            report = diagnose(seed, scale)
            if report is not None:
                below += 1
                print(report, flush=True)
    print(f"{below} cells below the best peer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
