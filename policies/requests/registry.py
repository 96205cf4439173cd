"""Named request-level policies of the what-if, and the run of a set of them (pure).

``register_routing_policy(name, factory)`` adds a policy: ``factory(setup) -> RoutingPolicy``.
Built in: ``always-end``, ``always-edge``, ``always-cloud``, ``greedy``, ``online``;
``best-static`` is computed in hindsight by :func:`run_policies` (it needs runs of the others'
kind, see :mod:`.evaluate`). Other packages (INFIDA's allocation policies) register theirs on
import; the shell imports :data:`POLICY_PACKAGES` first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qosched.policies.requests.engine import EngineConfig, RunRecords, simulate_requests
from qosched.policies.requests.evaluate import best_static
from qosched.policies.requests.inputs import NetworkTrace, Requests
from qosched.policies.requests.routing import AlwaysTier, Greedy, RoutingPolicy
from qosched.policies.requests.scenario import Scenario

__all__ = [
    "BEST_STATIC",
    "POLICY_PACKAGES",
    "PolicySetup",
    "register_routing_policy",
    "routing_policy_names",
    "run_policies",
]

BEST_STATIC = "best-static"
#: Packages whose import registers more request-level policies (absent ones are skipped).
POLICY_PACKAGES: tuple[str, ...] = ("qosched.policies.infida",)


@dataclass(frozen=True)
class PolicySetup:
    """What a policy factory gets: the scenario, its own random stream, the allocation window, options."""

    scenario: Scenario
    rng: np.random.Generator
    config: EngineConfig
    window_s: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


Factory = Callable[[PolicySetup], RoutingPolicy]
_FACTORIES: dict[str, Factory] = {}


def register_routing_policy(name: str, factory: Factory) -> None:
    """Register (or replace) a request-level policy under ``name``."""
    _FACTORIES[name] = factory


def routing_policy_names() -> tuple[str, ...]:
    """Every registered name, plus ``best-static``."""
    return (*_FACTORIES, BEST_STATIC)


def _online(setup: PolicySetup) -> RoutingPolicy:
    from qosched.policies.online.policy import OnlineRouting

    return OnlineRouting(objective=setup.config.objective)


for _tier in ("end", "edge", "cloud"):
    register_routing_policy(
        f"always-{_tier}",
        lambda setup, tier=_tier: AlwaysTier(setup.scenario, tier),  # type: ignore[misc]
    )
register_routing_policy("greedy", lambda setup: Greedy())
register_routing_policy("online", _online)


def run_policies(
    scenario: Scenario,
    requests: Requests,
    names: Sequence[str],
    *,
    seed: int,
    network: NetworkTrace | None = None,
    config: EngineConfig | None = None,
    window_s: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, RunRecords]:
    """Run each named policy on the same requests; every run draws service times from ``seed``.

    Raises ``KeyError`` for an unknown name (the message lists the known ones).
    """
    config = config or EngineConfig()
    unknown = [n for n in names if n not in routing_policy_names()]
    if unknown:
        raise KeyError(
            f"unknown request policy {', '.join(unknown)}; known: {', '.join(routing_policy_names())}"
        )

    def run(policy: RoutingPolicy) -> RunRecords:
        return simulate_requests(scenario, requests, policy, np.random.default_rng(seed), network, config)

    out: dict[str, RunRecords] = {}
    for i, name in enumerate(names):
        if name == BEST_STATIC:
            out[name] = best_static(scenario, run)[1]
            continue
        setup = PolicySetup(scenario, np.random.default_rng([seed, i]), config, window_s, options or {})
        out[name] = run(_FACTORIES[name](setup))
    return out
