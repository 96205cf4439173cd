"""Fragmentation Gradient Descent: workload mix, expected fragmentation, the ``fgd`` policy."""

from qosched.policies.placement.fgd.mix import PodShape, WorkloadLearner, WorkloadMix, shape_of
from qosched.policies.placement.fgd.score import fragmentation_delta, node_fragmentation

__all__ = [
    "PodShape",
    "WorkloadLearner",
    "WorkloadMix",
    "fragmentation_delta",
    "node_fragmentation",
    "shape_of",
]
