"""The fast path of interference-aware placement, against the general path it replaces.

- ``ClusterState``'s per-device summaries (the time-slicing load sums, the used slot prefix,
  the counts of services with a percentile SLO / their own overhead / rejected parameters) equal
  a from-scratch recomputation after any sequence of adds, removes and node changes;
- ``LoadSums`` + ``time_slicing_wait_ms`` + ``feasible_shared_wait`` give the very floats
  ``predict`` + ``feasible`` + ``slack_frac`` give on the appended arrays (hand-checked numbers
  and hypothesis);
- ``judge``'s shared-wait route and its general route (``shared_wait=False``) give the same
  verdicts bit for bit, and so do whole policy evaluations;
- the verdict cache recycles dropped memos without changing a verdict.

Exact equality (``np.array_equal``) is the point of these tests: the fast path is an exact
rewrite, not an approximation. (One documented exception, avoided by the generators: numpy adds
eight or more numbers in one contiguous run pairwise, so the general route judging a single
device that holds seven or more services rounds its sums differently from every batch of two or
more devices, and from the shared-wait route.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qosched.policies.latency.colocation_rule import (
    ReasonCode,
    Thresholds,
    feasible,
    feasible_shared_wait,
    slack_frac,
)
from qosched.policies.latency.sharing import (
    DeviceServices,
    LoadSums,
    ModelParams,
    predict,
    time_slicing_wait_ms,
    valid_services,
)
from qosched.policies.placement import common
from qosched.policies.placement import interference as pf
from qosched.policies.placement import verdict_cache as vc
from qosched.policies.placement.base import make_policy
from qosched.policies.placement.constraints import gather
from qosched.policies.placement.fgd.mix import PodShape
from qosched.policies.placement.fgd.policy import ShapeMixMemo, mix_for
from qosched.policies.placement.testing import ProfileTable, gpu_node, inference_pod, plain_gpu_pod
from qosched.policies.state import ClusterState, ServiceParams, StateError
from qosched.policies.types import GPU_MILLI_PER_DEVICE, SHARING_MODES, Allocation, NodeView, PodDemand

INF = math.inf

# Service parameters of two models on each accelerator; "odd" has its own co-location overhead
# and "bad" parameters the latency models reject (E[S²] < S²), to exercise the counters.
TABLE = ProfileTable(
    params={
        ("nvidia-t4", "small"): ServiceParams(2.0, 5.0, memory_mib=500.0, frontend_ms=1.0, accuracy=0.7),
        ("nvidia-t4", "large"): ServiceParams(8.0, 64.0, memory_mib=4000.0, frontend_ms=2.0, accuracy=0.8),
        ("nvidia-t4", "odd"): ServiceParams(3.0, 9.0, memory_mib=100.0, overhead_frac=0.2),
        ("nvidia-t4", "bad"): ServiceParams(3.0, 4.0, memory_mib=100.0),
        ("nvidia-a100", "large"): ServiceParams(3.0, 9.0, memory_mib=4000.0, accuracy=0.8),
        ("nvidia-a100", "small"): ServiceParams(1.0, 1.5, memory_mib=300.0),
        ("edgetpu", "small"): ServiceParams(5.0, 25.0, swap_ms=10.0, memory_mib=100.0, frontend_ms=1.0),
        ("cpu", "small"): ServiceParams(20.0, 400.0, memory_mib=200.0),
    },
    device_memory_mib={"nvidia-t4": 16_000.0, "nvidia-a100": 40_000.0, "edgetpu": 8_000.0, "cpu": 8_000.0},
)
GPUS = ("nvidia-t4", "nvidia-a100")
#: At most this many services per device in generated clusters (see the module docstring).
MAX_PER_DEVICE = 6


# ------------------------------------------------------------------------------------------
# state summaries vs a from-scratch recomputation
# ------------------------------------------------------------------------------------------


def recomputed(state: ClusterState) -> dict[str, object]:
    """Every per-device summary, from the service slots alone."""
    mask = state.svc_mask
    sums = LoadSums.of(state.svc_rate_rps, state.svc_service_ms, state.svc_second_ms2, mask)
    k_idx = np.arange(state.n_slots)
    end = np.where(mask, k_idx + 1, 0).max(axis=-1)
    pct = (mask & np.isfinite(state.svc_slo_percentile)).sum(axis=-1)
    over = (mask & (state.svc_overhead_frac != 0.0)).sum(axis=-1)
    ok = valid_services(
        state.svc_rate_rps,
        state.svc_service_ms,
        state.svc_second_ms2,
        swap_ms=state.svc_swap_ms,
        share_frac=state.svc_share_frac,
        overhead_frac=state.svc_overhead_frac,
    )
    return {
        "dev_rate_per_ms": sums.rate_per_ms,
        "dev_load": sums.load,
        "dev_second_load_ms": sums.second_load_ms,
        "dev_active": sums.active,
        "dev_slot_end": end,
        "dev_pct_services": pct,
        "dev_overhead_services": over,
        "n_pct_services": int(pct.sum()),
        "n_overhead_services": int(over.sum()),
        "n_invalid_services": int((mask & ~ok).sum()),
    }


def assert_summaries_exact(state: ClusterState) -> None:
    for name, want in recomputed(state).items():
        got = getattr(state, name)
        if isinstance(want, int):
            assert got == want, name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name, strict=False)
    # The judge relies on this: an empty slot never has an SLO.
    assert np.isinf(state.svc_slo_ms[~state.svc_mask]).all()


def slot_order_sums(
    rates: list[float], service: list[float], second: list[float]
) -> tuple[float, float, float]:
    """The sums of one device by hand, one addition at a time in slot order (Python floats)."""
    lam_sum = load = m2 = 0.0
    for r, s, q in zip(rates, service, second, strict=True):
        lam = r / 1000.0
        lam_sum += lam
        load += lam * s
        m2 += lam * q
    return lam_sum, load, m2


@st.composite
def operations(draw: st.DrawFn) -> list[tuple]:
    """A sequence of add / remove / node changes on a 3-node cluster."""
    ops: list[tuple] = []
    for j in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["add", "add", "add", "remove", "upsert", "drop"]))
        if kind == "add":
            model = draw(st.sampled_from(["small", "large", "odd", "bad", None]))
            pct = draw(st.sampled_from([None, None, 95.0]))
            milli = draw(st.sampled_from([0, 100, 250, 500, 1000, 2000]))
            rate = draw(st.sampled_from([0.0, 1.0, 17.5, draw(st.floats(0.0, 200.0))]))
            ops.append(
                ("add", f"p{j}", model, pct, milli, rate, draw(st.integers(0, 2)), draw(st.integers(0, 3)))
            )
        elif kind == "remove":
            ops.append(("remove", draw(st.integers(0, 40))))
        elif kind == "upsert":
            ops.append(
                (
                    "upsert",
                    draw(st.integers(0, 2)),
                    draw(st.integers(1, 4)),
                    draw(st.sampled_from(SHARING_MODES)),
                )
            )
        else:
            ops.append(("drop", draw(st.integers(0, 2))))
    return ops


NODE_NAMES = ["a", "b", "c"]


def apply(state: ClusterState, op: tuple, placed: list[str]) -> None:
    if op[0] == "add":
        _apply_add(state, op, placed)
    elif op[0] == "remove":
        if placed:
            state.remove(placed.pop(op[1] % len(placed)))
    elif op[0] == "upsert":
        _, node, gpus, sharing = op
        state.upsert_node(gpu_node(NODE_NAMES[node], gpus=gpus, sharing=sharing))
    else:
        for alloc in state.remove_node(NODE_NAMES[op[1]]):
            if alloc.uid in placed:
                placed.remove(alloc.uid)


def _apply_add(state: ClusterState, op: tuple, placed: list[str]) -> None:
    """Add the pod of an ``add`` operation where it can go (skipped where it cannot)."""
    _, uid, model, pct, milli, rate, node, dev = op
    if model is None:
        pod = plain_gpu_pod(uid, gpu_milli=milli)
    else:
        pod = inference_pod(uid, model, rate_rps=rate, slo_ms=50.0, gpu_milli=milli, slo_percentile=pct)
    i = state.node_index.get(NODE_NAMES[node])
    if i is None or not state.schedulable[i]:
        return
    count = max(1, pod.gpu_count) if (pod.gpu_milli or pod.is_inference) else 0
    n_dev = int(state.device_count[i])
    devices = tuple((dev + c) % max(1, n_dev) for c in range(count)) if n_dev else ()
    if len(set(devices)) != count:
        return
    if pod.is_inference and devices and int(state.svc_mask[i, devices[0]].sum()) >= MAX_PER_DEVICE:
        return
    try:
        state.add(Allocation(pod, NODE_NAMES[node], devices, model=model))
    except StateError:
        return
    placed.append(uid)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations())
def test_state_summaries_equal_a_recomputation_after_any_changes(ops: list[tuple]) -> None:
    state = ClusterState(
        [gpu_node("a", gpus=2), gpu_node("b", gpus=1, sharing="mps"), gpu_node("c", gpus=3)],
        TABLE.lookup,
        TABLE.device_memory,
        services_per_device=2,  # small, so that the slot axis grows on the way
    )
    placed: list[str] = []
    for op in ops:
        apply(state, op, placed)
        assert_summaries_exact(state)
    # And by hand on one device: sequential sums in slot order.
    i, d = np.unravel_index(int(np.argmax(state.dev_active)), state.dev_active.shape)
    live = np.flatnonzero(state.svc_mask[i, d])
    want = slot_order_sums(
        [float(state.svc_rate_rps[i, d, k]) for k in live],
        [float(state.svc_service_ms[i, d, k]) for k in live],
        [float(state.svc_second_ms2[i, d, k]) for k in live],
    )
    assert (state.dev_rate_per_ms[i, d], state.dev_load[i, d], state.dev_second_load_ms[i, d]) == want


def test_state_counts_services_that_need_the_general_path() -> None:
    state = ClusterState([gpu_node("a", gpus=2)], TABLE.lookup, TABLE.device_memory)
    state.add(
        Allocation(inference_pod("p", "small", rate_rps=10.0, slo_ms=50.0, slo_percentile=99.0), "a", (0,))
    )
    state.add(Allocation(inference_pod("o", "odd", rate_rps=10.0, slo_ms=50.0), "a", (1,)))
    state.add(Allocation(inference_pod("b", "bad", rate_rps=10.0, slo_ms=50.0), "a", (1,)))
    assert (state.n_pct_services, state.n_overhead_services, state.n_invalid_services) == (1, 1, 1)
    assert state.dev_pct_services[0].tolist() == [1, 0]
    assert state.dev_overhead_services[0].tolist() == [0, 1]
    assert state.dev_slot_end[0].tolist() == [1, 2]
    for uid in ("p", "o", "b"):
        state.remove(uid)
    assert (state.n_pct_services, state.n_overhead_services, state.n_invalid_services) == (0, 0, 0)
    assert state.dev_slot_end[0].tolist() == [0, 0]
    # 10 rps of S = 2 ms → λ = 0.01/ms, ρ = 0.02; E[S²] = 5 → Σλ·E[S²] = 0.05.
    state.add(Allocation(inference_pod("s", "small", rate_rps=10.0, slo_ms=50.0), "a", (0,)))
    assert (state.dev_rate_per_ms[0, 0], state.dev_load[0, 0], state.dev_second_load_ms[0, 0]) == (
        0.01,
        0.02,
        0.05,
    )
    assert state.dev_active[0, 0] == 1


# ------------------------------------------------------------------------------------------
# the latency package's pieces
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rates", "service", "second", "want_wait", "want_rho"),
    [
        # Two active: E[S] = 25, ρ = 0.5, W = 25·0.5/0.5 = 25 ms.
        ([10.0, 10.0], [20.0, 30.0], [400.0, 900.0], 25.0, 0.5),
        # One active alone: M/G/1, ρ = 0.2, W = λE[S²]/(2(1 − ρ)) = 0.01·800/1.6 = 5 ms.
        ([10.0, 0.0], [20.0, 30.0], [800.0, 900.0], 5.0, 0.2),
        # Nothing active: no wait.
        ([0.0, 0.0], [20.0, 30.0], [400.0, 900.0], 0.0, 0.0),
        # ρ = 1.2 ≥ 1: unbounded.
        ([40.0, 20.0], [20.0, 20.0], [400.0, 400.0], INF, 1.2),
    ],
    ids=["two-active", "alone-mg1", "idle", "unbounded"],
)
def test_time_slicing_wait_by_hand(
    rates: list[float], service: list[float], second: list[float], want_wait: float, want_rho: float
) -> None:
    sums = LoadSums.of(rates, service, second)
    wait = float(time_slicing_wait_ms(sums))
    assert float(sums.load) == pytest.approx(want_rho, rel=1e-12)
    assert wait == pytest.approx(want_wait, rel=1e-12) if math.isfinite(want_wait) else wait == INF
    pred = predict("time-slicing", DeviceServices.build(rates, service, second_moment_ms2=second))
    assert float(pred.utilization) == float(sums.load)
    assert (pred.latency_ms == np.asarray(service) + wait).all() or not math.isfinite(want_wait)


@pytest.mark.parametrize(
    "params",
    [ModelParams(time_slicing="ps"), ModelParams(colocation_overhead_frac=0.1)],
    ids=["processor-sharing", "colocation-overhead"],
)
def test_time_slicing_wait_refuses_models_it_does_not_cover(params: ModelParams) -> None:
    with pytest.raises(ValueError, match="time_slicing_wait_ms"):
        time_slicing_wait_ms(LoadSums.of([1.0], [1.0], [1.0]), params)


@st.composite
def devices(draw: st.DrawFn) -> tuple[Any, ...]:
    """(E, K) services of E devices (mask, rate, S, E[S²], SLO) and one new service per device."""
    e = draw(st.integers(2, 6))
    k = draw(st.integers(1, 5))
    mask = np.array(draw(st.lists(st.booleans(), min_size=e * k, max_size=e * k))).reshape(e, k)
    rate = np.array(
        draw(
            st.lists(
                st.sampled_from([0.0, 5.0, 30.0, 120.0]) | st.floats(0.0, 150.0),
                min_size=e * k,
                max_size=e * k,
            )
        )
    ).reshape(e, k)
    s = np.array(draw(st.lists(st.floats(0.5, 40.0), min_size=e * k, max_size=e * k))).reshape(e, k)
    scv = np.array(draw(st.lists(st.floats(1.0, 3.0), min_size=e * k, max_size=e * k))).reshape(e, k)
    slo = np.array(
        draw(
            st.lists(
                st.sampled_from([INF, 20.0, 60.0]) | st.floats(5.0, 300.0), min_size=e * k, max_size=e * k
            )
        )
    ).reshape(e, k)
    new_rate = draw(st.sampled_from([0.0, 10.0]) | st.floats(0.0, 150.0))
    new_s = np.array(draw(st.lists(st.floats(0.5, 40.0), min_size=e, max_size=e)))
    new_slo = draw(st.sampled_from([INF, 30.0]) | st.floats(5.0, 300.0))
    # State conventions: empty slots have rate 0, S 0, SLO inf.
    rate, s2, slo = np.where(mask, rate, 0.0), s * s * scv, np.where(mask, slo, INF)
    s = np.where(mask, s, 0.0)
    s2 = np.where(mask, s2, 0.0)
    return mask, rate, s, s2, slo, np.float64(new_rate), new_s, np.float64(new_slo)


@settings(max_examples=200, deadline=None)
@given(case=devices(), used=st.floats(0.0, 2000.0), fe=st.floats(0.0, 1.0))
def test_shared_wait_pieces_equal_predict_and_feasible(
    case: tuple[np.ndarray, ...], used: float, fe: float
) -> None:
    mask, rate, s, s2, slo, new_rate, new_s, new_slo = case
    e, k = mask.shape
    # General: the appended (E, K + 1) arrays through predict + feasible + slack_frac.
    full_mask = np.concatenate([mask, np.ones((e, 1), bool)], axis=1)
    services = DeviceServices.build(
        np.concatenate([rate, np.full((e, 1), new_rate)], axis=1),
        np.concatenate([np.where(mask, s, 1.0), new_s[:, None]], axis=1),
        second_moment_ms2=np.concatenate([np.where(mask, s2, 1.0), (new_s * new_s * 1.5)[:, None]], axis=1),
        mask=full_mask,
    )
    services = DeviceServices.trusted(
        rate_rps=np.asfortranarray(services.rate_rps),
        service_ms=np.asfortranarray(services.service_ms),
        second_moment_ms2=np.asfortranarray(services.second_moment_ms2),
        swap_ms=services.swap_ms,
        share_frac=services.share_frac,
        mask=full_mask,
        overhead_frac=services.overhead_frac,
        cores=services.cores,
    )
    pred = predict("time-slicing", services)
    full_slo = np.concatenate([slo, np.full((e, 1), new_slo)], axis=1)
    new_mask = np.zeros(k + 1, bool)
    new_mask[k] = True
    cap = np.full(e, 2000.0)
    _, code = feasible(pred, full_slo, used, cap, fe, new_mask=new_mask)
    # Shared wait: the sums of the existing services plus the new one.
    sums = LoadSums.of(rate, s, s2, mask).plus(new_rate, new_s, new_s * new_s * 1.5)
    wait = time_slicing_wait_ms(sums)
    np.testing.assert_array_equal(sums.load, pred.utilization)
    np.testing.assert_array_equal(np.where(full_mask, pred.latency_ms, 0.0)[:, k], new_s + wait)
    v = feasible_shared_wait(sums.load, wait, s, slo, new_s, float(new_slo), used, cap, fe)
    np.testing.assert_array_equal(v.reason, code)
    np.testing.assert_array_equal(v.latency_ms, pred.latency_ms[:, k])
    np.testing.assert_array_equal(v.slack_frac, slack_frac(pred.latency_ms, full_slo, full_mask))
    event(f"reasons {sorted(set(code.tolist()))}")


def test_feasible_shared_wait_at_an_slo_boundary() -> None:
    """Latency exactly at an existing SLO meets it; one ulp lower misses it (the tie check)."""
    rate, s, s2 = np.array([[50.0]]), np.array([[10.0]]), np.array([[100.0]])
    sums = LoadSums.of(rate, s, s2).plus(25.0, np.array([10.0]), np.array([100.0]))
    wait = time_slicing_wait_ms(sums)  # ρ = 0.75, W = 10·0.75/0.25 = 30 ms
    assert float(wait[0]) == pytest.approx(30.0, rel=1e-12)
    at = s[0, 0] + wait[0]
    for slo, want in ((at, ReasonCode.OK), (np.nextafter(at, 0.0), ReasonCode.SLO_VIOLATION_EXISTING)):
        v = feasible_shared_wait(
            sums.load, wait, s, np.array([[slo]]), np.array([10.0]), 100.0, 0.0, INF, 0.0
        )
        assert ReasonCode(int(v.reason[0])) == want
        assert float(v.slack_frac[0]) == float((slo - at) / slo)
    # The same for the new service's own SLO.
    for slo, want in ((at, ReasonCode.OK), (np.nextafter(at, 0.0), ReasonCode.SLO_VIOLATION_NEW)):
        v = feasible_shared_wait(
            sums.load, wait, s, np.array([[INF]]), np.array([10.0]), float(slo), 0.0, INF, 0.0
        )
        assert ReasonCode(int(v.reason[0])) == want


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        ({}, ReasonCode.OK),
        ({"used": 801.0}, ReasonCode.MEMORY),  # > 0.8·1000
        ({"rho": 0.81}, ReasonCode.UTILIZATION),
        ({"fe": 0.9}, ReasonCode.FRONTEND),
        ({"new_slo": 44.0}, ReasonCode.SLO_VIOLATION_NEW),  # new: 20 + 25 = 45 ms
        ({"slo": 54.0}, ReasonCode.SLO_VIOLATION_EXISTING),  # existing: 30 + 25 = 55 ms
        ({"used": 801.0, "new_slo": 44.0}, ReasonCode.MEMORY),  # the first rule that fails wins
    ],
    ids=["ok", "memory", "utilisation", "frontend", "slo-new", "slo-existing", "order"],
)
def test_feasible_shared_wait_reasons(kwargs: dict, want: ReasonCode) -> None:
    a = {"rho": 0.5, "used": 100.0, "fe": 0.1, "new_slo": 100.0, "slo": 100.0} | kwargs
    v = feasible_shared_wait(
        np.array([a["rho"]]),
        np.array([25.0]),
        np.array([[30.0, 0.0]]),
        np.array([[a["slo"], INF]]),
        np.array([20.0]),
        a["new_slo"],
        a["used"],
        1000.0,
        a["fe"],
        Thresholds(),
    )
    assert ReasonCode(int(v.reason[0])) == want
    assert v.latency_ms.tolist() == [45.0]


@pytest.mark.parametrize(
    ("latency", "slo", "mask", "want"),
    [
        ([[45.0, 55.0]], [[100.0, 60.0]], None, 5.0 / 60.0),
        ([[45.0, 55.0]], [[INF, INF]], None, 1.0),  # no SLO anywhere
        ([[45.0, 70.0]], [[100.0, 60.0]], [[True, False]], 0.55),  # masked entry ignored
        ([[INF, 10.0]], [[100.0, 60.0]], None, -INF),  # unbounded latency
        ([[-10.0]], [[100.0]], None, 1.0),  # capped at 1
    ],
    ids=["min", "no-slo", "masked", "unbounded", "cap"],
)
def test_slack_frac(latency: list, slo: list, mask: list | None, want: float) -> None:
    assert float(slack_frac(np.array(latency), np.array(slo), mask)[0]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({}, True),
        ({"rate_rps": -1.0}, False),
        ({"rate_rps": INF}, False),
        ({"service_ms": 0.0}, False),
        ({"service_ms": np.nan}, False),
        ({"second_moment_ms2": 3.99}, False),  # < S² = 4
        ({"second_moment_ms2": 4.0 * (1 - 1e-10)}, True),  # within the rounding slack
        ({"swap_ms": -0.1}, False),
        ({"share_frac": 0.0}, False),
        ({"share_frac": 1.0 + 1e-12}, False),
        ({"host_tail_ms": 2.5}, False),  # > S
        ({"overhead_frac": -0.1}, False),
    ],
    ids=[
        "ok",
        "rate<0",
        "rate-inf",
        "S=0",
        "S-nan",
        "var<0",
        "var-rounding",
        "swap<0",
        "share=0",
        "share>1",
        "tail>S",
        "overhead<0",
    ],
)
def test_valid_services_rules(kwargs: dict, ok: bool) -> None:
    args = {"rate_rps": 10.0, "service_ms": 2.0, "second_moment_ms2": 4.0} | kwargs
    rate, s, m2 = args.pop("rate_rps"), args.pop("service_ms"), args.pop("second_moment_ms2")
    assert bool(valid_services(rate, s, m2, **args)) is ok
    if not ok:  # the validating constructor rejects the same values, naming the field
        field = next(iter(kwargs))
        with pytest.raises(ValueError, match=rf"^DeviceServices\.{field}\[0\] must"):
            DeviceServices.build([rate], [s], second_moment_ms2=[m2], **{k: [v] for k, v in args.items()})


def test_trusted_services_predict_like_validated_ones() -> None:
    built = DeviceServices.build([[10.0, 5.0]], [[20.0, 30.0]], share_frac=[[0.5, 0.25]])
    trusted = DeviceServices.trusted(
        rate_rps=built.rate_rps,
        service_ms=built.service_ms,
        second_moment_ms2=built.second_moment_ms2,
        swap_ms=built.swap_ms,
        share_frac=built.share_frac,
        mask=built.mask,
        overhead_frac=built.overhead_frac,
        cores=built.cores,
    )
    for mode in ("time-slicing", "mps", "mig", "edgetpu", "exclusive", "cpu"):
        a, b = predict(mode, built), predict(mode, trusted)
        np.testing.assert_array_equal(a.latency_ms, b.latency_ms)
        np.testing.assert_array_equal(a.utilization, b.utilization)


# ------------------------------------------------------------------------------------------
# judge: shared-wait route vs general route; whole policies
# ------------------------------------------------------------------------------------------


@st.composite
def clusters(draw: st.DrawFn) -> ClusterState:
    n = draw(st.integers(1, 4))
    nodes: list[NodeView] = []
    for i in range(n):
        accel = draw(st.sampled_from([*GPUS, *GPUS, *GPUS, "edgetpu", "cpu"]))
        sharing = draw(st.sampled_from(["time-slicing"] * 4 + list(SHARING_MODES)))
        nodes.append(
            gpu_node(
                f"n{i}",
                accelerator=accel,
                gpus=1 if accel == "cpu" else draw(st.integers(1, 3)),
                cpu_milli=draw(st.sampled_from([4000, 32_000])),
                sharing=sharing,
            )
        )
    state = ClusterState(nodes, TABLE.lookup, TABLE.device_memory)
    for j in range(draw(st.integers(0, 12))):
        model = draw(st.sampled_from(["small", "large", "small", "odd"]))
        node = draw(st.integers(0, n - 1))
        accel = nodes[node].accelerator or ""
        if TABLE.lookup(accel, model) is None:
            continue
        pod = inference_pod(
            f"r{j}",
            model,
            rate_rps=draw(st.sampled_from([0.0, 10.0, 50.0]) | st.floats(0.0, 120.0)),
            slo_ms=draw(st.sampled_from([10.0, 40.0, 200.0]) | st.floats(2.0, 500.0)),
            gpu_milli=draw(st.sampled_from([0, 100, 250])),
            slo_percentile=draw(st.sampled_from([None] * 5 + [95.0])),
        )
        d = draw(st.integers(0, int(state.device_count[node]) - 1))
        if state.gpu_used_milli[node, d] + pod.milli_per_device > GPU_MILLI_PER_DEVICE:
            continue
        if int(state.svc_mask[node, d].sum()) >= MAX_PER_DEVICE:
            continue
        state.add(Allocation(pod, nodes[node].name, (d,), model=model))
    return state


@st.composite
def new_pods(draw: st.DrawFn) -> PodDemand:
    variants = draw(st.lists(st.sampled_from(["small", "large"]), min_size=1, max_size=2, unique=True))
    return inference_pod(
        "new",
        *variants,
        rate_rps=draw(st.sampled_from([0.0, 25.0]) | st.floats(0.0, 150.0)),
        slo_ms=draw(st.sampled_from([15.0, 50.0]) | st.floats(2.0, 500.0)),
        gpu_milli=draw(st.sampled_from([0, 100, 250, 1000, 2000])),
        slo_percentile=draw(st.sampled_from([None] * 5 + [99.0])),
    )


def assert_same_verdicts(a: pf.DeviceVerdicts, b: pf.DeviceVerdicts) -> None:
    for name in ("reason", "latency_ms", "utilization", "utilization_before", "slack_frac"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=clusters(), pod=new_pods(), data=st.data())
def test_judge_routes_agree_bit_for_bit(state: ClusterState, pod: PodDemand, data: st.DataObject) -> None:
    cand = gather(state, pod, np.arange(state.n_nodes))
    if cand.variants is None:
        return
    pos, dev = np.nonzero(cand.device_ok & cand.variants.usable(0)[:, None])
    if pos.size == 0:
        return
    variant = np.full(cand.m, 0, dtype=np.int64)
    new = pf.new_service(cand, variant)
    model = pf.InterferenceModel()
    with_before = data.draw(st.booleans())
    screen = data.draw(st.booleans())
    fast = pf.judge(cand, new, pos, dev, model, with_before=with_before, screen_memory=screen)
    slow = pf.judge(
        cand, new, pos, dev, model, with_before=with_before, screen_memory=screen, shared_wait=False
    )
    assert_same_verdicts(fast, slow)
    groups = pf._groups(state, np.take(cand.row, pos), model)
    route, _ = pf._shared_wait_route(state, new, pos, np.take(cand.row, pos) * state.n_devices + dev, groups)
    event("shared-wait route taken" if route is not None else "general route only")
    event(f"reasons {sorted(set(fast.reason.tolist()))}")


def _general_only(monkeypatch: pytest.MonkeyPatch) -> None:
    judge = pf.judge

    def general(*args: object, **kwargs: object) -> pf.DeviceVerdicts:
        return judge(*args, **kwargs, shared_wait=False)  # type: ignore[arg-type]

    monkeypatch.setattr(vc, "judge", general)  # the search drivers judge through verdict_cache
    monkeypatch.setattr(common, "judge", general)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    state=clusters(),
    pod=new_pods(),
    policy=st.sampled_from(["qosched", "ibis-pack", "ibis-spread", "ibis-hetero", "knapsack-best-fit"]),
)
def test_policies_decide_the_same_on_either_route(
    state: ClusterState, pod: PodDemand, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cands = np.arange(state.n_nodes)
    fast = make_policy(policy).evaluate(state, pod, cands)
    with monkeypatch.context() as m:
        _general_only(m)
        slow = make_policy(policy).evaluate(state, pod, cands)
    for name in ("reason", "raw_score", "devices", "latency_ms", "variant"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert fast.extras.keys() == slow.extras.keys()
    for name in fast.extras:
        np.testing.assert_array_equal(fast.extras[name], slow.extras[name], err_msg=name)


def test_an_invalid_service_in_the_state_still_raises_naming_the_field() -> None:
    """A rejected profile sends judging the general way, which validates and names the field."""
    state = ClusterState([gpu_node("a")], TABLE.lookup, TABLE.device_memory)
    state.add(Allocation(inference_pod("b", "bad", rate_rps=10.0, slo_ms=50.0), "a", (0,)))
    with pytest.raises(ValueError, match="second_moment_ms2"):
        make_policy("qosched").evaluate(
            state, inference_pod("new", "small", rate_rps=5.0, slo_ms=50.0), np.arange(1)
        )


def test_first_variant_needs_no_merge() -> None:
    """``_first(b)`` is ``_merge(_no_verdicts, b, nodes)`` (what the first variant judged gives)."""
    state = ClusterState(
        [gpu_node("a", gpus=2), gpu_node("b", gpus=2), gpu_node("c")], TABLE.lookup, TABLE.device_memory
    )
    state.add(Allocation(inference_pod("x", "large", rate_rps=90.0, slo_ms=30.0), "a", (0,)))
    state.add(Allocation(inference_pod("y", "large", rate_rps=90.0, slo_ms=30.0), "a", (1,)))
    pod = inference_pod("new", "large", "small", rate_rps=20.0, slo_ms=40.0)
    policy = make_policy("qosched")
    cand = gather(state, pod, np.arange(3))
    nodes = cand.ok & np.array([True, True, False])
    b = policy._choose(cand, 0, nodes, policy.device_order(cand))  # type: ignore[attr-defined]
    assert (b.devices[:, 0] >= 0).tolist() == [False, True, False]  # a is full (ρ > 0.8)
    want = common._merge(common._no_verdicts(3, 1), b, nodes)
    got = common._first(b)
    for name in ("reason", "devices", "latency_ms", "utilization", "utilization_before", "slack_frac"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


# ------------------------------------------------------------------------------------------
# verdict cache: recycled memos
# ------------------------------------------------------------------------------------------


def _cluster(n: int) -> ClusterState:
    state = ClusterState([gpu_node(f"n{i}", gpus=2) for i in range(n)], TABLE.lookup, TABLE.device_memory)
    for i in range(n):
        state.add(
            Allocation(inference_pod(f"s{i}", "small", rate_rps=10.0 * i, slo_ms=30.0), f"n{i}", (i % 2,))
        )
    return state


def test_verdict_cache_recycles_memos_without_changing_verdicts() -> None:
    state = _cluster(6)
    pods = [inference_pod(f"p{r}", "large", rate_rps=float(r), slo_ms=40.0) for r in (10, 60, 90)]
    cache = vc.VerdictCache(max_signatures=1)
    model = pf.InterferenceModel()
    pos, dev = np.nonzero(np.ones((6, 2), bool))
    for pod in pods * 2:  # each new signature evicts the last one's memo, which is reused
        cand = gather(state, pod, np.arange(6))
        new = pf.new_service(cand, np.zeros(6, dtype=np.int64))
        got = cache.judge(cand, new, pos, dev, model)
        assert_same_verdicts(got, pf.judge(cand, new, pos, dev, model))
        assert len(cache._spare) <= vc.VerdictCache._SPARE
    assert cache.misses == 6 * 12
    assert cache.hits == 0
    spare = cache._spare[-1]
    cache.clear()
    cand = gather(state, pods[0], np.arange(6))
    new = pf.new_service(cand, np.zeros(6, dtype=np.int64))
    again = cache.judge(cand, new, pos, dev, model)  # a memo taken from the spares
    assert any(m is spare for per in cache._states.values() for m in per.values())
    assert_same_verdicts(again, pf.judge(cand, new, pos, dev, model))
    warm = cache.judge(cand, new, pos, dev, model)  # answered from the memo
    assert_same_verdicts(warm, again)
    assert cache.hits == 12


def test_verdict_cache_does_not_reuse_a_memo_of_another_size() -> None:
    cache = vc.VerdictCache()
    model = pf.InterferenceModel()
    pod = inference_pod("p", "large", rate_rps=20.0, slo_ms=40.0)
    for n in (3, 5):
        state = _cluster(n)
        cand = gather(state, pod, np.arange(n))
        new = pf.new_service(cand, np.zeros(n, dtype=np.int64))
        pos, dev = np.nonzero(np.ones((n, 2), bool))
        cache.clear()
        assert_same_verdicts(cache.judge(cand, new, pos, dev, model), pf.judge(cand, new, pos, dev, model))
        assert all(
            m.size == state.n_nodes * state.n_devices for per in cache._states.values() for m in per.values()
        )


def test_own_shape_mix_is_built_once_per_shape() -> None:
    a = inference_pod("a", "small", rate_rps=1.0, slo_ms=10.0, gpu_milli=200, cpu_milli=1000)
    b = inference_pod("b", "large", rate_rps=9.0, slo_ms=99.0, gpu_milli=200, cpu_milli=1000)
    c = inference_pod("c", "small", rate_rps=1.0, slo_ms=10.0, gpu_milli=300, cpu_milli=1000)
    own = ShapeMixMemo()
    assert mix_for(a, None, own) is mix_for(b, None, own)  # same shape
    assert mix_for(c, None, own) is not mix_for(a, None, own)
    assert mix_for(a, None, own).shapes == (PodShape(1000, 200, 1),)


def test_own_shape_mixes_belong_to_their_policy_and_stay_bounded() -> None:
    a = inference_pod("a", "small", rate_rps=1.0, slo_ms=10.0, gpu_milli=200, cpu_milli=1000)
    first, second = ShapeMixMemo(), ShapeMixMemo()
    assert mix_for(a, None, first) is not mix_for(a, None, second)  # no module-global memo
    small = ShapeMixMemo(limit=2)
    for milli in (100, 200, 300):
        mix_for(inference_pod("p", "small", rate_rps=1.0, slo_ms=10.0, gpu_milli=milli), None, small)
    assert len(small._mixes) == 2
