"""The profiler: arrival schedules, statistics, plan, latency predictions, report, and a real run."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from qosched.extender.cli.main import main
from qosched.policies.latency.cpu_node import cpu_node_queue
from qosched.profiles.profiler.load import LatencyStats, poisson_arrivals_s
from qosched.profiles.profiler.report import (
    MemberLoad,
    build_report,
    load_report,
    predict_mean_latency_ms,
    reference_fcfs_servers_ms,
    report_markdown,
)
from qosched.profiles.profiler.runner import (
    ColocatedGroup,
    ProfilerConfig,
    _PlannedRun,
    auto_pairs,
    background_cpu_cores,
    offered_rates_rps,
    parse_colocate,
    plan_runs,
)

# --------------------------------------------------------------------------- arrivals, statistics


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["seed0", "seed1", "seed2"])
def test_poisson_arrivals_count_and_range(seed: int) -> None:
    rate_rps, horizon_s = 100.0, 10.0
    t = poisson_arrivals_s(rate_rps, horizon_s, np.random.default_rng(seed))
    # N ~ Poisson(1000): within 4σ = 4·√1000 ≈ 126 of the mean.
    assert abs(t.size - 1000) < 126
    assert np.all(np.diff(t) > 0)
    assert t[0] >= 0
    assert t[-1] < horizon_s
    gaps = np.diff(t)
    # Exponential gaps: mean 10 ms, coefficient of variation 1 (within sampling error).
    assert gaps.mean() == pytest.approx(0.010, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)


def test_poisson_arrivals_are_reproducible_from_the_seed() -> None:
    a = poisson_arrivals_s(5.0, 60.0, np.random.default_rng(42))
    b = poisson_arrivals_s(5.0, 60.0, np.random.default_rng(42))
    c = poisson_arrivals_s(5.0, 60.0, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("rate", "horizon"),
    [(0.0, 1.0), (-1.0, 1.0), (math.inf, 1.0), (math.nan, 1.0), (1.0, 0.0), (1.0, math.inf)],
    ids=["zero-rate", "negative-rate", "inf-rate", "nan-rate", "zero-horizon", "inf-horizon"],
)
def test_poisson_arrivals_reject_bad_input(rate: float, horizon: float) -> None:
    with pytest.raises(ValueError, match=r"rate_rps|horizon_s"):
        poisson_arrivals_s(rate, horizon, np.random.default_rng(0))


def test_latency_stats_hand_computed() -> None:
    s = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0])
    assert s.count == 4
    assert s.mean_ms == pytest.approx(2.5)
    assert s.second_moment_ms2 == pytest.approx((1 + 4 + 9 + 16) / 4)  # 7.5, E[X²] not Var
    assert s.p50_ms == pytest.approx(2.5)
    assert s.p99_ms == pytest.approx(3.97)  # linear interpolation: 3 + 0.99·3 − 2 = 3.97
    assert s.max_ms == 4.0
    assert s.to_dict()["second_moment"] == 7.5


@pytest.mark.parametrize("samples", [[], [1.0, math.nan], [math.inf]], ids=["empty", "nan", "inf"])
def test_latency_stats_reject_bad_samples(samples: list[float]) -> None:
    with pytest.raises(ValueError, match=r"samples|no samples"):
        LatencyStats.from_samples(samples)


def test_background_cpu_cores_from_counters() -> None:
    from qosched.profiles.profiler.runner import _CpuSnapshot

    hz = os.sysconf("SC_CLK_TCK")
    before = _CpuSnapshot(wall_s=10.0, busy_ticks=0, ours_ticks=0)
    # In 2 s the CPUs were busy 1.5 s, 0.5 s of it our servers: 1 s of other work / 2 s = 0.5 cores.
    after = _CpuSnapshot(wall_s=12.0, busy_ticks=int(1.5 * hz), ours_ticks=int(0.5 * hz))
    assert background_cpu_cores(before, after) == pytest.approx(0.5)
    assert background_cpu_cores(None, after) is None
    assert background_cpu_cores(after, before) is None


# --------------------------------------------------------------------------- plan and options


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("a+b", [(("a", "b"), None)]),
        ("a+b, a+b+c", [(("a", "b"), None), (("a", "b", "c"), None)]),
        ("a:5+b:20", [(("a", "b"), (5.0, 20.0))]),
        ("a+a", [(("a", "a"), None)]),
    ],
    ids=["pair", "pair-and-triple", "explicit-rates", "same-model-twice"],
)
def test_parse_colocate(text: str, want: list[tuple[tuple[str, ...], tuple[float, ...] | None]]) -> None:
    assert [(g.models, g.rates_rps) for g in parse_colocate(text)] == want


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a", "at least 2 models"),
        ("a:5+b", "every member or for none"),
        ("a+", "empty member"),
        ("a:x+b:1", "a:x\\+b:1"),
        ("a:0+b:1", "must be a number > 0"),
    ],
    ids=["single", "mixed-rates", "empty-member", "rate-not-a-number", "zero-rate"],
)
def test_parse_colocate_errors_name_the_group(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_colocate(text)


def test_auto_pairs_are_every_unordered_pair_once() -> None:
    pairs = [g.models for g in auto_pairs(["a", "b", "c", "a"])]
    assert pairs == [("a", "b"), ("a", "c"), ("b", "c")]


@pytest.mark.parametrize(
    ("models", "level", "servers", "service_ms", "want_rps"),
    [
        (("a",), 0.5, 2, (20.0,), (25.0,)),  # solo: λ = ρ / E[S] = 0.5 / 20 ms
        (("a", "b"), 0.6, 2, (50.0, 25.0), (12.0, 24.0)),  # ρ·servers/n = 0.6 each: 0.6/50 ms, 0.6/25 ms
        (("a", "b", "c"), 0.6, 1, (10.0, 20.0, 40.0), (20.0, 10.0, 5.0)),  # 0.2 of the core each
    ],
    ids=["solo", "pair-two-cores", "triple-one-core"],
)
def test_offered_rates(
    models: tuple[str, ...],
    level: float,
    servers: int,
    service_ms: tuple[float, ...],
    want_rps: tuple[float, ...],
) -> None:
    got = offered_rates_rps(_PlannedRun(0, models, level, None), service_ms, servers)
    assert got == pytest.approx(want_rps)


def test_explicit_rates_win_over_the_level() -> None:
    run = _PlannedRun(0, ("a", "b"), None, (3.0, 4.0))
    assert offered_rates_rps(run, (10.0, 10.0), 2) == (3.0, 4.0)


def test_plan_has_solo_levels_then_groups() -> None:
    cfg = ProfilerConfig(
        models=("a", "b"),
        colocate=(ColocatedGroup(("a", "b")), ColocatedGroup(("a", "c"), (1.0, 2.0))),
        levels=(0.2, 0.4),
        colocate_levels=(0.5,),
    )
    assert cfg.all_models == ("a", "b", "c")
    ids = [r.run_id for r in plan_runs(cfg)]
    assert ids == [
        "solo-a-u0.20",
        "solo-a-u0.40",
        "solo-b-u0.20",
        "solo-b-u0.40",
        "solo-c-u0.20",
        "solo-c-u0.40",
        "colocated-a+b-u0.50",
        "colocated-a+c-explicit",
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"models": ()}, "at least one model"),
        ({"levels": (1.0,)}, "rates: load level"),
        ({"colocate_levels": (0.0,)}, "colocate-rates"),
        ({"duration_s": 0.0}, "duration-s"),
        ({"min_requests": 0}, "min-requests"),
        ({"threads": 0}, "threads"),
        ({"device": "tpu"}, "device"),
        ({"cpus": ()}, "cpus"),
        ({"rounds": 0}, "rounds"),
    ],
    ids=[
        "no-models",
        "level-1",
        "level-0",
        "duration",
        "min-requests",
        "threads",
        "device",
        "cpus",
        "rounds",
    ],
)
def test_config_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {"models": ("a",)}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ProfilerConfig(**base)


@pytest.mark.parametrize(
    ("cpus", "threads", "device", "want"),
    [((0, 1), 1, "cpu", 2), ((0, 1), 2, "cpu", 1), ((0,), 1, "cpu", 1), ((0, 1, 2, 3), 1, "cuda", 1)],
    ids=["2cpu-1thread", "2cpu-2threads", "1cpu", "cuda"],
)
def test_servers_of_the_device(cpus: tuple[int, ...], threads: int, device: str, want: int) -> None:
    assert ProfilerConfig(models=("a",), cpus=cpus, threads=threads, device=device).servers == want


# --------------------------------------------------------------------------- latency predictions


def _load(rate_rps: float, mean_ms: float, second_ms2: float | None = None) -> MemberLoad:
    return MemberLoad("m", rate_rps, mean_ms, mean_ms**2 if second_ms2 is None else second_ms2)


@pytest.mark.parametrize(
    ("loads", "servers", "want_ms"),
    [
        # M/D/1: ρ = 10/s · 50 ms = 0.5; R = S + λE[S²]/(2(1−ρ)) = 50 + 0.01·2500/1 = 75.
        ([_load(10.0, 50.0)], 1, [75.0]),
        # M/G/1 with E[S²] = 2·S² (exponential): 50 + 0.01·5000/1 = 100 (= M/M/1 S/(1−ρ)).
        ([_load(10.0, 50.0, 5000.0)], 1, [100.0]),
        # Two servers on two cores keep a core each: both are their solo M/D/1.
        ([_load(10.0, 50.0), _load(10.0, 50.0)], 2, [75.0, 75.0]),
        # Two on one core, ρ₀ = λS = 0.25 each: σ = 1 + b, b = ρ₀σ → σ = 4/3, T = 40 ms,
        # ρ = 1/3; R = 40 + (1/120)·(16/9)·900 / (2·2/3) = 40 + 10 = 50.
        ([_load(1000.0 / 120.0, 30.0), _load(1000.0 / 120.0, 30.0)], 1, [50.0, 50.0]),
        # Unstable alone: ρ = 1.
        ([_load(20.0, 50.0)], 1, [math.inf]),
        # Idle neighbour: it slows nobody, and is itself slowed by the busy one (b = 0.5):
        # σ = 1.5, R = 15 ms.
        ([_load(10.0, 50.0), _load(1e-9, 10.0)], 1, [75.0, 15.0]),
    ],
    ids=["md1", "mg1-exponential", "pair-two-cores", "pair-one-core", "unstable", "idle-neighbour"],
)
def test_reference_fcfs_servers(loads: list[MemberLoad], servers: int, want_ms: list[float]) -> None:
    assert reference_fcfs_servers_ms(loads, servers) == pytest.approx(want_ms, rel=1e-6)


@pytest.mark.parametrize(
    ("rates", "service", "cores", "want_ms"),
    [
        ([10.0], [50.0], 1, [75.0]),  # one FCFS server: M/D/1, 50 + 0.5·50/(2·0.5)
        # one core: σ₁ = 1.3/0.94, σ₂ = 1 + 0.2σ₁ (tests/policies/test_sharing.py, cpu-one-core)
        ([10.0, 10.0], [20.0, 30.0], 1, [32.9474, 50.1834]),
        ([50.0], [20.0], 2, [math.inf]),  # one single-threaded server at λS = 1: saturated
        ([10.0, 10.0], [20.0, 30.0], 2, [22.5, 30 + 9 / 1.4]),  # a core each: own M/D/1 queues
    ],
    ids=["one-model", "two-models-one-core", "one-server-two-cores", "two-cores"],
)
def test_prediction_is_the_qosched_cpu_model(
    rates: list[float], service: list[float], cores: int, want_ms: list[float]
) -> None:
    # Since issue 18 the cpu model IS one FCFS server per model with the cores shared among the
    # busy servers (policies/latency/cpu_node.py), so it equals the FCFS-servers reference.
    loads = [_load(r, s) for r, s in zip(rates, service, strict=True)]
    got = predict_mean_latency_ms(loads, device="cpu", servers=cores)
    assert got == pytest.approx(want_ms, rel=1e-4)
    assert got == pytest.approx(reference_fcfs_servers_ms(loads, cores), rel=1e-9)
    assert got == pytest.approx(cpu_node_queue(rates, service, cores=cores).latency_ms.tolist())


def test_prediction_on_cuda_is_the_time_sliced_model() -> None:
    # λ = 0.02/ms, E[S] = (20 + 30)/2 = 25 ms, μ = 0.04/ms, W = 1/(μ − λ) − 1/μ = 50 − 25 = 25 ms.
    got = predict_mean_latency_ms(
        [_load(10.0, 20.0), _load(10.0, 30.0)], device="cuda", servers=1, accelerator="nvidia-t4"
    )
    assert got == pytest.approx([45.0, 55.0])


def test_prediction_of_nothing_is_empty() -> None:
    assert predict_mean_latency_ms([], device="cpu", servers=2) == []


# --------------------------------------------------------------------------- report


def _member(model: str, inst: int, rate: float, util: float, mean: float) -> dict[str, Any]:
    return {
        "model": model,
        "instance": inst,
        "rate_rps": rate,
        "offered_utilization": util,
        "requests": 500,
        "latency_ms": {"mean": mean, "p99": 3 * mean},
    }


def _colocation() -> dict[str, Any]:
    """Hand-made colocation.json: S = 50 ms deterministic, λ = 5/s each, 2 cores.

    qosched's cpu model (one FCFS server per model, the c = 2 cores shared among the busy ones)
    gives each its own M/D/1 queue here: at most two servers, so each keeps a core
    (see test_report_mape_hand_computed).
    """
    return {
        "format": "qosched-colocation-v1",
        "accelerator": "cpu",
        "device": "cpu",
        "settings": {"servers": 2},
        "service_ms": {"m": {"mean": 50.0, "second_moment": 2500.0}},
        "runs": [
            {"id": "solo", "kind": "solo", "saturated": False, "members": [_member("m", 0, 5.0, 0.25, 80.0)]},
            {
                "id": "pair",
                "kind": "colocated",
                "saturated": False,
                "background_cpu_cores": 0.25,
                "members": [_member("m", 0, 5.0, 0.25, 70.0), _member("m", 1, 5.0, 0.25, 90.0)],
            },
            {
                "id": "overloaded",
                "kind": "colocated",
                "saturated": True,
                "members": [_member("m", 0, 5.0, 0.25, 900.0), _member("m", 1, 5.0, 0.25, 900.0)],
            },
        ],
    }


def test_report_mape_hand_computed() -> None:
    report = build_report(_colocation())
    # Solo and pair alike: each server keeps a core, M/D/1 at ρ = 0.25: 50 + 0.005·2500/(2·0.75).
    solo_ms = pair_ms = 50.0 + 0.005 * 2500.0 / (2 * 0.75)
    assert pair_ms == pytest.approx(58.3333, abs=1e-4)
    assert [r.predicted_mean_ms for r in report.rows] == pytest.approx([solo_ms] + [pair_ms] * 4)
    want = (abs(pair_ms - 70) / 70 + abs(pair_ms - 90) / 90) / 2 * 100
    assert report.mape_colocated_pct == pytest.approx(want)
    assert report.mape_solo_pct == pytest.approx(abs(solo_ms - 80) / 80 * 100)
    # Reference (one FCFS server per model, each keeps a core): M/D/1, 50 + 0.005·2500/(2·0.75).
    md1_ms = 50.0 + 0.005 * 2500.0 / (2 * 0.75)
    assert [r.reference_mean_ms for r in report.rows] == pytest.approx([md1_ms] * 5)
    summary = report.summary()
    assert summary["colocated_rows"] == 2
    assert summary["saturated_runs"] == ["overloaded"]
    assert summary["max_background_cpu_cores"] == 0.25
    # One unsaturated co-located run: no held-out calibration is possible.
    assert math.isnan(report.rows[1].calibrated_mean_ms)
    assert summary["mape_pct_by_predictor"]["colocated"]["qosched_calibrated_heldout"] is None
    text = report_markdown(report)
    assert f"MAPE colocated (mean latency): qosched model {want:.2f} %" in text
    assert "overloaded (saturated)" in text


def test_heldout_calibration_never_sees_the_predicted_run() -> None:
    obj = _colocation()
    pair = obj["runs"][1]
    uncalibrated_ms = 50.0 + 0.005 * 2500.0 / (2 * 0.75)  # own M/D/1 each (two servers, two cores)
    # Three identical co-located runs: two measured 20 % above the uncalibrated model, one 3x.
    runs = []
    for i, factor in enumerate([1.2, 1.2, 3.0]):
        run = json.loads(json.dumps(pair))
        run["id"] = f"pair{i}"
        for m in run["members"]:
            m["latency_ms"]["mean"] = factor * uncalibrated_ms
        runs.append(run)
    obj["runs"] = runs
    report = build_report(obj)
    fits = report.fitted_overhead_frac
    assert set(fits) == {"pair0", "pair1", "pair2"}
    # pair2 is predicted from a fit on pair0 and pair1 only, which reproduces them exactly
    # (same configuration): its held-out prediction is 1.2x the model, an error of 1.2/3 − 1.
    row = next(r for r in report.rows if r.run_id == "pair2")
    assert row.calibrated_mean_ms == pytest.approx(1.2 * uncalibrated_ms, rel=1e-3)
    assert row.error_frac("qosched_calibrated_heldout") == pytest.approx(1.2 / 3.0 - 1, rel=1e-3)
    assert 0 < fits["pair2"] < 0.2  # the overhead also lengthens the queue, so less than 20 %
    assert fits["pair0"] > fits["pair2"] + 0.1  # pair0's fit saw the outlier pair2


def test_unbounded_predictions_are_counted_not_averaged() -> None:
    obj = _colocation()
    # The host served 25/s of 50 ms twice over on 2 cores (a = 2.5 > c): the model says inf.
    busy = json.loads(json.dumps(obj["runs"][1]))
    busy["id"] = "too-busy"
    for m in busy["members"]:
        m["rate_rps"] = 25.0
    obj["runs"].append(busy)
    report = build_report(obj)
    assert report.unbounded_rows("colocated") == 2
    assert report.mape_pct("colocated") == (pytest.approx(build_report(_colocation()).mape_colocated_pct), 2)
    assert report.summary()["unbounded_prediction_rows"]["colocated"]["qosched"] == 2
    assert "2 unbounded left out" in report_markdown(report)


def test_report_without_colocated_runs_has_no_mape() -> None:
    obj = _colocation()
    obj["runs"] = obj["runs"][:1]
    report = build_report(obj)
    assert math.isnan(report.mape_colocated_pct)
    assert report.summary()["mape_colocated_pct"] is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read"),
        ("{not json", "invalid JSON at line 1"),
        (json.dumps({"format": "other"}), "not a qosched colocation file"),
        (
            json.dumps({**_colocation(), "service_ms": {}}),
            "no service time measured for 'm'",
        ),
    ],
    ids=["missing", "bad-json", "wrong-format", "unknown-model"],
)
def test_load_report_errors_name_the_file(tmp_path: Path, content: str | None, match: str) -> None:
    if content is not None:
        (tmp_path / "colocation.json").write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_report(tmp_path)
    assert "colocation.json" in str(info.value)


def test_profile_report_command_rebuilds_the_report(tmp_path: Path) -> None:
    (tmp_path / "colocation.json").write_text(json.dumps(_colocation()))
    result = CliRunner().invoke(main, ["profile", "report", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "MAPE colocated" in result.output
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["summary"]["mape_colocated_pct"] == pytest.approx(
        build_report(_colocation()).mape_colocated_pct, abs=1e-3
    )
    assert (tmp_path / "report.md").read_text().startswith("# Predicted vs measured")


# --------------------------------------------------------------------------- a real run (tiny model)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`qosched profile run` on tiny_cnn: solo at ρ = 0.3, and two copies on one core at 0.3 each."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("profile")
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    args = [
        "profile",
        "run",
        "--models=tiny_cnn",
        "--colocate=tiny_cnn+tiny_cnn",
        "--rates=0.3",
        "--colocate-rates=0.6",  # one core, two servers: λᵢ·E[S] = 0.6·1/2 = 0.3 each
        f"--cpus={cpu}",
        "--duration-s=1.0",
        "--min-requests=100",
        "--warmup=20",
        "--settle-s=0.2",
        "--rounds=1",
        "--accelerator=test-cpu",
        "--accuracy=tiny_cnn=0.5",
        f"--out={out}",
        "--quiet",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


@pytest.mark.slow
def test_real_run_writes_a_valid_profile(tiny_run: tuple[Path, str]) -> None:
    from qosched.profiles.schema import load_profile_file

    out, _ = tiny_run
    profile = load_profile_file(out / "test-cpu__tiny_cnn.json")
    st = profile.service_time
    assert profile.key == ("test-cpu", "tiny_cnn")
    assert st.mean_ms > 0
    assert st.second_moment_ms2 >= st.mean_ms**2
    assert st.p50_ms is not None
    assert st.p99_ms is not None
    assert st.p99_ms >= st.p50_ms
    assert profile.memory_mib > 0
    assert profile.provenance.source.startswith("qosched profile run")
    assert profile.accuracy == 0.5
    assert "torch" in profile.provenance.measured_on


@pytest.mark.slow
def test_real_run_measures_latency_and_colocation_raises_it(tiny_run: tuple[Path, str]) -> None:
    out, _ = tiny_run
    coloc = json.loads((out / "colocation.json").read_text())
    runs = {r["kind"]: r for r in coloc["runs"]}
    solo, pair = runs["solo"], runs["colocated"]
    for member in solo["members"] + pair["members"]:
        lat = member["latency_ms"]
        assert member["requests"] >= 50
        assert lat["mean"] > 0
        assert lat["p99"] >= lat["p50"] > 0
        assert lat["p99"] >= 0.9 * lat["mean"]
        assert member["offered_utilization"] == pytest.approx(0.3, rel=0.5)
    solo_mean = solo["members"][0]["latency_ms"]["mean"]
    # Two servers time-slicing one core: each request waits for the neighbour's slices.
    assert min(m["latency_ms"]["mean"] for m in pair["members"]) > solo_mean


@pytest.mark.slow
def test_real_run_report_has_the_mape(tiny_run: tuple[Path, str]) -> None:
    out, output = tiny_run
    assert "MAPE colocated (mean latency)" in output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["colocated_rows"] == 2
    assert report["summary"]["mape_colocated_pct"] is not None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--accuracy=tiny_cnn"], "expected MODEL=FRACTION"),
        (["--accuracy=tiny_cnn=1.5"], "must be a fraction in \\[0, 1\\]"),
        (["--rates=0.2,x"], "comma-separated numbers"),
        (["--rates=1.2"], "load level 1.2"),
        (["--colocate=tiny_cnn"], "at least 2 models"),
        (["--cpus=a"], "CPU numbers"),
    ],
    ids=[
        "accuracy-no-value",
        "accuracy-above-1",
        "rate-not-a-number",
        "rate-above-1",
        "group-of-one",
        "bad-cpus",
    ],
)
def test_bad_options_are_usage_errors(args: list[str], match: str) -> None:
    pytest.importorskip("torch")
    result = CliRunner().invoke(main, ["profile", "run", "--models=tiny_cnn", "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert re.search(match, result.output), result.output


def test_unknown_model_is_a_usage_error() -> None:
    pytest.importorskip("torch")
    result = CliRunner().invoke(main, ["profile", "run", "--models=vgg16", "--colocate=none", "--quiet"])
    assert result.exit_code == 2
    assert "unknown model 'vgg16'" in result.output
    assert "resnet18" in result.output
