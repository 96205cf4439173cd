"""``qosched webhook certs`` against the fake API server, and ``qosched webhook serve`` (gunicorn,
TLS) answering with the certificate it issued."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from qosched.extender.cli.main import main
from qosched.extender.webhook.certs import TlsBundle, bundle_is_usable, dns_names, make_bundle
from tests.kubefake import FakeKubeAPI, write_kubeconfig

NS, SERVICE, SECRET = "qosched-system", "qosched-webhook", "qosched-webhook-tls"


def _configuration(kind: str) -> dict[str, Any]:
    hook = {
        "name": "pods.qosched.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"service": {"name": SERVICE, "namespace": NS, "path": "/mutate"}},
    }
    other = {**hook, "name": "other.example.com", "clientConfig": {"url": "https://example.com/x"}}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "qosched"},
        "webhooks": [other, hook],
    }


def _run_certs(kubeconfig: Path) -> str:
    result = CliRunner().invoke(main, ["webhook", "certs", f"--kubeconfig={kubeconfig}"])
    assert result.exit_code == 0, result.output
    return result.output


def _secret_bundle(api: FakeKubeAPI) -> TlsBundle:
    secret = api.get("secrets", SECRET, NS)
    assert secret is not None
    assert secret["type"] == "kubernetes.io/tls"
    return TlsBundle(*(base64.b64decode(secret["data"][k]) for k in ("ca.crt", "tls.crt", "tls.key")))


def test_certs_issue_once_then_keep(tmp_path: Path) -> None:
    with FakeKubeAPI() as api:
        api.add(_configuration("MutatingWebhookConfiguration"))
        api.add(_configuration("ValidatingWebhookConfiguration"))
        kubeconfig = write_kubeconfig(api.url, tmp_path / "kubeconfig")
        out = _run_certs(kubeconfig)
        assert "issued a new certificate" in out
        assert "mutating/qosched, validating/qosched" in out
        bundle = _secret_bundle(api)
        assert bundle_is_usable(bundle, dns_names(SERVICE, NS))
        for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            other, ours = (api.get(resource, "qosched", "") or {})["webhooks"]
            assert base64.b64decode(ours["clientConfig"]["caBundle"]) == bundle.ca_pem
            assert "caBundle" not in other["clientConfig"]  # not our Service: untouched
        # A second run (the Job re-applied) keeps the certificate and patches nothing.
        assert "certificate kept; caBundle set on: nothing" in _run_certs(kubeconfig)
        assert _secret_bundle(api) == bundle


def test_expiring_or_foreign_certificates_are_replaced(tmp_path: Path) -> None:
    names = dns_names(SERVICE, NS)
    soon = make_bundle(names, days=10)
    assert not bundle_is_usable(soon, names, renew_before_days=30)
    assert not bundle_is_usable(make_bundle(["elsewhere.svc"]), names)
    a, b = make_bundle(names), make_bundle(names)
    assert not bundle_is_usable(TlsBundle(a.ca_pem, b.cert_pem, b.key_pem), names)  # wrong CA
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    assert not bundle_is_usable(a, names, now=later)
    with FakeKubeAPI() as api:
        api.add(_configuration("MutatingWebhookConfiguration"))
        api.add_secret(
            SECRET,
            NS,
            {"ca.crt": soon.ca_pem, "tls.crt": soon.cert_pem, "tls.key": soon.key_pem},
            "kubernetes.io/tls",
        )
        result = CliRunner().invoke(
            main,
            [
                "webhook",
                "certs",
                f"--kubeconfig={write_kubeconfig(api.url, tmp_path / 'kc')}",
                "--validating=none",
            ],
        )
        # The validating configuration named "none" does not exist: a clear error, exit 1.
        assert result.exit_code == 1
        assert "API call failed: 404" in result.output
        assert _secret_bundle(api) != soon  # the Secret was renewed before the failing patch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_gunicorn_serves_the_issued_certificate(tmp_path: Path) -> None:
    """``qosched webhook serve`` (gunicorn, TLS) with a certificate from ``make_bundle``: the API
    server's view (verify against caBundle, AdmissionReview in, patch out)."""
    bundle = make_bundle(["localhost", *dns_names(SERVICE, NS)], ip_addresses=["127.0.0.1"])
    for name, data in (("tls.crt", bundle.cert_pem), ("tls.key", bundle.key_pem), ("ca.crt", bundle.ca_pem)):
        (tmp_path / name).write_bytes(data)
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "qosched.extender.cli.main",
        "webhook",
        "serve",
        f"--bind=127.0.0.1:{port}",
        f"--cert-file={tmp_path / 'tls.crt'}",
        f"--key-file={tmp_path / 'tls.key'}",
        "--threads=2",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOSCHED_")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    session = requests.Session()
    session.trust_env = False
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = session.get(
                    f"https://127.0.0.1:{port}/healthz", verify=str(tmp_path / "ca.crt"), timeout=2
                )
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "webhook did not start"
                time.sleep(0.2)
        assert health.json() == {"ok": True}
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": "default",
                "object": {
                    "metadata": {
                        "annotations": {"qosched.io/model": "resnet50", "qosched.io/gpu-milli": "500"}
                    },
                    "spec": {
                        "schedulerName": "default-scheduler",
                        "containers": [{"name": "s", "image": "x"}],
                    },
                },
            },
        }
        resp = session.post(
            f"https://127.0.0.1:{port}/mutate", json=review, verify=str(tmp_path / "ca.crt"), timeout=5
        ).json()["response"]
        ops = json.loads(base64.b64decode(resp["patch"]))
        assert {"op": "add", "path": "/spec/schedulerName", "value": "qosched"} in ops
        assert any(o["path"] == "/spec/containers/0/resources" for o in ops)
        with pytest.raises(requests.exceptions.SSLError):  # a client with another CA refuses it
            session.get(f"https://127.0.0.1:{port}/healthz", verify=True, timeout=2)
    finally:
        session.close()
        proc.terminate()
        proc.wait(10)
