"""``qosched webhook``: the admission webhook (``serve``) and its certificate (``certs``).

``serve`` runs the Flask app of :mod:`qosched.extender.webhook.app` under gunicorn with TLS
(gthread worker: certificate files are read per connection, so a renewed Secret applies without
a restart). ``certs`` provisions the certificate when cert-manager is not installed
(:mod:`qosched.extender.webhook.certs`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click


@click.group()
def webhook() -> None:
    """qosched's admission webhook for pods in namespaces labelled qosched.io/enabled=true."""


class _Gunicorn:
    """A gunicorn application serving one Flask app factory (built in the worker, after fork)."""

    @staticmethod
    def run(options: dict[str, Any]) -> None:
        from gunicorn.app.base import BaseApplication

        class App(BaseApplication):
            def load_config(self) -> None:
                for key, value in options.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:
                from qosched.extender.webhook.app import create_app

                return create_app()

        App().run()


@webhook.command()
@click.option("--bind", default="0.0.0.0:8443", show_default=True, help="host:port to listen on (TLS).")
@click.option(
    "--cert-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="PEM server certificate (tls.crt of the Secret).",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="PEM private key (tls.key).",
)
@click.option(
    "--device-plugin/--no-device-plugin",
    default=True,
    show_default=True,
    help="The cluster runs `qosched device-plugin`: request qosched.io/gpu-share instead of "
    "injecting NVIDIA_VISIBLE_DEVICES.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The extender's settings file (service classes).",
)
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True)
def serve(
    bind: str, cert_file: Path, key_file: Path, device_plugin: bool, config_file: str | None, threads: int
) -> None:
    """Serve POST /mutate, POST /validate and GET /healthz over TLS."""
    os.environ["QOSCHED_WEBHOOK_DEVICE_PLUGIN"] = "true" if device_plugin else "false"
    if config_file:
        os.environ["QOSCHED_CONFIG_FILE"] = str(config_file)
    _Gunicorn.run(
        {
            "bind": [bind],
            "workers": 1,
            "worker_class": "gthread",
            "threads": threads,
            "certfile": str(cert_file),
            "keyfile": str(key_file),
            "accesslog": None,
            "errorlog": "-",
            "timeout": 30,
            "graceful_timeout": 5,
        }
    )


@webhook.command()
@click.option("--namespace", default="qosched-system", show_default=True)
@click.option("--service", default="qosched-webhook", show_default=True, help="The webhook's Service.")
@click.option("--secret", default="qosched-webhook-tls", show_default=True, help="TLS Secret to write.")
@click.option("--mutating", multiple=True, default=["qosched"], show_default=True)
@click.option("--validating", multiple=True, default=["qosched"], show_default=True)
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True)
@click.option("--renew-before-days", type=click.IntRange(0, 365), default=30, show_default=True)
@click.option(
    "--ca-bundle/--no-ca-bundle",
    default=True,
    show_default=True,
    help="Set caBundle of --mutating/--validating; --no-ca-bundle only keeps the Secret "
    "(e.g. the extender's own serving certificate, manifests/components/tls).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Outside a cluster; in-cluster config otherwise.",
)
def certs(
    namespace: str,
    service: str,
    secret: str,
    mutating: tuple[str, ...],
    validating: tuple[str, ...],
    days: int,
    renew_before_days: int,
    ca_bundle: bool,
    kubeconfig: str | None,
) -> None:
    """Create (or keep) a self-signed CA + serving certificate and set the webhooks' caBundle."""
    from kubernetes.client.exceptions import ApiException

    from qosched.extender.kube.watch import api_client_from
    from qosched.extender.server.settings import ConfigError
    from qosched.extender.webhook.certs import ensure_certs

    try:
        api_client = api_client_from({"KUBECONFIG": kubeconfig})
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    try:
        result = ensure_certs(
            api_client,
            namespace=namespace,
            service=service,
            secret=secret,
            mutating=mutating if ca_bundle else (),
            validating=validating if ca_bundle else (),
            days=days,
            renew_before_days=renew_before_days,
        )
    except ApiException as err:
        raise click.ClickException(f"API call failed: {err.status} {err.reason}: {err.body}") from None
    finally:
        api_client.close()
    issued = f"issued a new certificate into {namespace}/{secret}" if result.issued else "certificate kept"
    click.echo(f"{issued}; caBundle set on: {', '.join(result.patched) or 'nothing (already set)'}")
