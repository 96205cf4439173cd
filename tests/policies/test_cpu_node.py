"""The CPU node's service discipline (policies/latency/cpu_node.py): one definition, the model and
the request simulator on it, against closed forms and against each other (issue 18)."""

from __future__ import annotations

from random import Random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.policies.latency.cpu_node import (
    CpuNode,
    _evaluate,
    _lower_weights,
    _mean_field_slowdown,
    cpu_cores,
    cpu_node_queue,
    server_speed,
)
from qosched.policies.latency.queueing import md1_latency_ms, processor_sharing_latency_ms
from qosched.policies.latency.sharing import DeviceServices, predict
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.simulator.latency_checks import check_device
from qosched.policies.simulator.requests import (
    DeviceSpec,
    ServiceSpec,
    ServiceTime,
    SharedCoresQueue,
    SimConfig,
    _shared_cores_run,
    lindley_waits,
    offered_load,
    ps_sojourn_times,
    shared_cores_sojourn_times,
    simulate_device,
)
from qosched.policies.state import ClusterState
from qosched.policies.types import Allocation, NodeView, PodDemand
from qosched.profiles.store import bundled_profiles

# ------------------------------------------------------------------------------- the discipline


@pytest.mark.parametrize(
    ("busy", "cores", "want"),
    [(0, 2, 1.0), (1, 2, 1.0), (2, 2, 1.0), (3, 2, 2 / 3), (4, 2, 0.5), (8, 8, 1.0), (16, 8, 0.5)],
    ids=["idle", "one", "as-many-as-cores", "three-on-two", "four-on-two", "eight-on-eight", "16-on-8"],
)
def test_server_speed_is_min_one_c_over_b(busy: int, cores: int, want: float) -> None:
    assert float(server_speed(busy, cores)) == pytest.approx(want)
    assert CpuNode(cores).speeds(busy)[busy] == pytest.approx(want)


@pytest.mark.parametrize(
    ("cpu_milli", "cores"), [(8000, 8), (2500, 2), (999, 1), (0, 1)], ids=["8", "2.5", "<1", "0"]
)
def test_cpu_cores_whole_cores_at_least_one(cpu_milli: int, cores: int) -> None:
    assert int(cpu_cores(cpu_milli)) == cores
    assert CpuNode.from_cpu_milli(cpu_milli).cores == cores


@pytest.mark.parametrize("cores", [0, -1, 1.5, True], ids=["zero", "negative", "fraction", "bool"])
def test_cpu_node_rejects_bad_cores(cores: object) -> None:
    with pytest.raises(ValueError, match="cores must be an integer >= 1"):
        CpuNode(cores)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the exact kernel


@pytest.mark.parametrize(
    ("arrival", "size", "server", "cores", "want"),
    [
        ([0, 1], [2, 2], [0, 1], 1, [3, 3]),  # two servers on one core: PS from t = 1
        ([0, 1], [2, 2], [0, 1], 2, [2, 2]),  # a core each
        ([0, 1], [2, 2], [0, 0], 2, [2, 3]),  # one server: FCFS, never a second core
        # three servers on two cores, all at 0: each at 2/3 until the first leaves at 1.5·...
        # sizes 1, 2, 3: first leaves at 1.5 (work 1 at 2/3); then two at full speed:
        # second has 1 left → 2.5, third has 2 left → 3.5
        ([0, 0, 0], [1, 2, 3], [0, 1, 2], 2, [1.5, 2.5, 3.5]),
    ],
    ids=["ps-one-core", "two-cores", "fcfs-one-server", "three-on-two"],
)
def test_shared_cores_hand_cases(
    arrival: list[float], size: list[float], server: list[int], cores: int, want: list[float]
) -> None:
    got = shared_cores_sojourn_times(np.array(arrival, float), np.array(size, float), np.array(server), cores)
    assert got.tolist() == pytest.approx(want, abs=1e-12)


_gaps = st.lists(st.tuples(st.floats(0, 5), st.floats(0.01, 5), st.integers(0, 3)), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(_gaps)
def test_one_request_per_server_on_one_core_is_egalitarian_ps(rows: list[tuple[float, float, int]]) -> None:
    arrival = np.cumsum([r[0] for r in rows])
    size = np.array([r[1] for r in rows])
    got = shared_cores_sojourn_times(arrival, size, np.arange(len(rows)), 1)
    np.testing.assert_allclose(got, ps_sojourn_times(arrival, size), rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(_gaps, st.integers(1, 4))
def test_one_server_is_its_fcfs_queue_whatever_the_cores(
    rows: list[tuple[float, float, int]], cores: int
) -> None:
    arrival = np.cumsum([r[0] for r in rows])
    size = np.array([r[1] for r in rows])
    got = shared_cores_sojourn_times(arrival, size, np.zeros(len(rows), dtype=int), cores)
    np.testing.assert_allclose(got, lindley_waits(arrival, size) + size, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(_gaps, st.integers(1, 4))
def test_never_faster_than_alone_and_as_many_cores_as_servers_is_independent(
    rows: list[tuple[float, float, int]], cores: int
) -> None:
    arrival = np.cumsum([r[0] for r in rows])
    size = np.array([r[1] for r in rows])
    server = np.array([r[2] for r in rows])
    got = shared_cores_sojourn_times(arrival, size, server, cores)
    assert (got >= size - 1e-9).all()
    wide = shared_cores_sojourn_times(arrival, size, server, 4)  # 4 cores, at most 4 servers
    for j in np.unique(server):
        on = server == j
        np.testing.assert_allclose(wide[on], lindley_waits(arrival[on], size[on]) + size[on], atol=1e-9)


def test_per_request_servers_on_c_cores_is_mmc() -> None:
    # Every request its own server, exponential sizes: the number present is M/M/c's, so the
    # mean is the limited-PS formula S(1 + C(c, a)/(c − a)) (the model qosched used before).
    rng = np.random.default_rng(7)
    n = 150_000
    arrival = np.cumsum(rng.exponential(1 / 0.14, n))  # λ = 140/s, S = 10 ms: a = 1.4, c = 2
    got = shared_cores_sojourn_times(arrival, rng.exponential(10.0, n), np.arange(n), 2)
    want = float(processor_sharing_latency_ms([140.0], [10.0], cores=2)[0])
    assert float(got[n // 10 :].mean()) == pytest.approx(want, rel=0.03)


# ------------------------------------------------------- closed forms (the validation table)

# (services (rate rps, mean ms, family), cores, want mean per service [ms] or None = the model,
#  relative tolerance). Means over 4 seeded replications of 40,000 requests.
_DET, _EXP = "det", "exp"
CLOSED = [
    # ≤ c servers: each its own M/D/1 (exact)
    ([(60, 10.0, _DET), (50, 10.0, _DET)], 2, [10 + 6 / 0.8, 10 + 5 / 1.0], 0.03),
    ([(70, 10.0, _DET)] * 4, 4, [10 + 7 / 0.6] * 4, 0.04),
    # one core, exponential: work-conserving and memoryless → M/M/1 S/(1 − ρ), ρ = 0.6
    ([(20, 10.0, _EXP)] * 3, 1, [25.0] * 3, 0.05),
    # one core, two exponential servers at different loads: the mean over all requests is
    # M/M/1's (checked below per request); per class the model's mean field
    ([(30, 10.0, _EXP), (20, 10.0, _EXP)], 1, None, 0.06),
    # crowded multi-core (the mean field): 4 servers on 2 cores, a = 1.2; 6 on 2, a = 1.2
    ([(19, 15.8, _DET)] * 4, 2, None, 0.04),
    ([(12.7, 15.8, _DET)] * 6, 2, None, 0.04),
    # 12 mixed services on 8 cores, node at 0.55
    ([(4, 111.5, _DET), (8, 47.3, _DET), (20, 22.2, _DET)] * 4, 8, None, 0.05),
]


def _device(services: list[tuple[float, float, str]], cores: int) -> DeviceSpec:
    def time(mean: float, family: str) -> ServiceTime:
        return ServiceTime.deterministic(mean) if family == _DET else ServiceTime.exponential(mean)

    return DeviceSpec(
        "cpu", tuple(ServiceSpec(f"s{i}", r, time(m, f)) for i, (r, m, f) in enumerate(services)), cores=cores
    )


def _simulated_means(device: DeviceSpec, n: int = 40_000, seeds: int = 4) -> np.ndarray:
    cfg = SimConfig(n_requests=n)
    runs = [simulate_device(device, np.random.default_rng(s), cfg) for s in range(seeds)]
    return np.mean([[s.mean_latency_ms for s in r.services] for r in runs], axis=0)


def _model_means(services: list[tuple[float, float, str]], cores: int) -> np.ndarray:
    rate = [r for r, _, _ in services]
    mean = [m for _, m, _ in services]
    second = [m * m * (2.0 if f == _EXP else 1.0) for _, m, f in services]
    return cpu_node_queue(rate, mean, second, cores=cores).latency_ms


@pytest.mark.parametrize(
    ("services", "cores", "want_ms", "rel_tol"),
    CLOSED,
    ids=[
        "two-on-two-md1",
        "four-on-four-md1",
        "three-on-one-mm1",
        "two-unequal-on-one",
        "four-on-two",
        "six-on-two",
        "twelve-on-eight",
    ],
)
def test_simulator_and_model_against_closed_forms(
    services: list[tuple[float, float, str]], cores: int, want_ms: list[float] | None, rel_tol: float
) -> None:
    simulated = _simulated_means(_device(services, cores))
    model = _model_means(services, cores)
    if want_ms is not None:  # exact closed form: both sides must reproduce it
        np.testing.assert_allclose(simulated, want_ms, rtol=rel_tol)
        np.testing.assert_allclose(model, want_ms, rtol=1e-9)
    else:  # model (mean field) against the exact simulation
        assert np.isfinite(model).all()
        np.testing.assert_allclose(model, simulated, rtol=rel_tol)


def test_model_is_exact_md1_with_no_more_services_than_cores() -> None:
    got = cpu_node_queue([10.0, 20.0, 5.0], [40.0, 20.0, 100.0], cores=3).latency_ms
    np.testing.assert_allclose(got, md1_latency_ms([10.0, 20.0, 5.0], [40.0, 20.0, 100.0]), rtol=1e-12)


# ------------------------------------------------------------------------------- saturation


@pytest.mark.parametrize(
    ("services", "cores", "saturated"),
    [
        ([(50, 20.0, _DET)], 8, True),  # one server at λS = 1: a second core does not help
        ([(45, 20.0, _DET)], 8, False),
        ([(45, 20.0, _DET)] * 3, 2, True),  # node at 2.7 cores of work on 2
        ([(45, 20.0, _DET)] * 2, 2, False),
    ],
    ids=["one-server-full", "one-server-below", "node-full", "node-below"],
)
def test_model_and_simulator_agree_on_saturation(
    services: list[tuple[float, float, str]], cores: int, saturated: bool
) -> None:
    device = _device(services, cores)
    assert bool((offered_load(device) >= 1).any()) is saturated
    result = simulate_device(device, np.random.default_rng(0), SimConfig(n_requests=2000))
    assert all(s.saturated is saturated for s in result.services)
    assert bool(np.isinf(_model_means(services, cores)).all()) is saturated


# ------------------------------------------- model vs simulator on CPU nodes of a replay state

LOOKUP, DEVICE_MEMORY = lookup_from_profiles(bundled_profiles())


def _cpu_state(pods: list[tuple[str, float]], cpu_milli: int) -> ClusterState:
    node = NodeView(name="cpu-0", accelerator="cpu", device_count=1, cpu_milli=cpu_milli, memory_mib=65536)
    state = ClusterState([node], LOOKUP, DEVICE_MEMORY)
    for i, (model, rate) in enumerate(pods):
        pod = PodDemand(uid=f"p{i}", name=f"p{i}", variants=(model,), slo_ms=1000.0, rate_rps=rate)
        state.add(Allocation(pod=pod, node="cpu-0", devices=(0,)))
    return state


@pytest.mark.parametrize(
    ("pods", "cpu_milli", "rel_tol"),
    [
        ([("resnet50", 5.0), ("resnet18", 10.0)], 8000, 0.04),  # 2 servers on 8 cores: M/D/1 each
        ([("resnet50", 3.0), ("resnet18", 8.0), ("mobilenet_v2", 15.0)] * 4, 8000, 0.06),  # 12 on 8
        ([("resnet18", 6.0), ("mobilenet_v2", 10.0)] * 2, 2000, 0.06),  # 4 on 2
    ],
    ids=["two-on-eight", "twelve-on-eight", "four-on-two"],
)
def test_checkpoint_on_a_cpu_node_model_matches_simulation(
    pods: list[tuple[str, float]], cpu_milli: int, rel_tol: float
) -> None:
    # The what-if's checkpoints: same discipline on both sides, so they agree up to sampling
    # noise (mean of 4 replications of 20k requests) and the mean field's error.
    state = _cpu_state(pods, cpu_milli)
    checks = [
        check_device(state, 0, 0, np.random.default_rng(s), SimConfig(n_requests=20_000)) for s in range(4)
    ]
    assert all(c is not None and c.mode == "cpu" for c in checks)
    simulated = np.mean([c.simulated_mean_ms for c in checks if c is not None], axis=0)
    np.testing.assert_allclose(checks[0].analytic_ms, simulated, rtol=rel_tol)  # type: ignore[union-attr]
    # and the placement model (sharing.predict, the node's cores) gives the same numbers
    services = DeviceServices.build(
        state.svc_rate_rps[0, 0, : len(pods)],
        state.svc_service_ms[0, 0, : len(pods)],
        second_moment_ms2=state.svc_second_ms2[0, 0, : len(pods)],
        cores=int(cpu_cores(cpu_milli)),
    )
    np.testing.assert_allclose(predict("cpu", services).latency_ms, checks[0].analytic_ms, rtol=1e-12)  # type: ignore[union-attr]


# ------------------------------------- the mean field's solver against the first version (oracle)


def _oracle_busy_count_distributions(busy: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first version's prefix/suffix Poisson-binomial distributions (commit 7834727), verbatim."""
    k = busy.shape[-1]
    start = np.zeros((*busy.shape[:-1], k + 1))
    start[..., 0] = 1.0

    def add(dist: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = dist * (1.0 - b[..., None])
        out[..., 1:] += dist[..., :-1] * b[..., None]
        return out

    prefix = [start]
    for j in range(k):
        prefix.append(add(prefix[-1], busy[..., j]))
    suffix = [start]
    for j in range(k - 1, -1, -1):
        suffix.append(add(suffix[-1], busy[..., j]))
    suffix.reverse()
    return prefix, suffix


def _oracle_slowdown(load: np.ndarray, cores: np.ndarray, max_iterations: int = 50_000) -> np.ndarray:
    """The first version's damped fixed point (commit 7834727), verbatim but for the iteration cap
    (200 there, too few near capacity: the damped map contracts at (1 + L/c)/2)."""
    k = load.shape[-1]
    total = np.arange(2 * k + 1)
    stretch = 1.0 / server_speed(1 + total[None, :], cores[:, None])
    pair = np.add.outer(np.arange(k + 1), np.arange(k + 1))
    table = stretch[:, pair]
    sigma = np.ones(load.shape)
    todo = np.arange(load.shape[0])
    for _ in range(max_iterations):
        prefix, suffix = _oracle_busy_count_distributions(np.minimum(load[todo] * sigma[todo], 1.0))
        tab = table[todo]
        new = np.stack(
            [(prefix[i][:, :, None] * tab * suffix[i + 1][:, None, :]).sum(axis=(1, 2)) for i in range(k)],
            axis=-1,
        )
        done = np.max(np.abs(new - sigma[todo]), axis=-1) < 1e-13
        sigma[todo] = np.where(done[:, None], new, 0.5 * (sigma[todo] + new))
        todo = todo[~done]
        if todo.size == 0:
            break
    return sigma


@st.composite
def _crowded_nodes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """1-3 crowded CPU nodes: K up to 32 services (some idle), c in 1..min(64, active − 1) cores,
    the node's load from light to past capacity (L/c up to 1.25), every server under one core."""
    k = draw(st.integers(2, 32))
    rows = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    util = draw(st.lists(st.floats(0.02, 1.25), min_size=rows, max_size=rows))
    rng = np.random.default_rng(seed)
    idle = rng.random((rows, k)) < draw(st.sampled_from([0.0, 0.2]))
    idle[:, :2] = False  # at least two active servers
    active = (~idle).sum(axis=-1)
    cores = np.array([draw(st.integers(1, min(64, int(a) - 1))) for a in active])
    weights = np.where(idle, 0.0, rng.dirichlet(np.full(k, draw(st.sampled_from([0.5, 1.0, 5.0]))), rows))
    weights /= weights.sum(axis=-1, keepdims=True)
    load = np.minimum(weights * (np.array(util) * cores)[:, None], 0.98)
    return load, cores


@settings(max_examples=60, deadline=None)
@given(_crowded_nodes())
def test_mean_field_solver_gives_the_first_versions_values(node: tuple[np.ndarray, np.ndarray]) -> None:
    load, cores = node
    want = _oracle_slowdown(load, cores)
    got = _mean_field_slowdown(load, cores)
    # both stop within ~1e-13 of the fixed point; a node a hair below capacity is conditioned
    # 1/(c − L), so allow for it
    tol = 1e-11 / np.clip(cores - load.sum(axis=-1), 1e-3, 1.0)
    assert (np.abs(got - want) <= tol[:, None] * np.maximum(1.0, want)).all(), (got, want)


@settings(max_examples=40, deadline=None)
@given(_crowded_nodes())
def test_mean_field_solution_is_a_fixed_point_independent_of_the_batch(
    node: tuple[np.ndarray, np.ndarray],
) -> None:
    load, cores = node
    sigma = _mean_field_slowdown(load, cores)
    width = int(cores.max()) - 1
    again = _evaluate(load, sigma, cores, _lower_weights(cores, width) if width > 0 else None).stretch
    np.testing.assert_allclose(again, sigma, rtol=1e-9)
    for r in range(load.shape[0]):  # a row's value does not depend on the rows beside it
        np.testing.assert_array_equal(_mean_field_slowdown(load[r : r + 1], cores[r : r + 1])[0], sigma[r])


@pytest.mark.parametrize(
    ("loads", "want"),
    [
        # one core, no server saturated: σᵢ = 1 + Σ_{j≠i} λⱼSⱼσⱼ, solved in closed form
        ([0.2, 0.3], [1 + 0.3 * (1.2 / 0.94), 1.2 / 0.94]),
        # one core, 0.6 each: unclamped σ = 2.5 would make b = 1.5; clamped, σ = 1 + 1 = 2
        ([0.6, 0.6], [2.0, 2.0]),
    ],
    ids=["one-core-linear", "one-core-clamped"],
)
def test_mean_field_one_core_closed_forms(loads: list[float], want: list[float]) -> None:
    np.testing.assert_allclose(_mean_field_slowdown(np.array([loads]), np.array([1]))[0], want, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(_gaps, st.integers(4, 16))
def test_shared_cores_shortcut_is_the_event_loop(rows: list[tuple[float, float, int]], cores: int) -> None:
    # With no more servers than cores the kernel skips the event loop (one Lindley recursion per
    # server); the loop itself, all speeds 1, must give the same times.
    arrival = np.cumsum([r[0] for r in rows])
    size = np.array([r[1] for r in rows])
    server = np.array([r[2] for r in rows]) * 7 + 3  # labels need not be 0..k-1
    fast = shared_cores_sojourn_times(arrival, size, server, cores)
    departure, _ = _shared_cores_run(arrival, size, server, CpuNode(cores).speeds(len(np.unique(server))))
    np.testing.assert_allclose(fast, departure - arrival, rtol=1e-12, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(_gaps, st.integers(1, 4), st.randoms(use_true_random=False))
def test_online_queue_is_the_kernel(
    rows: list[tuple[float, float, int]], cores: int, shuffle: Random
) -> None:
    # The request what-if's SharedCoresQueue: fed one request at a time (the announcements of
    # each batch of equal-or-later arrivals in any order, as transfer delays reorder them), it
    # gives the kernel's times.
    arrival = np.cumsum([r[0] for r in rows])
    size = np.array([r[1] for r in rows])
    server = np.array([r[2] for r in rows])
    want = shared_cores_sojourn_times(arrival, size, server, cores)
    queue = SharedCoresQueue(cores, 4)
    got = np.full(len(rows), np.nan)
    start = np.full(len(rows), np.nan)
    order = list(range(len(rows)))
    cut = sorted(shuffle.sample(range(len(rows) + 1), min(3, len(rows) + 1)))
    for lo, hi in zip([0, *cut], [*cut, len(rows)], strict=True):
        if lo >= hi:
            continue
        for key, begun, left in queue.advance(float(arrival[lo])):
            got[key], start[key] = left - arrival[key], begun
        batch = order[lo:hi]
        shuffle.shuffle(batch)
        for key in batch:
            queue.arrive(key, float(arrival[key]), float(size[key]), int(server[key]))
    for key, begun, left in queue.advance(np.inf):
        got[key], start[key] = left - arrival[key], begun
    assert not np.isnan(got).any()
    # equal arrival times announced out of order are served in announcement order, which
    # differs from the kernel's only for requests of one server arriving together
    same_time_same_server = any(
        arrival[a] == arrival[b] and server[a] == server[b] for a in range(len(rows)) for b in range(a)
    )
    if not same_time_same_server:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert (start >= arrival - 1e-12).all()
    assert (got >= size - 1e-9).all()
