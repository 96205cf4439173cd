"""Service classes: defaults, validation, pod → class mapping, trace qos mapping."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from qosched.policies.fairness.classes import (
    CLASS_ANNOTATION,
    DEFAULT_CLASS_CONFIG,
    ClassConfig,
    ServiceClass,
    UnknownClassError,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


def test_paper_defaults() -> None:
    cfg = DEFAULT_CLASS_CONFIG
    assert cfg.names == ("prod", "batch", "free")
    assert [(c.name, c.qos_target, c.rank) for c in cfg.by_rank()] == [
        ("prod", 1.0, 0),
        ("batch", 0.9, 1),
        ("free", 0.5, 2),
    ]
    assert cfg.default_class == "batch"
    np.testing.assert_array_equal(cfg.targets(["free", "prod", "batch"]), [0.5, 1.0, 0.9])
    np.testing.assert_array_equal(cfg.ranks(["free", "prod"]), [2, 0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "Prod", "qos_target": 1.0, "rank": 0}, "lower-case"),
        ({"name": "", "qos_target": 1.0, "rank": 0}, "lower-case"),
        ({"name": "prod", "qos_target": 0.0, "rank": 0}, r"not in \(0, 1\]"),
        ({"name": "prod", "qos_target": 1.01, "rank": 0}, r"not in \(0, 1\]"),
        ({"name": "prod", "qos_target": float("nan"), "rank": 0}, r"not in \(0, 1\]"),
        ({"name": "prod", "qos_target": 1.0, "rank": -1}, "rank"),
        ({"name": "prod", "qos_target": 1.0, "rank": 1.0}, "rank"),
        ({"name": "prod", "qos_target": 1.0, "rank": 0, "price_factor": -1.0}, "price_factor"),
    ],
    ids=[
        "upper-case",
        "empty-name",
        "target-0",
        "target-above-1",
        "target-nan",
        "negative-rank",
        "float-rank",
        "negative-price",
    ],
)
def test_service_class_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ServiceClass(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": ()}, "at least one"),
        ({"classes": (ServiceClass("a", 1.0, 0), ServiceClass("a", 0.5, 1))}, "duplicate class names"),
        ({"classes": (ServiceClass("a", 1.0, 0), ServiceClass("b", 0.5, 0))}, "duplicate ranks"),
        ({"default_class": "gold"}, "default_class.*unknown class 'gold'.*prod, batch, free"),
        ({"priority_class_map": {"x": "gold"}}, r"priority_class_map\['x'\]"),
        ({"priority_class_keywords": (("x", "gold"),)}, r"priority_class_keywords\['x'\]"),
        ({"trace_qos_map": {"LS": "gold"}}, r"trace_qos_map\['ls'\]"),
    ],
    ids=[
        "no-classes",
        "dup-names",
        "dup-ranks",
        "unknown-default",
        "unknown-in-map",
        "unknown-in-keywords",
        "unknown-in-trace-map",
    ],
)
def test_class_config_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassConfig(**kwargs)


@pytest.mark.parametrize(
    ("annotations", "priority", "want"),
    [
        ({CLASS_ANNOTATION: "prod"}, None, "prod"),
        ({CLASS_ANNOTATION: " Free "}, "qosched-high", "free"),  # annotation wins, case/space ignored
        ({}, "qosched-high", "prod"),
        ({}, "qosched-low", "batch"),
        ({}, "system-cluster-critical", "prod"),
        ({}, "team-a-critical", "prod"),  # keyword token
        ({}, "nightly_batch", "batch"),
        ({}, "spot.jobs", "free"),
        ({}, "highway", "batch"),  # "high" is not a token of "highway": default class
        ({}, "something-else", "batch"),
        (None, None, "batch"),
        ({CLASS_ANNOTATION: ""}, "qosched-high", "prod"),  # empty annotation is absent
    ],
    ids=[
        "annotation",
        "annotation-wins",
        "prio-exact-high",
        "prio-exact-low",
        "prio-system",
        "prio-keyword-critical",
        "prio-keyword-batch",
        "prio-keyword-spot",
        "no-substring-match",
        "prio-unmapped",
        "nothing",
        "empty-annotation",
    ],
)
def test_resolve(annotations: dict | None, priority: str | None, want: str) -> None:
    assert DEFAULT_CLASS_CONFIG.resolve(annotations, priority).name == want


def test_unknown_annotation_lists_known_classes() -> None:
    with pytest.raises(UnknownClassError, match=r"qosched.io/class.*'gold'.*prod, batch, free"):
        DEFAULT_CLASS_CONFIG.resolve({CLASS_ANNOTATION: "gold"})
    with pytest.raises(UnknownClassError, match="known classes"):
        DEFAULT_CLASS_CONFIG.targets(["prod", "gold"])


def test_config_equality_and_hash() -> None:
    a = ClassConfig(priority_class_map={"x": "prod", "y": "free"})
    b = ClassConfig(priority_class_map={"y": "free", "x": "prod"})
    assert a == b
    assert hash(a) == hash(b)
    assert ClassConfig() != a
    assert len({a, b, ClassConfig()}) == 2


def test_keyword_order_and_disable() -> None:
    assert DEFAULT_CLASS_CONFIG.class_from_priority_class("high-batch") == "prod"  # first rule wins
    cfg = ClassConfig(priority_class_keywords=())
    assert cfg.resolve({}, "team-critical").name == "batch"


@pytest.mark.parametrize(
    ("qos", "want"),
    [
        ("LS", "prod"),
        ("Guaranteed", "prod"),
        ("Burstable", "batch"),
        ("BE", "free"),
        ("BestEffort", "free"),
        ("ls", "prod"),
    ],
    ids=["ls", "guaranteed", "burstable", "be", "besteffort", "lower-case"],
)
def test_trace_qos(qos: str, want: str) -> None:
    assert DEFAULT_CLASS_CONFIG.class_from_trace_qos(qos) == want


def test_trace_qos_unknown() -> None:
    with pytest.raises(ValueError, match=r"'Platinum'.*known"):
        DEFAULT_CLASS_CONFIG.class_from_trace_qos("Platinum")


def test_classes_from_trace_qos_vectorised() -> None:
    got = DEFAULT_CLASS_CONFIG.classes_from_trace_qos(["BE", "LS", "BE", "Burstable"])
    assert got.tolist() == ["free", "prod", "free", "batch"]
    assert DEFAULT_CLASS_CONFIG.classes_from_trace_qos([]).tolist() == []


def test_from_mapping() -> None:
    cfg = ClassConfig.from_mapping(
        {
            "classes": [
                {"name": "gold", "qos_target": 0.99, "rank": 0, "price_factor": 2.0},
                {"name": "bronze", "qos_target": 0.5, "rank": 1},
            ],
            "default_class": "bronze",
            "priority_class_map": {"vip": "gold"},
            "priority_class_keywords": [["urgent", "gold"]],
            "trace_qos_map": {"LS": "gold", "BE": "bronze"},
        }
    )
    assert cfg.resolve({}, "vip").name == "gold"
    assert cfg.resolve({}, "very-urgent").name == "gold"
    assert cfg.resolve({}, None).name == "bronze"
    assert cfg.get("gold").price_factor == 2.0
    assert cfg.class_from_trace_qos("be") == "bronze"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"tiers": []}, "unknown keys"),
        ({"classes": "prod"}, "'classes' must be a list"),
        ({"classes": [{"name": "a", "qos_target": 1.0}]}, r"classes\[0\]"),
        ({"classes": [["a", 1.0, 0]]}, r"classes\[0\] must be a mapping"),
        ({"priority_class_map": ["a"]}, "'priority_class_map' must be a mapping"),
        ({"priority_class_keywords": [["a"]]}, "priority_class_keywords"),
    ],
    ids=[
        "unknown-key",
        "classes-not-list",
        "missing-rank",
        "class-not-mapping",
        "map-not-mapping",
        "bad-keyword-rule",
    ],
)
def test_from_mapping_rejects(data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassConfig.from_mapping(data)


def test_fixture_pods_priority_and_annotation_agree() -> None:
    """Real pods captured from kube-scheduler v1.36 carry both a class annotation and a priority
    class; mapping from the priority class alone must give the annotated class."""
    path = SHARED / "fixtures" / "kube-scheduler" / "cluster.yaml"
    if not path.exists():
        pytest.skip(f"{path} not present")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    items = [i for d in docs for i in (d.get("items") or [d])]
    checked = 0
    for pod in (i for i in items if i.get("kind") == "Pod"):
        ann = pod["metadata"].get("annotations") or {}
        prio = pod["spec"].get("priorityClassName")
        if CLASS_ANNOTATION in ann and prio:
            assert DEFAULT_CLASS_CONFIG.resolve({}, prio).name == ann[CLASS_ANNOTATION]
            assert DEFAULT_CLASS_CONFIG.resolve(ann, prio).name == ann[CLASS_ANNOTATION]
            checked += 1
    assert checked >= 2


def test_alibaba_trace_qos_column_maps_completely() -> None:
    """Every row of the Alibaba GPU trace v2023 default pod list maps to a class. Expected counts
    from `cut -d, -f7 openb_pod_list_default.csv | sort | uniq -c`: LS 4647, Guaranteed 7,
    Burstable 100, BE 3398."""
    path = SHARED / "data" / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with path.open(newline="") as fh:
        qos = [row["qos"] for row in csv.DictReader(fh)]
    counts = Counter(DEFAULT_CLASS_CONFIG.classes_from_trace_qos(qos).tolist())
    assert counts == {"prod": 4647 + 7, "batch": 100, "free": 3398}
