"""The per-node verdict memo (``policies/placement/row_memo.py``) against plain evaluations.

The memo answers a pod from the verdicts of an earlier pod of the same shape on every node whose
``node_version`` has not moved. The property checked: after any sequence of placements,
removals and pods of a few shapes (each observed by the policy's learner first, as the extender
does), ``RowMemo.evaluate`` gives the arrays ``policy.evaluate`` gives, exactly, on any candidate
list (repeats and order included); policies that do not opt in are passed straight through.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosched.policies.placement.base import Evaluation, make_policy
from qosched.policies.placement.qosched.policy import QoschedPolicy
from qosched.policies.placement.row_memo import RowMemo, shape_key
from qosched.policies.placement.testing import gpu_node, inference_pod, plain_gpu_pod
from qosched.policies.state import ClusterState, StateError
from qosched.policies.types import Allocation, PodDemand
from tests.policies.test_placement_properties import ACCELERATORS, TABLE

#: A few shapes, as replicas of a few Deployments: each drawn pod is one of them with its own UID.
SHAPES: tuple[PodDemand, ...] = (
    inference_pod("s0", "small", rate_rps=20.0, slo_ms=60.0, gpu_milli=250, cpu_milli=1000),
    inference_pod("s1", "small", "large", rate_rps=5.0, slo_ms=200.0, gpu_milli=500),
    inference_pod("s2", "small", rate_rps=40.0, slo_ms=40.0, gpu_milli=0),
    plain_gpu_pod("s3", gpu_milli=1000, cpu_milli=4000),
    plain_gpu_pod("s4", gpu_milli=2000, cpu_milli=2000),
    plain_gpu_pod("s5", cpu_milli=3000, memory_mib=2000.0),
)


def cluster(accels: list[str], gpus: list[int]) -> ClusterState:
    nodes = [
        gpu_node(f"n{i}", accelerator=a, gpus=1 if a == "cpu" else g, cpu_milli=16_000, memory_mib=64_000.0)
        for i, (a, g) in enumerate(zip(accels, gpus, strict=True))
    ]
    return ClusterState(nodes, TABLE.lookup, TABLE.device_memory)


def same(a: Evaluation, b: Evaluation) -> None:
    for name in ("node_idx", "reason", "raw_score", "devices", "latency_ms", "variant"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name, strict=True)
    assert a.policy == b.policy


def place(state: ClusterState, pod: PodDemand, evaluation: Evaluation) -> bool:
    """Add the pod where the evaluation scores best (the state's accounting may still refuse)."""
    ok = np.flatnonzero(evaluation.reason == 0)
    if ok.size == 0:
        return False
    pos = int(ok[np.argmax(evaluation.raw_score[ok])])
    row = int(evaluation.node_idx[pos])
    devices = tuple(int(d) for d in evaluation.devices[pos] if d >= 0)
    v = int(evaluation.variant[pos])
    model = pod.variants[v] if pod.is_inference and 0 <= v < len(pod.variants) else None
    try:
        state.add(Allocation(pod, state.node_views[row].name, devices, model=model))
    except StateError:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy_name=st.sampled_from(["qosched", "fgd"]),
    accels=st.lists(st.sampled_from(ACCELERATORS), min_size=2, max_size=6),
    data=st.data(),
)
def test_memo_answers_exactly_what_the_policy_answers(
    policy_name: str, accels: list[str], data: st.DataObject
) -> None:
    gpus = data.draw(st.lists(st.integers(1, 4), min_size=len(accels), max_size=len(accels)))
    state = cluster(accels, gpus)
    policy = make_policy(policy_name)
    memo = RowMemo(limit=3)  # fewer than the shapes: entries are dropped and rebuilt
    placed: list[str] = []
    for step in range(data.draw(st.integers(5, 25))):
        base = SHAPES[data.draw(st.integers(0, len(SHAPES) - 1))]
        pod = PodDemand(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "uid": f"p{step}"})
        if hasattr(policy, "observe"):
            policy.observe(pod)
        rows = np.asarray(
            data.draw(st.lists(st.integers(0, state.n_nodes - 1), min_size=1, max_size=2 * state.n_nodes)),
            dtype=np.int64,
        )
        got = memo.evaluate(policy, state, pod, rows)
        same(got, policy.evaluate(state, pod, rows))
        action = data.draw(st.sampled_from(["place", "place", "remove", "none"]))
        if action == "place":
            full = policy.evaluate(state, pod, np.arange(state.n_nodes))
            if place(state, pod, full):
                placed.append(pod.uid)
        elif action == "remove" and placed:
            state.remove(placed.pop(data.draw(st.integers(0, len(placed) - 1))))


def test_unchanged_nodes_are_not_judged_again() -> None:
    state = cluster(["nvidia-t4"] * 4, [2] * 4)
    policy = make_policy("qosched")
    memo = RowMemo()
    pod = SHAPES[0]
    rows = np.arange(4)
    first = memo.evaluate(policy, state, pod, rows)
    assert memo.judged_rows == 4
    assert place(state, pod, first)
    twin = inference_pod("twin", "small", rate_rps=20.0, slo_ms=60.0, gpu_milli=250, cpu_milli=1000)
    assert shape_key(twin) == shape_key(pod)
    same(memo.evaluate(policy, state, twin, rows), policy.evaluate(state, twin, rows))
    assert memo.judged_rows == 5  # only the node the first pod went to
    assert memo.reused_rows == 3


def test_a_new_state_object_or_a_new_mix_starts_over() -> None:
    policy = QoschedPolicy()
    memo = RowMemo()
    pod = SHAPES[3]
    state = cluster(["nvidia-t4"] * 3, [2] * 3)
    policy.observe(pod)
    memo.evaluate(policy, state, pod, np.arange(3))
    memo.evaluate(policy, state, pod, np.arange(3))
    assert memo.judged_rows == 3
    memo.evaluate(policy, cluster(["nvidia-t4"] * 3, [2] * 3), pod, np.arange(3))
    assert memo.judged_rows == 6
    policy.observe(SHAPES[4])  # the learned mix changes: verdicts made with the old one are stale
    memo.evaluate(policy, state, pod, np.arange(3))
    assert memo.judged_rows == 9


@pytest.mark.parametrize("name", ["random", "ibis-spread"])
def test_policies_that_do_not_opt_in_are_evaluated_every_time(name: str) -> None:
    state = cluster(["nvidia-t4"] * 3, [2] * 3)
    policy = make_policy(name)
    memo = RowMemo()
    for _ in range(2):
        same(
            memo.evaluate(policy, state, SHAPES[0], np.arange(3)),
            policy.evaluate(state, SHAPES[0], np.arange(3)),
        )
    assert memo.judged_rows == 6
    assert memo.reused_rows == 0


def test_a_fairness_term_turns_the_memo_off() -> None:
    policy = QoschedPolicy(fairness=lambda inputs: np.zeros(inputs.rows.shape))
    assert policy.memo_token(SHAPES[0]) is None


@pytest.mark.parametrize("policy_name", ["qosched", "fgd"])
def test_a_node_with_more_devices_than_any_before_widens_the_verdicts(policy_name: str) -> None:
    """A pod asking more GPUs than any node has gets ``devices`` of width D (the state's device
    slots); a node with more devices joins (an autoscaler's bigger node) and the width becomes the
    pod's GPU count: the memo must answer the new width, not fail to store it."""
    state = cluster(["nvidia-t4"] * 2, [1, 1])
    policy = make_policy(policy_name)
    pod = SHAPES[4]  # two whole GPUs
    if hasattr(policy, "observe"):
        policy.observe(pod)
    memo = RowMemo()
    assert (memo.evaluate(policy, state, pod, np.arange(2)).reason == 5).all()  # TOO_FEW_DEVICES
    state.upsert_node(gpu_node("big", accelerator="nvidia-t4", gpus=4, cpu_milli=16_000, memory_mib=64_000.0))
    rows = np.arange(state.n_nodes)
    same(memo.evaluate(policy, state, pod, rows), policy.evaluate(state, pod, rows))
