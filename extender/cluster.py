"""The cluster snapshot the extender decides on: one cache, fed by a snapshot file or a watch.

``ClusterCache`` owns the ``ClusterState`` arrays (``qosched.policies.state``) and the pod
objects it has seen, and applies node/pod events to them. Two feeders exist and share all of
this: ``StaticCluster`` (a snapshot file, synced at once) and the live watch
(``qosched.extender.watch``), which lists then watches the API server.

Assumptions: after a successful bind the pod is accounted on its node at once (``assume``), so
the next decision sees it before the watch event arrives; the watch confirms it (the pod shows
up bound) or drops it (the pod was deleted, or bound elsewhere), and it expires after
``assume_ttl_s`` if nothing confirms it.

Locking: one ``threading.Lock`` guards the state; it is held only for in-memory work (event
application, a policy evaluation), never across network I/O.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from qosched.extender.objects import (
    ClassMapper,
    default_class_of,
    node_view,
    pod_demand,
    pod_key,
    pod_node,
    running_allocation,
    split_list,
)
from qosched.policies.state import ClusterState, DeviceMemoryLookup, ServiceLookup, StateError
from qosched.policies.types import GPU_MILLI_PER_DEVICE, Allocation, DemandError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheStats:
    nodes: int
    pods: int
    placed: int
    assumed: int
    synced: bool
    version: int


class ClusterCache:
    """Nodes, pods and their accounting; see the module docstring."""

    def __init__(
        self,
        lookup: ServiceLookup,
        device_memory: DeviceMemoryLookup,
        *,
        class_of: ClassMapper = default_class_of,
        assume_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.Lock()
        self._lookup, self._device_memory = lookup, device_memory
        self._class_of = class_of
        self.assume_ttl_s = assume_ttl_s
        self._clock = clock
        self.state = ClusterState([], lookup, device_memory)
        self._pods: dict[str, Mapping[str, Any]] = {}
        self._assumed: dict[str, float] = {}  # uid -> expiry (monotonic s)
        self._expiry_heap: list[tuple[float, str]] = []
        self._synced = threading.Event()

    # ------------------------------------------------------------------ readiness
    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def mark_synced(self) -> None:
        self._synced.set()

    def wait_synced(self, timeout_s: float | None = None) -> bool:
        return self._synced.wait(timeout_s)

    @contextmanager
    def reading(self) -> Iterator[ClusterState]:
        """Hold the lock for one pure decision on the state (expired assumptions dropped first)."""
        with self.lock:
            self._expire_locked()
            yield self.state

    def stats(self) -> CacheStats:
        with self.lock:
            return CacheStats(
                nodes=len(self.state.node_names),
                pods=len(self._pods),
                placed=len(self.state),
                assumed=len(self._assumed),
                synced=self.synced,
                version=self.state.version,
            )

    # ------------------------------------------------------------------ lookups
    def pod(self, uid: str) -> Mapping[str, Any] | None:
        with self.lock:
            return self._pods.get(uid)

    def pod_by_name(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = f"{namespace}/{name}"
        with self.lock:
            for obj in self._pods.values():
                if pod_key(obj) == key:
                    return obj
        return None

    # ------------------------------------------------------------------ events
    def replace_all(self, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> None:
        """A full (re)list: rebuild everything, keeping assumptions the list does not contradict."""
        views = []
        for obj in nodes:
            try:
                views.append(node_view(obj))
            except ValueError as err:
                log.warning("ignoring node: %s", err)
        with self.lock:
            assumed = [a for uid in self._assumed if (a := self.state.allocation(uid)) is not None]
            self.state = ClusterState(views, self._lookup, self._device_memory)
            self._pods = {}
            for obj in pods:
                self._apply_pod_locked(obj)
            for alloc in assumed:
                if alloc.uid not in self.state and alloc.uid in self._assumed:
                    listed = self._pods.get(alloc.uid)
                    if listed is None or pod_node(listed) is None:
                        self._add_locked(alloc, strict=False)
                    else:
                        self._assumed.pop(alloc.uid, None)
                else:
                    self._assumed.pop(alloc.uid, None)

    def apply_node(self, obj: Mapping[str, Any]) -> None:
        try:
            view = node_view(obj)
        except ValueError as err:
            log.warning("ignoring node: %s", err)
            return
        with self.lock:
            self.state.upsert_node(view)

    def delete_node(self, name: str) -> None:
        with self.lock:
            for alloc in self.state.remove_node(name):
                self._assumed.pop(alloc.uid, None)

    def apply_pod(self, obj: Mapping[str, Any]) -> None:
        with self.lock:
            self._apply_pod_locked(obj)

    def delete_pod(self, obj: Mapping[str, Any]) -> None:
        uid = str((obj.get("metadata") or {}).get("uid") or pod_key(obj))
        with self.lock:
            self._pods.pop(uid, None)
            self._assumed.pop(uid, None)
            self.state.remove(uid)

    def _apply_pod_locked(self, obj: Mapping[str, Any]) -> None:
        try:
            demand = pod_demand(obj, self._class_of)
        except DemandError as err:
            # Bad annotations on a running pod: account its resources as a plain pod.
            log.warning("pod %s: %s; accounted without its qosched request", pod_key(obj), err)
            demand = pod_demand({**obj, "metadata": {**obj["metadata"], "annotations": {}}}, self._class_of)
        uid = demand.uid
        self._pods[uid] = obj
        alloc = running_allocation(obj, demand)
        current = self.state.allocation(uid)
        if alloc is None:
            # Pending or terminated. An assumption stays until the watch shows the bind (or it
            # expires): the pending event may simply predate our binding.
            if current is not None and uid not in self._assumed:
                self.state.remove(uid)
            return
        if current is not None:
            if current.node == alloc.node and (not alloc.devices or alloc.devices == current.devices):
                self._assumed.pop(uid, None)  # confirmed
                if current.pod == demand:
                    return
                alloc = Allocation(pod=demand, node=current.node, devices=current.devices, model=alloc.model)
            self.state.remove(uid)
            self._assumed.pop(uid, None)
        self._add_locked(alloc, strict=False)

    def _add_locked(self, alloc: Allocation, *, strict: bool) -> None:
        if alloc.node not in self.state.node_index:
            return  # pod on a node we do not know (yet): the node event will not re-add it; fine
        if alloc.pod.gpu_milli > 0 and not alloc.devices:
            alloc = self._first_fit_devices(alloc)
        try:
            self.state.add(alloc, strict=strict)
        except StateError as err:
            log.warning("accounting %s: %s", alloc.pod.name, err)

    def _first_fit_devices(self, alloc: Allocation) -> Allocation:
        """Devices for a running pod that qosched did not place (no ``qosched.io/device``)."""
        i = self.state.node_index[alloc.node]
        free = self.state.free_gpu_milli()[i]
        need = alloc.pod.milli_per_device
        fits = [int(d) for d in np.flatnonzero(free >= need)]
        chosen = tuple(fits[: alloc.pod.gpu_count]) or tuple(range(min(alloc.pod.gpu_count, len(free))))
        return Allocation(pod=alloc.pod, node=alloc.node, devices=chosen, model=alloc.model)

    # ------------------------------------------------------------------ assumptions (bind path)
    def assume(self, alloc: Allocation) -> None:
        """Account ``alloc`` now, before the API server confirms it. Raises ``StateError``."""
        with self.lock:
            self._expire_locked()
            self.state.add(alloc, strict=True)
            until = self._clock() + self.assume_ttl_s
            self._assumed[alloc.uid] = until
            heapq.heappush(self._expiry_heap, (until, alloc.uid))

    def forget(self, uid: str) -> None:
        """Drop an assumption (a failed bind releases what it reserved)."""
        with self.lock:
            if self._assumed.pop(uid, None) is not None:
                self.state.remove(uid)

    def is_assumed(self, uid: str) -> bool:
        with self.lock:
            return uid in self._assumed

    def is_assumed_locked(self, uid: str) -> bool:
        """``is_assumed`` for a caller already holding ``lock``."""
        return uid in self._assumed

    def pod_locked(self, uid: str) -> Mapping[str, Any] | None:
        """``pod`` for a caller already holding ``lock``."""
        return self._pods.get(uid)

    def _expire_locked(self) -> None:
        now = self._clock()
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            until, uid = heapq.heappop(heap)
            if self._assumed.get(uid) == until:
                del self._assumed[uid]
                self.state.remove(uid)
                log.info("assumption for pod %s expired unconfirmed", uid)

    def rebuild(self, lookup: ServiceLookup, device_memory: DeviceMemoryLookup) -> None:
        """Profiles changed: recompute every service's parameters (rare, O(cluster))."""
        with self.lock:
            self._lookup, self._device_memory = lookup, device_memory
            self.state = self.state.rebuilt(lookup, device_memory)


class StaticCluster(ClusterCache):
    """A fixed cluster from a snapshot file (contract §3): synced as soon as it is loaded.

    Binds are applied to the in-memory objects (the pod gets ``spec.nodeName`` and the result
    annotations), so a sequence of calls behaves like a small real cluster.
    """

    @classmethod
    def from_file(
        cls, path: str | Path, lookup: ServiceLookup, device_memory: DeviceMemoryLookup, **kw: Any
    ) -> StaticCluster:
        nodes, pods = load_snapshot(path)
        cache = cls(lookup, device_memory, **kw)
        cache.replace_all(nodes, pods)
        cache.mark_synced()
        return cache

    def record_binding(self, uid: str, node: str, annotations: Mapping[str, str]) -> None:
        """What the API server would do on a Binding: set nodeName, merge annotations."""
        with self.lock:
            obj = self._pods.get(uid)
            if obj is None:
                return
            meta = dict(obj.get("metadata") or {})
            meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
            spec = {**(obj.get("spec") or {}), "nodeName": node}
            bound = {**obj, "metadata": meta, "spec": spec}
            # What the watch would deliver next: confirms an assumption, accounts a plain pod.
            self._apply_pod_locked(bound)


def load_snapshot(path: str | Path) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Nodes and pods of a snapshot file: a YAML/JSON v1 ``List`` or multi-document YAML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read snapshot: {err.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML/JSON: {err}") from None
    if not all(isinstance(d, Mapping) for d in docs):
        raise ValueError(f"{path}: every document must be a Kubernetes object or List")
    nodes, pods = split_list(docs)
    if not nodes:
        raise ValueError(f"{path}: no Node objects found (expected a v1 List of Nodes and Pods)")
    return nodes, pods


__all__ = ["GPU_MILLI_PER_DEVICE", "CacheStats", "ClusterCache", "StaticCluster", "load_snapshot"]
