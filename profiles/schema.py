"""Profile file format v1: typed profiles, parsing with precise errors, serialisation.

A *profile* is the solo performance of one model on one accelerator type: the numbers the
latency models of ``qosched.policies`` need (mean and second moment of the service time S, the
swap overhead O of the edge TPU, memory, front-end time; see ``shared/spec/models.md`` §A).
One JSON object per (accelerator, model), described by the JSON Schema
``profiles/schemas/profile-v1.schema.json`` (draft 2020-12, unknown keys rejected everywhere).

Validation happens in two layers:

1. the JSON Schema (structure, types, key patterns, bounds), and
2. semantic rules JSON Schema cannot express, enforced by the dataclasses' ``__post_init__`` so
   that a profile built in code is held to the same rules as one read from a file:
   finite numbers, ``second_moment >= mean²`` (a variance cannot be negative),
   ``p50 <= p95 <= p99``, ``memory_mib <= device.memory_mib``, a real calendar date.

Every failure raises :class:`ProfileError` whose message names the key path of the first
problem, e.g. ``profile field `service_time_ms.mean`: must be > 0 (got -1)`` or
``unknown field `service_time_ms.mean2```.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import jsonschema

__all__ = [
    "MAX_MEMORY_MIB",
    "MAX_TIME_MS",
    "SCHEMA_VERSION",
    "DeviceSpec",
    "Profile",
    "ProfileError",
    "Provenance",
    "ServiceTime",
    "dump_profile_json",
    "load_profile_file",
    "loads_profile",
    "parse_profile",
    "profile_filename",
    "profile_schema",
    "profile_to_json",
    "validate_profile_json",
]

SCHEMA_VERSION: Final = 1
#: Upper bound on any time [ms]: one hour per request. Larger values are typing errors (e.g. µs
#: written as ms), not measurements; the schema file carries the same bound.
MAX_TIME_MS: Final = 3_600_000.0
#: Upper bound on any memory figure [MiB]: 10 TiB, far above any accelerator built so far.
MAX_MEMORY_MIB: Final = 10 * 1024 * 1024
MAX_BATCH_SIZE: Final = 65_536
MAX_DEVICE_COUNT: Final = 1024
#: Upper bound on the fitted contention term: 10 = an 11x slowdown, beyond which the fit is broken.
MAX_OVERHEAD_FRAC: Final = 10.0

_SCHEMA_PACKAGE: Final = "qosched.profiles"
_SCHEMA_RESOURCE: Final = ("schemas", "profile-v1.schema.json")


class ProfileError(ValueError):
    """A profile (object, file or directory) is invalid; the message names the field or file."""


# --------------------------------------------------------------------------------------------
# Checks shared by the dataclasses (the semantic layer)
# --------------------------------------------------------------------------------------------


def _fail(path: str, problem: str) -> ProfileError:
    return ProfileError(f"profile field `{path}`: {problem}")


def _fmt(bound: float) -> str:
    """A bound as people write it: ``10485760`` and ``0`` rather than ``1.04858e+07`` and ``0.0``."""
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _check_number(
    path: str,
    value: object,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    integer: bool = False,
) -> None:
    """Raise :class:`ProfileError` unless ``value`` is a finite real number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        want = "an integer" if integer else "a number"
        raise _fail(path, f"must be {want} (got {type(value).__name__} {value!r})")
    if integer and not isinstance(value, int):
        raise _fail(path, f"must be an integer (got {value!r})")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range
        bound = f"must be <= {_fmt(le)}" if le is not None else "is too large"
        raise _fail(path, f"{bound} (got an integer of {len(str(value))} digits)") from None
    if not finite:
        raise _fail(path, f"must be a finite number (got {value!r})")
    if gt is not None and not value > gt:
        raise _fail(path, f"must be > {_fmt(gt)} (got {value!r})")
    if ge is not None and not value >= ge:
        raise _fail(path, f"must be >= {_fmt(ge)} (got {value!r})")
    if le is not None and not value <= le:
        raise _fail(path, f"must be <= {_fmt(le)} (got {value!r}; larger values are not plausible)")


def _check_text(path: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"must be a non-empty string (got {value!r})")


# --------------------------------------------------------------------------------------------
# Domain types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where a profile's numbers come from (free text, so a reader can check them).

    Parameters
    ----------
    source : str
        Paper, repository file or ``"qosched profile run"`` the numbers come from.
    method : str
        How they were measured or derived (an estimate must say so).
    measured_on : str
        Host and device description.
    date : str or None
        ``YYYY-MM-DD`` of the measurement or publication.
    """

    source: str
    method: str
    measured_on: str
    date: str | None = None

    def __post_init__(self) -> None:
        _check_text("provenance.source", self.source)
        _check_text("provenance.method", self.method)
        _check_text("provenance.measured_on", self.measured_on)
        if self.date is not None:
            try:
                if not isinstance(self.date, str) or len(self.date) != 10:
                    raise ValueError(self.date)
                _dt.date.fromisoformat(self.date)
            except ValueError:
                raise _fail(
                    "provenance.date", f"must be a calendar date YYYY-MM-DD (got {self.date!r})"
                ) from None


#: Default of :attr:`ServiceTime.second_moment_ms2`: "not given", replaced by mean² (deterministic).
_NOT_GIVEN: Final = math.nan


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceTime:
    """Solo service time S of one request (one batch) on the device [ms].

    Parameters
    ----------
    mean_ms : float
        E[S] [ms], > 0.
    second_moment_ms2 : float
        E[S²] [ms²], >= E[S]². When not given it becomes E[S]² (deterministic service, the M/D/1
        case of models.md §A); the Pollaczek–Khinchine wait W = λ·E[S²] / (2(1 − ρ)) uses it.
    p50_ms, p95_ms, p99_ms : float or None
        Percentiles [ms], when measured; p50 <= p95 <= p99.
    """

    mean_ms: float
    second_moment_ms2: float = _NOT_GIVEN
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None

    def __post_init__(self) -> None:
        _check_number("service_time_ms.mean", self.mean_ms, gt=0.0, le=MAX_TIME_MS)
        if isinstance(self.second_moment_ms2, float) and math.isnan(self.second_moment_ms2):
            object.__setattr__(self, "second_moment_ms2", float(self.mean_ms) ** 2)
        _check_number("service_time_ms.second_moment", self.second_moment_ms2, gt=0.0, le=MAX_TIME_MS**2)
        mean_sq = float(self.mean_ms) ** 2
        # E[S²] − E[S]² is a variance; allow float rounding of a value written as mean² (1e-9 rel).
        if self.second_moment_ms2 < mean_sq * (1.0 - 1e-9):
            raise _fail(
                "service_time_ms.second_moment",
                f"must be >= mean² = {mean_sq:.6g} ms² (got {self.second_moment_ms2!r}; a variance "
                "cannot be negative)",
            )
        previous: tuple[str, float] | None = None
        for name, value in (("p50", self.p50_ms), ("p95", self.p95_ms), ("p99", self.p99_ms)):
            if value is None:
                continue
            _check_number(f"service_time_ms.{name}", value, gt=0.0, le=MAX_TIME_MS)
            if previous is not None and value < previous[1]:
                raise _fail(
                    f"service_time_ms.{name}",
                    f"must be >= {previous[0]} = {previous[1]!r} (got {value!r}); percentiles rise",
                )
            previous = (name, value)

    @property
    def variance_ms2(self) -> float:
        """Var[S] = E[S²] − E[S]² [ms²], clipped at 0 against rounding."""
        return max(self.second_moment_ms2 - self.mean_ms**2, 0.0)

    @property
    def scv(self) -> float:
        """Squared coefficient of variation c² = Var[S] / E[S]² (0 = deterministic, 1 = exponential)."""
        return self.variance_ms2 / self.mean_ms**2

    @property
    def is_deterministic(self) -> bool:
        """True when E[S²] equals E[S]² (to rounding): the M/D/1 case."""
        return self.variance_ms2 <= 1e-9 * self.mean_ms**2

    @property
    def rate_rps(self) -> float:
        """Solo service rate μ = 1000 / E[S] [requests/s]."""
        return 1000.0 / self.mean_ms


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    """The accelerator a profile refers to.

    Parameters
    ----------
    memory_mib : float
        Memory of one device [MiB]; models.md §A's feasibility rule keeps use <= 0.8 of it.
    count : int
        Devices per node of this type (default 1).
    """

    memory_mib: float
    count: int = 1

    def __post_init__(self) -> None:
        _check_number("device.memory_mib", self.memory_mib, gt=0.0, le=MAX_MEMORY_MIB)
        _check_number("device.count", self.count, ge=1, le=MAX_DEVICE_COUNT, integer=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Solo performance of one model on one accelerator type (profile file format v1).

    Parameters
    ----------
    accelerator : str
        Accelerator key, ``^[a-z0-9]+(-[a-z0-9]+)*$`` (e.g. ``edgetpu``, ``nvidia-t4``).
    model : str
        Model key, ``^[a-z0-9]+(_[a-z0-9]+)*$`` (e.g. ``mobilenet_v2``).
    service_time : ServiceTime
        Solo service time S of one request [ms].
    swap_overhead_ms : float
        Swap overhead O [ms]: paid when another model ran last (edge TPU weight reload).
    memory_mib : float
        Device memory the model needs [MiB].
    accuracy : float or None
        Top-1 accuracy in [0, 1], None when unknown.
    batch_size : int
        Inputs per request that S refers to.
    frontend_service_time_ms : float
        Pre-processing per request on the node CPU [ms] (the front-end M/M/1 of models.md §A).
    device : DeviceSpec or None
        Memory and count of the accelerator, when known.
    contention_overhead_frac : float
        Fitted extra fractional slowdown under co-location (0 = none).
    provenance : Provenance
        Where the numbers come from.
    """

    accelerator: str
    model: str
    service_time: ServiceTime
    swap_overhead_ms: float = 0.0
    memory_mib: float
    accuracy: float | None = None
    batch_size: int = 1
    frontend_service_time_ms: float = 0.0
    device: DeviceSpec | None = None
    contention_overhead_frac: float = 0.0
    provenance: Provenance

    def __post_init__(self) -> None:
        _check_key("accelerator", self.accelerator, _ACCELERATOR_RE)
        _check_key("model", self.model, _MODEL_RE)
        if not isinstance(self.service_time, ServiceTime):
            raise _fail("service_time_ms", f"must be a ServiceTime (got {type(self.service_time).__name__})")
        _check_number("swap_overhead_ms", self.swap_overhead_ms, ge=0.0, le=MAX_TIME_MS)
        _check_number("memory_mib", self.memory_mib, gt=0.0, le=MAX_MEMORY_MIB)
        if self.accuracy is not None:
            _check_number("accuracy", self.accuracy, ge=0.0, le=1.0)
        _check_number("batch_size", self.batch_size, ge=1, le=MAX_BATCH_SIZE, integer=True)
        _check_number("frontend_service_time_ms", self.frontend_service_time_ms, ge=0.0, le=MAX_TIME_MS)
        if self.device is not None:
            if not isinstance(self.device, DeviceSpec):
                raise _fail("device", f"must be a DeviceSpec (got {type(self.device).__name__})")
            if self.memory_mib > self.device.memory_mib:
                raise _fail(
                    "memory_mib",
                    f"{self.memory_mib!r} MiB exceeds the device's memory "
                    f"(device.memory_mib = {self.device.memory_mib!r}); the model could never be placed",
                )
        _check_number("contention.overhead_frac", self.contention_overhead_frac, ge=0.0, le=MAX_OVERHEAD_FRAC)
        if not isinstance(self.provenance, Provenance):
            raise _fail("provenance", f"must be a Provenance (got {type(self.provenance).__name__})")

    @property
    def key(self) -> tuple[str, str]:
        """``(accelerator, model)``: the profile's identity in a :class:`~.store.ProfileSet`."""
        return (self.accelerator, self.model)

    @property
    def filename(self) -> str:
        """``<accelerator>__<model>.json``, the file name of this profile in a profile directory."""
        return profile_filename(self.accelerator, self.model)

    @property
    def mean_service_ms(self) -> float:
        """E[S] [ms] (shortcut for ``service_time.mean_ms``)."""
        return self.service_time.mean_ms

    @property
    def second_moment_ms2(self) -> float:
        """E[S²] [ms²] (shortcut for ``service_time.second_moment_ms2``)."""
        return self.service_time.second_moment_ms2

    @property
    def service_rate_rps(self) -> float:
        """Solo service rate μ = 1000 / E[S] [requests/s]."""
        return self.service_time.rate_rps


# --------------------------------------------------------------------------------------------
# Keys and file names
# --------------------------------------------------------------------------------------------

_ACCELERATOR_RE: Final = r"^[a-z0-9]+(-[a-z0-9]+)*$"
_MODEL_RE: Final = r"^[a-z0-9]+(_[a-z0-9]+)*$"
_MAX_KEY_LEN: Final = 63


def _check_key(path: str, value: object, pattern: str) -> None:
    if not isinstance(value, str):
        raise _fail(path, f"must be a string (got {type(value).__name__} {value!r})")
    if len(value) > _MAX_KEY_LEN or re.fullmatch(pattern, value) is None:
        kind = "hyphens" if path == "accelerator" else "underscores"
        raise _fail(
            path,
            f"must be lowercase letters/digits joined by single {kind}, at most {_MAX_KEY_LEN} "
            f"characters, pattern {pattern} (got {value!r})",
        )


def profile_filename(accelerator: str, model: str) -> str:
    """File name of a profile in a profile directory: ``<accelerator>__<model>.json``."""
    return f"{accelerator}__{model}.json"


# --------------------------------------------------------------------------------------------
# JSON Schema layer
# --------------------------------------------------------------------------------------------


@functools.cache
def _schema_text() -> str:
    resource = resources.files(_SCHEMA_PACKAGE)
    for part in _SCHEMA_RESOURCE:
        resource = resource.joinpath(part)
    return resource.read_text(encoding="utf-8")


def profile_schema() -> dict[str, Any]:
    """The JSON Schema of profile format v1 (a fresh copy; callers may modify it)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    """The schema validator, built once (the schema file itself is checked the first time)."""
    schema = profile_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _dotted(path: Iterator[Any] | tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in path)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _subschema(path: tuple[Any, ...]) -> Mapping[str, Any]:
    schema: Mapping[str, Any] = _validator().schema
    for part in path:
        schema = schema.get("properties", {}).get(part, {})
    return schema


def _order_key(field_path: tuple[str, ...]) -> tuple[int, ...]:
    """Sort errors in the schema's field order, so 'the first problem' is well defined."""
    key: list[int] = []
    schema: Mapping[str, Any] = _validator().schema
    for part in field_path:
        names = list(schema.get("properties", {}))
        key.append(names.index(part) if part in names else len(names))
        schema = schema.get("properties", {}).get(part, {})
    return tuple(key)


_PATTERN_HINTS: Final = {
    "accelerator": ": lowercase letters/digits joined by single hyphens, e.g. nvidia-t4",
    "model": ": lowercase letters/digits joined by single underscores, e.g. mobilenet_v2",
    "provenance.date": ": YYYY-MM-DD",
}


def _show(value: object, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, so a huge value cannot flood an error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _describe(error: jsonschema.ValidationError) -> tuple[tuple[str, ...], str]:
    """(field path, message) for one jsonschema error, phrased for people."""
    parent = tuple(str(p) for p in error.absolute_path)
    instance = error.instance
    value = error.validator_value
    where = _dotted(parent)
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        allowed = list(_subschema(parent).get("properties", {}))
        extra = sorted(k for k in instance if k not in allowed)
        field = (*parent, str(extra[0]))
        return field, f"unknown field `{_dotted(field)}` (allowed here: {', '.join(allowed)})"
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = [k for k in value if k not in instance]
        field = (*parent, str(missing[0]))
        return field, f"missing required field `{_dotted(field)}`"
    label = f"profile field `{where}`" if where else "profile"
    problems = {
        "type": lambda: (
            f"must be of type {' or '.join(value) if isinstance(value, list) else value} "
            f"(got {_json_type(instance)} {_show(instance)})"
        ),
        "const": lambda: f"must be {value!r} (got {_show(instance)})",
        "exclusiveMinimum": lambda: f"must be > {value} (got {_show(instance)})",
        "minimum": lambda: f"must be >= {value} (got {_show(instance)})",
        "maximum": lambda: f"must be <= {value} (got {_show(instance)}; larger values are not plausible)",
        "minLength": lambda: f"must not be empty (got {_show(instance)})",
        "maxLength": lambda: f"must be at most {value} characters (got {len(instance)})",
        "pattern": lambda: f"must match {value}{_PATTERN_HINTS.get(where, '')} (got {_show(instance)})",
    }
    text = problems[error.validator]() if error.validator in problems else error.message
    return parent, f"{label}: {text}"


def _non_finite(obj: object, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], float] | None:
    """First NaN/±inf in a decoded JSON document (Python's json accepts NaN and Infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path, obj
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            found = _non_finite(v, (*path, str(k)))
            if found is not None:
                return found
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found = _non_finite(v, (*path, str(i)))
            if found is not None:
                return found
    return None


def validate_profile_json(obj: object) -> None:
    """Check a decoded profile document against the JSON Schema; raise on the first problem.

    Raises
    ------
    ProfileError
        Naming the key path of the first problem in the schema's field order.
    """
    if not isinstance(obj, Mapping):
        raise ProfileError(f"profile: must be a JSON object (got {_json_type(obj)})")
    bad = _non_finite(obj)
    if bad is not None:
        raise _fail(_dotted(bad[0]), f"must be a finite number (got {bad[1]!r})")
    ranked = []
    for error in _validator().iter_errors(obj):
        field, message = _describe(error)
        # Same field, several errors (e.g. "1" is both not an integer and not 1): the type error
        # explains the others, so it comes first.
        ranked.append((_order_key(field), error.validator != "type", message))
    if ranked:
        raise ProfileError(min(ranked)[2])


# --------------------------------------------------------------------------------------------
# Parse / serialise
# --------------------------------------------------------------------------------------------


def parse_profile(obj: Mapping[str, Any]) -> Profile:
    """Validate a decoded profile document (format v1) and build a :class:`Profile`.

    Parameters
    ----------
    obj : Mapping
        The JSON object, e.g. ``json.load(f)`` of a profile file or an uploaded body.

    Returns
    -------
    Profile

    Raises
    ------
    ProfileError
        When the document breaks the schema or a semantic rule; the message names the key path
        of the first problem (``profile field `service_time_ms.mean`: must be > 0 (got -1)``,
        ``unknown field `service_time_ms.mean2` ...``).
    """
    validate_profile_json(obj)
    st = obj["service_time_ms"]
    service_time = ServiceTime(
        mean_ms=float(st["mean"]),
        second_moment_ms2=float(st["second_moment"]) if "second_moment" in st else _NOT_GIVEN,
        p50_ms=_opt_float(st.get("p50")),
        p95_ms=_opt_float(st.get("p95")),
        p99_ms=_opt_float(st.get("p99")),
    )
    dev = obj.get("device")
    device = (
        None
        if dev is None
        else DeviceSpec(memory_mib=float(dev["memory_mib"]), count=int(dev.get("count", 1)))
    )
    prov = obj["provenance"]
    provenance = Provenance(
        source=prov["source"], method=prov["method"], measured_on=prov["measured_on"], date=prov.get("date")
    )
    return Profile(
        accelerator=obj["accelerator"],
        model=obj["model"],
        service_time=service_time,
        swap_overhead_ms=float(obj.get("swap_overhead_ms", 0.0)),
        memory_mib=float(obj["memory_mib"]),
        accuracy=_opt_float(obj.get("accuracy")),
        batch_size=int(obj.get("batch_size", 1)),
        frontend_service_time_ms=float(obj.get("frontend_service_time_ms", 0.0)),
        device=device,
        contention_overhead_frac=float(obj.get("contention", {}).get("overhead_frac", 0.0)),
        provenance=provenance,
    )


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _num(value: float) -> int | float:
    """Write whole numbers as JSON integers (``100`` rather than ``100.0``)."""
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def profile_to_json(profile: Profile) -> dict[str, Any]:
    """Serialise a profile to its canonical JSON object (format v1).

    Optional fields at their defaults are left out (``second_moment`` when it equals mean²,
    ``swap_overhead_ms`` 0, ``accuracy`` None, ``batch_size`` 1, ...), so
    ``parse_profile(profile_to_json(p)) == p`` always holds and a canonical file round-trips
    byte for byte through :func:`dump_profile_json`.
    """
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "accelerator": profile.accelerator,
        "model": profile.model,
        "service_time_ms": _service_time_json(profile.service_time),
    }
    if profile.swap_overhead_ms != 0.0:
        out["swap_overhead_ms"] = _num(profile.swap_overhead_ms)
    out["memory_mib"] = _num(profile.memory_mib)
    if profile.accuracy is not None:
        out["accuracy"] = _num(profile.accuracy)
    if profile.batch_size != 1:
        out["batch_size"] = profile.batch_size
    if profile.frontend_service_time_ms != 0.0:
        out["frontend_service_time_ms"] = _num(profile.frontend_service_time_ms)
    if profile.device is not None:
        out["device"] = {"memory_mib": _num(profile.device.memory_mib), "count": profile.device.count}
    if profile.contention_overhead_frac != 0.0:
        out["contention"] = {"overhead_frac": _num(profile.contention_overhead_frac)}
    prov: dict[str, Any] = {
        "source": profile.provenance.source,
        "method": profile.provenance.method,
        "measured_on": profile.provenance.measured_on,
    }
    if profile.provenance.date is not None:
        prov["date"] = profile.provenance.date
    out["provenance"] = prov
    return out


def _service_time_json(st: ServiceTime) -> dict[str, Any]:
    """The ``service_time_ms`` object: the mean, and the moments and percentiles that are set."""
    service: dict[str, Any] = {"mean": _num(st.mean_ms)}
    if st.second_moment_ms2 != st.mean_ms**2:
        service["second_moment"] = _num(st.second_moment_ms2)
    for name, value in (("p50", st.p50_ms), ("p95", st.p95_ms), ("p99", st.p99_ms)):
        if value is not None:
            service[name] = _num(value)
    return service


def dump_profile_json(profile: Profile) -> str:
    """The canonical text of a profile file: 2-space indented JSON, trailing newline."""
    return json.dumps(profile_to_json(profile), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ProfileError(f"duplicate key `{key}` in a JSON object")
        seen[key] = value
    return seen


def loads_profile(text: str | bytes, *, source: str = "profile") -> Profile:
    """Parse profile JSON text; errors are prefixed with ``source`` (a file name or 'upload')."""
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ProfileError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ProfileError(f"{source}: invalid JSON: nested too deeply") from None
    except ProfileError as exc:
        raise ProfileError(f"{source}: {exc}") from None
    try:
        return parse_profile(obj)
    except ProfileError as exc:
        raise ProfileError(f"{source}: {exc}") from None


def load_profile_file(path: str | Path) -> Profile:
    """Read and validate one profile file; every error message starts with the file's path."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile file: {exc.strerror or exc}") from None
    return loads_profile(text, source=str(path))
