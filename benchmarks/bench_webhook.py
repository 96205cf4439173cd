"""Latency of the admission webhook as the API server sees it: ``qosched webhook serve``
(gunicorn, gthread, TLS) on 127.0.0.1, ``POST /mutate`` with a managed pod's AdmissionReview,
against ``GET /healthz`` on the same server and connection as the baseline (TLS, HTTP and
gunicorn without any admission work), in the same run.

Two connection modes: kept alive (what the API server does between calls) and a new TLS
connection per request (handshake + the certificate files read per connection, the price of
hot certificate rotation). Reports median and p99 [ms] and the ratio mutate / healthz.

Run: ``.venv/bin/python benchmarks/bench_webhook.py [--requests 500]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from qosched.extender.webhook.certs import make_bundle

REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "u",
        "kind": {"kind": "Pod"},
        "operation": "CREATE",
        "namespace": "d",
        "object": {
            "metadata": {
                "annotations": {
                    "qosched.io/model": "resnet50",
                    "qosched.io/slo-ms": "50",
                    "qosched.io/gpu-milli": "250",
                }
            },
            "spec": {"schedulerName": "default-scheduler", "containers": [{"name": "s", "image": "x"}]},
        },
    },
}


def _session(ca: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA
    s.verify = str(ca)
    return s


def _times_ms(n: int, call: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1e3)
    return sorted(out)


def _row(name: str, ts: list[float], base: list[float]) -> str:
    med, p99 = statistics.median(ts), ts[int(0.99 * (len(ts) - 1))]
    return f"{name:<34} median {med:6.2f} ms  p99 {p99:6.2f} ms  ratio {med / statistics.median(base):5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    n = parser.parse_args().requests
    tmp = Path(tempfile.mkdtemp())
    bundle = make_bundle(["localhost"], ip_addresses=["127.0.0.1"])
    for name, data in (("tls.crt", bundle.cert_pem), ("tls.key", bundle.key_pem), ("ca.crt", bundle.ca_pem)):
        (tmp / name).write_bytes(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "qosched.extender.cli.main", "webhook", "serve", f"--bind=127.0.0.1:{port}"]
    cmd += [f"--cert-file={tmp / 'tls.crt'}", f"--key-file={tmp / 'tls.key'}", "--threads=2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOSCHED_")}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    url, body = f"https://127.0.0.1:{port}", json.dumps(REVIEW)
    headers = {"Content-Type": "application/json"}
    try:
        kept = _session(tmp / "ca.crt")
        for _ in range(300):
            try:
                kept.get(url + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)

        def fresh(path: str, data: str | None) -> Callable[[], None]:
            def call() -> None:
                with _session(tmp / "ca.crt") as s:
                    (
                        s.post(url + path, data=data, headers=headers) if data else s.get(url + path)
                    ).raise_for_status()

            return call

        base = _times_ms(n, lambda: kept.get(url + "/healthz").raise_for_status())
        mutate = _times_ms(
            n, lambda: kept.post(url + "/mutate", data=body, headers=headers).raise_for_status()
        )
        base_new = _times_ms(n // 5, fresh("/healthz", None))
        mutate_new = _times_ms(n // 5, fresh("/mutate", body))
        print(_row("healthz, kept alive (baseline)", base, base))
        print(_row("mutate, kept alive", mutate, base))
        print(_row("healthz, new TLS connection", base_new, base_new))
        print(_row("mutate, new TLS connection", mutate_new, base_new))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
