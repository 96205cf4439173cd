"""The core is pure by construction: what ``qosched.policies`` imports and calls.

import-linter (``.importlinter``) keeps the shell's packages out of the core; these tests cover
what it cannot see: heavy optional imports (cvxpy) and calls that read files, the environment or
the clock.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "qosched.policies.fairness",
        "qosched.policies.fairness.shares",
        "qosched.policies.control",
        "qosched.policies.placement.builtin",
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
