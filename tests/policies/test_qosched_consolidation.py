"""``qosched``'s pack-or-spread knob (``gpu_consolidation``): its effect, its SLO guard, its checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qosched.policies.placement.base import best_candidate, make_policy
from qosched.policies.placement.qosched.consolidation import (
    CONSOLIDATION_SETTINGS,
    DEFAULT_CONSOLIDATION,
    consolidation_term,
    pack_order,
    used_fractions,
)
from qosched.policies.placement.testing import (
    ProfileTable,
    gpu_node,
    inference_pod,
    plain_gpu_pod,
    state_with,
)
from qosched.policies.registry import policy_options
from qosched.policies.simulator.latency_checks import check_device
from qosched.policies.simulator.requests import SimConfig
from qosched.policies.state import ClusterState, ServiceParams
from qosched.policies.types import Allocation, PodDemand

TABLE = ProfileTable(
    {("nvidia-t4", "resnet50"): ServiceParams(service_ms=10.0, second_moment_ms2=100.0, memory_mib=500.0)},
    {"nvidia-t4": 16_000.0},
)


def services(n: int, *, rate_rps: float = 2.0, slo_ms: float = 200.0) -> list[PodDemand]:
    return [
        inference_pod(f"s{i}", "resnet50", rate_rps=rate_rps, slo_ms=slo_ms, gpu_milli=100, qos_class="prod")
        for i in range(n)
    ]


def place_all(pods: list[PodDemand], nodes: int, gpus: int, **options: object) -> tuple[ClusterState, int]:
    """Place ``pods`` one by one with ``qosched`` (``options`` on its defaults); (state, unplaced)."""
    policy = make_policy("qosched", **options)
    state = state_with([gpu_node(f"n{i}", gpus=gpus) for i in range(nodes)], TABLE)
    unplaced = 0
    for pod in pods:
        policy.observe(pod)  # type: ignore[attr-defined]
        ev = policy.evaluate(state, pod, np.arange(state.n_nodes))
        best = best_candidate(ev)
        if best is None:
            unplaced += 1
            continue
        devices = tuple(int(d) for d in ev.devices[best] if d >= 0)
        state.add(Allocation(pod, state.node_views[int(ev.node_idx[best])].name, devices, "resnet50"))
    return state, unplaced


def gpus_used(state: ClusterState) -> set[tuple[int, int]]:
    rows, devices = np.nonzero(state.svc_mask.any(axis=-1))
    return set(zip(rows.tolist(), devices.tolist(), strict=True))


def worst_slack(state: ClusterState) -> float:
    """min over every placed service of (SLO − predicted latency)/SLO, by the latency models."""
    rng = np.random.default_rng(0)
    worst = np.inf
    for row, device in gpus_used(state):
        check = check_device(state, row, device, rng, SimConfig(n_requests=500, warmup_frac=0.1))
        assert check is not None
        worst = min(worst, float(((check.slo_ms - check.analytic_ms) / check.slo_ms).min()))
    return worst


@pytest.mark.parametrize(
    ("setting", "gpus", "nodes"),
    [
        pytest.param("spread", 4, 4, id="spread-over-nodes"),
        pytest.param("pack-gpu", 2, 2, id="pack-gpu-two-gpus-two-nodes"),
        pytest.param("pack", 2, 1, id="pack-two-gpus-one-node"),
    ],
)
def test_setting_decides_gpus_and_nodes_within_slo(setting: str, gpus: int, nodes: int) -> None:
    # 4 nodes × 2 GPUs, 16 light services (2 req/s × 10 ms, 100 milli each): 10 fit a GPU.
    state, unplaced = place_all(services(16), nodes=4, gpus=2, gpu_consolidation=setting)
    used = gpus_used(state)
    assert unplaced == 0
    assert (len(used), len({row for row, _ in used})) == (gpus, nodes)
    assert worst_slack(state) >= 0.2  # every service within its SLO, with the margin


def test_pack_refuses_to_exceed_the_slo() -> None:
    # 20 req/s × 10 ms and a 40 ms SLO: by the latency models three services share a GPU within
    # the SLO (worst slack 0.375), a fourth would break it. Packing, even without a margin, stops
    # at the SLO: two GPUs take six services and the seventh stays pending.
    pods = services(7, rate_rps=20.0, slo_ms=40.0)
    state, unplaced = place_all(pods, nodes=1, gpus=2, gpu_consolidation="pack", consolidation_slack_frac=0.0)
    assert unplaced == 1
    assert state.svc_mask[0].sum(axis=-1).tolist() == [3, 3]
    assert worst_slack(state) >= 0.0


@pytest.mark.parametrize(
    ("margin", "per_gpu"),
    [
        pytest.param(0.0, [3, 1], id="no-margin-fills-to-the-slo"),
        pytest.param(0.5, [2, 2], id="margin-stops-earlier"),
    ],
)
def test_pack_keeps_the_margin(margin: float, per_gpu: list[int]) -> None:
    # Same services; worst slack with two on a GPU 0.583, with three 0.375 (latency models). A
    # margin of 0.5 packs two per GPU and puts the next pod on the emptier GPU instead.
    pods = services(4, rate_rps=20.0, slo_ms=40.0)
    state, _ = place_all(pods, nodes=1, gpus=2, gpu_consolidation="pack", consolidation_slack_frac=margin)
    assert sorted(state.svc_mask[0].sum(axis=-1).tolist(), reverse=True) == per_gpu


def test_plain_pods_are_not_affected() -> None:
    # A whole-GPU pod without a latency target: placed by fragmentation, the knob plays no part.
    pod = plain_gpu_pod("train", gpu_milli=1000, cpu_milli=1000)
    evals = [
        make_policy("qosched", gpu_consolidation=s).evaluate(
            state_with([gpu_node("a", gpus=2), gpu_node("b", gpus=2)], TABLE), pod, np.arange(2)
        )
        for s in CONSOLIDATION_SETTINGS
    ]
    for ev in evals[1:]:
        np.testing.assert_array_equal(ev.raw_score, evals[0].raw_score)
        np.testing.assert_array_equal(ev.devices, evals[0].devices)


def test_default_is_pack() -> None:
    assert DEFAULT_CONSOLIDATION == "pack"
    assert policy_options("qosched").gpu_consolidation == "pack"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"gpu_consolidation": "tight"},
            "QoschedOptions.gpu_consolidation must be one of spread, pack-gpu, pack (got 'tight')",
            id="unknown-setting",
        ),
        pytest.param(
            {"consolidation_slack_frac": 1.0},
            "QoschedOptions.consolidation_slack_frac must be a number in [0, 1) (got 1.0)",
            id="margin-too-large",
        ),
        pytest.param(
            {"consolidation_slack_frac": True},
            "QoschedOptions.consolidation_slack_frac must be a number in [0, 1) (got True)",
            id="margin-bool",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"^policy 'qosched': ") as err:
        policy_options("qosched", settings)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param("spread", [0.0, 0.0, 0.0], id="spread-no-term"),
        pytest.param("pack-gpu", [0.25, -0.5, 0.0], id="pack-gpu-minus-node"),
        pytest.param("pack", [0.75, 0.5, 0.0], id="pack-plus-node"),
    ],
)
def test_consolidation_term(setting: str, expected: list[float]) -> None:
    u_dev = np.array([0.5, 0.0, 0.9])
    u_node = np.array([0.25, 0.5, 0.9])
    slack = np.array([0.3, 0.8, 0.1])  # the third is below the margin: no term
    kappa = consolidation_term(setting, u_dev, u_node, slack, min_slack_frac=0.2)
    np.testing.assert_allclose(kappa, expected)


def test_used_fractions_of_chosen_devices() -> None:
    free = np.array([[400, 1000, 1000, 0], [1000, 1000, 0, 0]])
    exists = np.array([[True, True, True, True], [True, True, False, False]])
    devices = np.array([[0, 1], [-1, -1]])
    u_dev, u_node = used_fractions(free, exists, devices)
    np.testing.assert_allclose(u_dev, [0.3, 0.0])
    np.testing.assert_allclose(u_node, [1600 / 4000, 0.0])


@given(
    keys=arrays(np.float64, (3, 4), elements=st.sampled_from([0.0, 0.04, 1.5, np.inf])),
    free=arrays(np.int64, (3, 4), elements=st.integers(0, 1000)),
)
def test_pack_order_keeps_the_spread_ranking(keys: np.ndarray, free: np.ndarray) -> None:
    """Within each node (row: the search compares a node's devices only)."""
    packed = pack_order(keys, free)
    for k, p, f in zip(keys, packed, free, strict=True):
        for i in range(k.size):
            for j in range(k.size):
                if k[i] < k[j]:
                    assert p[i] < p[j]  # a better key stays ahead
                elif k[i] == k[j] and np.isfinite(k[i]) and f[i] < f[j]:
                    assert p[i] < p[j]  # tie: the fuller device first
