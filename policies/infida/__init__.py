"""INFIDA: online allocation of model variants across the nodes of an inference delivery network.

Si Salem, Castellano, Neglia, Pianese, Araldo, "Towards Inference Delivery Networks: Distributing
Machine Learning with Optimality Guarantees" (arXiv 2105.02510; IEEE/ACM ToN 2023), models.md §E.

Modules, in the order a window is processed:

- :mod:`.catalog` — the nodes, their memory budgets, the (node, variant) slots the allocator may
  load, and the cost of serving a request of a service with a slot (transfer + inference +
  accuracy penalty).
- :mod:`.gain` — the request table of a window (each request type's options along its path,
  sorted by cost), the gain of a fractional allocation and its subgradient.
- :mod:`.projection` — the negative-entropy (KL) Bregman projection onto
  ``{Σ mem·y ≤ budget, 0 ≤ y ≤ 1}``.
- :mod:`.rounding` — dependent rounding of the fractional allocation to an integral one.
- :mod:`.oma` — the online mirror-ascent update and its step size (the regret bound).
- :mod:`.allocators` — INFIDA and the greedy and static baselines behind one interface
  (named ``infida``, ``greedy-allocation``, ``static-allocation`` in
  :data:`qosched.policies.requests.registry.ROUTING_POLICIES`).

Everything here is pure: no clock, no files, no randomness except a ``numpy.random.Generator``
passed in.
"""
