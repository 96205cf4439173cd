"""The fast pack path of ``qosched`` decides exactly as the straightforward one.

The oracle below is the pack-or-spread code as first written (commit 0a461e9): a rank over all
m·D keys (``np.unique``), the emptiest-first search re-run on every node below the margin, row
sums with ``sum(axis=1)`` and ``np.nan_to_num``. The policy's optimised path (a rank within each
row, the re-run only where it can change the device, sums as products) must give the same
``Evaluation`` on random small clusters, placement after placement: reasons, devices, variants,
raw scores, latencies and every extra array, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from qosched.policies.placement.base import Evaluation, best_candidate
from qosched.policies.placement.common import _merge as merge_verdicts
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.feasible_devices import NodeVerdicts
from qosched.policies.placement.qosched import consolidation
from qosched.policies.placement.qosched.policy import QoschedPolicy
from qosched.policies.placement.testing import (
    ProfileTable,
    gpu_node,
    inference_pod,
    plain_gpu_pod,
    state_with,
)
from qosched.policies.state import ClusterState, ServiceParams
from qosched.policies.types import GPU_MILLI_PER_DEVICE, Allocation, PodDemand

TABLE = ProfileTable(
    {
        ("nvidia-t4", "large"): ServiceParams(service_ms=10.0, second_moment_ms2=130.0, memory_mib=900.0),
        ("nvidia-t4", "small"): ServiceParams(service_ms=4.0, second_moment_ms2=20.0, memory_mib=300.0),
        ("nvidia-a100", "large"): ServiceParams(service_ms=4.0, second_moment_ms2=20.0, memory_mib=900.0),
        ("nvidia-a100", "small"): ServiceParams(service_ms=1.5, second_moment_ms2=3.0, memory_mib=300.0),
    },
    {"nvidia-t4": 16_000.0, "nvidia-a100": 40_000.0},
)


# ------------------------------------------------------------------------------------------
# the oracle: 0a461e9's pack path, verbatim but for names
# ------------------------------------------------------------------------------------------


def oracle_pack_order(
    spread_order: np.ndarray, free_milli: np.ndarray, *, fullest_first: bool = True
) -> np.ndarray:
    flat = spread_order.reshape(-1)
    finite = np.isfinite(flat)
    rank = np.full(flat.shape, np.inf)
    rank[finite] = np.unique(flat[finite], return_inverse=True)[1]
    used = np.clip(1.0 - free_milli.reshape(-1) / GPU_MILLI_PER_DEVICE, 0.0, 1.0)
    tie = 0.5 - used / 2.0 if fullest_first else used / 2.0
    return (rank + tie).reshape(spread_order.shape)


def oracle_used_fractions(
    free_milli: np.ndarray, exists: np.ndarray, devices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    used = np.where(exists, GPU_MILLI_PER_DEVICE - free_milli, 0).astype(np.float64)
    cap = exists.sum(axis=1) * float(GPU_MILLI_PER_DEVICE)
    with np.errstate(divide="ignore", invalid="ignore"):
        u_n = np.where(cap > 0, used.sum(axis=1) / cap, 0.0)
    chosen = devices >= 0
    picked = np.take_along_axis(used, np.where(chosen, devices, 0), axis=1)
    count = chosen.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u_d = np.where(count > 0, (picked * chosen).sum(axis=1) / (count * GPU_MILLI_PER_DEVICE), 0.0)
    return u_d, u_n


class OraclePolicy(QoschedPolicy):
    """``qosched`` with 0a461e9's pack path (the reference the fast path is held to)."""

    def device_order(self, cand: Candidates) -> np.ndarray:
        order = self._spread_order(cand)
        if self._consolidates(cand):
            return oracle_pack_order(order, cand.free_milli)
        return order

    def _consolidation(self, cand: Candidates, verdicts: NodeVerdicts) -> np.ndarray:
        exists = cand.state.dev_exists[cand.row] if cand.state.n_nodes else np.zeros_like(cand.device_ok)
        u_dev, u_node = oracle_used_fractions(cand.free_milli, exists, verdicts.devices)
        sign = consolidation.CONSOLIDATION_SETTINGS[self.gpu_consolidation]
        assert sign is not None
        kappa = u_dev + sign * u_node
        return np.where(
            np.nan_to_num(verdicts.slack_frac, nan=0.0) >= self.consolidation_slack_frac, kappa, 0.0
        )

    def _choose(
        self, cand: Candidates, variant: int, nodes: np.ndarray, order: np.ndarray | None
    ) -> NodeVerdicts:
        chosen = super(QoschedPolicy, self)._choose(cand, variant, nodes, order)
        if order is None or not self._consolidates(cand):
            return chosen
        margin = self.consolidation_slack_frac
        low = nodes & (chosen.devices[:, 0] >= 0) & ~(np.nan_to_num(chosen.slack_frac, nan=0.0) >= margin)
        if not low.any():
            return chosen
        emptiest = oracle_pack_order(self._spread_order(cand), cand.free_milli, fullest_first=False)
        again = super(QoschedPolicy, self)._choose(cand, variant, low, emptiest)
        return merge_verdicts(chosen, again, low)


# ------------------------------------------------------------------------------------------
# random clusters and pods
# ------------------------------------------------------------------------------------------


def assert_same(fast: Evaluation, slow: Evaluation, where: str) -> None:
    for name in ("node_idx", "reason", "devices", "variant", "raw_score", "latency_ms"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=f"{where}: {name}")
    assert sorted(fast.extras) == sorted(slow.extras), where
    for name, values in slow.extras.items():
        np.testing.assert_array_equal(fast.extras[name], values, err_msg=f"{where}: extras[{name}]")


service = st.builds(
    lambda i, variants, rate, slo, milli: inference_pod(
        f"s{i}", *variants, rate_rps=rate, slo_ms=slo, gpu_milli=milli, cpu_milli=500, memory_mib=500.0
    ),
    st.integers(0, 10**6),
    st.sampled_from([("large",), ("small",), ("large", "small"), ("small", "large")]),
    st.sampled_from([2.0, 10.0, 30.0, 60.0, 120.0]),
    st.sampled_from([12.0, 20.0, 30.0, 60.0, 200.0]),
    st.sampled_from([100, 200, 250, 500, 1000, 2000]),
)
plain = st.builds(
    lambda i, milli: plain_gpu_pod(f"p{i}", gpu_milli=milli, cpu_milli=500),
    st.integers(0, 10**6),
    st.sampled_from([0, 300, 1000, 2000]),
)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[ClusterState, list[PodDemand]]:
    n = draw(st.integers(1, 7))
    nodes = [
        gpu_node(
            f"n{i}",
            accelerator=draw(st.sampled_from(["nvidia-t4", "nvidia-a100"])),
            gpus=draw(st.integers(1, 4)),
            cpu_milli=draw(st.sampled_from([2_000, 32_000])),
        )
        for i in range(n)
    ]
    state = state_with(nodes, TABLE)
    pods = draw(st.lists(st.one_of(service, service, plain), min_size=1, max_size=14))
    return state, pods


def uniquely(pods: list[PodDemand]) -> list[PodDemand]:
    return [
        PodDemand(
            uid=f"{k}-{p.uid}",
            name=f"{k}-{p.name}",
            variants=p.variants,
            slo_ms=p.slo_ms,
            rate_rps=p.rate_rps,
            gpu_milli=p.gpu_milli,
            cpu_milli=p.cpu_milli,
            memory_mib=p.memory_mib,
        )
        for k, p in enumerate(pods)
    ]


@settings(max_examples=120, deadline=None)
@given(
    cluster=clusters(),
    setting=st.sampled_from(["pack", "pack-gpu"]),
    margin=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    again=st.booleans(),
)
def test_fast_pack_path_decides_as_the_oracle(
    cluster: tuple[ClusterState, list[PodDemand]], setting: str, margin: float, again: bool
) -> None:
    """Place the pods one by one (the oracle's choice); every evaluation equal, cold and warm."""
    state, pods = cluster
    options = {"gpu_consolidation": setting, "consolidation_slack_frac": margin}
    fast, slow = QoschedPolicy(**options), OraclePolicy(**options)  # type: ignore[arg-type]
    candidates = np.arange(state.n_nodes)
    for step, pod in enumerate(uniquely(pods)):
        fast.observe(pod)
        slow.observe(pod)
        want = slow.evaluate(state, pod, candidates)
        assert_same(fast.evaluate(state, pod, candidates), want, f"step {step}")
        if again:  # the same pod on the unchanged cluster: verdicts from the cache
            assert_same(fast.evaluate(state, pod, candidates), want, f"step {step}, again")
        best = best_candidate(want)
        if best is None:
            continue
        devices = tuple(int(d) for d in want.devices[best] if d >= 0)
        variant = int(want.variant[best])
        model = pod.variants[variant] if pod.variants and variant >= 0 else None
        state.add(Allocation(pod, state.node_views[int(want.node_idx[best])].name, devices, model))


@settings(max_examples=200, deadline=None)
@given(
    keys=arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 8)),
        elements=st.sampled_from([0.0, 0.04, 1.5, 2e5, -3.0, np.inf, np.nan]),
    ),
    data=st.data(),
    fullest_first=st.booleans(),
)
def test_pack_order_orders_each_row_as_the_oracle(
    keys: np.ndarray, data: st.DataObject, fullest_first: bool
) -> None:
    """Within every row, the fast keys order (ties included) as the oracle's: same argmin and
    same stable argsort whatever devices are struck out."""
    free = data.draw(arrays(np.int32, keys.shape, elements=st.integers(-50, 1200)))
    struck = data.draw(arrays(np.bool_, keys.shape))
    fast = consolidation.pack_order(keys, free, fullest_first=fullest_first)
    slow = oracle_pack_order(keys, free, fullest_first=fullest_first)
    for k in (fast, slow):
        k[struck] = np.inf
    np.testing.assert_array_equal(np.argmin(fast, axis=1), np.argmin(slow, axis=1))
    np.testing.assert_array_equal(
        np.argsort(fast, axis=1, kind="stable"), np.argsort(slow, axis=1, kind="stable")
    )
    np.testing.assert_array_equal(fast[:, :, None] < fast[:, None, :], slow[:, :, None] < slow[:, None, :])
    np.testing.assert_array_equal(fast[:, :, None] == fast[:, None, :], slow[:, :, None] == slow[:, None, :])


@pytest.mark.parametrize("g", [1, 2, 3], ids=["one-device", "two-devices", "three-devices"])
def test_used_fractions_equal_the_oracle(g: int) -> None:
    rng = np.random.default_rng(g)
    exists = rng.random((200, 4)) < 0.8
    free = np.where(exists, rng.integers(-50, 1001, (200, 4)), 0).astype(np.int32)
    devices = rng.integers(-1, 4, (200, g))
    for fast, slow in zip(
        consolidation.used_fractions(free, exists, devices),
        oracle_used_fractions(free, exists, devices),
        strict=True,
    ):
        np.testing.assert_array_equal(fast, slow)
