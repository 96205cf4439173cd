"""The few core/v1 reads the extender's hot start needs, without ``kubernetes.client.CoreV1Api``.

Why: the official client (v37) is generated with pydantic models, and importing ``CoreV1Api``
builds ~250 model classes: 2.0 s of one core at every start (measured: ``python -c "from
kubernetes.client import CoreV1Api"`` 2.1 s wall vs 0.6 s for the ApiClient alone), longer than
the whole first list of 500 nodes and 1,500 pods. The watch never used those models: it lists and
watches with ``_preload_content=False`` and parses the bytes with orjson. So these requests go
straight through the ApiClient's own urllib3 pool (``api_client.rest_client.pool_manager``: same
host, TLS, client certificates, proxy, kept-alive connections), with the auth header taken from
the client's ``Configuration`` on every call (rotated service-account tokens are honoured), as
``kube_binder.KubeBinder`` does for the Binding POST.

:class:`LeanCoreV1` offers the subset of ``CoreV1Api``'s signatures its callers use —
``list_node`` / ``list_pod_for_all_namespaces`` (streamed, for ``watch.LiveCluster``) and
``read_namespaced_config_map`` / ``list_namespaced_config_map`` (for ``HintsSource``,
``AllocationSource`` and the profiles ConfigMap's loader and follower) — and raises the
client's ``ApiException`` (``status``, ``reason``, ``body``) on an HTTP error, as the generated
methods do, so callers' error handling is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import urllib3
from kubernetes.client.exceptions import ApiException

#: ``CoreV1Api`` keyword → query parameter, for the list/watch calls.
_QUERY = {
    "watch": "watch",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "field_selector": "fieldSelector",
    "label_selector": "labelSelector",
    "limit": "limit",
    "_continue": "continue",
}


@dataclass(frozen=True, slots=True)
class ConfigMapMeta:
    name: str = ""
    namespace: str = ""
    resource_version: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigMapData:
    """What the readers of a ConfigMap use: ``data`` and ``metadata.resource_version``."""

    data: dict[str, str] | None = None
    metadata: ConfigMapMeta = field(default_factory=ConfigMapMeta)


def _timeout(value: Any) -> urllib3.Timeout | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return urllib3.Timeout(connect=value[0], read=value[1])
    return urllib3.Timeout(total=float(value))


def _query_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class LeanCoreV1:
    """core/v1 reads through the ApiClient's pool (module docstring)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self._configuration = api_client.configuration
        self._pool = api_client.rest_client.pool_manager
        self._host = str(self._configuration.host).rstrip("/")
        self._headers = {**api_client.default_headers, "Accept": "application/json"}

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        # auth_settings() runs the configuration's refresh hook (in-cluster token rotation,
        # exec/OIDC kubeconfig plugins) and yields the current Authorization header.
        for setting in self._configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        return headers

    def get(self, path: str, query: Mapping[str, Any] | None = None, *, timeout: Any = None) -> Any:
        """``GET path?query``, unread (``preload_content=False``); ``ApiException`` on HTTP >= 400."""
        url = self._host + path
        if query:
            url += "?" + urlencode({k: _query_value(v) for k, v in query.items()})
        resp = self._pool.request(
            "GET", url, headers=self._request_headers(), timeout=_timeout(timeout), preload_content=False
        )
        if resp.status >= 400:
            body = resp.data
            resp.release_conn()
            raise ApiException(
                status=resp.status, reason=resp.reason, body=body.decode("utf-8", "replace") if body else None
            )
        return resp

    def _list(self, path: str, kwargs: Mapping[str, Any]) -> Any:
        query = {_QUERY[k]: v for k, v in kwargs.items() if k in _QUERY and v is not None}
        unknown = set(kwargs) - set(_QUERY) - {"_preload_content", "_request_timeout"}
        if unknown:
            raise TypeError(f"LeanCoreV1: unsupported arguments {sorted(unknown)}")
        return self.get(path, query, timeout=kwargs.get("_request_timeout"))

    def list_node(self, **kwargs: Any) -> Any:
        """``GET /api/v1/nodes`` (list or, with ``watch=True``, the event stream), unread."""
        return self._list("/api/v1/nodes", kwargs)

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any:
        """``GET /api/v1/pods`` (list or, with ``watch=True``, the event stream), unread."""
        return self._list("/api/v1/pods", kwargs)

    def list_namespaced_config_map(self, namespace: str, **kwargs: Any) -> Any:
        """``GET /api/v1/namespaces/{ns}/configmaps`` (list or watch), unread."""
        return self._list(f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps", kwargs)

    def read_namespaced_config_map(
        self, name: str, namespace: str, _request_timeout: Any = None
    ) -> ConfigMapData:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps/{quote(name, safe='')}"
        resp = self.get(path, timeout=_request_timeout)
        try:
            doc = orjson.loads(resp.data)
        finally:
            resp.release_conn()
        meta = doc.get("metadata") or {}
        data = doc.get("data")
        return ConfigMapData(
            data=dict(data) if isinstance(data, Mapping) else None,
            metadata=ConfigMapMeta(
                name=str(meta.get("name") or ""),
                namespace=str(meta.get("namespace") or ""),
                resource_version=meta.get("resourceVersion"),
            ),
        )


__all__ = ["ConfigMapData", "ConfigMapMeta", "LeanCoreV1"]
