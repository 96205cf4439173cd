"""QoS accounting and fairness for qosched (``models.md`` §B, §C).

- :mod:`.classes` — service classes (prod/batch/free), their targets and ranks, mapping pods
  (annotation, priority class) and trace rows to classes.
- :mod:`.qos` — delivered QoS (availability × SLO attainment), surplus, pause slack.
- :mod:`.gini` — within-class Gini coefficient, O(n log n), and incremental "what if" summaries.
- :mod:`.penalty` — SLA credits with cloud-style tiers.
- :mod:`.shares` — fair device shares (two-stage LP with cvxpy) and the placement-time
  fairness term (closed form, no solver).

Everything here is pure: no clock, no I/O, no global mutable state.
"""

from qosched.policies.fairness.classes import (
    CLASS_ANNOTATION,
    DEFAULT_CLASS_CONFIG,
    ClassConfig,
    ServiceClass,
    UnknownClassError,
)
from qosched.policies.fairness.gini import GiniSummary, gini, gini_by_class
from qosched.policies.fairness.penalty import ResourcePrices, SlaTiers, price_per_hour_usd, sla_credit_usd
from qosched.policies.fairness.qos import (
    availability,
    delivered_qos,
    has_slack,
    max_pause_s,
    qos_after_pause,
    qos_surplus,
)
from qosched.policies.fairness.shares import (
    FairnessSnapshot,
    FairShareSolver,
    FairShareSolverCache,
    SharesResult,
    fairness_term,
)

__all__ = [
    "CLASS_ANNOTATION",
    "DEFAULT_CLASS_CONFIG",
    "ClassConfig",
    "FairShareSolver",
    "FairShareSolverCache",
    "FairnessSnapshot",
    "GiniSummary",
    "ResourcePrices",
    "ServiceClass",
    "SharesResult",
    "SlaTiers",
    "UnknownClassError",
    "availability",
    "delivered_qos",
    "fairness_term",
    "gini",
    "gini_by_class",
    "has_slack",
    "max_pause_s",
    "price_per_hour_usd",
    "qos_after_pause",
    "qos_surplus",
    "sla_credit_usd",
]
