"""Serving certificate of the webhook without cert-manager: a self-signed CA, a server
certificate for the Service's DNS names, a ``kubernetes.io/tls`` Secret and ``caBundle``.

``qosched webhook certs`` (a Job in manifests/components/device-layer/webhook-certs.yaml; with
``--no-ca-bundle``, the extender's own certificate in manifests/components/tls/certs.yaml) calls
:func:`ensure_certs`:

1. read the Secret; if it holds a CA and a certificate for all of :func:`dns_names` valid for
   at least ``renew_before_days`` more days, keep it (re-running the Job changes nothing);
2. otherwise create a new CA (ECDSA P-256, 10 years) and a server certificate signed by it
   (``days``), and create or replace the Secret (``tls.crt``, ``tls.key``, ``ca.crt``);
3. set ``clientConfig.caBundle`` (the CA, PEM) of every webhook of the named Mutating/Validating
   configurations whose ``clientConfig.service`` is this Service (JSON patch).

The webhook's gunicorn loads the certificate files per TLS connection (gthread worker), so a
new Secret reaches it when the kubelet refreshes the mounted files, without a restart.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650


@dataclass(frozen=True, slots=True)
class TlsBundle:
    """PEM bytes: the CA certificate, the server certificate and its private key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def dns_names(service: str, namespace: str) -> list[str]:
    """Names the API server may use for a Service webhook (it dials ``<svc>.<ns>.svc``)."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_bundle(
    names: Sequence[str], *, days: int = 365, ip_addresses: Sequence[str] = (), now: dt.datetime | None = None
) -> TlsBundle:
    """A new CA and a server certificate for ``names`` (first = common name) signed by it."""
    now = now or _now()
    start = now - dt.timedelta(minutes=5)  # clock skew between this Job and the API server
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"qosched-webhook-ca-{int(now.timestamp())}")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = serialization.Encoding.PEM
    return TlsBundle(ca.public_bytes(pem), cert.public_bytes(pem), key_pem)


def bundle_is_usable(
    bundle: TlsBundle, names: Sequence[str], *, renew_before_days: int = 30, now: dt.datetime | None = None
) -> bool:
    """True when the certificate chains to the CA, covers ``names`` and stays valid long enough."""
    now = now or _now()
    try:
        ca = x509.load_pem_x509_certificate(bundle.ca_pem)
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        key = serialization.load_pem_private_key(bundle.key_pem, password=None)
        cert.verify_directly_issued_by(ca)
        if key.public_key() != cert.public_key():
            return False
        sans = set(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.DNSName
            )
        )
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    horizon = now + dt.timedelta(days=renew_before_days)
    return set(names) <= sans and cert.not_valid_after_utc > horizon and ca.not_valid_after_utc > horizon


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _secret_bundle(secret: Any) -> TlsBundle | None:
    data = (secret.data or {}) if secret is not None else {}
    try:
        return TlsBundle(*(base64.b64decode(data[k]) for k in ("ca.crt", "tls.crt", "tls.key")))
    except (KeyError, ValueError, TypeError):
        return None


def _read_secret(core: Any, name: str, namespace: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_secret(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _write_secret(core: Any, name: str, namespace: str, bundle: TlsBundle, exists: bool) -> None:
    from kubernetes import client

    body = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=name, namespace=namespace, labels={"app.kubernetes.io/name": "qosched-webhook"}
        ),
        type="kubernetes.io/tls",
        data={
            "tls.crt": _b64(bundle.cert_pem),
            "tls.key": _b64(bundle.key_pem),
            "ca.crt": _b64(bundle.ca_pem),
        },
    )
    if exists:
        core.replace_namespaced_secret(name, namespace, body)
    else:
        core.create_namespaced_secret(namespace, body)


def ca_bundle_ops(configuration: Any, service: str, namespace: str, ca_pem: bytes) -> list[dict[str, Any]]:
    """JSON-patch operations setting ``caBundle`` on the webhooks that call ``service``."""
    ops = []
    wanted = _b64(ca_pem)
    for i, hook in enumerate(configuration.webhooks or []):
        svc = hook.client_config.service if hook.client_config is not None else None
        if svc is None or (svc.name, svc.namespace) != (service, namespace):
            continue
        if hook.client_config.ca_bundle != wanted:
            ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted})
    return ops


@dataclass(frozen=True, slots=True)
class CertsResult:
    issued: bool
    patched: tuple[str, ...]


def ensure_certs(
    api_client: Any,
    *,
    namespace: str,
    service: str,
    secret: str,
    mutating: Sequence[str] = (),
    validating: Sequence[str] = (),
    days: int = 365,
    renew_before_days: int = 30,
) -> CertsResult:
    """Steps 1-3 of the module docstring; returns whether a certificate was issued and which
    configurations were patched."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    admission = client.AdmissionregistrationV1Api(api_client)
    names = dns_names(service, namespace)
    current = _read_secret(core, secret, namespace)
    bundle = _secret_bundle(current)
    issued = bundle is None or not bundle_is_usable(bundle, names, renew_before_days=renew_before_days)
    if issued:
        bundle = make_bundle(names, days=days)
        _write_secret(core, secret, namespace, bundle, exists=current is not None)
    assert bundle is not None
    patched = []
    mutating_api = (
        admission.read_mutating_webhook_configuration,
        admission.patch_mutating_webhook_configuration,
    )
    validating_api = (
        admission.read_validating_webhook_configuration,
        admission.patch_validating_webhook_configuration,
    )
    targets: list[tuple[str, str, Callable[..., Any], Callable[..., Any]]]
    targets = [("mutating", name, *mutating_api) for name in mutating]
    targets += [("validating", name, *validating_api) for name in validating]
    for kind, name, read, patch in targets:
        ops = ca_bundle_ops(read(name), service, namespace, bundle.ca_pem)
        if ops:
            patch(name, ops)
            patched.append(f"{kind}/{name}")
    return CertsResult(issued=issued, patched=tuple(patched))
