"""The binder protocol, its error, and the in-memory binder: the last step of a scheduling cycle, turning a decision into a bound pod.

``SnapshotBinder`` serves ``qosched serve --cluster FILE``: it applies the binding to the
in-memory snapshot exactly as kube-apiserver would (nodeName set, annotations merged, a second
binding refused). ``KubeBinder`` (``qosched.extender.kube.kube_binder``) talks to a real API server.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from qosched.extender.kube.cache import StaticCluster
from qosched.extender.kube.objects import pod_node


class BindError(Exception):
    """The API server refused a binding. ``conflict_node`` is set when the pod is already bound."""

    def __init__(self, message: str, *, conflict_node: str | None = None, reason: str = "api") -> None:
        super().__init__(message)
        self.conflict_node = conflict_node
        self.reason = reason


class Binder(Protocol):
    """Binds a pod to a node and writes the result annotations, in one API call where possible."""

    def bind(
        self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None: ...


class SnapshotBinder:
    """Binds pods of a static snapshot in memory; refuses a second binding like the API server."""

    def __init__(self, cluster: StaticCluster) -> None:
        self.cluster = cluster
        self._lock = threading.Lock()
        self.bindings: list[tuple[str, str, str, dict[str, str]]] = []

    def bind(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]) -> None:
        with self._lock:
            pod = self.cluster.pod(uid) or self.cluster.pod_by_name(namespace, name)
            if pod is None:
                raise BindError(f'pods "{name}" not found', reason="not_found")
            pod_uid = str((pod.get("metadata") or {}).get("uid") or "")
            if uid and pod_uid and pod_uid != uid:
                raise BindError(
                    f"precondition failed: UID in precondition {uid} does not match {pod_uid}",
                    reason="conflict",
                )
            bound = pod_node(pod)
            if bound is not None:
                raise BindError(
                    f"pod {name} is already assigned to node {bound!r}",
                    conflict_node=bound,
                    reason="conflict",
                )
            self.cluster.record_binding(pod_uid or uid, node, annotations)
            self.bindings.append((f"{namespace}/{name}", uid, node, dict(annotations)))


__all__ = ["BindError", "Binder", "SnapshotBinder"]
