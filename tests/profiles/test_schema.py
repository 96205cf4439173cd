"""Profile format v1: what the schema accepts, what it rejects (naming the field), round trips."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qosched.profiles.schema import (
    MAX_MEMORY_MIB,
    MAX_TIME_MS,
    DeviceSpec,
    Profile,
    ProfileError,
    Provenance,
    ServiceTime,
    dump_profile_json,
    load_profile_file,
    parse_profile,
    profile_schema,
    profile_to_json,
)

MINIMAL: dict[str, Any] = {
    "schema_version": 1,
    "accelerator": "edgetpu",
    "model": "mobilenet_v2",
    "service_time_ms": {"mean": 4.91},
    "memory_mib": 100,
    "provenance": {"source": "models.md §A", "method": "paper table", "measured_on": "Coral edge TPU"},
}

FULL: dict[str, Any] = {
    "schema_version": 1,
    "accelerator": "nvidia-t4",
    "model": "resnet50",
    "service_time_ms": {"mean": 3.0, "second_moment": 9.5, "p50": 2.9, "p95": 3.1, "p99": 3.2},
    "swap_overhead_ms": 1.5,
    "memory_mib": 965,
    "accuracy": 0.7613,
    "batch_size": 4,
    "frontend_service_time_ms": 2.5,
    "device": {"memory_mib": 16384, "count": 2},
    "contention": {"overhead_frac": 0.05},
    "provenance": {"source": "s", "method": "m", "measured_on": "h", "date": "2024-02-29"},
}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Mutator that sets ``a.b.c`` = value (creating nothing: the parents must exist)."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = doc
        for part in parents:
            target = target[part]
        target[leaf] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = doc
        for part in parents:
            target = target[part]
        del target[leaf]

    return mutate


def _reject(base: dict[str, Any], mutate: Callable[[dict[str, Any]], None]) -> str:
    doc = copy.deepcopy(base)
    mutate(doc)
    with pytest.raises(ProfileError) as info:
        parse_profile(doc)
    return str(info.value)


# (mutation, text that must appear in the message, id). Paths appear in backticks.
REJECTIONS = [
    # unknown fields, at every level
    (_set("foo", 1), "unknown field `foo`", "unknown-top-level"),
    (_set("service_time_ms.mean2", 5.0), "unknown field `service_time_ms.mean2`", "unknown-in-service-time"),
    (_set("device.colour", "red"), "unknown field `device.colour`", "unknown-in-device"),
    (_set("contention.alpha", 1.0), "unknown field `contention.alpha`", "unknown-in-contention"),
    (_set("provenance.author", "me"), "unknown field `provenance.author`", "unknown-in-provenance"),
    # missing required fields
    (_drop("schema_version"), "missing required field `schema_version`", "missing-schema-version"),
    (_drop("accelerator"), "missing required field `accelerator`", "missing-accelerator"),
    (_drop("model"), "missing required field `model`", "missing-model"),
    (_drop("service_time_ms"), "missing required field `service_time_ms`", "missing-service-time"),
    (_drop("memory_mib"), "missing required field `memory_mib`", "missing-memory"),
    (_drop("provenance"), "missing required field `provenance`", "missing-provenance"),
    (_drop("service_time_ms.mean"), "missing required field `service_time_ms.mean`", "missing-mean"),
    (_drop("device.memory_mib"), "missing required field `device.memory_mib`", "missing-device-memory"),
    (_drop("provenance.source"), "missing required field `provenance.source`", "missing-source"),
    (
        _drop("provenance.measured_on"),
        "missing required field `provenance.measured_on`",
        "missing-measured-on",
    ),
    # wrong types
    (_set("memory_mib", "100"), "`memory_mib`: must be of type number", "memory-as-string"),
    (_set("service_time_ms.mean", "4.9"), "`service_time_ms.mean`: must be of type number", "mean-as-string"),
    (_set("service_time_ms", [4.9]), "`service_time_ms`: must be of type object", "service-time-as-list"),
    (_set("batch_size", 1.5), "`batch_size`: must be of type integer", "batch-size-fraction"),
    (_set("batch_size", True), "`batch_size`: must be of type integer", "batch-size-bool"),
    (_set("accuracy", "high"), "`accuracy`: must be of type number or null", "accuracy-as-string"),
    (_set("device.count", 1.5), "`device.count`: must be of type integer", "device-count-fraction"),
    (_set("provenance.source", 5), "`provenance.source`: must be of type string", "source-as-number"),
    (_set("schema_version", 2), "`schema_version`: must be 1", "schema-version-2"),
    (_set("schema_version", "1"), "`schema_version`: must be of type integer", "schema-version-string"),
    # out of range
    (_set("service_time_ms.mean", -1), "`service_time_ms.mean`: must be > 0", "negative-mean"),
    (_set("service_time_ms.mean", 0), "`service_time_ms.mean`: must be > 0", "zero-mean"),
    (_set("swap_overhead_ms", -0.1), "`swap_overhead_ms`: must be >= 0", "negative-swap"),
    (_set("memory_mib", 0), "`memory_mib`: must be > 0", "zero-memory"),
    (_set("frontend_service_time_ms", -1), "`frontend_service_time_ms`: must be >= 0", "negative-frontend"),
    (_set("accuracy", 1.5), "`accuracy`: must be <= 1", "accuracy-above-1"),
    (_set("accuracy", -0.1), "`accuracy`: must be >= 0", "accuracy-below-0"),
    (_set("batch_size", 0), "`batch_size`: must be >= 1", "zero-batch"),
    (_set("device.count", 0), "`device.count`: must be >= 1", "zero-devices"),
    (
        _set("contention.overhead_frac", -0.1),
        "`contention.overhead_frac`: must be >= 0",
        "negative-contention",
    ),
    # not finite (Python's json accepts NaN / Infinity)
    (_set("service_time_ms.mean", math.nan), "`service_time_ms.mean`: must be a finite number", "nan-mean"),
    (_set("memory_mib", math.inf), "`memory_mib`: must be a finite number", "inf-memory"),
    (_set("swap_overhead_ms", -math.inf), "`swap_overhead_ms`: must be a finite number", "minus-inf-swap"),
    (
        _set("service_time_ms.second_moment", math.nan),
        "`service_time_ms.second_moment`: must be a finite",
        "nan-m2",
    ),
    (_set("service_time_ms.p95", math.nan), "`service_time_ms.p95`: must be a finite number", "nan-p95"),
    (_set("accuracy", math.nan), "`accuracy`: must be a finite number", "nan-accuracy"),
    # absurd magnitudes
    (_set("memory_mib", 11 * 1024 * 1024), "`memory_mib`: must be <= 10485760", "memory-11-tib"),
    (_set("device.memory_mib", 1e9), "`device.memory_mib`: must be <= 10485760", "device-memory-absurd"),
    (_set("service_time_ms.mean", 1e7), "`service_time_ms.mean`: must be <= 3600000", "mean-over-an-hour"),
    (_set("batch_size", 10**6), "`batch_size`: must be <= 65536", "batch-size-absurd"),
    (_set("memory_mib", 10**400), "`memory_mib`: must be <= 10485760", "memory-beyond-float-range"),
    (_set("contention.overhead_frac", 100), "`contention.overhead_frac`: must be <= 10", "contention-absurd"),
    # semantic rules beyond JSON Schema
    (
        _set("service_time_ms.second_moment", 8.0),
        "`service_time_ms.second_moment`: must be >= mean²",
        "second-moment-below-mean-squared",
    ),
    (_set("service_time_ms.p50", 3.15), "`service_time_ms.p95`: must be >= p50", "p50-above-p95"),
    (_set("service_time_ms.p99", 3.05), "`service_time_ms.p99`: must be >= p95", "p95-above-p99"),
    (_set("memory_mib", 20000), "`memory_mib`: 20000", "model-larger-than-device"),
    (_set("provenance.date", "2023-02-30"), "`provenance.date`: must be a calendar date", "impossible-date"),
    (_set("provenance.date", "23-01-01"), "`provenance.date`: must match", "short-date"),
    (_set("provenance.source", ""), "`provenance.source`: must not be empty", "empty-source"),
    # key patterns
    (_set("accelerator", "Edge_TPU"), "`accelerator`: must match", "accelerator-upper-underscore"),
    (_set("accelerator", "edge--tpu"), "`accelerator`: must match", "accelerator-double-hyphen"),
    (_set("accelerator", "-edgetpu"), "`accelerator`: must match", "accelerator-leading-hyphen"),
    (_set("accelerator", ""), "`accelerator`: must match", "accelerator-empty"),
    (_set("model", "MobileNet"), "`model`: must match", "model-uppercase"),
    (_set("model", "mobilenet-v2"), "`model`: must match", "model-hyphen"),
    (_set("model", "mobilenet__v2"), "`model`: must match", "model-double-underscore"),
    (_set("model", "m" * 64), "`model`: must be at most 63 characters", "model-too-long"),
]


@pytest.mark.parametrize(("mutate", "expected"), [r[:2] for r in REJECTIONS], ids=[r[2] for r in REJECTIONS])
def test_rejects_with_field_path(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    assert expected in _reject(FULL, mutate)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [([], "profile: must be a JSON object"), ("x", "profile: must be a JSON object"), (None, "JSON object")],
    ids=["list", "string", "null"],
)
def test_rejects_non_objects(doc: Any, expected: str) -> None:
    with pytest.raises(ProfileError, match=expected):
        parse_profile(doc)


def test_unknown_field_message_lists_allowed_fields() -> None:
    message = _reject(MINIMAL, _set("service_time_ms.mean2", 5.0))
    assert "allowed here: mean, second_moment, p50, p95, p99" in message


def test_first_problem_in_schema_order_is_reported() -> None:
    # Both `model` and `memory_mib` are bad; `model` comes first in the schema's field order.
    def mutate(doc: dict[str, Any]) -> None:
        doc["model"] = "Bad"
        doc["memory_mib"] = -1

    assert "`model`" in _reject(MINIMAL, mutate)


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (_set("accuracy", None), lambda p: p.accuracy is None),
        (_set("batch_size", 2.0), lambda p: p.batch_size == 2 and isinstance(p.batch_size, int)),
        (_set("service_time_ms.second_moment", 4.91**2), lambda p: p.service_time.is_deterministic),
        (_set("swap_overhead_ms", 0), lambda p: p.swap_overhead_ms == 0.0),
        (_set("accelerator", "nvidia-a100-80gb"), lambda p: p.accelerator == "nvidia-a100-80gb"),
        (_set("model", "ssd_mobilenet_v2"), lambda p: p.model == "ssd_mobilenet_v2"),
    ],
    ids=[
        "null-accuracy",
        "integral-float-batch",
        "second-moment-equal-mean-squared",
        "zero-swap",
        "long-key",
        "model-with-underscores",
    ],
)
def test_accepts_edge_values(
    mutate: Callable[[dict[str, Any]], None], check: Callable[[Profile], bool]
) -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["accuracy"] = 0.7
    mutate(doc)
    assert check(parse_profile(doc))


def test_defaults_of_a_minimal_profile() -> None:
    p = parse_profile(MINIMAL)
    assert p.key == ("edgetpu", "mobilenet_v2")
    assert p.filename == "edgetpu__mobilenet_v2.json"
    # absent second moment => deterministic: E[S²] = 4.91² = 24.1081
    assert p.service_time.second_moment_ms2 == pytest.approx(24.1081, rel=1e-12)
    assert p.second_moment_ms2 == p.service_time.second_moment_ms2
    assert p.service_time.scv == 0.0
    assert p.service_time.is_deterministic
    # μ = 1000 / 4.91 = 203.66 requests/s
    assert p.service_rate_rps == pytest.approx(203.666, abs=1e-3)
    assert (p.swap_overhead_ms, p.batch_size, p.frontend_service_time_ms) == (0.0, 1, 0.0)
    assert (p.accuracy, p.device, p.contention_overhead_frac) == (None, None, 0.0)


def test_full_profile_fields() -> None:
    p = parse_profile(FULL)
    assert p.service_time == ServiceTime(
        mean_ms=3.0, second_moment_ms2=9.5, p50_ms=2.9, p95_ms=3.1, p99_ms=3.2
    )
    # Var = 9.5 − 9 = 0.5; c² = 0.5 / 9
    assert p.service_time.variance_ms2 == pytest.approx(0.5)
    assert p.service_time.scv == pytest.approx(0.5 / 9)
    assert p.device == DeviceSpec(memory_mib=16384.0, count=2)
    assert p.contention_overhead_frac == 0.05
    assert p.provenance == Provenance(source="s", method="m", measured_on="h", date="2024-02-29")


@pytest.mark.parametrize("doc", [MINIMAL, FULL], ids=["minimal", "full"])
def test_round_trip_json(doc: dict[str, Any]) -> None:
    p = parse_profile(doc)
    assert profile_to_json(p) == doc
    assert parse_profile(profile_to_json(p)) == p
    assert parse_profile(json.loads(dump_profile_json(p))) == p


_finite = st.floats(min_value=0.001, max_value=1e5, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    mean=_finite,
    extra_var=st.floats(min_value=0, max_value=1e4),
    swap=st.floats(min_value=0, max_value=1e4),
    memory=st.floats(min_value=0.5, max_value=1e5),
    accuracy=st.none() | st.floats(min_value=0, max_value=1),
    batch=st.integers(min_value=1, max_value=512),
    percentiles=st.lists(_finite, min_size=3, max_size=3).map(sorted),
)
def test_round_trip_property(
    mean: float,
    extra_var: float,
    swap: float,
    memory: float,
    accuracy: float | None,
    batch: int,
    percentiles: list[float],
) -> None:
    p = Profile(
        accelerator="nvidia-t4",
        model="resnet50",
        service_time=ServiceTime(
            mean_ms=mean,
            second_moment_ms2=mean * mean + extra_var,
            p50_ms=percentiles[0],
            p95_ms=percentiles[1],
            p99_ms=percentiles[2],
        ),
        swap_overhead_ms=swap,
        memory_mib=memory,
        accuracy=accuracy,
        batch_size=batch,
        provenance=Provenance(source="s", method="m", measured_on="h"),
    )
    assert parse_profile(profile_to_json(p)) == p
    assert parse_profile(json.loads(dump_profile_json(p))) == p


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: ServiceTime(mean_ms=-1.0), "`service_time_ms.mean`: must be > 0"),
        (lambda: ServiceTime(mean_ms=math.inf), "`service_time_ms.mean`: must be a finite number"),
        (lambda: ServiceTime(mean_ms=2.0, second_moment_ms2=3.0), "`service_time_ms.second_moment`"),
        (lambda: DeviceSpec(memory_mib=0.0), "`device.memory_mib`: must be > 0"),
        (lambda: DeviceSpec(memory_mib=10**400), "`device.memory_mib`: must be <= 10485760 (got an integer"),
        (lambda: DeviceSpec(memory_mib=8.0, count=0), "`device.count`: must be >= 1"),
        (lambda: Provenance(source=" ", method="m", measured_on="h"), "`provenance.source`"),
        (
            lambda: dataclasses.replace(parse_profile(MINIMAL), memory_mib=math.nan),
            "`memory_mib`: must be a finite number",
        ),
        (
            lambda: dataclasses.replace(parse_profile(MINIMAL), model="Bad Model"),
            "`model`: must be lowercase",
        ),
        (
            lambda: dataclasses.replace(parse_profile(MINIMAL), batch_size=1.0),  # type: ignore[arg-type]
            "`batch_size`: must be an integer",
        ),
    ],
    ids=[
        "negative-mean",
        "inf-mean",
        "second-moment-below-mean-squared",
        "zero-device-memory",
        "device-memory-beyond-float-range",
        "zero-device-count",
        "blank-source",
        "nan-memory",
        "bad-model-key",
        "float-batch",
    ],
)
def test_dataclasses_validate_when_built_in_code(build: Callable[[], object], expected: str) -> None:
    with pytest.raises(ProfileError) as info:
        build()
    assert expected in str(info.value)


def test_domain_types_are_frozen_slots() -> None:
    p = parse_profile(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.memory_mib = 1.0  # type: ignore[misc]
    for obj in (p, p.service_time, p.device, p.provenance):
        assert not hasattr(obj, "__dict__")
    assert hash(p) == hash(parse_profile(FULL))


# ------------------------------------------------------------------------------------ files


def test_load_profile_file_ok(tmp_path: Path) -> None:
    path = tmp_path / "edgetpu__mobilenet_v2.json"
    path.write_text(json.dumps(MINIMAL))
    assert load_profile_file(path) == parse_profile(MINIMAL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"schema_version": 1,\n  "model": }', "invalid JSON at line 2 column"),
        (json.dumps({**MINIMAL, "memory_mib": -5}), "`memory_mib`: must be > 0"),
        ('{"memory_mib": 1, "memory_mib": 2}', "duplicate key `memory_mib`"),
        (json.dumps({**MINIMAL, "memory_mib": float("nan")}), "`memory_mib`: must be a finite number"),
        ("[" * 100_000, "invalid JSON: nested too deeply"),
    ],
    ids=["syntax-error", "schema-error", "duplicate-key", "nan-literal", "nested-too-deeply"],
)
def test_load_profile_file_errors_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "edgetpu__mobilenet_v2.json"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert expected in message


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ProfileError, match=r"nope\.json: cannot read profile file"):
        load_profile_file(path)


# ------------------------------------------------------------------------------ the schema


def _object_schemas(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if schema.get("type") == "object":
        found.append((path or "<root>", schema))
    for name, sub in schema.get("properties", {}).items():
        found.extend(_object_schemas(sub, f"{path}.{name}" if path else name))
    return found


def test_schema_is_valid_draft_2020_12_and_closed_everywhere() -> None:
    schema = profile_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    objects = _object_schemas(schema)
    assert {p for p, _ in objects} == {"<root>", "service_time_ms", "device", "contention", "provenance"}
    for path, sub in objects:
        assert sub.get("additionalProperties") is False, path


def test_schema_bounds_match_the_code() -> None:
    """One source of truth: the schema file's maxima are the constants the dataclasses use."""
    props = profile_schema()["properties"]
    assert props["memory_mib"]["maximum"] == MAX_MEMORY_MIB
    assert props["device"]["properties"]["memory_mib"]["maximum"] == MAX_MEMORY_MIB
    for name in ("mean", "p50", "p95", "p99"):
        assert props["service_time_ms"]["properties"][name]["maximum"] == MAX_TIME_MS
    assert props["service_time_ms"]["properties"]["second_moment"]["maximum"] == MAX_TIME_MS**2
    assert props["swap_overhead_ms"]["maximum"] == MAX_TIME_MS
    assert props["frontend_service_time_ms"]["maximum"] == MAX_TIME_MS


def test_profile_schema_returns_a_copy() -> None:
    first = profile_schema()
    first["properties"].clear()
    assert profile_schema()["properties"]
