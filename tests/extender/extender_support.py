"""Shared by the extender app tests: fixture paths, small snapshot builders, recording binders.

Builders write Kubernetes objects in their API form (what a snapshot file or the watch holds),
so the tests go through the same parsing as production.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import requests
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from qosched.extender.kube.binding import BindError
from qosched.extender.server.app import create_app

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
FIXTURES = SHARED / "fixtures" / "kube-scheduler"
CLUSTER_YAML = FIXTURES / "cluster.yaml"
SMOKE = SHARED / "hooks" / "contract_smoke.py"
PROJECT = Path(__file__).resolve().parents[2]
QOSCHED_BIN = PROJECT / ".venv" / "bin" / "qosched"
JSON_CT = "application/json"


def node(
    name: str,
    accelerator: str | None = "nvidia-t4",
    *,
    gpus: int = 2,
    cpu: str = "8",
    memory: str = "32Gi",
    sharing: str | None = None,
    tier: str | None = None,
) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name}
    if accelerator:
        labels["qosched.io/accelerator"] = accelerator
    if sharing:
        labels["qosched.io/sharing"] = sharing
    if tier:
        labels["qosched.io/tier"] = tier
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels},
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }


def pod(
    name: str,
    *,
    uid: str | None = None,
    model: str | None = "resnet50",
    slo_ms: float | None = 100,
    rate_rps: float | None = 10,
    gpu_milli: int | None = 250,
    cpu: str = "100m",
    node_name: str | None = None,
    annotations: Mapping[str, str] | None = None,
    extra_resources: Mapping[str, str] | None = None,
    priority: int = 0,
) -> dict[str, Any]:
    """A pod; ``model=None`` and no ``annotations`` gives an unmanaged pod."""
    ann: dict[str, str] = {}
    if model is not None:
        ann["qosched.io/model"] = model
        if slo_ms is not None:
            ann["qosched.io/slo-ms"] = str(slo_ms)
        if rate_rps is not None:
            ann["qosched.io/rate-rps"] = str(rate_rps)
        if gpu_milli is not None:
            ann["qosched.io/gpu-milli"] = str(gpu_milli)
    ann.update(annotations or {})
    requests = {"cpu": cpu, "memory": "128Mi", **(extra_resources or {})}
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"requests": requests}}],
        "priority": priority,
    }
    if node_name:
        spec["nodeName"] = node_name
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}"}
    if ann:
        meta["annotations"] = ann
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Running" if node_name else "Pending"},
    }


def service_pod(name: str, variants: str, *, service: str = "classify") -> dict[str, Any]:
    """A pending pod of a routed ``service`` that any of ``variants`` (comma-separated) may serve:
    a 100 ms SLO, 10 requests/s, a quarter of a GPU."""
    return pod(
        name,
        model=None,
        annotations={
            "qosched.io/variants": variants,
            "qosched.io/slo-ms": "100",
            "qosched.io/rate-rps": "10",
            "qosched.io/gpu-milli": "250",
            "qosched.io/service": service,
        },
    )


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, parsed by ``prometheus_client``'s parser:
    ``(sample name, frozenset of label pairs) -> value``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels`` in a ``/metrics`` answer; fails naming it."""
    samples = metric_samples(text)
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not in /metrics"
    return samples[key]


def metric_families(text: str) -> dict[str, str]:
    """Family name -> type (``counter``, ``gauge``, ``histogram``...) of a ``/metrics`` answer."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def write_snapshot(path: Path, objects: Sequence[Mapping[str, Any]]) -> Path:
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))
    return path


def make_app(cluster: Path, **overrides: Any) -> Flask:
    """The production wiring on a snapshot file, with its own metrics registry."""
    return create_app({"CLUSTER_FILE": str(cluster), **overrides}, registry=CollectorRegistry())


def args(pod_obj: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {"Pod": pod_obj, "Nodes": None, "NodeNames": list(names)}


def bind_args(pod_obj: Mapping[str, Any], node_name: str) -> dict[str, Any]:
    meta = pod_obj["metadata"]
    return {
        "PodName": meta["name"],
        "PodNamespace": meta["namespace"],
        "PodUID": meta["uid"],
        "Node": node_name,
    }


def reasons(filter_answer: Mapping[str, Any]) -> dict[str, str]:
    return {
        **(filter_answer.get("FailedNodes") or {}),
        **(filter_answer.get("FailedAndUnresolvableNodes") or {}),
    }


class RecordingBinder:
    """A binder that records calls; optionally fails, or blocks until released."""

    def __init__(self, *, fail: Exception | None = None, block: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, str, str, str, dict[str, str]]] = []
        self.fail = fail
        self.block = block
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def bind(
        self, namespace: str, name: str, uid: str, node_name: str, annotations: Mapping[str, str]
    ) -> None:
        with self._lock:
            self.calls.append((namespace, name, uid, node_name, dict(annotations)))
        self.entered.set()
        if self.block is not None:
            self.block.wait(10)
        if self.fail is not None:
            raise self.fail


class SlowBinder(RecordingBinder):
    """Sleeps ``delay_s`` in every bind (widens race windows in concurrency tests)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def bind(
        self, namespace: str, name: str, uid: str, node_name: str, annotations: Mapping[str, str]
    ) -> None:
        super().bind(namespace, name, uid, node_name, annotations)
        time.sleep(self.delay_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(*serve_args: str, ready_timeout_s: float = 60.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run the real ``qosched serve`` (gunicorn) on 127.0.0.1 and a free port until /readyz is 200.

    Yields the base URL and the process (the gunicorn master); SIGTERM and a wait afterwards
    (gunicorn's graceful shutdown), SIGKILL only if that hangs. stderr is kept for the message of
    a failed start.
    """
    port = free_port()
    cmd = [str(QOSCHED_BIN), "serve", "--host", "127.0.0.1", "--port", str(port), *serve_args]
    env = {**os.environ, "QOSCHED_LOG_LEVEL": "info"}
    # A file, not a pipe: a chatty server never blocks on it.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        base = f"http://127.0.0.1:{port}"

        def tail() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")[-3000:]

        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"qosched serve exited {proc.returncode}: {tail()}")
                try:
                    if requests.get(base + "/readyz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"qosched serve not ready within {ready_timeout_s} s: {tail()}")
                time.sleep(0.1)
            proc.log_tail = tail  # type: ignore[attr-defined]
            yield base, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


__all__ = [
    "CLUSTER_YAML",
    "FIXTURES",
    "JSON_CT",
    "QOSCHED_BIN",
    "SMOKE",
    "BindError",
    "RecordingBinder",
    "SlowBinder",
    "args",
    "bind_args",
    "free_port",
    "make_app",
    "metric_families",
    "metric_samples",
    "metric_value",
    "node",
    "pod",
    "reasons",
    "service_pod",
    "serving",
    "write_snapshot",
]
