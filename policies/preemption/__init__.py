"""Queue order and preemption: the ``priority`` and ``qos-driven`` policies (``models.md`` §B).

- :mod:`.queue`      — pending-queue orders and the expected wait (predicted pause) per class;
- :mod:`.victims`    — victim facts, the rule protocol, the greedy-then-reprieve minimal set;
- :mod:`.room`       — resource arithmetic "fits once these pods are gone" (vectorised);
- :mod:`.search`     — the cluster-wide victim search of the what-if replay;
- :mod:`.base`       — :class:`PreemptivePolicy`: host choice + queue + rule, the replay hooks;
- :mod:`.priority`   — ``priority`` (class always wins, most recent first; worst fit);
- :mod:`.qos_driven` — ``qos-driven`` (class, then QoS; slack-respecting victims; worst fit)
  and the preemptive ``qosched``;
- :mod:`.live`       — the extender's ``preempt`` decision on kube-scheduler's proposal, with
  QoS estimated from pod timestamps.

Importing this package registers ``priority`` and ``qos-driven`` with
:func:`qosched.policies.placement.base.register`. Everything here is pure: time is passed in.
"""

from qosched.policies.preemption.base import (
    LedgerFacts,
    PauseModel,
    PreemptivePolicy,
    SchedulerConfig,
    ledger_facts,
)
from qosched.policies.preemption.live import (
    CallableFit,
    FitOracle,
    LiveConfig,
    LivePod,
    LiveVerdict,
    live_qos,
    preemptor_of,
    trim_proposal,
)
from qosched.policies.preemption.priority import PriorityPolicy, PriorityRule
from qosched.policies.preemption.qos_driven import (
    QosDrivenHooks,
    QosDrivenPolicy,
    QosDrivenRule,
    preemptive_qosched,
)
from qosched.policies.preemption.queue import expected_wait_s, priority_order, qos_driven_order
from qosched.policies.preemption.search import (
    SearchConfig,
    VictimChoice,
    fits_many_with_policy,
    fits_with_policy,
    search_victims,
)
from qosched.policies.preemption.victims import Preemptor, VictimFacts, VictimRule, minimal_subset

__all__ = [
    "CallableFit",
    "FitOracle",
    "LedgerFacts",
    "LiveConfig",
    "LivePod",
    "LiveVerdict",
    "PauseModel",
    "PreemptivePolicy",
    "Preemptor",
    "PriorityPolicy",
    "PriorityRule",
    "QosDrivenHooks",
    "QosDrivenPolicy",
    "QosDrivenRule",
    "SchedulerConfig",
    "SearchConfig",
    "VictimChoice",
    "VictimFacts",
    "VictimRule",
    "expected_wait_s",
    "fits_many_with_policy",
    "fits_with_policy",
    "ledger_facts",
    "live_qos",
    "minimal_subset",
    "preemptive_qosched",
    "preemptor_of",
    "priority_order",
    "qos_driven_order",
    "search_victims",
    "trim_proposal",
]
