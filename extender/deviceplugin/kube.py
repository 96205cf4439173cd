"""The plugin's two API reads, with the official client: the pods on this node (field selector
``spec.nodeName``; RBAC cannot narrow ``list pods`` to one node, the code never asks for more)
and this node's ``qosched.io/sharing`` label."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from qosched.extender.kube.objects import L_SHARING
from qosched.policies.types import DEFAULT_SHARING, SHARING_MODES

#: Seconds an API call may take: the kubelet waits for Allocate while it admits the pod.
API_TIMEOUT_S = 10


def pod_lister(api_client: Any, node: str) -> Callable[[], list[dict[str, Any]]]:
    """``list()`` → the pods bound to ``node``, as API-shaped dicts (camelCase, like the wire)."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)

    def list_pods() -> list[dict[str, Any]]:
        resp: Any = core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}", _preload_content=False, _request_timeout=API_TIMEOUT_S
        )
        try:
            return list(json.loads(resp.data).get("items") or [])
        finally:
            resp.release_conn()

    return list_pods


def sharing_reader(api_client: Any, node: str) -> Callable[[], str]:
    """``read()`` → the node's sharing mode (contract §1; ``time-slicing`` when unlabelled)."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)

    def read() -> str:
        meta = core.read_node(node, _request_timeout=API_TIMEOUT_S).metadata
        labels = (meta.labels if meta is not None else None) or {}
        sharing = labels.get(L_SHARING) or DEFAULT_SHARING
        return sharing if sharing in SHARING_MODES else DEFAULT_SHARING

    return read
