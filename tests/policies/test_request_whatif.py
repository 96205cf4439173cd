"""The request-level what-if core: inputs, transfer time, the engine against Lindley, summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qosched.policies.requests.arrivals import scale_arrivals, synthetic_network
from qosched.policies.requests.engine import EngineConfig, simulate_requests
from qosched.policies.requests.evaluate import best_static, regret_series, requests_summary
from qosched.policies.requests.inputs import InputError, Requests, parse_network, parse_requests
from qosched.policies.requests.registry import run_policies
from qosched.policies.requests.routing import (
    AlwaysTier,
    Greedy,
    Objective,
    Outcome,
    RequestContext,
    StaticRouting,
)
from qosched.policies.requests.scenario import (
    Action,
    Link,
    Scenario,
    ScenarioError,
    ServiceDef,
    TierNode,
    transfer_ms,
)
from qosched.policies.simulator.requests import lindley_waits, shared_cores_sojourn_times
from qosched.policies.state import ServiceParams

PARAMS = {
    ("gpu", "big"): ServiceParams(10.0, 100.0, accuracy=0.80),
    ("gpu", "small"): ServiceParams(4.0, 16.0, accuracy=0.75),
    ("tpu", "small"): ServiceParams(2.0, 4.0, swap_ms=5.0),
    ("tpu", "big"): ServiceParams(6.0, 36.0, swap_ms=5.0),
}


def lookup(accelerator: str, model: str) -> ServiceParams | None:
    return PARAMS.get((accelerator, model))


def scenario(min_accuracy: float | None = 0.7, slo_ms: float = 100.0) -> Scenario:
    nodes = [
        TierNode("tpu-0", "end", "tpu", 1, Link(0.0, 1000.0), "edgetpu"),
        TierNode("gpu-0", "edge", "gpu", 1, Link(10.0, 100.0)),
        TierNode("gpu-c", "cloud", "gpu", 2, Link(40.0, 50.0)),
    ]
    svc = ServiceDef("s", ("big", "small"), slo_ms, min_accuracy, 100.0)
    return Scenario.build(nodes, [svc], lookup)


def requests(times: list[float], service: str = "s") -> Requests:
    return Requests(np.asarray(times, dtype=float), (service,) * len(times), np.full(len(times), np.nan))


def _rows(*dicts: dict[str, str]) -> list[tuple[int, dict[str, str | None]]]:
    return [(i + 2, dict(d)) for i, d in enumerate(dicts)]


@pytest.mark.parametrize(
    ("rtt", "kb", "mbps", "expected"),
    [(10.0, 100.0, 100.0, 18.0), (0.0, 0.0, 1.0, 0.0), (40.0, 150.0, 8.0, 190.0), (1.0, 1.0, 0.0, math.inf)],
    ids=["edge", "empty", "slow-cloud", "no-bandwidth"],
)
def test_transfer_time_is_rtt_plus_size_over_bandwidth(
    rtt: float, kb: float, mbps: float, expected: float
) -> None:
    assert transfer_ms(rtt, kb, mbps) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        (_rows({"time_s": "x", "service": "a"}), ["time_s", "service"], "REQUESTS.csv:2: column time_s"),
        (_rows({"time_s": "-1", "service": "a"}), ["time_s", "service"], "expected a number >= 0"),
        (_rows({"time_s": "1", "service": " "}), ["time_s", "service"], "column service: empty"),
        (
            _rows({"time_s": "1", "service": "a", "input_kb": "nan"}),
            ["time_s", "service", "input_kb"],
            "input_kb",
        ),
        ([], ["time_s", "service"], "no request rows"),
        (_rows({"time": "1"}), ["time"], "missing column(s) time_s, service"),
    ],
    ids=["not-a-number", "negative", "empty-service", "nan-kb", "no-rows", "header"],
)
def test_bad_request_rows_name_line_and_column(rows: list, columns: list[str], message: str) -> None:
    with pytest.raises(InputError, match=None) as err:
        parse_requests(rows, columns)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"time_s": "0", "tier": "fog", "rtt_ms": "1", "bandwidth_mbps": "1"},
            "'fog' is not one of end, edge, cloud",
        ),
        (
            {"time_s": "0", "tier": "edge", "rtt_ms": "1", "bandwidth_mbps": "0"},
            "bandwidth_mbps: expected a number > 0",
        ),
        ({"time_s": "0", "tier": "edge", "rtt_ms": "-2", "bandwidth_mbps": "1"}, "rtt_ms"),
    ],
    ids=["tier", "zero-bandwidth", "negative-rtt"],
)
def test_bad_network_rows(row: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as err:
        parse_network(_rows(row), ["time_s", "tier", "rtt_ms", "bandwidth_mbps"])
    assert message in str(err.value)
    assert "NETWORK.csv:2" in str(err.value)


def test_network_is_piecewise_constant_per_tier() -> None:
    cols = ["time_s", "tier", "rtt_ms", "bandwidth_mbps"]
    trace = parse_network(
        _rows(
            {"time_s": "10", "tier": "cloud", "rtt_ms": "40", "bandwidth_mbps": "5"},
            {"time_s": "0", "tier": "cloud", "rtt_ms": "40", "bandwidth_mbps": "50"},
            {"time_s": "20", "tier": "cloud", "rtt_ms": "41", "bandwidth_mbps": "60"},
        ),
        cols,
    )
    got = [trace.at("cloud", t) for t in (0.0, 9.99, 10.0, 19.0, 25.0)]
    assert [link.bandwidth_mbps for link in got if link] == [50.0, 50.0, 5.0, 5.0, 60.0]
    assert trace.at("edge", 5.0) is None
    with pytest.raises(InputError, match="two rows"):
        parse_network(_rows({"time_s": "0", "tier": "edge", "rtt_ms": "1", "bandwidth_mbps": "1"}) * 2, cols)


def test_actions_respect_accuracy_floor_and_profiles() -> None:
    sc = scenario(min_accuracy=0.78)
    assert sc.actions("s") == (Action("end", "big"), Action("edge", "big"), Action("cloud", "big"))
    sc = scenario(min_accuracy=None)
    assert len(sc.actions("s")) == 6
    # the tpu profiles state no accuracy: the gpu profiles' value is the variant's accuracy
    assert sc.catalog.accuracy("small", "tpu") == pytest.approx(0.75)
    with pytest.raises(ScenarioError, match="no tier has a profile"):
        scenario(min_accuracy=0.9)


def test_engine_matches_lindley_on_one_fcfs_server() -> None:
    """All requests on the edge GPU (deterministic 10 ms, E[S^2] = S^2): waits are exactly Lindley's."""
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.exponential(1 / 80.0, 400))
    sc = scenario()
    rec = simulate_requests(sc, requests(times.tolist()), StaticRouting({"s": Action("edge", "big")}), rng)
    arrival_ms = times * 1000.0 + 18.0  # 10 ms RTT + 100 kB at 100 Mbit/s
    expected = lindley_waits(arrival_ms, np.full(len(times), 10.0))
    np.testing.assert_allclose(rec.wait_ms, expected, atol=1e-9)
    np.testing.assert_allclose(rec.response_ms, 18.0 + expected + 10.0, atol=1e-9)
    assert rec.served.all()


def test_edge_tpu_pays_the_swap_when_the_model_changes() -> None:
    sc = scenario(min_accuracy=None)
    alternate = iter([Action("end", "small"), Action("end", "big")] * 3)

    class Alternating:
        name = "alt"

        def choose(self, ctx: object) -> Action:
            return next(alternate)

        def observe(self, outcome: object) -> None:
            return None

    rec = simulate_requests(sc, requests([0.0, 1.0, 2.0, 3.0]), Alternating(), np.random.default_rng(0))
    # deterministic service 2 / 6 ms plus the 5 ms swap each time (the device starts empty)
    np.testing.assert_allclose(rec.service_ms, [7.0, 11.0, 7.0, 11.0])


def test_feedback_arrives_at_completion_before_later_decisions() -> None:
    sc = scenario()
    events: list[tuple[str, float]] = []

    class Recorder:
        name = "rec"

        def choose(self, ctx: object) -> Action:
            events.append(("choose", ctx.time_s))  # type: ignore[attr-defined]
            return Action("cloud", "big")

        def observe(self, outcome: object) -> None:
            events.append(("observe", outcome.completion_s))  # type: ignore[attr-defined]

    # cloud: 40 ms + 16 ms transfer + 10 ms service = 66 ms
    simulate_requests(sc, requests([0.0, 0.05, 0.2]), Recorder(), np.random.default_rng(0))
    # completions at 0.066 and 0.116 s both come before the third arrival (0.2 s)
    assert [e[0] for e in events] == ["choose", "choose", "observe", "observe", "choose", "observe"]
    assert events[2][1] == pytest.approx(0.066)


def test_summary_by_hand() -> None:
    sc = scenario(min_accuracy=None)
    rec = simulate_requests(sc, requests([0.0, 10.0]), AlwaysTier(sc, "edge"), np.random.default_rng(0))
    got = requests_summary(rec)
    assert got == {
        "total": 2,
        "served": 2,
        "mean_response_ms": pytest.approx(28.0),
        "p95_response_ms": pytest.approx(28.0),
        "slo_attainment": 1.0,
        "mean_accuracy": pytest.approx(0.80),
        "accuracy_loss": 0.0,
    }
    rec = simulate_requests(sc, requests([0.0, 10.0]), Greedy(), np.random.default_rng(0))
    # greedy: the end tier's small variant (2 ms + 5 ms swap predicted as 7 ms) and loses 5 points
    assert requests_summary(rec)["accuracy_loss"] == pytest.approx(5.0)


def test_unserved_requests_count_as_misses() -> None:
    sc = scenario()
    rec = simulate_requests(sc, requests([0.0, 1.0]), StaticRouting({}), np.random.default_rng(0))
    s = requests_summary(rec)
    assert (s["served"], s["slo_attainment"], s["mean_response_ms"]) == (0, 0.0, None)
    assert np.all(rec.reward == Objective().unserved_reward)


def test_policy_answer_outside_options_is_an_error() -> None:
    sc = scenario(min_accuracy=0.78)
    with pytest.raises(ValueError, match="not one of its options"):
        simulate_requests(
            sc, requests([0.0]), StaticRouting({"s": Action("edge", "small")}), np.random.default_rng(0)
        )


def test_best_static_is_best_in_hindsight_and_regret_is_zero_for_itself() -> None:
    sc = scenario()
    times = np.arange(0.0, 20.0, 0.02).tolist()
    req = requests(times)

    def run(policy: StaticRouting) -> object:
        return simulate_requests(sc, req, policy, np.random.default_rng(1))

    mapping, rec = best_static(sc, run)
    values = {a: float(np.mean(run(StaticRouting({"s": a})).reward)) for a in sc.actions("s")}
    assert mapping["s"] == max(values, key=values.__getitem__)
    assert float(regret_series(rec, rec)[-1]) == 0.0


def test_network_drop_raises_cloud_transfer() -> None:
    sc = scenario()
    net = parse_network(
        _rows({"time_s": "1", "tier": "cloud", "rtt_ms": "40", "bandwidth_mbps": "5"}),
        ["time_s", "tier", "rtt_ms", "bandwidth_mbps"],
    )
    rec = simulate_requests(
        sc, requests([0.0, 2.0]), AlwaysTier(sc, "cloud"), np.random.default_rng(0), net, EngineConfig()
    )
    np.testing.assert_allclose(rec.transfer_ms, [56.0, 200.0])


def test_run_policies_unknown_name() -> None:
    with pytest.raises(KeyError, match="unknown request policy nope"):
        run_policies(scenario(), requests([0.0]), ["nope"], seed=0)


def test_scale_arrivals_and_synthetic_network() -> None:
    t = np.array([5.0, 6.0, 7.0, 25.0, 26.0])
    np.testing.assert_allclose(scale_arrivals(t, 1.0, 10.0, 2.0), [0.0, 0.5, 9.5])
    rows = synthetic_network(np.random.default_rng(0), {"cloud": Link(40.0, 200.0)}, 600.0)
    assert rows[0] == (0.0, "cloud", Link(40.0, 200.0))
    assert all(r[2].bandwidth_mbps <= 200.0 for r in rows)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


# ------------------------------------------------ CPU nodes: the discipline of cpu_node.CpuNode

CPU_PARAMS = {
    ("cpu", "big"): ServiceParams(20.0, 400.0, accuracy=0.80),
    ("cpu", "mid"): ServiceParams(12.0, 144.0, accuracy=0.78),
    ("cpu", "small"): ServiceParams(6.0, 36.0, accuracy=0.75),
}


def _cpu_scenario(cores: int) -> Scenario:
    nodes = [TierNode("cpu-0", "edge", "cpu", 1, Link(10.0, 100.0), "cpu", cores)]
    services = [ServiceDef(f"s-{v}", (v,), 1000.0, None, 10.0) for v in ("big", "mid", "small")]
    return Scenario.build(nodes, services, lambda a, m: CPU_PARAMS.get((a, m)))


def _cpu_requests(rate_rps: dict[str, float], seconds: float, seed: int) -> Requests:
    rng = np.random.default_rng(seed)
    rows = []
    for variant, rate in rate_rps.items():
        times = np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds * 1.5)))
        rows += [(t, f"s-{variant}") for t in times[times < seconds]]
    rows.sort()
    return Requests(np.array([t for t, _ in rows]), tuple(s for _, s in rows), np.full(len(rows), np.nan))


@pytest.mark.parametrize("cores", [1, 2, 4], ids=["one-core", "two-cores", "four-cores"])
def test_cpu_node_requests_follow_the_shared_cores_kernel(cores: int) -> None:
    # Three single-threaded model servers (big, mid, small) on one CPU node: the engine's times
    # are exactly shared_cores_sojourn_times on the node's arrivals (deterministic sizes).
    sc = _cpu_scenario(cores)
    req = _cpu_requests({"big": 12.0, "mid": 15.0, "small": 30.0}, 60.0, seed=cores)  # 0.6 core of work
    routing = StaticRouting({f"s-{v}": Action("edge", v) for v in ("big", "mid", "small")})
    rec = simulate_requests(sc, req, routing, np.random.default_rng(0))
    assert rec.served.all()
    variant = np.array(rec.variant)
    size = np.array([CPU_PARAMS[("cpu", v)].service_ms for v in rec.variant])
    arrival = rec.time_s * 1000.0 + rec.transfer_ms
    order = np.argsort(arrival, kind="stable")
    want = np.empty(len(rec))
    want[order] = shared_cores_sojourn_times(
        arrival[order], size[order], np.unique(variant, return_inverse=True)[1][order], cores
    )
    np.testing.assert_allclose(rec.wait_ms + rec.service_ms, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rec.response_ms, rec.transfer_ms + want, rtol=1e-9, atol=1e-9)
    assert (rec.service_ms >= size - 1e-9).all()  # stretched, never faster than alone
    if cores >= 3:  # a core per server: each its own M/D/1, nobody stretched
        np.testing.assert_allclose(rec.service_ms, size, rtol=1e-12)


def test_cpu_node_outcomes_arrive_when_requests_leave() -> None:
    # On a CPU node a request's completion depends on later arrivals, so the policy hears of it
    # only when it leaves: every observation comes in completion order, none before its time.
    class Recorder(StaticRouting):
        seen: list[tuple[float, int]]
        chosen = 0

        def choose(self, ctx: RequestContext) -> Action | None:
            self.chosen += 1
            return super().choose(ctx)

        def observe(self, outcome: Outcome) -> None:
            self.seen.append((outcome.context.time_s + outcome.response_ms / 1000.0, self.chosen))

    sc = _cpu_scenario(1)
    req = _cpu_requests({"big": 20.0, "mid": 20.0, "small": 20.0}, 10.0, seed=3)
    policy = Recorder({f"s-{v}": Action("edge", v) for v in ("big", "mid", "small")})
    policy.seen = []
    rec = simulate_requests(sc, req, policy, np.random.default_rng(0))
    done = np.array([d for d, _ in policy.seen])
    assert len(done) == int(rec.served.sum())
    assert (np.diff(done) >= -1e-9).all()
    times = np.append(req.time_s, np.inf)  # observed just before request ``chosen`` arrives
    for d, chosen in policy.seen:
        assert d <= times[chosen] + 1e-9  # not before it left
        assert chosen == 0 or d > times[chosen - 1] - 1e-9  # at the first arrival after it left


def test_cpu_node_is_not_one_fcfs_queue() -> None:
    # 1.2 cores of work from two model servers on a 2-core node: one FCFS queue (the engine's
    # old approximation) would saturate; each server on its own core is an M/D/1 at 0.6.
    sc = _cpu_scenario(2)
    req = _cpu_requests({"big": 30.0, "small": 100.0}, 120.0, seed=5)
    routing = StaticRouting({"s-big": Action("edge", "big"), "s-small": Action("edge", "small")})
    rec = simulate_requests(sc, req, routing, np.random.default_rng(0))
    for variant, rate, s in (("big", 30.0, 20.0), ("small", 100.0, 6.0)):
        on = np.array(rec.variant) == variant
        rho = rate * s / 1000.0
        md1 = s + rho * s / (2.0 * (1.0 - rho))
        assert float(np.mean(rec.wait_ms[on] + rec.service_ms[on])) == pytest.approx(md1, rel=0.1)
        # the context's prediction is the cpu model's (cpu_node), not a saturated single queue
        assert np.isfinite(rec.predicted_ms[on][-100:]).all()
