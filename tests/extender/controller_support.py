"""Shared by the controller loops' tests: the RBAC the controller process runs under.

The controller's ServiceAccount and the roles bound to it: the base install's
(``manifests/rbac.yaml``) and, since the base/components split, the controller component's
(``manifests/components/controller/rbac.yaml``). A fake apiserver enforcing them fails a loop
whose calls the shipped manifests do not allow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
