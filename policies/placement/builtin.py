"""Imports every built-in policy module so that each registers its contract name.

Registered names (``policy_names()``): ``default``, ``binpack``, ``knapsack-first-fit``,
``knapsack-best-fit``, ``knapsack-worst-fit``, ``random``, ``dot-product``, ``gpu-clustering``,
``gpu-packing``, ``best-fit``, ``fgd``, ``qosched``, ``ibis-pack``, ``ibis-spread``,
``ibis-hetero``. (``priority`` and ``qos-driven`` are registered by their own package, which
reuses :func:`qosched.policies.placement.baselines.kube.worst_fit_evaluation`.)
"""

from qosched.policies.placement.baselines import fgd_baselines, knapsack, kube, random_choice
from qosched.policies.placement.fgd import policy as fgd_policy
from qosched.policies.placement.ibis import policies as ibis_policies
from qosched.policies.placement.qosched import policy as qosched_policy

__all__ = [
    "fgd_baselines",
    "fgd_policy",
    "ibis_policies",
    "knapsack",
    "kube",
    "qosched_policy",
    "random_choice",
]
