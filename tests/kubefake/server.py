"""An in-process fake kube-apiserver that the official ``kubernetes`` client talks to unmodified.

Why: qosched's cache, binder and controller are written against the real REST and watch protocol
(list → watch from ``resourceVersion`` → re-watch after a drop → relist on 410), and a fake that
only returns canned models would test none of that. This server speaks the wire protocol on
loopback; point a client at it with ``Configuration(host=api.url)`` (see :meth:`FakeKubeAPI.api_client`).

Served (JSON only, no auth):

========================================================  =======================================
``GET    /api/v1/{nodes,pods,configmaps,secrets,events}``  LIST/WATCH (all namespaces)
``GET    /api/v1/namespaces/{ns}/{resource}[/{name}]``       LIST/WATCH/GET
``POST   .../namespaces/{ns}/{resource}``                    create
``PUT    .../{resource}/{name}[/status]``                    update (stale resourceVersion → 409)
``PATCH  .../{resource}/{name}[/status|/resize]``            json / merge / strategic-merge patch
``DELETE .../{resource}/{name}``                             delete (immediate)
``POST   .../namespaces/{ns}/pods/{name}/binding``           bind (``BindingREST``; also ``.../bindings``)
``*      /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]``  leader-election leases
``*      /apis/events.k8s.io/v1/namespaces/{ns}/events``    events
========================================================  =======================================

Protocol details kept from kube-apiserver: list items carry no ``kind``/``apiVersion`` (single
objects and watch event objects do); every write takes the next global resourceVersion; a watch
without ``resourceVersion`` (or ``"0"``) starts with synthetic ADDED events of the current state; a
watch from a compacted version gets HTTP 200 and one ``ERROR`` event holding a 410 ``Expired``
Status; label/field selectors turn a MODIFIED that enters/leaves the selection into ADDED/DELETED;
``allowWatchBookmarks`` brings periodic BOOKMARKs and one just before ``timeoutSeconds`` ends the
stream; LIST supports ``limit``/``continue`` and ``resourceVersionMatch=Exact``; error bodies are
``Status`` objects with upstream reasons and messages (:mod:`tests.kubefake.status`).

Not implemented: authentication (an optional :class:`~tests.kubefake.rbac.RbacAuthorizer` checks
every request as one fixed user), server-side apply (415), protobuf/CBOR, graceful pod deletion
(DELETE removes at once), admission, discovery beyond ``/version``.

Client note (kubernetes 37, also true of earlier releases): ``create_namespaced_pod_binding`` and
``create_namespaced_binding`` declare a ``V1Binding`` response, but kube-apiserver (and this
fake) answers 201 with a ``Status``. With the default ``_preload_content=True`` the client fails
to deserialise it (pydantic ``ValidationError``: ``target`` is required) *after the pod was
bound*, so a caller that retries on that error binds twice and gets a 409. Workaround::

    resp = v1.create_namespaced_pod_binding(name, ns, body, _preload_content=False)
    assert resp.status == 201      # failures still raise ApiException (status, Status JSON in .body)
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from . import objects as objs
from . import pods
from .patch import apply_patch
from .rbac import RbacAuthorizer, RequestAttributes
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from .status import (
    OPTIMISTIC_LOCK_MSG,
    ApiError,
    FieldError,
    bad_request,
    conflict,
    failure,
    injected,
    invalid,
    method_not_allowed,
    no_such_path,
    precondition_failed,
    success,
    too_old_resource_version,
)
from .store import (
    CONFIGMAPS,
    NODES,
    PODS,
    RESOURCES,
    SECRETS,
    ObjectStore,
    Preconditions,
    ResourceType,
    Watcher,
    WatchEvent,
    expired_continue,
    find_resource,
    resource_for_kind,
)

JsonDict = dict[str, Any]

_TRUE = {"true", "1", "yes"}


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed request path."""

    resource: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    #: ``POST /api/v1/namespaces/{ns}/bindings`` (``LegacyBindingREST``)
    legacy_binding: bool = False


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the fake saw it; ``status`` is the HTTP code it answered."""

    method: str
    path: str
    query: Mapping[str, str]
    verb: str
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    status: int
    body: Any


@dataclass(slots=True)
class _FailureRule:
    pattern: re.Pattern[str]
    code: int
    remaining: int
    method: str | None
    verb: str | None
    message: str | None
    retry_after_s: int | None


@dataclass(slots=True)
class _StallRule:
    """Hold matching requests ``seconds`` before serving them (``FakeKubeAPI.stall``)."""

    pattern: re.Pattern[str]
    seconds: float
    remaining: int | None
    method: str | None
    verb: str | None
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str, verb: str) -> bool:
        return (
            (self.remaining is None or self.remaining > 0)
            and self.pattern.search(path) is not None
            and (self.method is None or self.method.upper() == method)
            and (self.verb is None or self.verb == verb)
        )


def _route(path: str) -> Route:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise no_such_path()
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise no_such_path()
    if group == "" and rest[0] == "bindings" and namespace is not None and len(rest) == 1:
        return Route(PODS, namespace, None, "binding", legacy_binding=True)
    resource = find_resource(group, version, rest[0])
    if resource is None or (namespace is not None and not resource.namespaced):
        raise no_such_path()
    if resource.namespaced and namespace is None and len(rest) > 1:  # /api/v1/pods/<name> is no path
        raise no_such_path()
    return Route(resource, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)


def _verb(method: str, route: Route | None, query: Mapping[str, str]) -> str:
    if route is not None and route.name is None and method == "GET":
        return "watch" if query.get("watch", "").lower() in _TRUE else "list"
    return {
        "GET": "get",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if route is None or route.name else "deletecollection",
    }.get(method, method.lower())


def _with_type(resource: ResourceType, obj: JsonDict) -> JsonDict:
    """Object as sent on its own or in a watch event: ``kind`` and ``apiVersion`` first."""
    return {"kind": resource.kind, "apiVersion": resource.api_version, **obj}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _encode_continue(rv: int, last_key: str) -> str:
    return _b64(json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": last_key + "\x00"}).encode())


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(data["rv"]), str(data["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError) as exc:
        raise bad_request(f"continue key is not valid: {exc}") from exc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: FakeKubeAPI, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # client went away mid-stream: not a server bug
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # ----------------------------------------------------------------- plumbing
    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        self._record(code)

    def _record(self, code: int) -> None:
        if getattr(self, "_recorded", True):
            return
        self._recorded = True
        route: Route | None = getattr(self, "_routeinfo", None)
        self.server.api._log_request(
            RequestRecord(
                method=self.command,
                path=self._path,
                query=dict(self._query),
                verb=self._verbname,
                resource=str(route.resource.gr) if route else None,
                subresource=route.subresource if route else None,
                namespace=route.namespace if route else None,
                name=route.name if route else None,
                status=code,
                body=getattr(self, "_body", None),
            )
        )

    def _send_json(self, code: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not raw:
            return None
        content_type = (self.headers.get("Content-Type") or "application/json").lower()
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc

    # ----------------------------------------------------------------- dispatch
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        self._path = split.path
        self._query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self._recorded = False
        self._routeinfo = None
        self._verbname = _verb(self.command, None, self._query)
        try:
            if self.command in ("POST", "PUT", "PATCH", "DELETE"):
                self._body = self._read_body()
            if self._path in ("/version", "/healthz", "/readyz", "/livez"):
                self._serve_meta()
                return
            route = _route(self._path)
            self._routeinfo = route
            self._verbname = _verb(self.command, route, self._query)
            if api.authorizer is not None:
                api.authorizer.check(self._attributes(route))
            rule = api._take_failure(self.command, self._path, self._verbname)
            if rule is not None:
                raise injected(rule.code, rule.message, rule.retry_after_s)
            stall = api._take_stall(self.command, self._path, self._verbname)
            if stall is not None:
                # Served afterwards as usual: a write commits even if the client gave up.
                stall.released.wait(stall.seconds)
            if self._verbname == "watch":
                self._serve_watch(route)
                return
            code, body = self._handle(route)
            self._send_json(code, body)
        except ApiError as err:
            self._send_json(err.code, err.status, err.headers)

    def _attributes(self, route: Route) -> RequestAttributes:
        """What RBAC sees: create has no name; list/watch take it from ``metadata.name=``."""
        name = route.name or ""
        if self._verbname in ("list", "watch"):
            selector = self._query.get("fieldSelector", "")
            name = next(
                (
                    p.split("=", 1)[1].lstrip("=")
                    for p in selector.split(",")
                    if p.startswith("metadata.name=")
                ),
                "",
            )
        if self._verbname == "create" and route.subresource is None:
            name = ""
        resource = route.resource.plural
        if route.legacy_binding:
            resource = "bindings"
        elif route.subresource:
            resource = f"{resource}/{route.subresource}"
        return RequestAttributes(
            self._verbname, route.resource.group, route.resource.version, resource, route.namespace, name
        )

    def _serve_meta(self) -> None:
        if self._path == "/version":
            self._send_json(
                200,
                {"major": "1", "minor": "36", "gitVersion": "v1.36.0-kubefake", "platform": "linux/amd64"},
            )
            return
        data = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, route: Route) -> tuple[int, JsonDict]:
        method = self.command
        if route.subresource == "binding":
            if method != "POST":
                raise method_not_allowed()
            return self._bind(route)
        if route.subresource not in (None, "status", "resize") or (
            route.subresource == "resize" and route.resource is not PODS
        ):
            raise no_such_path()
        if route.subresource is not None and method not in ("GET", "PUT", "PATCH"):
            raise method_not_allowed()
        if method == "GET":
            return (200, self._list(route)) if route.name is None else (200, self._get(route))
        if method == "POST" and route.name is None:
            return 201, self._create(route)
        if method == "PUT" and route.name is not None:
            return 200, self._update(route)
        if method == "PATCH" and route.name is not None:
            return 200, self._patch(route)
        if method == "DELETE" and route.name is not None:
            return 200, self._delete(route)
        raise method_not_allowed()

    # ----------------------------------------------------------------- verbs
    @property
    def _store(self) -> ObjectStore:
        return self.server.api.store

    @property
    def _dry_run(self) -> bool:
        return self._query.get("dryRun") == "All"

    def _get(self, route: Route) -> JsonDict:
        assert route.name is not None
        return _with_type(
            route.resource, self._store.require(route.resource, route.namespace or "", route.name)
        )

    def _selectors(self, resource: ResourceType) -> tuple[Any, Any]:
        return (
            parse_label_selector(self._query.get("labelSelector")),
            parse_field_selector(self._query.get("fieldSelector"), resource.selectable_fields),
        )

    def _list(self, route: Route) -> JsonDict:
        resource = route.resource
        labels, fields = self._selectors(resource)
        q = self._query
        at_rv: int | None = None
        start_after = ""
        if q.get("continue"):
            at_rv, start_after = _decode_continue(q["continue"])
            if at_rv < self._store.compacted_rv:
                raise expired_continue()
        elif q.get("resourceVersionMatch") == "Exact":
            if not q.get("resourceVersion", "").isdigit():
                raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
            at_rv = int(q["resourceVersion"])
        elif q.get("resourceVersion", "0") not in ("", "0"):
            wanted = q["resourceVersion"]
            if not wanted.isdigit():
                raise bad_request(f"invalid resource version: {wanted}")
            current = self._store.resource_version
            if int(wanted) > current:
                raise ApiError(
                    failure(
                        504,
                        f"Too large resource version: {wanted}, current: {current}",
                        "Timeout",
                        {
                            "causes": [
                                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                            ],
                            "retryAfterSeconds": 1,
                        },
                    )
                )
        items, rv = self._store.list_objects(resource, route.namespace, at_rv)

        def key(obj: JsonDict) -> str:
            meta = obj["metadata"]
            return f"{meta.get('namespace', '')}/{meta['name']}"

        selected = [
            o
            for o in items
            if key(o) > start_after
            and labels_match(labels, o)
            and fields_match(fields, resource.field_values(o))
        ]
        meta: JsonDict = {"resourceVersion": str(rv)}
        limit = int(q.get("limit") or 0)
        if limit > 0 and len(selected) > limit:
            meta["continue"] = _encode_continue(rv, key(selected[limit - 1]))
            meta["remainingItemCount"] = len(selected) - limit
            selected = selected[:limit]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": meta,
            "items": selected,
        }

    def _check_body(self, route: Route, body: Any) -> JsonDict:
        resource = route.resource
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        if (
            body.get("kind", resource.kind) != resource.kind
            or body.get("apiVersion", resource.api_version) != resource.api_version
        ):
            if body.get("apiVersion", resource.api_version) != resource.api_version:
                raise bad_request(
                    f"the API version in the data ({body.get('apiVersion')}) does not match the expected "
                    f"API version ({resource.api_version})"
                )
            raise bad_request(
                f"the kind in the data ({body.get('kind')}) does not match the expected kind "
                f"({resource.kind})"
            )
        meta = body.setdefault("metadata", {})
        if resource.namespaced:
            if meta.get("namespace") and meta["namespace"] != route.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = route.namespace
        if route.name is not None and meta.get("name") and meta["name"] != route.name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({route.name})"
            )
        return body

    def _create(self, route: Route) -> JsonDict:
        body = self._check_body(route, self._body)
        meta = body["metadata"]
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + os.urandom(3).hex()[:5]
            else:
                raise invalid(
                    route.resource.kind,
                    "",
                    [FieldError("metadata.name", "Required", "name or generateName is required")],
                )
        for system in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "managedFields"):
            meta.pop(system, None)
        if route.resource is PODS:
            body.pop("status", None)
            pods.default_pod(body)
        created = self._store.create(route.resource, body, dry_run=self._dry_run)
        return _with_type(route.resource, created)

    def _updater(
        self, route: Route, make_new: Callable[[JsonDict], JsonDict]
    ) -> Callable[[JsonDict], JsonDict]:
        """Wrap ``make_new`` with the registry's update rules (rv lock, status/subresource split)."""
        assert route.name is not None
        name = route.name

        def transform(current: JsonDict) -> JsonDict:
            new = make_new(current)
            if not isinstance(new, dict):
                raise bad_request("the patched object is not a JSON object")
            _check_update_meta(route.resource, name, current["metadata"], new.setdefault("metadata", {}))
            if route.subresource == "resize":
                return pods.resize(current, new)
            if route.subresource == "status":
                return {**current, "status": new.get("status") or {}}
            return _main_resource_update(route.resource, current, new)

        return transform

    def _update(self, route: Route) -> JsonDict:
        assert route.name is not None
        body = self._check_body(route, self._body)
        updated = self._store.update(
            route.resource,
            route.namespace or "",
            route.name,
            self._updater(route, lambda _cur: body),
            dry_run=self._dry_run,
        )
        return _with_type(route.resource, updated)

    def _patch(self, route: Route) -> JsonDict:
        assert route.name is not None
        content_type = self.headers.get("Content-Type") or ""
        patch_body = self._body
        resource = route.resource

        def make_new(current: JsonDict) -> JsonDict:
            patched = apply_patch(content_type, _with_type(resource, current), patch_body)
            if isinstance(patched, dict):
                patched.pop("kind", None)
                patched.pop("apiVersion", None)
            return patched

        updated = self._store.update(
            resource, route.namespace or "", route.name, self._updater(route, make_new), dry_run=self._dry_run
        )
        return _with_type(resource, updated)

    def _delete(self, route: Route) -> JsonDict:
        assert route.name is not None
        pre = None
        body = getattr(self, "_body", None)
        if isinstance(body, dict) and isinstance(body.get("preconditions"), dict):
            p = body["preconditions"]
            pre = Preconditions(uid=p.get("uid"), resource_version=p.get("resourceVersion"))
        deleted = self._store.delete(
            route.resource, route.namespace or "", route.name, preconditions=pre, dry_run=self._dry_run
        )
        if route.resource in (PODS, NODES):  # ReturnDeletedObject
            return _with_type(route.resource, deleted)
        details = route.resource.gr.details(route.name)
        details["uid"] = deleted["metadata"].get("uid", "")
        return success(200, details)

    def _bind(self, route: Route) -> tuple[int, JsonDict]:
        """``BindingREST.Create``: see :mod:`tests.kubefake.pods` for the rules and messages."""
        namespace = route.namespace or ""
        binding = self._body
        name, node = pods.check_binding(None if route.legacy_binding else route.name, namespace, binding)
        meta = binding.get("metadata") or {}
        pre = Preconditions(uid=meta.get("uid") or None, resource_version=meta.get("resourceVersion") or None)
        store = self._store
        store.update(
            PODS,
            namespace,
            name,
            lambda pod: pods.bind(pod, binding, node, store.clock()),
            preconditions=pre if (pre.uid or pre.resource_version) else None,
            dry_run=self._dry_run,
        )
        return 201, success(201)

    # ----------------------------------------------------------------- watch
    def _serve_watch(self, route: Route) -> None:
        """A watch stream: initial ADDED events or the history after ``resourceVersion``, then live
        events (and BOOKMARKs) until ``timeoutSeconds``, a close request, or an expiry."""
        since = self._watch_since()
        try:
            watcher, initial, start_rv = self._store.open_watch(route.resource, route.namespace, since)
        except ApiError as err:  # a compacted version: HTTP 200 and one ERROR event
            self._start_stream()
            self._write_event({"type": "ERROR", "object": err.status})
            self._end_stream()
            return
        self._start_stream()
        try:
            closing = self._stream(route, watcher, initial, start_rv)
        except OSError:
            closing = "abrupt"
        finally:
            self._store.close_watch(watcher)
        self._close_stream(closing, since if since is not None else start_rv)

    def _watch_since(self) -> int | None:
        rv_text = self._query.get("resourceVersion", "")
        if rv_text not in ("", "0") and not rv_text.isdigit():
            raise bad_request(f"invalid resource version: {rv_text}")
        return None if rv_text in ("", "0") else int(rv_text)

    def _selection(self, route: Route) -> Callable[[JsonDict | None], bool]:
        """Whether an object is in the watch's namespace and label/field selection."""
        resource = route.resource
        labels, fields = self._selectors(resource)

        def selected(obj: JsonDict | None) -> bool:
            if obj is None:
                return False
            if route.namespace is not None and obj["metadata"].get("namespace") != route.namespace:
                return False
            return labels_match(labels, obj) and fields_match(fields, resource.field_values(obj))

        return selected

    def _stream(self, route: Route, watcher: Watcher, initial: list[JsonDict], start_rv: int) -> str | None:
        """Write the stream's events until it ends; returns how it was asked to close (or None)."""
        api = self.server.api
        resource, q = route.resource, self._query
        selected = self._selection(route)
        timeout_s = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else api.default_watch_timeout_s
        bookmarks = q.get("allowWatchBookmarks", "").lower() in _TRUE
        for obj in initial:
            if selected(obj):
                self._write_event({"type": "ADDED", "object": _with_type(resource, obj)})
        if bookmarks and q.get("sendInitialEvents", "").lower() in _TRUE:
            self._write_bookmark(resource, start_rv, {"k8s.io/initial-events-end": "true"})
        deadline = time.monotonic() + timeout_s
        next_bookmark = time.monotonic() + api.bookmark_interval_s
        current_rv = start_rv
        while watcher.closing is None and time.monotonic() < deadline:
            wake = min(deadline, next_bookmark) if bookmarks else deadline
            events, current_rv = self._store.next_events(watcher, max(0.0, wake - time.monotonic()))
            if watcher.closing in ("abrupt", "expired"):
                break
            for event in events:
                out = self._translate(resource, event, selected)
                if out is not None:
                    self._write_event(out)
            if bookmarks and (watcher.bookmark_due or time.monotonic() >= next_bookmark):
                watcher.bookmark_due = False
                self._write_bookmark(resource, current_rv)
                next_bookmark = time.monotonic() + api.bookmark_interval_s
        if watcher.closing is None and bookmarks:  # the watch cache's bookmark right before the deadline
            self._write_bookmark(resource, current_rv)
        return watcher.closing

    def _close_stream(self, closing: str | None, since_rv: int) -> None:
        """End the stream as asked: cut the connection, send ERROR 410 then end, or end cleanly."""
        if closing == "abrupt":
            self.close_connection = True
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if closing == "expired":  # the watch cache's answer once the window moved past the stream
            with suppress(OSError):
                status = too_old_resource_version(since_rv, self._store.compacted_rv)
                self._write_event({"type": "ERROR", "object": status})
        self._end_stream()

    @staticmethod
    def _translate(
        resource: ResourceType, event: WatchEvent, selected: Callable[[JsonDict | None], bool]
    ) -> JsonDict | None:
        now_in, was_in = selected(event.obj), selected(event.prev)
        if event.type == "MODIFIED":
            if now_in and was_in:
                return {"type": "MODIFIED", "object": _with_type(resource, event.obj)}
            if now_in:
                return {"type": "ADDED", "object": _with_type(resource, event.obj)}
            if was_in and event.prev is not None:
                gone = dict(event.prev)
                gone["metadata"] = {
                    **event.prev["metadata"],
                    "resourceVersion": event.obj["metadata"]["resourceVersion"],
                }
                return {"type": "DELETED", "object": _with_type(resource, gone)}
            return None
        return {"type": event.type, "object": _with_type(resource, event.obj)} if now_in else None

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_event(self, event: JsonDict) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_bookmark(
        self, resource: ResourceType, rv: int, annotations: Mapping[str, str] | None = None
    ) -> None:
        meta: JsonDict = {"resourceVersion": str(rv)}
        if annotations:
            meta["annotations"] = dict(annotations)
        self._write_event(
            {
                "type": "BOOKMARK",
                "object": {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta},
            }
        )

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


def _check_update_meta(resource: ResourceType, name: str, cur_meta: JsonDict, new_meta: JsonDict) -> None:
    """An update's metadata against the stored object's: name, UID precondition, rv lock."""
    if new_meta.get("name", name) != name:
        raise bad_request(
            f"the name of the object ({new_meta.get('name')}) does not match the name on the URL ({name})"
        )
    if new_meta.get("uid") and new_meta["uid"] != cur_meta.get("uid"):
        key = resource.etcd_key(cur_meta.get("namespace", ""), name)
        raise precondition_failed(resource.gr, name, key, "UID", new_meta["uid"], cur_meta.get("uid", ""))
    rv = new_meta.get("resourceVersion")
    if rv and rv != cur_meta.get("resourceVersion"):
        raise conflict(resource.gr, name, OPTIMISTIC_LOCK_MSG)


def _main_resource_update(resource: ResourceType, current: JsonDict, new: JsonDict) -> JsonDict:
    """An update through the main resource: status kept (subresource), pod spec rules, generation."""
    if resource.status_subresource:
        new["status"] = current.get("status") or {}
    if resource is PODS:
        pods.default_pod_spec(new)
        pods.check_pod_update(current, new)
        if new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = int(current["metadata"].get("generation") or 1) + 1
    return new


def _resource_named(name: str) -> ResourceType:
    for r in RESOURCES:
        if name in (r.plural, str(r.gr), r.kind, r.kind.lower()):
            return r
    raise ValueError(f"unknown resource {name!r}; known: {sorted({str(r.gr) for r in RESOURCES})}")


class FakeKubeAPI:
    """A running fake kube-apiserver plus the Python test-control API around its store.

    Parameters
    ----------
    history_limit
        Watch/exact-LIST history kept, in events (``None``: until :meth:`compact`).
    bookmark_interval_s
        How often an open watch with ``allowWatchBookmarks`` gets a BOOKMARK [s]. kube-apiserver
        sends them about once a minute; tests lower it.
    default_watch_timeout_s
        Stream length when the client sends no ``timeoutSeconds`` [s] (apiserver: 30–60 min).
    clock
        UTC time source for creationTimestamp and PodScheduled times.
    port
        Port on 127.0.0.1 (0: a free one). A fixed port lets a test start the server after its
        clients (an API server that comes up late) or bring one back on the same address.
    authorizer
        When given (e.g. ``RbacAuthorizer(load_snapshot("manifests/rbac.yaml"), user=...)``), every
        resource request is authorised first and refused with the apiserver's 403 if not allowed.

    Examples
    --------
    >>> with FakeKubeAPI() as api:                                  # doctest: +SKIP
    ...     api.add_node("gpu-0", accelerator="nvidia-t4", gpus=2)
    ...     v1 = kubernetes.client.CoreV1Api(api.api_client())
    ...     [n.metadata.name for n in v1.list_node().items]
    ['gpu-0']
    """

    def __init__(
        self,
        *,
        history_limit: int | None = None,
        bookmark_interval_s: float = 60.0,
        default_watch_timeout_s: float = 1800.0,
        clock: Callable[[], datetime] | None = None,
        authorizer: RbacAuthorizer | None = None,
        port: int = 0,
    ) -> None:
        self._port = port
        if bookmark_interval_s <= 0 or default_watch_timeout_s <= 0:
            raise ValueError("bookmark_interval_s and default_watch_timeout_s must be > 0")
        self.store = ObjectStore(clock=clock, history_limit=history_limit)
        self.bookmark_interval_s = bookmark_interval_s
        self.default_watch_timeout_s = default_watch_timeout_s
        self.authorizer = authorizer
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[RequestRecord] = []
        self._failures: list[_FailureRule] = []
        self._stalls: list[_StallRule] = []
        self._meta_lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeKubeAPI:
        """Listen on 127.0.0.1 (a free port) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = _Server(self, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="kubefake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """End open watches cleanly, stop serving and close every client connection."""
        server = self._server
        if server is None:
            return
        self.clear_stalls()
        self.store.signal_watchers(close="graceful")
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            for conn in list(server.connections):
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeKubeAPI is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the ``host`` for ``kubernetes.client.Configuration``."""
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> Any:
        """A ``kubernetes.client.Configuration`` pointing at this server."""
        from kubernetes import client

        return client.Configuration(host=self.url)

    def api_client(self) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` for this server (close it when done)."""
        from kubernetes import client

        return client.ApiClient(self.configuration())

    # ----------------------------------------------------------------- objects
    def add(self, obj: Mapping[str, Any]) -> JsonDict:
        """Store any supported object by its ``kind`` (uid/creationTimestamp kept if present)."""
        resource = resource_for_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        body = dict(obj)
        if resource is PODS:
            body = pods.default_pod(json.loads(json.dumps(body)))
        if resource.namespaced:
            body["metadata"] = {"namespace": "default", **(body.get("metadata") or {})}
        return _with_type(resource, self.store.create(resource, body, keep_identity=True))

    def add_node(self, node: Mapping[str, Any] | str, **make_node_kwargs: Any) -> JsonDict:
        """Add a Node: a full object, or a name plus :func:`~tests.kubefake.objects.make_node` kwargs."""
        return self.add(objs.make_node(node, **make_node_kwargs) if isinstance(node, str) else node)

    def add_pod(
        self, pod: Mapping[str, Any] | str, namespace: str = "default", **make_pod_kwargs: Any
    ) -> JsonDict:
        """Add a Pod: a full object, or a name plus :func:`~tests.kubefake.objects.make_pod` kwargs."""
        return self.add(objs.make_pod(pod, namespace, **make_pod_kwargs) if isinstance(pod, str) else pod)

    def add_configmap(self, name: str, namespace: str, data: Mapping[str, str] | None = None) -> JsonDict:
        return self.add(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": dict(data or {}),
            }
        )

    def add_secret(
        self, name: str, namespace: str, data: Mapping[str, str | bytes], type_: str = "Opaque"
    ) -> JsonDict:
        """Add a Secret; values are base64-encoded here, as the API stores ``data``."""
        encoded = {
            k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for k, v in data.items()
        }
        return self.add(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": type_,
                "data": encoded,
            }
        )

    def load(self, objects: Iterable[Mapping[str, Any]]) -> list[JsonDict]:
        """Add many objects (e.g. from :func:`~tests.kubefake.objects.load_snapshot`)."""
        return [self.add(o) for o in objects]

    def load_snapshot(self, path: str | Path) -> list[JsonDict]:
        """Add every object of a snapshot file (contract §3)."""
        return self.load(objs.load_snapshot(path))

    def get(self, resource: str, name: str, namespace: str = "default") -> JsonDict | None:
        """The stored object (with kind/apiVersion) or ``None``; ``resource`` like ``"pods"``."""
        r = _resource_named(resource)
        obj = self.store.get(r, namespace, name)
        return _with_type(r, obj) if obj is not None else None

    def list_objects(self, resource: str, namespace: str | None = None) -> list[JsonDict]:
        r = _resource_named(resource)
        return [_with_type(r, o) for o in self.store.list_objects(r, namespace)[0]]

    def update(
        self,
        resource: str,
        name: str,
        mutate: Callable[[JsonDict], JsonDict | None],
        namespace: str = "default",
    ) -> JsonDict:
        """Change an object as a controller would, bypassing API validation; emits MODIFIED.

        ``mutate`` gets a copy and may edit it in place (return ``None``) or return a new dict.
        """

        def transform(obj: JsonDict) -> JsonDict:
            out = mutate(obj)
            return obj if out is None else out

        r = _resource_named(resource)
        return _with_type(r, self.store.update(r, namespace, name, transform))

    def delete(self, resource: str, name: str, namespace: str = "default") -> JsonDict:
        r = _resource_named(resource)
        return _with_type(r, self.store.delete(r, namespace, name))

    def delete_pod(self, name: str, namespace: str = "default") -> JsonDict:
        return self.delete("pods", name, namespace)

    def delete_node(self, name: str) -> JsonDict:
        return self.delete("nodes", name)

    @property
    def resource_version(self) -> int:
        """The newest committed version (what a LIST now would return)."""
        return self.store.resource_version

    def compact(self) -> int:
        """Forget history: watches/exact LISTs from older versions get 410. Returns the version."""
        return self.store.compact()

    def expire_watches(self) -> int:
        """Compaction as an open watch sees it: history is forgotten (:meth:`compact`) and every
        open watch gets one ``ERROR`` event holding ``Status{code: 410, reason: Expired,
        message: "too old resource version: N (M)"}``, then ends cleanly, as kube-apiserver's
        watch cache does when a stream falls out of its window. Returns how many expired."""
        self.compact()
        return self.store.signal_watchers(close="expired")

    def bind_behind(
        self,
        name: str,
        node: str,
        namespace: str = "default",
        *,
        annotations: Mapping[str, str] | None = None,
    ) -> JsonDict:
        """A write by another scheduler: bind ``name`` to ``node`` as ``pods/binding`` would (same
        rules, one atomic MODIFIED), without an HTTP request (so not in :attr:`requests`).

        ``annotations`` are merged in the same write (``{"qosched.io/device": "1"}`` for another
        qosched, none for kube-scheduler's default binder). The API's refusal (409 already
        assigned, 404) raises :class:`~tests.kubefake.status.ApiError`.
        """
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        store = self.store
        pod = store.update(PODS, namespace, name, lambda p: pods.bind(p, binding, node, store.clock()))
        return _with_type(PODS, pod)

    # ----------------------------------------------------------------- watch control
    def drop_watches(self, *, graceful: bool = False) -> int:
        """Close every open watch stream; returns how many.

        Abrupt (default): the TCP connection is shut down mid-chunk, as when a load balancer or the
        apiserver dies; the client's read fails (urllib3 ``ProtocolError``). ``graceful=True``
        ends the chunked body cleanly, as an apiserver-side timeout does.
        """
        return self.store.signal_watchers(close="graceful" if graceful else "abrupt")

    def send_bookmarks(self) -> int:
        """Make every watch opened with ``allowWatchBookmarks`` send a BOOKMARK now."""
        return self.store.signal_watchers(bookmark=True)

    @property
    def open_watches(self) -> int:
        return self.store.open_watch_count

    def wait_for_watches(self, count: int = 1, timeout_s: float = 5.0) -> bool:
        """Block until at least ``count`` watches are open (a client's watch is established)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.open_watches >= count:
                return True
            time.sleep(0.005)
        return self.open_watches >= count

    # ----------------------------------------------------------------- fault injection and log
    def fail_next(
        self,
        path_regex: str,
        status_code: int,
        times: int = 1,
        *,
        method: str | None = None,
        verb: str | None = None,
        message: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status_code`` and a Status body.

        A request matches when ``re.search(path_regex, path)`` finds the URL path (no query) and
        ``method`` (``"POST"``...) / ``verb`` (``"list"``, ``"watch"``, ``"create"``...) agree when
        given. 429 carries ``Retry-After`` (1 s unless ``retry_after_s``), as API priority and
        fairness sends it. Injected requests are logged with the injected code.
        """
        if not 400 <= status_code <= 599:
            raise ValueError(f"status_code must be an HTTP error code, got {status_code}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        with self._meta_lock:
            self._failures.append(
                _FailureRule(re.compile(path_regex), status_code, times, method, verb, message, retry_after_s)
            )

    def clear_failures(self) -> None:
        """Drop every pending :meth:`fail_next` rule (an outage made of injected errors ends)."""
        with self._meta_lock:
            self._failures.clear()

    def _take_failure(self, method: str, path: str, verb: str) -> _FailureRule | None:
        with self._meta_lock:
            for rule in self._failures:
                if (
                    rule.remaining > 0
                    and rule.pattern.search(path)
                    and (rule.method is None or rule.method.upper() == method)
                    and (rule.verb is None or rule.verb == verb)
                ):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._failures.remove(rule)
                    return rule
            return None

    def stall(
        self,
        path_regex: str,
        seconds: float,
        times: int | None = None,
        *,
        method: str | None = None,
        verb: str | None = None,
    ) -> None:
        """Hold the next ``times`` matching requests (all while ``None``) ``seconds``, then serve them.

        Matching is :meth:`fail_next`'s (path regex, ``method``, ``verb``). The held request is
        then served exactly as usual, whether or not the client is still waiting: a stalled
        ``create`` on ``pods/binding`` commits after the client timed out (what a slow etcd behind
        kube-apiserver does), a stalled ``list``/``watch`` answers late. :meth:`clear_stalls`
        removes the rules and lets held requests go at once. Checked after :meth:`fail_next`.
        """
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times}")
        with self._meta_lock:
            self._stalls.append(_StallRule(re.compile(path_regex), float(seconds), times, method, verb))

    def clear_stalls(self) -> None:
        """Drop every stall rule; requests being held are served now."""
        with self._meta_lock:
            rules, self._stalls = self._stalls, []
        for rule in rules:
            rule.released.set()

    def _take_stall(self, method: str, path: str, verb: str) -> _StallRule | None:
        with self._meta_lock:
            for rule in self._stalls:
                if rule.matches(method, path, verb):
                    if rule.remaining is not None:
                        rule.remaining -= 1  # an exhausted rule stays listed so clear_stalls frees its holds
                    return rule
            return None

    def _log_request(self, record: RequestRecord) -> None:
        with self._meta_lock:
            self._requests.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered so far, in order."""
        with self._meta_lock:
            return list(self._requests)

    def calls(
        self,
        *,
        method: str | None = None,
        verb: str | None = None,
        resource: str | None = None,
        subresource: str | None = None,
        path: str | None = None,
        status: int | None = None,
    ) -> list[RequestRecord]:
        """The requests matching every filter given (``path`` is a regex searched in the path)."""
        pattern = re.compile(path) if path is not None else None
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource)
            and (subresource is None or r.subresource == subresource)
            and (pattern is None or pattern.search(r.path))
            and (status is None or r.status == status)
        ]

    def count(self, **filters: Any) -> int:
        """``len(calls(**filters))``, e.g. ``count(verb="create", subresource="binding")``."""
        return len(self.calls(**filters))

    def clear_requests(self) -> None:
        with self._meta_lock:
            self._requests.clear()


@contextmanager
def running(**kwargs: Any) -> Iterator[FakeKubeAPI]:
    """``with running(history_limit=10) as api: ...`` — start a FakeKubeAPI and always stop it."""
    api = FakeKubeAPI(**kwargs)
    api.start()
    try:
        yield api
    finally:
        api.stop()


__all__ = ["CONFIGMAPS", "NODES", "PODS", "SECRETS", "FakeKubeAPI", "RequestRecord", "Route", "running"]
