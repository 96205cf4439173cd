"""Sharing-mode models of qosched.policies.latency.sharing: hand-computed rows, shapes, properties."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.latency import sharing, tail
from qosched.policies.latency.sharing import (
    SHARING_MODELS,
    DeviceServices,
    ModelParams,
    predict,
    predict_modes,
    resolve_sharing,
)

INF = math.inf
MPS_DEFAULT = ModelParams().mps_contention_frac

# Each row: mode, DeviceServices.build kwargs, ModelParams kwargs, expected latency (ms), device ρ.
ROWS = [
    pytest.param(
        "time-slicing",
        dict(rate_rps=[10, 10], service_ms=[20, 30]),
        {},
        [45.0, 55.0],
        0.5,
        # §A mixture: E[S] = 25, ρ = 0.5, W = 25·0.5/0.5 = 25
        id="time-slicing-mixture",
    ),
    pytest.param(
        "time-slicing",
        dict(rate_rps=[10, 10], service_ms=[20, 30]),
        dict(time_slicing="ps"),
        [40.0, 60.0],
        0.5,
        # per-class PS: S/(1 − 0.5)
        id="time-slicing-ps",
    ),
    pytest.param(
        "time-slicing",
        dict(rate_rps=[10, 10], service_ms=[20, 30]),
        dict(colocation_overhead_frac=0.1),
        [22 + 27.5 * 0.55 / 0.45, 33 + 27.5 * 0.55 / 0.45],
        0.55,
        # S·1.1 = (22, 33), ρ = 0.55, E[S] = 27.5, W = 27.5·0.55/0.45 = 33.61
        id="time-slicing-overhead",
    ),
    pytest.param(
        "time-slicing",
        dict(rate_rps=[25], service_ms=[20]),
        {},
        [30.0],
        0.5,
        # one model alone: M/D/1 = 20 + 0.5·20/(2·0.5)
        id="time-slicing-alone-md1",
    ),
    pytest.param(
        "time-slicing",
        dict(rate_rps=[25], service_ms=[20], second_moment_ms2=[800]),
        {},
        [40.0],
        0.5,
        # alone, exponential-like E[S²] = 800: 20 + 0.025·800/(2·0.5) = 40
        id="time-slicing-alone-mg1",
    ),
    pytest.param(
        "time-slicing",
        dict(rate_rps=[25, 0], service_ms=[20, 30]),
        {},
        [30.0, 40.0],
        0.5,
        # the idle co-tenant (rate 0) does not interfere; its requests would wait W = 10 too
        id="time-slicing-idle-cotenant",
    ),
    pytest.param(
        "edgetpu",
        dict(rate_rps=[10, 10], service_ms=[20, 30], swap_ms=[10, 10]),
        {},
        [48.75, 58.75],
        0.6,
        # default Bernoulli moment: E[S'²] = (650 + 1250)/2 = 950, W = 0.02·950/0.8 = 23.75
        id="edgetpu-bernoulli",
    ),
    pytest.param(
        "edgetpu",
        dict(rate_rps=[10, 10], service_ms=[20, 30], swap_ms=[10, 10]),
        dict(swap_moment="paper"),
        [48.125, 58.125],
        0.6,
        # §A exactly: E[S'²] = (25² + 35²)/2 = 925, W = 23.125
        id="edgetpu-paper",
    ),
    pytest.param(
        "edgetpu",
        dict(rate_rps=[10, 10], service_ms=[20, 30], swap_ms=[10, 10]),
        dict(swap_moment="paper", swap_prob_scale=0.0),
        [20 + 0.02 * 650 / 1.0, 30 + 0.02 * 650 / 1.0],
        0.5,
        # no swaps: S' = S, ρ = 0.5, E[S²] = (400 + 900)/2 = 650, W = 0.02·650/(2·0.5) = 13
        id="edgetpu-no-swap",
    ),
    pytest.param(
        "mps",
        dict(rate_rps=[10, 10], service_ms=[10, 10], share_frac=[0.5, 0.5]),
        {},
        [22 + 0.01 * 484 / 1.56] * 2,
        0.22,
        # stretch (1 + 0.1·1)/0.5 = 2.2 → S = 22, ρᵢ = 0.22, W = 0.01·484/(2·0.78) = 3.103;
        # device ρ = 0.5·0.22 + 0.5·0.22
        id="mps-two-halves",
    ),
    pytest.param(
        "mps",
        dict(rate_rps=[10, 0], service_ms=[10, 10], share_frac=[0.5, 0.5]),
        {},
        [20 + 0.01 * 400 / 1.6, 22.0],
        0.1,
        # the other is idle: no contention for the active one, S = 10/0.5 = 20, ρ = 0.2,
        # W = 0.01·400/1.6 = 2.5; a request of the idle one would share with 1 active: 10·1.1/0.5 = 22
        id="mps-idle-cotenant",
    ),
    pytest.param(
        "mig",
        dict(rate_rps=[10, 10], service_ms=[10, 10], share_frac=[0.5, 0.5]),
        {},
        [70 / 3 + 0.01 * (70 / 3) ** 2 / (2 * (1 - 0.7 / 3))] * 2,
        0.2,
        # 0.5 → floor(3.5) = 3 of 7 slices: S = 10·7/3 = 23.33, ρ = 0.2333, W = 3.551;
        # device ρ = 2·(3/7)·0.2333 = 0.2
        id="mig-three-sevenths",
    ),
    pytest.param(
        "mig",
        dict(rate_rps=[1], service_ms=[10], share_frac=[0.1]),
        {},
        [70 + 0.001 * 4900 / (2 * 0.93)],
        0.01,
        # 0.1 → floor(0.7) = 0 → at least one slice: S = 70, ρ = 0.07, W = 0.001·4900/(2·0.93)
        id="mig-min-one-slice",
    ),
    pytest.param(
        "exclusive",
        dict(rate_rps=[25], service_ms=[20]),
        {},
        [30.0],
        0.5,
        id="exclusive-md1",
    ),
    pytest.param(
        "exclusive",
        dict(rate_rps=[25, 1], service_ms=[20, 10]),
        {},
        [INF, INF],
        INF,
        # two services on an exclusive device violate the mode
        id="exclusive-two-services",
    ),
    pytest.param(
        "cpu",
        dict(rate_rps=[10, 10], service_ms=[20, 30]),
        {},
        # one core, two FCFS servers sharing it: σ₁ = 1 + b₂, σ₂ = 1 + b₁, bᵢ = λᵢSᵢσᵢ
        # → σ₁ = 1.3/0.94, σ₂ = 1 + 0.2σ₁; then M/D/1 with service σᵢSᵢ: σS + λσ²S²/(2(1 − λσS))
        [
            20 * (1.3 / 0.94) + 0.01 * (1.3 / 0.94) ** 2 * 400 / (2 * (1 - 0.2 * 1.3 / 0.94)),
            30 * (1 + 0.26 / 0.94)
            + 0.01 * (1 + 0.26 / 0.94) ** 2 * 900 / (2 * (1 - 0.3 * (1 + 0.26 / 0.94))),
        ],
        0.5,
        id="cpu-one-core",
    ),
    pytest.param(
        "cpu",
        dict(rate_rps=[10, 10], service_ms=[20, 30], cores=2),
        {},
        # two servers on two cores never slow each other: each its own M/D/1
        [20 + 0.01 * 400 / (2 * 0.8), 30 + 0.01 * 900 / (2 * 0.7)],
        0.25,
        id="cpu-two-cores",
    ),
    pytest.param(
        "cpu",
        dict(rate_rps=[50], service_ms=[20], cores=2),
        {},
        # one single-threaded server at λS = 1 is saturated, however many cores the node has
        [math.inf],
        0.5,
        id="cpu-one-server-cannot-use-two-cores",
    ),
    pytest.param(
        "time-slicing",
        dict(rate_rps=[30, 20], service_ms=[20, 30]),
        {},
        [INF, INF],
        1.2,
        id="overload",
    ),
]


@pytest.mark.parametrize(("mode", "build", "params", "want_ms", "want_rho"), ROWS)
def test_modes_table(mode: str, build: dict, params: dict, want_ms: list[float], want_rho: float) -> None:
    pred = predict(mode, DeviceServices.build(**build), ModelParams(**params))
    np.testing.assert_allclose(pred.latency_ms, want_ms, rtol=1e-9)
    assert float(pred.utilization) == pytest.approx(want_rho, rel=1e-9)
    assert not np.isnan(pred.latency_ms).any()
    np.testing.assert_allclose(pred.latency_ms, pred.service_ms + pred.wait_ms, rtol=1e-12)


def test_every_registered_mode_has_a_row() -> None:
    assert {p.values[0] for p in ROWS} == set(SHARING_MODELS)


def test_masked_padding_is_zero_and_ignored() -> None:
    # Padding entries hold garbage (service 0, negative rate): masked, they neither fail nor interfere.
    ds = DeviceServices.build(
        [[10.0, -5.0, 0.0]], [[20.0, 0.0, 7.0]], mask=[[True, False, False]], share_frac=[[1.0, 0.0, 1.0]]
    )
    for mode in SHARING_MODELS:
        pred = predict(mode, ds)
        assert (pred.latency_ms[0, 1:] == 0).all(), mode
        assert (pred.service_utilization[0, 1:] == 0).all(), mode
        # one service alone at 10 rps of 20 ms: M/D/1 (on a CPU too: one FCFS server)
        expect = 20 + 0.2 * 20 / (2 * 0.8)
        assert pred.latency_ms[0, 0] == pytest.approx(expect), mode


def test_batched_equals_per_device_loop() -> None:
    rng = np.random.default_rng(7)
    shape = (6, 3, 4)  # nodes, devices, services
    ds = DeviceServices.build(
        rng.uniform(0, 15, shape),
        rng.uniform(1, 40, shape),
        swap_ms=rng.uniform(0, 20, shape),
        share_frac=rng.uniform(0.1, 1, shape),
        mask=rng.random(shape) < 0.7,
    )
    for mode in SHARING_MODELS:
        batched = predict(mode, ds)
        for n in range(shape[0]):
            for d in range(shape[1]):
                m = ds.mask[n, d]
                one = (
                    predict(
                        mode,
                        DeviceServices.build(
                            ds.rate_rps[n, d][m],
                            ds.service_ms[n, d][m],
                            swap_ms=ds.swap_ms[n, d][m],
                            share_frac=ds.share_frac[n, d][m],
                        ),
                    )
                    if m.any()
                    else None
                )
                if one is not None:
                    np.testing.assert_allclose(batched.latency_ms[n, d][m], one.latency_ms, rtol=1e-12)
                    assert float(batched.utilization[n, d]) == pytest.approx(
                        float(one.utilization), rel=1e-12
                    )


def test_predict_modes_matches_predict() -> None:
    ds = DeviceServices.build([[10, 10], [10, 10], [25, 0]], [20, 30], swap_ms=10)
    modes = ("time-slicing", "edgetpu", "cpu")
    mixed = predict_modes(modes, [0, 1, 2], ds)
    for i, mode in enumerate(modes):
        single = predict(mode, DeviceServices.build(ds.rate_rps[i], ds.service_ms[i], swap_ms=10))
        np.testing.assert_allclose(mixed.latency_ms[i], single.latency_ms)
        assert mixed.utilization[i] == pytest.approx(float(single.utilization))
    with pytest.raises(ValueError, match="mode_index"):
        predict_modes(modes, [0, 1, 3], ds)


@pytest.mark.parametrize(
    ("accelerator", "label", "want"),
    [
        ("edgetpu", "time-slicing", "edgetpu"),  # an edge TPU is an edge TPU, whatever the label
        ("edgetpu", "mps", "edgetpu"),
        ("cpu", "time-slicing", "cpu"),
        ("nvidia-t4", "mps", "mps"),
        ("nvidia-a100", "mig", "mig"),
        (None, "exclusive", "exclusive"),
    ],
    ids=["edgetpu", "edgetpu-mps-label", "cpu", "t4-mps", "a100-mig", "no-accelerator"],
)
def test_resolve_sharing(accelerator: str | None, label: str, want: str) -> None:
    assert resolve_sharing(accelerator, label) == want


def test_unknown_mode_lists_the_modes() -> None:
    with pytest.raises(ValueError, match="known modes: time-slicing, edgetpu, mps, mig, exclusive, cpu"):
        predict("round-robin", DeviceServices.build([1.0], [1.0]))
    with pytest.raises(ValueError, match="unknown sharing mode"):
        resolve_sharing("nvidia-t4", "bogus")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(rate_rps=[-1.0], service_ms=[1.0]), r"rate_rps\[0\] must be finite"),
        (dict(rate_rps=[1.0, float("nan")], service_ms=[1.0, 1.0]), r"rate_rps\[1\]"),
        (dict(rate_rps=[1.0], service_ms=[0.0]), r"service_ms\[0\] must be finite and > 0"),
        (dict(rate_rps=[1.0], service_ms=[10.0], second_moment_ms2=[50.0]), "second_moment_ms2"),
        (dict(rate_rps=[1.0], service_ms=[10.0], share_frac=[0.0]), r"share_frac\[0\] must be in \(0, 1\]"),
        (dict(rate_rps=[1.0], service_ms=[10.0], share_frac=[1.5]), "share_frac"),
        (dict(rate_rps=[1.0], service_ms=[10.0], host_tail_ms=[11.0]), "host_tail_ms"),
        (dict(rate_rps=[1.0], service_ms=[10.0], cores=0), "cores"),
        (dict(rate_rps=[1.0, 2.0], service_ms=[10.0, 1.0, 3.0]), "do not broadcast"),
    ],
    ids=[
        "negative-rate",
        "nan-rate",
        "zero-service",
        "negative-variance",
        "zero-share",
        "share-over-1",
        "tail-over-service",
        "zero-cores",
        "shape-mismatch",
    ],
)
def test_device_services_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeviceServices.build(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(colocation_overhead_frac=-0.1),
        dict(swap_prob_scale=float("nan")),
        dict(mps_contention_frac=11.0),
        dict(swap_moment="exact"),
        dict(time_slicing="fair"),
        dict(mig_slices_per_gpu=0),
        dict(mig_slices_per_gpu=7.0),
    ],
    ids=[
        "negative-overhead",
        "nan-scale",
        "huge-contention",
        "bad-moment",
        "bad-time-slicing",
        "zero-slices",
        "float-slices",
    ],
)
def test_model_params_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="ModelParams"):
        ModelParams(**kwargs)


def test_doctests() -> None:
    for module in (sharing, tail):
        result = doctest.testmod(module)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__


# --------------------------------------------------------------------------------------------
# properties, every mode
# --------------------------------------------------------------------------------------------
@st.composite
def device_services(draw: st.DrawFn) -> tuple[DeviceServices, int]:
    k = draw(st.integers(1, 5))
    floats = lambda lo, hi: st.lists(st.floats(lo, hi, allow_nan=False), min_size=k, max_size=k)  # noqa: E731
    service = np.array(draw(floats(0.05, 200.0)))
    scv = np.array(draw(floats(0.0, 1.0)))  # ≤ 1: see test_time_slicing_monotone_in_a_rate
    ds = DeviceServices.build(
        np.array(draw(floats(0.0, 300.0))),
        service,
        second_moment_ms2=service**2 * (1 + scv),
        swap_ms=np.array(draw(floats(0.0, 50.0))),
        share_frac=np.array(draw(floats(0.01, 1.0))),
        mask=np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k))),
        host_tail_ms=service * np.array(draw(floats(0.0, 1.0))),
        cores=draw(st.integers(1, 8)),
    )
    return ds, draw(st.integers(0, k - 1))


@settings(max_examples=150, deadline=None)
@given(case=device_services(), scale=st.floats(1.0, 4.0), pct=st.floats(50.0, 99.9))
def test_properties_every_mode(case: tuple[DeviceServices, int], scale: float, pct: float) -> None:
    ds, _ = case
    scaled = DeviceServices.build(
        ds.rate_rps * scale,
        ds.service_ms,
        second_moment_ms2=ds.second_moment_ms2,
        swap_ms=ds.swap_ms,
        share_frac=ds.share_frac,
        mask=ds.mask,
        host_tail_ms=ds.host_tail_ms,
        cores=ds.cores,
    )
    v = ds.mask
    for mode in SHARING_MODELS:
        for params in (ModelParams(), ModelParams(time_slicing="ps", swap_moment="paper")):
            pred, more = predict(mode, ds, params), predict(mode, scaled, params)
            for arr in (pred.latency_ms, pred.wait_ms, pred.utilization, pred.service_utilization):
                assert not np.isnan(arr).any(), mode
            assert (pred.latency_ms[~v] == 0).all()
            assert (pred.latency_ms[v] >= ds.service_ms[v] * (1 - 1e-12)).all(), mode  # ≥ solo service time
            # Scaling every rate by ≥ 1 (same mix) never lowers a latency.
            assert (more.latency_ms[v] >= pred.latency_ms[v] * (1 - 1e-9)).all(), mode
            p_lat = tail.percentile_latency_ms(pred, pct)
            assert not np.isnan(p_lat).any()
            assert (p_lat[v] >= pred.service_ms[v] * (1 - 1e-12)).all()


@settings(max_examples=150, deadline=None)
@given(case=device_services(), bump=st.floats(0.0, 100.0))
def test_monotone_in_a_single_rate(case: tuple[DeviceServices, int], bump: float) -> None:
    """Raising one service's rate never lowers any latency — except in the edge TPU model, where
    more requests of one model mean fewer swaps for it (real physics), and in §A's time slicing
    (documented counterexample in test_queueing); per-class PS time slicing is monotone."""
    ds, j = case
    rate = ds.rate_rps.copy()
    rate[j] += bump
    bumped = DeviceServices.build(
        rate,
        ds.service_ms,
        second_moment_ms2=ds.second_moment_ms2,
        swap_ms=ds.swap_ms,
        share_frac=ds.share_frac,
        mask=ds.mask,
        host_tail_ms=ds.host_tail_ms,
        cores=ds.cores,
    )
    params = ModelParams(time_slicing="ps")
    for mode in ("time-slicing", "mps", "mig", "exclusive", "cpu"):
        before, after = predict(mode, ds, params).latency_ms, predict(mode, bumped, params).latency_ms
        assert (after[ds.mask] >= before[ds.mask] * (1 - 1e-9)).all(), mode
