"""The extender's settings: one validated frozen object; unknown keys and bad values named."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.server.app import create_app
from qosched.extender.server.settings import (
    DEFAULTS,
    PROCESS_VARIABLES,
    ConfigError,
    ExtenderSettings,
    load_settings,
)
from qosched.extender.server.state import state_of
from tests.extender.extender_support import CLUSTER_YAML


def test_defaults_are_the_fields_and_derive_the_bind_deadline() -> None:
    s = load_settings(environ={})
    assert s == ExtenderSettings()
    assert s.as_mapping() == DEFAULTS
    # kube-scheduler's DefaultExtenderTimeout (5 s) less the 1 s margin.
    assert s.scheduler_http_timeout_s == 5.0
    assert s.bind_api_timeout_s == 4.0
    assert s.bind_in_flight_limit == 6  # the 8 gunicorn threads less 2 for the verbs and probes
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.policy = "binpack"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("environ", "field", "value"),
    [
        ({"QOSCHED_BIND_TIMEOUT_S": "3"}, "bind_api_timeout_s", 3.0),
        ({"QOSCHED_SCHEDULER_HTTP_TIMEOUT_S": "10"}, "bind_api_timeout_s", 9.0),
        (
            {"QOSCHED_SCHEDULER_HTTP_TIMEOUT_S": "10", "QOSCHED_BIND_DEADLINE_MARGIN_S": "2.5"},
            "bind_api_timeout_s",
            7.5,
        ),
        ({"QOSCHED_THREADS": "16"}, "bind_in_flight_limit", 14),
        ({"QOSCHED_THREADS": "3"}, "bind_in_flight_limit", 1),
        ({"QOSCHED_THREADS": "1"}, "bind_in_flight_limit", 1),
        ({"QOSCHED_BIND_MAX_IN_FLIGHT": "2"}, "bind_in_flight_limit", 2),
        ({"QOSCHED_IN_CLUSTER": "true"}, "in_cluster", True),
        ({"QOSCHED_PRIORITY_CLASS_MAP": '{"gold": "prod"}'}, "priority_class_map", {"gold": "prod"}),
        (
            {"QOSCHED_POLICY": "binpack", "QOSCHED_LOG_LEVEL": "debug", "QOSCHED_BIND": ":1"},
            "policy",
            "binpack",
        ),
    ],
    ids=[
        "bind-explicit",
        "bind-derived",
        "margin",
        "limit-threads",
        "limit-three-threads",
        "limit-floor",
        "limit-explicit",
        "bool",
        "json-map",
        "process-vars-ignored",
    ],
)
def test_values_from_the_environment(environ: dict[str, str], field: str, value: Any) -> None:
    assert getattr(load_settings(environ=environ), field) == value


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"QOSCHED_BIND_TIMEOUT": "3"},
            "environment variable QOSCHED_BIND_TIMEOUT: unknown setting 'BIND_TIMEOUT'",
        ),
        ({"QOSCHED_BIND_TIMEOUT_S": "5"}, "BIND_TIMEOUT_S=5 does not fit kube-scheduler's httpTimeout"),
        (
            {"QOSCHED_BIND_TIMEOUT_S": "9.5", "QOSCHED_SCHEDULER_HTTP_TIMEOUT_S": "10"},
            "allows at most 9 s",
        ),
        ({"QOSCHED_SCHEDULER_HTTP_TIMEOUT_S": "1"}, "leaves no time for a bind"),
        ({"QOSCHED_THREADS": "eight"}, "QOSCHED_THREADS: THREADS must be int, got 'eight'"),
        ({"QOSCHED_THREADS": "2.5"}, "THREADS must be int"),
        ({"QOSCHED_IN_CLUSTER": "maybe"}, "IN_CLUSTER must be bool"),
        ({"QOSCHED_ASSUME_TTL_S": "0"}, "ASSUME_TTL_S must be > 0"),
        ({"QOSCHED_BIND_MAX_IN_FLIGHT": "0"}, "BIND_MAX_IN_FLIGHT must be > 0"),
        ({"QOSCHED_CLASSES": "[1, 2]"}, "CLASSES must be Mapping"),
        ({"QOSCHED_POLICY": "null"}, "POLICY must not be empty"),
    ],
    ids=[
        "misspelt-variable",
        "bind-equals-http-timeout",
        "bind-over-budget",
        "no-budget",
        "int-text",
        "int-fraction",
        "bool",
        "ttl-zero",
        "limit-zero",
        "mapping",
        "null",
    ],
)
def test_bad_environment_is_one_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=environ)


def test_config_file_keys_are_case_insensitive_and_unknown_ones_named(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("policy: binpack\nScheduler_Http_Timeout_S: 10\n")
    s = load_settings(good, environ={"QOSCHED_POLICY": "fgd"})  # the environment wins over the file
    assert (s.policy, s.bind_api_timeout_s) == ("fgd", 9.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("polcy: binpack\n")
    with pytest.raises(ConfigError, match=f"config file {bad}: unknown setting 'POLCY'"):
        load_settings(bad, environ={})


def test_overrides_win_and_unknown_overrides_are_named() -> None:
    s = load_settings(environ={"QOSCHED_POLICY": "fgd"}, overrides={"policy": "binpack", "KUBECONFIG": None})
    assert s.policy == "binpack"
    with pytest.raises(ConfigError, match="unknown setting 'NOT_A_SETTING'"):
        load_settings(environ={}, overrides={"NOT_A_SETTING": 1})


def test_process_variables_are_not_settings() -> None:
    assert not PROCESS_VARIABLES & set(DEFAULTS)


def test_create_app_refuses_an_inconsistent_bind_deadline_at_start_up() -> None:
    with pytest.raises(ConfigError, match="BIND_TIMEOUT_S=5"):
        create_app({"CLUSTER_FILE": str(CLUSTER_YAML), "BIND_TIMEOUT_S": 5}, registry=CollectorRegistry())


def test_the_app_state_is_one_typed_object(snapshot_app: Flask) -> None:
    state = state_of(snapshot_app)
    assert state.settings.policy == "qosched"
    assert state.runtime.cache.synced
    assert state.uploader.store is state.profile_store
    assert set(snapshot_app.extensions) >= {"qosched"}
    assert not any(key.startswith("qosched.") for key in snapshot_app.extensions)
