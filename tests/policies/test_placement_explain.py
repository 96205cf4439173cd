"""Rejection reasons with their numbers (policies/placement/explain.py), on hand-built clusters.

Each case is one node built so that exactly one rule fails by a margin worked out by hand next
to it; the policy's own verdict must be that code, and the explanation must carry the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from qosched.policies.placement.base import Reason, make_policy
from qosched.policies.placement.explain import ExplainMemo, Explanation, closest, explain, filter_message
from qosched.policies.placement.testing import (
    ProfileTable,
    gpu_node,
    inference_pod,
    plain_gpu_pod,
    state_with,
)
from qosched.policies.state import ClusterState, ServiceParams
from qosched.policies.types import Allocation, NodeView, PodDemand

# S = 10 ms, E[S²] = 100 ms² (deterministic), 1000 MiB, accuracy 0.76; T4: 16,000 MiB per device.
RESNET = ServiceParams(service_ms=10.0, second_moment_ms2=100.0, memory_mib=1000.0, accuracy=0.76)
# The same model with 90 ms of CPU pre-processing per request (front end).
HEAVY_FE = ServiceParams(service_ms=10.0, second_moment_ms2=100.0, memory_mib=1000.0, frontend_ms=90.0)
TABLE = ProfileTable(
    {("nvidia-t4", "resnet50"): RESNET, ("nvidia-t4", "prep"): HEAVY_FE},
    {"nvidia-t4": 16_000.0},
)


def _pod(uid: str = "p", model: str = "resnet50", **kw: object) -> PodDemand:
    kw.setdefault("rate_rps", 10.0)
    kw.setdefault("slo_ms", 1000.0)
    return inference_pod(uid, model, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    code: Reason
    pod: PodDemand
    node: NodeView = field(default_factory=lambda: gpu_node("n1"))
    running: tuple[tuple[PodDemand, str, tuple[int, ...]], ...] = ()
    detail: str = ""
    policy: str = "qosched"


CASES = [
    pytest.param(
        Case(Reason.UNSCHEDULABLE, _pod(), gpu_node("n1", schedulable=False)),
        id="unschedulable-no-numbers",
    ),
    pytest.param(
        Case(
            Reason.NO_ACCELERATOR,
            _pod(),
            gpu_node("n1", accelerator=None),
            detail="the pod's model resnet50 needs an accelerator",
        ),
        id="no-accelerator",
    ),
    pytest.param(
        Case(
            Reason.ACCELERATOR_NOT_ALLOWED,
            plain_gpu_pod("p", gpu_milli=500, gpu_spec=("nvidia-a100",)),
            gpu_node("n1", gpu_model="Tesla-T4"),
            detail="node has nvidia-t4 (GPU model Tesla-T4), the pod allows nvidia-a100",
            policy="default",
        ),
        id="accelerator-not-allowed",
    ),
    pytest.param(
        Case(Reason.NO_PROFILE, _pod(model="vgg16"), detail="no profile of vgg16 for nvidia-t4"),
        id="no-profile",
    ),
    pytest.param(
        Case(
            Reason.ACCURACY,
            _pod(min_accuracy=0.8),
            detail="best accuracy on nvidia-t4 0.760 < minimum 0.800",
        ),
        id="accuracy",
    ),
    pytest.param(
        Case(
            Reason.TOO_FEW_DEVICES,
            plain_gpu_pod("p", gpu_milli=2000),
            gpu_node("n1", gpus=1),
            detail="has 1 device(s), the pod needs 2",
            policy="default",
        ),
        id="too-few-devices",
    ),
    pytest.param(
        Case(
            Reason.INSUFFICIENT_CPU,
            _pod(cpu_milli=4000),
            gpu_node("n1", cpu_milli=2500),
            detail="needs 4000m CPU, has 2500m free",
        ),
        id="cpu",
    ),
    pytest.param(
        # A preemptive policy places through its host choice (explain unwraps it).
        Case(
            Reason.INSUFFICIENT_CPU,
            _pod(cpu_milli=4000),
            gpu_node("n1", cpu_milli=2500),
            detail="needs 4000m CPU, has 2500m free",
            policy="qos-driven",
        ),
        id="cpu-preemptive-policy",
    ),
    pytest.param(
        Case(
            Reason.INSUFFICIENT_MEMORY,
            _pod(memory_mib=2048.0),
            gpu_node("n1", memory_mib=1000.0),
            detail="needs 2048 MiB, has 1000 MiB free",
        ),
        id="memory",
    ),
    pytest.param(
        # Devices 0 and 1 have 300 and 400 milli-GPU free; the pod asks 500 on one device.
        Case(
            Reason.INSUFFICIENT_GPU,
            plain_gpu_pod("p", gpu_milli=500),
            gpu_node("n1", gpus=2),
            (
                (plain_gpu_pod("a", gpu_milli=700), "n1", (0,)),
                (plain_gpu_pod("b", gpu_milli=600), "n1", (1,)),
            ),
            detail="needs 1 device(s) with 500 milli-GPU free, 0 have it; most free: device 1 with 400 milli-GPU",
            policy="default",
        ),
        id="gpu",
    ),
    pytest.param(
        Case(
            Reason.EXCLUSIVE_BUSY,
            plain_gpu_pod("p", gpu_milli=500),
            gpu_node("n1", gpus=2, sharing="exclusive"),
            (
                (plain_gpu_pod("a", gpu_milli=200), "n1", (0,)),
                (plain_gpu_pod("b", gpu_milli=100), "n1", (1,)),
            ),
            detail="exclusive node, device(s) 0, 1 in use; the pod needs 1 idle",
            policy="default",
        ),
        id="exclusive-busy",
    ),
    pytest.param(
        # 12 services of 1000 MiB: 12,000 MiB in use; + 1,000 > 0.8 × 16,000 = 12,800.
        Case(
            Reason.DEVICE_MEMORY,
            _pod(rate_rps=1.0),
            running=tuple((_pod(f"r{i}", rate_rps=1.0), "n1", (0,)) for i in range(12)),
            detail="device 0: 12000 MiB in use + 1000 MiB for the pod > limit 12800 MiB (0.80 × 16000 MiB)",
        ),
        id="device-memory-qosched",
    ),
    pytest.param(
        Case(
            Reason.DEVICE_MEMORY,
            _pod(rate_rps=1.0),
            running=tuple((_pod(f"r{i}", rate_rps=1.0), "n1", (0,)) for i in range(12)),
            detail="device 0: 12000 MiB in use + 1000 MiB for the pod > limit 12800 MiB (0.80 × 16000 MiB)",
            policy="knapsack-best-fit",
        ),
        id="device-memory-knapsack",
    ),
    pytest.param(
        # ρ = (70 + 20) rps × 10 ms = 0.90 > 0.80.
        Case(
            Reason.UTILIZATION,
            _pod(rate_rps=20.0),
            running=((_pod("old", rate_rps=70.0), "n1", (0,)),),
            detail="device 0: utilisation 0.90 > limit 0.80",
        ),
        id="utilisation",
    ),
    pytest.param(
        # Front end: 10 rps × 90 ms = 0.90 of the node's CPU > 0.80.
        Case(
            Reason.FRONTEND,
            _pod(model="prep", rate_rps=10.0),
            detail="front-end utilisation 0.90 > limit 0.80",
        ),
        id="frontend",
    ),
    pytest.param(
        # Alone at 10 rps: ρ = 0.1, W = λE[S²]/(2(1−ρ)) = 0.01 × 100 / 1.8 = 0.556 ms; 10.556 > 5.
        Case(
            Reason.SLO_NEW,
            _pod(slo_ms=5.0),
            detail="device 0: predicted latency 10.6 ms > SLO 5.0 ms",
        ),
        id="slo-new",
    ),
    pytest.param(
        # Alone, old (10 rps) sees 10.6 ms (see slo-new) <= 11 ms. With the pod at 30 rps: two
        # services time-sliced, ρ = 0.4, W = E[S]·ρ/(1 − ρ) = 10 × 0.4 / 0.6 = 6.67 ms; old: 16.7 ms.
        Case(
            Reason.SLO_EXISTING,
            _pod(rate_rps=30.0),
            running=((_pod("old", slo_ms=11.0), "n1", (0,)),),
            detail="device 0: default/old would see latency 16.7 ms > its SLO 11.0 ms",
        ),
        id="slo-existing",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_each_code_explained_with_its_numbers(case: Case) -> None:
    state = state_with([case.node], TABLE, case.running)
    policy = make_policy(case.policy)
    rows = np.array([0], dtype=np.int64)
    assert Reason(int(policy.evaluate(state, case.pod, rows).reason[0])) == case.code
    given = explain(policy, state, case.pod, 0, case.code)
    evaluated = explain(policy, state, case.pod, 0)  # the policy's own verdict, evaluated here
    assert given == evaluated == Explanation(case.code, "n1", case.detail)
    assert given.text == (f"{case.code.message}: {case.detail}" if case.detail else case.code.message)


def test_unknown_node_names_the_node() -> None:
    state = state_with([gpu_node("n1")], TABLE)
    got = explain(make_policy("qosched"), state, _pod(), -1, name="ghost")
    assert got == Explanation(Reason.UNKNOWN_NODE, "ghost")
    assert filter_message("qosched", got, is_closest=False) == (
        "qosched (qosched): node is not in the extender's cache (e.g. ghost)"
    )


def test_code_no_longer_shown_gives_the_plain_message() -> None:
    """The node changed since the decision (now it fits): no invented numbers."""
    state = state_with([gpu_node("n1")], TABLE)
    got = explain(make_policy("qosched"), state, _pod(), 0, Reason.UTILIZATION)
    assert got.detail == ""
    assert got.text == Reason.UTILIZATION.message


def _cpu_cluster() -> tuple[ClusterState, PodDemand]:
    nodes = [gpu_node(f"n{i}", cpu_milli=c) for i, c in enumerate((1000, 3500, 2000))]
    return state_with(nodes, TABLE), _pod(cpu_milli=4000)


def test_closest_is_the_smallest_shortfall() -> None:
    state, pod = _cpu_cluster()
    rows = np.array([0, 1, 2], dtype=np.int64)
    assert closest(state, pod, Reason.INSUFFICIENT_CPU, rows) == (1, True)
    assert closest(state, pod, Reason.SLO_NEW, rows) == (0, False)  # no margin: the first
    got = explain(make_policy("qosched"), state, pod, 1, Reason.INSUFFICIENT_CPU)
    assert filter_message("qosched", got, is_closest=True) == (
        "qosched (qosched): not enough free CPU (closest: n1: needs 4000m CPU, has 3500m free)"
    )
    assert filter_message("qosched", got, is_closest=False).startswith(
        "qosched (qosched): not enough free CPU (e.g. n1: "
    )


def test_memo_keeps_an_explanation_while_its_node_is_unchanged() -> None:
    """Same shape, same node version: the kept answer; the node changes: explained again."""
    state = state_with([gpu_node("n1")], TABLE, [(_pod("old", rate_rps=70.0), "n1", (0,))])
    policy = make_policy("qosched")
    memo = ExplainMemo(size=4)
    first = memo.explain(policy, state, _pod("a", rate_rps=20.0), 0, Reason.UTILIZATION)
    again = memo.explain(policy, state, _pod("b", rate_rps=20.0), 0, Reason.UTILIZATION)
    assert again is first
    assert first.detail == "device 0: utilisation 0.90 > limit 0.80"
    state.add(Allocation(_pod("more", rate_rps=5.0), "n1", (0,)))  # ρ = 0.95 with the pod
    after = memo.explain(policy, state, _pod("c", rate_rps=20.0), 0, Reason.UTILIZATION)
    assert after.detail == "device 0: utilisation 0.95 > limit 0.80"
    other_state = state_with([gpu_node("n1")], TABLE, [(_pod("old", rate_rps=70.0), "n1", (0,))])
    assert memo.explain(policy, other_state, _pod("d", rate_rps=20.0), 0, Reason.UTILIZATION) is not first
