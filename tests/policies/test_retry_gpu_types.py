"""The replay's retry test knows GPU types: a constrained pod is retried only where it may run.

Before, the necessary test that decides which pending pods to retry when a node frees capacity
ignored ``gpu_spec``: a pod restricted to one GPU model was retried (one placement evaluation
and one victim search) at *every* departure that freed resources on a node of any model. With a
third of the GPU pods constrained (upstream ``gpuspec33``) the queue holds hundreds of such
pods, so a contention replay made departures x pending tries: quadratic (docs/qos-driven.md,
"Runtime per workload"). The oracle below is the replay with the GPU-type entry of the retry
test switched off (the previous behaviour):

- placement is unchanged on every workload (the test only skips pods that cannot be placed
  on the freed nodes; a policy that does not preempt replays exactly as before, with fewer
  tries);
- on workloads without GPU-type constraints the preemptive policies replay exactly as before;
- the test is necessary: a pod placeable on a freed node is never skipped (hypothesis).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qosched.policies.simulator.replay as replay_mod
from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG
from qosched.policies.placement.base import Reason, make_policy
from qosched.policies.placement.baselines.kube import WorstFitPolicy
from qosched.policies.placement.constraints import gather
from qosched.policies.placement.testing import gpu_node
from qosched.policies.preemption import PriorityPolicy, QosDrivenPolicy, preemptive_qosched
from qosched.policies.simulator.replay import PolicyScheduler, ReplayConfig, ReplayResult, replay
from qosched.policies.simulator.scenarios import Workload
from qosched.policies.types import Allocation, NodeView, PodDemand

MODELS = ("A10", "V100M32", "T4")


def _nodes(n: int) -> list[NodeView]:
    """``n`` nodes cycling over three GPU models, 4 or 8 GPUs."""
    return [
        gpu_node(
            f"n{i}",
            gpus=8 if i % 3 == 1 else 4,
            gpu_model=MODELS[i % 3],
            cpu_milli=64_000,
            memory_mib=256_000,
        )
        for i in range(n)
    ]


def _pods(rng: np.random.Generator, n: int, spec_share: float) -> list[PodDemand]:
    pods = []
    for k in range(n):
        gpu = int(rng.choice([0, 200, 500, 1000, 2000, 4000], p=[0.1, 0.3, 0.25, 0.2, 0.1, 0.05]))
        spec: tuple[str, ...] = ()
        if gpu and rng.random() < spec_share:
            spec = tuple(sorted(rng.choice(MODELS, size=int(rng.integers(1, 3)), replace=False).tolist()))
        pods.append(
            PodDemand(
                uid=f"p{k}",
                name=f"p{k}",
                qos_class=str(rng.choice(["prod", "batch", "free"], p=[0.4, 0.2, 0.4])),
                gpu_milli=gpu,
                cpu_milli=int(rng.choice([1000, 4000, 8000])),
                memory_mib=float(rng.choice([2048, 16384])),
                gpu_spec=spec,
            )
        )
    return pods


def contended(seed: int, *, n_nodes: int = 9, n_pods: int = 300, spec_share: float = 0.5) -> Workload:
    """Oversubscribed: pods every 0.5 s with exponential lifetimes (mean 150 s) on few nodes."""
    rng = np.random.default_rng(seed)
    pods = _pods(rng, n_pods, spec_share)
    arrival = 0.5 * np.arange(n_pods)
    duration = rng.exponential(150.0, n_pods) + 1.0
    return Workload.build(_nodes(n_nodes), pods, arrival, duration)


def _no_gpu_types(state: Any, pods: Any) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's retry test: no pod carries a GPU-type constraint."""
    return np.full(len(pods), -1, dtype=np.int64), np.ones((0, state.n_nodes), dtype=bool)


def _run(wl: Workload, policy: Any, *, oracle: bool, monkeypatch: pytest.MonkeyPatch) -> ReplayResult:
    with monkeypatch.context() as m:
        if oracle:
            m.setattr(replay_mod, "_gpu_spec_table", _no_gpu_types)
        own = getattr(policy, "observe", None)
        return replay(
            wl,
            PolicyScheduler(policy, candidates="fit", observe=own if callable(own) else None),
            np.random.default_rng(0),
            lookup=lambda a, m: None,
            device_memory=lambda a: math.inf,
            config=ReplayConfig(horizon_s=400.0, simulate_latency=False),
        )


def _assert_same_placements(a: ReplayResult, b: ReplayResult) -> None:
    la, lb = a.ledger, b.ledger
    for name in ("status", "node_row", "preemptions"):
        assert np.array_equal(getattr(la, name), getattr(lb, name)), name
    for name in ("first_start_s", "end_s", "run_start_s", "running_s", "remaining_s"):
        assert np.array_equal(getattr(la, name), getattr(lb, name), equal_nan=True), name
    assert list(la.devices) == list(lb.devices)


PLACEMENT_ONLY = ("best-fit", "worst-fit", "fgd", "qosched")


def _placement(name: str) -> Any:
    return WorstFitPolicy() if name == "worst-fit" else make_policy(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", PLACEMENT_ONLY, ids=PLACEMENT_ONLY)
def test_placements_unchanged_with_fewer_tries(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    wl = contended(seed=3)
    new = _run(wl, _placement(name), oracle=False, monkeypatch=monkeypatch)
    old = _run(wl, _placement(name), oracle=True, monkeypatch=monkeypatch)
    _assert_same_placements(new, old)
    assert new.stats["placed"] == old.stats["placed"]
    # The scene exercises the skip: constrained pods wait while other models free capacity.
    assert old.stats["failed_attempts"] > 1.5 * new.stats["failed_attempts"] > 0
    assert (new.ledger.attempts <= old.ledger.attempts).all()


PREEMPTIVE = {
    "priority": PriorityPolicy,
    "qos-driven": QosDrivenPolicy,
    "qosched": preemptive_qosched,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PREEMPTIVE), ids=list(PREEMPTIVE))
def test_preemptive_replays_unchanged_without_gpu_types(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    wl = contended(seed=5, spec_share=0.0)
    new = _run(wl, PREEMPTIVE[name](), oracle=False, monkeypatch=monkeypatch)
    old = _run(wl, PREEMPTIVE[name](), oracle=True, monkeypatch=monkeypatch)
    _assert_same_placements(new, old)
    assert np.array_equal(new.ledger.attempts, old.ledger.attempts)
    assert new.stats == old.stats
    assert int(new.ledger.preemptions.sum()) > 10  # the scene is contended


@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_placement_only_equivalence_holds_on_random_scenes(seed: int) -> None:
    """Hypothesis over scenes: best fit places every pod where the oracle does."""
    with pytest.MonkeyPatch.context() as mp:
        wl = contended(seed=seed, n_pods=160)
        new = _run(wl, make_policy("best-fit"), oracle=False, monkeypatch=mp)
        old = _run(wl, make_policy("best-fit"), oracle=True, monkeypatch=mp)
        _assert_same_placements(new, old)


def _loaded_replay(seed: int, n_nodes: int, pods: list[PodDemand]) -> Any:
    """A ``_Replay`` whose state holds a random part of ``pods`` (the rest pending)."""
    rng = np.random.default_rng(seed)
    wl = Workload.build(_nodes(n_nodes), pods, np.zeros(len(pods)), np.full(len(pods), np.inf))
    r = replay_mod._Replay(
        wl,
        PolicyScheduler(WorstFitPolicy()),
        rng,
        ReplayConfig(simulate_latency=False),
        lambda a, m: None,
        lambda a: math.inf,
        DEFAULT_CLASS_CONFIG,
    )
    for i, pod in enumerate(pods):
        if rng.random() < 0.6:
            placement = r.sched.place(r.state, pod)
            if placement is not None:
                r.state.add(
                    Allocation(pod=pod, node=r.state.node_names[placement.row], devices=placement.devices)
                )
                continue
        r.pending.append(i)
    return r


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_nodes=st.integers(1, 7),
    n_pods=st.integers(2, 40),
    spec_share=st.floats(0.0, 1.0),
    data=st.data(),
)
def test_retry_test_is_necessary_and_vectorised_alike(
    seed: int, n_nodes: int, n_pods: int, spec_share: float, data: st.DataObject
) -> None:
    """Never skips a pod that a freed node can take; the batch form agrees with the single one;
    a constrained pod is skipped when no freed node has one of its models."""
    r = _loaded_replay(seed, n_nodes, _pods(np.random.default_rng(seed + 1), n_pods, spec_share))
    if not r.pending:
        return
    freed = np.array(
        sorted(data.draw(st.sets(st.integers(0, n_nodes - 1), min_size=1, max_size=n_nodes))), dtype=np.int64
    )
    pending = np.array(r.pending, dtype=np.int64)
    many = r._could_fit_many(pending, freed)
    for j, i in enumerate(pending.tolist()):
        pod = r.workload.pods[i]
        one = r._could_fit(i, freed)
        assert one == bool(many[j])
        if (gather(r.state, pod, freed).reason == Reason.OK).any():
            assert one, "a pod placeable on a freed node was skipped"
        if pod.gpu_spec and pod.gpu_milli > 0:
            models = {r.state.node_views[row].gpu_model for row in freed.tolist()}
            if not models & set(pod.gpu_spec):
                assert not one
