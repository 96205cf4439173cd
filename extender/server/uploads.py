"""Profile uploads: ``PUT /profiles/<accelerator>/<model>`` (contract §2), stored and hot-reloaded.

One upload goes through four steps, in this order, so that a profile is never in use before it
is stored and never stored unless it is valid:

1. **Authorise.** ``Authorization: Bearer <token>`` is compared with the configured token in
   constant time (:func:`hmac.compare_digest`). The token comes from a file
   (``UPLOAD_TOKEN_FILE``, re-read when the file changes, so it can be rotated without a restart)
   or from a Kubernetes Secret (``UPLOAD_TOKEN_SECRET`` = ``namespace/name``, key ``token``, read
   with the official client and cached for ``UPLOAD_TOKEN_TTL_S`` seconds). No token configured
   means uploads are disabled (403); a configured token that cannot be read is a 503.
2. **Validate.** The body (at most ``MAX_PROFILE_BYTES``) must be JSON (400 otherwise) and a valid
   profile per :func:`qosched.profiles.schema.loads_profile` (422 naming the field path), whose
   ``accelerator`` and ``model`` are those of the URL (422 naming the field).
3. **Store durably.** Into ``PROFILES_DIR`` (an atomic, fsynced file write through
   :meth:`ProfileStore.put`) or, in live mode, into the ConfigMap ``PROFILES_CONFIGMAP`` =
   ``namespace/name`` under the key ``<accelerator>__<model>.json`` (created if missing, else
   updated with the ``resourceVersion`` it was read at, retried on a 409 conflict). With
   neither configured the upload is refused (503): a profile that silently vanished at the next
   restart would be worse than none.
4. **Hot-reload.** The profile store swaps in a new immutable set, then the cluster cache
   recomputes every service's parameters (``cache.rebuild(*lookup_from_profiles(new_set))``)
   under its lock: a filter already evaluating finishes on the old state, the next one sees the
   new one, and none ever sees a mix. Uploads are serialised by one lock so the store and the
   cache always end on the same set.

At start-up in live mode the ConfigMap's profiles are layered over the bundled ones
(:func:`load_configmap_profiles`), so uploads survive restarts there as the directory's do; an
API server that does not answer then is logged, not fatal (no crash loop): the follower below
loads them once it answers.

**Every replica serves every upload.** An upload reaches the replica that received it; the others
learn of it through :class:`ConfigMapFollower`, which each replica runs: a list+watch of the one
ConfigMap (``fieldSelector=metadata.name=<name>``, the watch loop of ``docs/live-cluster.md``:
backoff, relist on 410) that layers the stored profiles over the current set and hot-reloads
(step 4) when the content changed (``ProfileSet.version`` is a content hash, so the replica that
wrote it does not rebuild twice). Measured: an upload to one replica is served by the other within
tens of milliseconds on loopback (``tests/faults/test_replicas.py``). A key deleted from the
ConfigMap is not unloaded from running replicas (uploads never delete; a restart drops it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from qosched.extender.kube.cache import ClusterCache
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.profiles.schema import Profile, ProfileError, dump_profile_json, loads_profile, profile_filename
from qosched.profiles.store import ProfileSet, ProfileStore, merge

if TYPE_CHECKING:  # the kubernetes client is imported only in live mode
    from qosched.extender.kube.watch import RawBody, RawEvent

log = logging.getLogger(__name__)

#: Key of the token inside the Secret named by ``UPLOAD_TOKEN_SECRET``.
SECRET_TOKEN_KEY = "token"
#: Attempts at a ConfigMap write before giving up on repeated resourceVersion conflicts.
CONFIGMAP_ATTEMPTS = 5
#: ``WWW-Authenticate`` challenge of a 401 (RFC 6750 §3).
CHALLENGE = 'Bearer realm="qosched"'


class UploadError(Exception):
    """An upload refused with an HTTP status, a message for the client and optional headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class TokenUnavailable(Exception):
    """The configured token exists but cannot be read now (missing file, API error)."""


class TokenSource(Protocol):
    """Returns the expected bearer token; raises :class:`TokenUnavailable` when it cannot."""

    def __call__(self) -> str: ...


# --------------------------------------------------------------------------------- token sources


class FileToken:
    """The token in a file (surrounding whitespace stripped), re-read when its mtime or size change.

    A mounted Secret is updated in place by the kubelet, so rotation needs no restart; the stat
    per request costs ~2 µs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def __call__(self) -> str:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            with self._lock:
                if stamp != self._stamp:
                    self._token = self.path.read_text(encoding="utf-8").strip()
                    self._stamp = stamp
                token = self._token
        except (OSError, UnicodeDecodeError) as err:
            raise TokenUnavailable(f"upload token file {self.path}: cannot read it ({err})") from None
        if not token:
            raise TokenUnavailable(f"upload token file {self.path} is empty")
        return token


@dataclass(slots=True)
class SecretToken:
    """The ``token`` key of a Kubernetes Secret, read with the official client, cached ``ttl_s``.

    A failed read is not cached (the next request tries again) and is a :class:`TokenUnavailable`,
    never a stale token: a rotated-away token must stop working within ``ttl_s``.
    """

    api_client: Any
    namespace: str
    name: str
    ttl_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _token: str = ""
    _until: float = float("-inf")

    @classmethod
    def from_ref(cls, api_client: Any, ref: str, **kw: Any) -> SecretToken:
        namespace, name = split_ref(ref, "UPLOAD_TOKEN_SECRET")
        return cls(api_client, namespace, name, **kw)

    def __call__(self) -> str:
        with self._lock:
            if self.clock() < self._until:
                return self._token
            token = self._read()
            self._token, self._until = token, self.clock() + self.ttl_s
            return token

    def _read(self) -> str:
        from kubernetes import client as k8s
        from kubernetes.client.rest import ApiException

        where = f"upload token Secret {self.namespace}/{self.name}"
        try:
            secret = k8s.CoreV1Api(self.api_client).read_namespaced_secret(self.name, self.namespace)
        except ApiException as err:
            raise TokenUnavailable(f"{where}: the API server answered {err.status} {err.reason}") from None
        except Exception as err:  # connection refused, timeout, TLS: all "cannot read it now"
            raise TokenUnavailable(f"{where}: {type(err).__name__}: {err}") from None
        raw = (secret.data or {}).get(SECRET_TOKEN_KEY)
        if raw is None:
            raise TokenUnavailable(f"{where} has no key {SECRET_TOKEN_KEY!r}")
        try:
            token = base64.b64decode(raw, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise TokenUnavailable(f"{where}: key {SECRET_TOKEN_KEY!r} is not base64 UTF-8 text") from None
        if not token:
            raise TokenUnavailable(f"{where}: key {SECRET_TOKEN_KEY!r} is empty")
        return token


def split_ref(ref: str, setting: str) -> tuple[str, str]:
    """``namespace/name`` → (namespace, name); ValueError naming the setting otherwise."""
    namespace, sep, name = str(ref).partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"{setting}: expected namespace/name, got {ref!r}")
    return namespace, name


# --------------------------------------------------------------------------------- durable sinks


class ProfileSink(Protocol):
    """Stores a validated profile durably and makes it current in ``store``; returns where."""

    def store(self, store: ProfileStore, profile: Profile) -> tuple[ProfileSet, str]: ...


@dataclass(frozen=True, slots=True)
class DirectorySink:
    """``PROFILES_DIR``: atomic fsynced file write and swap, both by :meth:`ProfileStore.put`."""

    directory: Path

    def store(self, store: ProfileStore, profile: Profile) -> tuple[ProfileSet, str]:
        new_set = store.put(profile, persist_dir=self.directory)
        return new_set, str(self.directory / profile.filename)


@dataclass(frozen=True, slots=True)
class ConfigMapSink:
    """``PROFILES_CONFIGMAP``: one key ``<accelerator>__<model>.json`` per profile in a ConfigMap.

    Create when absent; otherwise read, set that one key, and write the object back (``update``)
    with the ``resourceVersion`` it was read at, so a concurrent writer (another replica,
    ``kubectl edit``) makes the API server answer 409 and the write is retried on the fresh
    object instead of clobbering it. Verbs: ``get``, ``update`` on the ConfigMap and ``create``
    in its namespace, what ``manifests/rbac.yaml`` grants (no ``patch``).
    """

    api_client: Any
    namespace: str
    name: str
    attempts: int = CONFIGMAP_ATTEMPTS

    @classmethod
    def from_ref(cls, api_client: Any, ref: str) -> ConfigMapSink:
        namespace, name = split_ref(ref, "PROFILES_CONFIGMAP")
        return cls(api_client, namespace, name)

    def store(self, store: ProfileStore, profile: Profile) -> tuple[ProfileSet, str]:
        self.write(profile.filename, dump_profile_json(profile))
        return store.put(profile), f"configmap {self.namespace}/{self.name} key {profile.filename}"

    def write(self, key: str, text: str) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.rest import ApiException

        v1 = k8s.CoreV1Api(self.api_client)
        last = ""
        for _ in range(self.attempts):
            try:
                current = v1.read_namespaced_config_map(self.name, self.namespace)
            except ApiException as err:
                if err.status != 404:
                    raise
                body = k8s.V1ConfigMap(
                    metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace), data={key: text}
                )
                try:
                    v1.create_namespaced_config_map(self.namespace, body)
                    return
                except ApiException as create_err:
                    if create_err.status != 409:  # 409 AlreadyExists: someone created it first
                        raise
                    last = "created concurrently"
                    continue
            # Read-modify-write: the object carries the resourceVersion just read, so the update
            # is conditional; a concurrent write since the read is a 409 and the loop reads again.
            current.data = {**(current.data or {}), key: text}
            try:
                v1.replace_namespaced_config_map(self.name, self.namespace, current)
                return
            except ApiException as err:
                if err.status != 409:
                    raise
                last = "resourceVersion conflict"
        raise RuntimeError(
            f"configmap {self.namespace}/{self.name}: gave up after {self.attempts} attempts ({last})"
        )

    def load(self) -> list[Profile]:
        """The valid profiles stored in the ConfigMap (none when it does not exist yet)."""
        from kubernetes.client.rest import ApiException

        from qosched.extender.kube.rest import LeanCoreV1  # CoreV1Api's import costs 2 s at start

        try:
            cm = LeanCoreV1(self.api_client).read_namespaced_config_map(self.name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return []
            raise
        return self.profiles_in(cm.data or {})

    def profiles_in(self, data: Mapping[str, str]) -> list[Profile]:
        """The valid profiles of a ConfigMap's ``data`` (invalid or misnamed keys skipped, logged)."""
        out = []
        for key, text in sorted(data.items()):
            source = f"configmap {self.namespace}/{self.name} key {key}"
            try:
                profile = loads_profile(text, source=source)
            except ProfileError as err:
                log.warning("skipping an invalid stored profile: %s", err)
                continue
            if key != profile.filename:
                log.warning("skipping %s: it holds %s", source, profile.filename)
                continue
            out.append(profile)
        return out


def load_configmap_profiles(store: ProfileStore, sink: ConfigMapSink) -> ProfileSet:
    """Layer the ConfigMap's profiles over ``store``'s current set (start-up in live mode).

    An API server that cannot be read now (down, 5xx, 403) is logged and the bundled set kept: a
    start-up that raised here would crash-loop the pod while the API server is away, and the
    :class:`ConfigMapFollower` loads the stored profiles as soon as it answers.
    """
    try:
        stored = sink.load()
    except Exception as err:  # connection refused, timeout, 5xx, 403: not fatal at start-up
        log.warning(
            "profiles configmap %s/%s unreadable at start-up (%s: %s); the follower loads it when the "
            "API server answers",
            sink.namespace,
            sink.name,
            type(err).__name__,
            err,
        )
        return store.current()
    if not stored:
        return store.current()
    new_set = merge(store.current(), ProfileSet(stored))
    store.replace(new_set)
    log.info("loaded %d uploaded profile(s) from configmap %s/%s", len(stored), sink.namespace, sink.name)
    return new_set


# --------------------------------------------------------------------------------- the follower


class ConfigMapFollower:
    """Hot-reloads the profiles stored in the ConfigMap by any replica: list, then watch it.

    One daemon thread runs kopf's loop on the official client, on one object: list the
    ConfigMap (``fieldSelector=metadata.name=<name>``) and hand its profiles to ``on_profiles``,
    then watch from the list's resourceVersion; each ADDED/MODIFIED hands the new profiles over;
    the stream's end, a 410 or any failure backs off (:class:`~qosched.extender.kube.watch.Backoff`)
    and lists again (one small object: a relist is cheaper than tracking versions).
    ``on_profiles`` is :meth:`Uploader.apply_stored`, which reloads only when the content changed.
    """

    def __init__(
        self,
        sink: ConfigMapSink,
        on_profiles: Callable[[list[Profile]], object],
        *,
        watch: Any | None = None,
    ) -> None:
        from qosched.extender.kube.watch import WatchSettings

        self.sink = sink
        self.on_profiles = on_profiles
        self.watch_settings: WatchSettings = watch or WatchSettings()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: Any = None
        #: Lists made and events applied (tests, logs).
        self.lists = 0
        self.events = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="qosched-profiles-follower", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        from qosched.extender.kube.watch import shutdown_stream

        self._stopping.set()
        if self._open is not None:
            shutdown_stream(self._open)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        import random

        from qosched.extender.kube.watch import Backoff

        backoff = Backoff(self.watch_settings, random.Random())
        while not self._stopping.is_set():
            try:
                rv = self._list()
                backoff.reset()
                self._watch(rv)
            except Exception as err:  # down, 410, 5xx, a bad answer: back off and list again
                if self._stopping.is_set():
                    break
                pause = backoff.next_s()
                log.warning(
                    "profiles configmap follower: %s: %s; listing again in %.2f s",
                    type(err).__name__,
                    err,
                    pause,
                )
                self._stopping.wait(pause)

    def _request(self, read_timeout_s: float, **kwargs: Any) -> Any:
        """A raw list (or, with ``watch=True``, watch) of the one ConfigMap, read timeout bounded."""
        from qosched.extender.kube.rest import LeanCoreV1

        return LeanCoreV1(self.sink.api_client).list_namespaced_config_map(
            self.sink.namespace,
            field_selector=f"metadata.name={self.sink.name}",
            _preload_content=False,
            _request_timeout=(self.watch_settings.connect_timeout_s, read_timeout_s),
            **kwargs,
        )

    def _list(self) -> str:
        resp = self._request(self.watch_settings.list_timeout_s)
        body = orjson.loads(resp.data)
        items = body.get("items") or []
        self.lists += 1
        self.on_profiles(self.sink.profiles_in((items[0].get("data") or {}) if items else {}))
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, rv: str) -> None:
        from qosched.extender.kube.watch import iter_lines

        s = self.watch_settings
        resp = self._request(
            s.client_read_timeout_s,
            watch=True,
            resource_version=rv,
            timeout_seconds=max(1, int(s.server_timeout_s)),
            allow_watch_bookmarks=True,
        )
        self._open = resp
        try:
            for line in iter_lines(resp.stream(amt=None, decode_content=True)):
                if self._stopping.is_set():
                    return
                self._dispatch(orjson.loads(line))
        finally:
            self._open = None
            resp.close()
            resp.release_conn()

    def _dispatch(self, event: RawEvent) -> None:
        kind = event.get("type")
        obj: RawBody = event.get("object") or {}
        if kind == "ERROR":
            raise RuntimeError(
                f"watch ERROR {obj.get('code')} {obj.get('reason', '')}: {obj.get('message', '')}"
            )
        if kind in ("ADDED", "MODIFIED"):
            self.events += 1
            self.on_profiles(self.sink.profiles_in(obj.get("data") or {}))


# --------------------------------------------------------------------------------- the uploader


@dataclass(frozen=True, slots=True)
class UploadResult:
    accelerator: str
    model: str
    created: bool
    stored: str
    version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "accelerator": self.accelerator,
            "model": self.model,
            "created": self.created,
            "stored": self.stored,
            "version": self.version,
        }


class Uploader:
    """Authorises, validates, stores and hot-reloads uploaded profiles (module docstring).

    Parameters
    ----------
    store : ProfileStore
        The extender's profile store.
    cache : ClusterCache
        Rebuilt with the new lookups after each upload.
    token : TokenSource or None
        None: uploads disabled (403).
    sink : ProfileSink or None
        None: no durable storage configured (503).
    max_bytes : int
        Largest accepted body (413 above).
    """

    def __init__(
        self,
        store: ProfileStore,
        cache: ClusterCache,
        *,
        token: TokenSource | None,
        sink: ProfileSink | None,
        max_bytes: int,
    ) -> None:
        self.store = store
        self.cache = cache
        self.token = token
        self.sink = sink
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self.follower: ConfigMapFollower | None = None

    def authorise(self, header: str | None) -> None:
        """Raise :class:`UploadError` unless ``header`` is ``Bearer <the token>``."""
        if self.token is None:
            raise UploadError(
                403,
                "profile uploads are disabled: no token configured "
                "(set UPLOAD_TOKEN_FILE / --token-file, or UPLOAD_TOKEN_SECRET)",
            )
        try:
            expected = self.token()
        except TokenUnavailable as err:
            log.error("profile upload refused: %s", err)
            raise UploadError(503, f"profile uploads are unavailable: {err}") from None
        scheme, _, given = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise UploadError(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": CHALLENGE},
            )
        if not hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8")):
            raise UploadError(
                401, "invalid bearer token", {"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'}
            )

    def upload(self, accelerator: str, model: str, body: bytes) -> UploadResult:
        """Validate ``body`` as the profile of (accelerator, model), store it, hot-reload.

        The caller has already authorised the request and bounded the body's size.
        """
        if self.sink is None:
            raise UploadError(
                503,
                "profile uploads have no durable storage configured "
                "(set PROFILES_DIR / --profiles, or PROFILES_CONFIGMAP in live mode)",
            )
        if len(body) > self.max_bytes:
            raise UploadError(413, f"profile: {len(body)} bytes exceed the limit of {self.max_bytes}")
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise UploadError(400, f"profile: invalid JSON: {err}") from None
        try:
            profile = loads_profile(body, source="profile")
        except ProfileError as err:
            raise UploadError(422, str(err)) from None
        for field_name, want in (("accelerator", accelerator), ("model", model)):
            got = getattr(profile, field_name)
            if got != want:
                raise UploadError(
                    422, f"profile field `{field_name}`: {got!r} does not match the URL's {want!r}"
                )
        with self._lock:
            created = (accelerator, model) not in self.store.current()
            try:
                new_set, where = self.sink.store(self.store, profile)
            except Exception as err:
                log.exception("storing profile %s failed", profile_filename(accelerator, model))
                raise UploadError(503, f"profile could not be stored: {type(err).__name__}: {err}") from None
            t0 = time.perf_counter()
            self.cache.rebuild(*lookup_from_profiles(new_set))
            log.info(
                "profile %s uploaded to %s; profiles version %s, cache rebuilt in %.1f ms",
                profile.filename,
                where,
                new_set.version,
                (time.perf_counter() - t0) * 1000,
            )
        return UploadResult(accelerator, model, created, where, new_set.version)

    def apply_stored(self, profiles: list[Profile]) -> bool:
        """Layer profiles stored by any replica over the current set; hot-reload if it changed.

        Serialised with uploads (one lock), so the store and the cache end on the same set. The
        replica that wrote the profile already has it: same content, same version, no rebuild.
        """
        if not profiles:
            return False
        with self._lock:
            current = self.store.current()
            new_set = merge(current, ProfileSet(profiles))
            if new_set.version == current.version:
                return False
            self.store.replace(new_set)
            t0 = time.perf_counter()
            self.cache.rebuild(*lookup_from_profiles(new_set))
            log.info(
                "profiles reloaded from the configmap: version %s, cache rebuilt in %.1f ms",
                new_set.version,
                (time.perf_counter() - t0) * 1000,
            )
        return True

    def follow(self, watch: Any | None = None) -> ConfigMapFollower | None:
        """Start following the ConfigMap sink (live mode); None when the sink is not a ConfigMap.

        ``create_app`` calls it; :meth:`stop` ends it.
        """
        if not isinstance(self.sink, ConfigMapSink) or self.follower is not None:
            return self.follower
        self.follower = ConfigMapFollower(self.sink, self.apply_stored, watch=watch)
        self.follower.start()
        return self.follower

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()


def make_uploader(
    settings: Mapping[str, Any],
    store: ProfileStore,
    cache: ClusterCache,
    api_client: Any | None,
) -> Uploader:
    """The uploader the settings describe (see :data:`qosched.extender.server.settings.DEFAULTS`).

    Raises
    ------
    ValueError
        A Secret or ConfigMap reference that is not ``namespace/name``, or one given without an
        API client (a static ``--cluster`` run has none: use the file settings there).
    """
    token: TokenSource | None = None
    if settings.get("UPLOAD_TOKEN_FILE"):
        token = FileToken(settings["UPLOAD_TOKEN_FILE"])
    elif settings.get("UPLOAD_TOKEN_SECRET"):
        if api_client is None:
            raise ValueError("UPLOAD_TOKEN_SECRET needs a Kubernetes API client (live mode)")
        token = SecretToken.from_ref(
            api_client, str(settings["UPLOAD_TOKEN_SECRET"]), ttl_s=float(settings["UPLOAD_TOKEN_TTL_S"])
        )
    sink: ProfileSink | None = None
    if settings.get("PROFILES_CONFIGMAP") and api_client is not None:
        sink = ConfigMapSink.from_ref(api_client, str(settings["PROFILES_CONFIGMAP"]))
    elif settings.get("PROFILES_DIR"):
        sink = DirectorySink(Path(settings["PROFILES_DIR"]))
    elif settings.get("PROFILES_CONFIGMAP"):
        raise ValueError("PROFILES_CONFIGMAP needs a Kubernetes API client (live mode)")
    return Uploader(store, cache, token=token, sink=sink, max_bytes=int(settings["MAX_PROFILE_BYTES"]))


__all__ = [
    "CHALLENGE",
    "ConfigMapFollower",
    "ConfigMapSink",
    "DirectorySink",
    "FileToken",
    "ProfileSink",
    "SecretToken",
    "TokenSource",
    "TokenUnavailable",
    "UploadError",
    "UploadResult",
    "Uploader",
    "load_configmap_profiles",
    "make_uploader",
    "split_ref",
]
