"""pytest fixtures around :class:`~tests.kubefake.server.FakeKubeAPI`.

Registered once for the whole suite by ``pytest_plugins = ["tests.kubefake.conftest_plugin"]``
in ``tests/conftest.py``: a test names ``kube_api``, ``kube_client``, ``core_v1`` or
``snapshot_kube_api`` as an argument and gets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import FakeKubeAPI

#: The cluster snapshot captured with a real kube-scheduler v1.36 (``shared/fixtures/kube-scheduler``).
SHARED_CLUSTER_SNAPSHOT = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "kube-scheduler" / "cluster.yaml"
)


@pytest.fixture
def kube_api() -> Iterator[FakeKubeAPI]:
    """A started, empty fake apiserver; stopped (watches ended, connections closed) afterwards."""
    with FakeKubeAPI(bookmark_interval_s=60.0) as api:
        yield api


@pytest.fixture
def kube_client(kube_api: FakeKubeAPI) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` bound to :func:`kube_api`."""
    client = kube_api.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def core_v1(kube_client: Any) -> Any:
    """``kubernetes.client.CoreV1Api`` on the fake."""
    from kubernetes import client

    return client.CoreV1Api(kube_client)


@pytest.fixture
def snapshot_kube_api(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    """:func:`kube_api` preloaded with the shared 4-node cluster snapshot (skips if shared/ is absent)."""
    if not SHARED_CLUSTER_SNAPSHOT.is_file():
        pytest.skip(f"shared fixtures not found at {SHARED_CLUSTER_SNAPSHOT}")
    kube_api.load_snapshot(SHARED_CLUSTER_SNAPSHOT)
    return kube_api
