"""Tests of the request-level latency simulator against queueing theory, hand cases and bad input.

Convergence tests follow CiwPython/Ciw's practice (tests/test_processor_sharing.py): the mean of
several seeded replications, warm-up dropped, compared with the closed form within a stated
relative tolerance, each at least ~4 standard errors of the replication mean (measured when the
tolerances were set).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.simulator.requests import (
    DeviceSpec,
    ServiceResult,
    ServiceSpec,
    ServiceTime,
    SimConfig,
    lindley_waits,
    lindley_waits_loop,
    mode_for,
    offered_load,
    ps_sojourn_times,
    simulate_device,
    simulate_devices,
)

SEEDS = range(10)


def det(mean_ms: float) -> ServiceTime:
    return ServiceTime.deterministic(mean_ms)


def mean_over_seeds(device: DeviceSpec, n_requests: int) -> np.ndarray:
    """Mean latency per service, averaged over the replications of SEEDS [ms]."""
    config = SimConfig(n_requests=n_requests, warmup_frac=0.1)
    means = [
        [s.mean_latency_ms for s in simulate_device(device, np.random.default_rng(seed), config).services]
        for seed in SEEDS
    ]
    return np.mean(means, axis=0)


# ---------------------------------------------------------------------------------------------
# Kernels: Lindley (vectorised vs loop) and processor sharing (hand cases)


@pytest.mark.parametrize(
    ("arrival", "service", "want"),
    [
        ([0.0, 1.0, 2.0, 10.0], [3.0, 3.0, 1.0, 1.0], [0.0, 2.0, 4.0, 0.0]),
        ([0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [0.0, 2.0, 4.0]),  # batch arrival
        ([5.0], [1.0], [0.0]),
        ([], [], []),
    ],
    ids=["busy-then-idle", "simultaneous", "single", "empty"],
)
def test_lindley_hand_cases(arrival: list[float], service: list[float], want: list[float]) -> None:
    assert lindley_waits(np.array(arrival), np.array(service)).tolist() == want
    assert lindley_waits_loop(np.array(arrival), np.array(service)).tolist() == want


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 50, allow_nan=False), st.floats(0, 50, allow_nan=False)),
        min_size=1,
        max_size=300,
    )
)
def test_lindley_vectorised_equals_loop(pairs: list[tuple[float, float]]) -> None:
    gaps, service = (np.array(x) for x in zip(*pairs, strict=True))
    arrival = np.cumsum(gaps)
    fast, slow = lindley_waits(arrival, service), lindley_waits_loop(arrival, service)
    assert np.all(fast >= 0)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9 * (1 + arrival[-1] + service.sum()))


@pytest.mark.parametrize(
    ("arrival", "size", "want"),
    [
        ([0.0, 1.0], [2.0, 2.0], [3.0, 3.0]),  # alone until 1, halves; first leaves at 3, second at 4
        ([0.0, 0.0], [1.0, 3.0], [2.0, 4.0]),  # both at half speed until 2, then the 2 ms left alone
        ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [3.0, 3.0, 3.0]),
        ([0.0, 5.0], [1.0, 1.0], [1.0, 1.0]),  # no overlap
        # 0-1 job0 alone (3 left); 1-3 two jobs at half speed: job1 done at 3, the zero-size job2
        # leaves as it arrives at 2; job0 has 2 left at 3, alone -> leaves at 5.
        ([0.0, 1.0, 2.0], [4.0, 1.0, 0.0], [5.0, 2.0, 0.0]),
    ],
    ids=["overlap", "simultaneous", "three-equal", "idle-gap", "zero-size"],
)
def test_ps_hand_cases(arrival: list[float], size: list[float], want: list[float]) -> None:
    got = ps_sojourn_times(np.array(arrival), np.array(size)).tolist()
    assert got == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Convergence to closed forms (S = 10 ms unless stated; λ in requests/s, so ρ = λ S / 1000)

S_MS = 10.0
THEORY = [
    # (device, n_requests per replication, expected mean latency per service [ms], rel. tolerance)
    # M/M/1: E[T] = 1/(μ - λ) = S/(1 - ρ)
    (DeviceSpec("exclusive", (ServiceSpec("a", 50, ServiceTime.exponential(S_MS)),)), 50_000, [20.0], 0.03),
    (DeviceSpec("exclusive", (ServiceSpec("a", 80, ServiceTime.exponential(S_MS)),)), 50_000, [50.0], 0.06),
    # M/D/1: E[T] = S + ρ S / (2 (1 - ρ))
    (DeviceSpec("exclusive", (ServiceSpec("a", 50, det(S_MS)),)), 50_000, [15.0], 0.02),
    (DeviceSpec("exclusive", (ServiceSpec("a", 80, det(S_MS)),)), 50_000, [30.0], 0.03),
    # M/G/1 (P-K), gamma and lognormal with E[S²] given: E[T] = S + λ E[S²] / (2 (1 - ρ))
    (
        DeviceSpec("exclusive", (ServiceSpec("a", 60, ServiceTime.from_moments(S_MS, 150.0)),)),
        50_000,
        [21.25],
        0.03,
    ),
    (
        DeviceSpec("exclusive", (ServiceSpec("a", 50, ServiceTime.from_moments(S_MS, 300.0, "lognormal")),)),
        50_000,
        [25.0],
        0.04,
    ),
    # cpu (policies/latency/cpu_node.py): one FCFS server per service, busy servers share c cores.
    # One server: its M/G/1 queue (M/M/1: S/(1 - ρ); M/D/1: S + ρS/(2(1 - ρ))).
    (DeviceSpec("cpu", (ServiceSpec("a", 50, ServiceTime.exponential(S_MS)),)), 30_000, [20.0], 0.03),
    (DeviceSpec("cpu", (ServiceSpec("a", 70, det(S_MS)),)), 30_000, [10.0 + 7.0 / 0.6], 0.03),
    # Three exponential servers on ONE core: the core is busy whenever any request is present and
    # sizes are memoryless, so the number present is M/M/1's: E[T] = S/(1 - ρ), ρ = 3·0.2.
    (
        DeviceSpec("cpu", tuple(ServiceSpec(f"s{i}", 20, ServiceTime.exponential(S_MS)) for i in range(3))),
        30_000,
        [25.0, 25.0, 25.0],
        0.05,
    ),
    # Two servers on two cores never slow each other: each its own M/D/1 (ρ = 0.6 and 0.5).
    (
        DeviceSpec("cpu", (ServiceSpec("a", 60, det(S_MS)), ServiceSpec("b", 50, det(S_MS))), cores=2),
        30_000,
        [10.0 + 6.0 / 0.8, 10.0 + 5.0 / 1.0],
        0.03,
    ),
    # time-slicing: one FCFS M/G/1 over the mixture; S = 5 / 20 ms at 40 / 20 rps: ρ = 0.6,
    # E[S²] = (2/3)·25 + (1/3)·400 = 150, W = 0.06·150 / (2·0.4) = 11.25
    (
        DeviceSpec("time-slicing", (ServiceSpec("a", 40, det(5.0)), ServiceSpec("b", 20, det(20.0)))),
        50_000,
        [16.25, 31.25],
        0.03,
    ),
    # MPS: own M/D/1 queues with S / share = 20 ms; ρ_a = 0.6, ρ_b = 0.4
    (
        DeviceSpec(
            "mps",
            (
                ServiceSpec("a", 30, det(S_MS), share_frac=0.5),
                ServiceSpec("b", 20, det(S_MS), share_frac=0.5),
            ),
        ),
        50_000,
        [20.0 + 0.6 * 20.0 / 0.8, 20.0 + 0.4 * 20.0 / 1.2],
        0.03,
    ),
]


@pytest.mark.parametrize(
    ("device", "n_requests", "want_ms", "rel_tol"),
    THEORY,
    ids=[
        "mm1-rho0.5",
        "mm1-rho0.8",
        "md1-rho0.5",
        "md1-rho0.8",
        "mg1-gamma",
        "mg1-lognormal",
        "cpu-one-server-mm1",
        "cpu-one-server-md1",
        "cpu-three-servers-one-core-mm1",
        "cpu-two-servers-two-cores",
        "time-slicing-pk",
        "mps-own-queues",
    ],
)
def test_mean_latency_converges_to_theory(
    device: DeviceSpec, n_requests: int, want_ms: list[float], rel_tol: float
) -> None:
    got = mean_over_seeds(device, n_requests)
    np.testing.assert_allclose(got, want_ms, rtol=rel_tol)


def test_mm1_percentile_is_exponential() -> None:
    # FCFS M/M/1 sojourn time ~ Exp(μ - λ): p95 = ln(20) / (μ - λ) = ln(20) · 20 ms at ρ = 0.5
    device = DeviceSpec("exclusive", (ServiceSpec("a", 50, ServiceTime.exponential(S_MS)),))
    config = SimConfig(n_requests=50_000, percentile=95.0)
    p95 = np.mean(
        [
            simulate_device(device, np.random.default_rng(s), config).services[0].percentile_latency_ms
            for s in SEEDS
        ]
    )
    assert p95 == pytest.approx(math.log(20.0) * 20.0, rel=0.03)


# Edge TPU profiles of models.md §A (S / O in ms): mobilenet_v2 4.91/10.43, efficientnet_s
# 9.83/17.33, mobilenet_v1 4.55/15.12, ssd_mobilenet_v1 18.03/23.93, inception_v3 62.95/19.39.
EDGETPU_CASES = [
    ([4.91, 9.83], [10.43, 17.33], [20.0, 15.0]),  # ρ = 0.48
    ([4.55, 18.03, 62.95], [15.12, 23.93, 19.39], [10.0, 10.0, 2.0]),  # ρ = 0.60
]


def edgetpu_formula_ms(s_ms: np.ndarray, o_ms: np.ndarray, rate_rps: np.ndarray) -> np.ndarray:
    """models.md §A: S'_i = S_i + (1 - λ_i/λ) O_i, W = λ E[S'²] / (2 (1 - ρ)), E[R_i] = S'_i + W."""
    lam = rate_rps / 1000.0
    total = lam.sum()
    s_eff = s_ms + (1.0 - lam / total) * o_ms
    rho = float(lam @ s_eff)
    wait = total * float((lam / total) @ s_eff**2) / (2.0 * (1.0 - rho))
    return s_eff + wait


def edgetpu_pk_ms(s_ms: np.ndarray, o_ms: np.ndarray, rate_rps: np.ndarray) -> np.ndarray:
    """P-K with the swap as a Bernoulli(p_i = 1 - λ_i/λ) term: E[S'²_i] = S² + 2 S O p + O² p."""
    lam = rate_rps / 1000.0
    total = lam.sum()
    p = 1.0 - lam / total
    s_eff = s_ms + p * o_ms
    rho = float(lam @ s_eff)
    second = s_ms**2 + 2 * s_ms * o_ms * p + o_ms**2 * p
    return s_eff + total * float((lam / total) @ second) / (2.0 * (1.0 - rho))


@pytest.mark.parametrize(
    ("s_ms", "o_ms", "rate_rps"), EDGETPU_CASES, ids=["two-models-rho0.48", "three-models-rho0.6"]
)
def test_edgetpu_swap_against_models_md(s_ms: list[float], o_ms: list[float], rate_rps: list[float]) -> None:
    s, o, lam = np.array(s_ms), np.array(o_ms), np.array(rate_rps)
    services = tuple(ServiceSpec(f"m{i}", lam[i], det(s[i]), swap_ms=o[i]) for i in range(len(s)))
    got = mean_over_seeds(DeviceSpec("edgetpu", services), 50_000)
    formula = edgetpu_formula_ms(s, o, lam)
    # The formula treats the swap as its mean, dropping its variance: it is optimistic, within 10 %.
    assert np.all(got >= formula)
    np.testing.assert_allclose(got, formula, rtol=0.10)
    # With the swap's variance in E[S'²], P-K is close (consecutive swaps are correlated, so not exact).
    np.testing.assert_allclose(got, edgetpu_pk_ms(s, o, lam), rtol=0.04)


def test_edgetpu_single_model_never_swaps_after_the_first() -> None:
    device = DeviceSpec("edgetpu", (ServiceSpec("a", 50, det(S_MS), swap_ms=100.0),))
    result = simulate_device(device, np.random.default_rng(0), SimConfig(n_requests=20_000)).services[0]
    assert result.utilization == pytest.approx(0.5)
    assert result.mean_latency_ms == pytest.approx(15.0, rel=0.03)  # M/D/1, no swap cost


# ---------------------------------------------------------------------------------------------
# Service-time distributions


@pytest.mark.parametrize(
    ("service", "mean_ms", "second_ms2"),
    [
        (ServiceTime.deterministic(4.0), 4.0, 16.0),
        (ServiceTime.exponential(4.0), 4.0, 32.0),
        (ServiceTime.from_moments(4.0, 24.0), 4.0, 24.0),
        (ServiceTime.from_moments(4.0, 40.0, "lognormal"), 4.0, 40.0),
        (ServiceTime.empirical([2.0, 4.0, 6.0]), 4.0, 56.0 / 3.0),
    ],
    ids=["deterministic", "exponential", "gamma", "lognormal", "empirical"],
)
def test_service_time_moments(service: ServiceTime, mean_ms: float, second_ms2: float) -> None:
    assert service.mean_ms == pytest.approx(mean_ms)
    assert service.second_moment_ms2 == pytest.approx(second_ms2)
    x = service.sample(np.random.default_rng(0), 400_000)
    assert x.mean() == pytest.approx(mean_ms, rel=0.01)
    assert np.mean(x * x) == pytest.approx(second_ms2, rel=0.03)
    assert np.all(x >= 0)


def test_from_moments_with_no_variance_is_deterministic() -> None:
    assert ServiceTime.from_moments(5.0, 25.0).family == "deterministic"


# ---------------------------------------------------------------------------------------------
# Determinism, saturation, zero rates, SLOs


def two_service_device(mode: str = "time-slicing") -> DeviceSpec:
    return DeviceSpec(
        mode,  # type: ignore[arg-type]
        (
            ServiceSpec("a", 30, ServiceTime.from_moments(5.0, 40.0), slo_ms=50.0),
            ServiceSpec("b", 10, ServiceTime.exponential(20.0), slo_ms=100.0, slo_percentile=99.0),
        ),
    )


@pytest.mark.parametrize("mode", ["time-slicing", "cpu", "mps"], ids=["fcfs", "ps", "own-queues"])
def test_same_seed_same_result(mode: str) -> None:
    device = two_service_device(mode)
    config = SimConfig(n_requests=5_000)
    first = simulate_device(device, np.random.default_rng(11), config)
    assert first == simulate_device(device, np.random.default_rng(11), config)
    assert first != simulate_device(device, np.random.default_rng(12), config)


@pytest.mark.parametrize(
    "device",
    [
        DeviceSpec("exclusive", (ServiceSpec("a", 120, det(S_MS), slo_ms=1e9),)),  # ρ = 1.2
        DeviceSpec("exclusive", (ServiceSpec("a", 100, det(S_MS), slo_ms=1e9),)),  # ρ = 1 exactly
        DeviceSpec("cpu", (ServiceSpec("a", 80, det(S_MS)), ServiceSpec("b", 40, det(S_MS), slo_ms=1e9))),
        DeviceSpec(
            "edgetpu",
            (ServiceSpec("a", 40, det(S_MS), swap_ms=20), ServiceSpec("b", 40, det(S_MS), slo_ms=1e9)),
        ),
        DeviceSpec("mps", (ServiceSpec("a", 60, det(S_MS), share_frac=0.5, slo_ms=1e9),)),
    ],
    ids=["fcfs-rho1.2", "fcfs-rho1", "ps-rho1.2", "edgetpu-swaps-saturate", "mps-share-saturates"],
)
def test_saturated_device_reports_inf_and_growing_horizon_mean(device: DeviceSpec) -> None:
    short = simulate_device(device, np.random.default_rng(0), SimConfig(n_requests=4_000))
    long = simulate_device(device, np.random.default_rng(0), SimConfig(n_requests=16_000))
    for s, later in zip(short.services, long.services, strict=True):
        assert s.saturated
        assert s.utilization >= 1.0
        assert s.mean_latency_ms == s.percentile_latency_ms == s.slo_latency_ms == s.mean_wait_ms == math.inf
        assert s.slo_met in (None, False)
        assert math.isfinite(s.horizon_mean_latency_ms)
        assert not math.isnan(s.horizon_mean_latency_ms)
        assert later.horizon_mean_latency_ms > s.horizon_mean_latency_ms
    assert not long.all_slo_met


def test_offered_load_of_edgetpu_includes_expected_swaps() -> None:
    device = DeviceSpec(
        "edgetpu",
        (ServiceSpec("a", 30, det(4.0), swap_ms=10.0), ServiceSpec("b", 10, det(8.0), swap_ms=20.0)),
    )
    # λ = 0.04/ms; a swaps with prob 1/4, b with 3/4: ρ = 0.03·(4 + 2.5) + 0.01·(8 + 15) = 0.425
    assert offered_load(device).tolist() == pytest.approx([0.425, 0.425])


@pytest.mark.parametrize(
    ("mode", "want_ms"),
    [("exclusive", 7.0), ("mig", 14.0)],
    ids=["exclusive", "mig-half-slice"],
)
def test_zero_rate_service_on_own_queue(mode: str, want_ms: float) -> None:
    share = 0.5 if mode == "mig" else 1.0
    device = DeviceSpec(mode, (ServiceSpec("idle", 0.0, det(7.0), share_frac=share, slo_ms=10.0),))  # type: ignore[arg-type]
    (r,) = simulate_device(device, np.random.default_rng(0)).services
    assert r.count == 0
    assert not r.saturated
    assert r.mean_latency_ms == r.percentile_latency_ms == pytest.approx(want_ms)
    assert r.slo_met is (want_ms <= 10.0)


@pytest.mark.parametrize(
    ("mode", "want_ms"),
    [
        ("time-slicing", 5.0 + 0.5 * 10.0 / (2 * 0.5)),  # own S + the M/D/1 wait of the others (PASTA)
        ("edgetpu", 5.0 + 3.0 + 0.5 * 10.0 / (2 * 0.5)),  # + the swap: another model is always resident
        # its own server is idle; it shares the one core with the other server half the time:
        # time-averaged stretch 0.5·1 + 0.5·2
        ("cpu", 5.0 * 1.5),
    ],
    ids=["time-slicing", "edgetpu", "cpu"],
)
def test_zero_rate_service_on_shared_server(mode: str, want_ms: float) -> None:
    swap = 3.0 if mode == "edgetpu" else 0.0
    device = DeviceSpec(
        mode,  # type: ignore[arg-type]
        (ServiceSpec("busy", 50, det(S_MS)), ServiceSpec("idle", 0.0, det(5.0), swap_ms=swap)),
    )
    config = SimConfig(n_requests=50_000, probe_requests=20_000)
    got = np.mean(
        [
            simulate_device(device, np.random.default_rng(s), config).services[1].mean_latency_ms
            for s in range(4)
        ]
    )
    assert got == pytest.approx(want_ms, rel=0.04)


def test_device_with_no_traffic() -> None:
    device = DeviceSpec("time-slicing", (ServiceSpec("a", 0.0, det(3.0)), ServiceSpec("b", 0.0, det(4.0))))
    result = simulate_device(device, np.random.default_rng(0))
    assert result.n_requests == 0
    assert [s.mean_latency_ms for s in result.services] == [3.0, 4.0]
    assert simulate_device(DeviceSpec("cpu", ()), np.random.default_rng(0)).services == ()


def test_slo_on_mean_or_percentile() -> None:
    # M/M/1 at ρ = 0.5: mean 20 ms, p99 = ln(100)·20 = 92 ms. A 40 ms target holds for the mean only.
    services = (ServiceSpec("m", 50, ServiceTime.exponential(S_MS), slo_ms=40.0),)
    mean_slo = simulate_device(DeviceSpec("exclusive", services), np.random.default_rng(0)).services[0]
    p99_services = (ServiceSpec("m", 50, ServiceTime.exponential(S_MS), slo_ms=40.0, slo_percentile=99.0),)
    p99_slo = simulate_device(DeviceSpec("exclusive", p99_services), np.random.default_rng(0)).services[0]
    assert mean_slo.slo_met is True
    assert mean_slo.slo_latency_ms == mean_slo.mean_latency_ms
    assert p99_slo.slo_met is False
    assert p99_slo.slo_latency_ms == pytest.approx(92.1, rel=0.08)
    no_slo = (ServiceSpec("m", 50, ServiceTime.exponential(S_MS)),)
    assert (
        simulate_device(DeviceSpec("exclusive", no_slo), np.random.default_rng(0)).services[0].slo_met is None
    )


def test_batched_devices_use_spawned_streams() -> None:
    devices = [two_service_device("time-slicing"), two_service_device("cpu"), two_service_device("mps")]
    config = SimConfig(n_requests=3_000)
    batched = simulate_devices(devices, np.random.default_rng(5), config)
    children = np.random.default_rng(5).spawn(3)
    assert batched == tuple(simulate_device(d, c, config) for d, c in zip(devices, children, strict=True))
    assert all(isinstance(s, ServiceResult) for r in batched for s in r.services)


@pytest.mark.parametrize(
    ("accelerator", "sharing", "want"),
    [
        ("edgetpu", "time-slicing", "edgetpu"),
        ("cpu", "exclusive", "cpu"),
        ("nvidia-a100", "mig", "mig"),
        ("nvidia-t4", "time-slicing", "time-slicing"),
        ("jetson-nano", "exclusive", "exclusive"),
        (None, "mps", "mps"),
    ],
    ids=[
        "edgetpu-ignores-sharing",
        "cpu-is-ps",
        "gpu-mig",
        "gpu-time-slicing",
        "jetson-exclusive",
        "unlabelled",
    ],
)
def test_mode_for_node_labels(accelerator: str | None, sharing: str, want: str) -> None:
    assert mode_for(accelerator, sharing) == want


def test_mode_for_rejects_unknown_sharing() -> None:
    with pytest.raises(ValueError, match="sharing"):
        mode_for("nvidia-t4", "spatial")


# ---------------------------------------------------------------------------------------------
# Bad input: a clear ValueError naming the field


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ServiceSpec("a", -1.0, det(1.0)), "rate_rps"),
        (lambda: ServiceSpec("a", math.nan, det(1.0)), "rate_rps"),
        (lambda: ServiceSpec("a", 1.0, det(1.0), share_frac=0.0), "share_frac"),
        (lambda: ServiceSpec("a", 1.0, det(1.0), share_frac=1.5), "share_frac"),
        (lambda: ServiceSpec("a", 1.0, det(1.0), swap_ms=-2.0), "swap_ms"),
        (lambda: ServiceSpec("a", 1.0, det(1.0), slo_ms=0.0), "slo_ms"),
        (lambda: ServiceSpec("a", 1.0, det(1.0), slo_percentile=99.99), "slo_percentile"),
        (lambda: ServiceTime.deterministic(0.0), "mean_ms"),
        (lambda: ServiceTime.exponential(math.inf), "mean_ms"),
        (lambda: ServiceTime.from_moments(4.0, 15.0), "second_moment_ms2"),
        (lambda: ServiceTime.empirical([]), "samples_ms"),
        (lambda: ServiceTime.empirical([1.0, -1.0]), "samples_ms"),
        (lambda: DeviceSpec("gpu", ()), "mode"),  # type: ignore[arg-type]
        (
            lambda: DeviceSpec("exclusive", (ServiceSpec("a", 1, det(1)), ServiceSpec("b", 1, det(1)))),
            "one service",
        ),
        (lambda: DeviceSpec("mps", (ServiceSpec("a", 1, det(1)), ServiceSpec("a", 1, det(1)))), "unique"),
        (lambda: DeviceSpec("cpu", (ServiceSpec("a", 1, det(1), swap_ms=1.0),)), "swap_ms"),
        (lambda: DeviceSpec("time-slicing", (ServiceSpec("a", 1, det(1), share_frac=0.5),)), "share_frac"),
        (lambda: SimConfig(n_requests=0), "n_requests"),
        (lambda: SimConfig(warmup_frac=1.0), "warmup_frac"),
        (lambda: SimConfig(percentile=101.0), "percentile"),
    ],
    ids=[
        "negative-rate",
        "nan-rate",
        "zero-share",
        "share-above-1",
        "negative-swap",
        "zero-slo",
        "slo-percentile-range",
        "zero-mean",
        "inf-mean",
        "second-moment-below-mean-squared",
        "empty-samples",
        "negative-sample",
        "unknown-mode",
        "exclusive-two-services",
        "duplicate-names",
        "swap-outside-edgetpu",
        "share-outside-mps",
        "no-requests",
        "all-warmup",
        "percentile-range",
    ],
)
def test_bad_input_is_a_clear_error(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
