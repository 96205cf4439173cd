"""A real Prometheus (the Debian package's ``/usr/bin/prometheus``) on 127.0.0.1 for tests.

Started with a generated configuration, waited on until ``/-/ready``, terminated afterwards; the
test is skipped with a reason when the binary is missing. :func:`exporter` serves a
``prometheus_client`` registry for it to scrape; :func:`scraped_registry` is the two together.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, start_http_server

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require(binary: str) -> str:
    """``binary`` if it is installed, else skip the test naming the package."""
    if not Path(binary).is_file():
        pytest.skip(f"{binary} not found (apt-get install prometheus)")
    return binary


def _ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


@contextmanager
def prometheus(
    tmp_path: Path,
    jobs: dict[str, str],
    *,
    rule_files: Sequence[Path] = (),
    interval_s: float = 1.0,
    honor_labels: bool = False,
    flags: Sequence[str] = (),
) -> Iterator[str]:
    """Prometheus scraping ``jobs`` (job name -> ``host:port``) every ``interval_s``; yields its URL.

    ``honor_labels`` keeps the scraped ``namespace``/``pod`` labels (an exporter speaking for
    pods); ``flags`` are added to the command line.
    """
    require(PROMETHEUS)
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "honor_labels": honor_labels, "static_configs": [{"targets": [target]}]}
            for job, target in jobs.items()
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "prometheus.log"
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        with log_path.open("wb") as log_fh:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                    *flags,
                ],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            if _ready(proc, url, timeout_s=20.0):
                yield url
                return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
    pytest.fail(f"prometheus did not start; log:\n{log_path.read_text()[-2000:]}")


@contextmanager
def exporter(registry: CollectorRegistry | None = None) -> Iterator[tuple[CollectorRegistry, int]]:
    """``registry`` (a new one by default) served on 127.0.0.1; yields it and its port."""
    registry = CollectorRegistry() if registry is None else registry
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield registry, int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def scraped_registry(tmp_path: Path, *, flags: Sequence[str] = ()) -> Iterator[tuple[str, CollectorRegistry]]:
    """A fresh registry that Prometheus scrapes every second as job ``plant``, its labels honoured.

    Yields ``(prometheus URL, registry)``: what a test's metrics put in the registry, the
    controller reads back through PromQL.
    """
    with (
        exporter() as (registry, port),
        prometheus(tmp_path, {"plant": f"127.0.0.1:{port}"}, honor_labels=True, flags=flags) as url,
    ):
        yield url, registry


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """The result of an instant query; fails with Prometheus's error (a parse error names the position)."""
    answer = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result
