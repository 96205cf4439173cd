"""Named request-level policies of the what-if, and the run of a set of them (pure).

:data:`ROUTING_POLICIES` is the one table from name to factory (``factory(setup) ->
RoutingPolicy``), complete in every process whatever was imported first: ``always-end``,
``always-edge``, ``always-cloud``, ``greedy``, ``online`` (issue 13) and INFIDA's ``infida``,
``greedy-allocation``, ``static-allocation`` (issue 14; their factories import
:mod:`qosched.policies.infida.routing` when called, since that package builds on this one).
``best-static`` is computed in hindsight by :func:`run_policies` (it needs runs of the others'
kind, see :mod:`.evaluate`). Adding a request-level policy is one module plus one row here.
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
    "ROUTING_POLICIES",
    "PolicySetup",
    "routing_policy_names",
    "run_policies",
]

BEST_STATIC = "best-static"


@dataclass(frozen=True)
class PolicySetup:
    """What a policy factory gets: the scenario, its own random stream, the allocation window, options."""

    scenario: Scenario
    rng: np.random.Generator
    config: EngineConfig
    window_s: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


Factory = Callable[[PolicySetup], RoutingPolicy]


def _always(tier: str) -> Factory:
    def build(setup: PolicySetup) -> RoutingPolicy:
        return AlwaysTier(setup.scenario, tier)

    return build


def _greedy(setup: PolicySetup) -> RoutingPolicy:
    return Greedy()


def _online(setup: PolicySetup) -> RoutingPolicy:
    from qosched.policies.online.policy import OnlineRouting

    return OnlineRouting(objective=setup.config.objective)


def _allocation(name: str) -> Factory:
    """INFIDA's allocation policies; ``setup.window_s`` is ``--window-s``, ``setup.options`` its
    options (``device_memory_mib``, ``horizon_s``, ...; see :mod:`qosched.policies.infida.routing`)."""

    def build(setup: PolicySetup) -> RoutingPolicy:
        from qosched.policies.infida.routing import make_allocation_policy

        policy: RoutingPolicy = make_allocation_policy(
            name, setup.scenario, setup.rng, window_s=setup.window_s, options=setup.options
        )
        return policy

    return build


#: Every request-level policy by name (``best-static`` aside: it is a hindsight search).
ROUTING_POLICIES: Mapping[str, Factory] = {
    "always-end": _always("end"),
    "always-edge": _always("edge"),
    "always-cloud": _always("cloud"),
    "greedy": _greedy,
    "online": _online,
    "infida": _allocation("infida"),
    "greedy-allocation": _allocation("greedy-allocation"),
    "static-allocation": _allocation("static-allocation"),
}


def routing_policy_names() -> tuple[str, ...]:
    """Every name of the table, plus ``best-static``."""
    return (*ROUTING_POLICIES, BEST_STATIC)


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
        out[name] = run(ROUTING_POLICIES[name](setup))
    return out
