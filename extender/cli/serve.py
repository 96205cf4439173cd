"""``qosched serve``: run the extender under gunicorn (one worker, threads; see gunicorn_conf)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask
from gunicorn.app.base import BaseApplication

from qosched.extender.server import gunicorn_conf


class ExtenderServer(BaseApplication):
    """gunicorn embedded: the same settings file as production, the app built in the worker."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key in dir(gunicorn_conf):
            if key.startswith("_") or key == "os":
                continue
            if key in self.cfg.settings:
                self.cfg.set(key, getattr(gunicorn_conf, key))
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


def check_static(cluster_file: str, overrides: dict[str, Any]) -> None:
    """Check settings, policy, profiles, upload settings and the snapshot file's syntax, cheaply.

    Everything ``create_app`` would refuse, on an empty cache plus a parse of the snapshot: building
    the real cache here as well as in the worker would double the start-up time and hold a second
    copy in the master (5,000 nodes: ~5 s and ~1 GB). Objects the cache cannot use are warnings in
    the worker anyway, not start-up errors. Errors become one clear line, not a traceback.
    """
    from qosched.extender.kube.binding import SnapshotBinder
    from qosched.extender.kube.cache import StaticCluster, load_snapshot
    from qosched.extender.server.app import create_app

    try:
        load_snapshot(cluster_file)
        empty = StaticCluster(lambda accelerator, model: None, lambda accelerator: math.inf)
        create_app(overrides, cache=empty, binder=SnapshotBinder(empty))
    except KeyError as err:  # unknown policy: the message is the first argument
        raise click.ClickException(str(err.args[0] if err.args else err)) from None
    except (ValueError, OSError) as err:  # ConfigError, ProfileError, bad snapshot, bad directory
        raise click.ClickException(str(err)) from None


@click.command("serve")
@click.option(
    "--cluster",
    "cluster_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve a fixed cluster from a snapshot file (no Kubernetes).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    help="Watch the API server of this kubeconfig (default: in-cluster).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8888, show_default=True, type=int)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/JSON settings file (see extender/server/settings.py).",
)
@click.option("--policy", default=None, help="Placement policy by name (default from config: qosched).")
@click.option(
    "--profiles",
    "profiles_dir",
    type=click.Path(file_okay=False),
    help="Extra profile directory (uploads persist here).",
)
@click.option("--token-file", type=click.Path(dir_okay=False), help="Bearer token file for profile uploads.")
@click.option("--threads", default=None, type=int, help="gunicorn threads (default 8).")
def serve(
    cluster_file: str | None,
    kubeconfig: str | None,
    host: str,
    port: int,
    config_file: str | None,
    policy: str | None,
    profiles_dir: str | None,
    token_file: str | None,
    threads: int | None,
) -> None:
    """Run the scheduler extender (filter, prioritize, bind, preempt, /metrics, /profiles)."""
    from qosched.extender.server.app import create_app

    overrides: dict[str, Any] = {
        "CONFIG_FILE": config_file,
        "CLUSTER_FILE": cluster_file,
        "KUBECONFIG": kubeconfig,
        "IN_CLUSTER": not cluster_file and not kubeconfig,
        "POLICY": policy,
        "PROFILES_DIR": profiles_dir,
        "UPLOAD_TOKEN_FILE": token_file,
        "THREADS": threads,  # the binds-in-flight limit is derived from it
    }
    if cluster_file:
        # Fail fast, before gunicorn forks its worker. (Not in live mode: that would start a
        # watch thread in the master process.)
        check_static(cluster_file, overrides)
    if token_file and not Path(token_file).is_file():
        click.echo(
            f"qosched serve: warning: --token-file {token_file}: no such file; profile uploads are "
            "refused until it exists (it is re-read when it changes)",
            err=True,
        )
    options: dict[str, Any] = {"bind": f"{host}:{port}"}
    if threads:
        options["threads"] = threads
    ExtenderServer(lambda: log_started(create_app(overrides)), options).run()


def log_started(app: Flask) -> Flask:
    """Log which cluster, policy and how many nodes the extender serves, once it is built."""
    from qosched.extender.server.state import state_of

    state = state_of(app)
    settings = state.settings
    cluster = settings.cluster_file or (
        f"kubeconfig {settings.kubeconfig}" if settings.kubeconfig else "in-cluster"
    )
    stats = state.runtime.cache.stats()
    logging.getLogger("qosched.serve").info(
        "extender ready: cluster %s, policy %s, %d nodes, %d pods%s",
        cluster,
        settings.policy,
        stats.nodes,
        stats.pods,
        "" if stats.synced else " (watch still syncing)",
    )
    return app
