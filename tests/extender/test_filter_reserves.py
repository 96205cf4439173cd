"""Best-only ``filter`` reserves the node it answers, before the asynchronous bind arrives.

kube-scheduler binds asynchronously: the next pods' filters run before an earlier pod's bind
reaches the extender. With one node left that fits one more pod, two pods could both be sent
there and the second bind refused ("no longer fits", a backoff of 1 s or more). The reservation
made by filter (``Runtime._nominate``) closes that window; bind to that node only calls the API;
anything else releases it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qosched.extender.kube.binding import BindError
from qosched.extender.kube.cache import StaticCluster
from qosched.extender.server.runtime import Runtime
from qosched.policies.placement.base import make_policy
from tests.extender.extender_support import RecordingBinder, node, pod, write_snapshot
from tests.extender.test_runtime import DEVICE_MEMORY, LOOKUP, Counting


def _runtime(tmp_path: Path, binder: Any = None) -> tuple[Runtime, Counting, RecordingBinder]:
    """Two nodes with one T4 each; a pending pod of 1,000 milli fills a node."""
    objects: list[dict[str, Any]] = [node("a", gpus=1), node("b", gpus=1)]
    objects += [pod(f"p{i}", uid=f"uid-{i}", gpu_milli=1000) for i in range(3)]
    cache = StaticCluster.from_file(write_snapshot(tmp_path / "c.json", objects), LOOKUP, DEVICE_MEMORY)
    policy = Counting(make_policy("qosched"))
    binder = binder or RecordingBinder()
    rt = Runtime(cache, policy, binder)
    rt.keep_best_only = True
    return rt, policy, binder


def _pod(i: int) -> dict[str, Any]:
    return pod(f"p{i}", uid=f"uid-{i}", gpu_milli=1000)


def test_the_next_filter_sees_the_node_taken_before_the_bind(tmp_path: Path) -> None:
    rt, _, binder = _runtime(tmp_path)
    first = rt.filter(_pod(0), ["a", "b"]).kept
    assert len(first) == 1
    assert rt.cache.is_assumed("uid-0")
    second = rt.filter(_pod(1), ["a", "b"]).kept
    assert len(second) == 1
    assert second != first  # without the reservation both pods were sent to the same node
    third = rt.filter(_pod(2), ["a", "b"])
    assert third.kept == []  # both GPUs are reserved
    assert binder.calls == []


def test_bind_to_the_reserved_node_only_calls_the_api(tmp_path: Path) -> None:
    rt, policy, binder = _runtime(tmp_path)
    (target,) = rt.filter(_pod(0), ["a", "b"]).kept
    evaluations = len(policy.calls)
    outcome = rt.bind("default", "p0", "uid-0", target)
    assert outcome.error == ""
    assert outcome.node == target
    assert len(policy.calls) == evaluations  # no new decision at bind
    ((_, name, uid, bound, annotations),) = binder.calls
    assert (name, uid, bound) == ("p0", "uid-0", target)
    assert annotations == dict(outcome.annotations)
    assert annotations["qosched.io/device"] == "0"
    assert not rt._nominations


def test_bind_elsewhere_releases_the_reservation(tmp_path: Path) -> None:
    rt, _, binder = _runtime(tmp_path)
    (target,) = rt.filter(_pod(0), ["a", "b"]).kept
    other = "b" if target == "a" else "a"
    outcome = rt.bind("default", "p0", "uid-0", other)
    assert outcome.error == ""
    assert binder.calls[0][3] == other
    with rt.cache.reading() as state:
        alloc = state.allocation("uid-0")
        assert alloc is not None
        assert alloc.node == other
    # The first node is free again for another pod.
    assert rt.filter(_pod(1), [target]).kept == [target]


def test_filtering_the_same_pod_again_releases_its_reservation_first(tmp_path: Path) -> None:
    rt, _, _ = _runtime(tmp_path)
    (target,) = rt.filter(_pod(0), [target_name := "a"]).kept
    assert target == target_name
    # The scheduler did not bind it (e.g. a plugin of its own rejected the node) and retries:
    # the pod's own reservation must not make its node look full.
    assert rt.filter(_pod(0), ["a"]).kept == ["a"]
    assert rt.cache.is_assumed("uid-0")
    assert list(rt._nominations) == ["uid-0"]


def test_a_refused_bind_releases_the_reservation(tmp_path: Path) -> None:
    binder = RecordingBinder(fail=BindError("pods p0 not found", reason="not_found"))
    rt, _, _ = _runtime(tmp_path, binder)
    (target,) = rt.filter(_pod(0), ["a", "b"]).kept
    outcome = rt.bind("default", "p0", "uid-0", target)
    assert "failed" in outcome.error
    assert not rt.cache.is_assumed("uid-0")
    with rt.cache.reading() as state:
        assert state.allocation("uid-0") is None


@pytest.mark.parametrize("best_only", [False, True])
def test_no_reservation_without_best_only_or_with_several_nodes(tmp_path: Path, best_only: bool) -> None:
    rt, _, _ = _runtime(tmp_path)
    rt.keep_best_only = best_only
    kept = rt.filter(_pod(0), ["a", "b"]).kept
    assert len(kept) == (1 if best_only else 2)
    assert rt.cache.is_assumed("uid-0") is best_only


def test_reservations_the_cache_dropped_are_pruned(tmp_path: Path) -> None:
    rt, _, _ = _runtime(tmp_path)
    rt._nominations_prune_at = 1
    rt.filter(_pod(0), ["a", "b"])
    rt.cache.forget("uid-0")  # e.g. expired unconfirmed, or the pod was deleted
    rt.filter(_pod(1), ["a", "b"])  # the second nomination prunes the first
    assert list(rt._nominations) == ["uid-1"]
    assert rt._nominations_prune_at == 1024


def test_a_late_bind_keeps_the_reservation_for_the_bind_s_own_ttl(tmp_path: Path) -> None:
    """kube-scheduler may call bind long after filter (a PreBind volume wait, a Permit plugin's
    wait): the reservation then gets the TTL a bind's own gets, counted from the bind, so a
    successful bind whose watch event has not arrived yet still holds its device."""
    now = [0.0]
    objects: list[dict[str, Any]] = [node("a", gpus=1)]
    objects += [pod(f"p{i}", uid=f"uid-{i}", gpu_milli=1000) for i in range(2)]
    cache = StaticCluster.from_file(
        write_snapshot(tmp_path / "c.json", objects), LOOKUP, DEVICE_MEMORY, clock=lambda: now[0]
    )
    rt = Runtime(cache, make_policy("qosched"), RecordingBinder())
    rt.keep_best_only = True
    assert rt.filter(_pod(0), ["a"]).kept == ["a"]
    now[0] = cache.assume_ttl_s - 1.0  # the bind arrives just before the reservation expires
    assert rt.bind("default", "p0", "uid-0", "a").error == ""
    now[0] = cache.assume_ttl_s + 1.0  # the watch has not shown the binding yet
    assert rt.cache.is_assumed("uid-0")
    assert rt.filter(_pod(1), ["a"]).kept == []  # the bound pod's GPU is not handed out twice


def test_a_bind_after_the_reservation_expired_decides_again(tmp_path: Path) -> None:
    now = [0.0]
    objects: list[dict[str, Any]] = [node("a", gpus=1)]
    objects += [pod(f"p{i}", uid=f"uid-{i}", gpu_milli=1000) for i in range(2)]
    cache = StaticCluster.from_file(
        write_snapshot(tmp_path / "c.json", objects), LOOKUP, DEVICE_MEMORY, clock=lambda: now[0]
    )
    policy = Counting(make_policy("qosched"))
    rt = Runtime(cache, policy, RecordingBinder())
    rt.keep_best_only = True
    assert rt.filter(_pod(0), ["a"]).kept == ["a"]
    now[0] = cache.assume_ttl_s + 1.0  # expired; nothing swept it yet (no request since)
    assert rt.bind("default", "p0", "uid-0", "a").error == ""
    now[0] = 2 * cache.assume_ttl_s  # within the new reservation's TTL
    assert rt.cache.is_assumed("uid-0")
    assert rt.filter(_pod(1), ["a"]).kept == []


def _timed_out_then_expired(tmp_path: Path, gpus: int) -> tuple[Runtime, RecordingBinder, list[float]]:
    """pod 0 reserved on ``a`` by filter, its bind timed out (outcome unknown, reservation kept),
    and the reservation expired: the write never committed."""
    now = [0.0]
    objects: list[dict[str, Any]] = [node("a", gpus=gpus), node("b", gpus=1)]
    objects += [pod(f"p{i}", uid=f"uid-{i}", gpu_milli=1000) for i in range(2)]
    cache = StaticCluster.from_file(
        write_snapshot(tmp_path / "c.json", objects), LOOKUP, DEVICE_MEMORY, clock=lambda: now[0]
    )
    binder = RecordingBinder(fail=BindError("the request timed out", reason="timeout"))
    rt = Runtime(cache, make_policy("qosched"), binder)
    rt.keep_best_only = True
    assert rt.filter(_pod(0), ["a"]).kept == ["a"]
    assert "timed out" in rt.bind("default", "p0", "uid-0", "a").error
    now[0] += 2 * cache.assume_ttl_s
    binder.fail = None
    return rt, binder, now


def test_a_pod_whose_unknown_bind_expired_binds_where_filter_reserves_next(tmp_path: Path) -> None:
    """The outcome-unknown entry lives while the pod is assumed; a new reservation by filter must
    not revive it (else every bind to another node was refused as 'outcome unknown', and the
    pod, filtered and reserved again before each bind, could never be placed)."""
    rt, binder, _ = _timed_out_then_expired(tmp_path, gpus=1)
    assert rt.filter(_pod(0), ["b"]).kept == ["b"]
    outcome = rt.bind("default", "p0", "uid-0", "b")
    assert outcome.error == ""
    assert binder.calls[-1][3] == "b"


def test_an_expired_unknown_bind_does_not_write_its_old_devices(tmp_path: Path) -> None:
    """Same node again, but its device 0 was taken meanwhile: the bind writes the devices of the
    new reservation (1), not those of the expired one (0), which another pod now holds."""
    rt, binder, _ = _timed_out_then_expired(tmp_path, gpus=2)
    rt.cache.apply_pod(pod("other", uid="uid-other", node_name="a", annotations={"qosched.io/device": "0"}))
    assert rt.filter(_pod(0), ["a"]).kept == ["a"]
    outcome = rt.bind("default", "p0", "uid-0", "a")
    assert outcome.error == ""
    with rt.cache.reading() as state:
        alloc = state.allocation("uid-0")
        assert alloc is not None
        assert alloc.devices == (1,)
    assert binder.calls[-1][4]["qosched.io/device"] == "1"


def test_the_verdict_memo_serves_the_runtime_and_changes_no_decision(tmp_path: Path) -> None:
    """The real policy (with its ``memo_token`` and learner, which ``Counting`` hides) behind the
    runtime: replicas filtered and bound in turn go where a runtime without the memo sends them,
    and most node verdicts come from the memo."""
    objects: list[dict[str, Any]] = [node(f"n{i}", gpus=2) for i in range(6)]
    objects += [pod(f"r{i}", uid=f"uid-r{i}", gpu_milli=500) for i in range(10)]
    chosen: dict[str, list[str]] = {}
    runtimes: dict[str, Runtime] = {}
    for label in ("memo", "plain"):
        cache = StaticCluster.from_file(
            write_snapshot(tmp_path / f"{label}.json", objects), LOOKUP, DEVICE_MEMORY
        )
        policy = make_policy("qosched")
        rt = Runtime(cache, policy if label == "memo" else Counting(policy), RecordingBinder())
        rt.keep_best_only = True
        nodes = []
        for i in range(10):
            (target,) = rt.filter(
                pod(f"r{i}", uid=f"uid-r{i}", gpu_milli=500), [f"n{k}" for k in range(6)]
            ).kept
            assert rt.bind("default", f"r{i}", f"uid-r{i}", target).error == ""
            nodes.append(target)
        chosen[label], runtimes[label] = nodes, rt
    assert chosen["memo"] == chosen["plain"]
    memo = runtimes["memo"]._row_memo
    assert memo.reused_rows > memo.judged_rows
    assert runtimes["plain"]._row_memo.reused_rows == 0
