"""QoE control (DQoES, ``models.md`` §C): the pure control law that moves device shares between
co-located services toward their latency targets, and a simulated plant to study it.

- :mod:`.law`   — :func:`control_step` (demand by inversion, fair allocation under capacity with
  the cvxpy :class:`~qosched.policies.fairness.shares.FairShareSolver`, damping, step limit,
  bounds, dead band); the convergence argument is in its module docstring.
- :mod:`.plant` — M/M/1 services whose service rate scales with their share, and
  :func:`run_closed_loop` to iterate the law against them.

Pure: no clock, no I/O. The controller that reads Prometheus and patches pods is
:mod:`qosched.extender.controller.loop`.
"""

from qosched.policies.control.law import (
    Action,
    ControlSettings,
    ControlStep,
    Inversion,
    ServiceInput,
    control_step,
    demand_mm1,
    demand_power,
    percentile_factor,
)
from qosched.policies.control.plant import LoopTrace, MM1Plant, run_closed_loop

__all__ = [
    "Action",
    "ControlSettings",
    "ControlStep",
    "Inversion",
    "LoopTrace",
    "MM1Plant",
    "ServiceInput",
    "control_step",
    "demand_mm1",
    "demand_power",
    "percentile_factor",
    "run_closed_loop",
]
