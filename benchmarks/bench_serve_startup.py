"""Start-up of ``qosched serve`` on the embedded default (a snapshot file): start → ``/readyz`` 200.

The README's first command serves ``extender/demo/demo-cluster.yaml``; this times exactly that
(``qosched serve --cluster …``: the console script, gunicorn's master checking the snapshot, the
worker building the app), wall time and the CPU of master + worker when ``/readyz`` first answers
200 (``/proc``), median over ``--rounds`` starts. ``--baseline REV`` also starts the extender of REV
(``git archive`` of its ``extender``, ``policies`` and ``profiles`` first on ``PYTHONPATH``), the
two alternating, so both see the same machine.

Run: ``.venv/bin/python benchmarks/bench_serve_startup.py [--rounds 5] [--baseline REV]``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scheduler_loop import children, cpu_s, free_port

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "extender" / "demo" / "demo-cluster.yaml"


def start_once(pythonpath: str | None) -> tuple[float, float]:
    """(seconds to /readyz 200, CPU seconds by then)."""
    port = free_port()
    env = {**os.environ, "QOSCHED_LOG_LEVEL": "warning"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    script = str(Path(sys.executable).with_name("qosched"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [script, "serve", "--cluster", str(SNAPSHOT), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("qosched serve exited before it was ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        return wall, sum(cpu_s(p) for p in (proc.pid, *children(proc.pid)))  # master + worker
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def unpack(rev: str, into: Path) -> None:
    (into / "qosched").mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", rev, "extender", "policies", "profiles"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into / "qosched")], input=archive, check=True)
    (into / "qosched" / "__init__.py").touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="also time the extender of this git revision")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, str | None] = {"qosched": None}
        if args.baseline:
            unpack(args.baseline, Path(tmp))
            trees[f"qosched@{args.baseline}"] = tmp
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
        for _ in range(args.rounds):
            for label, path in trees.items():
                results[label].append(start_once(path))
    print(
        f"qosched serve --cluster {SNAPSHOT.relative_to(ROOT)}: start -> /readyz, {args.rounds} starts each"
    )
    for label, runs in results.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(
            f"{label:<22} wall median {median(walls):.2f} s (min {min(walls):.2f})"
            f"  CPU median {median(cpus):.2f} s (min {min(cpus):.2f})"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
