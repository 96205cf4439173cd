"""The live cluster cache: list, then watch, nodes and pods from the API server.

``LiveCluster`` is a ``ClusterCache`` (``qosched.extender.kube.cache``) fed by two daemon threads,
one per resource, each running the loop kopf runs (``kopf/_cogs/clients/watching.py``), written
on the official ``kubernetes`` client::

    list (paged)  ->  replace that resource in the cache  ->  watch from the list's resourceVersion
        ADDED / MODIFIED / DELETED  -> apply to the cache, remember the object's resourceVersion
        BOOKMARK                    -> remember its resourceVersion (nothing else changes)
        ERROR 410 (or HTTP 410)     -> the version was compacted: back off, relist
        ERROR other                 -> back off, re-watch from the newest version
        unknown type                -> log and skip
    stream ends (server timeout)    -> re-watch at once from the newest version
    stream drops / read timeout / 5xx / 429 -> back off (exponential, jittered, bounded), re-watch

First sync: before any watch runs, nodes and then pods are listed and handed to
``replace_all`` together, and only then ``mark_synced()`` turns ``/readyz`` true — so the first
decision never sees pods without their nodes or nodes without their pods. A later relist of one
resource replaces only that resource (``replace_nodes`` / ``replace_pods``), keeping the other.

Readiness stays truthful afterwards: a resource whose watch has been broken (from the first failed
request to the next open stream) longer than ``unready_after_s`` makes ``readiness()`` — and so
``/readyz`` — false until it is back; while the pods watch is broken, assumptions do not expire
(``expiry_paused``), since nothing could have confirmed them.

Why raw streams and not ``kubernetes.watch.Watch().stream``: the requests are the client's own
(``CoreV1Api.list_node(watch=True, ...)`` with ``_preload_content=False``: same configuration, auth
and connection pool), but the body is split into lines and parsed with orjson here. ``Watch``
deserialises every event into a pydantic model the cache would throw away (the cache wants the
API-shaped dict), turns an ERROR event into an ``ApiException`` without its code attached to the
object, and offers no per-read timeout or way to close a blocked stream from another thread;
here ``_request_timeout=(connect, read)`` bounds every socket read (a dead connection is found
within ``client_read_timeout_s`` even when TCP sees nothing), and ``stop()`` shuts the open
stream's socket.

Lists are paged (``limit``/``continue``) and parsed with orjson into API-shaped dicts; pods are
slimmed (:func:`slim_pod`) on the way in, which keeps 50k pods in tens of MB instead of hundreds.
The cache lock is never held across I/O: a thread reads and parses an event, then takes the lock
only to apply it.
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import orjson
import urllib3
from kubernetes import client as k8s

from qosched.extender.kube.cache import ClusterCache
from qosched.extender.kube.errors import ConfigError
from qosched.extender.kube.rest import LeanCoreV1
from qosched.policies.state import DeviceMemoryLookup, ServiceLookup

log = logging.getLogger(__name__)

Resource = Literal["nodes", "pods"]
RESOURCES: tuple[Resource, ...] = ("nodes", "pods")
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
APPLIED_EVENTS: frozenset[str] = frozenset({"ADDED", "MODIFIED", "DELETED"})


class RawMeta(TypedDict, total=False):
    """``metadata`` of an API object as it arrives (the subset the cache reads)."""

    name: str
    namespace: str
    uid: str
    resourceVersion: str
    annotations: dict[str, str]
    labels: dict[str, str]
    deletionTimestamp: str


class RawBody(TypedDict, total=False):
    """An API object as a dict (a Node, a Pod, a ConfigMap, or the ``Status`` of an ERROR event)."""

    apiVersion: str
    kind: str
    metadata: RawMeta
    spec: dict[str, Any]
    status: Any
    data: dict[str, str]
    code: int
    reason: str
    message: str


class RawEvent(TypedDict):
    """One line of a watch stream."""

    type: str
    object: RawBody


# --------------------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Every timeout and backoff of the watch loop, each default with its reason."""

    server_timeout_s: float = 300.0
    """``timeoutSeconds`` asked of the server per watch request [s]. A bounded stream is rotated
    before load balancers or NAT tables cut it silently, and moves across API server replicas.
    client-go's reflector asks 5–10 min; 5 min plus the spread below gives the same range."""

    server_timeout_spread_frac: float = 1.0
    """The request asks ``server_timeout_s · (1 + spread · U(0, 1))`` so that many watchers
    restarted together (an extender rollout) do not all reconnect in the same second."""

    client_read_timeout_s: float = 75.0
    """Longest wait for any byte of an open stream [s]. With ``allowWatchBookmarks`` the API
    server sends a BOOKMARK about every 60 s even when nothing changes, so a silence of 75 s
    means a dead connection (which TCP alone may not notice for hours)."""

    connect_timeout_s: float = 10.0
    """TCP + TLS connect timeout [s]: an API server that does not accept in 10 s is down or
    overloaded; backing off and retrying beats waiting."""

    list_timeout_s: float = 120.0
    """Read timeout of one list page [s]. A page of 500 pods is ~1–3 MB; 2 min covers a slow,
    loaded API server without hanging forever on a dead one."""

    list_page_size: int = 500
    """``limit`` of a list page (0 = unpaged). 500 is what kubectl and client-go's pager use: a
    page fits in memory easily and the API server serves it from its watch cache."""

    backoff_initial_s: float = 0.5
    """First pause after a failure [s] (``WATCH_BACKOFF_S``). Short, because most failures are
    a single dropped connection; the pause doubles on each consecutive failure."""

    backoff_max_s: float = 30.0
    """Longest pause [s] (``WATCH_BACKOFF_MAX_S``). client-go caps its reflector at 30 s: an API
    server back from an outage is found within 30 s, and a thundering herd is avoided."""

    backoff_factor: float = 2.0
    """Growth of the pause per consecutive failure (exponential backoff)."""

    backoff_jitter_frac: float = 0.5
    """Each pause is drawn from ``[d · (1 − jitter), d]`` for the nominal pause ``d``, so
    watchers that failed together retry apart and the cap is never exceeded."""

    relist_interval_s: float = 0.0
    """Relist a resource this often even when the watch is healthy [s]; 0 = never. The watch is
    exact (every change arrives, 410 forces a relist), and a relist costs O(cluster) CPU (~3 s at
    50k pods, though the cache lock is held < 1 ms of it), so it is off by default; turn it on as
    a safety net if needed."""

    unready_after_s: float = 60.0
    """``/readyz`` turns 503 when a resource's watch has been broken this long [s]
    (``WATCH_UNREADY_AFTER_S``). Broken: from the first failed list or watch request until a
    watch stream is open again (after the relist a 410 needs). A silent stream counts from when
    ``client_read_timeout_s`` finds it dead. 60 s is two retries at the 30 s backoff cap: one
    dropped connection or compaction never flips readiness, an outage does, and readiness
    returns as soon as the watch is back."""

    pod_field_selector: str = "status.phase!=Succeeded,status.phase!=Failed"
    """Pods listed and watched: kube-scheduler's own selector. A pod that finishes leaves the
    selection and arrives as DELETED, which releases its resources; finished pods are never held."""

    gc_freeze_after_list: bool = True
    """After each list page and each (re)list, move every object alive to the garbage
    collector's permanent generation (``gc.freeze()``). At 50k pods the cache holds millions of
    small dicts; without this each full collection walks all of them (~0.24 s measured, a pause
    any decision can hit) and a paged list spends most of its time in the collector (see
    ``benchmarks/bench_cache_sync.py``). The cached objects hold no reference cycles, so reference
    counting still frees them when they are replaced; the price is that cyclic garbage alive at
    a freeze is never collected (small: a few request temporaries)."""

    def __post_init__(self) -> None:
        positive = (
            "server_timeout_s",
            "client_read_timeout_s",
            "connect_timeout_s",
            "list_timeout_s",
            "unready_after_s",
        )
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"watch setting {name} must be > 0, got {value!r}")
        if not 0 <= self.server_timeout_spread_frac <= 10:
            raise ConfigError(
                f"watch setting server_timeout_spread_frac must be in 0..10, got {self.server_timeout_spread_frac!r}"
            )
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError(
                "watch settings need 0 < backoff_initial_s <= backoff_max_s, got "
                f"{self.backoff_initial_s!r} and {self.backoff_max_s!r}"
            )
        if not self.backoff_factor >= 1:
            raise ConfigError(f"watch setting backoff_factor must be >= 1, got {self.backoff_factor!r}")
        if not 0 <= self.backoff_jitter_frac < 1:
            raise ConfigError(
                f"watch setting backoff_jitter_frac must be in [0, 1), got {self.backoff_jitter_frac!r}"
            )
        if not self.relist_interval_s >= 0:
            raise ConfigError(f"watch setting relist_interval_s must be >= 0, got {self.relist_interval_s!r}")
        if self.list_page_size < 0:
            raise ConfigError(f"watch setting list_page_size must be >= 0, got {self.list_page_size!r}")

    @classmethod
    def from_config(cls, settings: Mapping[str, Any]) -> WatchSettings:
        """From the extender settings (``WATCH_TIMEOUT_S``, ``WATCH_BACKOFF_S``, ``WATCH_BACKOFF_MAX_S``)."""
        keys = {
            "WATCH_TIMEOUT_S": "server_timeout_s",
            "WATCH_BACKOFF_S": "backoff_initial_s",
            "WATCH_BACKOFF_MAX_S": "backoff_max_s",
            "WATCH_UNREADY_AFTER_S": "unready_after_s",
        }
        values: dict[str, float] = {}
        for key, field_name in keys.items():
            raw = settings.get(key)
            if raw is None:
                continue
            try:
                values[field_name] = float(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"setting {key}: {raw!r} is not a number of seconds") from None
        return cls(**values)  # type: ignore[arg-type]


class Backoff:
    """Exponential backoff with jitter, bounded (see :class:`WatchSettings`).

    The n-th consecutive pause (n = 0, 1, ...) is ``d_n = min(max, initial · factor**n)``,
    drawn uniformly from ``[d_n · (1 − jitter), d_n]``. ``reset()`` after any success.
    """

    def __init__(self, settings: WatchSettings, rng: random.Random) -> None:
        self._s = settings
        self._rng = rng
        self.failures = 0

    def next_s(self, at_least_s: float = 0.0) -> float:
        s = self._s
        nominal = min(s.backoff_max_s, s.backoff_initial_s * s.backoff_factor ** min(self.failures, 64))
        self.failures += 1
        pause = nominal * (1.0 - s.backoff_jitter_frac * self._rng.random())
        return max(pause, min(at_least_s, s.backoff_max_s))

    def reset(self) -> None:
        self.failures = 0


# --------------------------------------------------------------------------------------- client


def api_client_from(settings: Mapping[str, Any], *, context: str | None = None) -> k8s.ApiClient:
    """The ``ApiClient`` of the extender: a kubeconfig file, else the in-cluster service account.

    ``KUBECONFIG`` (``--kubeconfig``) names a file; otherwise (``IN_CLUSTER`` or by default) the
    pod's service account token and CA are used. TCP keep-alive is switched on (watches sit idle
    between events) and the connection pool holds enough connections for the two watch streams
    plus concurrent binds (gunicorn threads), so binds reuse kept-alive connections. ``context``
    picks a kubeconfig context other than the current one (the controller's ``--context``).
    """
    from kubernetes import config as kube_config

    configuration = k8s.Configuration()
    path = settings.get("KUBECONFIG")
    try:
        if path:
            kube_config.load_kube_config(
                config_file=str(path),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            kube_config.load_incluster_config(client_configuration=configuration)
    except kube_config.ConfigException as err:
        where = f"kubeconfig {path}" if path else "in-cluster config (pass --kubeconfig outside a cluster)"
        raise ConfigError(f"{where}: {err}") from None
    except OSError as err:
        raise ConfigError(f"kubeconfig {path}: {err.strerror or err}") from None
    configuration.keep_alive = True
    configuration.connection_pool_maxsize = max(int(configuration.connection_pool_maxsize or 0), 32)
    return k8s.ApiClient(configuration)


# --------------------------------------------------------------------------------------- objects

#: Annotation that kubectl apply writes: a full copy of the object, never read here.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_CONTAINER_KEYS = ("name", "resources", "restartPolicy")
_POD_SPEC_DROP = frozenset({"volumes", "containers", "initContainers", "ephemeralContainers"})
_POD_STATUS_KEYS = ("phase", "nominatedNodeName", "qosClass")


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a Pod the extender reads; the rest is dropped on the way into the cache.

    Kept: all of ``metadata`` but ``managedFields`` and kubectl's last-applied annotation (the
    qosched annotations, labels, uid, resourceVersion, deletionTimestamp...); all of ``spec``
    but volumes, with each (init) container reduced to ``name``/``resources``/``restartPolicy``
    (what kube-scheduler sums into requests); ``status.phase``, ``nominatedNodeName``, ``qosClass``.
    A reader that needs another field adds it here.
    """
    meta = dict(pod.get("metadata") or {})
    meta.pop("managedFields", None)
    ann = meta.get("annotations")
    if isinstance(ann, Mapping) and LAST_APPLIED in ann:
        meta["annotations"] = {k: v for k, v in ann.items() if k != LAST_APPLIED}
    spec_in = pod.get("spec") or {}
    spec = {k: v for k, v in spec_in.items() if k not in _POD_SPEC_DROP}
    for key in ("containers", "initContainers"):
        containers = spec_in.get(key)
        if containers:
            spec[key] = [
                {k: c[k] for k in _CONTAINER_KEYS if k in c} for c in containers if isinstance(c, Mapping)
            ]
    status_in = pod.get("status") or {}
    out: dict[str, Any] = {"metadata": meta, "spec": spec}
    if isinstance(status_in, Mapping):
        out["status"] = {k: status_in[k] for k in _POD_STATUS_KEYS if k in status_in}
    for key in ("apiVersion", "kind"):
        if key in pod:
            out[key] = pod[key]
    return out


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a chunked body into newline-terminated records (watch events are one JSON a line)."""
    tail = b""
    for chunk in chunks:
        if not chunk:
            continue
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        for line in parts:
            if line.strip():
                yield line
    if tail.strip():
        yield tail


class Gone(Exception):
    """HTTP 410 / ERROR 410: the resourceVersion we watch from was compacted; relist."""


class WatchError(Exception):
    """The API server ended a watch with an ERROR event other than 410."""


#: Failures that end one request and are retried after a backoff.
TRANSIENT: tuple[type[BaseException], ...] = (
    k8s.ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
    orjson.JSONDecodeError,
    WatchError,
)


def _retry_after_s(err: BaseException) -> float:
    """``Retry-After`` of a 429/5xx answer (API Priority and Fairness sends it), else 0."""
    headers = getattr(err, "headers", None)
    if not headers:
        return 0.0
    try:
        return float(headers.get("Retry-After") or 0)
    except (TypeError, ValueError):
        return 0.0


# --------------------------------------------------------------------------------------- the cache


class LiveCluster(ClusterCache):
    """A ``ClusterCache`` kept current by list+watch (see the module docstring).

    Parameters
    ----------
    api_client
        The official client's ``ApiClient`` (:func:`api_client_from`).
    lookup, device_memory
        Profile lookups, as for every ``ClusterCache``.
    settings
        Extender settings; ``WATCH_*`` keys fill :class:`WatchSettings` unless ``watch`` is given.
    watch
        Explicit watch settings (tests shorten timeouts and backoffs).
    rng
        Source of jitter (tests pass a seeded ``random.Random``).
    **cache_kw
        ``class_of``, ``assume_ttl_s``, ``clock`` of ``ClusterCache``.
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        lookup: ServiceLookup,
        device_memory: DeviceMemoryLookup,
        *,
        settings: Mapping[str, Any] | None = None,
        watch: WatchSettings | None = None,
        rng: random.Random | None = None,
        **cache_kw: Any,
    ) -> None:
        super().__init__(lookup, device_memory, **cache_kw)
        # core/v1 list/watch through the client's pool, without CoreV1Api's 2 s of model classes.
        self.api = LeanCoreV1(api_client)
        self.watch_settings = watch or WatchSettings.from_config(settings or {})
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._open: dict[Resource, Any] = {}  # the response each thread is reading (stop() shuts it)
        self._open_lock = threading.Lock()
        #: Newest resourceVersion seen per resource (list, event or bookmark).
        self.resource_versions: dict[Resource, str] = {}
        #: Lists made per resource (the first sync counts one each).
        self.lists: dict[Resource, int] = dict.fromkeys(RESOURCES, 0)
        self._listed_at: dict[Resource, float] = {}
        #: Per resource, when its watch broke (first failure since the last open stream).
        self._broken_since: dict[Resource, float] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Sync in the background, then watch nodes and pods, each in its own daemon thread."""
        with self._threads_lock:
            if self._threads:
                return
            self._stopping.clear()
            thread = threading.Thread(target=self._run, name="qosched-watch-sync", daemon=True)
            self._threads.append(thread)
        thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the threads: set the stop flag, shut any open stream, join (bounded)."""
        self._stopping.set()
        with self._open_lock:
            responses = list(self._open.values())
        for resp in responses:
            _shutdown(resp)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._threads_lock:
                threads = list(self._threads)
            alive = [t for t in threads if t.is_alive() and t is not threading.current_thread()]
            if not alive or time.monotonic() >= deadline:
                break
            alive[0].join(max(0.0, min(0.1, deadline - time.monotonic())))
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
        for thread in self._threads:
            log.warning("watch thread %s did not stop within %.1f s", thread.name, timeout_s)

    @property
    def running(self) -> bool:
        with self._threads_lock:
            return any(t.is_alive() for t in self._threads)

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: synced, and no watch broken longer than ``unready_after_s``.

        A cache whose watch has been down for minutes still answers from what it had: binds keep
        their reservation checks, but it no longer sees other writers (kube-scheduler's default
        binder, another replica), so it says so and the Service takes it out until it resyncs.
        """
        ready, why = super().readiness()
        if not ready:
            return ready, why
        now = time.monotonic()
        bound_s = self.watch_settings.unready_after_s
        for resource, since in sorted(self._broken_since.items()):
            if now - since > bound_s:
                return False, (
                    f"{resource} watch broken for {now - since:.0f} s (> {bound_s:g} s): "
                    "the cache may be stale; relisting and re-watching with backoff"
                )
        return True, why

    def expiry_paused(self) -> bool:
        """Assumptions do not expire while the pods watch is broken (see ``ClusterCache``).

        Before, an outage longer than ``assume_ttl_s`` dropped the reservation of a bind the API
        server had committed, and the next bind could take the same devices.
        """
        return "pods" in self._broken_since

    def broken_for_s(self, resource: Resource) -> float:
        """Seconds the watch of ``resource`` has been broken (0 while it streams)."""
        since = self._broken_since.get(resource)
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        if not self._initial_sync():
            return
        for resource in RESOURCES:
            thread = threading.Thread(
                target=self.watch_loop,
                args=(resource, self.resource_versions.get(resource)),
                name=f"qosched-watch-{resource}",
                daemon=True,
            )
            with self._threads_lock:
                if self._stopping.is_set():
                    return
                self._threads.append(thread)
            thread.start()

    def _sleep(self, seconds: float) -> bool:
        """Pause unless stopping; True when the loop should go on."""
        return not self._stopping.wait(seconds)

    # ------------------------------------------------------------------ first sync
    def sync(self) -> None:
        """List nodes, then pods, replace the whole cache with both, mark synced. One attempt."""
        nodes, nodes_rv = self._list("nodes")
        pods, pods_rv = self._list("pods")
        self.replace_all(nodes, pods)
        now = time.monotonic()
        listed: tuple[tuple[Resource, str], ...] = (("nodes", nodes_rv), ("pods", pods_rv))
        for resource, rv in listed:
            self.resource_versions[resource] = rv
            self.lists[resource] += 1
            self._listed_at[resource] = now
        self._after_list()
        self.mark_synced()
        log.info(
            "cluster cache synced: %d nodes (rv %s), %d pods (rv %s)",
            len(nodes),
            nodes_rv,
            len(pods),
            pods_rv,
        )

    def _initial_sync(self) -> bool:
        backoff = Backoff(self.watch_settings, self._rng)
        while not self._stopping.is_set():
            try:
                self.sync()
                return True
            except Exception as err:  # transient or not, retry: readiness depends on it
                if self._stopping.is_set():
                    break
                pause = backoff.next_s(_retry_after_s(err))
                if isinstance(err, TRANSIENT):
                    log.warning("initial list failed (%s); retrying in %.2f s", _describe(err), pause)
                else:
                    log.exception("initial list failed unexpectedly; retrying in %.2f s", pause)
                if not self._sleep(pause):
                    break
        return False

    def _after_list(self) -> None:
        if self.watch_settings.gc_freeze_after_list:
            gc.freeze()

    # ------------------------------------------------------------------ the loop
    def watch_loop(self, resource: Resource, rv: str | None = None, *, iterations: int | None = None) -> None:
        """Keep ``resource`` current until ``stop()``: list when needed, watch, recover.

        Kept trivial on purpose (kopf's advice for endless loops): each pass lists when there is
        no version to watch from (or the relist interval passed), then runs one watch request;
        a failure backs off (:meth:`_recover`). ``iterations`` bounds the passes (tests); ``None``
        runs until stopped.
        """
        if resource not in RESOURCES:
            raise ValueError(f"resource must be one of {RESOURCES}, got {resource!r}")
        backoff = Backoff(self.watch_settings, self._rng)
        if rv is not None:
            self.resource_versions[resource] = rv
            self._listed_at.setdefault(resource, time.monotonic())
        else:
            self.resource_versions.pop(resource, None)
        passes = 0
        while not self._stopping.is_set() and (iterations is None or passes < iterations):
            passes += 1
            try:
                if resource not in self.resource_versions or self._relist_due(resource):
                    self.relist(resource)
                    backoff.reset()
                self._watch_once(resource, backoff)
            except Exception as err:
                if self._stopping.is_set():
                    break
                self._broken_since.setdefault(resource, time.monotonic())
                self._recover(resource, err, backoff)

    def _relist_due(self, resource: Resource) -> bool:
        interval_s = self.watch_settings.relist_interval_s
        listed_at = self._listed_at.get(resource, -float("inf"))
        return interval_s > 0 and time.monotonic() - listed_at >= interval_s

    def _recover(self, resource: Resource, err: Exception, backoff: Backoff) -> None:
        """After a failed pass: 410 → relist; transient → re-watch from the newest version; a bug
        or malformed answer → relist (it must not kill the watch for good). Always backs off."""
        if isinstance(err, Gone):
            self.resource_versions.pop(resource, None)
            pause = backoff.next_s()
            log.info("%s watch: %s; relisting in %.2f s", resource, err, pause)
        elif isinstance(err, TRANSIENT):
            pause = backoff.next_s(_retry_after_s(err))
            log.warning(
                "%s watch interrupted (%s); resuming from resourceVersion %s in %.2f s",
                resource,
                _describe(err),
                self.resource_versions.get(resource, "<relist>"),
                pause,
            )
        else:
            pause = backoff.next_s()
            log.error("%s watch failed unexpectedly; relisting in %.2f s", resource, pause, exc_info=err)
            self.resource_versions.pop(resource, None)
        self._sleep(pause)

    def relist(self, resource: Resource) -> str:
        """List one resource and replace only it in the cache; returns the list's resourceVersion."""
        items, rv = self._list(resource)
        if resource == "nodes":
            self.replace_nodes(items)
        else:
            self.replace_pods(items)
        self.resource_versions[resource] = rv
        self.lists[resource] += 1
        self._listed_at[resource] = time.monotonic()
        self._after_list()
        log.info("%s relisted: %d objects at resourceVersion %s", resource, len(items), rv)
        return rv

    # ------------------------------------------------------------------ requests
    def _list_fn(self, resource: Resource) -> Callable[..., Any]:
        return self.api.list_node if resource == "nodes" else self.api.list_pod_for_all_namespaces

    def _selector(self, resource: Resource) -> dict[str, str]:
        selector = self.watch_settings.pod_field_selector
        return {"field_selector": selector} if resource == "pods" and selector else {}

    def _list(self, resource: Resource) -> tuple[list[dict[str, Any]], str]:
        """All objects (pods slimmed) and the list's resourceVersion, page by page.

        An expired ``continue`` token (410, the pages took longer than compaction) restarts the
        list unpaged once, as client-go's pager does.
        """
        s = self.watch_settings
        fn = self._list_fn(resource)
        limit = s.list_page_size
        try:
            return self._list_pages(resource, fn, limit)
        except k8s.ApiException as err:
            if err.status != 410 or not limit:
                raise
            log.info("%s list: continue token expired; listing unpaged", resource)
            return self._list_pages(resource, fn, 0)

    def _list_pages(
        self, resource: Resource, fn: Callable[..., Any], limit: int
    ) -> tuple[list[dict[str, Any]], str]:
        s = self.watch_settings
        slim = slim_pod if resource == "pods" else None
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "_preload_content": False,
                "_request_timeout": (s.connect_timeout_s, s.list_timeout_s),
                **self._selector(resource),
            }
            if limit:
                kwargs["limit"] = limit
            if token:
                kwargs["_continue"] = token
            resp = fn(**kwargs)
            with self._reading(resource, resp, keep_alive=True):
                body = orjson.loads(resp.data)
            page = body.get("items") or []
            meta = body.get("metadata") or {}
            if slim is not None:
                items.extend(slim(obj) for obj in page)
            else:
                items.extend(page)
            del body, page
            if s.gc_freeze_after_list:
                gc.freeze()  # pages already read are long-lived: keep the collector off them
            token = meta.get("continue") or None
            if not token:
                rv = meta.get("resourceVersion")
                if not rv:
                    raise WatchError(f"{resource} list carries no metadata.resourceVersion")
                return items, str(rv)

    def _watch_once(self, resource: Resource, backoff: Backoff) -> None:
        """One watch request from the newest version, applying events until the stream ends."""
        s = self.watch_settings
        rv = self.resource_versions[resource]
        timeout_s = s.server_timeout_s * (1.0 + s.server_timeout_spread_frac * self._rng.random())
        try:
            resp = self._list_fn(resource)(
                watch=True,
                resource_version=rv,
                timeout_seconds=max(1, int(timeout_s)),
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(s.connect_timeout_s, s.client_read_timeout_s),
                **self._selector(resource),
            )
        except k8s.ApiException as err:
            if err.status == 410:
                raise Gone(f"HTTP 410 watching from {rv}") from None
            raise
        self._broken_since.pop(resource, None)  # a stream is open again: the watch works
        with self._reading(resource, resp):
            for line in iter_lines(resp.stream(amt=None, decode_content=True)):
                if self._stopping.is_set():
                    return
                self.dispatch(resource, orjson.loads(line))
                backoff.reset()  # the stream works: the next failure starts from the shortest pause

    def dispatch(self, resource: Resource, event: RawEvent) -> None:
        """Apply one event to the cache and remember its version (raises Gone / WatchError).

        ``event`` is a parsed line of the stream, typed as the API sends it but checked here
        (an event without an object is logged and skipped)."""
        if not isinstance(event, Mapping) or not isinstance(event.get("object"), Mapping):
            log.warning("%s watch: event without an object skipped: %.200r", resource, event)
            return
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            code, reason, message = obj.get("code"), obj.get("reason", ""), obj.get("message", "")
            if code == 410:
                raise Gone(f"{reason or 'Gone'}: {message}")
            raise WatchError(f"ERROR event {code} {reason}: {message}")
        if kind not in APPLIED_EVENTS and kind != "BOOKMARK":
            log.warning("%s watch: unknown event type %r skipped", resource, kind)
            return
        raw_meta = obj.get("metadata")
        meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
        if kind in APPLIED_EVENTS:
            try:
                self._apply(resource, kind, obj)
            except Exception:  # one bad object must not end the watch of all the others
                log.exception("%s watch: could not apply %s of %s", resource, kind, meta.get("name"))
        rv = meta.get("resourceVersion")
        if rv:
            self.resource_versions[resource] = str(rv)

    def _apply(self, resource: Resource, kind: str, obj: RawBody) -> None:
        if resource == "nodes":
            if kind == "DELETED":
                self.delete_node(str((obj.get("metadata") or {}).get("name", "")))
            else:
                self.apply_node(obj)
        elif kind == "DELETED":
            self.delete_pod(obj)
        else:
            self.apply_pod(slim_pod(obj))

    # ------------------------------------------------------------------ open responses
    def _reading(self, resource: Resource, resp: Any, *, keep_alive: bool = False) -> _Reading:
        return _Reading(self, resource, resp, keep_alive)


class _Reading:
    """Registers the response a thread reads so that ``stop()`` can shut it; closes it after.

    A fully read list answer goes back to the pool (``keep_alive``); a watch stream's connection
    is closed, as ``kubernetes.watch.Watch`` does (it may hold unread bytes).
    """

    __slots__ = ("_cache", "_keep_alive", "_resource", "_resp")

    def __init__(self, cache: LiveCluster, resource: Resource, resp: Any, keep_alive: bool) -> None:
        self._cache, self._resource, self._resp, self._keep_alive = cache, resource, resp, keep_alive

    def __enter__(self) -> None:
        cache = self._cache
        with cache._open_lock:
            cache._open[self._resource] = self._resp
        if cache._stopping.is_set():  # stop() ran between the request and this registration
            _shutdown(self._resp)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        cache = self._cache
        with cache._open_lock:
            if cache._open.get(self._resource) is self._resp:
                del cache._open[self._resource]
        try:
            if not (self._keep_alive and exc_type is None):
                self._resp.close()
            self._resp.release_conn()
        except Exception:  # closing a broken connection may fail again; nothing to do
            pass


def _shutdown(resp: Any) -> None:
    """Unblock a thread reading ``resp`` (shut the socket for reading; it then sees EOF)."""
    try:
        resp.shutdown()
        return
    except Exception:
        pass
    try:
        import socket

        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


#: Unblock a thread reading a streamed response from another thread (shuts its socket).
shutdown_stream = _shutdown


def _describe(err: BaseException) -> str:
    if isinstance(err, k8s.ApiException):
        return f"HTTP {err.status} {err.reason or ''}".strip()
    return f"{type(err).__name__}: {err}"


__all__ = [
    "LAST_APPLIED",
    "RESOURCES",
    "Backoff",
    "Gone",
    "LiveCluster",
    "RawBody",
    "RawEvent",
    "RawMeta",
    "Resource",
    "WatchError",
    "WatchSettings",
    "api_client_from",
    "iter_lines",
    "shutdown_stream",
    "slim_pod",
]
