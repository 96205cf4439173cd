"""What ClusterState keeps for the placement policies: node versions, GPU models, GPU affinity,
SLO percentiles and contention terms of services; and the profile-set adapter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qosched.policies.placement.base import make_policy
from qosched.policies.placement.testing import (
    ProfileTable,
    gpu_node,
    inference_pod,
    plain_gpu_pod,
    state_with,
)
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.state import ClusterState, ServiceParams
from qosched.policies.types import Allocation

TABLE = ProfileTable(
    {
        ("nvidia-t4", "m"): ServiceParams(
            service_ms=5.0, second_moment_ms2=25.0, memory_mib=10.0, overhead_frac=0.1
        )
    },
    {"nvidia-t4": 16_000.0},
)


def test_node_version_moves_with_every_change_of_that_node_only() -> None:
    st = state_with([gpu_node("a", gpus=2), gpu_node("b", gpus=2)], TABLE)
    v0 = st.node_version.copy()
    st.add(Allocation(plain_gpu_pod("x", gpu_milli=100), "a", (0,)))
    assert st.node_version[0] > v0[0]
    assert st.node_version[1] == v0[1]
    v1 = st.node_version.copy()
    st.remove("x")
    assert st.node_version[0] > v1[0]
    v2 = st.node_version.copy()
    st.upsert_node(gpu_node("b", gpus=2, cpu_milli=1000))
    assert st.node_version[1] > v2[1]
    assert st.node_version[0] == v2[0]
    st.upsert_node(gpu_node("c"))
    assert st.node_version.shape == (3,)
    v3 = st.node_version.copy()
    st.remove_node("c")
    assert st.node_version[2] > v3[2]


def test_gpu_models_are_coded() -> None:
    st = state_with(
        [gpu_node("a", gpu_model="V100M16"), gpu_node("b"), gpu_node("c", gpu_model="A100")], TABLE
    )
    assert st.gpu_models == ["V100M16", "A100"]
    assert st.gpu_model_code.tolist() == [0, -1, 1]


def test_gpu_affinity_counts_follow_adds_and_removes() -> None:
    st = state_with([gpu_node("a", gpus=4)], TABLE)
    st.add(Allocation(plain_gpu_pod("s1", gpu_milli=300), "a", (0,)))
    st.add(Allocation(plain_gpu_pod("s2", gpu_milli=300), "a", (0,)))
    st.add(Allocation(plain_gpu_pod("w1", gpu_milli=1000), "a", (1,)))
    st.add(Allocation(plain_gpu_pod("w2", gpu_milli=2000), "a", (2, 3)))
    st.add(Allocation(plain_gpu_pod("c", cpu_milli=10), "a", ()))
    assert st.gpu_share_pods.tolist() == [2]
    assert st.gpu_whole_pods.tolist() == [[1, 1, 0, 0]]
    for uid in ("s1", "w2", "c"):
        st.remove(uid)
    assert st.gpu_share_pods.tolist() == [1]
    assert st.gpu_whole_pods.tolist() == [[1, 0, 0, 0]]


def test_service_percentile_and_contention_are_recorded_and_cleared() -> None:
    st = state_with([gpu_node("a")], TABLE)
    pod = inference_pod("p", "m", rate_rps=1.0, slo_ms=50.0, gpu_milli=100, slo_percentile=99.0)
    st.add(Allocation(pod, "a", (0,)))
    assert st.svc_slo_percentile[0, 0, 0] == 99.0
    assert st.svc_overhead_frac[0, 0, 0] == 0.1
    st.remove("p")
    assert math.isnan(st.svc_slo_percentile[0, 0, 0])
    assert st.svc_overhead_frac[0, 0, 0] == 0.0


def test_slot_growth_keeps_the_new_arrays() -> None:
    st = ClusterState([gpu_node("a")], TABLE.lookup, TABLE.device_memory, services_per_device=1)
    for i in range(3):
        pct = 90.0 + i
        st.add(
            Allocation(inference_pod(f"p{i}", "m", rate_rps=1.0, slo_ms=50.0, slo_percentile=pct), "a", (0,))
        )
    assert st.n_slots >= 3
    assert st.svc_slo_percentile[0, 0, :3].tolist() == [90.0, 91.0, 92.0]
    assert np.isnan(st.svc_slo_percentile[0, 0, 3:]).all()


class _ST:
    def __init__(self, mean: float, m2: float) -> None:
        self.mean_ms, self.second_moment_ms2 = mean, m2


class _Dev:
    def __init__(self, memory_mib: float) -> None:
        self.memory_mib = memory_mib


class _Profile:
    def __init__(self, accelerator: str, model: str, device: float | None) -> None:
        self.accelerator, self.model = accelerator, model
        self.service_time = _ST(4.0, 20.0)
        self.swap_overhead_ms, self.memory_mib, self.frontend_service_time_ms = 1.5, 300.0, 2.5
        self.accuracy, self.contention_overhead_frac = 0.7, 0.05
        self.device = None if device is None else _Dev(device)


class _Set:
    def __init__(self, profiles: list[_Profile]) -> None:
        self._p = {(p.accelerator, p.model): p for p in profiles}
        self.finds = 0

    def find(self, accelerator: str, model: str) -> _Profile | None:
        self.finds += 1
        return self._p.get((accelerator, model))

    def profiles(self) -> list[_Profile]:
        return list(self._p.values())


def test_lookup_maps_every_field_and_caches() -> None:
    ps = _Set([_Profile("x", "a", 8000.0), _Profile("x", "b", 6000.0), _Profile("y", "a", None)])
    lookup, memory = lookup_from_profiles(ps)
    params = lookup("x", "a")
    assert params == ServiceParams(
        service_ms=4.0,
        second_moment_ms2=20.0,
        swap_ms=1.5,
        memory_mib=300.0,
        frontend_ms=2.5,
        accuracy=0.7,
        overhead_frac=0.05,
    )
    assert lookup("x", "a") is params
    assert lookup("z", "a") is None
    assert lookup("z", "a") is None
    assert ps.finds == 2
    assert memory("x") == 6000.0  # the smaller of the two stated memories
    assert memory("y") == math.inf
    assert memory("unknown") == math.inf


def test_lookup_over_the_bundled_profiles() -> None:
    store = pytest.importorskip("qosched.profiles.store")
    profiles = store.bundled_profiles()
    lookup, memory = lookup_from_profiles(profiles)
    # Ibis' measured edge-TPU figures (models.md §A): MobileNetV2 S = 4.91 ms, swap O = 10.43 ms.
    p = lookup("edgetpu", "mobilenet_v2")
    assert p is not None
    assert p.service_ms == pytest.approx(4.91)
    assert p.swap_ms == pytest.approx(10.43)
    assert lookup("edgetpu", "no_such_model") is None
    assert 0 < memory("nvidia-t4") < math.inf


def test_front_end_utilisation_never_drifts_below_zero() -> None:
    """Adds and removes of services with front ends leave the node's front-end utilisation at 0,
    not at a float residue below it (−2.6e-18 here): the latency rule refuses a negative one, so a
    later pod whose own front end adds nothing (a rate of 0) raised on that node instead of being
    judged (the general route: edge TPUs, percentile SLOs)."""
    table = ProfileTable(
        {("edgetpu", "m"): ServiceParams(5.0, 25.0, swap_ms=10.0, memory_mib=100.0, frontend_ms=1.0)},
        {"edgetpu": 8_000.0},
    )
    st = state_with([gpu_node("e", accelerator="edgetpu", gpus=1)], table)
    pods = [inference_pod(f"s{i}", "m", rate_rps=r, slo_ms=500.0) for i, r in enumerate((20.0, 7.0, 6.6))]
    for p in pods:
        st.add(Allocation(p, "e", (0,), model="m"))
    for p in pods:
        st.remove(p.uid)
    assert st.frontend_util[0] >= 0.0
    idle = inference_pod("idle", "m", rate_rps=0.0, slo_ms=500.0)
    assert make_policy("qosched").evaluate(st, idle, np.arange(1)).reason.tolist() == [0]
