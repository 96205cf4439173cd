"""A stalled binding API under a real gunicorn extender: the scenario of issue 12's second point.

A fake API server (in this process) holds every ``pods/binding`` POST ``stall_s`` seconds and
then commits it. ``qosched serve --kubeconfig`` (gunicorn, gthread, ``threads`` threads) watches
it. A stand-in kube-scheduler then sends, at the same time:

* ``binders`` binds (one pod each, one keep-alive connection each), retrying a bind answered
  with an ``Error`` after ``retry_backoff_s`` as kube-scheduler's backoff would, until the pod is
  bound or ``deadline_s`` passes;
* a ``/filter`` for another pod every ``filter_interval_s`` on its own connection, timing each.

The result holds the filter latencies (the figure: p99 during the stall), every bind answer, and
the fake API for the invariant checks. Used by ``tests/faults/test_stalled_binds.py`` (short
stall) and ``benchmarks/bench_bind_stall.py`` (the 12 s stall of the issue).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

from tests.extender.extender_support import serving
from tests.kubefake import FakeKubeAPI, make_pod, write_kubeconfig

JSON_CT = "application/json"


@contextmanager
def serving_live(
    api: FakeKubeAPI, tmp_path: Path, env: Mapping[str, str], threads: int = 8
) -> Iterator[tuple[str, Any]]:
    """``qosched serve --kubeconfig`` on ``api`` under gunicorn, with ``QOSCHED_*`` ``env`` set."""
    kubeconfig = write_kubeconfig(api.url, tmp_path / "kubeconfig.yaml", token="test-token")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with serving("--kubeconfig", str(kubeconfig), "--threads", str(threads)) as (base, proc):
            yield base, proc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class StallRun:
    """What one run saw: filter latencies [s] during the stall, bind answers per pod."""

    filter_s: list[float] = field(default_factory=list)
    filter_errors: list[str] = field(default_factory=list)
    bind_answers: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    bind_s: list[float] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)

    def quantile_s(self, q: float) -> float:
        xs = sorted(self.filter_s)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _post(session: requests.Session, url: str, body: Any, timeout_s: float) -> Any:
    response = session.post(
        url, data=orjson.dumps(body), headers={"Content-Type": JSON_CT}, timeout=timeout_s
    )
    response.raise_for_status()
    return response.json()


def populate(
    api: FakeKubeAPI, nodes: int, gpus: int, binders: int, milli: int
) -> tuple[list[str], dict[str, Any]]:
    """``nodes`` T4 nodes and ``binders`` pending pods of ``milli`` each, plus one pod to filter."""
    names = [f"n-{i}" for i in range(nodes)]
    for name in names:
        api.add_node(name, accelerator="nvidia-t4", gpus=gpus)
    for i in range(binders):
        api.add_pod(make_pod(f"b-{i}", model="resnet50", slo_ms=200, rate_rps=2, gpu_milli=milli))
    probe = api.add_pod(make_pod("probe", model="resnet50", slo_ms=200, rate_rps=2, gpu_milli=milli))
    return names, probe


@dataclass(frozen=True)
class _Caller:
    """The stand-in scheduler's timing: its httpTimeout, retry backoff and give-up deadline."""

    base: str
    http_timeout_s: float
    retry_backoff_s: float
    deadline_s: float
    t_start: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bind_until_bound(self, run: StallRun, pod: Mapping[str, Any], node: str) -> None:
        """Bind ``pod`` to ``node``, retrying an ``Error`` after the backoff, until bound or late."""
        meta = pod["metadata"]
        body = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": node}
        with requests.Session() as http:
            while time.monotonic() - self.t_start < self.deadline_s:
                t0 = time.perf_counter()
                try:
                    error = _post(http, self.base + "/bind", body, self.http_timeout_s)["Error"]
                except requests.RequestException as err:  # the scheduler's own httpTimeout
                    error = f"scheduler gave up: {type(err).__name__}"
                elapsed = time.perf_counter() - t0
                with self.lock:
                    run.bind_s.append(elapsed)
                    run.bind_answers.setdefault(meta["name"], []).append((elapsed, error))
                if not error:
                    return
                time.sleep(self.retry_backoff_s)

    def filter_loop(
        self,
        run: StallRun,
        body: Mapping[str, Any],
        interval_s: float,
        ready: threading.Event,
        stop: threading.Event,
    ) -> None:
        """``/filter`` every ``interval_s`` until ``stop``, timing each (``ready`` after the first)."""
        with requests.Session() as http:
            _post(http, self.base + "/filter", body, self.http_timeout_s)  # connection up first
            ready.set()
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    answer = _post(http, self.base + "/filter", body, self.http_timeout_s)
                    if answer.get("Error"):
                        run.filter_errors.append(answer["Error"])
                except requests.RequestException as err:
                    run.filter_errors.append(f"scheduler gave up: {type(err).__name__}")
                run.filter_s.append(time.perf_counter() - t0)
                stop.wait(interval_s)


def drive(
    base: str,
    api: FakeKubeAPI,
    names: list[str],
    probe: Mapping[str, Any],
    *,
    binders: int,
    stall_s: float,
    http_timeout_s: float = 5.0,
    filter_interval_s: float = 0.02,
    retry_backoff_s: float = 0.2,
    deadline_s: float = 60.0,
) -> StallRun:
    """Stall every binding ``stall_s`` and run the stand-in scheduler (module docstring)."""
    run = StallRun()
    pods = [p for p in api.list_objects("pods") if p["metadata"]["name"].startswith("b-")][:binders]
    run.pods = [f"default/{p['metadata']['name']}" for p in pods]
    caller = _Caller(base, http_timeout_s, retry_backoff_s, deadline_s)
    ready, stop = threading.Event(), threading.Event()
    body = {"Pod": probe, "Nodes": None, "NodeNames": names}
    prober = threading.Thread(
        target=caller.filter_loop, args=(run, body, filter_interval_s, ready, stop), daemon=True
    )
    prober.start()
    assert ready.wait(30), "the first filter did not answer"
    api.stall(r"/binding$", stall_s, verb="create")
    workers = [
        threading.Thread(target=caller.bind_until_bound, args=(run, p, names[i % len(names)]), daemon=True)
        for i, p in enumerate(pods)
    ]
    for w in workers:
        w.start()
    time.sleep(stall_s)  # the filter samples cover the whole stall
    api.clear_stalls()
    for w in workers:
        w.join(deadline_s)
    stop.set()
    prober.join(10)
    return run


__all__ = ["StallRun", "drive", "populate", "serving_live", "write_kubeconfig"]
