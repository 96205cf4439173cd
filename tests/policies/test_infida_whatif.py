"""INFIDA in the request-level what-if: the network built from a scenario, the routing policies on
the engine, and the regret helpers (model level)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qosched.policies.infida.allocators import GreedyAllocator, InfidaAllocator, StaticAllocator
from qosched.policies.infida.catalog import CAPACITY_UTILIZATION
from qosched.policies.infida.oma import gradient_bound_per_mib, step_size
from qosched.policies.infida.regret import best_fixed_gain, run_sequence
from qosched.policies.infida.routing import allocation_model, make_allocation_policy
from qosched.policies.requests.engine import simulate_requests
from qosched.policies.requests.inputs import Requests
from qosched.policies.requests.scenario import Link, Scenario, ServiceDef, TierNode
from qosched.policies.state import ServiceParams

#: (accelerator, model) → (service_ms, memory_mib, accuracy); device memory per accelerator.
PROFILES = {
    ("jetson-nano", "resnet18"): (10.8, 930.0, 0.69758),
    ("jetson-nano", "resnet50"): (29.4, 965.0, 0.7613),
    ("nvidia-t4", "resnet18"): (1.103, 930.0, 0.69758),
    ("nvidia-t4", "resnet50"): (3.003, 965.0, 0.7613),
    ("nvidia-a100", "resnet18"): (0.782, 930.0, 0.69758),
    ("nvidia-a100", "resnet50"): (2.128, 965.0, 0.7613),
}
DEVICE_MIB = {"jetson-nano": 4096.0, "nvidia-t4": 2048.0, "nvidia-a100": 81920.0}


def lookup(accelerator: str, model: str) -> ServiceParams | None:
    p = PROFILES.get((accelerator, model))
    return None if p is None else ServiceParams(p[0], p[0] ** 2, memory_mib=p[1], accuracy=p[2])


def scenario(services: int = 3) -> Scenario:
    nodes = [
        TierNode("jetson", "end", "jetson-nano", 1, Link(0.5, 1000.0)),
        TierNode("t4", "edge", "nvidia-t4", 1, Link(10.0, 100.0)),
        TierNode("cloud", "cloud", "nvidia-a100", 4, Link(40.0, 200.0)),
    ]
    svcs = [ServiceDef(f"s{i}", ("resnet50", "resnet18"), 200.0, 0.69, 150.0) for i in range(services)]
    return Scenario.build(nodes, svcs, lookup)


def test_model_budgets_slots_capacity_and_repository() -> None:
    model = allocation_model(scenario(), DEVICE_MIB.__getitem__, accuracy_weight_ms_per_pp=2.0)
    budgets = {n.name: n.budget_mib for n in model.catalog.nodes}
    assert budgets == {"jetson": pytest.approx(0.8 * 4096), "t4": pytest.approx(0.8 * 2048)}
    # T4 ResNet-50: 22 ms transfer + 3·3.003 at ρ = 0.8 ≪ the cloud's 46 + 3·2.128: kept for all;
    # Jetson ResNet-50 (1.7 + 88 ms) is dearer than the cloud: left out
    keys = {(s.node, s.model) for s in model.catalog.slots}
    assert ("t4", "s0/resnet50") in keys
    assert ("jetson", "s0/resnet50") not in keys
    i = model.catalog.index()[("t4", "s0/resnet50")]
    share = 965.0 / (0.8 * 2048)
    assert model.catalog.capacity_rps[i] == pytest.approx(CAPACITY_UTILIZATION * 1000 / 3.003 * share)
    assert {s: a.variant for s, a in model.repository.items()} == dict.fromkeys(
        ("s0", "s1", "s2"), "resnet50"
    )
    assert all(a.tier == "cloud" for a in model.repository.values())
    assert all(t.path == ("jetson", "t4", "cloud") for t in model.types)


def _requests(hot: str, n: int, duration_s: float) -> Requests:
    t = np.linspace(0.0, duration_s, n, endpoint=False)
    return Requests(t, tuple(hot for _ in range(n)), np.full(n, math.nan))


@pytest.mark.parametrize("name", ["infida", "greedy-allocation", "static-allocation"])
def test_policies_run_on_the_engine_and_report_the_allocation(name: str) -> None:
    sc = scenario()
    reqs = _requests("s1", 300, 30.0)
    options = {
        "device_memory_mib": DEVICE_MIB.__getitem__,
        "horizon_s": 30.0,
        "max_requests_per_window": 100.0,
    }
    policy = make_allocation_policy(name, sc, np.random.default_rng(0), window_s=10.0, options=options)
    rec = simulate_requests(sc, reqs, policy, np.random.default_rng(1))
    alloc = rec.extra["allocation"]
    assert {"gain", "mean_response_ms", "served_by_tier", "reallocations"} <= set(alloc)
    assert sum(alloc["served_by_tier"].values()) == 300 == int(rec.served.sum())
    assert alloc["mean_response_ms"] == pytest.approx(float(rec.response_ms.mean()))
    assert alloc["windows"] == 3
    series = rec.extra["allocation_series"]
    assert len(series["gain_ms"]) == 3
    assert series["requests"][0][1] == 100
    if name != "infida":
        # nothing is loaded in the first window; from the second the hot service's ResNet-50 is on the T4
        assert series["loaded"][0] == [0.0, 0.0, 0.0]
        assert series["loaded"][1][1] >= 1.0
        assert alloc["served_by_tier"]["edge"] >= 190
        assert alloc["gain"] > 0


def test_make_allocation_policy_needs_device_memory() -> None:
    with pytest.raises(ValueError, match="device_memory_mib"):
        make_allocation_policy("infida", scenario(), np.random.default_rng(0), window_s=10.0, options={})


def test_regret_on_an_alternating_sequence() -> None:
    """Two halves of the services alternate as the hot set: greedy always holds the wrong half."""
    model = allocation_model(scenario(4), DEVICE_MIB.__getitem__)
    table = model.table(model.base_links())
    a = np.array([50.0, 50.0, 2.0, 2.0])
    counts = [a if t % 2 == 0 else a[::-1].copy() for t in range(40)]
    best = best_fixed_gain(model.catalog, table, counts, 10.0, integral=True)
    greedy = run_sequence(GreedyAllocator(model.catalog), model.catalog, table, counts, 10.0)
    static = run_sequence(StaticAllocator(model.catalog), model.catalog, table, counts, 10.0)
    bound = gradient_bound_per_mib(model.catalog, model.gap_ms(), 50.0, 10.0)
    eta = step_size(model.catalog, bound, len(counts))
    infida = run_sequence(
        InfidaAllocator(model.catalog, eta.eta, np.random.default_rng(0)), model.catalog, table, counts, 10.0
    )
    assert best >= static.integral.sum() - 1e-6
    assert greedy.integral.sum() < static.integral.sum()
    best_frac = best_fixed_gain(model.catalog, table, counts, 10.0, integral=False)
    assert infida.fractional is not None
    assert best_frac - infida.fractional.sum() <= eta.regret_bound


@pytest.mark.parametrize(
    ("options", "adaptive", "network"),
    [
        ({}, True, True),
        ({"step": "theorem", "rounding": "node"}, False, False),
        ({"step": "adaptive", "rounding": "node"}, True, False),
    ],
    ids=["default", "paper", "adaptive-node"],
)
def test_infida_step_and_rounding_options(options: dict[str, str], adaptive: bool, network: bool) -> None:
    base = {"device_memory_mib": DEVICE_MIB.__getitem__, "horizon_s": 30.0, "max_requests_per_window": 100.0}
    policy = make_allocation_policy(
        "infida", scenario(), np.random.default_rng(0), window_s=10.0, options={**base, **options}
    )
    alloc = policy.allocator
    assert isinstance(alloc, InfidaAllocator)
    assert (alloc.adaptive is not None) is adaptive
    assert (alloc.groups is not None) is network
    if network:
        assert alloc.groups is not None
        assert alloc.groups.tolist() == [int(k[0][1:]) for k in policy.model.slot_key]
    if adaptive:
        assert alloc.adaptive is not None
        assert policy.eta == pytest.approx(alloc.adaptive.eta(0.0))


def test_infida_rejects_unknown_step() -> None:
    options = {"device_memory_mib": DEVICE_MIB.__getitem__, "step": "fast"}
    with pytest.raises(ValueError, match=r"step must be adaptive\|theorem"):
        make_allocation_policy("infida", scenario(), np.random.default_rng(0), window_s=10.0, options=options)
