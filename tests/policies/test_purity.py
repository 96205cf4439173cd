"""The core is pure by construction: what ``qosched.policies`` imports and calls.

import-linter (``.importlinter``) keeps the shell's packages out of the core; these tests cover
what it cannot see: heavy optional imports (cvxpy) and calls that read files, the environment or
the clock.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "qosched.policies.fairness",
        "qosched.policies.fairness.shares",
        "qosched.policies.control",
        "qosched.policies.registry",
    ],
    ids=["fairness", "shares", "control", "placement"],
)
def test_importing_leaves_cvxpy_out(module: str) -> None:
    """cvxpy is imported by building a FairShareSolver (a solve), never by an import."""
    code = f"import sys, {module}; print('cvxpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_building_a_solver_imports_cvxpy() -> None:
    code = (
        "import sys\n"
        "from qosched.policies.fairness import FairShareSolver\n"
        "FairShareSolver(2, ['a', 'b'])\n"
        "print('cvxpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# ---------------------------------------------------------------------------------------------
# No file, environment, clock or network access anywhere in the core (a static check of the
# source: what import-linter cannot see is a call to a builtin or a standard-library module).

POLICIES = Path(__file__).resolve().parents[2] / "policies"

#: Standard-library modules that read files, the environment, the clock or the network.
FORBIDDEN_MODULES = frozenset(
    {"os", "sys", "io", "time", "datetime", "pathlib", "glob", "shutil", "tempfile", "socket"}
    | {"subprocess", "urllib", "http", "json", "pickle", "shelve", "sqlite3", "random"}
)
#: Builtins and attribute names that do I/O or read a clock (``np.load``, ``pd.read_csv``, ...).
FORBIDDEN_CALLS = frozenset({"open", "input", "breakpoint"})
FORBIDDEN_ATTRIBUTES = frozenset(
    {"environ", "getenv", "perf_counter", "monotonic", "read_csv", "loadtxt", "genfromtxt", "fromfile"}
    | {"tofile", "savetxt", "read_text", "write_text", "read_bytes", "write_bytes"}
)


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(POLICIES.parent)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        found += [
            f"{where}:{node.lineno}: imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES
        ]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            found.append(f"{where}:{node.lineno}: calls {node.func.id}()")
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(f"{where}:{node.lineno}: uses .{node.attr}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr in {"load", "save", "savez"}
            and isinstance(node.value, ast.Name)
            and node.value.id in {"np", "numpy", "json", "pickle"}
        ):
            found.append(f"{where}:{node.lineno}: calls {node.value.id}.{node.attr}")
    return found


def test_the_core_reads_no_file_environment_or_clock() -> None:
    files = sorted(POLICIES.rglob("*.py"))
    assert len(files) > 50  # the whole core is scanned
    findings = [f for path in files for f in _findings(path)]
    assert findings == []


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("import os\n", "imports os"),
        ("from pathlib import Path\n", "imports pathlib"),
        ("import time\nt = time.perf_counter()\n", "uses .perf_counter"),
        ("x = open('f')\n", "calls open()"),
        ("import numpy as np\na = np.load('f.npy')\n", "calls np.load"),
        ("def f(env):\n    return env.environ\n", "uses .environ"),
    ],
    ids=["os", "pathlib", "clock", "open", "np-load", "environ"],
)
def test_the_check_finds_what_it_forbids(
    tmp_path: Path, source: str, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "POLICIES", tmp_path / "policies")
    path = tmp_path / "policies" / "probe.py"
    path.parent.mkdir()
    path.write_text(source, encoding="utf-8")
    assert any(what in f for f in _findings(path))
