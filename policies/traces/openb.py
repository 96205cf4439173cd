"""Parser of the Alibaba GPU cluster trace v2023 ("openb", the FGD paper's trace).

Pure: the functions here parse the lines of a CSV file they are given (:func:`parse_nodes`,
:func:`parse_pods`) and never open one; reading the files is the I/O shell's job
(``qosched.extender.cli.trace_files``: ``read_nodes(path)``, ``read_pods(path)``,
``read_openb_trace(nodes_csv, pods_csv)``).

The trace (``../shared/data/alibaba-gpu-v2023/``, see its ``PROVENANCE.md``) has two kinds of
CSV file, both with a header line:

* node lists ``openb_node_list_*.csv``: ``sn, cpu_milli, memory_mib, gpu, model``;
* pod lists ``openb_pod_list_*.csv``: ``name, cpu_milli, memory_mib, num_gpu, gpu_milli,
  gpu_spec, qos, pod_phase, creation_time, deletion_time, scheduled_time``, or the short form
  of some of the FGD repository's variant lists, ``name, cpu_milli, memory_mib, num_gpu,
  gpu_milli`` (:data:`POD_REQUIRED_COLUMNS`; both are the published format).

Missing optional pod columns (:data:`POD_OPTIONAL_COLUMNS`) take these defaults, and
:func:`parse_pod_list` says which were missing so that a mode needing one can refuse clearly:

* ``gpu_spec`` → ``()``: any GPU type;
* ``qos`` → ``None``: the default service class (``ClassConfig.default_class``);
* ``pod_phase`` → ``None``: not observed;
* ``creation_time``, ``deletion_time``, ``scheduled_time`` → ``None``: no times. FGD-mode
  replays (``--inflate`` without ``--departures``) need none; trace mode and contention mode
  need them (``qosched.policies.simulator.scenarios`` raises a one-line
  :class:`TraceFormatError` naming the missing column).

Quirks of the real files, and how they are read here:

* ``model`` is empty on CPU-only nodes (``gpu == 0``) → ``TraceNode.gpu_model is None``.
* ``gpu_spec`` is empty when any GPU model will do → ``()``; otherwise it lists the allowed models
  separated by ``|`` (the FGD repository's gpuspec variants even repeat a model,
  ``V100M16|V100M32|V100M32``): empty items are dropped and repeats removed, order kept.
* ``scheduled_time`` is empty for the pods that never ran (``pod_phase == Pending``) →
  ``scheduled_s is None``; ``deletion_time`` is always filled in v2023 but an empty cell is
  accepted and means "never deleted" (``None``).
* Integer columns hold plain integers; an integral float such as ``1000.0`` (what a pandas
  round trip writes) is accepted, ``12.5`` is not. Times are seconds from the trace start and
  may be fractional.
* Extra columns are ignored (the FGD repository adds ``gpu_index`` to some lists); a UTF-8 byte
  order mark before the header is tolerated (whether or not the reader decoded it away).

How GPU requests are represented (the FGD simulator reads them the same way, see
``data/pod_csv_to_yaml.py`` in hkust-adsl/kubernetes-scheduler-simulator):

* ``num_gpu == 0``: a CPU-only pod, ``gpu_milli`` must be 0;
* ``num_gpu == 1``: ``gpu_milli`` in 1..1000 is the share of ONE GPU (a GPU-sharing pod when
  < 1000);
* ``num_gpu > 1``: a multi-GPU pod takes whole GPUs; the trace writes ``gpu_milli = 1000``
  (the per-GPU amount) and any other value is rejected.

So the pod's total request is ``num_gpu * gpu_milli`` milli-GPU (``TracePod.total_gpu_milli``),
which is what FGD's ``PodResource.TotalMilliGpu()`` computes and what the "arrived workload"
and GPU-allocation ratios are measured in.

Two forms are offered: tuples of frozen row objects (:class:`TraceNode`, :class:`TracePod`) for
readable code, and columnar numpy tables (:class:`NodeTable`, :class:`PodTable`) for vectorised
replays. Missing times are ``None`` in rows and ``+inf`` ("never") in the tables.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from qosched.policies.types import GPU_MILLI_PER_DEVICE

__all__ = [
    "NODE_COLUMNS",
    "POD_COLUMNS",
    "POD_OPTIONAL_COLUMNS",
    "POD_PHASES",
    "POD_REQUIRED_COLUMNS",
    "QOS_VALUES",
    "ClusterCapacity",
    "NodeTable",
    "OpenbTrace",
    "PodTable",
    "TraceFormatError",
    "TraceNode",
    "TracePod",
    "cluster_capacity",
    "parse_nodes",
    "parse_pod_list",
    "parse_pods",
]

#: Header of the node lists, in file order.
NODE_COLUMNS: tuple[str, ...] = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
#: Header of the pod lists, in file order.
POD_COLUMNS: tuple[str, ...] = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
#: Pod columns every pod list has (the short form has only these).
POD_REQUIRED_COLUMNS: tuple[str, ...] = POD_COLUMNS[:5]
#: Pod columns that may be missing (defaults in the module docstring).
POD_OPTIONAL_COLUMNS: tuple[str, ...] = POD_COLUMNS[5:]
#: Values of the ``qos`` column (Kubernetes QoS plus Alibaba's LS = latency-sensitive, BE = best effort).
QOS_VALUES: frozenset[str] = frozenset({"LS", "Burstable", "BE", "Guaranteed"})
#: Values of the ``pod_phase`` column (the Kubernetes pod phases).
POD_PHASES: frozenset[str] = frozenset({"Pending", "Running", "Succeeded", "Failed", "Unknown"})


class TraceFormatError(ValueError):
    """A trace file is malformed.

    The message reads ``<file>:<line>: column <column>: <what>`` (line 1 is the header), or
    ``<file>: missing column(s) ...`` for a bad header; the parts are also attributes.
    """

    def __init__(self, file: str, line: int | None, column: str | None, problem: str) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.problem = problem
        where = file if line is None else f"{file}:{line}"
        what = problem if column is None else f"column {column}: {problem}"
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True, slots=True)
class TraceNode:
    """One node of an openb node list.

    Attributes
    ----------
    name : str
        ``sn`` column, e.g. ``openb-node-0000``.
    cpu_milli : int
        CPU capacity [milli-cores].
    memory_mib : int
        Memory capacity [MiB].
    gpu_count : int
        Number of GPUs (``gpu`` column); each GPU offers 1000 milli-GPU.
    gpu_model : str or None
        GPU type (``P100``, ``T4``, ``V100M16``, ``V100M32``, ``A10``, or the undisclosed ``G1``,
        ``G2``, ``G3``); None when the cell is empty (CPU-only nodes).
    """

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int
    gpu_model: str | None

    @property
    def gpu_milli(self) -> int:
        """GPU capacity of the node [milli-GPU] = ``gpu_count * 1000``."""
        return self.gpu_count * GPU_MILLI_PER_DEVICE


@dataclass(frozen=True, slots=True)
class TracePod:
    """One pod of an openb pod list.

    Attributes
    ----------
    name : str
        Pod name, e.g. ``openb-pod-0000``.
    cpu_milli : int
        CPU request [milli-cores].
    memory_mib : int
        Memory request [MiB].
    num_gpu : int
        Number of GPUs requested (0 = CPU-only).
    gpu_milli : int
        Milli-GPU requested on EACH of the ``num_gpu`` GPUs: 1..1000 when ``num_gpu == 1``
        (< 1000 = GPU sharing), exactly 1000 when ``num_gpu > 1``, 0 when ``num_gpu == 0``.
    gpu_spec : tuple of str
        GPU models the pod may run on; empty = any (also when the list has no such column).
    qos : str or None
        ``LS``, ``Burstable``, ``BE`` or ``Guaranteed``; None when the list has no ``qos``
        column (the default service class).
    phase : str or None
        Observed ``pod_phase`` (``Running``, ``Succeeded``, ``Failed``, ``Pending``); None when
        the list has no such column.
    creation_s : float or None
        Submission time [s from the trace start]; None when the list has no times.
    deletion_s : float or None
        Deletion time [s]; None = never deleted.
    scheduled_s : float or None
        Time the production scheduler placed it [s]; None = never scheduled (Pending pods).
    """

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: tuple[str, ...]
    qos: str | None
    phase: str | None
    creation_s: float | None
    deletion_s: float | None
    scheduled_s: float | None

    @property
    def total_gpu_milli(self) -> int:
        """Total GPU request [milli-GPU] = ``num_gpu * gpu_milli`` (FGD's ``TotalMilliGpu``)."""
        return self.num_gpu * self.gpu_milli

    @property
    def is_gpu_sharing(self) -> bool:
        """True for a pod that takes a fraction (< 1000 milli) of one GPU."""
        return self.num_gpu == 1 and self.gpu_milli < GPU_MILLI_PER_DEVICE


@dataclass(frozen=True, slots=True)
class ClusterCapacity:
    """Total capacity of a set of nodes, the denominators of FGD's ratios.

    Attributes
    ----------
    cpu_milli : int
        Sum of the nodes' CPU [milli-cores].
    memory_mib : int
        Sum of the nodes' memory [MiB].
    gpu_milli : int
        Sum of the nodes' GPUs [milli-GPU] = 1000 x the number of GPUs.
    """

    cpu_milli: int
    memory_mib: int
    gpu_milli: int


def cluster_capacity(nodes: Iterable[TraceNode] | NodeTable) -> ClusterCapacity:
    """Sum the capacity of ``nodes`` (FGD's ``RecordNodeTotalResource``).

    >>> cluster_capacity([TraceNode("n0", 64000, 262144, 2, "P100"), TraceNode("n1", 32000, 1024, 0, None)])
    ClusterCapacity(cpu_milli=96000, memory_mib=263168, gpu_milli=2000)
    """
    if isinstance(nodes, NodeTable):
        return ClusterCapacity(
            cpu_milli=int(nodes.cpu_milli.sum()),
            memory_mib=int(nodes.memory_mib.sum()),
            gpu_milli=int(nodes.gpu_milli.sum()),
        )
    cpu = memory = gpu = 0
    for node in nodes:
        cpu += node.cpu_milli
        memory += node.memory_mib
        gpu += node.gpu_milli
    return ClusterCapacity(cpu_milli=cpu, memory_mib=memory, gpu_milli=gpu)


# ---------------------------------------------------------------------------------------------
# Cell parsing: every failure names the file, the line and the column.


class _CellError(ValueError):
    """A cell's text is not what its column holds (message: what was expected and got)."""


def _parse_int(text: str, *, low: int = 0, high: int | None = None) -> int:
    """Parse an integer cell in ``low..high``; an integral float (``1000.0``) is accepted."""
    expected = f"an integer {low}..{high}" if high is not None else f"an integer >= {low}"
    stripped = text.strip()
    try:
        value = int(stripped)
    except ValueError:
        try:
            as_float = float(stripped)
        except ValueError:
            raise _CellError(f"expected {expected}, got {text!r}") from None
        if not (math.isfinite(as_float) and as_float.is_integer()):
            raise _CellError(f"expected {expected}, got {text!r}") from None
        value = int(as_float)
    if value < low or (high is not None and value > high):
        raise _CellError(f"expected {expected}, got {text!r}")
    return value


def _parse_time(text: str) -> float | None:
    """Parse a time [s] >= 0; an empty cell is None."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        value = float(stripped)
    except ValueError:
        raise _CellError(f"expected a time in seconds >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise _CellError(f"expected a time in seconds >= 0, got {text!r}")
    return value


class _Cells:
    """The cells of one data row, read by column name; errors carry file, line and column."""

    __slots__ = ("_cells", "_file", "_index", "line")

    def __init__(self, file: str, line: int, index: Mapping[str, int], cells: Sequence[str]) -> None:
        self._file = file
        self._index = index
        self._cells = cells
        self.line = line

    def error(self, column: str | None, problem: str) -> TraceFormatError:
        return TraceFormatError(self._file, self.line, column, problem)

    def has(self, column: str) -> bool:
        return column in self._index

    def text(self, column: str) -> str:
        return self._cells[self._index[column]]

    def integer(self, column: str, *, high: int | None = None) -> int:
        try:
            return _parse_int(self.text(column), high=high)
        except _CellError as exc:
            raise self.error(column, str(exc)) from None

    def time(self, column: str, *, optional: bool) -> float | None:
        try:
            value = _parse_time(self.text(column))
        except _CellError as exc:
            raise self.error(column, str(exc)) from None
        if value is None and not optional:
            raise self.error(column, "expected a time in seconds >= 0, got an empty cell")
        return value

    def name(self, column: str) -> str:
        value = self.text(column).strip()
        if not value:
            raise self.error(column, "expected a name, got an empty cell")
        return value

    def choice(self, column: str, allowed: frozenset[str]) -> str:
        value = self.text(column).strip()
        if value not in allowed:
            raise self.error(column, f"expected one of {', '.join(sorted(allowed))}, got {value!r}")
        return value


def _iter_cells(
    lines: Iterable[str],
    file: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    header_out: list[str] | None = None,
) -> Iterator[_Cells]:
    """Yield the data rows of a CSV text after checking its header has ``required`` columns.

    ``lines`` are the file's lines (an open text file will do; open it with ``newline=""`` as
    the csv module asks); ``file`` names it in error messages. Columns of ``optional`` that
    the header has are indexed too (:meth:`_Cells.has` tells which); ``header_out``, if
    given, receives the header's column names once it is read.
    """
    reader = csv.reader(_without_bom(lines))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceFormatError(file, None, None, "empty file, expected a header line") from None
    except csv.Error as exc:
        raise TraceFormatError(file, reader.line_num, None, f"unreadable CSV: {exc}") from None
    names = [h.strip() for h in header]
    if header_out is not None:
        header_out.extend(names)
    missing = [c for c in required if c not in names]
    if missing:
        raise TraceFormatError(
            file, None, None, f"missing column(s) {', '.join(missing)}; the header is {','.join(names)}"
        )
    index = {name: names.index(name) for name in (*required, *optional) if name in names}
    width = len(names)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TraceFormatError(file, reader.line_num, None, f"unreadable CSV: {exc}") from None
        if not cells:  # csv gives [] for a blank line
            continue
        if len(cells) != width:
            raise TraceFormatError(
                file, reader.line_num, None, f"expected {width} fields as in the header, got {len(cells)}"
            )
        yield _Cells(file, reader.line_num, index, cells)


def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` with a UTF-8 byte order mark dropped from the first one."""
    it = iter(lines)
    first = next(it, None)
    if first is None:
        return
    yield first.removeprefix("\ufeff")
    yield from it


def _node_from_cells(row: _Cells) -> TraceNode:
    model = row.text("model").strip()
    return TraceNode(
        name=row.name("sn"),
        cpu_milli=row.integer("cpu_milli"),
        memory_mib=row.integer("memory_mib"),
        gpu_count=row.integer("gpu"),
        gpu_model=model or None,
    )


def _pod_from_cells(row: _Cells) -> TracePod:
    num_gpu = row.integer("num_gpu")
    gpu_milli = row.integer("gpu_milli", high=GPU_MILLI_PER_DEVICE)
    if num_gpu == 0 and gpu_milli != 0:
        raise row.error("gpu_milli", f"expected 0 for a CPU-only pod (num_gpu 0), got {gpu_milli}")
    if num_gpu == 1 and gpu_milli == 0:
        raise row.error("gpu_milli", "expected an integer 1..1000 for a pod with num_gpu 1, got 0")
    if num_gpu > 1 and gpu_milli != GPU_MILLI_PER_DEVICE:
        raise row.error(
            "gpu_milli",
            f"a multi-GPU pod (num_gpu {num_gpu}) takes whole GPUs: expected 1000, got {gpu_milli}",
        )
    creation_s, deletion_s, scheduled_s = _pod_times(row)
    spec_text = row.text("gpu_spec") if row.has("gpu_spec") else ""
    spec_items = (item.strip() for item in spec_text.split("|"))
    return TracePod(
        name=row.name("name"),
        cpu_milli=row.integer("cpu_milli"),
        memory_mib=row.integer("memory_mib"),
        num_gpu=num_gpu,
        gpu_milli=gpu_milli,
        gpu_spec=tuple(dict.fromkeys(item for item in spec_items if item)),
        qos=row.choice("qos", QOS_VALUES) if row.has("qos") else None,
        phase=row.choice("pod_phase", POD_PHASES) if row.has("pod_phase") else None,
        creation_s=creation_s,
        deletion_s=deletion_s,
        scheduled_s=scheduled_s,
    )


def _pod_times(row: _Cells) -> tuple[float | None, float | None, float | None]:
    """(creation, deletion, scheduled) [s]; a missing column is None, as an empty optional cell.

    ``creation_time`` must be filled when its column exists; deletion and scheduling may not
    come before creation.
    """
    creation_s = row.time("creation_time", optional=False) if row.has("creation_time") else None
    deletion_s = row.time("deletion_time", optional=True) if row.has("deletion_time") else None
    scheduled_s = row.time("scheduled_time", optional=True) if row.has("scheduled_time") else None
    if creation_s is None:
        return None, deletion_s, scheduled_s
    for column, value in (("deletion_time", deletion_s), ("scheduled_time", scheduled_s)):
        if value is not None and value < creation_s:
            raise row.error(
                column, f"{row.text(column)!r} is before creation_time {row.text('creation_time')!r}"
            )
    return creation_s, deletion_s, scheduled_s


_T = TypeVar("_T")


def _unique_names(file: str, rows: Sequence[_T], name_of: Callable[[_T], str]) -> None:
    seen: set[str] = set()
    for i, row in enumerate(rows):
        name = name_of(row)
        if name in seen:
            raise TraceFormatError(file, None, None, f"duplicate name {name!r} (data row {i + 1})")
        seen.add(name)


def parse_nodes(lines: Iterable[str], file: str) -> tuple[TraceNode, ...]:
    """Parse an openb node list (``sn, cpu_milli, memory_mib, gpu, model``).

    Parameters
    ----------
    lines : iterable of str
        The file's lines (header first), e.g. of
        ``../shared/data/alibaba-gpu-v2023/openb_node_list_gpu_node.csv``.
    file : str
        The name error messages give it (e.g. the file's base name).

    Returns
    -------
    tuple of TraceNode
        In file order.

    Raises
    ------
    TraceFormatError
        A missing column, a malformed cell (message ``file:line: column c: ...``) or a
        duplicate node name.
    """
    nodes = tuple(_node_from_cells(row) for row in _iter_cells(lines, file, NODE_COLUMNS))
    _unique_names(file, nodes, lambda n: n.name)
    return nodes


def parse_pods(lines: Iterable[str], file: str) -> tuple[TracePod, ...]:
    """Parse an openb pod list: the pods of :func:`parse_pod_list`."""
    return parse_pod_list(lines, file)[0]


def parse_pod_list(lines: Iterable[str], file: str) -> tuple[tuple[TracePod, ...], tuple[str, ...]]:
    """Parse an openb pod list, full (the 11 columns of :data:`POD_COLUMNS`) or short
    (:data:`POD_REQUIRED_COLUMNS`), and say which optional columns it lacked.

    Parameters
    ----------
    lines : iterable of str
        The file's lines (header first), e.g. of
        ``../shared/data/alibaba-gpu-v2023/openb_pod_list_default.csv``.
    file : str
        The name error messages give it.

    Returns
    -------
    pods : tuple of TracePod
        In file order (the default list is sorted by creation time; the resampled variants are
        not). Missing columns take the module docstring's defaults.
    missing : tuple of str
        The columns of :data:`POD_OPTIONAL_COLUMNS` the header lacks, in that order.

    Raises
    ------
    TraceFormatError
        A missing required column, a malformed cell, a semantic error (``gpu_milli`` outside
        0..1000 or inconsistent with ``num_gpu``, a negative time, deletion or scheduling before
        creation) or a duplicate pod name; the message names file, line and column.
    """
    header: list[str] = []
    rows = _iter_cells(lines, file, POD_REQUIRED_COLUMNS, POD_OPTIONAL_COLUMNS, header)
    pods = tuple(_pod_from_cells(row) for row in rows)
    _unique_names(file, pods, lambda p: p.name)
    missing = tuple(c for c in POD_OPTIONAL_COLUMNS if c not in header)
    return pods, missing


@dataclass(frozen=True, slots=True)
class OpenbTrace:
    """A node list and a pod list of the trace, parsed, with the names of their files.

    What the workload builders of ``qosched.policies.simulator.scenarios`` take; the shell
    reads it (``qosched.extender.cli.trace_files.read_openb_trace``).
    """

    nodes: tuple[TraceNode, ...]
    pods: tuple[TracePod, ...]
    nodes_file: str = ""
    pods_file: str = ""
    missing_pod_columns: tuple[str, ...] = ()

    def require_pod_columns(self, columns: Sequence[str], needed_by: str) -> None:
        """Raise a one-line :class:`TraceFormatError` naming the first of ``columns`` the pod
        list lacked (``needed_by`` says what needs it)."""
        for column in columns:
            if column in self.missing_pod_columns:
                raise TraceFormatError(
                    self.pods_file or "pods",
                    None,
                    column,
                    f"missing from the pod list (a short-form list?); {needed_by} needs it",
                )


# ---------------------------------------------------------------------------------------------
# Columnar forms


def _frozen_array(values: Iterable[object] | np.ndarray, dtype: type | str) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


def _none_to_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _inf_to_none(value: float) -> float | None:
    return None if math.isinf(value) else value


@dataclass(frozen=True, slots=True, eq=False)
class NodeTable:
    """Columnar form of a node list: one read-only numpy array per numeric column.

    Attributes
    ----------
    names : tuple of str
    cpu_milli, memory_mib, gpu_count : ndarray of int64
        [milli-cores], [MiB], [GPUs].
    gpu_model : tuple of (str or None)
    """

    names: tuple[str, ...]
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    gpu_count: np.ndarray
    gpu_model: tuple[str | None, ...]

    def __post_init__(self) -> None:
        n = len(self.names)
        for column in ("cpu_milli", "memory_mib", "gpu_count", "gpu_model"):
            if len(getattr(self, column)) != n:
                raise ValueError(
                    f"NodeTable: column {column} has {len(getattr(self, column))} rows, names {n}"
                )

    @classmethod
    def from_rows(cls, nodes: Sequence[TraceNode]) -> NodeTable:
        """Build the table from row objects (order kept)."""
        return cls(
            names=tuple(n.name for n in nodes),
            cpu_milli=_frozen_array([n.cpu_milli for n in nodes], np.int64),
            memory_mib=_frozen_array([n.memory_mib for n in nodes], np.int64),
            gpu_count=_frozen_array([n.gpu_count for n in nodes], np.int64),
            gpu_model=tuple(n.gpu_model for n in nodes),
        )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def gpu_milli(self) -> np.ndarray:
        """GPU capacity per node [milli-GPU]."""
        return self.gpu_count * GPU_MILLI_PER_DEVICE

    def row(self, i: int) -> TraceNode:
        """Row ``i`` as a :class:`TraceNode`."""
        return TraceNode(
            name=self.names[i],
            cpu_milli=int(self.cpu_milli[i]),
            memory_mib=int(self.memory_mib[i]),
            gpu_count=int(self.gpu_count[i]),
            gpu_model=self.gpu_model[i],
        )

    def to_rows(self) -> tuple[TraceNode, ...]:
        return tuple(self.row(i) for i in range(len(self)))


@dataclass(frozen=True, slots=True, eq=False)
class PodTable:
    """Columnar form of a pod list: one read-only numpy array per numeric column.

    Missing times are ``+inf`` (never deleted / never scheduled; no creation time in a short-form
    list) so that comparisons such as ``deletion_s > t`` need no mask; a missing ``qos`` or
    ``pod_phase`` is ``""``.

    Attributes
    ----------
    names : tuple of str
    cpu_milli, memory_mib, num_gpu, gpu_milli : ndarray of int64
        [milli-cores], [MiB], [GPUs], [milli-GPU per GPU].
    gpu_spec : tuple of tuple of str
    qos, phase : ndarray of str
    creation_s, deletion_s, scheduled_s : ndarray of float64
        [s]; ``+inf`` where the trace has no time.
    """

    names: tuple[str, ...]
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    num_gpu: np.ndarray
    gpu_milli: np.ndarray
    gpu_spec: tuple[tuple[str, ...], ...]
    qos: np.ndarray
    phase: np.ndarray
    creation_s: np.ndarray
    deletion_s: np.ndarray
    scheduled_s: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        for column in (
            "cpu_milli",
            "memory_mib",
            "num_gpu",
            "gpu_milli",
            "gpu_spec",
            "qos",
            "phase",
            "creation_s",
            "deletion_s",
            "scheduled_s",
        ):
            if len(getattr(self, column)) != n:
                raise ValueError(
                    f"PodTable: column {column} has {len(getattr(self, column))} rows, names {n}"
                )

    @classmethod
    def from_rows(cls, pods: Sequence[TracePod]) -> PodTable:
        """Build the table from row objects (order kept)."""
        return cls(
            names=tuple(p.name for p in pods),
            cpu_milli=_frozen_array([p.cpu_milli for p in pods], np.int64),
            memory_mib=_frozen_array([p.memory_mib for p in pods], np.int64),
            num_gpu=_frozen_array([p.num_gpu for p in pods], np.int64),
            gpu_milli=_frozen_array([p.gpu_milli for p in pods], np.int64),
            gpu_spec=tuple(p.gpu_spec for p in pods),
            qos=_frozen_array([p.qos or "" for p in pods], str),
            phase=_frozen_array([p.phase or "" for p in pods], str),
            creation_s=_frozen_array([_none_to_inf(p.creation_s) for p in pods], np.float64),
            deletion_s=_frozen_array([_none_to_inf(p.deletion_s) for p in pods], np.float64),
            scheduled_s=_frozen_array([_none_to_inf(p.scheduled_s) for p in pods], np.float64),
        )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def total_gpu_milli(self) -> np.ndarray:
        """Total GPU request per pod [milli-GPU] = ``num_gpu * gpu_milli``."""
        return self.num_gpu * self.gpu_milli

    def row(self, i: int) -> TracePod:
        """Row ``i`` as a :class:`TracePod` (``+inf`` times become None)."""
        return TracePod(
            name=self.names[i],
            cpu_milli=int(self.cpu_milli[i]),
            memory_mib=int(self.memory_mib[i]),
            num_gpu=int(self.num_gpu[i]),
            gpu_milli=int(self.gpu_milli[i]),
            gpu_spec=self.gpu_spec[i],
            qos=str(self.qos[i]) or None,
            phase=str(self.phase[i]) or None,
            creation_s=_inf_to_none(float(self.creation_s[i])),
            deletion_s=_inf_to_none(float(self.deletion_s[i])),
            scheduled_s=_inf_to_none(float(self.scheduled_s[i])),
        )

    def to_rows(self) -> tuple[TracePod, ...]:
        return tuple(self.row(i) for i in range(len(self)))
