"""Extender settings: one documented default per key, then a config file, then ``QOSCHED_*`` env.

Order of precedence (later wins): ``DEFAULTS`` → ``--config FILE`` (YAML/JSON mapping, keys as
below, case-insensitive) → environment ``QOSCHED_<KEY>`` (values parsed as JSON when they parse,
like Flask's ``from_prefixed_env``) → explicit overrides (CLI flags, tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    # Where the cluster comes from: a snapshot file (static), else a kubeconfig, else in-cluster.
    "CLUSTER_FILE": None,
    "KUBECONFIG": None,
    "IN_CLUSTER": False,
    # Placement policy by contract name (`qosched`, `default`, `binpack`, `fgd`, ...).
    "POLICY": "qosched",
    # Extra profile directory layered over the bundled profiles; uploads persist here.
    "PROFILES_DIR": None,
    # Live mode: ConfigMap (namespace/name) where uploaded profiles persist instead of a directory.
    "PROFILES_CONFIGMAP": None,
    # Bearer token for `PUT /profiles/...`: a file, or a Secret `namespace/name` (key `token`).
    "UPLOAD_TOKEN_FILE": None,
    "UPLOAD_TOKEN_SECRET": None,
    # Seconds a token read from UPLOAD_TOKEN_SECRET is reused before the Secret is read again.
    "UPLOAD_TOKEN_TTL_S": 10.0,
    # Largest request body of a scheduler verb. kube-scheduler sends full Node objects when
    # nodeCacheCapable is false: ~3 KiB a node, so 64 MiB covers ~20k nodes.
    "MAX_CONTENT_LENGTH": 64 * 1024 * 1024,
    # Largest profile upload (a profile is ~1 KiB).
    "MAX_PROFILE_BYTES": 256 * 1024,
    # Seconds an assumed (bound, not yet watched) pod stays accounted without confirmation.
    "ASSUME_TTL_S": 30.0,
    # API call timeout of the binder [s]; kube-scheduler's extender httpTimeout should exceed it.
    "BIND_TIMEOUT_S": 5.0,
    # Watch: server-side timeout per watch request and reconnect backoff bounds [s].
    "WATCH_TIMEOUT_S": 300,
    "WATCH_BACKOFF_S": 0.5,
    "WATCH_BACKOFF_MAX_S": 30.0,
    # Service classes (name -> QoS target) and priorityClassName -> class map.
    "CLASSES": None,
    "PRIORITY_CLASS_MAP": None,
    # Latency-model thresholds (models.md §A): device memory, utilisation, front-end utilisation.
    "THRESHOLD_MEMORY_FRAC": 0.8,
    "THRESHOLD_UTILIZATION": 0.8,
    "THRESHOLD_FRONTEND_UTILIZATION": 0.8,
    # Answer filter/prioritize/bind/preempt only to loopback callers. kube-scheduler reaches the
    # sidecar on 127.0.0.1; the metrics/upload port (0.0.0.0:9090 in the Deployment) is served by
    # the same app, and nobody else in the cluster should be able to bind pods through it.
    "SCHEDULER_VERBS_LOOPBACK_ONLY": True,
}


class ConfigError(ValueError):
    """A configuration file or variable is invalid (the message names it)."""


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge defaults, a config file, ``QOSCHED_*`` variables and overrides (see module doc)."""
    config = dict(DEFAULTS)
    env = os.environ if environ is None else environ
    if path is None and env.get("QOSCHED_CONFIG_FILE"):
        path = env["QOSCHED_CONFIG_FILE"]  # plain-gunicorn deployments pass the file this way
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"config file {path}: {err}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path}: must be a mapping of settings")
        for key, value in data.items():
            _set(config, str(key).upper(), value, f"config file {path}")
    for key, raw in env.items():
        if key.startswith("QOSCHED_"):
            name = key[len("QOSCHED_") :]
            if name in DEFAULTS:
                config[name] = _parse_env_value(raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            config[key.upper()] = value
    return config


def _set(config: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key not in DEFAULTS:
        raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(DEFAULTS))}")
    config[key] = value
