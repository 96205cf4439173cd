"""Properties every policy keeps, on random small clusters (hypothesis).

- ``evaluate`` answers for exactly the candidates it was given, and never points elsewhere;
- ``scheduler_scores`` are integers within 0..10;
- the same snapshot gives the same answer (a fresh policy object, or the same one again);
- an accepted placement fits: adding it to the state (strict accounting) never raises;
- for the interference-aware policies, the accepted placement is feasible under the latency
  models, re-checked one device at a time from plain Python lists (``DeviceServices.build`` and
  ``predict`` on that single device, then the rule of models.md §A by hand).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qosched.policies.latency.sharing import DeviceServices, ModelParams, predict, resolve_sharing
from qosched.policies.placement.base import (
    MAX_SCHEDULER_SCORE,
    best_candidate,
    make_policy,
    policy_names,
    scheduler_scores,
)
from qosched.policies.placement.testing import ProfileTable, gpu_node, inference_pod, plain_gpu_pod
from qosched.policies.state import ClusterState, ServiceParams, StateError
from qosched.policies.types import GPU_MILLI_PER_DEVICE, SHARING_MODES, Allocation, PodDemand

ACCELERATORS = ("nvidia-t4", "nvidia-a100", "edgetpu", "cpu")
MODELS = ("small", "large")
TABLE = ProfileTable(
    params={
        ("nvidia-t4", "small"): ServiceParams(2.0, 5.0, memory_mib=500.0, frontend_ms=1.0, accuracy=0.7),
        ("nvidia-t4", "large"): ServiceParams(8.0, 64.0, memory_mib=4000.0, frontend_ms=2.0, accuracy=0.8),
        ("nvidia-a100", "large"): ServiceParams(3.0, 9.0, memory_mib=4000.0, accuracy=0.8),
        ("edgetpu", "small"): ServiceParams(5.0, 25.0, swap_ms=10.0, memory_mib=100.0, frontend_ms=1.0),
        ("edgetpu", "large"): ServiceParams(40.0, 1600.0, swap_ms=20.0, memory_mib=3000.0),
        ("cpu", "small"): ServiceParams(20.0, 400.0, memory_mib=200.0),
    },
    device_memory_mib={"nvidia-t4": 16_000.0, "nvidia-a100": 40_000.0, "edgetpu": 8_000.0, "cpu": 8_000.0},
)
AWARE = {"ibis-pack", "ibis-spread", "ibis-hetero", "qosched"}


@st.composite
def pods(draw: st.DrawFn, uid: str) -> PodDemand:
    kind = draw(st.sampled_from(["inference", "gpu", "plain"]))
    gpu_milli = draw(st.sampled_from([0, 100, 250, 500, 1000, 2000]))
    cpu = draw(st.integers(0, 8000))
    if kind == "plain":
        return plain_gpu_pod(uid, cpu_milli=cpu, memory_mib=float(draw(st.integers(0, 8000))))
    if kind == "gpu":
        return plain_gpu_pod(uid, gpu_milli=max(gpu_milli, 100), cpu_milli=cpu)
    variants = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True))
    return inference_pod(
        uid,
        *variants,
        rate_rps=draw(st.floats(0.0, 120.0)),
        slo_ms=draw(st.floats(5.0, 500.0)),
        gpu_milli=gpu_milli,
        cpu_milli=cpu,
        slo_percentile=draw(st.sampled_from([None, None, 95.0])),
    )


@st.composite
def clusters(draw: st.DrawFn) -> ClusterState:
    n = draw(st.integers(1, 4))
    nodes = []
    for i in range(n):
        accel = draw(st.sampled_from(ACCELERATORS))
        nodes.append(
            gpu_node(
                f"n{i}",
                accelerator=accel,
                gpus=1 if accel == "cpu" else draw(st.integers(1, 3)),
                cpu_milli=draw(st.sampled_from([4000, 32_000])),
                memory_mib=32_000.0,
                sharing=draw(st.sampled_from(SHARING_MODES)),
                schedulable=draw(st.booleans()) or i == 0,
            )
        )
    state = ClusterState(nodes, TABLE.lookup, TABLE.device_memory)
    for j in range(draw(st.integers(0, 8))):
        pod = draw(pods(f"r{j}"))
        node = draw(st.integers(0, n - 1))
        count = max(1, pod.gpu_count) if (pod.gpu_milli or pod.is_inference) else 0
        free = [
            d
            for d in range(int(state.device_count[node]))
            if state.gpu_used_milli[node, d] + pod.milli_per_device <= GPU_MILLI_PER_DEVICE
        ]
        if len(free) < count:
            continue
        model = (
            pod.model
            if pod.is_inference and TABLE.lookup(nodes[node].accelerator or "", pod.model or "")
            else None
        )
        if pod.is_inference and model is None:
            continue
        try:
            state.add(Allocation(pod, nodes[node].name, tuple(free[:count]), model=model))
        except StateError:  # pragma: no cover - the draw above keeps within capacity
            continue
    return state


def recheck_feasible(
    state: ClusterState, pod: PodDemand, node: int, devices: list[int], variant: int
) -> None:
    """The accepted placement under the models, one device at a time, from plain lists."""
    view = state.node_views[node]
    model = pod.variants[variant]
    params = TABLE.lookup(view.accelerator or "", model)
    assert params is not None, "accepted on a node without a profile"
    mode = resolve_sharing(view.accelerator, view.sharing)
    share = (
        pod.milli_per_device / GPU_MILLI_PER_DEVICE
        if view.sharing in ("mps", "mig") and pod.gpu_milli
        else 1.0
    )
    rate = pod.rate_rps / max(1, len(devices))
    cores = max(1, int(state.cpu_cap_milli[node]) // 1000)
    frontend = float(state.frontend_util[node]) + pod.rate_rps * params.frontend_ms / 1000.0
    assert frontend <= 0.8 + 1e-9
    for d in devices:
        live = np.flatnonzero(state.svc_mask[node, d])
        rates = [float(state.svc_rate_rps[node, d, k]) for k in live] + [rate]
        s = [float(state.svc_service_ms[node, d, k]) for k in live] + [params.service_ms]
        s2 = [float(state.svc_second_ms2[node, d, k]) for k in live] + [params.second_moment_ms2]
        swap = [float(state.svc_swap_ms[node, d, k]) for k in live] + [params.swap_ms]
        shares = [float(state.svc_share_frac[node, d, k]) for k in live] + [share]
        slos = [float(state.svc_slo_ms[node, d, k]) for k in live] + [float(pod.slo_ms or np.inf)]
        pcts = [float(state.svc_slo_percentile[node, d, k]) for k in live] + [
            np.nan if pod.slo_percentile is None else pod.slo_percentile
        ]
        services = DeviceServices.build(
            rates, s, second_moment_ms2=s2, swap_ms=swap, share_frac=shares, cores=cores
        )
        pred = predict(mode, services, ModelParams())
        memory = float(state.dev_mem_used_mib[node, d]) + params.memory_mib
        assert memory <= 0.8 * float(state.dev_mem_cap_mib[node]) + 1e-6
        assert float(pred.utilization) <= 0.8 + 1e-9
        assert (pred.service_utilization <= 0.8 + 1e-9).all()
        if not any(np.isfinite(pcts)):  # mean SLOs: every latency within its target
            assert (pred.latency_ms <= np.asarray(slos) + 1e-9).all(), (pred.latency_ms, slos)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=clusters(), pod=pods("new"), policy=st.sampled_from(sorted(policy_names())), data=st.data())
def test_policy_properties(state: ClusterState, pod: PodDemand, policy: str, data: st.DataObject) -> None:
    cands = np.array(data.draw(st.lists(st.integers(0, state.n_nodes - 1), min_size=1, max_size=6)))
    ev = make_policy(policy).evaluate(state, pod, cands)
    assert len(ev) == cands.size
    np.testing.assert_array_equal(ev.node_idx, cands)
    scores = scheduler_scores(ev)
    assert scores.dtype.kind == "i"
    assert ((scores >= 0) & (scores <= MAX_SCHEDULER_SCORE)).all()
    assert (scores[~ev.feasible] == 0).all()

    again = make_policy(policy).evaluate(state, pod, cands)
    np.testing.assert_array_equal(again.reason, ev.reason)
    np.testing.assert_array_equal(again.raw_score, ev.raw_score)
    np.testing.assert_array_equal(again.devices, ev.devices)

    best = best_candidate(ev)
    if best is None:
        assert not (ev.feasible & np.isfinite(ev.raw_score)).any()
        return
    node = int(ev.node_idx[best])
    assert node in set(cands.tolist())
    devices = [int(d) for d in ev.devices[best] if d >= 0]
    need = pod.gpu_count if pod.gpu_milli > 0 else (1 if pod.is_inference else 0)
    assert len(devices) == need
    assert len(set(devices)) == need
    variant = int(ev.variant[best])
    if pod.variants:
        assert 0 <= variant < len(pod.variants)
    if policy in AWARE and pod.is_inference:
        event("accepted inference pod re-checked under the models")
        recheck_feasible(state, pod, node, devices, variant)
    model = pod.variants[variant] if pod.variants else None
    state.add(Allocation(pod, state.node_names[node], tuple(devices), model=model))
    assert pod.uid in state


@st.composite
def inference_pods(draw: st.DrawFn) -> PodDemand:
    variants = draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True))
    return inference_pod(
        "new",
        *variants,
        rate_rps=draw(st.floats(0.0, 120.0)),
        slo_ms=draw(st.floats(5.0, 500.0)),
        gpu_milli=draw(st.sampled_from([0, 100, 250, 500, 1000, 2000])),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=clusters(), pod=inference_pods(), policy=st.sampled_from(sorted(AWARE)))
def test_every_feasible_verdict_of_an_aware_policy_holds_under_the_models(
    state: ClusterState, pod: PodDemand, policy: str
) -> None:
    cands = np.arange(state.n_nodes)
    ev = make_policy(policy).evaluate(state, pod, cands)
    for i in np.flatnonzero(ev.feasible):
        event("feasible verdict re-checked")
        devices = [int(d) for d in ev.devices[i] if d >= 0]
        recheck_feasible(state, pod, int(ev.node_idx[i]), devices, int(ev.variant[i]))
