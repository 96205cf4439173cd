"""``Runtime``: reuse of a pod's evaluation across filter → prioritize → bind, and preempt trimming.

The policy is the real ``qosched`` policy behind a wrapper that counts its calls and the number
of candidates of each, so a test can tell a reused evaluation from a fresh one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qosched.extender.kube.cache import StaticCluster
from qosched.extender.server.runtime import Runtime, compact_index, rows_of
from qosched.policies.placement.base import Evaluation, make_policy
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.state import ClusterState
from qosched.policies.types import PodDemand
from qosched.profiles.store import bundled_profiles
from tests.extender.extender_support import RecordingBinder, node, pod, write_snapshot

LOOKUP, DEVICE_MEMORY = lookup_from_profiles(bundled_profiles())
NAMES = ["n0", "n1", "n2", "n3"]


class Counting:
    """Wraps a policy; records the candidate count of every ``evaluate``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[int] = []

    def evaluate(self, state: ClusterState, pod: PodDemand, candidates: np.ndarray) -> Evaluation:
        self.calls.append(len(candidates))
        return self.inner.evaluate(state, pod, candidates)


def runtime(
    tmp_path: Path, objects: list[dict[str, Any]] | None = None, **kw: Any
) -> tuple[Runtime, Counting]:
    if objects is None:
        # Different loads so that the scores differ: n0 empty ... n3 with three services.
        objects = [node(n, cpu="8") for n in NAMES]
        for i, n in enumerate(NAMES):
            objects += [
                pod(f"{n}-{k}", node_name=n, annotations={"qosched.io/device": "0"}) for k in range(i)
            ]
    cache = StaticCluster.from_file(write_snapshot(tmp_path / "c.json", objects), LOOKUP, DEVICE_MEMORY)
    policy = Counting(make_policy("qosched"))
    return Runtime(cache, policy, RecordingBinder(), **kw), policy  # type: ignore[arg-type]


P = pod("p", slo_ms=100, rate_rps=10)


# ----------------------------------------------------------------------------- evaluation reuse


def test_prioritize_after_filter_reuses_the_evaluation(tmp_path: Path) -> None:
    rt, policy = runtime(tmp_path)
    outcome = rt.filter(P, NAMES)
    assert outcome.kept == NAMES
    scores = rt.prioritize(P, ["n2", "n0"])  # a subset, in another order
    assert policy.calls == [4]
    # The same scores a fresh evaluation of just these two nodes gives.
    fresh, _ = runtime(tmp_path)
    assert scores == fresh.prioritize(P, ["n2", "n0"])
    assert (rt.evaluated, rt.reused) == (1, 1)


def test_prioritize_recomputes_when_the_cluster_changed(tmp_path: Path) -> None:
    rt, policy = runtime(tmp_path)
    rt.filter(P, NAMES)
    rt.cache.apply_pod(pod("newcomer", node_name="n1", annotations={"qosched.io/device": "1"}))
    rt.prioritize(P, NAMES)
    assert policy.calls == [4, 4]


def test_prioritize_recomputes_when_the_pod_changed(tmp_path: Path) -> None:
    rt, policy = runtime(tmp_path)
    rt.filter(P, NAMES)
    rt.prioritize(pod("p", slo_ms=50, rate_rps=10), NAMES)  # same UID, other SLO
    assert policy.calls == [4, 4]


def test_prioritize_recomputes_for_nodes_filter_did_not_see(tmp_path: Path) -> None:
    rt, policy = runtime(tmp_path)
    rt.filter(P, ["n0", "n1"])
    rt.prioritize(P, ["n0", "n1", "n2"])
    assert policy.calls == [2, 3]


def test_unknown_nodes_do_not_prevent_reuse_and_score_0(tmp_path: Path) -> None:
    rt, policy = runtime(tmp_path)
    rt.filter(P, [*NAMES, "ghost"])
    scores = dict(rt.prioritize(P, ["ghost", "n0"]))
    assert policy.calls == [4]
    assert scores["ghost"] == 0


def test_bind_reuses_the_filter_evaluation_or_judges_only_its_node(tmp_path: Path) -> None:
    rt, policy = runtime(tmp_path)
    rt.filter(P, NAMES)
    assert rt.bind("default", "p", "uid-p", "n0").error == ""
    assert policy.calls == [4]  # nothing changed since filter: its verdict and devices are used
    q = pod("q", slo_ms=100, rate_rps=10)
    rt.cache.apply_pod(q)
    rt.filter(q, NAMES)
    rt.cache.apply_pod(pod("newcomer", node_name="n1", annotations={"qosched.io/device": "1"}))
    assert rt.bind("default", "q", "uid-q", "n1").error == ""
    assert policy.calls == [4, 4, 1]  # stale: only the chosen node is judged again


def test_a_change_on_another_node_keeps_the_evaluation(tmp_path: Path) -> None:
    """Per-node validity (``ClusterState.node_version``): kube-scheduler's binds of other pods
    land between a pod's filter and its prioritize; only the nodes they touched are stale."""
    rt, policy = runtime(tmp_path)
    rt.filter(P, ["n0", "n1", "n2"])
    rt.cache.apply_pod(pod("newcomer", node_name="n3", annotations={"qosched.io/device": "1"}))
    scores = rt.prioritize(P, ["n0", "n1", "n2"])
    assert policy.calls == [3]
    fresh, _ = runtime(tmp_path)
    fresh.cache.apply_pod(pod("newcomer", node_name="n3", annotations={"qosched.io/device": "1"}))
    assert scores == fresh.prioritize(P, ["n0", "n1", "n2"])
    assert rt.bind("default", "p", "uid-p", "n2").error == ""
    assert policy.calls == [3]


def test_bind_annotations_come_from_the_evaluation(tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    rt.filter(P, NAMES)
    outcome = rt.bind("default", "p", "uid-p", "n0")
    assert outcome.error == ""
    assert outcome.node == "n0"
    assert outcome.annotations["qosched.io/policy"] == "qosched"
    assert outcome.annotations["qosched.io/device"] in {"0", "1"}
    binder = rt.binder
    assert isinstance(binder, RecordingBinder)
    assert binder.calls == [("default", "p", "uid-p", "n0", dict(outcome.annotations))]


def test_the_decision_cache_is_bounded(tmp_path: Path) -> None:
    rt, policy = runtime(tmp_path, decision_cache_size=2)
    pods = [pod(f"x{i}") for i in range(3)]
    for p in pods:
        rt.filter(p, NAMES)
    for p in pods[1:]:
        rt.prioritize(p, NAMES)  # still remembered
    rt.prioritize(pods[0], NAMES)  # evicted (least recently used)
    assert policy.calls == [4, 4, 4, 4]


def test_filter_results_are_exact_per_node(tmp_path: Path) -> None:
    objects = [node("gpu", cpu="8"), node("cpu", None, gpus=0), node("tiny", cpu="50m")]
    rt, _ = runtime(tmp_path, objects)
    outcome = rt.filter(P, ["gpu", "cpu", "tiny", "ghost"])
    assert outcome.kept == ["gpu"]
    assert outcome.failed == {
        "tiny": "qosched (qosched): not enough free CPU (closest: tiny: needs 100m CPU, has 50m free)"
    }
    assert outcome.unresolvable == {
        "cpu": "qosched (qosched): node has no qosched.io/accelerator label"
        " (e.g. cpu: the pod's model resnet50 needs an accelerator)",
        "ghost": "qosched (qosched): node is not in the extender's cache (e.g. ghost)",
    }


def test_one_message_per_reason_code_names_the_closest_node(tmp_path: Path) -> None:
    """Every node failing with a code gets the same string (kube-scheduler counts nodes per
    distinct message), carrying the numbers of the node closest to fitting."""
    free_cpu = {"a": "50m", "b": "80m", "c": "30m", "d": "70m"}
    objects = [node(n, cpu=c) for n, c in free_cpu.items()]
    objects += [node(f"busy{i}", gpus=1) for i in range(3)]
    # busy*: four services of resnet50 at 60 rps on device 0 (S = 3.0 ms on a T4: ρ = 0.72);
    # the pod's 80 rps would add 0.24.
    for i in range(3):
        objects += [
            pod(
                f"busy{i}-{k}",
                node_name=f"busy{i}",
                rate_rps=60,
                slo_ms=1000,
                gpu_milli=100,
                annotations={"qosched.io/device": "0"},
            )
            for k in range(4)
        ]
    rt, _ = runtime(tmp_path, objects)
    hungry = pod("hungry", rate_rps=80, slo_ms=1000)
    outcome = rt.filter(hungry, [*free_cpu, "busy0", "busy1", "busy2"])
    assert outcome.kept == []
    cpu = {v for k, v in outcome.failed.items() if k in free_cpu}
    assert cpu == {"qosched (qosched): not enough free CPU (closest: b: needs 100m CPU, has 80m free)"}
    busy = {v for k, v in outcome.failed.items() if k.startswith("busy")}
    assert len(busy) == 1
    (text,) = busy
    # ρ = (4 × 60 + 80) rps × 3.003 ms = 0.96.
    assert text == (
        "qosched (qosched): device utilisation would exceed its threshold"
        " (e.g. busy0: device 0: utilisation 0.96 > limit 0.80)"
    )


# ----------------------------------------------------------------------------- preempt trimming


NOW_S = 1_800_000_000.0  # the runtime's wall clock in the preempt tests [epoch s]
LONG_AGO = (
    "2027-01-14T22:00:00Z"  # 36,000 s before NOW_S (2027-01-15T08:00:00Z): victims ran all along (slack)
)


def started_long_ago(p: dict[str, Any]) -> dict[str, Any]:
    p["metadata"]["creationTimestamp"] = LONG_AGO
    p["status"]["startTime"] = LONG_AGO
    return p


def preempt_cluster(tmp_path: Path) -> Runtime:
    """2-CPU nodes ``a`` and ``b``, each running two 900m ``batch`` victims started 10 h ago (so
    the QoS-driven rule lets them be evicted: they are far above their class target), ``c``
    empty, and an ``edgetpu`` node (no resnet50 profile there) running one victim."""
    objects = [node("a", cpu="2"), node("b", cpu="2"), node("c", cpu="2"), node("tpu", "edgetpu", gpus=0)]
    batch = {"qosched.io/device": "0", "qosched.io/class": "batch"}
    for n in ("a", "b"):
        objects += [
            started_long_ago(pod(f"{n}-v{k}", cpu="900m", node_name=n, priority=10, annotations=batch))
            for k in range(2)
        ]
    objects.append(started_long_ago(pod("tpu-v", model=None, cpu="900m", node_name="tpu", priority=10)))
    rt, _ = runtime(tmp_path, objects)
    rt.wall_clock = lambda: NOW_S  # type: ignore[method-assign]
    return rt


def high(cpu: str) -> dict[str, Any]:
    """A ``prod`` pod created just now: it cannot afford to wait, so it may preempt."""
    p = pod("high", cpu=cpu, priority=1000, annotations={"qosched.io/class": "prod"})
    p["metadata"]["creationTimestamp"] = "2027-01-15T07:59:00Z"
    return p


def proposal() -> dict[str, list[str]]:
    return {
        "a": ["uid-a-v0", "uid-a-v1"],
        "b": ["uid-b-v0", "uid-b-v1"],
        "tpu": ["uid-tpu-v"],
        "ghost": ["uid-nobody"],
    }


@pytest.mark.parametrize(
    ("cpu", "victims_per_node"),
    [("1000m", 1), ("1500m", 2)],
    ids=["one-victim-frees-enough", "both-victims-needed"],
)
def test_preempt_keeps_only_the_victims_needed(tmp_path: Path, cpu: str, victims_per_node: int) -> None:
    # 2000m CPU, 1800m used: one victim leaves 1100m free (enough for 1000m, not 1500m).
    rt = preempt_cluster(tmp_path)
    kept = rt.preempt(high(cpu), proposal())
    assert set(kept) == {"a", "b"}  # tpu: no resnet50 profile on edgetpu; ghost: unknown
    for node_name, uids in kept.items():
        assert len(uids) == victims_per_node
        assert set(uids) <= set(proposal()[node_name])


def test_preempt_never_adds_nodes_or_victims(tmp_path: Path) -> None:
    rt = preempt_cluster(tmp_path)
    kept = rt.preempt(high("1000m"), {"a": ["uid-a-v1"]})
    assert kept == {"a": ["uid-a-v1"]}
    assert rt.preempt(high("1500m"), {"a": ["uid-a-v1"]}) == {}


def test_preempt_leaves_the_cache_as_it_was(tmp_path: Path) -> None:
    rt = preempt_cluster(tmp_path)
    before = (rt.cache.state.cpu_used_milli.copy(), rt.cache.state.gpu_used_milli.copy(), len(rt.cache.state))
    rt.preempt(high("1500m"), proposal())
    after = (rt.cache.state.cpu_used_milli, rt.cache.state.gpu_used_milli, len(rt.cache.state))
    assert np.array_equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_preempt_of_an_unmanaged_pod_accepts_the_proposal(tmp_path: Path) -> None:
    rt = preempt_cluster(tmp_path)
    assert rt.preempt(pod("plain", model=None, cpu="1500m"), proposal()) == proposal()


# ----------------------------------------------------------------------------- name lookups


def test_compact_index_has_the_same_content_in_new_strings(tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    state = rt.cache.state
    index = compact_index(state)
    assert index == state.node_index
    assert all(a is not b for a, b in zip(index, state.node_index, strict=True))  # new key objects
    names = ["n3", "ghost", "n0"]
    assert rows_of(state, names, index).tolist() == rows_of(state, names).tolist() == [3, -1, 0]


def test_the_runtime_sees_a_node_added_after_its_index_was_built(tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    assert rt.filter(P, ["n9"]).unresolvable == {
        "n9": "qosched (qosched): node is not in the extender's cache (e.g. n9)"
    }
    rt.cache.apply_node(node("n9"))
    assert rt.filter(P, ["n9"]).kept == ["n9"]
    rt.cache.delete_node("n9")  # the row stays, unusable
    assert rt.filter(P, ["n9"]).unresolvable == {
        "n9": "qosched (qosched): node is not ready or is cordoned (e.g. n9)"
    }
