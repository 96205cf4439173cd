"""Extender metrics: names, closed label sets created up front, buckets, scrape-time cache gauges."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from qosched.extender.server.metrics import (
    BIND_FAILURE_REASONS,
    CODES,
    DECISION_OUTCOMES,
    OTHER,
    REJECTION_REASONS,
    REQUEST_BUCKETS_S,
    VERBS,
    CacheCollector,
    ExtenderMetrics,
)
from qosched.policies.placement.base import Reason
from tests.extender.extender_support import metric_families, metric_samples, metric_value


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ExtenderMetrics:
    return ExtenderMetrics(registry)


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("qosched_extender_requests_total", {"verb": "filter", "code": "200"}),
        ("qosched_extender_requests_total", {"verb": "preempt", "code": OTHER}),
        ("qosched_extender_request_duration_seconds_count", {"verb": "bind"}),
        ("qosched_extender_decisions_total", {"verb": "prioritize", "outcome": "unmanaged"}),
        ("qosched_extender_decisions_total", {"verb": "bind", "outcome": OTHER}),
        ("qosched_extender_node_rejections_total", {"reason": "insufficient_gpu"}),
        ("qosched_extender_node_rejections_total", {"reason": "slo_existing"}),
        ("qosched_extender_bind_failures_total", {"reason": "conflict"}),
        ("qosched_extender_policy_decision_duration_seconds_count", {"verb": "filter"}),
    ],
    ids=["requests", "requests-other", "duration", "decision", "decision-other", "rejection",
         "rejection-slo", "bind-failure", "policy-duration"],
)  # fmt: skip
def test_series_exist_at_zero_before_any_event(registry: CollectorRegistry, name: str, labels: dict) -> None:
    ExtenderMetrics(registry)
    assert registry.get_sample_value(name, labels) == 0.0


def test_series_count_is_fixed(registry: CollectorRegistry, metrics: ExtenderMetrics) -> None:
    samples = metric_samples(generate_latest(registry).decode())
    requests = [key for key in samples if key[0] == "qosched_extender_requests_total"]
    assert len(requests) == len(VERBS) * (len(CODES) + 1)
    decisions = [key for key in samples if key[0] == "qosched_extender_decisions_total"]
    assert len(decisions) == sum(len(v) + 1 for v in DECISION_OUTCOMES.values())


def test_rejection_reasons_are_the_policy_reason_codes() -> None:
    assert set(REJECTION_REASONS) == {r.name.lower() for r in Reason} - {"ok"}
    assert len(REJECTION_REASONS) == len(Reason) - 1


@pytest.mark.parametrize(
    ("code", "label"),
    [(200, "200"), (400, "400"), (415, "415"), (503, "503"), (404, OTHER), (302, OTHER)],
    ids=["ok", "bad-request", "media-type", "unavailable", "not-found-other", "redirect-other"],
)
def test_observe_request_counts_by_code(
    registry: CollectorRegistry, metrics: ExtenderMetrics, code: int, label: str
) -> None:
    metrics.observe_request("filter", code, 0.002)
    metrics.observe_request("filter", code, 0.004)
    assert (
        registry.get_sample_value("qosched_extender_requests_total", {"verb": "filter", "code": label}) == 2.0
    )
    assert (
        registry.get_sample_value("qosched_extender_request_duration_seconds_count", {"verb": "filter"})
        == 2.0
    )
    assert registry.get_sample_value(
        "qosched_extender_request_duration_seconds_sum", {"verb": "filter"}
    ) == pytest.approx(0.006, abs=1e-12)


@pytest.mark.parametrize(
    ("seconds", "le_first_bucket_holding_it"),
    [
        (0.00005, "0.0001"),
        (0.0003, "0.0005"),
        (0.001, "0.001"),
        (0.3, "0.5"),
        (2.0, "2.5"),
        (7.0, "10.0"),
        (12.0, "+Inf"),
    ],
    ids=["50us", "300us", "1ms-boundary", "300ms", "2s", "7s-near-timeout", "12s-overflow"],
)
def test_request_histogram_buckets(
    registry: CollectorRegistry, metrics: ExtenderMetrics, seconds: float, le_first_bucket_holding_it: str
) -> None:
    metrics.observe_request("prioritize", 200, seconds)
    bounds = [*(repr(b) for b in REQUEST_BUCKETS_S), "+Inf"]
    first = bounds.index(le_first_bucket_holding_it)
    for i, le in enumerate(bounds):
        value = registry.get_sample_value(
            "qosched_extender_request_duration_seconds_bucket", {"verb": "prioritize", "le": le}
        )
        assert value == (1.0 if i >= first else 0.0), le


def test_buckets_span_sub_ms_to_the_manifests_http_timeout() -> None:
    assert REQUEST_BUCKETS_S[0] == 0.0001
    assert REQUEST_BUCKETS_S[-1] == 10.0
    assert list(REQUEST_BUCKETS_S) == sorted(REQUEST_BUCKETS_S)


def test_decisions_rejections_bind_failures_policy(
    registry: CollectorRegistry, metrics: ExtenderMetrics
) -> None:
    metrics.decision("filter", "feasible")
    metrics.decision("filter", "feasible")
    metrics.decision("preempt", "no_fit")
    metrics.rejections({"insufficient_gpu": 3, "no_profile": 1, "slo_new": 0})
    metrics.rejections({"insufficient_gpu": 2})
    metrics.bind_failure("no_longer_fits")
    metrics.policy_seconds("filter", 0.0007)

    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("qosched_extender_decisions_total", {"verb": "filter", "outcome": "feasible"}) == 2.0
    assert value("qosched_extender_decisions_total", {"verb": "preempt", "outcome": "no_fit"}) == 1.0
    assert value("qosched_extender_node_rejections_total", {"reason": "insufficient_gpu"}) == 5.0
    assert value("qosched_extender_node_rejections_total", {"reason": "no_profile"}) == 1.0
    assert value("qosched_extender_node_rejections_total", {"reason": "slo_new"}) == 0.0
    assert value("qosched_extender_bind_failures_total", {"reason": "no_longer_fits"}) == 1.0
    assert (
        value("qosched_extender_policy_decision_duration_seconds_bucket", {"verb": "filter", "le": "0.001"})
        == 1.0
    )
    assert (
        value("qosched_extender_policy_decision_duration_seconds_bucket", {"verb": "filter", "le": "0.0005"})
        == 0.0
    )


def test_unknown_label_values_go_to_other_and_warn_once(
    registry: CollectorRegistry, metrics: ExtenderMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qosched.extender.server.metrics"):
        metrics.decision("filter", "scored")  # a prioritize outcome, not a filter one
        metrics.decision("filter", "scored")
        metrics.rejections({"cosmic_rays": 2})
        metrics.bind_failure("gremlins")
    assert (
        registry.get_sample_value("qosched_extender_decisions_total", {"verb": "filter", "outcome": OTHER})
        == 2.0
    )
    assert (
        registry.get_sample_value("qosched_extender_decisions_total", {"verb": "filter", "outcome": "scored"})
        is None
    )
    assert registry.get_sample_value("qosched_extender_node_rejections_total", {"reason": OTHER}) == 2.0
    assert registry.get_sample_value("qosched_extender_bind_failures_total", {"reason": OTHER}) == 1.0
    assert len([r for r in caplog.records if "'scored'" in r.getMessage()]) == 1


def test_bad_verb_and_negative_count_raise(metrics: ExtenderMetrics) -> None:
    with pytest.raises(ValueError, match="unknown verb 'score'"):
        metrics.observe_request("score", 200, 0.1)
    with pytest.raises(ValueError, match="unknown verb"):
        metrics.policy_seconds("Filter", 0.1)
    with pytest.raises(ValueError, match="negative"):
        metrics.rejections({"no_profile": -1})


def test_each_registry_gets_its_own_metrics_and_none_registers_nowhere() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    m1, _ = ExtenderMetrics(first), ExtenderMetrics(second)
    m1.bind_failure("api")
    assert first.get_sample_value("qosched_extender_bind_failures_total", {"reason": "api"}) == 1.0
    assert second.get_sample_value("qosched_extender_bind_failures_total", {"reason": "api"}) == 0.0
    with pytest.raises(ValueError, match="Duplicated"):
        ExtenderMetrics(first)
    unregistered = ExtenderMetrics(None)
    unregistered.decision("bind", "bound")
    assert unregistered.decisions.labels(verb="bind", outcome="bound")._value.get() == 1.0


def test_closed_sets_are_consistent() -> None:
    assert set(DECISION_OUTCOMES) == set(VERBS)
    for outcomes in (*DECISION_OUTCOMES.values(), REJECTION_REASONS, BIND_FAILURE_REASONS):
        assert OTHER not in outcomes
        assert len(set(outcomes)) == len(outcomes)


# ------------------------------------------------------------------ cache collector


@dataclass(frozen=True, slots=True)
class Stats:
    nodes: int
    pods: int
    assumed: int
    synced: bool


@dataclass(frozen=True, slots=True)
class StatsWithPlaced:
    nodes: int
    pods: int
    placed: int
    assumed: int
    synced: bool


@pytest.mark.parametrize(
    ("stats", "want"),
    [
        (
            Stats(4, 10, 1, True),
            {"nodes": 4, "pods": 10, "assumed_pods": 1, "synced": 1, "placed_pods": None},
        ),
        (Stats(0, 0, 0, False), {"nodes": 0, "pods": 0, "assumed_pods": 0, "synced": 0, "placed_pods": None}),
        (
            StatsWithPlaced(3, 9, 7, 2, True),
            {"nodes": 3, "pods": 9, "assumed_pods": 2, "synced": 1, "placed_pods": 7},
        ),
    ],
    ids=["synced", "empty-not-synced", "with-placed"],
)
def test_cache_collector_reads_at_scrape_time(
    stats: Stats | StatsWithPlaced, want: dict[str, int | None]
) -> None:
    registry = CollectorRegistry()
    registry.register(CacheCollector(lambda: stats))
    for suffix, value in want.items():
        got = registry.get_sample_value(f"qosched_cache_{suffix}")
        assert got == (None if value is None else float(value)), suffix


def test_cache_collector_calls_fn_per_scrape_not_at_register() -> None:
    calls: list[int] = []
    current = {"nodes": 1}

    def stats() -> Stats:
        calls.append(1)
        return Stats(current["nodes"], 0, 0, True)

    registry = CollectorRegistry()
    registry.register(CacheCollector(stats))
    assert calls == []
    assert registry.get_sample_value("qosched_cache_nodes") == 1.0
    current["nodes"] = 5
    assert registry.get_sample_value("qosched_cache_nodes") == 5.0
    assert len(calls) == 2


def test_cache_collector_survives_a_failing_fn(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Stats:
        raise RuntimeError("lock poisoned")

    registry = CollectorRegistry()
    registry.register(CacheCollector(broken))
    with caplog.at_level(logging.ERROR, logger="qosched.extender.server.metrics"):
        text = generate_latest(registry).decode()
    assert metric_value(text, "qosched_cache_synced") == 0.0
    assert registry.get_sample_value("qosched_cache_nodes") is None
    assert any("cache stats failed" in r.getMessage() for r in caplog.records)


def test_cache_collector_beside_extender_metrics(
    registry: CollectorRegistry, metrics: ExtenderMetrics
) -> None:
    registry.register(CacheCollector(lambda: Stats(2, 3, 0, True)))
    families = metric_families(generate_latest(registry).decode())
    assert families["qosched_cache_nodes"] == "gauge"
    assert families["qosched_extender_requests"] == "counter"
