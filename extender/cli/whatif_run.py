"""Running the placement what-if: replays, progress, outputs, and what a user must be told.

:func:`run_whatif` replays a workload through each policy and writes ``<policy>.csv``,
``summary.json``, the plots and ``report.html`` (:mod:`qosched.extender.cli.whatif_report`).

* **Progress** (:class:`RunProgress`, stderr, off with ``--quiet``): "policy k of N", a bar of
  the run's work and an ETA. Work within a policy is its simulated time over the horizon (each
  arrival and each retry round advances it), not its arrivals: queue/preemption policies keep
  retrying after the last arrival, and an arrival count sits at 93 % while they do. The run's
  fraction is ``(k − 1 + f) / N`` and ETA = elapsed × (1 − fraction) / fraction. On a terminal a
  rich bar; otherwise one line at least every :data:`LINE_EVERY_S` seconds (a timer thread, so a
  long retry round still prints).
* **Ctrl-C** keeps the policies already finished: ``summary.json`` (with
  ``"run": {"interrupted": true, ...}``), their CSVs and the report are written, the report and
  the terminal say the run was cut short, and :class:`RunInterrupted` is raised for the exit code.
* **A reused ``--out``**: outputs of an earlier run that this run would not overwrite (CSVs of
  policies not in this run, plots it does not draw) are removed, and the removal is said.
* **Warnings** (:func:`input_warnings`): pods whose model no profile covers on the cluster's
  accelerators (they stay pending; the CSV's ``reason`` column says why), and an output larger
  than :data:`LARGE_OUTPUT_BYTES`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

__all__ = [
    "LARGE_OUTPUT_BYTES",
    "LINE_EVERY_S",
    "RunInterrupted",
    "RunProgress",
    "clear_stale_outputs",
    "ignored_objects",
    "input_warnings",
    "jsonable",
    "run_whatif",
    "snapshot_warning",
]

#: Without a terminal, a progress line at least this often [s].
LINE_EVERY_S = 10.0
#: Warn when the CSVs are expected to exceed this size [bytes].
LARGE_OUTPUT_BYTES = 200 * 1024 * 1024
#: Measured size of one ``<policy>.csv`` row (openb trace, 17 policies: 97 bytes) [bytes].
CSV_ROW_BYTES = 100
#: Files a what-if run writes besides ``<policy>.csv``.
OUTPUT_FILES: tuple[str, ...] = (
    "summary.json",
    "report.html",
    "allocation_curve.png",
    "services_slo.png",
    "qos_by_class.png",
    "fairness_by_class.png",
    "latency_model.png",
)


class RunInterrupted(Exception):
    """Ctrl-C during the replays; the finished policies were written (``finished`` of ``requested``)."""

    def __init__(self, finished: int, requested: int, out_dir: Path, summary: dict[str, Any]) -> None:
        super().__init__(
            f"run cut short (Ctrl-C): {finished} of {requested} policies finished; "
            f"{out_dir / 'summary.json'} and report.html hold those"
        )
        self.finished = finished
        self.requested = requested
        self.summary = summary


# ------------------------------------------------------------------------------------ progress


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass
class RunProgress:
    """Progress of a what-if run over ``total`` policies (see the module docstring).

    ``stream``: where lines go (stderr); ``tty``: draw a rich bar (default: ``stream.isatty()``);
    ``now``: the clock (monotonic seconds), injectable for tests.
    """

    total: int
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    tty: bool | None = None
    every_s: float = LINE_EVERY_S
    now: Callable[[], float] = time.monotonic
    index: int = 0
    name: str = ""
    fraction: float = 0.0
    _started: float = 0.0
    _bar: Any = None
    _task: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> RunProgress:
        self._started = self.now()
        if self.tty if self.tty is not None else self.stream.isatty():
            self._start_bar()
        else:
            self._thread = threading.Thread(target=self._ticker, name="whatif-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.stop()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=Console(file=self.stream),
        )
        self._task = self._bar.add_task("", total=self.total, eta="?")
        self._bar.start()

    def done_fraction(self) -> float:
        """Fraction of the run's work done: ``(k − 1 + f) / N``."""
        return (max(self.index - 1, 0) + self.fraction) / max(self.total, 1)

    def eta_s(self) -> float:
        """Seconds left, extrapolated from the work done so far."""
        done = self.done_fraction()
        return (self.now() - self._started) * (1 - done) / done if done > 0 else math.inf

    def line(self) -> str:
        """One progress line: ``whatif: policy 3 of 17 (qos-driven) 42 % of its work, run 14 %, 0:31 elapsed, ETA 3:10``."""
        return (
            f"whatif: policy {self.index} of {self.total} ({self.name}) {100 * self.fraction:.0f} % of its "
            f"work, run {100 * self.done_fraction():.0f} %, {_clock(self.now() - self._started)} elapsed, "
            f"ETA {_clock(self.eta_s())}"
        )

    def _emit(self) -> None:
        with self._lock:
            if self._bar is not None:
                desc = f"policy {self.index} of {self.total}: {self.name:<18}"
                done = self.total * self.done_fraction()
                self._bar.update(self._task, completed=done, description=desc, eta=_clock(self.eta_s()))
            else:
                print(self.line(), file=self.stream, flush=True)

    def _ticker(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.index:
                self._emit()

    def start_policy(self, name: str) -> None:
        self.index, self.name, self.fraction = self.index + 1, name, 0.0
        self._emit()

    def advance(self, fraction: float) -> None:
        """The current policy's work done (0..1); drawn at once on a terminal, else by the timer."""
        self.fraction = min(max(fraction, self.fraction), 1.0)
        if self._bar is not None:
            self._emit()


class _Clocked:
    """A scheduler that reports the simulated time of each retry round and preemption search.

    Delegates everything to the wrapped scheduler (decisions unchanged); ``order`` and
    ``preempt`` are called by the replay with the current time ``t``, which feeds ``on_time``.
    """

    def __init__(self, inner: Any, on_time: Callable[[float], None]) -> None:
        self._inner = inner
        self._on_time = on_time

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def order(self, pending: Any, ledger: Any, now_s: float) -> Any:
        self._on_time(now_s)
        return self._inner.order(pending, ledger, now_s)

    def preempt(self, state: Any, pod: Any, ledger: Any, now_s: float) -> Any:
        self._on_time(now_s)
        return self._inner.preempt(state, pod, ledger, now_s)


def _work_meter(
    workload: Any, horizon_s: float | None, tick_s: float, progress: RunProgress | None
) -> tuple[Callable[[float], None], Callable[[int, int], None]]:
    """Callbacks turning simulated time and arrivals into ``progress.advance(t / horizon)``."""
    arrivals = np.sort(np.asarray(workload.arrival_s, dtype=np.float64))
    horizon = horizon_s if horizon_s is not None else (float(arrivals[-1]) + tick_s if arrivals.size else 0.0)

    def on_time(t: float) -> None:
        if progress is not None and horizon > 0:
            progress.advance(t / horizon)

    def on_arrivals(k: int, _n: int) -> None:
        if k > 0 and arrivals.size:
            on_time(float(arrivals[min(k, arrivals.size) - 1]))

    return on_time, on_arrivals


# ------------------------------------------------------------------------------------ warnings


def unprofiled_models(workload: Any, has_profile: Callable[[str, str], bool]) -> Counter[str]:
    """Models of inference pods that no profile covers on any accelerator of the cluster: count per model."""
    accelerators = sorted({v.accelerator for v in workload.nodes if v.accelerator})
    missing: Counter[str] = Counter()
    for pod in workload.pods:
        if pod.variants and not any(has_profile(a, m) for a in accelerators for m in pod.variants):
            missing[pod.variants[0]] += 1
    return missing


def input_warnings(
    workload: Any, n_policies: int, has_profile: Callable[[str, str], bool] | None
) -> list[str]:
    """One line per thing the user should know before trusting the outputs (see the module docstring)."""
    lines = []
    ignored = getattr(workload, "description", {}).get("ignored")
    if ignored:  # objects of a snapshot that are not replayed (said at load time too)
        lines.append(str(ignored))
    if has_profile is not None:
        missing = unprofiled_models(workload, has_profile)
        if missing:
            models = ", ".join(f"{m} ({c} pod{'s' if c > 1 else ''})" for m, c in missing.most_common())
            lines.append(
                f"{sum(missing.values())} pod(s) name a model that no profile covers on this cluster's "
                f"accelerators: {models}; no policy can place them (see the CSVs' reason column; "
                "add profiles with --profiles DIR)"
            )
    size = len(workload) * n_policies * CSV_ROW_BYTES
    if size > LARGE_OUTPUT_BYTES:
        lines.append(
            f"{len(workload):,} pods x {n_policies} policies: the CSVs will take about "
            f"{size / 2**20:,.0f} MiB (and the replays long); lower --inflate or --max-pods to shrink it"
        )
    return lines


def _is_whatif_csv(path: Path) -> bool:
    """A ``<policy>.csv`` of a what-if: its header starts as :data:`CSV_COLUMNS` does."""
    from qosched.extender.cli.whatif_report import CSV_COLUMNS

    try:
        with path.open() as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith(",".join(CSV_COLUMNS[:4]) + ",")


def clear_stale_outputs(out_dir: Path, policies: Iterable[str]) -> list[str]:
    """Remove outputs of an earlier run in ``out_dir`` that this run would not overwrite.

    Only files a what-if writes are touched: every ``*.csv`` with the what-if's header (those of
    this run's policies are written again; a run cut short must not leave an older one beside
    its summary) and :data:`OUTPUT_FILES`. Returns the names removed that this run will not
    write again (``policies``: this run's).
    """
    keep = {f"{p}.csv" for p in policies} | set(OUTPUT_FILES)
    removed = []
    for path in sorted(out_dir.glob("*.csv")):
        if _is_whatif_csv(path):
            path.unlink()
            removed.append(path.name)
    for name in OUTPUT_FILES:
        path = out_dir / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    return [name for name in removed if name not in keep]


def ignored_objects(path: str | Path) -> Counter[str]:
    """Objects of a snapshot file that the what-if does not replay (not a Node or a Pod), by kind.

    A ``Deployment`` (or any controller) is not expanded into pods: the what-if replays pods as
    they are in the file, so the user is told what was left out.
    """
    from qosched.extender.kube.cache import parse_snapshot_text

    counts: Counter[str] = Counter()
    try:
        docs = parse_snapshot_text(Path(path).read_text(), Path(path))
    except (OSError, ValueError):
        return counts  # the loader reports unreadable files
    stack = [d for d in docs if isinstance(d, Mapping)]
    while stack:
        obj = stack.pop()
        kind = str(obj.get("kind") or "")
        if kind.endswith("List"):
            sub = kind[: -len("List")]
            stack += [{"kind": sub, **i} if sub and "kind" not in i else i for i in obj.get("items") or ()]
        elif kind not in ("Node", "Pod"):
            counts[kind or "(no kind)"] += 1
    return counts


def snapshot_warning(path: str | Path) -> str | None:
    """One line naming what :func:`ignored_objects` found, or None."""
    counts = ignored_objects(path)
    if not counts:
        return None
    kinds = ", ".join(f"{c} {k}" for k, c in counts.most_common())
    return (
        f"{Path(path).name}: ignored {kinds}: the what-if replays Nodes and Pods only "
        "(export the pods a controller created, e.g. kubectl get pods -o yaml)"
    )


# ----------------------------------------------------------------------------------------- run


def jsonable(value: Any) -> Any:
    """Non-finite floats become strings ("inf"), so summary.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value


@dataclass
class _Outputs:
    summaries: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)


def _scheduler_of(name: str, workload: Any, opts: Mapping[str, Any]) -> Any:
    """The run's scheduler for policy ``name``: its seed, classes, mix, candidates and options."""
    from qosched.policies.simulator.replay import build_scheduler

    return build_scheduler(
        name,
        seed=opts["seed"],
        workload=workload,
        classes=opts["classes"],
        mix=opts["mix"],
        candidates=opts["candidates"],
        options=opts["policy_options"].get(name),
    )


def _replay_one(name: str, workload: Any, opts: Mapping[str, Any], progress: RunProgress | None) -> Any:
    from qosched.policies.simulator.replay import replay

    scheduler = _scheduler_of(name, workload, opts)
    config = opts["config"]
    on_time, on_arrivals = _work_meter(workload, config.horizon_s, config.tick_s, progress)
    # Every policy gets the same latency stream (common random numbers): equal device
    # configurations simulate identically, so differences come from the placements.
    rng = np.random.default_rng([opts["seed"], 0x5EED])
    return replay(
        workload,
        _Clocked(scheduler, on_time) if progress is not None else scheduler,
        rng,
        lookup=opts["lookup"],
        device_memory=opts["device_memory"],
        config=config,
        classes=opts["classes"],
        progress=on_arrivals,
    )


def _policy_of(name: str, workload: Any, opts: Mapping[str, Any]) -> Any:
    """A policy built as the replay's (name, seed, options), for the pending pods' reasons.

    Where a pod fits (the reason codes and their numbers) follows from the policy's hard
    constraints and options on the final state, not from what it learned during the run (FGD's
    mix, qosched's fairness snapshot only weigh the scores), so a fresh one explains it alike.
    """
    return _scheduler_of(name, workload, opts).policy


def _replay_all(
    policies: Sequence[str],
    workload: Any,
    opts: Mapping[str, Any],
    progress: RunProgress | None,
    out_dir: Path,
    has_profile: Callable[[str, str], bool],
) -> _Outputs:
    """Replay and write each policy's CSV in turn; on Ctrl-C, stop and return those finished."""
    from qosched.extender.cli.whatif_report import pending_reasons, write_policy_csv
    from qosched.policies.simulator.metrics import pod_outcomes, summarize

    out = _Outputs()
    classes = opts["classes"]
    try:
        with progress if progress is not None else contextlib.nullcontext():
            for name in policies:
                if progress is not None:
                    progress.start_policy(name)
                started = time.perf_counter()
                result = _replay_one(name, workload, opts, progress)
                runtime_s = time.perf_counter() - started
                pods_out = pod_outcomes(result, classes)
                summary = summarize(result, runtime_s=runtime_s, classes=classes, outcomes=pods_out)
                write_policy_csv(
                    out_dir / f"{name}.csv",
                    result,
                    pods_out,
                    pending_reasons(result, has_profile, _policy_of(name, workload, opts)),
                )
                out.summaries[name], out.results[name], out.outcomes[name] = summary, result, pods_out
    except KeyboardInterrupt:
        pass
    return out


def run_whatif(
    workload: Any,
    policies: Sequence[str],
    out_dir: Path,
    *,
    seed: int,
    lookup: Any,
    device_memory: Any,
    classes: Any,
    mix: str = "learned",
    candidates: str = "fit",
    simulate_latency: bool = True,
    horizon_s: float | None = None,
    quiet: bool = True,
    warnings: Sequence[str] = (),
    has_profile: Callable[[str, str], bool] | None = None,
    report: bool = True,
    policy_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Replay ``workload`` through every policy, write the outputs, return the summary dict.

    ``policy_options``: per policy name, its own options (``{"qosched": {"gpu_consolidation":
    "spread"}}``, ``--policy-option``; recorded in the summary's ``workload``).

    ``warnings`` (with :func:`input_warnings`) go to stderr and the top of the report;
    ``has_profile(accelerator, model)`` (default: ``lookup`` knows the pair) feeds the CSVs'
    reason column; ``report=False`` skips the plots and ``report.html`` (a sweep's cells).
    Raises :class:`RunInterrupted` after writing the finished policies when interrupted.
    """
    from qosched.extender.cli.whatif_report import write_report
    from qosched.policies.simulator.replay import ReplayConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    removed = clear_stale_outputs(out_dir, policies)
    if removed:
        print(f"whatif: removed {len(removed)} output(s) of an earlier run in {out_dir}: {', '.join(removed)}",
              file=sys.stderr)  # fmt: skip
    if has_profile is None:

        def has_profile(accelerator: str, model: str) -> bool:
            return lookup(accelerator, model) is not None

    notes = [*warnings, *input_warnings(workload, len(policies), has_profile)]
    for line in notes:
        print(f"whatif: warning: {line}", file=sys.stderr)
    opts = {
        "seed": seed,
        "classes": classes,
        "mix": mix,
        "candidates": candidates,
        "policy_options": dict(policy_options or {}),
        "lookup": lookup,
        "device_memory": device_memory,
        "config": ReplayConfig(horizon_s=horizon_s, simulate_latency=simulate_latency),
    }
    progress = None if quiet else RunProgress(len(policies))
    out = _replay_all(policies, workload, opts, progress, out_dir, has_profile)
    interrupted = len(out.summaries) < len(policies)
    summary: dict[str, Any] = {"workload": dict(workload.description), "policies": out.summaries}
    summary["workload"].update(
        seed=seed, mix=mix, candidates=candidates, classes=_class_order(classes, workload)
    )
    if policy_options:
        summary["workload"]["policy_options"] = {k: dict(v) for k, v in policy_options.items()}
    if interrupted:
        missing = [p for p in policies if p not in out.summaries]
        summary["run"] = {"interrupted": True, "finished": list(out.summaries), "missing": missing}
        notes.insert(0, f"Run cut short (Ctrl-C): {len(out.summaries)} of {len(policies)} policies "
                        f"finished; missing: {', '.join(missing)}.")  # fmt: skip
    (out_dir / "summary.json").write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")
    if out.summaries and report:
        write_report(out_dir, summary, out.results, out.outcomes, warnings=notes)
    if interrupted:
        raise RunInterrupted(len(out.summaries), len(policies), out_dir, summary)
    return summary


def _class_order(classes: Any, workload: Any) -> list[str]:
    """The workload's classes, highest first (rank 0), for the tables' column order."""
    names = sorted({p.qos_class for p in workload.pods})
    return [n for _, n in sorted(zip(classes.ranks(names).tolist(), names, strict=True))]
