"""Recovery after a SIGKILL of the extender mid-run (issue 12), at the issue's scale.

A fake API server (``tests/kubefake``) with ``--nodes`` nodes of 4 GPUs and ``--pods`` pending
pods of 100–2,000 milli; ``qosched serve --kubeconfig`` (real gunicorn) starts, a stand-in
scheduler binds half the pods through it, the process group is SIGKILLed and a new process
started at once; the stand-in schedules the rest through the new one. Printed: the first start
(process start to ``/readyz`` 200: the baseline), the recovery (SIGKILL to the new process's
``/readyz`` 200), their ratio, and the invariants of ``tests/faults/invariants.py`` checked on the
API's final state (no pod bound twice, no device above 1,000 milli, nothing lost, every verb
within the 5 s budget) with the stand-in's filter p99.

Run: ``.venv/bin/python benchmarks/bench_restart.py [--nodes 200] [--pods 800] [--seed 3]``
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fake API server and the fault helpers live in tests/
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--pods", type=int, default=800)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    from tests.faults.conftest import ExtenderProcess
    from tests.faults.invariants import assert_invariants
    from tests.faults.standin import StandInScheduler
    from tests.kubefake import FakeKubeAPI, write_kubeconfig

    tmp = Path(tempfile.mkdtemp(prefix="bench_restart-"))
    rng = random.Random(args.seed)
    with FakeKubeAPI(bookmark_interval_s=1.0) as api:
        for i in range(args.nodes):
            api.add_node(f"n-{i:04d}", accelerator="nvidia-t4", gpus=4)
        created = []
        for j in range(args.pods):
            milli = rng.choice([100, 250, 500, 1000, 2000])
            api.add_pod(f"p-{j:05d}", model="resnet50", slo_ms=500, rate_rps=2, gpu_milli=milli)
            created.append(f"default/p-{j:05d}")
        kubeconfig = write_kubeconfig(api.url, tmp / "kubeconfig.yaml", token="test-token")
        env = {**os.environ, "QOSCHED_WATCH_BACKOFF_S": "0.05", "QOSCHED_WATCH_BACKOFF_MAX_S": "0.5"}

        def start(name: str) -> ExtenderProcess:
            return ExtenderProcess(["--kubeconfig", str(kubeconfig)], env, tmp / f"{name}.log").start()

        def until_ready(proc: ExtenderProcess, since: float) -> float:
            while proc.readyz() != 200:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise SystemExit(f"extender exited:\n{proc.log()}")
                time.sleep(0.01)
            return time.monotonic() - since

        first = start("first")
        first_s = until_ready(first, time.monotonic())
        standin = StandInScheduler(api, first.url)
        nodes = [n["metadata"]["name"] for n in api.list_objects("nodes")]
        for pod in standin.pending()[: args.pods // 2]:
            standin.schedule_one(pod, nodes)
        first.kill()
        killed = time.monotonic()
        second = start("second")
        try:
            recovery_s = until_ready(second, killed)
            standin.url = second.url
            for _ in range(3):
                if not standin.run_pass():
                    break
            assert_invariants(api, created=created, timer=standin.timer)
            bound = sum(1 for p in api.list_objects("pods") if (p.get("spec") or {}).get("nodeName"))
        finally:
            second.stop()
    print(f"{args.nodes} nodes × 4 GPUs, {args.pods} pods; bound {bound}; invariants hold")
    print(
        f"first start {first_s:5.2f} s   recovery (SIGKILL -> new process ready) {recovery_s:5.2f} s   "
        f"ratio {recovery_s / first_s:4.2f}   filter p99 {standin.timer.quantile_s('filter', 0.99) * 1e3:5.1f} ms"
    )


if __name__ == "__main__":
    main()
