"""qosched's β for CPU-only pods is scaled by the mix's multi-GPU share (:mod:`...qosched.multi_gpu`).

Two nodes of 8 GPUs, 96 cores, 400,000 MiB: n0 empty, n1 with an 8-GPU pod (32 cores, 100,000
MiB) on it. A CPU-only pod of 16 cores, 1,000 MiB: ΔF is 0 on both (n0 keeps 80 cores for every
shape, n1 has no free GPU). β after the pod: n0 1 − (1 − 80/96) = 0.833 (an empty node is
balanced), n1 1 − (0.7475 − 0) = 0.2525, so β sends the pod to n0, into the CPU that a whole
node's worth of GPUs needs. With a mix of single-GPU pods (g = 0) that stays; with a mix whose
GPU demand is 8/9 multi-GPU (g = 0.89, s = 0) the CPU-only pod is scored as with β off. GPU pods
keep β whatever the mix.
"""

from __future__ import annotations

import numpy as np
import pytest

from qosched.policies.placement.base import make_policy
from qosched.policies.placement.fgd.mix import WorkloadMix
from qosched.policies.placement.qosched.config import QoschedConfig
from qosched.policies.placement.qosched.multi_gpu import cpu_balance_scale, multi_gpu_share
from qosched.policies.placement.testing import ProfileTable, gpu_node, plain_gpu_pod, state_with

EMPTY = ProfileTable({}, {})
SINGLE = WorkloadMix.of([(4000, 1000, 1), (16000, 0, 0)], [0.5, 0.5])
#: GPU demand 0.5·8000 of 0.5·8000 + 0.5·1000: g = 8/9.
MULTI = WorkloadMix.of([(32000, 1000, 8), (4000, 1000, 1), (16000, 0, 0)], [0.25, 0.25, 0.5])


def _state():
    nodes = [gpu_node(f"n{i}", gpus=8, cpu_milli=96_000, memory_mib=400_000.0) for i in range(2)]
    gang = plain_gpu_pod("gang", gpu_milli=8000, cpu_milli=32_000, memory_mib=100_000.0)
    return state_with(nodes, EMPTY, [(gang, "n1", tuple(range(8)))])


def _raw(mix: WorkloadMix, pod, balance_weight: float = 0.4) -> np.ndarray:
    policy = make_policy("qosched", mix=mix, config=QoschedConfig(balance_weight=balance_weight))
    return policy.evaluate(_state(), pod, np.arange(2)).raw_score


def test_share_and_scale() -> None:
    assert multi_gpu_share(SINGLE) == 0.0
    assert cpu_balance_scale(SINGLE) == 1.0
    assert multi_gpu_share(MULTI) == pytest.approx(8 / 9)
    assert cpu_balance_scale(MULTI) == 0.0
    half = WorkloadMix.of([(4000, 1000, 2), (4000, 1000, 1)], [0.2, 0.6])  # g = 0.4 / 1.0
    assert cpu_balance_scale(half) == pytest.approx(0.2)
    assert cpu_balance_scale(None) == 1.0


def test_cpu_pod_keeps_beta_on_a_single_gpu_workload() -> None:
    pod = plain_gpu_pod("cpu", cpu_milli=16_000, memory_mib=1000.0)
    raw = _raw(SINGLE, pod)
    np.testing.assert_allclose(raw - _raw(SINGLE, pod, 0.0), 0.4 * np.array([80 / 96, 0.2525]), atol=1e-9)
    assert raw[0] > raw[1]


def test_cpu_pod_drops_beta_where_multi_gpu_pods_carry_the_gpu_demand() -> None:
    pod = plain_gpu_pod("cpu", cpu_milli=16_000, memory_mib=1000.0)
    np.testing.assert_array_equal(_raw(MULTI, pod), _raw(MULTI, pod, 0.0))


def test_gpu_pod_keeps_beta_whatever_the_mix() -> None:
    pod = plain_gpu_pod("one", gpu_milli=1000, cpu_milli=4000, memory_mib=1000.0)
    with_beta, without = _raw(MULTI, pod), _raw(MULTI, pod, 0.0)
    assert np.isfinite(with_beta[0])
    assert with_beta[0] > without[0]
