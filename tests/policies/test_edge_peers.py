"""Never below a simpler peer: ``qosched`` on edge clusters against ``ibis-pack/-spread/-hetero``.

The edge score (:mod:`qosched.policies.placement.qosched.edge_share`) checked by hand, the
scenario generator (:mod:`qosched.policies.simulator.edge_scenarios`), and services hosted with
no simulated SLO violation on the shipped edge cluster and on generated ones, measured as
``qosched whatif`` measures them (benchmarks/bench_edge_peers.py runs the full grid;
docs/placement.md, "Never below a simpler peer").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from qosched.extender.cli.whatif import load_classes, workload_from_snapshot
from qosched.policies.placement.base import best_candidate, make_policy
from qosched.policies.placement.testing import ProfileTable, gpu_node, inference_pod, state_with
from qosched.policies.simulator.edge_scenarios import EDGE_MODELS, edge_workload, snapshot_document
from qosched.policies.state import ServiceParams

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_edge_peers import PEERS, SHIPPED, services_met  # noqa: E402

# A Jetson (4,000 MiB, time slicing) and an 8-core CPU node that can both serve resnet18.
TABLE = ProfileTable(
    {
        ("jetson-nano", "resnet18"): ServiceParams(
            service_ms=10.0, second_moment_ms2=100.0, memory_mib=900.0
        ),
        ("cpu", "resnet18"): ServiceParams(service_ms=50.0, second_moment_ms2=2500.0, memory_mib=80.0),
    },
    {"jetson-nano": 4000.0, "cpu": 16000.0},
)
NODES = [
    gpu_node("nano", accelerator="jetson-nano", cpu_milli=4000, memory_mib=4096.0),
    gpu_node("cpu", accelerator="cpu", cpu_milli=8000, memory_mib=16384.0),
]
POD = inference_pod("s", "resnet18", rate_rps=8.0, slo_ms=400.0, cpu_milli=250, memory_mib=128.0)


def test_edge_score_takes_the_device_it_costs_least_of() -> None:
    # Jetson: memory 900/(0.8·4000) = 0.28125 binds (ρ: 8·0.010/0.8 = 0.1): c = a = 0.28125.
    # CPU:    ρ = 8·0.050/8 cores = 0.05 → 0.0625 binds (memory 80/12,800): c = a = 0.0625.
    # s = −(c + 0.5·a). Slack alone (the old rule) preferred the Jetson: 0.974 against 0.833.
    ev = make_policy("qosched").evaluate(state_with(NODES, TABLE), POD, np.arange(2))
    np.testing.assert_allclose(ev.raw_score, [-1.5 * 0.28125, -1.5 * 0.0625], rtol=1e-9)
    assert ev.extras["slack_frac"][0] > ev.extras["slack_frac"][1]
    assert best_candidate(ev) == 1


def test_edge_score_leaves_gpu_requests_and_plain_pods_alone() -> None:
    # A pod asking for a GPU share is scored by ΔF, σ (and packing) as before: no edge score.
    pod = inference_pod("g", "resnet18", rate_rps=8.0, slo_ms=400.0, gpu_milli=100)
    table = ProfileTable(
        {("nvidia-t4", "resnet18"): TABLE.params[("jetson-nano", "resnet18")]}, {"nvidia-t4": 16e3}
    )
    ev = make_policy("qosched", gpu_consolidation="spread").evaluate(
        state_with([gpu_node("a"), gpu_node("b")], table), pod, np.arange(2)
    )
    np.testing.assert_allclose(ev.raw_score, ev.extras["slack_frac"] + 0.0, rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 7, 123], ids=lambda s: f"seed{s}")
def test_generator_is_a_function_of_its_seed(seed: int) -> None:
    a, shape = edge_workload(seed)
    b, _ = edge_workload(seed)
    assert a.nodes == b.nodes
    assert a.pods == b.pods
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.duration_s, b.duration_s)
    assert 2 <= shape.tpus <= 10
    assert 1 <= shape.nanos <= 8
    assert 0 <= shape.cpus <= 3
    assert 40 <= shape.services <= 140
    assert {p.variants[0] for p in a.pods} <= set(EDGE_MODELS)
    assert edge_workload(seed + 1)[0].pods != a.pods


def test_generated_scenario_replays_from_its_snapshot_file(tmp_path: Path) -> None:
    workload, _ = edge_workload(3)
    path = tmp_path / "edge-3.yaml"
    path.write_text(yaml.safe_dump(snapshot_document(workload), sort_keys=False))
    parsed = workload_from_snapshot(path, load_classes(None))
    assert parsed.nodes == workload.nodes
    keys = ("variants", "slo_ms", "rate_rps", "qos_class", "cpu_milli", "memory_mib")
    assert [tuple(getattr(p, k) for k in keys) for p in parsed.pods] == [
        tuple(getattr(p, k) for k in keys) for p in workload.pods
    ]
    np.testing.assert_array_equal(parsed.duration_s, workload.duration_s)


def _margins(workload_scales: list[tuple[str, object]]) -> dict[str, tuple[int, int]]:
    out = {}
    for cell, workload in workload_scales:
        met = {p: services_met(workload, p)[0] for p in ("qosched", *PEERS)}  # type: ignore[arg-type]
        out[cell] = (met["qosched"], max(met[p] for p in PEERS))
    return out


@pytest.mark.slow
def test_shipped_edge_cluster_never_below_a_peer() -> None:
    base = workload_from_snapshot(SHIPPED, load_classes(None))
    margins = _margins([(f"x{s}", base.with_rate_scale(s)) for s in (0.25, 0.5, 1.0)])
    assert all(q >= best for q, best in margins.values()), margins


@pytest.mark.slow
def test_generated_edge_scenarios_against_the_best_peer() -> None:
    # The first two generated scenarios (seeds 0 and 1, not chosen) at the three loads. Over all
    # 60 cells of seeds 0-19 qosched is at or above the best peer in 38 and at most 3 below in the
    # others (docs/placement.md); here: at least the best peer's total over the cells, and no cell
    # more than 1 below it (measured: +3, 0, +3, 0, 0, -1). The old slack-only rule fails both
    # (seed 1: 4 and 6 below at x0.25 and x0.5; total 11 below).
    cells = [
        (f"gen-{seed}@{s}", edge_workload(seed)[0].with_rate_scale(s))
        for seed in (0, 1)
        for s in (0.25, 0.5, 1.0)
    ]
    margins = _margins(cells)
    assert sum(q for q, _ in margins.values()) >= sum(best for _, best in margins.values()), margins
    assert all(q >= best - 1 for q, best in margins.values()), margins
