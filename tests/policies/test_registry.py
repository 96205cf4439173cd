"""The one policy table: complete in any process, declared options validated with clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from qosched.policies.latency.colocation_rule import Thresholds
from qosched.policies.placement.base import make_policy as base_make_policy
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.placement.qosched.config import QoschedConfig
from qosched.policies.preemption.base import SchedulerConfig
from qosched.policies.registry import POLICIES, make_policy, policy_options, policy_spec

#: The contract's policy names (contract §2), ``priority`` and ``qos-driven`` included.
CONTRACT_NAMES = {
    "default",
    "binpack",
    "knapsack-first-fit",
    "knapsack-best-fit",
    "knapsack-worst-fit",
    "random",
    "dot-product",
    "gpu-clustering",
    "gpu-packing",
    "best-fit",
    "fgd",
    "qosched",
    "ibis-pack",
    "ibis-spread",
    "ibis-hetero",
    "priority",
    "qos-driven",
}


@pytest.mark.parametrize(
    "first_import",
    [
        "qosched.policies.placement.base",
        "qosched.policies.registry",
        "qosched.policies.preemption",
        "qosched.policies.simulator.replay",
    ],
    ids=["base", "registry", "preemption", "replay"],
)
def test_a_fresh_process_sees_all_17_names_whatever_it_imports_first(first_import: str) -> None:
    code = (
        f"import json, {first_import}\n"
        "from qosched.policies.placement.base import make_policy, policy_names\n"
        "names = policy_names()\n"
        "print(json.dumps([names, [make_policy(n).name for n in names]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, built = json.loads(out.stdout)
    assert set(names) == CONTRACT_NAMES
    assert len(names) == 17
    assert built == names  # each builds, under its own name


def test_every_row_has_a_description_and_options_with_defaults() -> None:
    assert set(POLICIES) == CONTRACT_NAMES
    for name, spec in POLICIES.items():
        assert spec.description.strip(), name
        assert "\n" not in spec.description, name
        options = spec.options()  # every option has a default
        assert policy_options(name) == options, name


def test_base_make_policy_is_the_registry_one() -> None:
    assert type(base_make_policy("fgd")) is type(make_policy("fgd"))


def test_the_replay_asks_the_row_what_a_policy_takes() -> None:
    assert policy_spec("random").takes("seed")
    assert not policy_spec("fgd").takes("seed")
    assert policy_spec("fgd").takes("learner")
    assert policy_spec("qosched").takes("fairness")
    assert policy_spec("priority").takes("classes")
    assert policy_spec("qosched").preemptive is not None
    assert policy_spec("qos-driven").preemptive is None


def test_unknown_policy_lists_the_known_names() -> None:
    with pytest.raises(KeyError, match="unknown policy 'nope'; known: best-fit, binpack"):
        make_policy("nope")


# ----------------------------------------------------------------------------------- options from settings


def test_options_from_a_mapping_build_nested_dataclasses() -> None:
    options = policy_options(
        "qosched",
        {"config": {"frag_weight": 2.0, "interference": {"thresholds": {"utilization": 0.7}}}},
    )
    assert options.config.frag_weight == 2.0
    assert options.config.interference.thresholds == Thresholds(utilization=0.7)
    flags = policy_options("qos-driven", {"config": {"require_need": False, "retry_interval_s": None}})
    assert flags.config == SchedulerConfig(require_need=False, retry_interval_s=None)
    assert policy_options("random", {"seed": 4}).seed == 4
    assert make_policy("random", policy_options("random", {"seed": 4})).seed == 4


BAD_SETTINGS = [
    (
        "random",
        {"sed": 1},
        r"policy 'random': unknown option 'sed' of RandomOptions; known: predict_latency, model, seed",
    ),
    (
        "qosched",
        {"config": {"frag_wieght": 1}},
        r"policy 'qosched': config: unknown option 'frag_wieght' of QoschedConfig",
    ),
    ("qosched", {"config": {"frag_weight": -1.0}}, r"QoschedConfig.frag_weight must be a finite number >= 0"),
    (
        "ibis-pack",
        {"model": {"thresholds": {"utilization": 1.5}}},
        r"Thresholds.utilization must be a number in \(0, 1\]",
    ),
    ("random", {"seed": "1"}, r"RandomOptions.seed must be an int \(got '1'\)"),
    ("random", {"seed": True}, r"RandomOptions.seed must be an int \(got True\)"),
    (
        "default",
        {"predict_latency": "yes"},
        r"policy 'default': DefaultOptions.predict_latency must be True or False",
    ),
    (
        "default",
        {"weights": {"cpu": 0.0, "memory": 0.0}},
        r"ResourceWeights must be finite, >= 0 and not all 0",
    ),
    (
        "priority",
        {"config": {"retry_interval_s": 0.0}},
        r"SchedulerConfig.retry_interval_s must be > 0 or None",
    ),
    ("qos-driven", {"name": 3}, r"PreemptiveOptions.name must be a string or None \(got 3\)"),
    ("fgd", {"mix": "all"}, r"FgdOptions.mix must be a WorkloadMix or None"),
    ("ibis-hetero", {"model": 0.8}, r"AwareOptions.model must be an InterferenceModel \(got 0.8\)"),
    ("qosched", ["frag_weight"], r"policy 'qosched': options must be a mapping, got list"),
]


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    BAD_SETTINGS,
    ids=[
        "unknown-key",
        "unknown-nested-key",
        "negative-weight",
        "threshold-above-1",
        "seed-str",
        "seed-bool",
        "flag-not-bool",
        "zero-weights",
        "retry-interval-0",
        "name-not-str",
        "mix-not-a-mix",
        "model-not-a-model",
        "not-a-mapping",
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_option(name: str, settings: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        policy_options(name, settings)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("fgd", {"seed": 1}, r"policy 'fgd': unknown option 'seed' of FgdOptions"),
        ("qosched", {"config": 1.0}, r"QoschedOptions.config must be a QoschedConfig"),
        ("random", {"seed": 1.5}, r"RandomOptions.seed must be an int"),
    ],
    ids=["unknown-field", "wrong-type", "float-seed"],
)
def test_make_policy_validates_fields(name: str, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy(name, **fields)


def test_options_of_another_policy_are_refused() -> None:
    with pytest.raises(ValueError, match="policy 'fgd' takes FgdOptions, got QoschedOptions"):
        make_policy("fgd", policy_options("qosched"))


@pytest.mark.parametrize("name", sorted(CONTRACT_NAMES), ids=sorted(CONTRACT_NAMES))
def test_with_interference_reaches_the_model_the_policy_judges_with(name: str) -> None:
    model = InterferenceModel(thresholds=Thresholds(memory_frac=0.5))
    policy: Any = make_policy(name, policy_options(name).with_interference(model))
    placement = getattr(policy, "placement", policy)  # priority / qos-driven: their host choice
    impl = getattr(placement, "_impl", placement)  # WorstFitPolicy wraps its flow
    assert impl.model is model


def test_qosched_options_keep_the_config_weights_under_with_interference() -> None:
    model = InterferenceModel(thresholds=Thresholds(utilization=0.6))
    options = policy_options("qosched", {"config": {"slack_weight": 3.0}}).with_interference(model)
    assert options.config == QoschedConfig(slack_weight=3.0, interference=model)


def test_request_level_table_is_complete_in_a_fresh_process() -> None:
    """The request-level what-if's table names every policy of issues 13 and 14 without any
    package having been imported first (no registration side effects)."""
    code = (
        "from qosched.policies.requests.registry import routing_policy_names;"
        "print(','.join(sorted(routing_policy_names())))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == sorted(
        [
            "always-cloud",
            "always-edge",
            "always-end",
            "best-static",
            "greedy",
            "greedy-allocation",
            "infida",
            "online",
            "static-allocation",
        ]
    )
