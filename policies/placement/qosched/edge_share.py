r"""Where a service without a GPU request goes: the device whose admitted capacity it uses least.

On an edge cluster (edge TPUs, Jetson Nanos, CPU nodes) a service asks for no milli-GPU, so
FGD's fragmentation increase ΔF is 0 everywhere and, before this term, ``qosched`` chose the
device by latency slack σ alone: the device where the service itself runs fastest against its
SLO. That sends every service that *can* use a Jetson or an edge TPU there, even when a CPU
node (or another device) would host it for a fraction of the capacity; the fast devices fill
with services that had alternatives, and the services that only run there (on the shipped
profiles: GoogLeNet and ResNet-34 only on Jetsons, six models only on edge TPUs) then find no
room. The Ibis policies do not fall into it: ``ibis-hetero`` picks the smallest utilisation
increase, ``ibis-spread`` the idlest device (often an idle CPU node). docs/placement.md, "Never
below a simpler peer", has the trace.

The admission rule (models.md §A) limits a device on several resources at once: device memory
≤ 0.8 of capacity, utilisation ρ ≤ 0.8 (and each SLO). What a placement uses of a device is
therefore its share of the *binding* one, as in dominant-resource fairness:

.. math::

    c = \max\Big(\frac{m}{0.8\,M},\ \frac{\rho_{after} - \rho_{before}}{0.8}\Big), \qquad
    a = \max\Big(\frac{m_{used} + m}{0.8\,M},\ \frac{\rho_{after}}{0.8}\Big)

with m the service's model memory, M the device memory, ρ from the latency models (an edge
TPU's ρ includes the extra model swaps the service causes, a CPU node's is spread over its
cores, a Jetson's is Σ λ·S). A Jetson hosts three ~900 MiB models whatever their rates, so
memory binds there (c ≈ 0.3 per model); an edge TPU is bound by ρ; a CPU node by ρ over its
cores. The edge score is

.. math::

    s_{edge} = -(c + w_a\,a), \qquad w_a = 0.5

the device where the service costs least of what the rule admits (so the device type that
serves it most cheaply, and the services with no alternative keep the rest), and among devices
of about equal cost the emptier one (a, at half the weight: headroom against rate error and
for the next service, as ``ibis-spread`` keeps; w_a = 0.1, 0.5 and 1.0 were tried on the
generated scenarios of docs/placement.md and came out within noise of each other, 0.5 had the
fewest cells below the best peer). The thresholds are the policy's own
(``InterferenceModel.thresholds``).
"""

from __future__ import annotations

import numpy as np

from qosched.policies.latency.colocation_rule import Thresholds
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.feasible_devices import NodeVerdicts
from qosched.policies.placement.interference import new_service

__all__ = ["AFTER_WEIGHT", "EdgeShare", "edge_score", "edge_share"]

#: w_a: weight of the share left in use after the pod, against the share the pod takes.
AFTER_WEIGHT = 0.5


class EdgeShare:
    """Per candidate (arrays (m,)): the admitted share the pod takes (``cost``) and the share in
    use after it (``after``) on the node's chosen device; NaN where no device was chosen."""

    __slots__ = ("after", "cost")

    def __init__(self, cost: np.ndarray, after: np.ndarray) -> None:
        self.cost = cost
        self.after = after


def edge_share(cand: Candidates, verdicts: NodeVerdicts, variant: np.ndarray, th: Thresholds) -> EdgeShare:
    """c and a of the module docstring on each candidate's chosen device (single-device pods).

    ``verdicts`` must carry ``utilization_before`` (the policy judges ``with_before``).
    """
    st = cand.state
    chosen = (verdicts.devices[:, 0] >= 0) & (variant >= 0)
    dev = np.maximum(verdicts.devices[:, 0], 0)
    memory_mib = new_service(cand, np.where(variant >= 0, variant, 0)).memory_mib
    cap = th.memory_frac * np.maximum(st.dev_mem_cap_mib.take(cand.row), 1.0)
    used = st.dev_mem_used_mib.take(cand.row * st.n_devices + dev)
    rho_after = verdicts.utilization / th.utilization
    rho_before = verdicts.utilization_before / th.utilization
    cost = np.maximum(memory_mib / cap, rho_after - rho_before)
    after = np.maximum((used + memory_mib) / cap, rho_after)
    nan = np.full(cand.m, np.nan)
    return EdgeShare(np.where(chosen, cost, nan), np.where(chosen, after, nan))


def edge_score(share: EdgeShare, *, after_weight: float = AFTER_WEIGHT) -> np.ndarray:
    """s_edge = −(c + w_a·a) per candidate; −∞ where no device was chosen."""
    score = -(share.cost + after_weight * share.after)
    return np.where(np.isfinite(score), score, -np.inf)
