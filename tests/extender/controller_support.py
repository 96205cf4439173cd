"""Shared by the controller loops' tests: the RBAC the controller process runs under, and the
small two-pool cluster the QoE controller's CLI and RBAC tests run on.

The controller's ServiceAccount and the roles bound to it: the base install's
(``manifests/rbac.yaml``) and, since the base/components split, the controller component's
(``manifests/components/controller/rbac.yaml``). A fake apiserver enforcing them fails a loop
whose calls the shipped manifests do not allow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qosched.extender.kube.objects import A_DEVICE
from tests.kubefake import FakeKubeAPI
from tests.kubefake.rbac import RbacAuthorizer

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "qosched-system"
USER = f"system:serviceaccount:{SYSTEM}:qosched-controller"
RBAC_FILES = (
    ROOT / "manifests" / "rbac.yaml",
    ROOT / "manifests" / "components" / "controller" / "rbac.yaml",
)
RBAC: list[dict[str, Any]] = [
    d for f in RBAC_FILES if f.is_file() for d in yaml.safe_load_all(f.read_text()) if d
]


def controller_authorizer() -> RbacAuthorizer:
    """An authorizer that lets the controller's ServiceAccount do what its roles allow, and no more."""
    return RbacAuthorizer(RBAC, user=USER)


def add_two_pools(api: FakeKubeAPI) -> FakeKubeAPI:
    """Node n1 (2 CPUs) with 'miss' and 'beat' (Guaranteed 1000m each, SLO 10 ms, mean), node g1
    (one T4) with 'gpu-miss' and 'gpu-beat' (half of GPU 0 each, SLO 10 ms); returns ``api``."""
    api.add_node("n1", accelerator="cpu", cpu="2", gpus=0)
    for name in ("miss", "beat"):
        api.add_pod(name, slo_ms=10, node_name="n1", cpu="1", memory="128Mi")
    api.add_node("g1", accelerator="nvidia-t4", gpus=1)
    for name in ("gpu-miss", "gpu-beat"):
        api.add_pod(name, slo_ms=10, gpu_milli=500, node_name="g1", cpu="100m", annotations={A_DEVICE: "0"})
    return api
