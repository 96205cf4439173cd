"""``ClusterCache`` (the static feeder's core): lists, pod events, assumptions, devices, nodes.

Pods ask for 250 milli-GPU (resnet50, 100m CPU) unless a row says otherwise; nodes are
``nvidia-t4`` with 8 CPUs. Expected accounting is computed by hand in each test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from qosched.extender.kube.cache import ClusterCache, StaticCluster
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.state import ServiceParams, StateError
from qosched.policies.types import Allocation
from qosched.profiles.store import bundled_profiles
from tests.extender.extender_support import node, pod, write_snapshot

LOOKUP, DEVICE_MEMORY = lookup_from_profiles(bundled_profiles())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(clock: Callable[[], float] | None = None, ttl_s: float = 30.0) -> ClusterCache:
    return ClusterCache(LOOKUP, DEVICE_MEMORY, assume_ttl_s=ttl_s, clock=clock or Clock())


def used(c: ClusterCache, name: str) -> list[int]:
    i = c.state.node_index[name]
    return c.state.gpu_used_milli[i, : int(c.state.device_count[i])].tolist()


def cpu_used(c: ClusterCache, name: str) -> int:
    return int(c.state.cpu_used_milli[c.state.node_index[name]])


def assumed_alloc(c: ClusterCache, p: dict[str, Any], node_name: str, devices: tuple[int, ...]) -> Allocation:
    from qosched.extender.kube.objects import pod_demand

    return Allocation(pod=pod_demand(p), node=node_name, devices=devices, assumed=True)


# ----------------------------------------------------------------------------- lists


def test_replace_all_accounts_bound_pods_only() -> None:
    c = cache()
    pods = [
        pod("a", node_name="n0", annotations={"qosched.io/device": "1"}),
        pod("b", node_name="n0", annotations={"qosched.io/device": "1"}),
        pod("pending"),
        pod("done", node_name="n1"),
    ]
    pods[3]["status"]["phase"] = "Succeeded"
    c.replace_all([node("n0"), node("n1")], pods)
    stats = c.stats()
    assert (stats.nodes, stats.pods, stats.placed, stats.assumed, stats.synced) == (2, 4, 2, 0, False)
    assert used(c, "n0") == [0, 500]
    assert used(c, "n1") == [0, 0]
    assert cpu_used(c, "n0") == 200
    assert cpu_used(c, "n1") == 0
    assert c.pod_by_name("default", "pending") is pods[2]
    assert c.pod("uid-a") is pods[0]
    c.mark_synced()
    assert c.synced
    assert c.stats().synced


def test_a_relist_keeps_an_assumption_the_list_does_not_contradict() -> None:
    c = cache()
    p = pod("p")
    c.replace_all([node("n0")], [p])
    c.assume(assumed_alloc(c, p, "n0", (0,)))
    c.replace_all([node("n0")], [p])  # the list predates the binding: the pod is still pending
    assert c.is_assumed("uid-p")
    assert used(c, "n0") == [250, 0]
    bound = pod("p", node_name="n0", annotations={"qosched.io/device": "0"})
    c.replace_all([node("n0")], [bound])  # now listed bound: confirmed, counted once
    assert not c.is_assumed("uid-p")
    assert used(c, "n0") == [250, 0]
    c.replace_all([node("n0")], [])  # deleted
    assert "uid-p" not in c.state
    assert used(c, "n0") == [0, 0]


def test_rebuild_recomputes_service_parameters_and_keeps_everything_else() -> None:
    c = cache()
    c.replace_all([node("n0")], [pod("a", node_name="n0", annotations={"qosched.io/device": "0"})])
    i = c.state.node_index["n0"]
    before = c.state.svc_service_ms[i, 0].max()
    version = c.state.version

    def slower(accelerator: str, model: str) -> ServiceParams | None:
        params = LOOKUP(accelerator, model)
        return None if params is None else dataclasses.replace(params, service_ms=2 * params.service_ms)

    c.rebuild(slower, DEVICE_MEMORY)
    assert c.state.svc_service_ms[i, 0].max() == pytest.approx(2 * before)
    assert used(c, "n0") == [250, 0]
    assert c.state.version > version


# ----------------------------------------------------------------------------- pod events


def test_pod_events_add_move_and_delete_accounting() -> None:
    c = cache()
    c.replace_all([node("n0"), node("n1")], [])
    c.apply_pod(pod("p"))
    assert "uid-p" not in c.state
    c.apply_pod(pod("p", node_name="n0", annotations={"qosched.io/device": "1"}))
    assert used(c, "n0") == [0, 250]
    c.apply_pod(pod("p", node_name="n0", annotations={"qosched.io/device": "1"}))  # resync: idempotent
    assert used(c, "n0") == [0, 250]
    assert len(c.state) == 1
    c.delete_pod(pod("p"))
    assert used(c, "n0") == [0, 0]
    assert c.pod("uid-p") is None
    assert c.pod_by_name("default", "p") is None


def test_a_pod_bound_to_an_unknown_node_waits_for_it() -> None:
    c = cache()
    c.replace_all([node("n0")], [])
    c.apply_pod(pod("p", node_name="late", annotations={"qosched.io/device": "0"}))
    assert "uid-p" not in c.state
    c.apply_node(node("late"))
    assert used(c, "late") == [250, 0]


# ----------------------------------------------------------------------------- assumptions


def test_assume_then_the_watch_confirms_it() -> None:
    c = cache()
    p = pod("p")
    c.replace_all([node("n0")], [p])
    c.assume(assumed_alloc(c, p, "n0", (1,)))
    assert c.is_assumed("uid-p")
    assert c.stats().assumed == 1
    assert used(c, "n0") == [0, 250]
    c.apply_pod(pod("p"))  # a stale pending event: the assumption stays
    assert c.is_assumed("uid-p")
    c.apply_pod(pod("p", node_name="n0", annotations={"qosched.io/device": "1"}))
    assert not c.is_assumed("uid-p")
    assert used(c, "n0") == [0, 250]
    assert c.stats().assumed == 0


def test_assume_then_bound_elsewhere_moves_the_pod() -> None:
    c = cache()
    p = pod("p")
    c.replace_all([node("n0"), node("n1")], [p])
    c.assume(assumed_alloc(c, p, "n0", (0,)))
    c.apply_pod(pod("p", node_name="n1", annotations={"qosched.io/device": "1"}))
    assert not c.is_assumed("uid-p")
    assert used(c, "n0") == [0, 0]
    assert used(c, "n1") == [0, 250]


@pytest.mark.parametrize(
    ("advance_s", "still_assumed"),
    [(29.9, True), (30.0, False), (300.0, False)],
    ids=["before-ttl", "at-ttl", "long-after"],
)
def test_an_unconfirmed_assumption_expires_after_its_ttl(advance_s: float, still_assumed: bool) -> None:
    clock = Clock()
    c = cache(clock, ttl_s=30.0)
    p = pod("p")
    c.replace_all([node("n0")], [p])
    c.assume(assumed_alloc(c, p, "n0", (0,)))
    clock.now += advance_s
    with c.reading():  # every decision drops expired assumptions first
        pass
    assert c.is_assumed("uid-p") is still_assumed
    assert used(c, "n0") == ([250, 0] if still_assumed else [0, 0])


def test_a_re_assumption_is_not_expired_by_the_old_deadline() -> None:
    clock = Clock()
    c = cache(clock, ttl_s=30.0)
    p = pod("p")
    c.replace_all([node("n0")], [p])
    c.assume(assumed_alloc(c, p, "n0", (0,)))
    clock.now += 20
    c.forget("uid-p")
    c.assume(assumed_alloc(c, p, "n0", (0,)))  # new deadline: now + 30
    clock.now += 15  # past the first deadline, not the second
    with c.reading():
        pass
    assert c.is_assumed("uid-p")


@pytest.mark.parametrize("during_rebuild", [False, True])
def test_renew_restarts_a_live_assumption_s_ttl(during_rebuild: bool) -> None:
    clock = Clock()
    c = cache(clock, ttl_s=30.0)
    p = pod("p")
    c.replace_all([node("n0")], [p])
    c.assume(assumed_alloc(c, p, "n0", (0,)))
    clock.now += 20
    if during_rebuild:  # journaled: the rebuilt index keeps the new deadline

        def build(staging: ClusterCache, allocs: list[Allocation]) -> None:
            assert c.renew("uid-p")
            staging._reset_state_locked(list(staging._nodes.values()))
            for alloc in allocs:
                staging._add_locked(alloc, strict=False)

        c._rebuild_offlock(build, keep_allocations=True)
    else:
        assert c.renew("uid-p")
    clock.now += 15  # past the first deadline, not the renewed one
    with c.reading():
        pass
    assert c.is_assumed("uid-p")
    assert used(c, "n0") == [250, 0]
    clock.now += 20  # past the renewed deadline
    assert not c.renew("uid-p")  # expired (swept first): nothing to renew
    assert used(c, "n0") == [0, 0]


def test_forget_releases_only_assumptions() -> None:
    c = cache()
    p = pod("p")
    running = pod("r", node_name="n0", annotations={"qosched.io/device": "0"})
    c.replace_all([node("n0")], [p, running])
    c.assume(assumed_alloc(c, p, "n0", (1,)))
    c.forget("uid-p")
    c.forget("uid-r")  # confirmed by the API server: not ours to drop
    assert used(c, "n0") == [250, 0]
    assert not c.is_assumed("uid-p")


def test_an_assumption_that_overbooks_a_device_is_refused_and_changes_nothing() -> None:
    c = cache()
    full = [pod(f"f{i}", node_name="n0", annotations={"qosched.io/device": "0"}) for i in range(4)]
    p = pod("p")
    c.replace_all([node("n0")], [*full, p])
    version = c.state.version
    with pytest.raises(StateError, match="lack 250 milli-GPU"):
        c.assume(assumed_alloc(c, p, "n0", (0,)))
    assert used(c, "n0") == [1000, 0]
    assert not c.is_assumed("uid-p")
    assert c.state.version == version


# ----------------------------------------------------------------------------- devices


def test_pods_without_a_device_annotation_get_first_fit_devices() -> None:
    # 4 GPUs. a: 1 whole GPU -> device 0. b: 2 GPUs -> the first two free ones, 1 and 2.
    # c: 500 milli -> device 3 (the first with >= 500 free). d: 500 milli -> device 3 again
    # (500 free left there). e: 250 milli -> nothing has 250 free: reality wins, device 0 is
    # over-committed rather than the pod ignored.
    pods = [
        pod("a", model=None, node_name="n", extra_resources={"nvidia.com/gpu": "1"}),
        pod("b", model=None, node_name="n", extra_resources={"nvidia.com/gpu": "2"}),
        pod("c", gpu_milli=500, node_name="n"),
        pod("d", gpu_milli=500, node_name="n"),
        pod("e", gpu_milli=250, node_name="n"),
    ]
    c = cache()
    c.replace_all([node("n", gpus=4)], pods)
    devices = {u: c.state.allocation(f"uid-{u}").devices for u in "abcde"}  # type: ignore[union-attr]
    assert devices == {"a": (0,), "b": (1, 2), "c": (3,), "d": (3,), "e": (0,)}
    assert used(c, "n") == [1250, 1000, 1000, 1000]


@pytest.mark.parametrize(
    ("gpus_after", "used_after", "devices_after"),
    [
        (4, [250, 0, 0, 250], {"a": (0,), "b": (3,)}),  # grows: pods keep their devices
        (2, [250, 0], {"a": (0,), "b": ()}),  # shrinks: a device that is gone holds nothing
    ],
    ids=["more-gpus", "fewer-gpus"],
)
def test_a_node_update_changing_its_device_count(
    gpus_after: int, used_after: list[int], devices_after: dict[str, tuple[int, ...]]
) -> None:
    c = cache()
    pods = [
        pod("a", node_name="n", annotations={"qosched.io/device": "0"}),
        pod("b", node_name="n", annotations={"qosched.io/device": "3"}),
    ]
    c.replace_all([node("n", gpus=4)], pods)
    version = c.state.version
    c.apply_node(node("n", gpus=gpus_after))
    assert int(c.state.device_count[c.state.node_index["n"]]) == gpus_after
    assert used(c, "n") == used_after
    assert {u: c.state.allocation(f"uid-{u}").devices for u in "ab"} == devices_after  # type: ignore[union-attr]
    assert cpu_used(c, "n") == 200  # both pods still run and hold their CPU
    assert c.state.version > version


def test_a_deleted_node_returns_with_its_pods() -> None:
    c = cache()
    c.replace_all([node("n0")], [pod("a", node_name="n0", annotations={"qosched.io/device": "1"})])
    c.delete_node("n0")
    assert "uid-a" not in c.state
    c.apply_node(node("n0"))
    assert used(c, "n0") == [0, 250]


# ----------------------------------------------------------------------------- StaticCluster


def test_static_cluster_from_a_file_is_synced_and_records_bindings(tmp_path: Any) -> None:
    path = write_snapshot(tmp_path / "c.json", [node("n0"), pod("p")])
    c = StaticCluster.from_file(path, LOOKUP, DEVICE_MEMORY)
    assert c.synced
    c.assume(assumed_alloc(c, pod("p"), "n0", (0,)))
    c.record_binding("uid-p", "n0", {"qosched.io/device": "0"})
    assert not c.is_assumed("uid-p")
    obj = c.pod("uid-p")
    assert obj is not None
    assert obj["spec"]["nodeName"] == "n0"
    assert obj["metadata"]["annotations"]["qosched.io/device"] == "0"
    assert used(c, "n0") == [250, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no Node objects found"),
        ("{", "not valid YAML/JSON"),
        ("- 1\n- 2\n", "every document must be a Kubernetes object or List"),
        ('{"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"}}]}', "no Node objects found"),
    ],
    ids=["empty", "broken-json", "not-objects", "pods-only"],
)
def test_bad_snapshot_files_name_the_file(tmp_path: Any, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        StaticCluster.from_file(path, LOOKUP, DEVICE_MEMORY)
    assert str(path) in str(err.value)


def test_yaml_and_json_snapshots_load_the_same_cluster(tmp_path: Any) -> None:
    import yaml

    objects = [node("n0"), pod("a", node_name="n0", annotations={"qosched.io/device": "1"}), pod("b")]
    as_json = write_snapshot(tmp_path / "c.json", objects)
    as_yaml = tmp_path / "c.yaml"
    as_yaml.write_text(yaml.safe_dump_all(objects))
    a = StaticCluster.from_file(as_json, LOOKUP, DEVICE_MEMORY)
    b = StaticCluster.from_file(as_yaml, LOOKUP, DEVICE_MEMORY)
    assert a.stats() == b.stats()
    assert np.array_equal(a.state.gpu_used_milli, b.state.gpu_used_milli)
