"""Load generation: Poisson arrival schedules, latency statistics, and the model server process.

Each model is served by its own process (``multiprocessing`` *spawn* context, so every server
starts from a clean interpreter with its own torch thread pool). A server loads its model, runs
``warmup`` discarded inferences, reports itself ready, and then executes commands sent by the
parent over a pipe:

- :class:`ClosedLoopCommand` — ``n_requests`` inferences back to back; each request's service
  time is recorded. This is the solo service time distribution S of the profile.
- :class:`OpenLoopCommand` — an open-loop arrival schedule (seconds after a common start
  instant). The server serves requests one at a time, first come first served, like a model
  server with one worker: request *i* starts at ``max(arrival_i, completion_{i-1})`` and its
  latency is ``completion_i − arrival_i``, counted from the **scheduled** arrival even when the
  server was busy and issued it late, so queueing delay is included. Only arrivals inside the
  measurement window are recorded; the rest (the settling time before it, the padding after it)
  keep the load on so co-located servers are measured under interference for their whole window.

Clocks: arrival instants and latencies use ``time.monotonic`` — ``CLOCK_MONOTONIC`` on Linux,
one clock for all processes of the host — so the parent's start instant is the same instant for
every server (the start barrier). On CUDA every inference ends with ``torch.cuda.synchronize()``
so the completion time is when the kernels finished, not when they were queued.

Nothing here imports torch at module level: the server imports it inside the spawned process.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

#: Percentiles recorded for every latency / service-time sample, as ``p<q>`` keys.
PERCENTILES: tuple[int, ...] = (50, 95, 99)


def poisson_arrivals_s(rate_rps: float, horizon_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival instants [s] of a Poisson process of rate ``rate_rps`` on ``[0, horizon_s)``.

    Inter-arrival gaps are i.i.d. exponential with mean ``1/rate_rps``; the whole schedule is drawn
    up front from ``rng`` so a run is reproducible from its seed and the server never spends time
    drawing random numbers between requests.

    Parameters
    ----------
    rate_rps
        Arrival rate λ [requests/s], > 0 and finite.
    horizon_s
        Length of the schedule [s], > 0.
    rng
        Source of randomness (``numpy.random.default_rng(seed)``).

    Returns
    -------
    numpy.ndarray
        Sorted arrival instants [s], all in ``[0, horizon_s)``; the expected count is λ·horizon.
    """
    if not (np.isfinite(rate_rps) and rate_rps > 0):
        raise ValueError(f"rate_rps must be a finite number > 0, got {rate_rps!r}")
    if not (np.isfinite(horizon_s) and horizon_s > 0):
        raise ValueError(f"horizon_s must be a finite number > 0, got {horizon_s!r}")
    expected = rate_rps * horizon_s
    chunk = int(expected + 6.0 * np.sqrt(expected) + 16)  # enough in one draw with overwhelming odds
    times = np.cumsum(rng.exponential(1.0 / rate_rps, size=chunk))
    while times[-1] < horizon_s:  # pragma: no cover - a >6σ event; kept for correctness
        more = times[-1] + np.cumsum(rng.exponential(1.0 / rate_rps, size=chunk))
        times = np.concatenate([times, more])
    return times[times < horizon_s]


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Summary of a sample of latencies or service times [ms].

    ``second_moment_ms2`` is E[X²] [ms²] (not the variance), the quantity Pollaczek–Khinchine needs.
    Percentiles use numpy's default linear interpolation.
    """

    count: int
    mean_ms: float
    second_moment_ms2: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray | Sequence[float]) -> LatencyStats:
        """Statistics of ``samples_ms``; ``ValueError`` when it is empty or holds a non-finite value."""
        x = np.asarray(samples_ms, dtype=float)
        if x.size == 0:
            raise ValueError("no samples: the run recorded no completed request")
        if not np.all(np.isfinite(x)):
            raise ValueError("samples contain a non-finite value")
        p50, p95, p99 = np.percentile(x, PERCENTILES)
        return cls(
            count=int(x.size),
            mean_ms=float(x.mean()),
            second_moment_ms2=float(np.mean(x * x)),
            p50_ms=float(p50),
            p95_ms=float(p95),
            p99_ms=float(p99),
            max_ms=float(x.max()),
        )

    def to_dict(self) -> dict[str, float | int]:
        """JSON form: ``count``, ``mean``, ``second_moment`` [ms²], ``p50/p95/p99``, ``max`` [ms]."""
        return {
            "count": self.count,
            "mean": round(self.mean_ms, 4),
            "second_moment": round(self.second_moment_ms2, 4),
            "p50": round(self.p50_ms, 4),
            "p95": round(self.p95_ms, 4),
            "p99": round(self.p99_ms, 4),
            "max": round(self.max_ms, 4),
        }


# --------------------------------------------------------------------------- wire messages


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What one server process serves and how (sent to the process when it is spawned)."""

    model: str
    device: str = "cpu"  # "cpu" or "cuda"
    threads: int = 1  # torch.set_num_threads in the server
    batch_size: int = 1
    warmup: int = 10  # discarded inferences after loading
    seed: int = 0  # weight and input seed
    cpus: tuple[int, ...] | None = None  # CPU affinity of the server; None: inherit
    nice: int = 0  # os.nice increment (negative raises the priority; needs CAP_SYS_NICE)


@dataclass(frozen=True, slots=True)
class ClosedLoopCommand:
    """Run ``n_requests`` inferences back to back from ``start_at`` (a ``time.monotonic`` instant)."""

    n_requests: int
    start_at: float
    max_s: float = float("inf")  # stop early after this long (a guard against a too-slow host)


@dataclass(frozen=True, slots=True)
class OpenLoopCommand:
    """Serve ``arrivals_s`` [s after ``start_at``]; record those in ``[window_start_s, window_end_s)``."""

    arrivals_s: tuple[float, ...]
    start_at: float
    window_start_s: float
    window_end_s: float


@dataclass(frozen=True, slots=True)
class Ready:
    """Sent once the model is loaded and warmed up."""

    model: str
    pid: int
    warmup_service_ms: tuple[float, ...]
    memory_mib: float
    parameters: int
    torch_version: str
    threads: int
    device_name: str
    device_memory_mib: float | None  # memory of the device (CUDA) or host RAM (CPU) [MiB]


@dataclass(frozen=True, slots=True)
class MeasuredDone:
    """Sent during an open-loop run when the last request of the measurement window has completed."""

    pid: int


@dataclass(frozen=True, slots=True)
class RunResult:
    """Per-request measurements of one command (measured requests only), in arrival order.

    ``latency_ms`` is completion − scheduled arrival (open loop) or the service time (closed loop);
    ``service_ms`` is completion − start of the inference; ``unfinished`` counts measured arrivals
    not served because the run was stopped (an overloaded server).
    """

    pid: int
    latency_ms: tuple[float, ...]
    service_ms: tuple[float, ...]
    unfinished: int = 0
    late_starts: int = 0  # measured requests that began after their arrival (they queued)
    start_skew_ms: float = 0.0  # how late the server woke up for the common start instant


@dataclass(frozen=True, slots=True)
class WorkerError:
    """Sent instead of a reply when the server failed; ``trace`` is the formatted traceback."""

    model: str
    trace: str


@dataclass(slots=True)
class _Clock:
    """``time.monotonic`` with a sleep that wakes early for a stop event (kept tiny for clarity)."""

    stop: Any = field(default=None)

    def sleep_until(self, instant: float, *, interruptible: bool = False) -> bool:
        """Sleep until ``instant``; return False if ``interruptible`` and the stop event fired."""
        delay = instant - time.monotonic()
        if delay <= 0:
            return not (interruptible and self.stop is not None and self.stop.is_set())
        if interruptible and self.stop is not None:
            return not self.stop.wait(delay)
        time.sleep(delay)
        return True


def _memory_now_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process [MiB] from ``/proc/self/status``; (nan, nan) elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024.0, int(fields["VmHWM"].split()[0]) / 1024.0
    except (OSError, KeyError, ValueError):  # pragma: no cover - non-Linux hosts
        return float("nan"), float("nan")


def _renice(nice: int) -> None:
    """Change this server's priority by ``nice``, also across sessions where Linux autogroups them.

    With CFS autogroup (``/proc/sys/kernel/sched_autogroup_enabled`` = 1, the default on most
    distributions) the CPU is first shared fairly between *sessions*, and ``nice`` only orders the
    processes inside one. A server therefore starts its own session (``setsid``) and sets that
    session's autogroup nice too (``/proc/self/autogroup``), so other jobs' sessions cannot take
    half its core; the servers, all at the same nice, still share the CPU fairly among themselves.
    """
    try:
        os.nice(nice)
        autogroup = "/proc/self/autogroup"
        if os.path.exists(autogroup):
            with contextlib.suppress(OSError):
                os.setsid()
            with open(autogroup, "w", encoding="ascii") as fh:
                fh.write(str(nice))
    except PermissionError:
        raise PermissionError(
            f"nice {nice}: not permitted to raise the priority (needs root or CAP_SYS_NICE)"
        ) from None


def server_main(conn: Connection, stop_event: Any, spec: ServerSpec) -> None:
    """Entry point of one model server process (runs under the *spawn* start method).

    Pins and renices itself, loads and warms up ``spec.model`` (:func:`_load_and_warm`), sends
    :class:`Ready`, then answers commands until it receives ``None`` (:func:`_serve`). Any
    exception is sent back as :class:`WorkerError` so the parent can show it.
    """
    try:
        if spec.cpus is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, spec.cpus)
        if spec.nice:
            _renice(spec.nice)
        torch, infer, ready = _load_and_warm(spec)
        conn.send(ready)
        _serve(conn, torch, infer, _Clock(stop=stop_event))
    except BaseException:  # report everything, including KeyboardInterrupt, then exit
        with contextlib.suppress(OSError, ValueError):  # the parent may already be gone
            conn.send(WorkerError(model=spec.model, trace=traceback.format_exc()))


def _load_and_warm(spec: ServerSpec) -> tuple[Any, Callable[[], None], Ready]:
    """Build the model on its device, run the warm-up inferences; (torch, infer, Ready)."""
    from qosched.profiles.profiler import require_torch

    torch = require_torch()
    torch.set_num_threads(spec.threads)
    torch.set_num_interop_threads(1)
    from qosched.profiles.profiler.models import build_model, count_parameters, example_input

    device = torch.device(spec.device)
    on_cuda = device.type == "cuda"
    rss_before_mib, _ = _memory_now_mib()
    model = build_model(spec.model, seed=spec.seed).to(device)
    x_host = example_input(spec.model, spec.batch_size, seed=spec.seed)

    def infer() -> None:
        out = model(x_host.to(device, non_blocking=False))
        if on_cuda:
            torch.cuda.synchronize(device)
        del out

    warm: list[float] = []
    with torch.inference_mode():
        for _ in range(spec.warmup):
            t0 = time.monotonic()
            infer()
            warm.append((time.monotonic() - t0) * 1000.0)
    device_memory_mib: float | None = None
    if on_cuda:
        memory_mib = torch.cuda.max_memory_reserved(device) / 2**20
        device_name = torch.cuda.get_device_name(device)
        device_memory_mib = torch.cuda.get_device_properties(device).total_memory / 2**20
    else:
        _, peak_mib = _memory_now_mib()
        param_mib = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
        memory_mib = max(param_mib, peak_mib - rss_before_mib) if np.isfinite(peak_mib) else param_mib
        device_name = "cpu"
    ready = Ready(
        model=spec.model,
        pid=os.getpid(),
        warmup_service_ms=tuple(warm),
        memory_mib=float(memory_mib),
        parameters=count_parameters(model),
        torch_version=str(torch.__version__),
        threads=int(torch.get_num_threads()),
        device_name=device_name,
        device_memory_mib=device_memory_mib,
    )
    return torch, infer, ready


def _serve(conn: Connection, torch: Any, infer: Callable[[], None], clock: _Clock) -> None:
    """Answer closed- and open-loop commands until ``None`` arrives."""
    while True:
        cmd = conn.recv()
        if cmd is None:
            return
        with torch.inference_mode():
            if isinstance(cmd, ClosedLoopCommand):
                conn.send(_run_closed(cmd, infer, clock))
            elif isinstance(cmd, OpenLoopCommand):
                conn.send(_run_open(cmd, infer, clock, conn))
            else:
                raise TypeError(f"unknown command {type(cmd).__name__}")


def _run_closed(cmd: ClosedLoopCommand, infer: Any, clock: _Clock) -> RunResult:
    """Back-to-back inferences: service time of each, no queueing."""
    clock.sleep_until(cmd.start_at)
    skew_ms = max(0.0, (time.monotonic() - cmd.start_at) * 1000.0)
    deadline = cmd.start_at + cmd.max_s
    service: list[float] = []
    for _ in range(cmd.n_requests):
        t0 = time.monotonic()
        if t0 > deadline or (clock.stop is not None and clock.stop.is_set()):
            break
        infer()
        service.append((time.monotonic() - t0) * 1000.0)
    return RunResult(
        pid=os.getpid(),
        latency_ms=tuple(service),
        service_ms=tuple(service),
        unfinished=cmd.n_requests - len(service),
        start_skew_ms=skew_ms,
    )


def _run_open(cmd: OpenLoopCommand, infer: Any, clock: _Clock, conn: Connection) -> RunResult:
    """Open-loop FCFS serving of a fixed arrival schedule; see the module docstring."""
    clock.sleep_until(cmd.start_at)
    skew_ms = max(0.0, (time.monotonic() - cmd.start_at) * 1000.0)
    latency: list[float] = []
    service: list[float] = []
    late = 0
    arrivals = cmd.arrivals_s
    last_measured = max(
        (i for i, a in enumerate(arrivals) if cmd.window_start_s <= a < cmd.window_end_s), default=-1
    )
    done_sent = False
    if last_measured < 0:
        conn.send(MeasuredDone(pid=os.getpid()))
        done_sent = True
    measured_total = sum(1 for a in arrivals if cmd.window_start_s <= a < cmd.window_end_s)
    for i, a in enumerate(arrivals):
        scheduled = cmd.start_at + a
        # While measuring, sleep exactly; afterwards (padding) wake up at once when told to stop.
        if not clock.sleep_until(scheduled, interruptible=done_sent):
            break
        if clock.stop is not None and clock.stop.is_set():
            break  # stopped: the parent gave up waiting (overload) or the group is done
        t_start = time.monotonic()
        infer()
        t_end = time.monotonic()
        if cmd.window_start_s <= a < cmd.window_end_s:
            latency.append((t_end - scheduled) * 1000.0)
            service.append((t_end - t_start) * 1000.0)
            late += t_start - scheduled > 1e-3  # began more than 1 ms after its arrival: it queued
        if i == last_measured:
            conn.send(MeasuredDone(pid=os.getpid()))
            done_sent = True
    if not done_sent:
        conn.send(MeasuredDone(pid=os.getpid()))
    return RunResult(
        pid=os.getpid(),
        latency_ms=tuple(latency),
        service_ms=tuple(service),
        unfinished=measured_total - len(latency),
        late_starts=late,
        start_skew_ms=skew_ms,
    )
