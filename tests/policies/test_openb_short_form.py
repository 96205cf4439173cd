"""The short-form pod lists of the FGD repository (``name,cpu_milli,memory_mib,num_gpu,gpu_milli``):
they load with every missing column's default stated, FGD-mode replays take them, and the modes
that need a missing column refuse with one line naming it (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qosched.extender.cli.trace_files import read_openb_trace, read_pod_list, workload_from_trace_files
from qosched.policies.simulator.scenarios import contended_workload, fgd_workload, trace_workload
from qosched.policies.traces.openb import (
    POD_COLUMNS,
    POD_OPTIONAL_COLUMNS,
    POD_REQUIRED_COLUMNS,
    PodTable,
    TraceFormatError,
)

FULL = [
    "openb-pod-0000,12000,16384,1,1000,,LS,Running,0,12537496,0",
    "openb-pod-0001,6000,12288,1,460,V100M16|T4,Burstable,Running,427061,12902960,427061",
    "openb-pod-0038,16000,65536,2,1000,,LS,Running,4450474,12902960,4450474",
    "openb-pod-0100,8000,30517,0,0,,BE,Pending,9000000,9000100,",
]
NODES = [
    "sn,cpu_milli,memory_mib,gpu,model",
    "openb-node-0001,64000,262144,2,P100",
    "openb-node-0002,96000,786432,8,V100M32",
]


def _short(rows: list[str]) -> list[str]:
    return [",".join(POD_REQUIRED_COLUMNS)] + [",".join(r.split(",")[:5]) for r in rows]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("\n".join(NODES) + "\n", encoding="utf-8")
    pods = tmp_path / "openb_pod_list_short.csv"
    pods.write_text("\n".join(_short(FULL)) + "\n", encoding="utf-8")
    return nodes, pods


def test_short_form_loads_with_stated_defaults(files: tuple[Path, Path]) -> None:
    pods, missing = read_pod_list(files[1])
    assert missing == POD_OPTIONAL_COLUMNS
    assert [(p.name, p.cpu_milli, p.num_gpu, p.gpu_milli) for p in pods] == [
        ("openb-pod-0000", 12000, 1, 1000),
        ("openb-pod-0001", 6000, 1, 460),
        ("openb-pod-0038", 16000, 2, 1000),
        ("openb-pod-0100", 8000, 0, 0),
    ]
    # any GPU type, the default class (qos None), no phase and no times
    assert {(p.gpu_spec, p.qos, p.phase, p.creation_s, p.deletion_s, p.scheduled_s) for p in pods} == {
        ((), None, None, None, None, None)
    }
    table = PodTable.from_rows(pods)
    assert np.isinf(table.creation_s).all()
    assert table.to_rows() == pods


def test_full_form_reports_nothing_missing(tmp_path: Path) -> None:
    path = tmp_path / "full.csv"
    path.write_text("\n".join([",".join(POD_COLUMNS), *FULL]) + "\n", encoding="utf-8")
    pods, missing = read_pod_list(path)
    assert missing == ()
    assert pods[1].gpu_spec == ("V100M16", "T4")
    assert pods[1].qos == "Burstable"


def test_fgd_mode_takes_the_short_form(files: tuple[Path, Path]) -> None:
    trace = read_openb_trace(*files)
    workload = fgd_workload(trace, 1.3, np.random.default_rng(0))
    assert {p.qos_class for p in workload.pods} == {"batch"}  # ClassConfig.default_class
    assert all(p.gpu_spec == () for p in workload.pods)
    assert not workload.departs


@pytest.mark.parametrize(
    ("build", "column"),
    [
        (lambda t: trace_workload(t), "creation_time"),
        (lambda t: contended_workload(t, 1.3, np.random.default_rng(0)), "deletion_time"),
    ],
    ids=["trace-mode", "contention-mode"],
)
def test_modes_needing_times_name_the_column(files: tuple[Path, Path], build, column: str) -> None:  # type: ignore[no-untyped-def]
    trace = read_openb_trace(*files)
    with pytest.raises(TraceFormatError, match=f"column {column}: missing") as info:
        build(trace)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("openb_pod_list_short.csv: column ")


def test_departures_option_names_the_column(files: tuple[Path, Path]) -> None:
    with pytest.raises(TraceFormatError, match="deletion_time") as info:
        workload_from_trace_files(*files, inflate=1.3, rng=np.random.default_rng(0), departures=True)
    assert "--departures" in str(info.value)
