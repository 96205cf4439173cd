"""What the numbers in filter's rejection texts cost, in process (issue 16).

One ``Runtime`` on ``bench_extender``'s generated cluster (T4 nodes, 4 GPUs, 3 services per GPU)
answers ``filter`` for a new pod per call (fresh UID, the same shape), with every node name, in
three arms that take turns round by round in the same process:

* ``numbers``: the extender as it is (one explanation per reason code, kept per pod shape and
  node while the node is unchanged: ``explain.ExplainMemo``);
* ``numbers, no memo``: the same with a memo of size 0 (every call explains: the first pod of a
  shape, or a node that just changed);
* ``old texts``: ``Runtime._code_messages`` replaced by the former constant texts
  (``qosched (<policy>): <code message>``), the baseline.

CPU per call is ``time.thread_time`` around ``Runtime.filter`` (no HTTP). ``--slo-ms 3`` makes
every node fail (resnet50 takes 3.0 ms on a T4), 50 fits most nodes.

Run: ``.venv/bin/python benchmarks/bench_rejection_texts.py [--nodes 1000] [--calls 200] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_extender as bench


def _runtime(n_nodes: int, workdir: Path) -> Any:
    from prometheus_client import CollectorRegistry

    from qosched.extender.server.app import create_app
    from qosched.extender.server.state import state_of

    path = workdir / f"cluster-{n_nodes}.json"
    path.write_bytes(orjson.dumps(bench.make_snapshot(n_nodes, pending=0)))
    return state_of(create_app({"CLUSTER_FILE": str(path)}, registry=CollectorRegistry())).runtime


def _arms(rt: Any) -> dict[str, Callable[[], None]]:
    """Each arm: a function that puts the runtime in that configuration."""
    from qosched.policies.placement.base import Reason
    from qosched.policies.placement.explain import ExplainMemo

    numbers = rt._code_messages
    memo = rt._explained

    def old(demand: Any, names: Any, masks: Any, codes: Sequence[int], policy: str) -> dict[int, str]:
        return {c: f"qosched ({policy or rt.policy.name}): {Reason(c).message}" for c in codes}

    def use(messages: Callable[..., dict[int, str]], explained: Any) -> Callable[[], None]:
        def apply() -> None:
            rt._code_messages = messages
            rt._explained = explained

        return apply

    return {
        "numbers": use(numbers, memo),
        "numbers, no memo": use(numbers, ExplainMemo(size=0)),
        "old texts": use(old, memo),
    }


def run(n_nodes: int, slo_ms: int, calls: int, rounds: int) -> dict[str, list[float]]:
    bench.POD_SLO_MS = slo_ms
    with tempfile.TemporaryDirectory(prefix="bench-rejections-") as tmp:
        rt = _runtime(n_nodes, Path(tmp))
    names = [bench.node_name(i) for i in range(n_nodes)]
    arms = _arms(rt)
    out: dict[str, list[float]] = {label: [] for label in arms}
    i = 0
    for _ in range(rounds):
        for label, apply in arms.items():
            apply()
            for k in range(calls):
                pod = bench.new_pod(i)
                i += 1
                t0 = time.thread_time()
                rt.filter(pod, names)
                if k >= 10:  # the first calls of an arm warm its memo
                    out[label].append(time.thread_time() - t0)
    arms["numbers"]()
    failed = rt.filter(bench.new_pod(i), names)
    texts = {*failed.failed.values(), *failed.unresolvable.values()}
    print(
        f"\n{n_nodes:,} nodes, pod SLO {slo_ms} ms: {len(failed.failed) + len(failed.unresolvable)} nodes fail"
    )
    for text in sorted(texts):
        print(f"  text: {text}")
    base = float(np.mean(out["old texts"]))
    for label, values in out.items():
        mean = float(np.mean(values))
        print(
            f"  {label:<18} filter CPU per call: mean {1000 * mean:.3f} ms, median "
            f"{1000 * float(np.median(values)):.3f} ms, {mean / base:.2f}x the old texts (n={len(values)})"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200, help="calls per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slo-ms", default="50,3", help="comma-separated pod SLOs [ms]")
    args = parser.parse_args(argv)
    for slo in (int(x) for x in args.slo_ms.split(",") if x.strip()):
        run(args.nodes, slo, args.calls, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
