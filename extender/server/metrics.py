"""Prometheus metrics of the extender, declared once on a registry the caller passes in.

Every metric lives under the ``qosched`` namespace in base units (seconds), and every label takes
values from a closed set that is created up front, so each series exists (at 0) from the first
scrape and the number of series is fixed:

========================================================  ===================  ======================
metric                                                    labels               meaning
========================================================  ===================  ======================
``qosched_extender_requests_total``                       verb, code           answered scheduler calls
``qosched_extender_request_duration_seconds``             verb                 time to answer one call
``qosched_extender_decisions_total``                      verb, outcome        what the runtime decided
``qosched_extender_node_rejections_total``                reason               nodes filtered out
``qosched_extender_bind_failures_total``                  reason               binds that failed
``qosched_extender_policy_decision_duration_seconds``     verb                 time inside the policy
``qosched_extender_binds_in_flight``                      --                   binds waiting on the API now
``qosched_extender_binds_outcome_unknown``                --                   timed-out binds still reserved
``qosched_cache_nodes`` / ``_pods`` / ``_placed_pods``    --                   cluster cache sizes
``qosched_cache_assumed_pods`` / ``qosched_cache_synced`` --                   (scrape time, see below)
========================================================  ===================  ======================

The request histogram has no ``code`` label: latency by verb is what an operator compares with
kube-scheduler's extender timeout, and a code label would multiply its 14 buckets by the codes;
the per-code count is in the counter.

Label values outside the closed sets are counted under ``other`` (and logged once), never as a
new series and never as an exception inside a scheduling call.

Cache sizes are not mirrored into gauges on every change: :class:`CacheCollector` reads them from
a callable at scrape time (the custom-collector pattern of ``prometheus_client``). Custom
collectors do not work in ``prometheus_client``'s multi-process mode; the extender runs one worker
process with threads, so that mode is not used.

The method names (``decision``, ``rejections``, ``bind_failure``, ``policy_seconds``) are those of
``qosched.extender.server.runtime.Observer``, so an :class:`ExtenderMetrics` is the runtime's observer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qosched.policies.placement.base import Reason

log = logging.getLogger(__name__)

NAMESPACE: Final[str] = "qosched"
OTHER: Final[str] = "other"
"""Label value for anything outside a closed set."""

VERBS: Final[tuple[str, ...]] = ("filter", "prioritize", "bind", "preempt")
"""The scheduler verbs (contract §2)."""

CODES: Final[tuple[str, ...]] = ("200", "400", "413", "415", "500", "503")
"""HTTP statuses the verb routes answer with; anything else is counted as ``other``."""

DECISION_OUTCOMES: Final[Mapping[str, tuple[str, ...]]] = {
    # filter: >= 1 node kept / no node kept / pod without qosched annotations / bad annotations /
    # an exception (answered in the Error field) / the cache has not synced (Error: retry).
    "filter": ("feasible", "no_fit", "unmanaged", "invalid", "error", "not_synced"),
    "prioritize": ("scored", "unmanaged", "invalid", "error", "not_synced"),
    # bind: placed a managed pod / bound an unmanaged pod as the default binder would /
    # a retry that found the pod already on that node / an exception. Refusals are counted by
    # reason in bind_failures_total.
    "bind": ("bound", "bound_unmanaged", "already_bound", "error"),
    # preempt: kept >= 1 candidate node / kept none.
    "preempt": ("trimmed", "no_fit", "unmanaged", "invalid", "error", "not_synced"),
}
"""What the runtime decided, per verb; the values of the ``outcome`` label."""

REJECTION_REASONS: Final[tuple[str, ...]] = tuple(r.name.lower() for r in Reason if r is not Reason.OK)
"""Why a node was filtered out: the stable codes of ``qosched.policies.placement.base.Reason``."""

BIND_FAILURE_REASONS: Final[tuple[str, ...]] = (
    "conflict",  # the API server refused: pod already bound elsewhere / UID precondition failed
    "not_found",  # the pod (or node) is gone
    "bound_elsewhere",  # the cache already has the pod on another node
    "no_longer_fits",  # the reservation made at filter time no longer fits the node
    "api",  # any other API error
    "timeout",  # the binding call timed out: outcome unknown, the reservation is kept
    "error",  # an unexpected exception
    "not_synced",  # the cache has not synced yet: refused, kube-scheduler retries
    "busy",  # the binds-in-flight limit was reached: refused at once, kube-scheduler retries
    "outcome_unknown",  # a retry to another node while an earlier bind's outcome is unknown
)
"""Why a bind failed; the values of the ``reason`` label of ``bind_failures_total``."""

REQUEST_BUCKETS_S: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Histogram buckets [s]: 100 µs (a names-only filter of a few nodes) to 10 s.

kube-scheduler calls the extender once per pod per verb and gives each call ``httpTimeout`` (5 s
by default, 10 s in ``manifests/scheduler-config.yaml``). Anything above 1 s is already an
incident (the warning alert), and the buckets up to 10 s say how close the slow calls came to the
timeout, where kube-scheduler gives up on the pod (the critical alert reads the 5 s bucket).
"""


class CacheStatsLike(Protocol):
    """What :class:`CacheCollector` reads (``qosched.extender.kube.cache.CacheStats`` has these)."""

    @property
    def nodes(self) -> int: ...
    @property
    def pods(self) -> int: ...
    @property
    def assumed(self) -> int: ...
    @property
    def synced(self) -> bool: ...


class ExtenderMetrics:
    """All extender metrics, declared once on ``registry``.

    Parameters
    ----------
    registry : CollectorRegistry or None
        Where to register; None registers nowhere (the metrics still count, for tests or when
        exposition is off). Two instances on the same registry raise ``ValueError`` (duplicate
        series), as ``prometheus_client`` does.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "extender_requests",
            "Scheduler calls answered, by verb and HTTP status code.",
            ["verb", "code"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.request_duration = Histogram(
            "extender_request_duration",
            "Time to answer one scheduler call, from the body read to the encoded answer.",
            ["verb"],
            namespace=NAMESPACE,
            unit="seconds",
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        )
        self.decisions = Counter(
            "extender_decisions",
            "Decisions of the extender per verb, by outcome.",
            ["verb", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.node_rejections = Counter(
            "extender_node_rejections",
            "Candidate nodes filtered out, by reason.",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.bind_failures = Counter(
            "extender_bind_failures",
            "Binds that failed, by reason.",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.policy_duration = Histogram(
            "extender_policy_decision_duration",
            "Time spent in the placement policy for one scheduler call.",
            ["verb"],
            namespace=NAMESPACE,
            unit="seconds",
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        )
        # Read at scrape time from the runtime (``follow_binds``); 0 until then.
        self.binds_in_flight = Gauge(
            "extender_binds_in_flight",
            "Binds between their start and their answer now (at most BIND_MAX_IN_FLIGHT).",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.binds_outcome_unknown = Gauge(
            "extender_binds_outcome_unknown",
            "Pods whose bind timed out and whose devices stay reserved until the watch settles it.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self._warned: set[tuple[str, str]] = set()
        self._warned_lock = threading.Lock()
        # Create every series up front so it is scraped as 0 before its first event, and keep
        # each labelled child: the label sets are closed, so recording is one dict lookup instead
        # of ``labels()`` (which sorts and locks: ~2 µs, ~8 calls per scheduled pod).
        self._requests = {
            (verb, code): self.requests.labels(verb=verb, code=code)
            for verb in VERBS
            for code in (*CODES, OTHER)
        }
        self._request_duration = {verb: self.request_duration.labels(verb=verb) for verb in VERBS}
        self._policy_duration = {verb: self.policy_duration.labels(verb=verb) for verb in VERBS}
        self._decisions = {
            (verb, outcome): self.decisions.labels(verb=verb, outcome=outcome)
            for verb in VERBS
            for outcome in (*DECISION_OUTCOMES[verb], OTHER)
        }
        self._node_rejections = {
            reason: self.node_rejections.labels(reason=reason) for reason in (*REJECTION_REASONS, OTHER)
        }
        self._bind_failures = {
            reason: self.bind_failures.labels(reason=reason) for reason in (*BIND_FAILURE_REASONS, OTHER)
        }

    def follow_binds(self, in_flight: Callable[[], float], outcome_unknown: Callable[[], float]) -> None:
        """Scrape the two bind gauges from these callables (the runtime's counts)."""
        self.binds_in_flight.set_function(in_flight)
        self.binds_outcome_unknown.set_function(outcome_unknown)

    # ------------------------------------------------------------------ closed label sets

    def _closed(self, kind: str, value: str, allowed: Iterable[str]) -> str:
        """``value`` if it is in ``allowed``, else ``other`` (logged once per kind and value)."""
        if value in allowed:
            return value
        key = (kind, value)
        with self._warned_lock:
            first = key not in self._warned
            self._warned.add(key)
        if first:
            log.warning("metrics: %s %r is not in the closed set; counted as %r", kind, value, OTHER)
        return OTHER

    def _verb(self, verb: str) -> str:
        """A verb must be one of :data:`VERBS`; a typo here is a bug, not data."""
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}; expected one of {VERBS}")
        return verb

    # ------------------------------------------------------------------ recording

    def observe_request(self, verb: str, code: int, seconds: float) -> None:
        """Count one answered scheduler call and its latency.

        Parameters
        ----------
        verb : str
            One of :data:`VERBS`.
        code : int
            The HTTP status answered; outside :data:`CODES` it counts as ``other``.
        seconds : float
            Wall time to answer [s].
        """
        verb = self._verb(verb)
        label = str(code) if str(code) in CODES else OTHER
        self._requests[verb, label].inc()
        self._request_duration[verb].observe(seconds)

    def decision(self, verb: str, outcome: str) -> None:
        """Count one decision; ``outcome`` from :data:`DECISION_OUTCOMES` of ``verb``."""
        verb = self._verb(verb)
        outcome = self._closed(f"{verb} outcome", outcome, DECISION_OUTCOMES[verb])
        self._decisions[verb, outcome].inc()

    def rejections(self, reasons: Mapping[str, int]) -> None:
        """Count filtered-out nodes: ``reasons`` maps a reason of :data:`REJECTION_REASONS` to a count.

        Raises
        ------
        ValueError
            A negative count (counters only go up).
        """
        for reason, count in reasons.items():
            if count < 0:
                raise ValueError(f"rejections[{reason!r}] = {count} is negative")
            if count:
                label = self._closed("rejection reason", reason, REJECTION_REASONS)
                self._node_rejections[label].inc(count)

    def bind_failure(self, reason: str) -> None:
        """Count one failed bind; ``reason`` from :data:`BIND_FAILURE_REASONS`."""
        label = self._closed("bind failure reason", reason, BIND_FAILURE_REASONS)
        self._bind_failures[label].inc()

    def policy_seconds(self, verb: str, seconds: float) -> None:
        """Record the time one call spent inside the placement policy [s]."""
        self._policy_duration[self._verb(verb)].observe(seconds)


class CacheCollector(Collector):
    """Cluster-cache sizes as gauges, read from ``stats_fn`` at every scrape.

    Yields ``qosched_cache_nodes``, ``qosched_cache_pods``, ``qosched_cache_assumed_pods``,
    ``qosched_cache_synced`` (1 once the first full list is in, else 0), and
    ``qosched_cache_placed_pods`` when the stats object has a ``placed`` count (pods accounted on
    devices). If ``stats_fn`` raises, the error is logged and only ``qosched_cache_synced 0`` is
    yielded, so the scrape still succeeds and an alert on ``synced == 0`` fires.

    Parameters
    ----------
    stats_fn : callable
        Returns an object with ``nodes``, ``pods``, ``assumed`` (ints) and ``synced`` (bool), e.g.
        ``ClusterCache.stats``. Called once per scrape, so it must be cheap and thread-safe.
    """

    def __init__(self, stats_fn: Callable[[], CacheStatsLike]) -> None:
        self._stats_fn = stats_fn

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "nodes": GaugeMetricFamily(f"{NAMESPACE}_cache_nodes", "Nodes in the cluster cache."),
            "pods": GaugeMetricFamily(f"{NAMESPACE}_cache_pods", "Pods in the cluster cache."),
            "placed": GaugeMetricFamily(
                f"{NAMESPACE}_cache_placed_pods", "Pods accounted on accelerator devices."
            ),
            "assumed": GaugeMetricFamily(
                f"{NAMESPACE}_cache_assumed_pods", "Pods reserved by the extender but not yet seen bound."
            ),
            "synced": GaugeMetricFamily(
                f"{NAMESPACE}_cache_synced", "1 once the cache holds a full list of the cluster, else 0."
            ),
        }

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so registering does not call ``stats_fn``."""
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        try:
            stats = self._stats_fn()
            values = {
                "nodes": float(stats.nodes),
                "pods": float(stats.pods),
                "assumed": float(stats.assumed),
                "synced": 1.0 if stats.synced else 0.0,
            }
            placed = getattr(stats, "placed", None)
            if placed is not None:
                values["placed"] = float(placed)
        except Exception:
            log.exception("metrics: reading the cache stats failed")
            values = {"synced": 0.0}
        for key, value in values.items():
            families[key].add_metric([], value)
            yield families[key]


__all__ = [
    "BIND_FAILURE_REASONS",
    "CODES",
    "DECISION_OUTCOMES",
    "NAMESPACE",
    "OTHER",
    "REJECTION_REASONS",
    "REQUEST_BUCKETS_S",
    "VERBS",
    "CacheCollector",
    "CacheStatsLike",
    "ExtenderMetrics",
]
