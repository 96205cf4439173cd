"""``qosched predict``: predicted latency of models co-located on one device (contract §3).

Example::

    qosched predict --accelerator edgetpu --colocate inception_v3:4.856,ssd_mobilenet_v2:7.149

prints one JSON object per co-located model, in input order::

    [{"model": "inception_v3", "rate_rps": 4.856, "predicted_latency_ms": 112.9, "utilization": 0.57}, ...]

- ``predicted_latency_ms`` is the mean time on the device (queueing + service); with
  ``--end-to-end`` it adds the model's front end (M/M/1 on the node CPU, the profile's
  ``frontend_service_time_ms``) and the constant network delay of the paper (10 ms).
- ``utilization`` is ρ of the queue that serves the model: the device's for shared queues
  (edge TPU, time slicing, CPU), the model's own partition under MPS/MIG/exclusive.
- JSON has no infinity: an **unbounded** latency (ρ ≥ 1) is printed as ``null`` and a note naming
  the model goes to stderr; the exit status stays 0 (the prediction succeeded: it is "unbounded").
- ``--colocate`` items may carry a third field, ``MODEL:RATE:GPU_MILLI`` (1..1000), the share of
  the GPU under ``--sharing mps``/``mig``; without it the GPU is split equally.
- The sharing mode defaults to the device's model: ``edgetpu`` for edge TPUs, ``cpu`` for CPUs
  (whatever ``--sharing`` says; a note tells when it is overridden), else ``time-slicing``.
- ``--profiles DIR`` adds the profiles in DIR to the bundled ones (DIR wins on equal keys).

Bad input (unknown accelerator or model — the message lists the known ones —, a malformed item,
a negative, NaN or absurd rate, a model listed twice) is a usage error: exit status 2.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click

from qosched.policies.latency.queueing import NETWORK_MS_DEFAULT, frontend_latency_ms
from qosched.policies.latency.sharing import (
    SHARING_MODELS,
    DeviceServices,
    ModelParams,
    resolve_sharing,
)
from qosched.policies.latency.sharing import predict as predict_latency
from qosched.policies.types import GPU_MILLI_PER_DEVICE

__all__ = ["MAX_RATE_RPS", "ColocatedModel", "parse_colocate", "predict", "predict_json"]

#: Largest request rate accepted [requests/s]: beyond any single device, so a typo (e.g. a
#: rate per hour) is caught instead of predicting "unbounded".
MAX_RATE_RPS: Final = 1_000_000.0
_SPLIT_MODES: Final = ("mps", "mig")


@dataclass(frozen=True, slots=True)
class ColocatedModel:
    """One ``MODEL:RATE[:GPU_MILLI]`` item of ``--colocate``."""

    model: str
    rate_rps: float
    gpu_milli: int | None = None


def parse_colocate(text: str) -> tuple[ColocatedModel, ...]:
    """Parse ``MODEL:RATE[:GPU_MILLI][,...]``; ValueError naming the bad item.

    Examples
    --------
    >>> parse_colocate("resnet50:10, mobilenet_v2:2.5:250")
    (ColocatedModel(model='resnet50', rate_rps=10.0, gpu_milli=None), ColocatedModel(model='mobilenet_v2', rate_rps=2.5, gpu_milli=250))
    """
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in items):
        raise ValueError(f"expected MODEL:RATE[,MODEL:RATE...], got {text!r} (empty item)")
    out: list[ColocatedModel] = []
    for item in items:
        entry = _parse_item(item)
        if any(m.model == entry.model for m in out):
            raise ValueError(f"model {entry.model!r} is listed twice; give its total rate once")
        out.append(entry)
    return tuple(out)


def _parse_item(item: str) -> ColocatedModel:
    """One ``MODEL:RATE[:GPU_MILLI]`` item; ValueError naming it."""
    fields = [f.strip() for f in item.split(":")]
    if len(fields) not in (2, 3) or not fields[0]:
        raise ValueError(f"item {item!r}: expected MODEL:RATE or MODEL:RATE:GPU_MILLI")
    model, rate_text = fields[0], fields[1]
    try:
        rate = float(rate_text)
    except ValueError:
        raise ValueError(f"item {item!r}: rate {rate_text!r} is not a number") from None
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"item {item!r}: rate must be a finite number >= 0 [requests/s] (got {rate_text})")
    if rate > MAX_RATE_RPS:
        raise ValueError(
            f"item {item!r}: rate {rate:g} rps is beyond {MAX_RATE_RPS:g} rps; is the unit right?"
        )
    milli: int | None = None
    if len(fields) == 3:
        try:
            milli = int(fields[2])
        except ValueError:
            raise ValueError(f"item {item!r}: GPU_MILLI {fields[2]!r} is not an integer") from None
        if not 1 <= milli <= GPU_MILLI_PER_DEVICE:
            raise ValueError(f"item {item!r}: GPU_MILLI must be in 1..{GPU_MILLI_PER_DEVICE} (got {milli})")
    return ColocatedModel(model, rate, milli)


def _profiles(profiles_dir: Path | None) -> Any:
    from qosched.profiles.store import bundled_profiles, load_profile_dir, merge

    bundled = bundled_profiles()
    return bundled if profiles_dir is None else merge(bundled, load_profile_dir(profiles_dir))


def predict_json(
    accelerator: str,
    colocated: tuple[ColocatedModel, ...],
    *,
    sharing: str | None = None,
    profiles: Any,
    end_to_end: bool = False,
    cores: int = 1,
    params: ModelParams | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON rows of ``qosched predict`` and the notes for stderr.

    Raises
    ------
    qosched.profiles.store.UnknownProfileError
        A model without a profile on ``accelerator`` (the message lists the known ones).
    """
    notes: list[str] = []
    mode = resolve_sharing(accelerator, sharing or "time-slicing")
    if sharing is not None and mode != sharing:
        notes.append(
            f"note: accelerator {accelerator!r} is modelled as {mode!r}; --sharing {sharing} ignored"
        )
    found = [profiles.get(accelerator, item.model) for item in colocated]
    k = len(colocated)
    if mode in _SPLIT_MODES:
        share = [
            (c.gpu_milli if c.gpu_milli is not None else GPU_MILLI_PER_DEVICE // k) / 1000 for c in colocated
        ]
        if sum(share) > 1.0 + 1e-9:
            notes.append(f"note: the GPU shares add up to {sum(share):g} > 1 (over-committed)")
    else:
        share = [1.0] * k
        if any(c.gpu_milli is not None for c in colocated):
            notes.append(f"note: GPU_MILLI only matters under mps/mig; ignored for {mode!r}")
    services = DeviceServices.build(
        [c.rate_rps for c in colocated],
        [p.service_time.mean_ms for p in found],
        second_moment_ms2=[p.service_time.second_moment_ms2 for p in found],
        swap_ms=[p.swap_overhead_ms for p in found],
        share_frac=share,
        overhead_frac=[p.contention_overhead_frac for p in found],
        cores=cores,
    )
    pred = predict_latency(mode, services, params)
    latency = pred.latency_ms.copy()
    if end_to_end:
        latency = (
            latency
            + frontend_latency_ms(
                [c.rate_rps for c in colocated], [p.frontend_service_time_ms for p in found]
            )
            + NETWORK_MS_DEFAULT
        )
    rows = []
    for i, item in enumerate(colocated):
        lat = float(latency[i])
        util = float(pred.service_utilization[i])
        if not math.isfinite(lat):
            where = "its front end or the device" if end_to_end else "the device"
            notes.append(
                f"note: {item.model}: latency unbounded ({where} at utilisation >= 1); printed as null"
            )
        rows.append(
            {
                "model": item.model,
                "rate_rps": item.rate_rps,
                "predicted_latency_ms": _rounded(lat),
                "utilization": _rounded(util),
            }
        )
    return rows, notes


def _rounded(value: float) -> float | None:
    """12 significant digits: float noise goes (``0.4681600000000001`` → ``0.46816``), the value
    stays (relative change < 5e-12); None for a non-finite value (JSON has no infinity)."""
    return float(f"{value:.12g}") if math.isfinite(value) else None


@click.command("predict")
@click.option(
    "--accelerator", required=True, metavar="KEY", help="Accelerator profile key, e.g. edgetpu, nvidia-t4."
)
@click.option(
    "--colocate",
    required=True,
    metavar="MODEL:RATE[,MODEL:RATE...]",
    help="Models sharing the device and their request rates [requests/s] (optional :GPU_MILLI for mps/mig).",
)
@click.option(
    "--sharing",
    type=click.Choice(list(SHARING_MODELS)),
    default=None,
    help="Sharing mode (default: edgetpu for edge TPUs, cpu for CPUs, else time-slicing).",
)
@click.option(
    "--profiles",
    "profiles_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory of profile files, added to the bundled ones.",
)
@click.option("--end-to-end", is_flag=True, help="Add the front end (M/M/1) and the network (10 ms).")
@click.option(
    "--cores", type=click.IntRange(1, 4096), default=1, show_default=True, help="CPU cores (cpu mode)."
)
def predict(
    accelerator: str,
    colocate: str,
    sharing: str | None,
    profiles_dir: Path | None,
    end_to_end: bool,
    cores: int,
) -> None:
    """Predict the mean latency of models co-located on one device; prints JSON."""
    try:
        colocated = parse_colocate(colocate)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--colocate") from None
    from qosched.profiles.schema import ProfileError
    from qosched.profiles.store import UnknownProfileError

    try:
        profiles = _profiles(profiles_dir)
    except ProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--profiles") from None
    try:
        rows, notes = predict_json(
            accelerator, colocated, sharing=sharing, profiles=profiles, end_to_end=end_to_end, cores=cores
        )
    except UnknownProfileError as exc:
        raise click.UsageError(str(exc)) from None
    for note in notes:
        click.echo(note, err=True)
    click.echo(json.dumps(rows, indent=2, allow_nan=False))
