"""The fake apiserver's storage: objects, one global resourceVersion, an event log, watchers.

Like etcd behind kube-apiserver, every write of any resource takes the next integer of one global
revision, which becomes the object's ``metadata.resourceVersion`` (sent as a string) and the
version of its watch event. The event log keeps ``(rv, type, object, previous object)`` so that

- a watch from version *N* replays every event after *N*, then follows new ones;
- a LIST at an exact older version (``resourceVersionMatch=Exact``, or a ``continue`` token)
  rebuilds the state at *N* by undoing newer events;
- history can be compacted (:meth:`ObjectStore.compact`, or a rolling ``history_limit``): a watch
  or exact LIST from before the compacted version is answered ``410 Expired``.

Each open watch owns a queue that commits append to (the watch cache's ``cacheWatcher``), so
compaction never takes events from a watch that is already established.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .pods import rfc3339
from .selectors import field_getter
from .status import (
    ApiError,
    GroupResource,
    already_exists,
    expired,
    not_found,
    precondition_failed,
    too_old_resource_version,
)

JsonDict = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One REST resource: where it is served and how the apiserver treats it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    #: ``status`` is a subresource: writes through the main resource keep the stored status.
    status_subresource: bool = False
    #: etcd key prefix (``/registry/<prefix>/...``), quoted in precondition errors.
    etcd_prefix: str = ""
    #: extra field-selector fields besides metadata.name/namespace.
    extra_fields: tuple[str, ...] = ()
    bool_fields: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def gr(self) -> GroupResource:
        return GroupResource(self.group, self.plural)

    @property
    def selectable_fields(self) -> frozenset[str]:
        return frozenset(_COMMON_FIELDS + self.extra_fields)

    def field_values(self, obj: JsonDict) -> dict[str, str]:
        return field_getter(_COMMON_FIELDS + self.extra_fields, self.bool_fields)(obj)

    def etcd_key(self, namespace: str, name: str) -> str:
        prefix = self.etcd_prefix or self.plural
        return f"/registry/{prefix}/{namespace}/{name}" if self.namespaced else f"/registry/{prefix}/{name}"


PODS = ResourceType(
    "",
    "v1",
    "pods",
    "Pod",
    namespaced=True,
    status_subresource=True,
    extra_fields=(
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    bool_fields=frozenset({"spec.hostNetwork"}),
)
NODES = ResourceType(
    "",
    "v1",
    "nodes",
    "Node",
    namespaced=False,
    status_subresource=True,
    etcd_prefix="minions",
    extra_fields=("spec.unschedulable",),
    bool_fields=frozenset({"spec.unschedulable"}),
)
CONFIGMAPS = ResourceType("", "v1", "configmaps", "ConfigMap", namespaced=True)
SECRETS = ResourceType("", "v1", "secrets", "Secret", namespaced=True, extra_fields=("type",))
EVENTS = ResourceType(
    "",
    "v1",
    "events",
    "Event",
    namespaced=True,
    extra_fields=("involvedObject.kind", "involvedObject.name", "involvedObject.uid", "reason", "type"),
)
NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True)
EVENTS_V1 = ResourceType(
    "events.k8s.io", "v1", "events", "Event", namespaced=True, extra_fields=("reason", "type")
)
MUTATING_WEBHOOKS = ResourceType(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    namespaced=False,
)
VALIDATING_WEBHOOKS = ResourceType(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)

#: Gateway API routes (a CRD in a real cluster): the online learner sets their backend weights.
HTTPROUTES = ResourceType("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", namespaced=True)

#: Deployments (apps/v1): INFIDA's controller patches the replicas of those labelled qosched.io/allocation.
DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "Deployment", namespaced=True)

RESOURCES: tuple[ResourceType, ...] = (
    PODS,
    NODES,
    CONFIGMAPS,
    SECRETS,
    EVENTS,
    NAMESPACES,
    LEASES,
    EVENTS_V1,
    MUTATING_WEBHOOKS,
    VALIDATING_WEBHOOKS,
    HTTPROUTES,
    DEPLOYMENTS,
)


def find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    return next((r for r in RESOURCES if (r.group, r.version, r.plural) == (group, version, plural)), None)


def resource_for_kind(api_version: str, kind: str) -> ResourceType:
    """The resource that stores objects of ``kind`` (for loading snapshots)."""
    for r in RESOURCES:
        if r.kind == kind and r.api_version == (api_version or r.api_version):
            return r
    known = ", ".join(sorted({f"{r.api_version}/{r.kind}" for r in RESOURCES}))
    raise ValueError(f"kubefake stores no {api_version or '?'}/{kind} objects (known: {known})")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One committed write. ``obj`` carries the new version (for DELETED: the last state with the
    deletion's version); ``prev`` the state before it (``None`` for ADDED)."""

    rv: int
    type: str
    resource: ResourceType
    obj: JsonDict
    prev: JsonDict | None


@dataclass(eq=False, slots=True)
class Watcher:
    """An open watch stream's mailbox; the HTTP thread drains it under the store's condition."""

    resource: ResourceType
    namespace: str | None
    queue: deque[WatchEvent] = field(default_factory=deque)
    #: ``None`` while open; ``"graceful"``, ``"abrupt"`` or ``"expired"`` (send ERROR 410, end)
    #: once asked to close.
    closing: str | None = None
    bookmark_due: bool = False


@dataclass(frozen=True, slots=True)
class Preconditions:
    """``storage.Preconditions`` (UID and/or resourceVersion); a mismatch is a StorageError conflict."""

    uid: str | None = None
    resource_version: str | None = None


def key_of(resource: ResourceType, obj: JsonDict) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "") if resource.namespaced else "", meta.get("name") or ""


def _without_rv(obj: JsonDict) -> JsonDict:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return out


class ObjectStore:
    """Thread-safe objects + event log. All public methods take the lock themselves.

    Parameters
    ----------
    clock
        Source of ``creationTimestamp`` and condition times (UTC); tests may pass a fixed one.
    history_limit
        Events kept for watches and exact LISTs; older ones are compacted as new ones arrive.
        ``None`` keeps everything until :meth:`compact`.
    """

    def __init__(self, clock: Callable[[], datetime] | None = None, history_limit: int | None = None) -> None:
        if history_limit is not None and history_limit < 1:
            raise ValueError(f"history_limit must be >= 1 or None, got {history_limit}")
        self.clock = clock or (lambda: datetime.now(UTC))
        self.history_limit = history_limit
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._objects: dict[ResourceType, dict[Key, JsonDict]] = {r: {} for r in RESOURCES}
        self._log: list[WatchEvent] = []
        self._rv = 0
        self._compacted_rv = 0
        self._watchers: set[Watcher] = set()

    # ----------------------------------------------------------------- versions and history
    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    @property
    def compacted_rv(self) -> int:
        """The oldest version a watch may start from (events after it are all retained)."""
        with self.lock:
            return self._compacted_rv

    def compact(self) -> int:
        """Drop all history: watches and exact LISTs from older versions now get 410. Returns the
        new compacted version (the current one)."""
        with self.lock:
            self._log.clear()
            self._compacted_rv = self._rv
            return self._rv

    # ----------------------------------------------------------------- reads
    def get(self, resource: ResourceType, namespace: str, name: str) -> JsonDict | None:
        """The stored object (a deep copy), or ``None``."""
        with self.lock:
            obj = self._objects[resource].get((namespace if resource.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def require(self, resource: ResourceType, namespace: str, name: str) -> JsonDict:
        obj = self.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource.gr, name)
        return obj

    def list_objects(
        self, resource: ResourceType, namespace: str | None = None, at_rv: int | None = None
    ) -> tuple[list[JsonDict], int]:
        """Objects sorted by key (etcd order) and the version they are read at.

        ``at_rv`` reads the state at that older version (410 once compacted away).
        """
        with self.lock:
            if at_rv is None:
                state = dict(self._objects[resource])
                rv = self._rv
            else:
                state = self._state_at(resource, at_rv)
                rv = at_rv
            items = [copy.deepcopy(state[k]) for k in sorted(state) if namespace is None or k[0] == namespace]
            return items, rv

    def _state_at(self, resource: ResourceType, rv: int) -> dict[Key, JsonDict]:
        if rv < self._compacted_rv:
            raise ApiError(too_old_resource_version(rv, self._compacted_rv))
        state = dict(self._objects[resource])
        for event in reversed(self._log):
            if event.rv <= rv:
                break
            if event.resource is not resource:
                continue
            key = key_of(resource, event.obj)
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return state

    # ----------------------------------------------------------------- writes
    def _commit(self, resource: ResourceType, key: Key, new: JsonDict | None, etype: str) -> JsonDict:
        """Store ``new`` (or delete the key), log the event, wake watchers. Lock held by caller."""
        prev = self._objects[resource].get(key)
        self._rv += 1
        obj = copy.deepcopy(new if new is not None else prev)
        assert obj is not None
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        if new is None:
            del self._objects[resource][key]
        else:
            self._objects[resource][key] = obj
        event = WatchEvent(self._rv, etype, resource, obj, prev)
        self._log.append(event)
        if self.history_limit is not None and len(self._log) > self.history_limit:
            dropped = self._log[: len(self._log) - self.history_limit]
            del self._log[: len(dropped)]
            self._compacted_rv = dropped[-1].rv
        for watcher in self._watchers:
            if watcher.resource is resource:
                watcher.queue.append(event)
        self.changed.notify_all()
        return copy.deepcopy(obj)

    def create(
        self,
        resource: ResourceType,
        obj: JsonDict,
        *,
        dry_run: bool = False,
        keep_identity: bool = False,
    ) -> JsonDict:
        """Add a new object (``AlreadyExists`` if the key is taken); fills uid and creationTimestamp.

        ``keep_identity`` keeps a uid/creationTimestamp the object already has (snapshot loading).
        """
        obj = copy.deepcopy(obj)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        meta = obj.setdefault("metadata", {})
        if not resource.namespaced:
            meta.pop("namespace", None)
        with self.lock:
            key = key_of(resource, obj)
            if key in self._objects[resource]:
                raise already_exists(resource.gr, key[1])
            if not keep_identity or not meta.get("uid"):
                meta["uid"] = str(uuid.uuid4())
            if not keep_identity or not meta.get("creationTimestamp"):
                meta["creationTimestamp"] = rfc3339(self.clock())
            if dry_run:
                out = copy.deepcopy(obj)
                out["metadata"]["resourceVersion"] = ""
                return out
            return self._commit(resource, key, obj, "ADDED")

    def update(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        transform: Callable[[JsonDict], JsonDict],
        *,
        preconditions: Preconditions | None = None,
        dry_run: bool = False,
    ) -> JsonDict:
        """``GuaranteedUpdate``: read, check preconditions, ``transform(copy)``, store if changed.

        Identity fields (name, namespace, uid, creationTimestamp) cannot change. A transform that
        changes nothing writes nothing: no new version, no event (as etcd3's store).
        """
        ns = namespace if resource.namespaced else ""
        with self.lock:
            current = self._objects[resource].get((ns, name))
            if current is None:
                raise not_found(resource.gr, name)
            self._check(resource, ns, name, current, preconditions)
            new = transform(copy.deepcopy(current))
            new.pop("kind", None)
            new.pop("apiVersion", None)
            meta = new.setdefault("metadata", {})
            for fixed in ("name", "namespace", "uid", "creationTimestamp"):
                if fixed in current["metadata"]:
                    meta[fixed] = current["metadata"][fixed]
            if _without_rv(new) == _without_rv(current):
                return copy.deepcopy(current)
            if dry_run:
                return copy.deepcopy(new)
            return self._commit(resource, (ns, name), new, "MODIFIED")

    def delete(
        self,
        resource: ResourceType,
        namespace: str,
        name: str,
        *,
        preconditions: Preconditions | None = None,
        dry_run: bool = False,
    ) -> JsonDict:
        """Remove the object at once (no graceful deletion); returns its last state."""
        ns = namespace if resource.namespaced else ""
        with self.lock:
            current = self._objects[resource].get((ns, name))
            if current is None:
                raise not_found(resource.gr, name)
            self._check(resource, ns, name, current, preconditions)
            if dry_run:
                return copy.deepcopy(current)
            return self._commit(resource, (ns, name), None, "DELETED")

    @staticmethod
    def _check(
        resource: ResourceType, ns: str, name: str, current: JsonDict, pre: Preconditions | None
    ) -> None:
        if pre is None:
            return
        meta = current["metadata"]
        key = resource.etcd_key(ns, name)
        if pre.uid and pre.uid != meta.get("uid"):
            raise precondition_failed(resource.gr, name, key, "UID", pre.uid, meta.get("uid", ""))
        if pre.resource_version and pre.resource_version != meta.get("resourceVersion"):
            raise precondition_failed(
                resource.gr,
                name,
                key,
                "ResourceVersion",
                pre.resource_version,
                meta.get("resourceVersion", ""),
            )

    # ----------------------------------------------------------------- watches
    def open_watch(
        self, resource: ResourceType, namespace: str | None, since_rv: int | None
    ) -> tuple[Watcher, list[JsonDict], int]:
        """Register a watcher atomically with its starting point.

        ``since_rv=None`` (resourceVersion unset or "0"): returns the current objects, which the
        caller sends as synthetic ADDED events, and the version they are at. Otherwise the events
        after ``since_rv`` are queued first; a compacted ``since_rv`` raises the 410 Status.
        """
        with self.lock:
            watcher = Watcher(resource, namespace)
            initial: list[JsonDict] = []
            if since_rv is None:
                state = self._objects[resource]
                initial = [
                    copy.deepcopy(state[k]) for k in sorted(state) if namespace is None or k[0] == namespace
                ]
                start = self._rv
            else:
                if since_rv < self._compacted_rv:
                    raise ApiError(too_old_resource_version(since_rv, self._compacted_rv))
                watcher.queue.extend(e for e in self._log if e.rv > since_rv and e.resource is resource)
                start = since_rv
            self._watchers.add(watcher)
            return watcher, initial, start

    def close_watch(self, watcher: Watcher) -> None:
        with self.lock:
            self._watchers.discard(watcher)

    def next_events(self, watcher: Watcher, timeout_s: float) -> tuple[list[WatchEvent], int]:
        """Wait up to ``timeout_s`` for events, a close request or a bookmark request.

        Returns the drained events and the store's version at the time: every event up to that
        version has been handed to this watcher, which is what a BOOKMARK may claim.
        """
        with self.changed:
            if not watcher.queue and watcher.closing is None and not watcher.bookmark_due and timeout_s > 0:
                self.changed.wait(timeout_s)
            events = list(watcher.queue)
            watcher.queue.clear()
            return events, self._rv

    def signal_watchers(self, *, close: str | None = None, bookmark: bool = False) -> int:
        """Ask every open watch to close (``"graceful"``/``"abrupt"``/``"expired"``) or to send a bookmark."""
        with self.changed:
            watchers = list(self._watchers)
            for watcher in watchers:
                if close is not None:
                    watcher.closing = close
                if bookmark:
                    watcher.bookmark_due = True
            if close is not None:
                self._watchers.clear()
            self.changed.notify_all()
            return len(watchers)

    @property
    def open_watch_count(self) -> int:
        with self.lock:
            return len(self._watchers)

    def watchers(self) -> Iterable[Watcher]:
        with self.lock:
            return list(self._watchers)


def expired_continue() -> ApiError:
    """``410 Expired`` for a ``continue`` token whose version has been compacted (apiserver text)."""
    return expired(
        "The provided continue parameter is too old to display a consistent list result. You can start a "
        "new list without the continue parameter, or use the continue token in this response to retrieve "
        "the remainder of the results. Continuing with the provided token results in an inconsistent list "
        "- objects that were created, modified, or deleted between the time the first chunk was returned "
        "and now may show up in the list."
    )
