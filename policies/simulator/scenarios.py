r"""Workloads for the what-if replay: a cluster (nodes) and a sequence of pods with times.

A :class:`Workload` is everything :func:`qosched.policies.simulator.replay.replay` needs: the
nodes as :class:`~qosched.policies.types.NodeView`, the pods as
:class:`~qosched.policies.types.PodDemand`, and per pod its arrival time and the running time it
needs (``inf`` = it stays). Two sources build one:

* :func:`trace_workload`, :func:`fgd_workload`, :func:`contended_workload` — the Alibaba GPU
  trace v2023 ("openb", ``../shared/data/alibaba-gpu-v2023``), as recorded or inflated as the
  FGD paper does (:func:`qosched.policies.traces.tune_workload`), from an
  :class:`~qosched.policies.traces.OpenbTrace` the shell read
  (``qosched.extender.cli.trace_files``);
* a snapshot file (contract §3), parsed in the I/O shell (``qosched.extender.cli.whatif``), which
  calls :meth:`Workload.build`.

Mapping of the openb trace (documented here, used nowhere else)
----------------------------------------------------------------
Nodes (``sn, cpu_milli, memory_mib, gpu, model``):

==================  ==========================================================================
``sn``              ``NodeView.name``
``cpu_milli``       ``cpu_milli``; ``memory_mib`` → ``memory_mib``
``gpu``             ``device_count`` (each GPU offers 1000 milli-GPU)
``model``           ``gpu_model`` unchanged (``V100M16`` ...; what a pod's ``gpu_spec`` names) and
                    ``accelerator`` = :data:`TRACE_GPU_ACCELERATORS` [model] (the profile key of
                    the device type, contract §1: ``V100M16``/``V100M32`` → ``nvidia-v100``,
                    ``T4`` → ``nvidia-t4``, the undisclosed ``G1`` → ``alibaba-g1`` ...);
                    a node with no GPU has neither (plain pods only)
sharing             ``time-slicing`` (the trace shares GPUs by memory/time, as FGD models them)
==================  ==========================================================================

Pods (``name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos, ...``):

==================  ==========================================================================
``name``            ``uid`` and ``name``; namespace ``openb``
``num_gpu``,        ``gpu_milli`` = ``num_gpu x gpu_milli`` (the contract's total request: 250 is a
``gpu_milli``       quarter of one GPU, 2000 two whole GPUs), as FGD's ``TotalMilliGpu``
``gpu_spec``        ``gpu_spec`` (allowed GPU models, matched against ``NodeView.gpu_model``)
``qos``             ``qos_class`` through :meth:`ClassConfig.class_from_trace_qos` (LS, Guaranteed →
                    prod; Burstable → batch; BE → free)
``creation_time``   arrival [s] (trace mode) and ``creation_s``
``deletion_time``,  running time needed = ``deletion − scheduled`` (the time it ran in production;
``scheduled_time``  ``deletion − creation`` for a pod the trace never scheduled), at least 1 s
                    (:func:`trace_lifetime_s`); ``inf`` when the trace has no deletion
==================  ==========================================================================

Trace pods carry no model and no SLO: they are plain resource requests (``is_inference`` False),
so no request-level latency is simulated for them.

Three modes, one function each:

:func:`trace_workload` (trace mode)
    Pods arrive at their ``creation_time`` and leave after their running time.
:func:`fgd_workload` ``(trace, X, rng)`` (FGD mode)
    The workload is grown to X x the cluster's GPU capacity by :func:`tune_workload` (trace pods
    shuffled, clones appended, the rule of the FGD paper's scripts, ``-tune 1.3
    --shuffle-pod=true``); pods arrive ``interarrival_s`` apart (default 1 s) in that order
    (arrival ``i`` at ``i · interarrival_s``, so the arrival order is the submission order) and
    never depart, as in FGD's evaluation.
:func:`contended_workload` ``(trace, X, rng)`` (contention mode)
    The same pods, in the same order and with the same draws, arrive ``interarrival_s`` apart
    (default 0.05 s) and each leaves after its trace lifetime. The cluster fills from empty
    until demand exceeds capacity: pods queue, are preempted and come back, so availability —
    and QoS, fairness and SLA penalties — differ between policies. (In FGD mode no pod leaves:
    a pod that fails never runs, so availability cannot be compared.) Measure QoS at a horizon
    well after the last arrival (``qosched whatif --departures`` defaults to
    :data:`CONTENDED_HORIZON_S`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from qosched.policies.fairness.classes import DEFAULT_CLASS_CONFIG, ClassConfig
from qosched.policies.traces import (
    OpenbTrace,
    TraceNode,
    TracePod,
    cluster_capacity,
    tune_workload,
)
from qosched.policies.types import (
    CPU_ACCELERATOR,
    GPU_MILLI_PER_DEVICE,
    NodeView,
    PodDemand,
)

__all__ = [
    "CONTENDED_HORIZON_S",
    "CONTENDED_INTERARRIVAL_S",
    "CONTENDED_MODE_COLUMNS",
    "FGD_INTERARRIVAL_S",
    "TRACE_GPU_ACCELERATORS",
    "TRACE_MODE_COLUMNS",
    "Workload",
    "WorkloadError",
    "accelerator_capacity_milli",
    "contended_workload",
    "fgd_workload",
    "node_from_trace",
    "pod_from_trace",
    "trace_accelerator",
    "trace_lifetime_s",
    "trace_workload",
]

#: openb GPU model → accelerator profile key (contract §1: lowercase with hyphens). V100 sizes
#: share one key (the profiles are per device type); ``gpu_model`` keeps the size for ``gpu_spec``.
TRACE_GPU_ACCELERATORS: Mapping[str, str] = MappingProxyType(
    {
        "P100": "nvidia-p100",
        "T4": "nvidia-t4",
        "V100M16": "nvidia-v100",
        "V100M32": "nvidia-v100",
        "A10": "nvidia-a10",
        "G1": "alibaba-g1",
        "G2": "alibaba-g2",
        "G3": "alibaba-g3",
    }
)
#: Pod-list columns trace mode needs (arrival at creation, lifetime deletion − scheduled).
TRACE_MODE_COLUMNS: tuple[str, ...] = ("creation_time", "deletion_time", "scheduled_time")
#: Pod-list columns contention mode needs (each pod's trace lifetime).
CONTENDED_MODE_COLUMNS: tuple[str, ...] = ("deletion_time", "scheduled_time", "creation_time")
#: Namespace given to trace pods.
OPENB_NAMESPACE = "openb"
#: Gap between arrivals in FGD mode [s] (one pod per second, as FGD's evaluation).
FGD_INTERARRIVAL_S = 1.0
#: Default gap between arrivals in contention mode [s]: 16,607 pods (default trace x 2.0) in 830 s,
#: fast against the trace lifetimes (median ~485 s), so the cluster is oversubscribed by the end.
CONTENDED_INTERARRIVAL_S = 0.05
#: Default horizon of a contention-mode replay [s]: QoS is measured at it (or at departure).
CONTENDED_HORIZON_S = 3600.0


class WorkloadError(ValueError):
    """A workload is inconsistent (lengths, times, duplicate pods); the message says which pod."""


def trace_accelerator(gpu_model: str) -> str:
    """Accelerator key of a trace GPU model: the table above, else ``gpu-<model>`` sanitised.

    >>> trace_accelerator("V100M32"), trace_accelerator("H800 PCIe")
    ('nvidia-v100', 'gpu-h800-pcie')
    """
    known = TRACE_GPU_ACCELERATORS.get(gpu_model)
    if known is not None:
        return known
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_model.lower()).strip("-")
    return f"gpu-{slug or 'unknown'}"


def node_from_trace(node: TraceNode) -> NodeView:
    """A trace node as a :class:`NodeView` (see the module docstring for the mapping)."""
    has_gpu = node.gpu_count > 0 and node.gpu_model is not None
    return NodeView(
        name=node.name,
        accelerator=trace_accelerator(node.gpu_model) if has_gpu and node.gpu_model else None,
        device_count=node.gpu_count,
        cpu_milli=node.cpu_milli,
        memory_mib=float(node.memory_mib),
        gpu_model=node.gpu_model if has_gpu else None,
    )


def pod_from_trace(pod: TracePod, qos_class: str) -> PodDemand:
    """A trace pod as a plain (non-inference) :class:`PodDemand` of class ``qos_class``."""
    return PodDemand(
        uid=pod.name,
        name=pod.name,
        namespace=OPENB_NAMESPACE,
        managed=True,
        qos_class=qos_class,
        gpu_milli=pod.total_gpu_milli,
        cpu_milli=pod.cpu_milli,
        memory_mib=float(pod.memory_mib),
        gpu_spec=pod.gpu_spec,
        creation_s=0.0 if pod.creation_s is None else pod.creation_s,
    )


def trace_lifetime_s(pod: TracePod) -> float:
    """Running time a trace pod needs [s]: ``deletion − scheduled`` (``− creation`` if never
    scheduled), at least 1 s (a pod deleted the moment it started still ran); ``inf`` when the
    trace has no deletion (or, in a list without times, no start to count from: the modes that
    need lifetimes refuse such lists first, :meth:`OpenbTrace.require_pod_columns`)."""
    started = pod.scheduled_s if pod.scheduled_s is not None else pod.creation_s
    if pod.deletion_s is None or started is None:
        return math.inf
    return max(pod.deletion_s - started, 1.0)


def accelerator_capacity_milli(nodes: Iterable[NodeView]) -> int:
    """Accelerator capacity [milli-GPU]: 1000 per device of every node that is not a CPU node.

    The denominator of the GPU allocation ratio. Edge TPUs and Jetson GPUs count as devices
    (a pod may request ``qosched.io/gpu-milli`` of them); a ``cpu`` node's one "device" is its CPU
    and does not count.
    """
    return GPU_MILLI_PER_DEVICE * sum(
        n.device_count for n in nodes if n.accelerator != CPU_ACCELERATOR and n.schedulable
    )


@dataclass(frozen=True, slots=True, eq=False)
class Workload:
    """A cluster and the pods to replay through it (build with :meth:`build`).

    Attributes
    ----------
    nodes : tuple of NodeView
        The cluster, in state row order.
    pods : tuple of PodDemand
        The pods, in submission order (ties in ``arrival_s`` are submitted in this order).
    arrival_s : ndarray of float64, shape (P,)
        Arrival (submission) time of each pod [s], finite, >= 0.
    duration_s : ndarray of float64, shape (P,)
        Running time each pod needs before it leaves [s], > 0 or ``inf`` (never leaves).
        A pod preempted part-way keeps the remainder.
    description : mapping
        Free-form facts for ``summary.json["workload"]`` (source files, inflation, counts).
    """

    nodes: tuple[NodeView, ...]
    pods: tuple[PodDemand, ...]
    arrival_s: np.ndarray
    duration_s: np.ndarray
    description: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        nodes: Sequence[NodeView],
        pods: Sequence[PodDemand],
        arrival_s: Sequence[float] | np.ndarray | None = None,
        duration_s: Sequence[float] | np.ndarray | None = None,
        description: Mapping[str, Any] | None = None,
    ) -> Workload:
        """Validate and freeze a workload.

        ``arrival_s`` defaults to 0 for every pod, ``duration_s`` to ``inf`` (pods stay).

        Raises
        ------
        WorkloadError
            Lengths differ, a time is NaN/negative, a duration is not > 0, a pod uid or node
            name repeats, or there is no node.
        """
        n = len(pods)
        arrival = np.zeros(n) if arrival_s is None else np.array(arrival_s, dtype=np.float64)
        duration = np.full(n, np.inf) if duration_s is None else np.array(duration_s, dtype=np.float64)
        if arrival.shape != (n,) or duration.shape != (n,):
            raise WorkloadError(
                f"workload: {n} pods but {arrival.size} arrival times and {duration.size} durations"
            )
        if not nodes:
            raise WorkloadError("workload: no nodes")
        names = [v.name for v in nodes]
        if len(set(names)) != len(names):
            dup = sorted({x for x in names if names.count(x) > 1})[0]
            raise WorkloadError(f"workload: node {dup!r} listed twice")
        seen: set[str] = set()
        for pod in pods:
            if pod.uid in seen:
                raise WorkloadError(f"workload: pod uid {pod.uid!r} ({pod.name}) listed twice")
            seen.add(pod.uid)
        bad = np.flatnonzero(~(np.isfinite(arrival) & (arrival >= 0)))
        if bad.size:
            i = int(bad[0])
            raise WorkloadError(
                f"pod {pods[i].name}: arrival {float(arrival[i])!r} s must be finite and >= 0"
            )
        bad = np.flatnonzero(~(duration > 0))  # NaN fails too
        if bad.size:
            i = int(bad[0])
            raise WorkloadError(
                f"pod {pods[i].name}: duration {float(duration[i])!r} s must be > 0 (inf = stays)"
            )
        arrival.setflags(write=False)
        duration.setflags(write=False)
        return cls(
            nodes=tuple(nodes),
            pods=tuple(pods),
            arrival_s=arrival,
            duration_s=duration,
            description=MappingProxyType(dict(description or {})),
        )

    def __len__(self) -> int:
        return len(self.pods)

    @property
    def capacity_gpu_milli(self) -> int:
        """Accelerator capacity of the cluster [milli-GPU] (:func:`accelerator_capacity_milli`)."""
        return accelerator_capacity_milli(self.nodes)

    @property
    def departs(self) -> bool:
        """True when some pod leaves (a finite duration)."""
        return bool(np.isfinite(self.duration_s).any())

    def with_rate_scale(self, factor: float) -> Workload:
        """The same workload with every pod's request rate multiplied by ``factor`` (>= 0).

        What-if over load: the placement and SLO outcome of one cluster and service mix at a
        range of rates (``qosched whatif --rate-scale``).
        """
        if not (math.isfinite(factor) and factor >= 0):
            raise WorkloadError(f"rate scale must be a finite number >= 0, got {factor!r}")
        pods = [replace(p, rate_rps=p.rate_rps * factor) for p in self.pods]
        return Workload.build(
            self.nodes, pods, self.arrival_s, self.duration_s, {**self.description, "rate_scale": factor}
        )

    def head(self, n: int) -> Workload:
        """The first ``n`` pods (in submission order) on the same nodes: a quick slice for tests."""
        order = np.lexsort((np.arange(len(self.pods)), self.arrival_s))[: max(0, n)]
        order.sort()
        return Workload.build(
            self.nodes,
            [self.pods[i] for i in order],
            self.arrival_s[order],
            self.duration_s[order],
            {**self.description, "pods_kept": int(order.size)},
        )


def trace_workload(
    trace: OpenbTrace, *, classes: ClassConfig = DEFAULT_CLASS_CONFIG, max_pods: int | None = None
) -> Workload:
    """Trace mode: pods arrive at their ``creation_time`` and run their trace lifetime.

    Parameters
    ----------
    trace : OpenbTrace
        Node and pod lists (e.g. ``openb_node_list_all_node.csv`` and
        ``openb_pod_list_default.csv``, read by ``qosched.extender.cli.trace_files``).
    classes : ClassConfig
        Maps the trace ``qos`` column to service classes.
    max_pods : int, optional
        Keep only the first ``max_pods`` pods of the pod list: a slice for tests and quick looks.
    """
    trace.require_pod_columns(
        TRACE_MODE_COLUMNS, "trace mode (no --inflate: arrive at creation_time, run the trace lifetime)"
    )
    pods = _first_pods(trace, max_pods)
    arrival = np.array([p.creation_s for p in pods], dtype=np.float64)
    duration = np.array([trace_lifetime_s(p) for p in pods], dtype=np.float64)
    description = _describe(trace, pods)
    description.update(mode="trace-times", rule="arrive at creation_time, run deletion - scheduled (>= 1 s)")
    return _assemble(trace, pods, arrival, duration, description, classes)


def fgd_workload(
    trace: OpenbTrace,
    inflate: float,
    rng: np.random.Generator,
    *,
    interarrival_s: float = FGD_INTERARRIVAL_S,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    max_pods: int | None = None,
    shuffle_nodes: bool = True,
) -> Workload:
    """FGD mode: the workload grown to ``inflate`` x the GPU capacity, no departures.

    ``tune_workload`` with the trace pods shuffled (draws from ``rng``); pods arrive
    ``interarrival_s`` apart (> 0) in that order and never leave, as in FGD's evaluation.
    ``max_pods`` keeps the first pods of the list before inflation.

    ``shuffle_nodes`` (default): the nodes are put in a random order, drawn from ``rng`` after
    the pods (so the pods are those of :func:`contended_workload` with the same seed). The
    simulator does the same: ``syncClusterResourceList`` renames every node ``NNNN-<name>``
    with ``NNNN`` from a random permutation before creating it, and its scheduler breaks score
    ties by the smallest name — so ties go to a random, per-run node, not to the trace's first
    (P100) nodes. Replays break ties by the first row, so the row order is that random order.
    It moves the tie-heavy policies most (``gpu-packing``, ``gpu-clustering``: about +1 point
    at 130 % on the default trace; docs/fgd-reproduction.md).

    Raises
    ------
    ValueError
        A bad ratio or gap, or a trace with no GPU request to inflate.
    """
    gap = _checked_gap(interarrival_s)
    pods, description = _inflated(trace, inflate, rng, gap, max_pods)
    description.update(
        mode="fgd-inflation",
        rule="tune_workload (FGD -tune X --shuffle-pod=true): clones until total GPU requests "
        f"reach X x capacity; arrivals {gap:g} s apart in submission order; no departures",
    )
    if shuffle_nodes:
        order = rng.permutation(len(trace.nodes))
        trace = replace(trace, nodes=tuple(trace.nodes[i] for i in order.tolist()))
        description.update(node_order="random permutation (the simulator's random name prefixes)")
    arrival = np.arange(len(pods), dtype=np.float64) * gap
    return _assemble(trace, pods, arrival, np.full(len(pods), np.inf), description, classes)


def contended_workload(
    trace: OpenbTrace,
    inflate: float,
    rng: np.random.Generator,
    *,
    interarrival_s: float = CONTENDED_INTERARRIVAL_S,
    classes: ClassConfig = DEFAULT_CLASS_CONFIG,
    max_pods: int | None = None,
) -> Workload:
    """Contention mode: FGD's inflation with trace lifetimes (module docstring).

    The same pods and draws as :func:`fgd_workload` with the same ``rng`` (``qosched whatif
    --inflate X --departures --seed N``), arriving ``interarrival_s`` apart, each running its
    trace lifetime (:func:`trace_lifetime_s`) and then leaving. A pod list without times (the
    short form) is refused with a line naming the missing column.
    """
    trace.require_pod_columns(
        CONTENDED_MODE_COLUMNS, "contention mode (--departures: each pod runs its trace lifetime)"
    )
    gap = _checked_gap(interarrival_s)
    pods, description = _inflated(trace, inflate, rng, gap, max_pods)
    description.update(
        mode="fgd-inflation-with-departures",
        rule="tune_workload (FGD -tune X --shuffle-pod=true): clones until total GPU requests "
        f"reach X x capacity; arrivals {gap:g} s apart in submission order; each pod runs its "
        "trace lifetime (deletion - scheduled, >= 1 s) and leaves",
    )
    arrival = np.arange(len(pods), dtype=np.float64) * gap
    duration = np.array([trace_lifetime_s(p) for p in pods], dtype=np.float64)
    return _assemble(trace, pods, arrival, duration, description, classes)


def _checked_gap(interarrival_s: float) -> float:
    if not (math.isfinite(interarrival_s) and interarrival_s > 0):
        raise ValueError(f"openb workload: interarrival_s must be a number > 0 (got {interarrival_s!r})")
    return float(interarrival_s)


def _first_pods(trace: OpenbTrace, max_pods: int | None) -> tuple[TracePod, ...]:
    return trace.pods if max_pods is None else trace.pods[: max(0, max_pods)]


def _describe(trace: OpenbTrace, pods: Sequence[TracePod]) -> dict[str, Any]:
    return {
        "source": "openb (Alibaba GPU cluster trace v2023)",
        "nodes_file": trace.nodes_file,
        "pods_file": trace.pods_file,
        "nodes": len(trace.nodes),
        "trace_pods": len(pods),
    }


def _inflated(
    trace: OpenbTrace, inflate: float, rng: np.random.Generator, gap: float, max_pods: int | None
) -> tuple[Sequence[TracePod], dict[str, Any]]:
    """The inflated pod list (FGD's ``tune_workload``, pods shuffled) and its description."""
    pods = _first_pods(trace, max_pods)
    capacity = cluster_capacity(trace.nodes)
    tuned = tune_workload(pods, capacity, inflate, rng, shuffle=True)
    description = _describe(trace, pods)
    description.update(
        inflate=float(inflate),
        clones=tuned.n_clones,
        arrived_gpu_frac_end=tuned.total_gpu_milli / capacity.gpu_milli if capacity.gpu_milli else 0.0,
        interarrival_s=gap,
    )
    return tuned.pods, description


def _assemble(
    trace: OpenbTrace,
    pods: Sequence[TracePod],
    arrival: np.ndarray,
    duration: np.ndarray,
    description: dict[str, Any],
    classes: ClassConfig,
) -> Workload:
    """Map trace rows to ``NodeView``/``PodDemand`` (module docstring) and build the Workload."""
    # A list without a qos column (short form): every pod in the default class.
    mapped = {q: classes.class_from_trace_qos(q) for q in {p.qos for p in pods if p.qos is not None}}
    qos = [classes.default_class if p.qos is None else mapped[p.qos] for p in pods]
    demands = [pod_from_trace(p, str(c)) for p, c in zip(pods, qos, strict=True)]
    description["pods"] = len(demands)
    description["gpu_capacity_milli"] = cluster_capacity(trace.nodes).gpu_milli
    views = [node_from_trace(n) for n in trace.nodes]
    return Workload.build(views, demands, arrival, duration, description)
