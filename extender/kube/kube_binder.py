"""Bind a pod and write qosched's result annotations in ONE API call: a ``Binding``.

kube-apiserver's ``pods/binding`` storage (``BindingREST.Create`` → ``assignPod`` →
``setPodNodeAndMetadata`` in ``pkg/registry/core/pod/storage/storage.go``) sets ``spec.nodeName``
AND merges the Binding's own ``metadata.annotations`` onto the pod in the same guarded update.
So the node and ``qosched.io/device`` / ``predicted-latency-ms`` / ``policy`` / ``variant`` land
atomically: no window in which a device plugin or the serving container sees the pod bound without
its device, and no second request (a PATCH) that could fail after the bind succeeded. The pod's
UID rides along as the update's precondition (``metadata.uid``), so a pod deleted and recreated
under the same name since kube-scheduler read it is refused, not bound.

The path is that of kube-scheduler's own DefaultBinder, ``POST /api/v1/namespaces/{ns}/pods/{name}
/binding``; the RBAC it needs is ``create`` on ``pods/binding``.

Why not ``CoreV1Api.create_namespaced_pod_binding``: the generated method validates its
arguments with pydantic, converts the model to a dict, serialises it with ``json.dumps`` and —
unless ``_preload_content=False`` — tries to deserialise the ``Status`` the server answers as a
``V1Binding`` and fails (a known client bug; the pod is bound but the call raises). A bind is on
kube-scheduler's critical path and runs for every pod, and that machinery is most of its CPU cost
(see ``benchmarks/bench_bind.py``). Here the body is serialised once with orjson and POSTed
through the ApiClient's own urllib3 pool (``api_client.rest_client.pool_manager``): same host,
TLS, client certificates, proxy and kept-alive connections, with the auth header taken from the
client's ``Configuration`` on every call (so rotated service-account tokens are honoured).

Errors become ``qosched.extender.kube.binding.BindError``:

=====================================================  ==============================================
answer                                                  ``BindError``
=====================================================  ==============================================
409 ``pod p is already assigned to node "X"``           ``conflict_node="X"``, reason ``conflict``
409 UID precondition failed / being deleted / gated     reason ``conflict``
404                                                     reason ``not_found``
timeout (connect/read), 408, 504                        reason ``timeout``
anything else (403, 429, 5xx, connection errors)        reason ``api``
=====================================================  ==============================================

The runtime turns ``conflict_node`` equal to the requested node into success (a retried bind
whose first attempt went through), so binding is idempotent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
import urllib3

from qosched.extender.kube.binding import BindError

#: ``pod %v is already assigned to node %q`` (assignPod). Node names are DNS subdomains, so Go's
#: quoting never escapes anything inside the quotes.
#: Seconds the Authorization header is reused before the configuration's refresh hook runs again.
AUTH_REFRESH_S = 1.0
_ASSIGNED = re.compile(r'already assigned to node "([^"]*)"')


def conflict_node_of(message: str) -> str | None:
    """The node named in an "already assigned to node" conflict message, else None."""
    m = _ASSIGNED.search(message)
    return m.group(1) if m else None


class KubeBinder:
    """One ``Binding`` POST per bind (see the module docstring).

    Parameters
    ----------
    api_client
        A ``kubernetes.client.ApiClient``; its configuration and connection pool are used.
    timeout_s
        Total time allowed for one bind call [s] (connect + send + answer). kube-scheduler's
        extender ``httpTimeout`` must be longer, or it gives up first and retries the pod.
    """

    def __init__(self, api_client: Any, timeout_s: float = 5.0) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.api_client = api_client
        self._configuration = api_client.configuration
        self._pool = api_client.rest_client.pool_manager
        self._timeout = urllib3.Timeout(total=timeout_s)
        self._prefix = str(self._configuration.host).rstrip("/") + "/api/v1/namespaces/"
        self._headers = {
            **api_client.default_headers,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._safe = str(getattr(self._configuration, "safe_chars_for_path_param", "") or "")
        # The connection pool of the API server, resolved once (PoolManager.urlopen parses the
        # URL and looks the pool up on every call: ~1/10 of a bind's CPU).
        self._path_prefix = urllib3.util.parse_url(self._prefix).path or "/api/v1/namespaces/"
        self._host_pool = self._pool.connection_from_url(self._prefix)
        self._auth: tuple[float, dict[str, str]] | None = None

    def _request_headers(self) -> dict[str, str]:
        """The headers with the current Authorization, recomputed at most every
        ``AUTH_REFRESH_S``: auth_settings() runs the configuration's refresh hook (in-cluster token
        rotation, exec/OIDC kubeconfig plugins), which for a kubeconfig re-runs the whole loader
        (~1/8 of a bind's CPU). Tokens rotate over minutes to hours; a second is plenty."""
        now = time.monotonic()
        cached = self._auth
        if cached is not None and now - cached[0] < AUTH_REFRESH_S:
            return cached[1]
        headers = dict(self._headers)
        for setting in self._configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        self._auth = (now, headers)
        return headers

    def url(self, namespace: str, name: str) -> str:
        """``.../namespaces/{ns}/pods/{name}/binding`` on the configured host."""
        return self._prefix + self._path(namespace, name).removeprefix(self._path_prefix)

    def _path(self, namespace: str, name: str) -> str:
        return f"{self._path_prefix}{quote(namespace, safe=self._safe)}/pods/{quote(name, safe=self._safe)}/binding"

    @staticmethod
    def body(namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]) -> bytes:
        """The ``v1.Binding`` JSON: target node, the result annotations, the UID precondition."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if uid:
            meta["uid"] = uid
        if annotations:
            meta["annotations"] = dict(annotations)
        return orjson.dumps(
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": meta,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
        )

    def bind(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]) -> None:
        """Bind ``namespace/name`` (UID ``uid``) to ``node`` with ``annotations``; raise ``BindError``."""
        try:
            resp = self._host_pool.urlopen(
                "POST",
                self._path(namespace, name),
                body=self.body(namespace, name, uid, node, annotations),
                headers=self._request_headers(),
                timeout=self._timeout,
                preload_content=True,
                redirect=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as err:
            cause = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) else err
            where = f"binding {namespace}/{name} to {node}"
            if _is_timeout(cause):
                raise BindError(f"{where} timed out: {cause}", reason="timeout") from None
            raise BindError(f"{where}: {type(cause).__name__}: {cause}") from None
        status = int(resp.status)
        if 200 <= status < 300:
            return
        raise _error(status, resp.data, namespace, name, node)


def _is_timeout(err: BaseException | None) -> bool:
    # urllib3 2 makes NewConnectionError (refused, unreachable) a ConnectTimeoutError subclass.
    return isinstance(err, urllib3.exceptions.TimeoutError | TimeoutError) and not isinstance(
        err, urllib3.exceptions.NewConnectionError
    )


def _error(status: int, data: bytes, namespace: str, name: str, node: str) -> BindError:
    try:
        body = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        body = {}
    message = str(body.get("message") or "") if isinstance(body, dict) else ""
    if not message:
        message = data[:300].decode("utf-8", "replace") if data else f"HTTP {status}"
    text = f"HTTP {status}: {message}"
    if status == 409:
        return BindError(text, conflict_node=conflict_node_of(message), reason="conflict")
    if status == 404:
        return BindError(text, reason="not_found")
    if status in (408, 504):
        return BindError(text, reason="timeout")
    return BindError(text, reason="api")


__all__ = ["KubeBinder", "conflict_node_of"]
