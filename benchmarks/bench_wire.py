"""Time the extender's wire layer against the stdlib ``json`` doing the same job, in the same run.

For each candidate count (default 1,000 and 5,000 nodes) and each case, one "call" is what a
route does around the policy: parse the request body, build the answer, encode it.

* ``filter/names``          nodeCacheCapable: NodeNames in, 80 % kept, 20 % FailedNodes out
                             (the same answer, prebuilt, on both sides: parse + encode only).
* ``filter/names+subset``   the same, building the answer with ``filter_result_for`` (subset,
                             disjointness and request-order checks); the baseline does the same
                             checks with plain set operations.
* ``prioritize/names``      NodeNames in, a 0..10 score per node out.
* ``prioritize/same-score`` the same with every score 0 (an unmanaged pod).
* ``filter/full-nodes``     nodeCacheCapable false: full Node objects in, the kept objects out.

The baseline is the plain approach of many Python extenders: ``json.loads`` the body, pull the
names out, and ``json.dumps`` a dict/list answer, with no validation. ``ratio`` = baseline time /
qosched time (above 1: qosched is faster although it validates every field it relies on).

The request bodies use the real pod and node objects captured from kube-scheduler
(``../shared/fixtures/kube-scheduler/``), with the node replicated under new names.

Run: ``.venv/bin/python benchmarks/bench_wire.py [--nodes 1000,5000] [--repeat 7]``
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from qosched.extender.server import wire

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "kube-scheduler"
CT = "application/json"


def _fixture(name: str) -> dict[str, Any]:
    return orjson.loads((FIXTURES / name).read_bytes())["request"]


def _names(n: int) -> list[str]:
    return [f"gpu-node-{i:05d}.rack-{i % 40:02d}.example.internal" for i in range(n)]


def _nodes(names: list[str]) -> list[dict[str, Any]]:
    template = _fixture("filter-low-fullnodes.json")["Nodes"]["items"][0]
    out = []
    for name in names:
        node = copy.deepcopy(template)
        node["metadata"]["name"] = name
        node["metadata"]["labels"]["kubernetes.io/hostname"] = name
        out.append(node)
    return out


def _best_s(fn: Callable[[], object], repeat: int) -> float:
    """Wall time of one call [s]: the fastest of ``repeat`` timed batches (each ~20 ms).

    The minimum, as ``timeit`` recommends: slower batches measure other processes, not the code.
    """
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    number = max(1, int(0.02 / once))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return min(samples)


Case = tuple[Callable[[], bytes], Callable[[], bytes], int]
"""(qosched call, baseline call, request body size [bytes]); each call returns the encoded answer."""


def cases(n: int) -> dict[str, Case]:
    """The four cases at ``n`` candidate nodes."""
    pod = _fixture("filter-low-nodecache.json")["Pod"]
    names = _names(n)
    names_body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
    nodes = _nodes(names)
    full_body = orjson.dumps({"Pod": pod, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None})
    kept_idx = [i for i in range(n) if i % 5]
    scores = [(i * 7) % 11 for i in range(n)]

    # The answer's content (which nodes pass) is the policy's job, fixed here for both sides.
    kept_names = [names[i] for i in kept_idx]
    failed = {names[i]: "qosched: insufficient_gpu" for i in range(0, n, 5)}

    def q_filter_names() -> bytes:
        wire.parse_filter_args(names_body, CT)
        return wire.encode_filter_result(wire.ExtenderFilterResult(None, tuple(kept_names), failed, None, ""))

    def b_filter_names() -> bytes:
        json.loads(names_body)
        answer: dict[str, Any] = {"Nodes": None, "NodeNames": kept_names, "FailedNodes": failed}
        answer |= {"FailedAndUnresolvableNodes": None, "Error": ""}
        return json.dumps(answer).encode()

    def q_filter_subset() -> bytes:
        args = wire.parse_filter_args(names_body, CT)
        return wire.encode_filter_result(wire.filter_result_for(args, kept_names, failed))

    def b_filter_subset() -> bytes:
        # The same guarantees as filter_result_for, written plainly: subset, disjoint, request order.
        cand = json.loads(names_body)["NodeNames"]
        cand_set, kept_set = set(cand), set(kept_names)
        assert kept_set <= cand_set
        assert failed.keys() <= cand_set
        assert kept_set.isdisjoint(failed)
        answer: dict[str, Any] = {
            "Nodes": None,
            "NodeNames": [c for c in cand if c in kept_set],
            "FailedNodes": failed,
        }
        answer |= {"FailedAndUnresolvableNodes": None, "Error": ""}
        return json.dumps(answer).encode()

    return {
        "filter/names": (q_filter_names, b_filter_names, len(names_body)),
        "filter/names+subset": (q_filter_subset, b_filter_subset, len(names_body)),
        "prioritize/names": _prioritize_case(names_body, n, scores, uniform=False),
        "prioritize/same-score": _prioritize_case(names_body, n, scores, uniform=True),
        "filter/full-nodes": _filter_full_case(full_body, kept_idx),
    }


def _prioritize_case(names_body: bytes, n: int, scores: list[int], *, uniform: bool) -> Case:
    """prioritize over node names, answering ``scores`` (or all 0 when ``uniform``)."""

    def q_prioritize() -> bytes:
        args = wire.parse_prioritize_args(names_body, CT)
        return wire.encode_host_priorities(args.candidates, [0] * n if uniform else scores)

    def b_prioritize() -> bytes:
        doc = json.loads(names_body)
        values = [0] * n if uniform else scores
        return json.dumps(
            [{"Host": h, "Score": s} for h, s in zip(doc["NodeNames"], values, strict=True)]
        ).encode()

    return (q_prioritize, b_prioritize, len(names_body))


def _filter_full_case(full_body: bytes, kept_idx: list[int]) -> Case:
    """filter over full Node objects, keeping the nodes at ``kept_idx``."""

    def q_filter_full() -> bytes:
        args = wire.parse_filter_args(full_body, CT)
        cand = args.candidates
        return wire.encode_filter_result(wire.filter_result_for(args, [cand[i] for i in kept_idx]))

    def b_filter_full() -> bytes:
        doc = json.loads(full_body)
        items = doc["Nodes"]["items"]
        kept = [items[i] for i in kept_idx]
        answer: dict[str, Any] = {
            "Nodes": {"metadata": {}, "items": kept},
            "NodeNames": None,
            "FailedNodes": None,
        }
        answer |= {"FailedAndUnresolvableNodes": None, "Error": ""}
        return json.dumps(answer).encode()

    return (q_filter_full, b_filter_full, len(full_body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1000,5000", help="comma-separated candidate counts")
    parser.add_argument("--repeat", type=int, default=9, help="timed batches per measurement")
    opts = parser.parse_args()
    print(f"{'case':<22} {'nodes':>6} {'body KiB':>9} {'qosched µs':>11} {'json µs':>9} {'ratio':>6}")
    for n in (int(x) for x in opts.nodes.split(",")):
        for name, (ours, baseline, body_bytes) in cases(n).items():
            # Same answer, semantically: the comparison is like for like.
            assert orjson.loads(ours()) == json.loads(baseline()), name
            ours_s = _best_s(ours, opts.repeat)
            base_s = _best_s(baseline, opts.repeat)
            print(
                f"{name:<22} {n:>6} {body_bytes / 1024:>9.0f} {ours_s * 1e6:>11.0f} "
                f"{base_s * 1e6:>9.0f} {base_s / ours_s:>6.1f}"
            )


if __name__ == "__main__":
    main()
