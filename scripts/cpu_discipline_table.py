"""Measured CPU-node latency against three service disciplines (issue 18): the table of
docs/simulator-requests.md, "CPU nodes: model and simulator reconciled".

    .venv/bin/python scripts/cpu_discipline_table.py profiles/measurements/cpu-cores-2026-12-07

Reads every ``*/colocation.json`` under the directory (one profiler run per core count and seed),
groups the rows by (cores, run), and prints per group: the measured mean latency averaged over the
servers of the run and over the seeds with its spread between seeds (the host's noise), the
measured p95, and each discipline's prediction (means: closed forms from each seed's own solo
profile, averaged; p95: exact simulation from the first seed's profile). Then the MAPE of each
discipline per core count, and how many measured-finite rows each calls saturated.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from qosched.profiles.profiler.discipline import (
    DISCIPLINES,
    DisciplineRow,
    discipline_rows,
    mape_pct,
    simulated_p95_ms,
)

SHORT = {
    "per_request_ps": "per-request PS over c",
    "one_ps_server": "one PS server",
    "fcfs_servers": "FCFS servers",
}


def _fmt(x: float) -> str:
    return "sat." if not math.isfinite(x) else f"{x:.1f}"


def _group_label(rows: list[DisciplineRow]) -> str:
    r = rows[0]
    models = sorted({x.model for x in rows})
    what = f"{r.servers}× {models[0]}" if len(models) == 1 else "+".join(models)
    return f"{what}, ρ/server {np.mean([x.offered_utilization for x in rows]):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--p95-requests", type=int, default=40_000)
    args = parser.parse_args()
    files = sorted(args.directory.glob("*/colocation.json"))
    docs = {f: json.loads(f.read_text()) for f in files}
    rows = [r for doc in docs.values() for r in discipline_rows(doc)]
    groups: dict[tuple[int, str], list[DisciplineRow]] = defaultdict(list)
    for r in rows:
        groups[(r.cores, r.run_id)].append(r)
    first: dict[int, dict] = {}
    for doc in docs.values():
        first.setdefault(int(doc["settings"]["servers"]), doc)
    print(
        "| c | servers, load | measured mean (sd over seeds) | measured p95 | "
        + " | ".join(f"{SHORT[d]} mean / p95" for d in DISCIPLINES)
        + " | other jobs [cores] | inference in run ÷ solo |"
    )
    print("|---|---|---|---|" + "---|" * len(DISCIPLINES) + "---|---|")
    p95_err: dict[tuple[int, str, bool], list[float]] = defaultdict(list)
    for (cores, run_id), grp in sorted(
        groups.items(), key=lambda kv: (-kv[0][0], kv[1][0].servers, kv[0][1])
    ):
        by_seed = defaultdict(list)
        for r in grp:
            by_seed[r.seed].append(r.measured_mean_ms)
        seed_means = [float(np.mean(v)) for v in by_seed.values()]
        p95 = simulated_p95_ms(first[cores], run_id, n_requests=args.p95_requests)
        cells = []
        measured_p95 = float(np.mean([r.measured_p95_ms for r in grp]))
        for d in DISCIPLINES:
            mean = float(np.mean([r.predicted_mean_ms[d] for r in grp]))
            sim95 = float(np.mean(p95[d]))
            cells.append(f"{_fmt(mean)} / {_fmt(sim95)}")
            if math.isfinite(sim95):
                p95_err[(cores, d, grp[0].servers == 1)].append(abs(sim95 - measured_p95) / measured_p95)
        print(
            f"| {cores} | {_group_label(grp)} | {np.mean(seed_means):.1f} ({np.std(seed_means, ddof=1):.1f}) | "
            f"{measured_p95:.1f} | "
            + " | ".join(cells)
            + f" | {np.mean([r.background_cpu_cores for r in grp]):.2f}"
            + f" | {np.mean([r.inference_ratio for r in grp]):.2f} |"
        )
    print()
    print(
        "| c | rows | "
        + " | ".join(f"{SHORT[d]}: mean MAPE (rows called saturated); p95 MAPE" for d in DISCIPLINES)
        + " |"
    )
    print("|---|---|" + "---|" * len(DISCIPLINES))
    for cores in sorted({r.cores for r in rows}, reverse=True):
        for single, label in ((True, "one server"), (False, "2-4 servers")):
            sub = [r for r in rows if r.cores == cores and (r.servers == 1) == single]
            cells = []
            for d in DISCIPLINES:
                m, n = mape_pct(sub, d)
                e95 = p95_err[(cores, d, single)]
                cells.append(f"{m:.1f} % ({n}); {100 * np.mean(e95):.1f} %" if e95 else f"{m:.1f} % ({n}); -")
            print(f"| {cores} | {label}: {len(sub)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
