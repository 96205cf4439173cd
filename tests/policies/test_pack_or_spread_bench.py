"""The pack-or-spread scenario (benchmarks/bench_pack_or_spread.py): deterministic by seed, as stated."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pack_or_spread.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pack_or_spread", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "Pod"]


def _gpus(pod: dict[str, Any]) -> int:
    return int(pod["spec"]["containers"][0]["resources"]["requests"].get("nvidia.com/gpu", 0))


@pytest.mark.parametrize("order", ["after", "interleaved"])
def test_same_seed_same_scenario_other_seed_other_jobs(bench: ModuleType, order: str) -> None:
    sc = bench.Scenario(nodes=20, services=60, order=order)
    first, again, other = bench.scenario(sc, 3), bench.scenario(sc, 3), bench.scenario(sc, 4)
    assert json.dumps(first) == json.dumps(again)
    assert json.dumps(first) != json.dumps(other)


@pytest.mark.parametrize(
    ("order", "services_first"),
    [pytest.param("after", True, id="after"), pytest.param("interleaved", False, id="interleaved")],
)
def test_scenario_is_what_it_states(bench: ModuleType, order: str, services_first: bool) -> None:
    sc = bench.Scenario(nodes=20, services=60, order=order)
    objects = bench.scenario(sc, 0)
    nodes = [o for o in objects if o["kind"] == "Node"]
    pods = _pods(objects)
    assert len(nodes) == 20
    services = [p for p in pods if p["metadata"]["name"].startswith("infer-")]
    training = [p for p in pods if p["metadata"]["name"].startswith("train-")]
    assert len(services) == 60
    assert {p["metadata"]["annotations"]["qosched.io/gpu-milli"] for p in services} == {"100"}
    # Training: capacity less the services' 6 GPUs' worth, in pods of 1, 2 or 4 GPUs (an 8-GPU
    # job is two 4-GPU workers).
    assert sum(_gpus(p) for p in training) == 20 * 4 - 6
    assert {_gpus(p) for p in training} <= {1, 2, 4}
    jobs = Counter(p["metadata"]["name"].rsplit("-", 1)[0] for p in training)
    assert max(jobs.values()) <= 2
    arrivals = [float(p["metadata"]["annotations"]["qosched.io/arrival-s"]) for p in pods]
    assert arrivals == sorted(arrivals)
    names = [p["metadata"]["name"] for p in pods]
    assert (names[:60] == [p["metadata"]["name"] for p in services]) is services_first


def test_bad_order_is_refused(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="order must be 'after' or 'interleaved'"):
        bench.Scenario(order="random")


@pytest.mark.slow
def test_small_run_prints_both_sides(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "rows.json"
    args = ["--nodes", "12", "--services", "36", "--order", "after", "--settings", "spread,pack"]
    assert bench.main([*args, "--json", str(out)]) == 0
    rows = {r["setting"]: r for r in json.loads(out.read_text())}
    assert rows["pack"]["inference_gpus"] < rows["spread"]["inference_gpus"]
    assert rows["pack"]["training_gpus_placed"] > rows["spread"]["training_gpus_placed"]
    for row in rows.values():
        assert row["services_slo_met"] == row["services"] == 36
    assert "| after | pack |" in capsys.readouterr().out
