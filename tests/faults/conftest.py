"""Fixtures of the fault suite: a fake API server, kubeconfig files, extender processes.

``extender`` starts ``qosched serve --kubeconfig`` (real gunicorn, real client) as a child
process against the in-process fake API server, so a test can SIGKILL it and start another one,
as happens to a pod; ``ExtenderProcess.wait_ready`` polls ``/readyz``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.kubefake import FakeKubeAPI, write_kubeconfig

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ExtenderProcess:
    """One ``qosched serve`` child process on 127.0.0.1:``port``."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExtenderProcess:
        cmd = [sys.executable, "-m", "qosched.extender.cli.main", "serve", *self.args]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--threads", "8"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        return self

    def readyz(self) -> int:
        """``/readyz`` status; 0 when nothing answers."""
        try:
            return requests.get(f"{self.url}/readyz", timeout=1.0).status_code
        except requests.RequestException:
            return 0

    def wait_status(self, want: int, timeout_s: float) -> float:
        """Seconds until ``/readyz`` answers ``want``; fails the test (with the log) after ``timeout_s``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"extender exited with {self.proc.returncode}:\n{self.log()}")
            if self.readyz() == want:
                return time.monotonic() - t0
            time.sleep(0.02)
        pytest.fail(f"/readyz did not answer {want} within {timeout_s} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and worker), as the kubelet would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self, tail_chars: int | None = 4000) -> str:
        """The process's output (the last ``tail_chars``; all of it with None)."""
        text = self.log_path.read_text(errors="replace")
        return text if tail_chars is None else text[-tail_chars:]


@pytest.fixture
def fault_api() -> Iterator[FakeKubeAPI]:
    """A started, empty fake API server (bookmarks every second, so watches show progress)."""
    with FakeKubeAPI(bookmark_interval_s=1.0) as api:
        yield api


@pytest.fixture
def extender(tmp_path: Path) -> Iterator[Callable[..., ExtenderProcess]]:
    """Factory: ``extender(api_url, **settings)`` → a started ``qosched serve`` child; all stopped after."""
    started: list[ExtenderProcess] = []

    def make(url: str, name: str = "ext", **settings: Any) -> ExtenderProcess:
        kubeconfig = write_kubeconfig(url, tmp_path / f"{name}-kubeconfig.yaml", token="test-token")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.update({f"QOSCHED_{k}": str(v) for k, v in settings.items()})
        proc = ExtenderProcess(
            ["--kubeconfig", str(kubeconfig), "--policy", str(settings.get("POLICY", "qosched"))],
            env,
            tmp_path / f"{name}.log",
        )
        proc.start()
        started.append(proc)
        return proc

    try:
        yield make
    finally:
        for proc in started:
            proc.stop()
