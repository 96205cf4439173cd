"""Request-level what-if of an end–edge–cloud deployment (pure): scenario, inputs, engine, policies.

See ``docs/request-whatif.md``. Modules: :mod:`.scenario` (tiers, nodes, links, services,
actions, transfer time), :mod:`.inputs` (REQUESTS / NETWORK rows), :mod:`.routing` (the policy
interface, the objective and the fixed baselines), :mod:`.engine` (the request-by-request
simulation), :mod:`.evaluate` (the ``requests`` summary, ``best-static``, regret),
:mod:`.arrivals` (arrival times from a real trace), :mod:`.hints` (placement hints shared with
the extender).
"""
