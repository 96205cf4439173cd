"""The common hard constraints: one stable reason per rejected node, for every policy."""

from __future__ import annotations

import numpy as np
import pytest

from qosched.policies.placement.base import Reason, make_policy, policy_names
from qosched.policies.placement.constraints import gather
from qosched.policies.placement.testing import (
    ProfileTable,
    gpu_node,
    inference_pod,
    plain_gpu_pod,
    state_with,
)
from qosched.policies.state import ServiceParams

RESNET = ServiceParams(service_ms=10.0, second_moment_ms2=100.0, memory_mib=1000.0, accuracy=0.76)
TINY = ServiceParams(service_ms=2.0, second_moment_ms2=4.0, memory_mib=100.0, accuracy=0.60)
TABLE = ProfileTable(
    params={("nvidia-t4", "resnet50"): RESNET, ("nvidia-t4", "tiny"): TINY, ("cpu", "tiny"): TINY},
    device_memory_mib={"nvidia-t4": 16_000.0, "cpu": 8_000.0},
)

NODES = [
    gpu_node("ok", gpus=2),
    gpu_node("cordoned", gpus=2, schedulable=False),
    gpu_node("unlabelled", accelerator=None, gpus=2),
    gpu_node("edge", accelerator="edgetpu", gpus=1),  # no profile for resnet50 there
    gpu_node("one-gpu", gpus=1),
    gpu_node("small-cpu", gpus=2, cpu_milli=1000),
    gpu_node("small-mem", gpus=2, memory_mib=100.0),
    gpu_node("full", gpus=2),
    gpu_node("exclusive", gpus=2, sharing="exclusive"),
    gpu_node("v100-model", gpus=2, gpu_model="V100M16"),
    gpu_node("cpu-node", accelerator="cpu", gpus=0),
]
RUNNING = [
    (plain_gpu_pod("f0", gpu_milli=900), "full", (0,)),
    (plain_gpu_pod("f1", gpu_milli=900), "full", (1,)),
    (plain_gpu_pod("x0", gpu_milli=100), "exclusive", (0,)),
    (plain_gpu_pod("x1", gpu_milli=100), "exclusive", (1,)),
]


def state():
    return state_with(NODES, TABLE, RUNNING)


def reasons(pod, policy="default", cands=None):
    st = state()
    idx = np.arange(st.n_nodes) if cands is None else np.asarray(cands)
    ev = make_policy(policy).evaluate(st, pod, idx)
    return {
        st.node_names[i] if 0 <= i < st.n_nodes else int(i): Reason(int(r))
        for i, r in zip(idx, ev.reason, strict=True)
    }


TWO_GPU_MODEL_POD = inference_pod(
    "p", "resnet50", rate_rps=1.0, slo_ms=1000.0, gpu_milli=2000, cpu_milli=2000, memory_mib=1000.0
)

EXPECTED = {
    "ok": Reason.OK,
    "cordoned": Reason.UNSCHEDULABLE,
    "unlabelled": Reason.NO_ACCELERATOR,
    "edge": Reason.NO_PROFILE,
    "one-gpu": Reason.TOO_FEW_DEVICES,
    "small-cpu": Reason.INSUFFICIENT_CPU,
    "small-mem": Reason.INSUFFICIENT_MEMORY,
    "full": Reason.INSUFFICIENT_GPU,
    "exclusive": Reason.INSUFFICIENT_GPU,  # 900 milli free on each, but 1000 per GPU asked
    "v100-model": Reason.OK,
    "cpu-node": Reason.NO_PROFILE,
}


@pytest.mark.parametrize("policy", sorted(policy_names()))
def test_each_rejection_has_its_reason_under_every_policy(policy: str) -> None:
    assert reasons(TWO_GPU_MODEL_POD, policy) == EXPECTED


SINGLE = inference_pod("s", "tiny", rate_rps=1.0, slo_ms=1000.0, gpu_milli=500)

CASES = [
    ("exclusive-busy", SINGLE, "exclusive", Reason.EXCLUSIVE_BUSY),
    ("cpu-node-has-no-gpu", SINGLE, "cpu-node", Reason.TOO_FEW_DEVICES),
    (
        "cpu-node-serves-a-model-without-gpu",
        inference_pod("c", "tiny", rate_rps=1.0, slo_ms=1000.0),
        "cpu-node",
        Reason.OK,
    ),
    (
        "accuracy-below-minimum",
        inference_pod("a", "tiny", rate_rps=1.0, slo_ms=1000.0, gpu_milli=100, min_accuracy=0.7),
        "ok",
        Reason.ACCURACY,
    ),
    (
        "gpu-spec-excludes",
        plain_gpu_pod("g", gpu_milli=100, gpu_spec=("A100",)),
        "ok",
        Reason.ACCELERATOR_NOT_ALLOWED,
    ),
    (
        "gpu-spec-matches-gpu-model",
        plain_gpu_pod("g", gpu_milli=100, gpu_spec=("V100M16",)),
        "v100-model",
        Reason.OK,
    ),
    (
        "gpu-spec-matches-accelerator",
        plain_gpu_pod("g", gpu_milli=100, gpu_spec=("nvidia-t4",)),
        "ok",
        Reason.OK,
    ),
    ("plain-pod-ignores-accelerator", plain_gpu_pod("q", cpu_milli=100), "unlabelled", Reason.OK),
    ("gpu-pod-without-model-on-unlabelled-gpus", plain_gpu_pod("q", gpu_milli=100), "unlabelled", Reason.OK),
]


@pytest.mark.parametrize(("pod", "node", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reason(pod, node: str, want: Reason) -> None:
    st = state()
    i = st.node_index[node]
    ev = make_policy("default").evaluate(st, pod, np.array([i]))
    assert Reason(int(ev.reason[0])) == want


def test_unknown_candidate_indexes() -> None:
    st = state()
    got = make_policy("qosched").evaluate(st, SINGLE, np.array([0, -1, st.n_nodes, 10_000]))
    assert [Reason(int(r)) for r in got.reason] == [Reason.OK] + [Reason.UNKNOWN_NODE] * 3
    assert got.node_idx.tolist() == [0, -1, st.n_nodes, 10_000]


def test_empty_state_and_empty_candidates() -> None:
    empty = state_with([], TABLE)
    ev = make_policy("qosched").evaluate(empty, SINGLE, np.array([0, 1]))
    assert ev.reason.tolist() == [Reason.UNKNOWN_NODE] * 2
    none = make_policy("qosched").evaluate(state(), SINGLE, np.array([], dtype=np.int64))
    assert len(none) == 0
    assert none.devices.shape == (0, 1)


def test_infeasible_candidates_carry_nothing() -> None:
    ev = make_policy("binpack").evaluate(state(), TWO_GPU_MODEL_POD, np.arange(len(NODES)))
    bad = ~ev.feasible
    assert np.isneginf(ev.raw_score[bad]).all()
    assert (ev.devices[bad] == -1).all()
    assert (ev.variant[bad] == -1).all()
    assert np.isnan(ev.latency_ms[bad]).all()


def test_variant_table_takes_profiles_per_accelerator_type_once() -> None:
    calls: list[tuple[str, str]] = []

    def counting(accelerator: str, model: str):
        calls.append((accelerator, model))
        return TABLE.lookup(accelerator, model)

    st = state_with([gpu_node(f"n{i}") for i in range(50)], TABLE)
    st._lookup = counting  # count the lookups of one gather
    cand = gather(st, inference_pod("v", "resnet50", "tiny", rate_rps=1.0, slo_ms=100.0), np.arange(50))
    assert sorted(calls) == [("nvidia-t4", "resnet50"), ("nvidia-t4", "tiny")]
    assert cand.first_variant.tolist() == [0] * 50
    assert cand.variants is not None
    np.testing.assert_array_equal(cand.variants.take("service_ms", np.ones(50, dtype=np.int64)), 2.0)
