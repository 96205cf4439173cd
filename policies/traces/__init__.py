"""Cluster traces for the what-if simulator: the Alibaba GPU trace v2023 ("openb") and FGD's inflation.

See :mod:`qosched.policies.traces.openb` (parser; the shell's
``qosched.extender.cli.trace_files`` reads the files) and :mod:`qosched.policies.traces.inflate`
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
    OpenbTrace,
    PodTable,
    TraceFormatError,
    TraceNode,
    TracePod,
    cluster_capacity,
    parse_nodes,
    parse_pod_list,
    parse_pods,
)

__all__ = [
    "ClusterCapacity",
    "InflatedWorkload",
    "NodeTable",
    "OpenbTrace",
    "PodTable",
    "TraceFormatError",
    "TraceNode",
    "TracePod",
    "arrived_gpu_fraction",
    "cluster_capacity",
    "inflate_workload",
    "parse_nodes",
    "parse_pod_list",
    "parse_pods",
    "tune_workload",
]
