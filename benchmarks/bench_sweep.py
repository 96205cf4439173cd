"""Speed-up of ``qosched whatif sweep``'s local process pool, and each executor's overhead per cell.

The same grid (default: the openb GPU node list cut to its first ``--nodes`` nodes, the default
trace inflated to 130 %, seeds 0..3, four FGD-family policies: 16 cells) runs three times into
fresh folders, in this order:

1. in this process, one cell after another (``--workers 1``): the baseline;
2. on a local process pool of ``--workers`` processes;
3. on a Dask cluster started here (a ``distributed.LocalCluster`` of ``--workers`` single-threaded
   worker processes on 127.0.0.1), unless ``--no-dask``.

Printed per executor: wall time, compute time summed over cells (measured inside each cell),
speed-up = baseline wall / wall, and overhead per cell = (wall × workers − Σ compute) / cells —
the time a worker was not computing a cell (start-up, scheduling, transfer, idling at the end).
The 1-minute load average is printed with each row (the machine may be shared); with
``--repeat N`` the executors run N times, interleaved, and the best (minimum wall) of each is
compared.

    .venv/bin/python benchmarks/bench_sweep.py            # 2 workers, 16 cells
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from qosched.extender.cli.whatif_sweep import DaskExecutor, InProcessExecutor, LocalExecutor, grid, run_sweep

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "alibaba-gpu-v2023"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=200, help="first N GPU nodes of the trace")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policies", default="random,best-fit,fgd,qosched")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="40 tiny cells (edge snapshot, 4 pods, one policy): the engine's own cost",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per executor, interleaved; best (min wall) kept"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    nodes = work / "nodes.csv"
    lines = (DATA / "openb_node_list_gpu_node.csv").read_text().splitlines()
    nodes.write_text("\n".join(lines[: args.nodes + 1]) + "\n")
    workload = ["--nodes", str(nodes), "--pods", str(DATA / "openb_pod_list_default.csv"), "--no-latency"]
    cells = grid({"openb": workload}, {"inflate": ["1.3"]}, list(range(args.seeds)), args.policies.split(","))
    what = f"{args.nodes} nodes, inflate 1.3, seeds 0..{args.seeds - 1}, {args.policies}"
    if args.tiny:
        edge = ["--cluster", str(ROOT / "extender" / "demo" / "edge-cluster.yaml"), "--max-pods", "4"]
        cells = grid({"edge": edge}, {}, list(range(40)), ["random"])
        what = "edge snapshot, 4 pods, seeds 0..39, random"
    print(f"{len(cells)} cells: {what}")

    executors: list[tuple[str, object]] = [
        ("in process (baseline)", InProcessExecutor()),
        (f"local pool, {args.workers} processes", LocalExecutor(args.workers)),
    ]
    cluster = None
    if not args.no_dask:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        executors.append((f"Dask, {args.workers} worker processes", DaskExecutor(cluster.scheduler_address)))
    print(
        f"{'executor':<32} {'wall [s]':>9} {'compute [s]':>12} {'speed-up':>9} {'overhead/cell [s]':>18} {'load':>5}"
    )
    best: dict[str, tuple[float, float, float]] = {}
    try:
        for r in range(args.repeat):
            for name, executor in executors:
                _, stats = run_sweep(cells, work / f"{name.split()[0]}-{r}", executor)  # type: ignore[arg-type]
                row = (stats.wall_s, stats.compute_s, stats.overhead_per_cell_s())
                print(
                    f"{name:<32} {row[0]:>9.1f} {row[1]:>12.1f} {'':>9} {row[2]:>18.3f} {os.getloadavg()[0]:>5.2f}"
                )
                if name not in best or row[0] < best[name][0]:
                    best[name] = row
        baseline = best[executors[0][0]][0]
        print(f"best of {args.repeat} (min wall):")
        for name, (wall, compute, overhead) in best.items():
            print(f"{name:<32} {wall:>9.1f} {compute:>12.1f} {baseline / wall:>8.2f}x {overhead:>18.3f}")
    finally:
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
