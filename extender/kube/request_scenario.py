"""Kubernetes objects → the request-level scenario's tiered nodes, client links and services.

One reading for every process that builds a request-level scenario from Kubernetes objects: the
request what-if (``qosched whatif --requests`` on a snapshot), the online learner and the INFIDA
allocation in the controller. A node without ``qosched.io/rtt-ms`` / ``qosched.io/bandwidth-mbps``
gets the default link (:data:`DEFAULT_RTT_MS`, :data:`DEFAULT_BANDWIDTH_MBPS`: a LAN next to the
client); a service whose pods say no ``qosched.io/input-kb`` sends ``DEFAULT_INPUT_KB`` per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qosched.extender.kube.objects import node_link, node_view
from qosched.policies.latency.cpu_node import cpu_cores
from qosched.policies.requests.scenario import DEFAULT_INPUT_KB, Link, ServiceDef, TierNode
from qosched.policies.simulator.requests import mode_for
from qosched.policies.types import PodDemand

#: Link of a tiered node whose annotations say nothing (a LAN next to the client).
DEFAULT_RTT_MS = 0.5
DEFAULT_BANDWIDTH_MBPS = 1000.0


def node_client_link(obj: Mapping[str, Any]) -> Link:
    """The client's link to a node: its annotated RTT and bandwidth, the defaults where absent.

    Raises ``ValueError`` naming the node and the key for a bad value (:func:`node_link`).
    """
    rtt, bandwidth = node_link(obj)
    return Link(
        DEFAULT_RTT_MS if rtt is None else rtt,
        DEFAULT_BANDWIDTH_MBPS if bandwidth is None else bandwidth,
    )


def tier_node(obj: Mapping[str, Any]) -> TierNode | None:
    """The node as a :class:`TierNode`; None unless it has a tier, an accelerator and is schedulable.

    Its queue is ``mode_for(accelerator, sharing)``; at least one device; a CPU node's cores are
    ``cpu_cores`` of its allocatable CPU. Raises ``ValueError``
    (``ScenarioError`` included) naming the node for a bad label or annotation.
    """
    view = node_view(obj)
    if view.tier is None or view.accelerator is None or not view.schedulable:
        return None
    mode = mode_for(view.accelerator, view.sharing)
    return TierNode(
        view.name,
        view.tier,
        view.accelerator,
        max(1, view.device_count),
        node_client_link(obj),
        mode,
        int(cpu_cores(view.cpu_milli)) if mode == "cpu" else 1,
    )


def service_def(name: str, demand: PodDemand, slo_ms: float, input_kb: float | None) -> ServiceDef:
    """Service ``name`` as its pod asks: the pod's variants, SLO and accuracy floor, its input size
    (``DEFAULT_INPUT_KB`` when the pod names none). ``slo_ms`` is the pod's, checked by the caller
    (a routed service needs one; what a pod without one means is the caller's rule)."""
    return ServiceDef(
        name,
        demand.variants,
        slo_ms,
        demand.min_accuracy,
        DEFAULT_INPUT_KB if input_kb is None else input_kb,
    )
