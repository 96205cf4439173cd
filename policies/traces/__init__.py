"""Cluster traces for the what-if simulator: the Alibaba GPU trace v2023 ("openb") and FGD's inflation.

See :mod:`qosched.policies.traces.openb` (loader) and :mod:`qosched.policies.traces.inflate`
(growing the workload past 100 % of the GPU capacity, as the FGD paper does).
"""

from qosched.policies.traces.inflate import (
    InflatedWorkload,
    arrived_gpu_fraction,
    inflate_workload,
    tune_workload,
)
from qosched.policies.traces.openb import (
    ClusterCapacity,
    NodeTable,
    PodTable,
    TraceFormatError,
    TraceNode,
    TracePod,
    cluster_capacity,
    load_node_table,
    load_nodes,
    load_pod_table,
    load_pods,
)

__all__ = [
    "ClusterCapacity",
    "InflatedWorkload",
    "NodeTable",
    "PodTable",
    "TraceFormatError",
    "TraceNode",
    "TracePod",
    "arrived_gpu_fraction",
    "cluster_capacity",
    "inflate_workload",
    "load_node_table",
    "load_nodes",
    "load_pod_table",
    "load_pods",
    "tune_workload",
]
