"""/filter latency while the binding API stalls (issue 12): the real gunicorn extender.

The fake API server holds every ``pods/binding`` POST ``--stall-s`` seconds, then commits it
(``FakeKubeAPI.stall``). ``qosched serve --kubeconfig`` (gunicorn, gthread, ``--threads``) watches
it; a stand-in scheduler sends ``--binders`` binds at once (retrying an ``Error`` after 0.2 s) and
a ``/filter`` every 20 ms, each on its own keep-alive connection, with a 5 s client timeout
(kube-scheduler's default ``httpTimeout``). Printed: filter p50/p99/max during the stall, the
slowest bind answer, how many binds were answered ``Error``, and the invariants (double binds,
devices over 1,000 milli). The same scenario, shorter, is ``tests/faults/test_stalled_binds.py``.

    .venv/bin/python benchmarks/bench_bind_stall.py --stall-s 12
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``tests.kubefake`` lives in the repository, not in the package
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from tests.faults.bind_stall import drive, populate, serving_live
    from tests.faults.invariants import check_no_double_bind, check_no_overallocation
    from tests.kubefake import FakeKubeAPI

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stall-s", type=float, default=12.0)
    parser.add_argument("--binders", type=int, default=32)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=16)
    args = parser.parse_args(argv)

    with FakeKubeAPI() as api, tempfile.TemporaryDirectory() as tmp:
        names, probe = populate(api, nodes=args.nodes, gpus=4, binders=args.binders, milli=250)
        env = {"QOSCHED_POLICY": "qosched"}
        with serving_live(api, Path(tmp), env, threads=args.threads) as (base, _proc):
            run = drive(base, api, names, probe, binders=args.binders, stall_s=args.stall_s)
        errors = sum(1 for answers in run.bind_answers.values() for _, e in answers if e)
        bound = sum(1 for p in api.list_objects("pods") if p["spec"].get("nodeName"))
        print(f"load average (1 min): {os.getloadavg()[0]:.1f}")
        print(f"stall {args.stall_s:g} s, {args.binders} binders, {args.threads} gunicorn threads")
        print(
            f"filter during the stall: n={len(run.filter_s)} p50={run.quantile_s(0.5) * 1e3:.1f} ms "
            f"p99={run.quantile_s(0.99) * 1e3:.1f} ms max={max(run.filter_s) * 1e3:.1f} ms "
            f"client timeouts/errors={len(run.filter_errors)}"
        )
        print(
            f"binds: {len(run.bind_s)} answers, {errors} Error, slowest {max(run.bind_s):.2f} s; "
            f"{bound}/{args.binders} pods bound"
        )
        problems = check_no_double_bind(api) + check_no_overallocation(api)
        print("invariants: " + ("ok" if not problems else "; ".join(problems)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
