"""The cluster snapshot the extender decides on: one cache, fed by a snapshot file or a watch.

``ClusterCache`` owns the ``ClusterState`` arrays (``qosched.policies.state``) and the pod
objects it has seen, and applies node/pod events to them. Two feeders exist and share all of
this: ``StaticCluster`` (a snapshot file, synced at once) and the live watch
(``qosched.extender.kube.watch``), which lists then watches the API server.

Assumptions: after a successful bind the pod is accounted on its node at once (``assume``), so
the next decision sees it before the watch event arrives; the watch confirms it (the pod shows
up bound) or drops it (the pod was deleted, or bound elsewhere), and it expires after
``assume_ttl_s`` if nothing confirms it.

Locking: one lock guards the state; it is held only for in-memory work (event application, a
policy evaluation), never across network I/O, and never for a whole rebuild. A relist or a
profile reload builds the new index (``ClusterState`` arrays, pod maps, assumptions) in a private
staging cache *outside* the lock, from a snapshot taken under it; every mutation made meanwhile
(a watch event of the other resource, an ``assume`` by a bind, an expiry) is applied to the live
cache and also journaled; the swap replays the journal on the staging cache and installs it under
one short hold. At 50,000 pods the lock was held ~1 s by a relist before, a few ms after
(``benchmarks/bench_cache_sync.py``, :class:`TimedLock`).
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
import orjson
import yaml

from qosched.extender.kube.objects import (
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
from qosched.policies.types import GPU_MILLI_PER_DEVICE, Allocation, DemandError, NodeView, PodDemand

log = logging.getLogger(__name__)

#: A mutation of the cache's index: applied to the live cache under its lock, journaled while a
#: rebuild runs, and replayed on the rebuilt index (``replay=True``: lenient, never raises).
Mutation = Callable[["ClusterCache", bool], None]


class TimedLock:
    """A ``threading.Lock`` that measures how long it is held: ``max_hold_s``, ``holds``.

    Drop-in for ``ClusterCache.lock`` in tests and benchmarks (``cache.lock = TimedLock()``); the
    overhead is two ``perf_counter`` calls per hold. Not reentrant, as the lock it replaces.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0
        self.max_hold_s = 0.0
        self.holds = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            self._since = time.perf_counter()
        return ok

    def release(self) -> None:
        held_s = time.perf_counter() - self._since
        self.holds += 1
        self.max_hold_s = max(self.max_hold_s, held_s)
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def reset(self) -> None:
        self.max_hold_s, self.holds = 0.0, 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        self.lock: threading.Lock | TimedLock = threading.Lock()
        self._rebuild_lock = threading.Lock()  # one rebuild at a time (held outside ``lock``)
        self._journal: list[Mutation] | None = None  # mutations made while a rebuild runs
        self._lookup, self._device_memory = lookup, device_memory
        self._class_of = class_of
        self.assume_ttl_s = assume_ttl_s
        self._clock = clock
        self.state = ClusterState([], lookup, device_memory)
        self._pods: dict[str, Mapping[str, Any]] = {}
        self._assumed: dict[str, float] = {}  # uid -> expiry (monotonic s)
        self._expiry_heap: list[tuple[float, str]] = []
        self._synced = threading.Event()
        self._nodes: dict[str, NodeView] = {}  # live nodes (a deleted node's row stays in ``state``)
        self._uid_by_key: dict[str, str] = {}  # "namespace/name" -> uid
        self._waiting: dict[str, Allocation] = {}  # uid -> allocation of a pod bound to an unknown node

    # ------------------------------------------------------------------ readiness
    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def readiness(self) -> tuple[bool, str]:
        """(ready, why) for ``/readyz``: here, synced; the live cache also checks its watches."""
        if self.synced:
            return True, "ready"
        return False, "cluster cache not synced yet"

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
                nodes=len(self._nodes),
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
        with self.lock:
            uid = self._uid_by_key.get(f"{namespace}/{name}")
            return None if uid is None else self._pods.get(uid)

    # ------------------------------------------------------------------ events
    # Parsing (``node_view``, ``pod_demand``: quantities, annotations) happens before the lock is
    # taken; only the accounting runs under it.
    def replace_all(self, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> None:
        """A full (re)list: rebuild everything, keeping assumptions the list does not contradict."""
        views = self._node_views(nodes)
        parsed = [(obj, self._demand(obj)) for obj in pods]

        def build(staging: ClusterCache, assumed: list[Allocation]) -> None:
            staging._reset_state_locked(views)
            staging._set_pods_locked(parsed, assumed)

        self._rebuild_offlock(build, keep_allocations=False)

    def replace_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """A relist of nodes only: new node set, every known pod kept on the nodes still listed.

        Pods on nodes that are gone wait (uncounted) until their node comes back or they are
        deleted; assumptions on gone nodes are dropped.
        """
        views = self._node_views(nodes)

        def build(staging: ClusterCache, allocs: list[Allocation]) -> None:
            waiting = list(staging._waiting.values())
            staging._reset_state_locked(views)
            staging._waiting = {}
            for alloc in allocs:
                if alloc.node in staging._nodes:
                    staging._add_locked(alloc, strict=False)
                elif staging._assumed.pop(alloc.uid, None) is None:
                    staging._waiting[alloc.uid] = alloc
            for alloc in waiting:
                staging._add_locked(alloc, strict=False)

        self._rebuild_offlock(build, keep_allocations=True)

    def replace_pods(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """A relist of pods only: the nodes stay, pod accounting is rebuilt from the list."""
        parsed = [(obj, self._demand(obj)) for obj in pods]

        def build(staging: ClusterCache, assumed: list[Allocation]) -> None:
            staging._reset_state_locked(list(staging._nodes.values()))
            staging._set_pods_locked(parsed, assumed)

        self._rebuild_offlock(build, keep_allocations=False)

    def apply_node(self, obj: Mapping[str, Any]) -> None:
        try:
            view = node_view(obj)
        except ValueError as err:
            log.warning("ignoring node: %s", err)
            return
        with self.lock:
            self._mutate_locked(lambda cache, _replay: cache._apply_node_locked(view))

    def delete_node(self, name: str) -> None:
        with self.lock:
            self._mutate_locked(lambda cache, _replay: cache._delete_node_locked(name))

    def apply_pod(self, obj: Mapping[str, Any]) -> None:
        demand = self._demand(obj)
        with self.lock:
            self._mutate_locked(lambda cache, _replay: cache._apply_pod_locked(obj, demand))

    def delete_pod(self, obj: Mapping[str, Any]) -> None:
        uid = str((obj.get("metadata") or {}).get("uid") or pod_key(obj))
        with self.lock:
            self._mutate_locked(lambda cache, _replay: cache._delete_pod_locked(uid))

    # ------------------------------------------------------------------ rebuilds outside the lock
    def _mutate_locked(self, op: Mutation) -> None:
        """Apply ``op`` to this cache (caller holds ``lock``); journal it while a rebuild runs."""
        op(self, False)
        if self._journal is not None:
            self._journal.append(op)

    def _rebuild_offlock(
        self, build: Callable[[ClusterCache, list[Allocation]], None], *, keep_allocations: bool
    ) -> None:
        """Rebuild the index without holding ``lock`` for more than a copy and a swap.

        1. Under ``lock``: copy what ``build`` reads into a private staging cache (nodes,
           assumptions, pods, waiting pods) and list the allocations it keeps (all of them with
           ``keep_allocations``, else the assumed ones); start the journal.
        2. Without ``lock``: ``build(staging, allocations)`` (the O(cluster) part: a fresh
           ``ClusterState`` with everything accounted).
        3. Under ``lock``: replay the journaled mutations on the staging cache, in order, then
           install its index. The state version is ``max(old, new) + 1``: never reused.

        Result: ``build(snapshot) ∘ mutations since the snapshot``, the same index a rebuild under
        the lock would give at the swap, with the lock held O(journal + copy) instead of O(cluster).
        """
        with self._rebuild_lock:
            with self.lock:
                staging = self._staging_copy_locked(keep_allocations)
                allocs = (
                    list(self.state.allocations()) if keep_allocations else self._assumed_allocations_locked()
                )
                self._journal = []
            try:
                build(staging, allocs)
            except BaseException:
                with self.lock:
                    self._journal = None  # the live index has every mutation already: drop the build
                raise
            del allocs
            with self.lock:
                journal, self._journal = self._journal or [], None
                old = self._install_locked(staging, journal)
            del old  # the old index is freed here, outside the lock (O(cluster) deallocations)

    def _staging_copy_locked(self, keep_allocations: bool) -> ClusterCache:
        """A private cache with copies of the small maps; the pod maps are shared when kept.

        With ``keep_allocations`` the pod maps (``_pods``, ``_uid_by_key``) are shared, not copied
        (50k entries): ``build`` does not touch them, and replaying a journaled mutation on them
        after the live cache applied it is a no-op (set the same object, pop what is gone).
        Otherwise ``build`` fills fresh maps from the list.
        """
        staging = ClusterCache(
            self._lookup,
            self._device_memory,
            class_of=self._class_of,
            assume_ttl_s=self.assume_ttl_s,
            clock=self._clock,
        )
        staging._nodes = dict(self._nodes)
        staging._assumed = dict(self._assumed)
        staging._expiry_heap = list(self._expiry_heap)
        staging._waiting = dict(self._waiting)
        if keep_allocations:
            staging._pods, staging._uid_by_key = self._pods, self._uid_by_key
        return staging

    def _install_locked(self, staging: ClusterCache, journal: list[Mutation]) -> tuple[Any, ...]:
        """Replay ``journal`` on ``staging`` and make its index the live one; returns the old index
        (for the caller to drop after releasing the lock)."""
        for op in journal:
            try:
                op(staging, True)
            except Exception:  # a replayed mutation must not lose the whole rebuild
                log.exception("replaying a cache mutation on the rebuilt index failed")
        old = (self.state, self._pods, self._uid_by_key, self._waiting, self._nodes)
        version = max(self.state.version, staging.state.version) + 1
        self.state = staging.state
        self.state.version = version
        self._lookup, self._device_memory = staging._lookup, staging._device_memory
        self._nodes, self._pods, self._uid_by_key = staging._nodes, staging._pods, staging._uid_by_key
        self._waiting, self._assumed, self._expiry_heap = (
            staging._waiting,
            staging._assumed,
            staging._expiry_heap,
        )
        return old

    # ------------------------------------------------------------------ mutations (under ``lock``)
    def _apply_node_locked(self, view: NodeView) -> None:
        is_new = view.name not in self._nodes
        self._nodes[view.name] = view
        self.state.upsert_node(view)
        if is_new and self._waiting:
            # Pods seen bound to this node before the node itself (separate watches).
            for alloc in [a for a in self._waiting.values() if a.node == view.name]:
                del self._waiting[alloc.uid]
                self._add_locked(alloc, strict=False)

    def _delete_node_locked(self, name: str) -> None:
        self._nodes.pop(name, None)
        for alloc in self.state.remove_node(name):
            if self._assumed.pop(alloc.uid, None) is None:
                self._waiting[alloc.uid] = alloc  # back in the accounts if the node returns

    def _delete_pod_locked(self, uid: str) -> None:
        self._forget_pod_locked(uid)
        self._assumed.pop(uid, None)
        self.state.remove(uid)

    def _node_views(self, nodes: Iterable[Mapping[str, Any]]) -> list[NodeView]:
        views: dict[str, NodeView] = {}
        for obj in nodes:
            try:
                view = node_view(obj)
            except ValueError as err:
                log.warning("ignoring node: %s", err)
                continue
            views[view.name] = view  # a name listed twice: the later object wins
        return list(views.values())

    def _demand(self, obj: Mapping[str, Any]) -> PodDemand:
        try:
            return pod_demand(obj, self._class_of)
        except DemandError as err:
            # Bad annotations on a running pod: account its resources as a plain pod.
            log.warning("pod %s: %s; accounted without its qosched request", pod_key(obj), err)
            meta = obj.get("metadata") or {}
            return pod_demand({**obj, "metadata": {**meta, "annotations": {}}}, self._class_of)

    def _reset_state_locked(self, views: list[NodeView]) -> None:
        # The version keeps growing across a rebuild: the runtime reuses a decision only when the
        # version is unchanged, and a fresh state restarting at 0 could repeat an old version
        # with different row indexes.
        version = self.state.version
        self.state = ClusterState(views, self._lookup, self._device_memory)
        self.state.version = version + 1
        self._nodes = {v.name: v for v in views}

    def _assumed_allocations_locked(self) -> list[Allocation]:
        return [a for uid in self._assumed if (a := self.state.allocation(uid)) is not None]

    def _set_pods_locked(
        self, parsed: list[tuple[Mapping[str, Any], PodDemand]], assumed: list[Allocation]
    ) -> None:
        self._pods, self._uid_by_key, self._waiting = {}, {}, {}
        for obj, demand in parsed:
            self._apply_pod_locked(obj, demand)
        for alloc in assumed:
            if alloc.uid not in self._assumed:
                continue
            listed = self._pods.get(alloc.uid)
            if listed is None or alloc.uid in self.state:
                # Deleted (absent from a complete list) or listed bound: nothing left to assume.
                self._assumed.pop(alloc.uid, None)
            elif pod_node(listed) is None and alloc.node in self._nodes:
                self._add_locked(alloc, strict=False)  # the list predates the binding
            else:
                self._assumed.pop(alloc.uid, None)

    def _forget_pod_locked(self, uid: str) -> None:
        obj = self._pods.pop(uid, None)
        self._waiting.pop(uid, None)
        if obj is not None:
            key = pod_key(obj)
            if self._uid_by_key.get(key) == uid:
                del self._uid_by_key[key]

    def _apply_pod_locked(self, obj: Mapping[str, Any], demand: PodDemand | None = None) -> None:
        if demand is None:
            demand = self._demand(obj)
        uid = demand.uid
        old = self._pods.get(uid)
        if old is not None and pod_key(old) != pod_key(obj):
            self._forget_pod_locked(uid)
        self._pods[uid] = obj
        self._uid_by_key[pod_key(obj)] = uid
        self._waiting.pop(uid, None)
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
        if alloc.node not in self._nodes:
            # Bound to a node we do not know (yet): the node's watch may lag the pods' watch.
            self._waiting[alloc.uid] = alloc
            return
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
            self.assume_locked(alloc)

    def assume_locked(self, alloc: Allocation) -> None:
        """``assume`` for a caller already holding ``lock`` (decide and reserve atomically)."""
        self.state.add(alloc, strict=True)
        until = self._clock() + self.assume_ttl_s
        self._assumed[alloc.uid] = until
        heapq.heappush(self._expiry_heap, (until, alloc.uid))
        if self._journal is not None:  # a rebuild runs: the rebuilt index gets it too
            self._journal.append(lambda cache, _replay: cache._replay_assume_locked(alloc, until))

    def _replay_assume_locked(self, alloc: Allocation, until: float) -> None:
        """``assume_locked`` replayed on a rebuilt index: lenient (the list may already hold it)."""
        if alloc.uid not in self.state:
            self._add_locked(alloc, strict=False)
        if alloc.uid in self.state:
            self._assumed[alloc.uid] = until
            heapq.heappush(self._expiry_heap, (until, alloc.uid))

    def renew(self, uid: str) -> bool:
        """Restart a live assumption's expiry at ``now + assume_ttl_s``; False when it is gone
        (expired — swept first —, deleted, confirmed).

        Why: a reservation made before its bind (the runtime's best-only filter) would otherwise
        expire ``assume_ttl_s`` after the filter, not after the bind, so a bind arriving late (a
        PreBind volume wait, a Permit plugin's wait) lost its devices while its API call and the
        watch event confirming it were still on their way, and they could be handed out twice.
        """
        with self.lock:
            self._expire_locked()
            if uid not in self._assumed:
                return False
            until = self._clock() + self.assume_ttl_s
            self._mutate_locked(lambda cache, _replay: cache._renew_locked(uid, until))
            return True

    def _renew_locked(self, uid: str, until: float) -> None:
        """``uid``'s assumption now expires at ``until`` (the earlier heap entry is then ignored)."""
        if uid in self._assumed:
            self._assumed[uid] = until
            heapq.heappush(self._expiry_heap, (until, uid))

    def forget(self, uid: str) -> None:
        """Drop an assumption (a failed bind releases what it reserved)."""
        with self.lock:
            self._mutate_locked(lambda cache, _replay: cache._forget_assumption_locked(uid))

    def _forget_assumption_locked(self, uid: str, until: float | None = None) -> None:
        """Drop ``uid``'s assumption (only the one expiring at ``until`` when given)."""
        if until is not None and self._assumed.get(uid) != until:
            return
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

    def expiry_paused(self) -> bool:
        """True while nothing could have confirmed an assumption (the live cache: its pods watch
        is broken). Expiring then would free devices a committed bind holds; the relist that
        ends the outage confirms or drops each assumption instead."""
        return False

    def _expire_locked(self) -> None:
        if self.expiry_paused():
            return
        now = self._clock()
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            until, uid = heapq.heappop(heap)
            if self._assumed.get(uid) == until:
                self._mutate_locked(_expiry(uid, until))
                log.info("assumption for pod %s expired unconfirmed", uid)

    def rebuild(self, lookup: ServiceLookup, device_memory: DeviceMemoryLookup) -> None:
        """Profiles changed: recompute every service's parameters (rare, O(cluster), off the lock)."""

        def build(staging: ClusterCache, allocs: list[Allocation]) -> None:
            staging._lookup, staging._device_memory = lookup, device_memory
            staging._reset_state_locked(list(staging._nodes.values()))
            for alloc in allocs:
                staging._add_locked(alloc, strict=False)

        self._rebuild_offlock(build, keep_allocations=True)


def _expiry(uid: str, until: float) -> Mutation:
    """The mutation "the assumption of ``uid`` made for ``until`` expired" (journaled as such)."""

    def expire(cache: ClusterCache, _replay: bool) -> None:
        cache._forget_assumption_locked(uid, until)

    return expire


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
            self._mutate_locked(lambda cache, _replay: cache._apply_pod_locked(bound))


def load_snapshot(path: str | Path) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Nodes and pods of a snapshot file: a YAML/JSON v1 ``List`` or multi-document YAML."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read snapshot: {err.strerror}") from None
    docs = parse_snapshot_text(text, path)
    if not all(isinstance(d, Mapping) for d in docs):
        raise ValueError(f"{path}: every document must be a Kubernetes object or List")
    nodes, pods = split_list(docs)
    if not nodes:
        raise ValueError(f"{path}: no Node objects found (expected a v1 List of Nodes and Pods)")
    return nodes, pods


def parse_snapshot_text(text: str, path: Path) -> list[Any]:
    """Documents of a snapshot: JSON through orjson, YAML through libyaml when it is built in.

    A 5,000-node snapshot (60k pods) is ~27 MB; pure-Python PyYAML takes minutes on it, orjson
    well under a second and libyaml's ``CSafeLoader`` some seconds. JSON is valid YAML, so a JSON
    file that orjson refuses is still tried as YAML (for its line-numbered error).
    """
    if text.lstrip()[:1] in ("{", "["):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        else:
            return [d for d in (doc if isinstance(doc, list) else [doc]) if d]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return [d for d in yaml.load_all(text, Loader=loader) if d]
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML/JSON: {err}") from None


__all__ = [
    "GPU_MILLI_PER_DEVICE",
    "CacheStats",
    "ClusterCache",
    "StaticCluster",
    "load_snapshot",
    "parse_snapshot_text",
]
