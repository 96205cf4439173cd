"""A kubeconfig file pointing at a fake API server (one writer for every test that needs one)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(url: str, path: Path, *, token: str | None = None) -> Path:
    """Write a kubeconfig for the server at ``url`` to ``path`` and return ``path``.

    Without ``token`` the user has no credentials (the fake's authorizer, where one is set, fixes
    the user); with one, user ``qosched`` sends it as a bearer token (the fake accepts any).
    """
    user = {"name": "u", "user": {}} if token is None else {"name": "qosched", "user": {"token": token}}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [user],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": user["name"]}}],
                "current-context": "fake",
            }
        )
    )
    return path
