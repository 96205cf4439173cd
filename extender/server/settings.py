"""Extender settings: one frozen, validated object, built from defaults, a file, ``QOSCHED_*`` and flags.

Order of precedence (later wins): the field defaults of :class:`ExtenderSettings` → ``--config
FILE`` (YAML/JSON mapping, keys as below, case-insensitive) → environment ``QOSCHED_<KEY>``
(values parsed as JSON when they parse, like Flask's ``from_prefixed_env``) → explicit overrides
(CLI flags, tests). Every value is checked against its field's type, and an unknown key — in the
file, the overrides, or a ``QOSCHED_*`` variable that is neither a setting nor one of
:data:`PROCESS_VARIABLES` — is a :class:`ConfigError` naming it: a misspelt
``QOSCHED_BIND_TIMEOUT`` must not silently leave the default in force.

The bind's deadline is tied to kube-scheduler's: the scheduler gives up on an extender call after
its ``httpTimeout`` (``SCHEDULER_HTTP_TIMEOUT_S``; upstream ``DefaultExtenderTimeout = 5 *
time.Second`` in ``pkg/scheduler/extender.go`` when the field is unset), so the bind must answer
before it, with ``BIND_DEADLINE_MARGIN_S`` to spare for the decision, the lock and the answer's
way back:

    bind API timeout = BIND_TIMEOUT_S, or SCHEDULER_HTTP_TIMEOUT_S − BIND_DEADLINE_MARGIN_S when unset
    required:          BIND_TIMEOUT_S + BIND_DEADLINE_MARGIN_S ≤ SCHEDULER_HTTP_TIMEOUT_S

An inconsistent pair fails at start-up with a message naming both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from qosched.extender.kube.errors import ConfigError

#: ``QOSCHED_*`` variables read by other parts of the process, not by the extender's settings:
#: gunicorn's config (address, log level), plain-gunicorn deployments' config file, the QoE
#: controller's flag default, the Ibis validation tool, the image build, and the admission webhook.
PROCESS_VARIABLES = frozenset(
    {
        "BIND",
        "LOG_LEVEL",
        "CONFIG_FILE",
        "PROMETHEUS_URL",
        "SHARED_DIR",
        "VERSION",
        "BIN",
        "WEBHOOK_DEVICE_PLUGIN",
    }
)


@dataclass(frozen=True, slots=True)
class ExtenderSettings:
    """Every setting of the extender, its default, and why (the key is the upper-cased name)."""

    #: A snapshot file to serve (static mode, no Kubernetes); else a kubeconfig, else in-cluster.
    cluster_file: str | None = None
    #: Live mode: the API server of this kubeconfig.
    kubeconfig: str | None = None
    #: Live mode: the in-cluster service account (the Deployment sets it).
    in_cluster: bool = False
    #: Placement policy by contract name (``qosched``, ``default``, ``binpack``, ``fgd``, ...).
    policy: str = "qosched"
    #: The policy's own options (its options dataclass in ``qosched.policies.registry``, as
    #: ``policy_options`` takes them), e.g. ``{"gpu_consolidation": "spread"}`` for ``qosched``
    #: (docs/placement.md, "Pack or spread"); an unknown option or value stops the start-up with
    #: one line naming it. Unset: the policy's defaults.
    policy_options: Mapping[str, Any] | None = None
    #: Extra profile directory layered over the bundled profiles; uploads persist here.
    profiles_dir: str | None = None
    #: Live mode: ConfigMap ``namespace/name`` where uploaded profiles persist (wins for writes).
    profiles_configmap: str | None = None
    #: Bearer token for ``PUT /profiles/...``: a file (re-read when it changes) ...
    upload_token_file: str | None = None
    #: ... or a Secret ``namespace/name`` (key ``token``).
    upload_token_secret: str | None = None
    #: Seconds a token read from the Secret is reused: one API read per 10 s at most.
    upload_token_ttl_s: float = 10.0
    #: Largest verb body [bytes]. kube-scheduler sends full Nodes when nodeCacheCapable is false:
    #: ~3 KiB a node, so 64 MiB covers ~20k nodes.
    max_content_length: int = 64 * 1024 * 1024
    #: Largest profile upload [bytes] (a profile is ~1 KiB).
    max_profile_bytes: int = 256 * 1024
    #: Seconds a reservation (assumed pod) stays accounted without the watch confirming it. It
    #: also bounds how long a bind whose outcome is unknown (timed out) keeps its devices: longer
    #: than any write the API server may still commit late.
    assume_ttl_s: float = 30.0
    #: kube-scheduler's extender ``httpTimeout`` [s] (its default, ``DefaultExtenderTimeout``, is 5 s).
    scheduler_http_timeout_s: float = 5.0
    #: Time kept between the bind's API deadline and the scheduler's [s]: the decision under the
    #: cache lock, encoding and the answer's way back; 1 s is ~100× their measured sum.
    bind_deadline_margin_s: float = 1.0
    #: The binder's API deadline [s]; unset: ``scheduler_http_timeout_s − bind_deadline_margin_s``.
    bind_timeout_s: float | None = None
    #: Binds allowed in flight at once (the rest answered at once with a retryable ``Error``);
    #: unset: half the gunicorn threads, so filter/prioritize always find a free thread.
    bind_max_in_flight: int | None = None
    #: gunicorn threads of the one worker (also read by ``gunicorn_conf`` from ``QOSCHED_THREADS``).
    threads: int = 8
    #: Watch: server-side timeout per watch request [s] (client-go asks 5–10 min).
    watch_timeout_s: float = 300.0
    #: Watch reconnect backoff, first and largest pause [s].
    watch_backoff_s: float = 0.5
    watch_backoff_max_s: float = 30.0
    #: ``/readyz`` 503 once a watch has been broken this long [s] (``WatchSettings.unready_after_s``).
    watch_unready_after_s: float = 60.0
    #: Service classes (``ClassConfig.from_mapping`` form); unset: the contract's classes.
    classes: Mapping[str, Any] | None = None
    #: Extra exact ``priorityClassName -> class`` entries over ``classes``.
    priority_class_map: Mapping[str, str] | None = None
    #: Latency-model thresholds (models.md §A): device memory, utilisation, front-end utilisation.
    threshold_memory_frac: float = 0.8
    threshold_utilization: float = 0.8
    threshold_frontend_utilization: float = 0.8
    #: Answer filter/prioritize/bind/preempt only to loopback callers: kube-scheduler reaches the
    #: sidecar on 127.0.0.1, and nobody else in the cluster should bind pods through port 9090.
    scheduler_verbs_loopback_only: bool = True
    #: Protocol option (docs/extender.md, "Filter keeps the best nodes only"): ``filter`` keeps
    #: only the nodes ``prioritize`` would score highest, so the scheduler config may drop
    #: ``prioritizeVerb`` (one HTTP call less per pod). Gives up kube-scheduler's own scores
    #: among qosched's feasible nodes; false: the full protocol.
    filter_keeps_best_only: bool = False
    #: Live mode: ConfigMap ``namespace/name`` of placement hints (written by ``qosched controller
    #: --online``, docs/online-learning.md): prioritize favours the hinted tier, the hinted variant
    #: goes first. Unset: no hints.
    placement_hints_configmap: str | None = None
    #: Seconds between reads of that ConfigMap (one API read per 10 s at most).
    placement_hints_ttl_s: float = 10.0
    #: Hints older than this are ignored [s]: a stopped controller must not steer placement.
    placement_hints_max_age_s: float = 600.0
    #: Live mode: ConfigMap ``namespace/name`` of INFIDA's model allocation (written by ``qosched
    #: controller --allocation``, docs/infida.md), served at ``GET /allocation``. Unset: 404 there.
    allocation_configmap: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "upload_token_ttl_s",
            "assume_ttl_s",
            "scheduler_http_timeout_s",
            "watch_timeout_s",
            "placement_hints_ttl_s",
            "placement_hints_max_age_s",
        ):
            _positive(name, getattr(self, name))
        for name in ("max_content_length", "max_profile_bytes", "threads"):
            _positive(name, getattr(self, name))
        if self.bind_deadline_margin_s < 0:
            raise ConfigError(f"BIND_DEADLINE_MARGIN_S must be >= 0, got {self.bind_deadline_margin_s!r}")
        if self.bind_max_in_flight is not None:
            _positive("bind_max_in_flight", self.bind_max_in_flight)
        self._check_bind_deadline()
        self._check_policy_options()

    def _check_policy_options(self) -> None:
        """``POLICY_OPTIONS`` must build ``POLICY``'s options (ConfigError naming the option)."""
        if not self.policy_options:
            return
        from qosched.policies.registry import policy_options

        try:
            policy_options(self.policy, self.policy_options)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"POLICY_OPTIONS: {str(err).strip(chr(34))}") from None

    def _check_bind_deadline(self) -> None:
        """``BIND_TIMEOUT_S + BIND_DEADLINE_MARGIN_S ≤ SCHEDULER_HTTP_TIMEOUT_S`` (module docstring)."""
        budget = self.scheduler_http_timeout_s - self.bind_deadline_margin_s
        if self.bind_timeout_s is None:
            if budget <= 0:
                raise ConfigError(
                    f"SCHEDULER_HTTP_TIMEOUT_S={self.scheduler_http_timeout_s:g} leaves no time for a bind "
                    f"after BIND_DEADLINE_MARGIN_S={self.bind_deadline_margin_s:g}"
                )
            return
        _positive("bind_timeout_s", self.bind_timeout_s)
        if self.bind_timeout_s > budget + 1e-9:
            raise ConfigError(
                f"BIND_TIMEOUT_S={self.bind_timeout_s:g} does not fit kube-scheduler's httpTimeout: "
                f"SCHEDULER_HTTP_TIMEOUT_S={self.scheduler_http_timeout_s:g} minus "
                f"BIND_DEADLINE_MARGIN_S={self.bind_deadline_margin_s:g} allows at most {budget:g} s "
                "(the scheduler would give up before the bind answers); lower BIND_TIMEOUT_S, leave it "
                "unset to derive it, or set SCHEDULER_HTTP_TIMEOUT_S to the scheduler config's httpTimeout"
            )

    # ------------------------------------------------------------------ derived
    @property
    def bind_api_timeout_s(self) -> float:
        """The binder's deadline [s]: ``bind_timeout_s`` or the scheduler's budget less the margin."""
        if self.bind_timeout_s is not None:
            return self.bind_timeout_s
        return self.scheduler_http_timeout_s - self.bind_deadline_margin_s

    @property
    def bind_in_flight_limit(self) -> int:
        """Binds at once: ``bind_max_in_flight`` or ``max(1, threads - 2)``.

        Two threads stay for the verbs kube-scheduler sends one at a time (its scheduling cycle
        is sequential) and for probes and scrapes; the rest may bind. It was ``threads // 2``:
        behind kube-scheduler's asynchronous binds 4 of 8 was reached in bursts whenever the
        worker was CPU-bound, and every refused bind costs its pod a backoff of 1 s or more
        (docs/reliability.md, "Binds never hold the scheduling verbs")."""
        if self.bind_max_in_flight is not None:
            return self.bind_max_in_flight
        return max(1, self.threads - 2)

    @property
    def live(self) -> bool:
        """Watch an API server (no snapshot file)."""
        return not self.cluster_file

    def as_mapping(self) -> dict[str, Any]:
        """``KEY -> value`` (upper-case keys) for Flask's config and the mapping consumers."""
        return {name.upper(): value for name, value in asdict(self).items()}


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name.upper()} must be > 0, got {value!r}")


#: Setting names (upper case) → field name, and each field's declared type.
_FIELDS = {f.name.upper(): f.name for f in fields(ExtenderSettings)}
_TYPES = get_type_hints(ExtenderSettings)

#: ``KEY -> default`` (upper-case keys): the defaults, for code and tests that read one.
DEFAULTS: dict[str, Any] = ExtenderSettings().as_mapping()


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _coerce(key: str, value: Any, where: str) -> Any:
    """``value`` as the type of setting ``key``; a ConfigError naming the key and source otherwise."""
    kind = _TYPES[_FIELDS[key]]
    text = kind.__name__ if isinstance(kind, type) else str(kind)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{where}: {key} must not be empty")
    convert = next((fn for prefix, fn in _CONVERTERS if prefix in text), str)
    try:
        return convert(value)
    except (TypeError, ValueError):
        expected = text.replace("collections.abc.", "").replace(" | None", "")
        raise ConfigError(f"{where}: {key} must be {expected}, got {value!r}") from None


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    return int(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _as_mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError
    return dict(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError


#: (substring of the field's type, converter); the first match wins, ``str`` otherwise.
_CONVERTERS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("bool", _as_bool),
    ("int", _as_int),
    ("float", _as_float),
    ("Mapping", _as_mapping),
)


def _known(key: str, where: str) -> str:
    if key not in _FIELDS:
        raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(_FIELDS))}")
    return key


def _file_values(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"config file {path}: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path}: must be a mapping of settings")
    where = f"config file {path}"
    return {str(k).upper(): _coerce(_known(str(k).upper(), where), v, where) for k, v in data.items()}


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, raw in env.items():
        if not var.startswith("QOSCHED_"):
            continue
        key = var[len("QOSCHED_") :]
        if key in PROCESS_VARIABLES:
            continue
        where = f"environment variable {var}"
        if key not in _FIELDS:
            raise ConfigError(
                f"{where}: unknown setting {key!r}; known: {', '.join(sorted(_FIELDS))} "
                f"(and the process variables {', '.join(sorted(PROCESS_VARIABLES))})"
            )
        out[key] = _coerce(key, _parse_env_value(raw), where)
    return out


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ExtenderSettings:
    """Merge defaults, a config file, ``QOSCHED_*`` variables and overrides (see module doc).

    ``overrides`` may carry ``CONFIG_FILE`` (the ``--config`` flag); ``None`` values are ignored
    (a flag not given).
    """
    env = os.environ if environ is None else environ
    given = {str(k).upper(): v for k, v in (overrides or {}).items() if v is not None}
    path = given.pop("CONFIG_FILE", None) or path or env.get("QOSCHED_CONFIG_FILE") or None
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_file_values(path))
    values.update(_env_values(env))
    for key, value in given.items():
        values[key] = _coerce(_known(key, "setting"), value, "setting")
    return ExtenderSettings(**{_FIELDS[k]: v for k, v in values.items()})


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`load_settings` as a ``KEY -> value`` mapping (for mapping consumers and old callers)."""
    return load_settings(path, environ=environ, overrides=overrides).as_mapping()


__all__ = [
    "DEFAULTS",
    "PROCESS_VARIABLES",
    "ConfigError",
    "ExtenderSettings",
    "load_config",
    "load_settings",
]
