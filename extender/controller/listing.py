"""The controller loops' one read of the cluster: LIST nodes and pods as raw JSON.

``_preload_content=False`` hands back the urllib3 response (JSON bytes): the loops read
annotations and labels with :mod:`qosched.extender.kube.objects`, as the extender's cache does,
and the official client's model objects (slow to build for thousands of pods) are skipped.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import CoreV1Api


def list_nodes_and_pods(core: CoreV1Api, pod_namespace: str | None = None) -> tuple[list[Any], list[Any]]:
    """``(nodes, pods)`` as JSON objects; the pods of ``pod_namespace`` only when one is given."""
    raw_nodes: Any = core.list_node(_preload_content=False)
    raw_pods: Any = (
        core.list_namespaced_pod(pod_namespace, _preload_content=False)
        if pod_namespace
        else core.list_pod_for_all_namespaces(_preload_content=False)
    )
    return json.loads(raw_nodes.data)["items"], json.loads(raw_pods.data)["items"]
