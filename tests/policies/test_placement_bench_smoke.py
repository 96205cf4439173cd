"""The policy benchmark still runs end to end (tiny cluster, one repetition)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_policies.py"


def test_bench_policies_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_policies", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--nodes", "12", "--repeat", "1", "--policies", "default,qosched,ibis-spread"])
    out = capsys.readouterr().out
    assert "12 nodes x 4 GPUs x 3 services" in out
    for name in ("default", "qosched", "ibis-spread"):
        line = next(row for row in out.splitlines() if row.startswith(name + " "))
        assert line.rstrip().endswith("/12")
