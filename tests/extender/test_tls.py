"""components/tls: kube-scheduler -> extender over HTTPS, with the manifests' own settings.

From the built variant (``kubectl kustomize`` of the base + components/tls):

1. the certificate Job's command (``qosched webhook certs --no-ca-bundle ...``) runs against the
   fake API server under the Job's own RBAC and writes the Secret qosched-extender-tls;
2. the Secret's keys land where the Deployment mounts them, and gunicorn starts with the
   extender container's exact arguments (only the bind addresses become 127.0.0.1 ports);
3. a real TLS client configured like kube-scheduler (``tlsConfig.caFile``, server name = the
   ``urlPrefix`` host) calls the verbs; without the CA, with another name, or in plain HTTP it is
   refused; a renewed certificate is served on the next connection without a restart.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import urllib3
import yaml
from click.testing import CliRunner

from qosched.extender.cli.webhook import certs as certs_command
from qosched.extender.webhook.certs import dns_names, make_bundle
from tests.extender.extender_support import JSON_CT, PROJECT, args, free_port, node, pod, write_snapshot
from tests.extender.kustomize_support import build, one
from tests.kubefake import FakeKubeAPI, RbacAuthorizer, write_kubeconfig

pytestmark = pytest.mark.slow

NAMESPACE = "qosched-system"
CERTS_USER = f"system:serviceaccount:{NAMESPACE}:qosched-extender-certs"
GUNICORN = PROJECT / ".venv" / "bin" / "gunicorn"
P = pod("p", rate_rps=5, slo_ms=100)
NAMES = ["t4-0", "cpu-0"]


def variant() -> list[dict[str, Any]]:
    return build(("tls",))


def _pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment", "qosched")["spec"]["template"]["spec"]
    return spec


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (c,) = [c for c in _pod_spec(objects)["containers"] if c["name"] == name]
    return c


def _extender_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(objects, "ConfigMap", "qosched-scheduler-config")
    (ext,) = yaml.safe_load(cm["data"]["scheduler-config.yaml"])["extenders"]
    return dict(ext)


def _mount(objects: list[dict[str, Any]], container: str, volume: str) -> tuple[str, dict[str, Any]]:
    """(mountPath, volume) of ``volume`` in ``container``."""
    (path,) = [m["mountPath"] for m in _container(objects, container)["volumeMounts"] if m["name"] == volume]
    (vol,) = [v for v in _pod_spec(objects)["volumes"] if v["name"] == volume]
    return path, vol


def issue_secret(objects: list[dict[str, Any]], tmp_path: Path) -> dict[str, bytes]:
    """Run the certs Job's command under its RBAC; the Secret's data (decoded)."""
    job = one(objects, "Job", "qosched-extender-certs")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["qosched"]
    assert c["args"][:2] == ["webhook", "certs"]
    with FakeKubeAPI(authorizer=RbacAuthorizer(objects, user=CERTS_USER)) as api:
        kubeconfig = write_kubeconfig(api.url, tmp_path / "kubeconfig")
        result = CliRunner().invoke(certs_command, [*c["args"][2:], f"--kubeconfig={kubeconfig}"])
        assert result.exit_code == 0, result.output
        again = CliRunner().invoke(certs_command, [*c["args"][2:], f"--kubeconfig={kubeconfig}"])
        assert again.exit_code == 0, again.output  # a re-run (every apply) keeps the valid Secret
        assert api.count(status=403) == 0
        assert api.count(method="PUT", resource="secrets") == 0
        secret = api.get("secrets", "qosched-extender-tls", NAMESPACE)
        assert secret is not None
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def place(volume: dict[str, Any], directory: Path, data: dict[str, bytes]) -> None:
    """Write a Secret volume's ``items`` as the kubelet would (key -> path)."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in volume["secret"]["items"]:
        (directory / item["path"]).write_bytes(data[item["key"]])


@pytest.fixture(scope="module")
def tls_extender() -> Iterator[dict[str, Any]]:
    """gunicorn with the TLS variant's extender arguments on 127.0.0.1, its certificate and CA."""
    objects = variant()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = issue_secret(objects, root)
        tls_path, tls_volume = _mount(objects, "extender", "extender-tls")
        ca_path, ca_volume = _mount(objects, "kube-scheduler", "extender-ca")
        assert (
            tls_volume["secret"]["secretName"] == ca_volume["secret"]["secretName"] == "qosched-extender-tls"
        )
        place(tls_volume, root / "tls", data)
        place(ca_volume, root / "ca", data)
        verbs_port, metrics_port = free_port(), free_port()
        binds = {"--bind=0.0.0.0:8888": verbs_port, "--bind=0.0.0.0:9090": metrics_port}
        argv = []
        for a in _container(objects, "extender")["args"]:
            if a in binds:
                a = f"--bind=127.0.0.1:{binds[a]}"
            argv.append(a.replace(tls_path, str(root / "tls")))
        assert sum(a.startswith("--bind=") for a in argv) == 2
        cluster = write_snapshot(root / "cluster.json", [node("t4-0"), node("cpu-0", None, gpus=0), P])
        env = {**os.environ, "QOSCHED_CLUSTER_FILE": str(cluster), "QOSCHED_LOG_LEVEL": "warning"}
        with (root / "gunicorn.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(GUNICORN), *argv], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            yield {
                "verbs_port": verbs_port,
                "metrics_port": metrics_port,
                "ca_file": str(root / "ca" / "ca.crt"),
                "ca_path_in_pod": ca_path,
                "tls_dir": root / "tls",
                "extender": _extender_config(objects),
                "proc": proc,
                "log": root / "gunicorn.log",
            }
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def _pool(ext: dict[str, Any], *, port_key: str = "verbs_port", **kw: Any) -> urllib3.HTTPSConnectionPool:
    """An HTTPS client like kube-scheduler's: verify against caFile, expect the urlPrefix host."""
    host = urlsplit(ext["extender"]["urlPrefix"]).hostname
    options: dict[str, Any] = {
        "ca_certs": ext["ca_file"],
        "cert_reqs": "CERT_REQUIRED",
        "server_hostname": host,
        "assert_hostname": host,
        "retries": False,
        "timeout": 5.0,
    }
    options.update(kw)
    return urllib3.HTTPSConnectionPool("127.0.0.1", ext[port_key], **options)


def _wait_ready(ext: dict[str, Any], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ext["proc"].poll() is not None:
            pytest.fail(f"gunicorn exited: {ext['log'].read_text()[-2000:]}")
        try:
            if _pool(ext, port_key="metrics_port").request("GET", "/readyz").status == 200:
                return
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    pytest.fail(f"not ready in {timeout_s} s: {ext['log'].read_text()[-2000:]}")


def test_scheduler_config_asks_for_https_with_the_mounted_ca(tls_extender: dict[str, Any]) -> None:
    ext = tls_extender["extender"]
    assert ext["enableHTTPS"] is True
    assert ext["tlsConfig"] == {"caFile": f"{tls_extender['ca_path_in_pod']}/ca.crt"}
    url = urlsplit(ext["urlPrefix"])
    assert (url.scheme, url.port) == ("https", 8888)
    assert url.hostname in dns_names("qosched-extender", NAMESPACE)  # the certificate's names
    aliases = _pod_spec(variant())["hostAliases"]
    assert aliases == [{"ip": "127.0.0.1", "hostnames": [url.hostname]}]  # in the pod: its own extender


def test_kube_scheduler_style_client_calls_the_verbs_over_tls(tls_extender: dict[str, Any]) -> None:
    _wait_ready(tls_extender)
    pool = _pool(tls_extender)
    body = orjson.dumps(args(P, NAMES))
    r = pool.request("POST", "/filter", body=body, headers={"Content-Type": JSON_CT})
    assert r.status == 200
    assert orjson.loads(r.data)["NodeNames"] == ["t4-0"]
    conn = pool._get_conn()
    conn.connect()
    assert conn.sock is not None
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()


@pytest.mark.parametrize(
    ("client_options", "error"),
    [
        ({"ca_certs": None}, "CERTIFICATE_VERIFY_FAILED"),
        ({"server_hostname": "evil.example", "assert_hostname": "evil.example"}, "evil.example"),
    ],
    ids=["no-ca", "wrong-name"],
)
def test_client_refuses_an_unverified_server(
    tls_extender: dict[str, Any], client_options: dict[str, Any], error: str
) -> None:
    _wait_ready(tls_extender)
    with pytest.raises(urllib3.exceptions.SSLError, match=error):
        _pool(tls_extender, **client_options).request("GET", "/healthz")


def test_plain_http_is_not_served(tls_extender: dict[str, Any]) -> None:
    _wait_ready(tls_extender)
    plain = urllib3.HTTPConnectionPool("127.0.0.1", tls_extender["verbs_port"], retries=False, timeout=5.0)
    with pytest.raises(urllib3.exceptions.HTTPError):
        plain.request("GET", "/healthz")


def test_metrics_port_is_tls_too(tls_extender: dict[str, Any]) -> None:
    _wait_ready(tls_extender)
    r = _pool(tls_extender, port_key="metrics_port").request("GET", "/metrics")
    assert r.status == 200
    assert b"qosched_cache_synced 1.0" in r.data


def test_renewed_certificate_is_served_without_a_restart(
    tls_extender: dict[str, Any], tmp_path: Path
) -> None:
    _wait_ready(tls_extender)
    pid = tls_extender["proc"].pid
    renewed = make_bundle(
        dns_names("qosched-extender", NAMESPACE),
        days=30,
        now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
    )
    (tls_extender["tls_dir"] / "tls.crt").write_bytes(renewed.cert_pem)
    (tls_extender["tls_dir"] / "tls.key").write_bytes(renewed.key_pem)
    new_ca = tmp_path / "new-ca.crt"
    new_ca.write_bytes(renewed.ca_pem)
    r = _pool(tls_extender, ca_certs=str(new_ca)).request("GET", "/healthz")
    assert r.status == 200
    with pytest.raises(urllib3.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        _pool(tls_extender).request("GET", "/healthz")  # the old CA no longer verifies it
    assert tls_extender["proc"].pid == pid
    assert tls_extender["proc"].poll() is None
    assert ssl.OPENSSL_VERSION
