"""kubefake: an in-process fake kube-apiserver for qosched's tests.

The official ``kubernetes`` client talks to it unmodified over loopback (REST + chunked watch
streams), so the cache's list/watch/relist loop, the binder and the controller are tested against
the protocol they will meet in a cluster. Import as ``from tests.kubefake import FakeKubeAPI``.

Fixtures for pytest live in :mod:`tests.kubefake.conftest_plugin`.
"""

from .kubeconfig import write_kubeconfig
from .objects import load_snapshot, make_node, make_pod
from .rbac import RbacAuthorizer
from .server import FakeKubeAPI, RequestRecord, running
from .status import ApiError

__all__ = [
    "ApiError",
    "FakeKubeAPI",
    "RbacAuthorizer",
    "RequestRecord",
    "load_snapshot",
    "make_node",
    "make_pod",
    "running",
    "write_kubeconfig",
]
