"""Which pod an ``Allocate`` is for. The kubelet names only device IDs, not the pod, so the plugin
finds it the way gpushare and HAMi do: among the pods bound to this node.

Matching rule, for a request of ``n`` units of ``qosched.io/gpu-share``:

1. list the pods on this node (``fieldSelector=spec.nodeName=<node>``: the only pods the
   plugin ever reads);
2. candidates: pods still ``Pending`` (the kubelet allocates before any container starts), not
   being deleted, with a container whose ``limits`` hold exactly ``n`` units and which this
   plugin has not answered yet (``(pod UID, container)`` remembered);
3. of those, only pods bound by qosched (``qosched.io/device`` set at bind) qualify; if none
   does but some candidate exists, that is the clear error "not bound by qosched";
4. the oldest qualifying pod (``creationTimestamp``, then namespace/name) wins.

Race handling: the kubelet admits one pod at a time and calls ``Allocate`` serially, so two
``Allocate`` calls never race inside the plugin (a lock makes sure). Two pending pods with the
same ``n`` on one node are the only ambiguity; if both were bound to the same devices and
share, either answer is the same; otherwise the oldest is taken first, which is the kubelet's
own order for pods bound one after the other (it admits pods in the order it sees them). The
chosen pod is written into the container's CRI annotation ``qosched.io/allocated-for``.
Remembered answers are forgotten once their pod leaves ``Pending`` or this node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qosched.extender.deviceplugin.allocation import AllocationError
from qosched.extender.kube.objects import A_DEVICE, GPU_SHARE_RESOURCE, annotations_of, pod_key

PodLister = Callable[[], list[dict[str, Any]]]


def _share_units(container: Mapping[str, Any]) -> int | None:
    resources = container.get("resources") or {}
    raw = (resources.get("limits") or {}).get(GPU_SHARE_RESOURCE)
    if raw is None:
        raw = (resources.get("requests") or {}).get(GPU_SHARE_RESOURCE)
    try:
        return int(str(raw)) if raw is not None else None
    except ValueError:
        return None


def _uid(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or pod_key(pod))


def _pending(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    return (pod.get("status") or {}).get("phase", "Pending") == "Pending" and not meta.get(
        "deletionTimestamp"
    )


def _age_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), pod_key(pod))


@dataclass(frozen=True, slots=True)
class Match:
    pod: dict[str, Any]
    container: str


@dataclass
class PodMatcher:
    """The matching rule of the module docstring, with its memory of answered containers."""

    list_pods: PodLister
    node: str
    answered: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _candidates(self, pods: Iterable[dict[str, Any]], units: int) -> list[Match]:
        out = []
        for pod in pods:
            if not _pending(pod):
                continue
            for c in (pod.get("spec") or {}).get("containers") or []:
                key = (_uid(pod), str(c.get("name")))
                if _share_units(c) == units and key not in self.answered:
                    out.append(Match(pod, str(c.get("name"))))
        return sorted(out, key=lambda m: _age_key(m.pod))

    def match(self, units: int, plan: Callable[[dict[str, Any]], Any]) -> tuple[Match, Any]:
        """Find the pod for a request of ``units`` and build its plan; remember it on success."""
        with self.lock:
            pods = self.list_pods()
            live = {_uid(p) for p in pods if _pending(p)}
            self.answered = {k for k in self.answered if k[0] in live}
            candidates = self._candidates(pods, units)
            bound = [m for m in candidates if A_DEVICE in annotations_of(m.pod)]
            if not bound:
                raise AllocationError(self._no_pod_message(units, candidates))
            chosen = bound[0]
            result = plan(chosen.pod)  # raises AllocationError: nothing is remembered then
            self.answered.add((_uid(chosen.pod), chosen.container))
            return chosen, result

    def _no_pod_message(self, units: int, candidates: list[Match]) -> str:
        if candidates:
            names = ", ".join(sorted({pod_key(m.pod) for m in candidates}))
            return (
                f"pod {names} requests {units} {GPU_SHARE_RESOURCE} but was not bound by qosched "
                f"(no {A_DEVICE} annotation): schedule it with schedulerName: qosched"
            )
        return (
            f"no pending pod on node {self.node} requests {units} {GPU_SHARE_RESOURCE} and was bound "
            "by qosched; refusing to hand out a GPU qosched did not choose"
        )
