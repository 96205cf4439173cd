"""Observed latency and request rate per pod, read from Prometheus (the QoE controller's sensor).

The serving containers export a latency histogram (base unit seconds, as Prometheus asks);
Prometheus scrapes it; the controller asks for, per pod and over a window:

- the mean latency, ``rate(sum) / rate(count)`` — pods whose ``qosched.io/slo-ms`` is a mean
  (no ``qosched.io/slo-percentile``, contract §1);
- the ``p``-th percentile, ``histogram_quantile(p/100, ...)`` — one query per distinct
  percentile among the pods;
- the request rate, ``rate(count)`` — :math:`\\lambda` for the controller's M/M/1 inversion.

Each query is a :class:`string.Template` (``$metric``, ``$window``, ``$quantile``; ``$`` because
PromQL's own braces would clash with ``str.format``). Result series are mapped to pods by their
``namespace`` and ``pod`` labels (configurable: behind a Kubernetes service discovery the
exporter's own labels may arrive as ``exported_pod`` unless the scrape sets ``honor_labels``).

Missing data is never a number: a NaN (no requests in the window, or ``0/0``), a negative value,
a series without the pod label, or two series for one pod (ambiguous) give *no observation* for
that pod. ``+Inf`` is kept (``histogram_quantile`` returns it when the quantile falls in the
``+Inf`` bucket: the latency is beyond every bucket). A query that fails (connection refused,
timeout, HTTP error, a result that is not a vector) makes :meth:`PromReader.read` return None
after one log line naming the URL and the query, and the controller skips that cycle.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

#: ``(namespace or None, pod)``: None when the series carries no namespace label.
PodKey = tuple[str | None, str]

DEFAULT_METRIC = "inference_request_duration_seconds"
DEFAULT_QUANTILE_QUERY = (
    "histogram_quantile($quantile, sum by (namespace, pod, le) (rate(${metric}_bucket[$window])))"
)
DEFAULT_MEAN_QUERY = (
    "sum by (namespace, pod) (rate(${metric}_sum[$window]))"
    " / sum by (namespace, pod) (rate(${metric}_count[$window]))"
)
DEFAULT_RATE_QUERY = "sum by (namespace, pod) (rate(${metric}_count[$window]))"

_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PLACEHOLDERS = frozenset({"metric", "window", "quantile"})


def _check_template(name: str, template: str, required: frozenset[str]) -> string.Template:
    tpl = string.Template(template)
    if not tpl.is_valid():
        raise ValueError(f"{name}: {template!r} is not a valid template (write a literal $ as $$)")
    used = set(tpl.get_identifiers())
    unknown = used - _PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"{name}: unknown placeholder(s) {sorted(unknown)}; known: $metric, $window, $quantile"
        )
    missing = required - used
    if missing:
        raise ValueError(f"{name}: must use {', '.join('$' + m for m in sorted(missing))}")
    return tpl


@dataclass(frozen=True, slots=True)
class PromQueries:
    """What to ask Prometheus, validated on construction (errors name the field).

    Attributes
    ----------
    metric : str
        Histogram name without ``_bucket``/``_sum``/``_count``.
    window : str
        PromQL range of the ``rate()`` (e.g. ``"1m"``): at least two scrape intervals; the
        controller's interval should be at least this long, so each step sees its last change.
    quantile_query, mean_query, rate_query : str
        Templates (see the module docstring). The quantile query must use ``$quantile``.
    pod_label, namespace_label : str
        Labels naming the pod and its namespace in the query results.
    unit_to_ms : float
        Factor from the metric's unit to milliseconds (1000 for seconds, the Prometheus base unit).
    """

    metric: str = DEFAULT_METRIC
    window: str = "1m"
    quantile_query: str = DEFAULT_QUANTILE_QUERY
    mean_query: str = DEFAULT_MEAN_QUERY
    rate_query: str = DEFAULT_RATE_QUERY
    pod_label: str = "pod"
    namespace_label: str = "namespace"
    unit_to_ms: float = 1000.0

    def __post_init__(self) -> None:
        if not _METRIC_RE.match(self.metric):
            raise ValueError(f"PromQueries.metric: {self.metric!r} is not a Prometheus metric name")
        if not _DURATION_RE.match(self.window):
            raise ValueError(f"PromQueries.window: {self.window!r} is not a PromQL duration (e.g. 30s, 1m)")
        _check_template("PromQueries.quantile_query", self.quantile_query, frozenset({"quantile"}))
        _check_template("PromQueries.mean_query", self.mean_query, frozenset())
        _check_template("PromQueries.rate_query", self.rate_query, frozenset())
        for name in ("pod_label", "namespace_label"):
            if not _LABEL_RE.match(getattr(self, name)):
                raise ValueError(f"PromQueries.{name}: {getattr(self, name)!r} is not a label name")
        if not (math.isfinite(self.unit_to_ms) and self.unit_to_ms > 0):
            raise ValueError(f"PromQueries.unit_to_ms: {self.unit_to_ms!r} must be finite and > 0")

    def _fill(self, template: str, quantile: float | None = None) -> str:
        values = {"metric": self.metric, "window": self.window}
        if quantile is not None:
            values["quantile"] = repr(float(quantile))
        return string.Template(template).substitute(values)

    def quantile(self, percentile: float) -> str:
        """The percentile query, e.g. ``percentile=95`` → ``histogram_quantile(0.95, ...)``."""
        if not (0.0 < percentile < 100.0):
            raise ValueError(f"percentile: {percentile!r} not in (0, 100)")
        return self._fill(self.quantile_query, round(percentile / 100.0, 6))

    def mean(self) -> str:
        return self._fill(self.mean_query)

    def rate(self) -> str:
        return self._fill(self.rate_query)


@dataclass(frozen=True, slots=True)
class PromSnapshot:
    """Observations of one cycle.

    Attributes
    ----------
    latency_ms : mapping of (percentile or None) to mapping of PodKey to float
        ``latency_ms[None]`` the mean, ``latency_ms[95.0]`` the 95th percentile, per pod [ms];
        ``inf`` when beyond every bucket. Pods without an observation are absent.
    rate_rps : mapping of PodKey to float
        Request rate per pod [1/s] (absent when unknown).
    """

    latency_ms: Mapping[float | None, Mapping[PodKey, float]]
    rate_rps: Mapping[PodKey, float] = field(default_factory=dict)

    def latency_of(self, namespace: str, pod: str, percentile: float | None) -> float | None:
        """Latency of a pod [ms] at ``percentile`` (None = mean); None when not observed."""
        return _lookup(self.latency_ms.get(percentile, {}), namespace, pod)

    def rate_of(self, namespace: str, pod: str) -> float | None:
        """Request rate of a pod [1/s]; None when not observed."""
        return _lookup(self.rate_rps, namespace, pod)


def _lookup(values: Mapping[PodKey, float], namespace: str, pod: str) -> float | None:
    if (namespace, pod) in values:
        return values[(namespace, pod)]
    return values.get((None, pod))  # series without a namespace label: matched by pod name alone


class PromReader:
    """Reads :class:`PromSnapshot` objects from one Prometheus server.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://prometheus.monitoring:9090``.
    queries : PromQueries, optional
    timeout_s : float
        Per-request timeout [s]; a slow Prometheus makes the cycle skip, not hang.
    retries : int
        Connection retries per request (urllib3 ``Retry``), with a 0.1 s backoff.
    headers : mapping, optional
        Extra HTTP headers (e.g. ``Authorization``).
    """

    def __init__(
        self,
        url: str,
        queries: PromQueries | None = None,
        *,
        timeout_s: float = 5.0,
        retries: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus url: {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.queries = queries or PromQueries()
        self.timeout_s = timeout_s
        self._prom = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            retry=Retry(total=retries, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
            timeout=timeout_s,  # annotated int upstream; passed on as a requests timeout
        )

    def close(self) -> None:
        self._prom._session.close()

    def query_vector(self, query: str) -> dict[PodKey, float] | None:
        """Run one instant query; ``{(namespace, pod): value}`` or None when the query failed."""
        try:
            result: Any = self._prom.custom_query(query)
        except ValueError as exc:  # a body that is not JSON (a proxy's error page); before
            # RequestException: requests' JSONDecodeError is both
            log.error("prometheus %s answered %r with a body that is not JSON (%s)", self.url, query, exc)
            return None
        except requests.exceptions.RequestException as exc:
            log.error("prometheus %s unreachable (%s); skipping this cycle", self.url, _short(exc))
            return None
        except PrometheusApiClientException as exc:
            log.error("prometheus %s refused query %r: %s; skipping this cycle", self.url, query, _short(exc))
            return None
        return self._parse_vector(query, result)

    def _parse_vector(self, query: str, result: Any) -> dict[PodKey, float] | None:
        if not isinstance(result, list) or not all(isinstance(r, Mapping) for r in result):
            log.error("prometheus query %r did not return an instant vector: %.200r", query, result)
            return None
        q = self.queries
        out: dict[PodKey, float] = {}
        seen: dict[PodKey, int] = {}
        for series in result:
            labels = series.get("metric") or {}
            pod = labels.get(q.pod_label)
            if not pod:
                log.debug("query %r: a series without label %r is ignored: %s", query, q.pod_label, labels)
                continue
            key: PodKey = (labels.get(q.namespace_label) or None, str(pod))
            seen[key] = seen.get(key, 0) + 1
            try:
                value = float(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                log.warning("query %r: unreadable sample for %s/%s: %.100r", query, key[0], key[1], series)
                continue
            if math.isnan(value) or value < 0:
                continue
            out[key] = value
        for key, count in seen.items():
            if count > 1:
                log.warning(
                    "query %r: %d series for pod %s/%s (aggregate by %s, %s); no observation for it",
                    query,
                    count,
                    key[0],
                    key[1],
                    q.namespace_label,
                    q.pod_label,
                )
                out.pop(key, None)
        return out

    def read(self, percentiles: Iterable[float | None], *, with_rate: bool = True) -> PromSnapshot | None:
        """Query the latencies each distinct percentile needs (None = mean) and the rates.

        Returns None (after logging) when any query fails: a partial snapshot could make the
        controller move shares on half the picture.
        """
        latency: dict[float | None, Mapping[PodKey, float]] = {}
        for pct in sorted(set(percentiles), key=lambda p: -1.0 if p is None else p):
            query = self.queries.mean() if pct is None else self.queries.quantile(pct)
            values = self.query_vector(query)
            if values is None:
                return None
            scale = self.queries.unit_to_ms
            latency[pct] = MappingProxyType({k: v * scale for k, v in values.items()})
        rates: Mapping[PodKey, float] = {}
        if with_rate:
            got = self.query_vector(self.queries.rate())
            if got is None:
                return None
            rates = MappingProxyType(got)
        return PromSnapshot(MappingProxyType(latency), rates)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."
