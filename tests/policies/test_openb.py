"""Tests of the openb (Alibaba GPU trace v2023) parser (``policies.traces.openb``) and the shell
that reads its files (``extender.cli.trace_files``): real files and malformed temp files."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qosched.extender.cli.trace_files import read_node_table, read_nodes, read_pod_table, read_pods
from qosched.policies.traces.openb import (
    NODE_COLUMNS,
    POD_COLUMNS,
    ClusterCapacity,
    NodeTable,
    PodTable,
    TraceFormatError,
    cluster_capacity,
    parse_pods,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "alibaba-gpu-v2023"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"trace not found at {DATA}")

# First rows of openb_pod_list_default.csv (rows 0-3) and openb-pod-0038 (a 2-GPU pod) and a
# Pending pod with an empty scheduled_time, from ../shared/data/alibaba-gpu-v2023/.
POD_HEADER = ",".join(POD_COLUMNS)
POD_ROWS = [
    "openb-pod-0000,12000,16384,1,1000,,LS,Running,0,12537496,0",
    "openb-pod-0001,6000,12288,1,460,,LS,Running,427061,12902960,427061",
    "openb-pod-0002,12000,24576,1,1000,,LS,Running,1558381,12902960,1558381",
    "openb-pod-0003,6000,12288,1,460,,LS,Running,2021204,12902960,2021204",
    "openb-pod-0038,16000,65536,2,1000,,LS,Running,4450474,12902960,4450474",
    "openb-pod-0100,8000,30517,0,0,,BE,Pending,9000000,9000100,",
]
# First rows of openb_node_list_all_node.csv (a CPU node) and openb_node_list_gpu_node.csv.
NODE_HEADER = ",".join(NODE_COLUMNS)
NODE_ROWS = [
    "openb-node-0000,32000,262144,0,",
    "openb-node-0001,64000,262144,2,P100",
    "openb-node-0002,96000,786432,8,V100M32",
]


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def with_cell(row: str, columns: tuple[str, ...], column: str, value: str) -> str:
    cells = row.split(",")
    cells[columns.index(column)] = value
    return ",".join(cells)


# ---------------------------------------------------------------------------------------------
# Real files


@needs_data
@pytest.mark.parametrize(
    ("file", "rows"),
    [
        ("openb_pod_list_default.csv", 8152),
        ("openb_pod_list_cpu050.csv", 7439),
        ("openb_pod_list_gpushare20.csv", 8152),
        ("openb_pod_list_gpushare100.csv", 8152),
    ],
    ids=["default", "cpu050", "gpushare20", "gpushare100"],
)
def test_real_pod_lists_load(file: str, rows: int) -> None:
    pods = read_pods(DATA / file)
    assert len(pods) == rows
    assert len({p.name for p in pods}) == rows


@needs_data
def test_real_default_pod_list_facts() -> None:
    pods = read_pods(DATA / "openb_pod_list_default.csv")
    # Counts checked with an independent csv.DictReader pass over the file.
    assert sum(p.num_gpu == 0 for p in pods) == 1088
    multi = [p for p in pods if p.num_gpu > 1]
    assert len(multi) == 75
    assert {p.gpu_milli for p in multi} == {1000}
    assert sum(p.scheduled_s is None for p in pods) == 897
    assert all(p.phase == "Pending" for p in pods if p.scheduled_s is None)
    assert {p.qos for p in pods} == {"LS", "BE", "Burstable", "Guaranteed"}
    assert all(p.gpu_spec == () for p in pods)
    assert pods[1].gpu_milli == 460
    assert pods[1].creation_s == 427061.0
    assert sum(p.total_gpu_milli for p in pods) == 6_086_800


@needs_data
def test_real_node_lists() -> None:
    all_nodes = read_nodes(DATA / "openb_node_list_all_node.csv")
    gpu_nodes = read_nodes(DATA / "openb_node_list_gpu_node.csv")
    assert len(all_nodes) == 1523
    assert len(gpu_nodes) == 1213
    assert sum(n.gpu_count for n in gpu_nodes) == 6212
    assert sum(n.gpu_model is None for n in all_nodes) == 310
    assert all(n.gpu_count == 0 for n in all_nodes if n.gpu_model is None)
    assert cluster_capacity(gpu_nodes) == ClusterCapacity(
        cpu_milli=107_018_000, memory_mib=503_828_480, gpu_milli=6_212_000
    )


@needs_data
def test_real_tables_match_rows() -> None:
    pods = read_pods(DATA / "openb_pod_list_default.csv")
    table = read_pod_table(DATA / "openb_pod_list_default.csv")
    assert len(table) == len(pods)
    assert table.to_rows() == pods
    assert int(table.total_gpu_milli.sum()) == sum(p.total_gpu_milli for p in pods)
    assert int(np.isinf(table.scheduled_s).sum()) == 897
    nodes = read_node_table(DATA / "openb_node_list_gpu_node.csv")
    assert cluster_capacity(nodes) == cluster_capacity(nodes.to_rows())


# ---------------------------------------------------------------------------------------------
# Small files: quirks that must be read


def test_small_pod_file(tmp_path: Path) -> None:
    pods = read_pods(write(tmp_path, "p.csv", [POD_HEADER, *POD_ROWS]))
    assert [p.num_gpu * p.gpu_milli for p in pods] == [1000, 460, 1000, 460, 2000, 0]
    assert [p.total_gpu_milli for p in pods] == [1000, 460, 1000, 460, 2000, 0]
    assert [p.is_gpu_sharing for p in pods] == [False, True, False, True, False, False]
    pending = pods[-1]
    assert pending.scheduled_s is None
    assert pending.deletion_s == 9000100.0
    assert pending.phase == "Pending"


def test_small_node_file(tmp_path: Path) -> None:
    nodes = read_nodes(write(tmp_path, "n.csv", [NODE_HEADER, *NODE_ROWS]))
    assert [(n.gpu_count, n.gpu_model, n.gpu_milli) for n in nodes] == [
        (0, None, 0),
        (2, "P100", 2000),
        (8, "V100M32", 8000),
    ]
    table = NodeTable.from_rows(nodes)
    assert table.gpu_milli.tolist() == [0, 2000, 8000]
    assert table.to_rows() == nodes


@pytest.mark.parametrize(
    ("column", "text", "attribute", "want"),
    [
        ("gpu_milli", "460.0", "gpu_milli", 460),
        ("cpu_milli", " 6000 ", "cpu_milli", 6000),
        ("gpu_spec", "V100M16|V100M32|V100M32", "gpu_spec", ("V100M16", "V100M32")),
        ("gpu_spec", "|T4|", "gpu_spec", ("T4",)),
        ("creation_time", "427060.5", "creation_s", 427060.5),
        ("deletion_time", "", "deletion_s", None),
    ],
    ids=[
        "integral-float",
        "spaces",
        "spec-repeats-dropped",
        "spec-empty-items",
        "fractional-time",
        "no-deletion",
    ],
)
def test_accepted_cells(tmp_path: Path, column: str, text: str, attribute: str, want: object) -> None:
    row = with_cell(POD_ROWS[1], POD_COLUMNS, column, text)
    (pod,) = read_pods(write(tmp_path, "p.csv", [POD_HEADER, row]))
    assert getattr(pod, attribute) == want


def test_bom_extra_column_and_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    lines = [POD_HEADER + ",gpu_index", POD_ROWS[0] + ",0", "", POD_ROWS[1] + ",1"]
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    assert [p.name for p in read_pods(path)] == ["openb-pod-0000", "openb-pod-0001"]


def test_missing_times_are_inf_in_table(tmp_path: Path) -> None:
    row = with_cell(POD_ROWS[5], POD_COLUMNS, "deletion_time", "")
    table = PodTable.from_rows(read_pods(write(tmp_path, "p.csv", [POD_HEADER, POD_ROWS[0], row])))
    assert table.deletion_s.tolist() == [12537496.0, math.inf]
    assert table.scheduled_s.tolist() == [0.0, math.inf]
    assert table.row(1).deletion_s is None
    assert table.row(1).scheduled_s is None
    with pytest.raises(ValueError, match="read-only"):
        table.cpu_milli[0] = 1  # read-only columns


# ---------------------------------------------------------------------------------------------
# Malformed files: the error names the file, the line (header = 1) and the column


def test_error_message_format(tmp_path: Path) -> None:
    rows = [POD_ROWS[i % 4].replace(f"pod-000{i % 4}", f"pod-{i:04d}") for i in range(20)]
    rows[15] = with_cell(rows[15], POD_COLUMNS, "gpu_milli", "abc")  # data row 16 = line 17
    path = write(tmp_path, "openb_pod_list_default.csv", [POD_HEADER, *rows])
    with pytest.raises(TraceFormatError) as info:
        read_pods(path)
    assert (
        str(info.value)
        == "openb_pod_list_default.csv:17: column gpu_milli: expected an integer 0..1000, got 'abc'"
    )
    assert (info.value.file, info.value.line, info.value.column) == (
        "openb_pod_list_default.csv",
        17,
        "gpu_milli",
    )


POD_CASES = [
    # (data row, column, bad text, column named in the error, text expected in the message)
    (0, "gpu_milli", "abc", "gpu_milli", "expected an integer 0..1000, got 'abc'"),
    (1, "gpu_milli", "1001", "gpu_milli", "expected an integer 0..1000, got '1001'"),
    (1, "gpu_milli", "-5", "gpu_milli", "expected an integer 0..1000, got '-5'"),
    (1, "gpu_milli", "460.5", "gpu_milli", "expected an integer 0..1000, got '460.5'"),
    (2, "cpu_milli", "", "cpu_milli", "expected an integer >= 0, got ''"),
    (2, "memory_mib", "nan", "memory_mib", "got 'nan'"),
    (3, "num_gpu", "-1", "num_gpu", "expected an integer >= 0, got '-1'"),
    (5, "gpu_milli", "460", "gpu_milli", "expected 0 for a CPU-only pod"),
    (4, "gpu_milli", "500", "gpu_milli", "takes whole GPUs: expected 1000, got 500"),
    (0, "gpu_milli", "0", "gpu_milli", "1..1000 for a pod with num_gpu 1"),
    (1, "creation_time", "-3", "creation_time", "expected a time in seconds >= 0, got '-3'"),
    (1, "creation_time", "", "creation_time", "got an empty cell"),
    (1, "deletion_time", "inf", "deletion_time", "got 'inf'"),
    (1, "deletion_time", "427060", "deletion_time", "is before creation_time"),
    (1, "scheduled_time", "1", "scheduled_time", "is before creation_time"),
    (1, "qos", "Gold", "qos", "expected one of BE, Burstable, Guaranteed, LS, got 'Gold'"),
    (1, "pod_phase", "Done", "pod_phase", "got 'Done'"),
    (3, "name", "", "name", "expected a name, got an empty cell"),
]


@pytest.mark.parametrize(
    ("row", "column", "text", "named", "message"),
    POD_CASES,
    ids=[
        "milli-not-int",
        "milli-above-1000",
        "milli-negative",
        "milli-fraction",
        "cpu-empty",
        "memory-nan",
        "num-gpu-negative",
        "cpu-pod-with-milli",
        "multi-gpu-fraction",
        "one-gpu-zero-milli",
        "creation-negative",
        "creation-empty",
        "deletion-inf",
        "deletion-before-creation",
        "scheduled-before-creation",
        "qos-unknown",
        "phase-unknown",
        "name-empty",
    ],
)
def test_malformed_pod_cell(
    tmp_path: Path, row: int, column: str, text: str, named: str, message: str
) -> None:
    rows = list(POD_ROWS)
    rows[row] = with_cell(rows[row], POD_COLUMNS, column, text)
    with pytest.raises(TraceFormatError) as info:
        read_pods(write(tmp_path, "bad_pods.csv", [POD_HEADER, *rows]))
    error = info.value
    assert (error.file, error.line, error.column) == ("bad_pods.csv", row + 2, named)
    assert str(error).startswith(f"bad_pods.csv:{row + 2}: column {named}: ")
    assert message in str(error)


@pytest.mark.parametrize(
    ("row", "column", "text", "message"),
    [
        (1, "gpu", "x", "expected an integer >= 0, got 'x'"),
        (2, "cpu_milli", "1.5", "got '1.5'"),
        (0, "memory_mib", "-1", "got '-1'"),
        (2, "sn", " ", "expected a name"),
    ],
    ids=["gpu-not-int", "cpu-fraction", "memory-negative", "name-blank"],
)
def test_malformed_node_cell(tmp_path: Path, row: int, column: str, text: str, message: str) -> None:
    rows = list(NODE_ROWS)
    rows[row] = with_cell(rows[row], NODE_COLUMNS, column, text)
    with pytest.raises(TraceFormatError) as info:
        read_nodes(write(tmp_path, "bad_nodes.csv", [NODE_HEADER, *rows]))
    assert str(info.value).startswith(f"bad_nodes.csv:{row + 2}: column {column}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("loader", "header", "rows", "missing"),
    [
        (read_pods, POD_COLUMNS, POD_ROWS, "gpu_milli"),
        (read_pods, POD_COLUMNS, POD_ROWS, "name"),
        (read_nodes, NODE_COLUMNS, NODE_ROWS, "model"),
        (read_nodes, NODE_COLUMNS, NODE_ROWS, "sn"),
    ],
    ids=["pod-gpu_milli", "pod-name", "node-model", "node-sn"],
)
def test_missing_column(
    tmp_path: Path, loader: Callable[[Path], object], header: tuple[str, ...], rows: list[str], missing: str
) -> None:
    keep = [i for i, c in enumerate(header) if c != missing]
    lines = [",".join(header[i] for i in keep)] + [",".join(r.split(",")[i] for i in keep) for r in rows]
    with pytest.raises(TraceFormatError) as info:
        loader(write(tmp_path, "short.csv", lines))
    assert str(info.value).startswith("short.csv: missing column(s) ")
    assert missing in str(info.value)
    assert info.value.line is None


@pytest.mark.parametrize(
    ("lines", "where", "message"),
    [
        ([], "empty.csv", "empty file"),
        (
            [POD_HEADER, POD_ROWS[0], "openb-pod-0009,1000,1"],
            "empty.csv:3",
            "expected 11 fields",
        ),
        ([POD_HEADER, POD_ROWS[0], "", POD_ROWS[0]], "empty.csv", "duplicate name 'openb-pod-0000'"),
        (
            [POD_HEADER, POD_ROWS[0], "", with_cell(POD_ROWS[1], POD_COLUMNS, "qos", "X")],
            "empty.csv:4",
            "qos",
        ),
    ],
    ids=["empty-file", "short-row", "duplicate-name", "line-counts-blank-lines"],
)
def test_malformed_file(tmp_path: Path, lines: list[str], where: str, message: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    with pytest.raises(TraceFormatError) as info:
        read_pods(path)
    assert str(info.value).startswith(where + ":")
    assert message in str(info.value)


def test_parser_takes_lines_without_a_file() -> None:
    """The core parses what it is given (no file is opened); a byte order mark left in the text
    by a reader that did not decode it away is tolerated too."""
    lines = ["\ufeff" + POD_HEADER + "\n", POD_ROWS[0] + "\n"]
    assert [p.name for p in parse_pods(lines, "given.csv")] == ["openb-pod-0000"]
    with pytest.raises(TraceFormatError, match=r"^given\.csv:2: column qos: "):
        parse_pods([POD_HEADER, with_cell(POD_ROWS[0], POD_COLUMNS, "qos", "X")], "given.csv")
