"""Run the profiler: solo service times, solo latency under Poisson load, co-located runs.

Plan of one ``qosched profile run`` (all on one host, one spawned server process per model
instance, see :mod:`.load`):

1. **Service time** (per model, alone): ``max(min_requests, duration_s / S_warm-up)`` requests
   back to back, closed loop → mean, E[S²], p50/p95/p99: the profile's ``service_time_ms``.
2. **Solo latency** (per model, per load level ρ in ``levels``): open-loop Poisson arrivals at
   λ = ρ / E[S] → measured mean/p50/p99 latency (queueing included).
3. **Co-located** (per group, per level ρ in ``colocate_levels``): every member at
   λᵢ = ρ · servers / (n · E[Sᵢ]) — the group offers ρ of the device's capacity, shared evenly in
   work — unless the group spec gives explicit rates. ``servers`` is the number of requests the
   device can serve at once without slowing them: for ``cpu`` the cores in the affinity set
   divided by the threads per server (2 cores, 1 thread → 2); for ``cuda`` 1.

Every open-loop run has a settling time (served, not measured) and a measurement window of
``max(duration_s, min_requests / λᵢ)`` for its slowest member; co-located members keep their load
on after their own window until every member's window has completed, so nobody is measured
without its neighbours. A run whose measured requests do not complete within a grace period
(the device is overloaded) is stopped and flagged ``saturated``.

The plan is taken in ``rounds`` interleaved slices (see :func:`run_profile`), and every slice
records the CPU time other processes used on the servers' CPUs (``background_cpu_cores``) so a
run disturbed by other jobs on a shared host can be recognised in ``colocation.json``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import itertools
import math
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qosched.profiles.profiler.load import (
    ClosedLoopCommand,
    LatencyStats,
    MeasuredDone,
    OpenLoopCommand,
    Ready,
    RunResult,
    ServerSpec,
    WorkerError,
    poisson_arrivals_s,
    server_main,
)

#: Format tag of ``colocation.json``; bump when its keys change.
COLOCATION_FORMAT = "qosched-colocation-v1"
_START_MARGIN_S = 0.3  # the common start instant is this far after the command is sent
_READY_TIMEOUT_S = 300.0  # spawning + importing torch + warm-up on a busy host


class ProfilerError(RuntimeError):
    """The profiler could not run (a server failed, a bad option); the message says which."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColocatedGroup:
    """Models run at the same time, each in its own process; ``rates_rps`` None → from the level."""

    models: tuple[str, ...]
    rates_rps: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"a co-located group needs at least 2 models, got {'+'.join(self.models)!r}")
        if self.rates_rps is not None:
            if len(self.rates_rps) != len(self.models):
                raise ValueError("give a rate for every member of a co-located group, or for none")
            for m, r in zip(self.models, self.rates_rps, strict=True):
                if not (math.isfinite(r) and r > 0):
                    raise ValueError(f"rate of {m!r} must be a number > 0 rps, got {r!r}")

    @property
    def label(self) -> str:
        """``resnet18+mobilenet_v2`` (with ``:rate`` suffixes when the rates are explicit)."""
        if self.rates_rps is None:
            return "+".join(self.models)
        return "+".join(f"{m}:{r:g}" for m, r in zip(self.models, self.rates_rps, strict=True))


def parse_colocate(text: str) -> tuple[ColocatedGroup, ...]:
    """Parse ``"a+b,a+b+c"`` or ``"a:5+b:20"`` (explicit rates [rps]) into groups.

    Raises ``ValueError`` naming the offending group.
    """
    groups: list[ColocatedGroup] = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        members = [m.strip() for m in raw.split("+")]
        if any(not m for m in members):
            raise ValueError(f"co-located group {raw!r}: empty member")
        with_rate = [":" in m for m in members]
        if any(with_rate) and not all(with_rate):
            raise ValueError(f"co-located group {raw!r}: give MODEL:RATE for every member or for none")
        try:
            if all(with_rate):
                names = tuple(m.split(":", 1)[0].strip() for m in members)
                rates = tuple(float(m.split(":", 1)[1]) for m in members)
                groups.append(ColocatedGroup(names, rates))
            else:
                groups.append(ColocatedGroup(tuple(members)))
        except ValueError as exc:
            raise ValueError(f"co-located group {raw!r}: {exc}") from None
    return tuple(groups)


def auto_pairs(models: Sequence[str]) -> tuple[ColocatedGroup, ...]:
    """Every unordered pair of distinct ``models`` (the default co-location plan)."""
    return tuple(ColocatedGroup((a, b)) for a, b in itertools.combinations(dict.fromkeys(models), 2))


@dataclass(frozen=True, slots=True)
class ProfilerConfig:
    """Options of one profiler run (the CLI's options, one place, validated).

    Parameters
    ----------
    models
        Models profiled solo (a profile file each); members of ``colocate`` are profiled too.
    colocate
        Co-located groups; empty = solo only.
    levels
        Solo load levels ρ = λ·E[S] (fractions of the solo capacity), each in (0, 1).
    colocate_levels
        Load levels of the co-located runs: the fraction of the device's capacity the group
        offers (see the module docstring), each in (0, 1).
    duration_s
        Minimum measurement window of each run [s].
    min_requests
        Minimum measured requests per model and run (the window grows to reach it).
    warmup
        Discarded inferences after a server loads its model.
    settle_s
        Served but unmeasured start of each open-loop run [s] (caches, queues settle).
    threads
        ``torch.set_num_threads`` in each server; default 1 so servers share cores like requests
        share a time-sliced device.
    device
        ``cpu`` or ``cuda``.
    accelerator
        Profile key of the accelerator written into the profiles (``cpu``, ``nvidia-t4``, ...).
    cpus
        CPU affinity of the servers (None: every CPU this process may use).
    batch_size
        Inputs per request.
    seed
        Seed of the weights, the inputs and every arrival schedule.
    rounds
        Interleaved rounds the plan is split into (see :func:`run_profile`).
    accuracy
        (model, top-1 accuracy) of the trained weights the model will be served with, copied into
        its profile; latency does not depend on the weights, so the random ones time the same.
    nice
        Niceness change of the servers (``os.nice`` and, under CFS autogroup, their own session's
        autogroup nice; negative needs privileges): on a shared host a negative value keeps other
        jobs from taking the servers' CPU time.
    """

    models: tuple[str, ...]
    colocate: tuple[ColocatedGroup, ...] = ()
    levels: tuple[float, ...] = (0.2, 0.4, 0.6)
    colocate_levels: tuple[float, ...] = (0.3, 0.6)
    duration_s: float = 20.0
    min_requests: int = 200
    warmup: int = 20
    settle_s: float = 2.0
    threads: int = 1
    device: str = "cpu"
    accelerator: str = "cpu"
    cpus: tuple[int, ...] | None = None
    batch_size: int = 1
    seed: int = 0
    rounds: int = 3
    nice: int = 0
    accuracy: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        """Every option is checked here, with the CLI's option name in the message."""
        if not self.models and not self.colocate:
            raise ValueError("models: give at least one model to profile")
        self._check_levels()
        self._check_counts()
        self._check_placement()

    def _check_levels(self) -> None:
        for name, values in (("rates", self.levels), ("colocate-rates", self.colocate_levels)):
            for v in values:
                if not (0.0 < v < 1.0):
                    raise ValueError(f"{name}: load level {v!r} must be in (0, 1) (a fraction of capacity)")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"duration-s must be > 0, got {self.duration_s!r}")
        if self.settle_s < 0 or not math.isfinite(self.settle_s):
            raise ValueError(f"settle-s must be >= 0, got {self.settle_s!r}")

    def _check_counts(self) -> None:
        for name, value, low in (
            ("min-requests", self.min_requests, 1),
            ("warmup", self.warmup, 1),
            ("threads", self.threads, 1),
            ("batch-size", self.batch_size, 1),
            ("rounds", self.rounds, 1),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value!r}")

    def _check_placement(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.cpus is not None and not self.cpus:
            raise ValueError("cpus: give at least one CPU")
        for model, acc in self.accuracy:
            if not (0.0 <= acc <= 1.0):
                raise ValueError(f"accuracy of {model!r} must be a fraction in [0, 1], got {acc!r}")

    @property
    def all_models(self) -> tuple[str, ...]:
        """``models`` then every other co-located member, without repeats, in order of appearance."""
        names = list(self.models) + [m for g in self.colocate for m in g.models]
        return tuple(dict.fromkeys(names))

    @property
    def affinity(self) -> tuple[int, ...]:
        """The CPUs the servers run on."""
        if self.cpus is not None:
            return tuple(self.cpus)
        if hasattr(os, "sched_getaffinity"):
            return tuple(sorted(os.sched_getaffinity(0)))
        return tuple(range(os.cpu_count() or 1))  # pragma: no cover - non-Linux

    @property
    def servers(self) -> int:
        """Requests the device serves at once at full speed: CPU cores // threads (>= 1); 1 on CUDA."""
        if self.device == "cuda":
            return 1
        return max(1, len(self.affinity) // self.threads)


# --------------------------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Server:
    process: Any  # multiprocessing.context.SpawnProcess
    conn: Connection
    ready: Ready


class ServerPool:
    """One spawned, warmed-up server process per (model, instance), reused across runs.

    Instance ``k`` of a model is the k-th copy inside one group (``resnet18+resnet18`` needs two).
    Idle servers block on their pipe and use no CPU. Use as a context manager: every process is
    told to exit (then terminated if it does not) when the block ends.
    """

    def __init__(self, spec_for: Callable[[str], ServerSpec], cpus: Sequence[int] = ()) -> None:
        self._ctx = mp.get_context("spawn")
        self._cpus = tuple(cpus)  # the CPUs whose background load is recorded
        self._spec_for = spec_for
        self._stop = self._ctx.Event()
        self._servers: dict[tuple[str, int], _Server] = {}

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask every server to exit, wait a little, then terminate stragglers."""
        for srv in self._servers.values():
            with contextlib.suppress(OSError, ValueError):
                srv.conn.send(None)
        for srv in self._servers.values():
            srv.process.join(timeout=5.0)
            if srv.process.is_alive():  # pragma: no cover - a hung server
                srv.process.terminate()
                srv.process.join(timeout=5.0)
            srv.conn.close()
        self._servers.clear()

    def get(self, model: str, instance: int = 0) -> _Server:
        """The server of ``(model, instance)``, spawning and warming it up on first use."""
        key = (model, instance)
        if key not in self._servers:
            self.start([key])
        return self._servers[key]

    def start(self, keys: Sequence[tuple[str, int]]) -> None:
        """Spawn the servers of ``keys`` not running yet, in parallel, and wait until all are warm."""
        pending: dict[Connection, tuple[tuple[str, int], Any]] = {}
        for key in keys:
            if key in self._servers or any(k == key for k, _ in pending.values()):
                continue
            parent_conn, child_conn = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(
                target=server_main,
                args=(child_conn, self._stop, self._spec_for(key[0])),
                name=f"qosched-profile-{key[0]}-{key[1]}",
                daemon=True,
            )
            proc.start()
            child_conn.close()
            pending[parent_conn] = (key, proc)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while pending:
            ready_conns = wait(list(pending), timeout=1.0)
            for conn in ready_conns:
                assert isinstance(conn, Connection)
                key, proc = pending.pop(conn)
                msg = _recv(conn, key[0])
                if not isinstance(msg, Ready):
                    raise ProfilerError(f"server for {key[0]!r} sent {type(msg).__name__} instead of Ready")
                self._servers[key] = _Server(proc, conn, msg)
            if time.monotonic() > deadline:
                raise ProfilerError(
                    f"servers not ready after {_READY_TIMEOUT_S:.0f} s: "
                    + ", ".join(k[0] for k, _ in pending.values())
                )

    def run(
        self,
        commands: Sequence[tuple[_Server, ClosedLoopCommand | OpenLoopCommand]],
        *,
        deadline: float,
        on_tick: Callable[[], None] | None = None,
    ) -> tuple[list[RunResult], bool, float | None]:
        """Send each server its command; collect the results in input order.

        Open-loop servers report :class:`MeasuredDone` when their measurement window has been
        served; once all have (or at ``deadline``, a ``time.monotonic`` instant) the shared stop
        event ends the padding load. Returns the results, whether the deadline cut the run, and
        the background CPU load [cores] on the servers' CPUs during it (None when unknown).
        """
        self._stop.clear()
        pids = [srv.ready.pid for srv, _ in commands]
        before = _cpu_snapshot(self._cpus, pids)
        by_conn = {srv.conn: i for i, (srv, _) in enumerate(commands)}
        for srv, cmd in commands:
            srv.conn.send(cmd)
        results: list[RunResult | None] = [None] * len(commands)
        measured: set[int] = set()  # closed-loop servers count as measured when their result arrives
        cut = False
        try:
            while any(r is None for r in results):
                for conn in wait(list(by_conn), timeout=0.2):
                    assert isinstance(conn, Connection)
                    i = by_conn[conn]
                    msg = _recv(conn, commands[i][0].ready.model)
                    if isinstance(msg, MeasuredDone):
                        measured.add(i)
                    elif isinstance(msg, RunResult):
                        results[i] = msg
                        measured.add(i)
                        del by_conn[conn]
                    else:
                        raise ProfilerError(f"unexpected message {type(msg).__name__} from a server")
                if len(measured) == len(commands) and not self._stop.is_set():
                    self._stop.set()
                if time.monotonic() > deadline and not self._stop.is_set():
                    cut = True
                    self._stop.set()
                _check_alive([srv for srv, _ in commands if srv.conn in by_conn])
                if on_tick is not None:
                    on_tick()
        finally:
            self._stop.clear()
        background = background_cpu_cores(before, _cpu_snapshot(self._cpus, pids))
        return [r for r in results if r is not None], cut, background


def _check_alive(waiting: Sequence[_Server]) -> None:
    """Raise if a server we still wait for has exited with nothing left to read from it."""
    for srv in waiting:
        if not srv.process.is_alive() and not srv.conn.poll():
            raise ProfilerError(f"server for {srv.ready.model!r} died (exit code {srv.process.exitcode})")


@dataclass(frozen=True, slots=True)
class _CpuSnapshot:
    """CPU time counters [clock ticks] to tell how busy *other* processes kept the device's CPUs."""

    wall_s: float
    busy_ticks: int  # user+nice+system+irq+softirq+steal over the watched CPUs (/proc/stat)
    ours_ticks: int  # utime+stime of our server processes (/proc/<pid>/stat)


def _cpu_snapshot(cpus: Sequence[int], pids: Sequence[int]) -> _CpuSnapshot | None:
    """Read the counters; None where /proc is missing (non-Linux) or unreadable."""
    try:
        busy = 0
        wanted = {f"cpu{c}" for c in cpus}
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] in wanted:
                    # user nice system idle iowait irq softirq steal ...
                    v = [int(x) for x in parts[1:9]]
                    busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        ours = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ours += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))
        return _CpuSnapshot(time.monotonic(), busy, ours)
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux or a vanished pid
        return None


def background_cpu_cores(before: _CpuSnapshot | None, after: _CpuSnapshot | None) -> float | None:
    """Mean CPU use [cores] by processes other than our servers on the watched CPUs between snapshots.

    (Δbusy − Δours) / (ticks per second · Δwall). Other helpers' builds and tests on a shared host
    show up here; it is recorded per run so noisy runs can be recognised, never subtracted.
    """
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    other = (after.busy_ticks - before.busy_ticks) - (after.ours_ticks - before.ours_ticks)
    return max(0.0, other / hz / (after.wall_s - before.wall_s))


def _recv(conn: Connection, model: str) -> object:
    """One message from a server; its :class:`WorkerError` becomes a :class:`ProfilerError`."""
    try:
        msg = conn.recv()
    except EOFError:
        raise ProfilerError(f"server for {model!r} exited without answering") from None
    if isinstance(msg, WorkerError):
        raise ProfilerError(f"server for {msg.model!r} failed:\n{msg.trace}")
    return msg


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberMeasurement:
    """One model's measurements in one open-loop run."""

    model: str
    instance: int
    rate_rps: float
    offered_utilization: float  # λ·E[S] with the solo E[S]
    latency: LatencyStats | None  # None: nothing completed
    service: LatencyStats | None  # service times observed during the run (slowed by neighbours)
    unfinished: int
    late_starts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "instance": self.instance,
            "rate_rps": round(self.rate_rps, 6),
            "offered_utilization": round(self.offered_utilization, 6),
            "requests": 0 if self.latency is None else self.latency.count,
            "unfinished": self.unfinished,
            "queued_frac": 0.0 if self.latency is None else round(self.late_starts / self.latency.count, 6),
            "latency_ms": None if self.latency is None else self.latency.to_dict(),
            "service_ms": None if self.service is None else self.service.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class RunMeasurement:
    """One open-loop run: solo (one member) or co-located (several)."""

    run_id: str
    kind: str  # "solo" or "colocated"
    level: float | None  # load level ρ that set the rates; None for explicit rates
    window_s: float
    saturated: bool
    members: tuple[MemberMeasurement, ...]
    background_cpu_cores: float | None = None  # CPU used by other processes on the device's CPUs

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "kind": self.kind,
            "level": self.level,
            "window_s": round(self.window_s, 3),
            "saturated": self.saturated,
            "background_cpu_cores": _round_opt(self.background_cpu_cores, 4),
            "members": [m.to_dict() for m in self.members],
        }


def _round_opt(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


@dataclass(frozen=True, slots=True)
class ServiceMeasurement:
    """A model's solo closed-loop service time and what its server reported when it started."""

    model: str
    stats: LatencyStats
    ready: Ready
    background_cpu_cores: float | None = None


@dataclass(frozen=True, slots=True)
class ProfileRun:
    """Everything one profiler run measured, and the host it ran on."""

    config: ProfilerConfig
    host: dict[str, Any]
    date: str
    services: dict[str, ServiceMeasurement]
    runs: tuple[RunMeasurement, ...] = field(default=())

    def profile_dicts(self) -> dict[str, dict[str, Any]]:
        """The profile (format v1) of every model, as JSON objects."""
        return {m: build_profile_dict(self, m) for m in self.services}

    def colocation_dict(self) -> dict[str, Any]:
        """The raw measurements: the content of ``colocation.json``."""
        cfg = self.config
        return {
            "format": COLOCATION_FORMAT,
            "accelerator": cfg.accelerator,
            "device": cfg.device,
            "date": self.date,
            "host": self.host,
            "settings": {
                "threads_per_server": cfg.threads,
                "cpus": list(cfg.affinity) if cfg.device == "cpu" else None,
                "servers": cfg.servers,
                "batch_size": cfg.batch_size,
                "warmup": cfg.warmup,
                "settle_s": cfg.settle_s,
                "duration_s": cfg.duration_s,
                "min_requests": cfg.min_requests,
                "seed": cfg.seed,
                "rounds": cfg.rounds,
                "nice": cfg.nice,
                "levels": list(cfg.levels),
                "colocate_levels": list(cfg.colocate_levels),
            },
            "service_ms": {m: s.stats.to_dict() for m, s in self.services.items()},
            "service_background_cpu_cores": {
                m: _round_opt(s.background_cpu_cores, 4) for m, s in self.services.items()
            },
            "runs": [r.to_dict() for r in self.runs],
        }


def host_description(
    device: str, threads: int, cpus: Sequence[int], torch_version: str, device_name: str
) -> dict[str, Any]:
    """Host facts for provenance: platform, CPU model, CPUs, torch version, threads, device."""
    cpu_model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus": list(cpus),
        "memory_mib": _host_memory_mib(),
        "python": platform.python_version(),
        "torch": torch_version,
        "threads_per_server": threads,
        "device": device,
        "device_name": device_name,
    }


def _host_memory_mib() -> float | None:
    """MemTotal of /proc/meminfo [MiB], None when unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024.0
    return None


def build_profile_dict(run: ProfileRun, model: str) -> dict[str, Any]:
    """The v1 profile object of ``model`` (validated by the caller with ``parse_profile``)."""
    cfg = run.config
    svc = run.services[model]
    st = svc.stats
    host = run.host
    on_cpu = cfg.device == "cpu"
    method = (
        f"closed loop, {st.count} back-to-back requests of batch {cfg.batch_size} after {cfg.warmup} "
        f"discarded warm-up inferences; torch.inference_mode, {cfg.threads} thread(s) per server "
        f"process, one spawned process per model, {cfg.rounds} interleaved rounds"
        + (f", servers at nice {cfg.nice} (own autogroup)" if cfg.nice else "")
        + f"; {_describe_model(model)}, random weights"
    )
    where = (
        f"{host['platform']}; {host['cpu_model']}, CPUs {host['cpus']} of {host['cpu_count']}; "
        f"torch {host['torch']}; {cfg.threads} thread(s)" + ("" if on_cpu else f"; {host['device_name']}")
    )
    profile: dict[str, Any] = {
        "schema_version": 1,
        "accelerator": cfg.accelerator,
        "model": model,
        "service_time_ms": {
            "mean": round(st.mean_ms, 4),
            "second_moment": round(max(st.second_moment_ms2, round(st.mean_ms, 4) ** 2), 4),
            "p50": round(st.p50_ms, 4),
            "p95": round(st.p95_ms, 4),
            "p99": round(st.p99_ms, 4),
        },
        "memory_mib": round(max(svc.ready.memory_mib, 0.1), 1),
        "provenance": {
            "source": "qosched profile run",
            "method": method,
            "measured_on": where,
            "date": run.date,
        },
    }
    accuracy = dict(cfg.accuracy)
    if model in accuracy:
        profile["accuracy"] = accuracy[model]
        profile["provenance"]["source"] += "; accuracy given with --accuracy (trained weights' top-1)"
    if cfg.batch_size != 1:
        profile["batch_size"] = cfg.batch_size
    device_memory = host.get("memory_mib") if on_cpu else host.get("device_memory_mib")
    if device_memory:
        profile["device"] = {"memory_mib": round(float(device_memory), 1), "count": 1}
    return profile


def _describe_model(model: str) -> str:
    """The registry's description of ``model`` (needs torch, which a finished run has)."""
    from qosched.profiles.profiler.models import model_spec

    return model_spec(model).description


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class Progress(Protocol):
    """Progress callbacks of :func:`run_profile` (the CLI draws a rich bar on stderr)."""

    def begin(self, total_steps: int) -> None:
        """The plan has ``total_steps`` steps."""

    def step(self, description: str, expected_s: float) -> None:
        """A step starts; it should take about ``expected_s`` seconds."""

    def tick(self) -> None:
        """Called about every 0.2 s while a step runs."""

    def end(self) -> None:
        """The run is over (also after an error)."""


class NullProgress:
    """Progress that shows nothing (``--quiet``)."""

    def begin(self, total_steps: int) -> None:
        pass

    def step(self, description: str, expected_s: float) -> None:
        pass

    def tick(self) -> None:
        pass

    def end(self) -> None:
        pass


def _seed_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per (seed, run, member): SeedSequence keeps the streams apart."""
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


@dataclass(slots=True)
class _Accumulator:
    """Samples of one planned run (or one model's service time), pooled over the rounds."""

    latency_ms: list[list[float]]
    service_ms: list[list[float]]
    unfinished: list[int]
    late_starts: list[int]
    cut: bool = False
    busy_s: float = 0.0  # Σ background cores × duration, for the time-weighted mean
    wall_s: float = 0.0

    @classmethod
    def empty(cls, n_members: int) -> _Accumulator:
        return cls(
            [[] for _ in range(n_members)], [[] for _ in range(n_members)], [0] * n_members, [0] * n_members
        )

    def add(self, results: Sequence[RunResult], cut: bool, background: float | None, wall_s: float) -> None:
        for i, res in enumerate(results):
            self.latency_ms[i].extend(res.latency_ms)
            self.service_ms[i].extend(res.service_ms)
            self.unfinished[i] += res.unfinished
            self.late_starts[i] += res.late_starts
        self.cut = self.cut or cut
        if background is not None:
            self.busy_s += background * wall_s
            self.wall_s += wall_s

    @property
    def background_cpu_cores(self) -> float | None:
        return self.busy_s / self.wall_s if self.wall_s > 0 else None


@dataclass(frozen=True, slots=True)
class _PlannedRun:
    """An open-loop run of the plan; its rates are fixed after the first round's service times."""

    index: int
    models: tuple[str, ...]
    level: float | None
    explicit_rates_rps: tuple[float, ...] | None

    @property
    def kind(self) -> str:
        return "solo" if len(self.models) == 1 else "colocated"

    @property
    def run_id(self) -> str:
        tag = f"u{self.level:.2f}" if self.level is not None else "explicit"
        return f"{self.kind}-{'+'.join(self.models)}-{tag}"


def plan_runs(config: ProfilerConfig) -> list[_PlannedRun]:
    """The open-loop runs of ``config``: solo runs per model and level, then co-located groups."""
    plan: list[tuple[tuple[str, ...], float | None, tuple[float, ...] | None]] = []
    for model in config.all_models:
        plan += [((model,), level, None) for level in config.levels]
    for group in config.colocate:
        if group.rates_rps is not None:
            plan.append((group.models, None, group.rates_rps))
        else:
            plan += [(group.models, level, None) for level in config.colocate_levels]
    return [_PlannedRun(i, models, level, rates) for i, (models, level, rates) in enumerate(plan)]


def offered_rates_rps(run: _PlannedRun, mean_service_ms: Sequence[float], servers: int) -> tuple[float, ...]:
    """λ of each member: explicit, or ρ/E[S] solo, or ρ·servers/(n·E[Sᵢ]) co-located (module docstring)."""
    if run.explicit_rates_rps is not None:
        return run.explicit_rates_rps
    assert run.level is not None
    n = len(run.models)
    share = run.level * (1 if n == 1 else servers) / n
    return tuple(share * 1000.0 / s for s in mean_service_ms)


def run_profile(config: ProfilerConfig, progress: Progress | None = None) -> ProfileRun:
    """Run the whole plan of the module docstring and return the measurements.

    The plan is measured in ``config.rounds`` interleaved rounds: each round takes a slice
    (1/rounds of the requests or of the window) of every service-time measurement and every run,
    and the slices are pooled. A slow drift of the host — other jobs on a shared machine — then
    affects the solo profile and the co-located runs alike instead of biasing whichever ran
    while the host was busy. The rates are fixed after the first round's service times.

    Steps: check the model names (:func:`_check_models`), measure the rounds on one pool of
    servers (:func:`_measure_rounds`, rates fixed by :func:`_fix_rates`), then assemble the
    measurements (:func:`_profile_run`).

    Raises
    ------
    ProfilerError
        A server failed or did not start; the message carries its traceback.
    KeyError
        An unknown model name (listing the known ones).
    """
    _check_models(config)
    plan = plan_runs(config)
    measured = _measure_rounds(config, plan, progress or NullProgress())
    return _profile_run(config, plan, measured)


def _check_models(config: ProfilerConfig) -> None:
    """Unknown model names fail here, before any process starts (KeyError listing the known)."""
    from qosched.profiles.profiler.models import model_spec

    for m in config.all_models:
        model_spec(m)


def _server_spec(config: ProfilerConfig, model: str) -> ServerSpec:
    return ServerSpec(
        model=model,
        device=config.device,
        threads=config.threads,
        batch_size=config.batch_size,
        warmup=config.warmup,
        seed=config.seed,
        cpus=config.affinity if config.device == "cpu" else None,
        nice=config.nice,
    )


@dataclass(slots=True)
class _Measured:
    """What the rounds pooled: per model its service times, per planned run its requests, and
    the rates and windows fixed after the first round."""

    service_acc: dict[str, _Accumulator]
    run_acc: dict[int, _Accumulator]
    rates: dict[int, tuple[float, ...]] = field(default_factory=dict)
    windows: dict[int, float] = field(default_factory=dict)
    readies: dict[str, Ready] = field(default_factory=dict)


def _measure_rounds(config: ProfilerConfig, plan: Sequence[_PlannedRun], prog: Progress) -> _Measured:
    """Every round: a slice of each model's service-time measurement, then of each run."""
    models = config.all_models
    rounds = config.rounds
    prog.begin(rounds * (len(models) + len(plan)))
    out = _Measured(
        service_acc={m: _Accumulator.empty(1) for m in models},
        run_acc={r.index: _Accumulator.empty(len(r.models)) for r in plan},
    )
    try:
        with ServerPool(functools.partial(_server_spec, config), config.affinity) as pool:
            prog.step("starting servers", 0.0)
            keys = [(m, 0) for m in models] + [k for g in config.colocate for k in _instance_keys(g.models)]
            pool.start(keys)
            out.readies = {m: pool.get(m).ready for m in models}
            n_service = {m: _service_requests(config, out.readies[m]) for m in models}
            for rnd in range(rounds):
                for model in models:
                    n = math.ceil(n_service[model] / rounds)
                    _service_chunk(pool, model, n, rnd, rounds, out.service_acc[model], prog)
                if rnd == 0:
                    out.rates, out.windows = _fix_rates(config, plan, out.service_acc)
                for run in plan:
                    window_s = out.windows[run.index] / rounds
                    rates = out.rates[run.index]
                    _open_loop_chunk(pool, config, run, rates, window_s, rnd, out.run_acc[run.index], prog)
    finally:
        prog.end()
    return out


def _fix_rates(
    config: ProfilerConfig, plan: Sequence[_PlannedRun], service_acc: Mapping[str, _Accumulator]
) -> tuple[dict[int, tuple[float, ...]], dict[int, float]]:
    """Offered rates of each run from the first round's mean service times, and its window [s]:
    ``duration_s``, or longer so that every member sends ``min_requests``."""
    first_means = {m: float(np.mean(acc.service_ms[0])) for m, acc in service_acc.items()}
    rates: dict[int, tuple[float, ...]] = {}
    windows: dict[int, float] = {}
    for run in plan:
        rates[run.index] = offered_rates_rps(run, [first_means[m] for m in run.models], config.servers)
        windows[run.index] = max(config.duration_s, max(config.min_requests / r for r in rates[run.index]))
    return rates, windows


def _profile_run(config: ProfilerConfig, plan: Sequence[_PlannedRun], measured: _Measured) -> ProfileRun:
    """The pooled measurements as a :class:`ProfileRun`, with the host they were taken on."""
    models = config.all_models
    services: dict[str, ServiceMeasurement] = {}
    for m in models:
        acc = measured.service_acc[m]
        if not acc.service_ms[0]:
            raise ProfilerError(f"{m}: no inference completed in the service-time runs")
        services[m] = ServiceMeasurement(
            m, LatencyStats.from_samples(acc.service_ms[0]), measured.readies[m], acc.background_cpu_cores
        )
    runs = [
        _run_measurement(
            run, measured.rates[run.index], measured.windows[run.index], measured.run_acc[run.index], services
        )
        for run in plan
    ]
    first = measured.readies[models[0]]
    host = host_description(
        config.device, config.threads, config.affinity, first.torch_version, first.device_name
    )
    if config.device == "cuda":
        host["device_memory_mib"] = first.device_memory_mib
    return ProfileRun(
        config=config,
        host=host,
        date=_dt.date.today().isoformat(),
        services=services,
        runs=tuple(runs),
    )


def _instance_keys(models: Sequence[str]) -> list[tuple[str, int]]:
    """``[a, b, a]`` → ``[(a, 0), (b, 0), (a, 1)]``: a repeated model gets another server."""
    seen: dict[str, int] = {}
    keys = []
    for m in models:
        keys.append((m, seen.get(m, 0)))
        seen[m] = seen.get(m, 0) + 1
    return keys


def _service_requests(config: ProfilerConfig, ready: Ready) -> int:
    """Closed-loop requests: enough for ``duration_s`` at the warm-up speed, at least ``min_requests``."""
    warm = np.asarray(ready.warmup_service_ms[len(ready.warmup_service_ms) // 2 :], dtype=float)
    s_warm_ms = float(np.median(warm)) if warm.size else 1.0
    return max(config.min_requests, math.ceil(config.duration_s * 1000.0 / max(s_warm_ms, 1e-3)))


def _service_chunk(
    pool: ServerPool, model: str, n: int, rnd: int, rounds: int, acc: _Accumulator, prog: Progress
) -> None:
    srv = pool.get(model)
    warm = srv.ready.warmup_service_ms
    expected_s = n * (float(np.median(warm)) if warm else 1.0) / 1000.0
    prog.step(f"[{rnd + 1}/{rounds}] {model}: service time, {n} requests back to back", expected_s)
    start = time.monotonic() + _START_MARGIN_S
    cmd = ClosedLoopCommand(n_requests=n, start_at=start, max_s=max(10.0 * expected_s, 60.0))
    results, cut, background = pool.run([(srv, cmd)], deadline=start + cmd.max_s + 30.0, on_tick=prog.tick)
    acc.add(results, cut, background, time.monotonic() - start)


def _open_loop_chunk(
    pool: ServerPool,
    config: ProfilerConfig,
    run: _PlannedRun,
    rates_rps: tuple[float, ...],
    window_s: float,
    rnd: int,
    acc: _Accumulator,
    prog: Progress,
) -> None:
    n = len(run.models)
    # Co-located members keep loading the device after their own window (see module docstring).
    horizon_s = config.settle_s + window_s + (window_s if n > 1 else 0.0)
    prog.step(
        f"[{rnd + 1}/{config.rounds}] {run.run_id}: "
        + ", ".join(f"{m} {r:.2f} rps" for m, r in zip(run.models, rates_rps, strict=True)),
        config.settle_s + window_s,
    )
    start = time.monotonic() + _START_MARGIN_S
    commands = []
    for i, (key, rate) in enumerate(zip(_instance_keys(run.models), rates_rps, strict=True)):
        arrivals = poisson_arrivals_s(rate, horizon_s, _seed_rng(config.seed, run.index, rnd, i))
        cmd = OpenLoopCommand(
            arrivals_s=tuple(float(a) for a in arrivals),
            start_at=start,
            window_start_s=config.settle_s,
            window_end_s=config.settle_s + window_s,
        )
        commands.append((pool.get(*key), cmd))
    grace_s = max(30.0, 0.5 * window_s)
    results, cut, background = pool.run(
        commands, deadline=start + config.settle_s + window_s + grace_s, on_tick=prog.tick
    )
    acc.add(results, cut, background, time.monotonic() - start)


def _run_measurement(
    run: _PlannedRun,
    rates_rps: tuple[float, ...],
    window_s: float,
    acc: _Accumulator,
    services: dict[str, ServiceMeasurement],
) -> RunMeasurement:
    members = []
    for i, ((model, inst), rate) in enumerate(zip(_instance_keys(run.models), rates_rps, strict=True)):
        members.append(
            MemberMeasurement(
                model=model,
                instance=inst,
                rate_rps=rate,
                offered_utilization=rate * services[model].stats.mean_ms / 1000.0,
                latency=LatencyStats.from_samples(acc.latency_ms[i]) if acc.latency_ms[i] else None,
                service=LatencyStats.from_samples(acc.service_ms[i]) if acc.service_ms[i] else None,
                unfinished=acc.unfinished[i],
                late_starts=acc.late_starts[i],
            )
        )
    saturated = acc.cut or any(m.unfinished > 0 or m.latency is None for m in members)
    return RunMeasurement(
        run.run_id, run.kind, run.level, window_s, saturated, tuple(members), acc.background_cpu_cores
    )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def write_outputs(run: ProfileRun, out_dir: str | Path) -> list[Path]:
    """Write ``<accelerator>__<model>.json`` per model and ``colocation.json`` into ``out_dir``.

    Every profile is validated with :func:`qosched.profiles.schema.parse_profile` and written
    atomically through :func:`qosched.profiles.store.write_profile_file`.
    """
    import json

    from qosched.profiles.schema import parse_profile
    from qosched.profiles.store import write_profile_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_profile_file(parse_profile(obj), out) for obj in run.profile_dicts().values()]
    coloc = out / "colocation.json"
    coloc.write_text(json.dumps(run.colocation_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written.append(coloc)
    return written
