"""Interference (latency) models of co-located inference services (models.md §A).

- :mod:`.queueing`    closed-form queueing formulas, vectorised (M/D/1, M/M/1, M/G/1, edge TPU
  swap, GPU time slicing, processor sharing, front end);
- :mod:`.sharing`     the batched interface the placement policies call: one prediction per
  co-located service for thousands of devices at once, per sharing mode;
- :mod:`.cpu_node`    the CPU node's service discipline (FCFS server per service, busy servers
  sharing the cores), one definition for the model and the request simulator;
- :mod:`.tail`        percentile latency (for ``qosched.io/slo-percentile``);
- :mod:`.colocation_rule` the placement feasibility rule (memory, utilisation, front end, SLOs);
- :mod:`.calibration` least-squares fit of the contention terms, MAPE, holdout;
- :mod:`.validation`  the maths of checking the models against the Ibis measurements (the tool
  that reads ``shared/data/ibis`` is ``qosched validate-latency``).
"""
