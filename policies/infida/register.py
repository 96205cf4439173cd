"""Register ``infida``, ``greedy-allocation`` and ``static-allocation`` with the request-level what-if.

:mod:`qosched.policies.requests.registry` imports this package (its ``POLICY_PACKAGES``), and the
package's ``__init__`` calls :func:`register_whatif_policies`. The factories read
``setup.window_s`` (``--window-s``) and ``setup.options`` (``device_memory_mib``, ``horizon_s``,
``max_requests_per_window``, ``accuracy_weight_ms_per_pp``; see :mod:`.routing`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALLOCATION_POLICIES", "register_whatif_policies"]

ALLOCATION_POLICIES: tuple[str, ...] = ("infida", "greedy-allocation", "static-allocation")


def register_whatif_policies() -> None:
    from qosched.policies.requests.registry import PolicySetup, register_routing_policy

    def factory(name: str) -> Any:
        def build(setup: PolicySetup) -> Any:
            from qosched.policies.infida.routing import make_allocation_policy

            return make_allocation_policy(
                name, setup.scenario, setup.rng, window_s=setup.window_s, options=setup.options
            )

        return build

    for name in ALLOCATION_POLICIES:
        register_routing_policy(name, factory(name))
