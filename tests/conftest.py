"""Suite-wide pytest wiring: the fake API server's fixtures and shared extender app fixtures.

``tests.kubefake.conftest_plugin`` is registered here once (``kube_api``, ``kube_client``,
``core_v1``, ``snapshot_kube_api``), so a test module just names the fixture it needs. The app
fixtures build the production wiring (``create_app``) with a registry of their own; heavy
imports stay inside the fixtures, so collecting ``tests/policies`` does not load Flask or the
Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient

    from tests.kubefake import FakeKubeAPI

pytest_plugins = ["tests.kubefake.conftest_plugin"]

#: The cluster snapshot captured with a real kube-scheduler (``shared/fixtures/kube-scheduler``).
SHARED_CLUSTER = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "kube-scheduler" / "cluster.yaml"
)


@pytest.fixture
def snapshot_app() -> Flask:
    """``create_app`` serving the shared 4-node snapshot (static mode); skips without shared/."""
    if not SHARED_CLUSTER.is_file():
        pytest.skip(f"shared fixtures not found at {SHARED_CLUSTER}")
    from prometheus_client import CollectorRegistry

    from qosched.extender.server.app import create_app

    return create_app({"CLUSTER_FILE": str(SHARED_CLUSTER)}, registry=CollectorRegistry())


@pytest.fixture
def snapshot_client(snapshot_app: Flask) -> FlaskClient:
    """A Flask test client of :func:`snapshot_app`."""
    return snapshot_app.test_client()


@pytest.fixture
def live_app_factory(kube_api: FakeKubeAPI, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """``make(**settings)`` → ``create_app`` in live mode on :func:`kube_api` (a kubeconfig file,
    fast watch backoff); every app's watch, and its profiles-ConfigMap follower where the settings
    start one, is stopped after the test."""
    from prometheus_client import CollectorRegistry

    from qosched.extender.server.app import create_app, runtime_of
    from qosched.extender.server.state import state_of
    from tests.kubefake import write_kubeconfig

    kubeconfig = write_kubeconfig(kube_api.url, tmp_path / "kubeconfig.yaml", token="test-token")
    apps: list[Flask] = []

    def make(**settings: Any) -> Flask:
        defaults = {"KUBECONFIG": str(kubeconfig), "WATCH_BACKOFF_S": 0.01, "WATCH_BACKOFF_MAX_S": 0.05}
        app = create_app({**defaults, **settings}, registry=CollectorRegistry())
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            stop = getattr(runtime_of(app).cache, "stop", None)
            if stop is not None:
                stop()
            state_of(app).uploader.stop()


@pytest.fixture
def scraped_prometheus(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """``(URL, registry)``: a real Prometheus scraping a fresh ``prometheus_client`` registry every
    second (:func:`tests.prometheus_support.scraped_registry`; skipped without the binary)."""
    from tests.prometheus_support import scraped_registry

    with scraped_registry(tmp_path) as scraped:
        yield scraped
