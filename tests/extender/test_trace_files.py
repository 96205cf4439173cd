"""The shell's reading of openb trace files and its mapping of ``qosched whatif`` flags to modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qosched.extender.cli.trace_files import read_openb_trace, workload_from_trace_files
from qosched.policies.simulator.scenarios import contended_workload, fgd_workload, trace_workload

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "alibaba-gpu-v2023"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"trace not found at {DATA}")
NODES = DATA / "openb_node_list_gpu_node.csv"
PODS = DATA / "openb_pod_list_default.csv"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"departures": True}, "apply to an inflated workload"),
        ({"interarrival_s": 0.5}, "apply to an inflated workload"),
        ({"inflate": 0.05}, "inflate needs an rng"),
        ({"inflate": 0.05, "interarrival_s": 0.0, "rng": 0}, "interarrival_s must be a number > 0"),
        ({"inflate": 0.05, "interarrival_s": float("nan"), "rng": 0}, "interarrival_s must be a number > 0"),
    ],
    ids=["departures-without-inflate", "gap-without-inflate", "inflate-without-rng", "zero-gap", "nan-gap"],
)
@needs_data
def test_flags_out_of_place_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    if "rng" in kwargs:
        kwargs["rng"] = np.random.default_rng(kwargs["rng"])
    with pytest.raises(ValueError, match=message):
        workload_from_trace_files(NODES, PODS, **kwargs)


@needs_data
@pytest.mark.parametrize(
    ("kwargs", "mode"),
    [
        ({}, "trace-times"),
        ({"inflate": 0.05}, "fgd-inflation"),
        ({"inflate": 0.05, "departures": True}, "fgd-inflation-with-departures"),
        ({"inflate": 0.05, "departures": True, "interarrival_s": 0.2}, "fgd-inflation-with-departures"),
    ],
    ids=["trace", "fgd", "contended", "contended-gap"],
)
def test_flags_pick_the_mode_function(kwargs: dict[str, Any], mode: str) -> None:
    """The files read once, then the one builder of the mode: the same workload as calling it."""
    files = read_openb_trace(NODES, PODS)
    got = workload_from_trace_files(NODES, PODS, rng=np.random.default_rng(3), max_pods=60, **kwargs)
    assert got.description["mode"] == mode
    assert got.description["nodes_file"] == NODES.name
    assert got.description["pods_file"] == PODS.name
    rng = np.random.default_rng(3)
    gap = {"interarrival_s": kwargs["interarrival_s"]} if "interarrival_s" in kwargs else {}
    if "inflate" not in kwargs:
        want = trace_workload(files, max_pods=60)
    elif kwargs.get("departures"):
        want = contended_workload(files, 0.05, rng, max_pods=60, **gap)
    else:
        want = fgd_workload(files, 0.05, rng, max_pods=60, **gap)
    assert [p.uid for p in got.pods] == [p.uid for p in want.pods]
    np.testing.assert_array_equal(got.arrival_s, want.arrival_s)
    np.testing.assert_array_equal(got.duration_s, want.duration_s)
    assert got.description == want.description


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="no-such"):
        read_openb_trace(tmp_path / "no-such-nodes.csv", tmp_path / "no-such-pods.csv")
