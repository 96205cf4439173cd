"""Reading the openb trace files (the I/O shell's half of ``qosched.policies.traces.openb``).

The core parses the lines it is given and never opens a file; here the files are opened and
their lines handed over, with the file's base name for error messages
(``<file>:<line>: column <column>: <what>``). Used by ``qosched whatif --nodes/--pods`` and the
benchmarks.
"""

from __future__ import annotations

import os

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.simulator.scenarios import (
    Workload,
    contended_workload,
    fgd_workload,
    trace_workload,
)
from qosched.policies.traces.openb import (
    NodeTable,
    OpenbTrace,
    PodTable,
    TraceNode,
    TracePod,
    parse_nodes,
    parse_pod_list,
)

__all__ = [
    "read_node_table",
    "read_nodes",
    "read_openb_trace",
    "read_pod_list",
    "read_pod_table",
    "read_pods",
    "workload_from_trace_files",
]


def read_nodes(path: str | os.PathLike[str]) -> tuple[TraceNode, ...]:
    """Read an openb node list (:func:`~qosched.policies.traces.openb.parse_nodes`).

    Raises ``TraceFormatError`` (naming file, line and column) or ``OSError``.
    """
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return parse_nodes(handle, os.path.basename(path))


def read_pods(path: str | os.PathLike[str]) -> tuple[TracePod, ...]:
    """Read an openb pod list, full or short form (:func:`~qosched.policies.traces.openb.parse_pods`).

    Raises ``TraceFormatError`` (naming file, line and column) or ``OSError``.
    """
    return read_pod_list(path)[0]


def read_pod_list(path: str | os.PathLike[str]) -> tuple[tuple[TracePod, ...], tuple[str, ...]]:
    """Read an openb pod list and the optional columns it lacks
    (:func:`~qosched.policies.traces.openb.parse_pod_list`)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return parse_pod_list(handle, os.path.basename(path))


def read_node_table(path: str | os.PathLike[str]) -> NodeTable:
    """:func:`read_nodes` in columnar form."""
    return NodeTable.from_rows(read_nodes(path))


def read_pod_table(path: str | os.PathLike[str]) -> PodTable:
    """:func:`read_pods` in columnar form."""
    return PodTable.from_rows(read_pods(path))


def read_openb_trace(nodes_csv: str | os.PathLike[str], pods_csv: str | os.PathLike[str]) -> OpenbTrace:
    """A node list and a pod list (full or short form), read, as the workload builders take
    them; the pod list's missing optional columns are recorded (``missing_pod_columns``) so
    that a mode needing one refuses with a line naming it."""
    pods, missing = read_pod_list(pods_csv)
    return OpenbTrace(
        nodes=read_nodes(nodes_csv),
        pods=pods,
        nodes_file=os.path.basename(nodes_csv),
        pods_file=os.path.basename(pods_csv),
        missing_pod_columns=missing,
    )


def workload_from_trace_files(
    nodes_csv: str | os.PathLike[str],
    pods_csv: str | os.PathLike[str],
    *,
    inflate: float | None = None,
    rng: np.random.Generator | None = None,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    max_pods: int | None = None,
    departures: bool = False,
    interarrival_s: float | None = None,
) -> Workload:
    """The workload ``qosched whatif --nodes/--pods`` options describe: read the files, then
    build it with the one function of its mode (``scenarios.trace_workload``,
    ``fgd_workload`` or ``contended_workload``).

    The options map to modes as the CLI's flags do: no ``inflate`` is trace mode (then
    ``departures`` and ``interarrival_s`` are rejected: the trace's own times already have
    arrivals and departures); ``inflate`` is FGD mode, with ``departures`` contention mode.
    Option combinations are checked before any file is read.

    Raises
    ------
    ValueError
        Options out of place (``departures`` or ``interarrival_s`` without ``inflate``,
        ``inflate`` without ``rng``), a bad ratio or gap, a trace with no GPU request to inflate.
    TraceFormatError, OSError
        From reading the files.
    """
    if inflate is None and (departures or interarrival_s is not None):
        raise ValueError(
            "openb workload: departures and interarrival_s apply to an inflated workload "
            "(the trace's own times already have arrivals and departures)"
        )
    if inflate is not None and rng is None:
        raise ValueError("openb workload: inflate needs an rng")
    trace = read_openb_trace(nodes_csv, pods_csv)
    if inflate is None:
        return trace_workload(trace, classes=classes, max_pods=max_pods)
    assert rng is not None
    build = contended_workload if departures else fgd_workload
    if interarrival_s is None:
        return build(trace, inflate, rng, classes=classes, max_pods=max_pods)
    return build(trace, inflate, rng, interarrival_s=interarrival_s, classes=classes, max_pods=max_pods)
