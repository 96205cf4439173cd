"""Workload inflation of the FGD simulator, for replaying the openb trace at more than 100 % load.

The FGD paper (Weng et al., USENIX ATC 2023) evaluates a placement policy by submitting the
trace's pods one by one (none ever departs) and then more pods cloned from the trace, recording
the GPU allocation ratio against the "arrived workload" (total GPU milli requested so far /
the cluster's GPU milli). Its simulator, hkust-adsl/kubernetes-scheduler-simulator, has TWO
rules for growing the workload; both are implemented here, read from
``pkg/simulator/simulator.go`` (``generateWorkloadInflationPods``, ``tuneUpPods``,
``tuneDownPods``) and ``pkg/simulator/core.go`` (``Simulate``) at commit 8f3d641:

:func:`inflate_workload` — ``workloadInflationConfig`` (``--workload-inflation-ratio``), the rule
    written down in ``../shared/data/alibaba-gpu-v2023/PROVENANCE.md``: after the trace's pods,
    clone uniformly random trace pods (with replacement) until ``ceil(n * ratio) - n`` clones were
    added, stopping at the first clone that would make the total CPU or GPU request exceed the
    cluster's capacity.

:func:`tune_workload` — ``workloadTuningConfig`` (``-tune 1.3 -tuneseed 42 --shuffle-pod=true``),
    the rule the paper's artifact scripts (``experiments/run_scripts/generate_run_scripts.py``)
    actually use for Fig. 7 and 9: append clones until the total GPU request reaches
    ``ratio x`` the cluster's GPU capacity (or randomly drop trace pods while it is above it).

The two differ a lot on the default trace: its pods already request 97.98 % of the 6,212 GPUs of
``openb_node_list_gpu_node.csv``, so :func:`inflate_workload` can only add clones up to 100 % of
the capacity (a few dozen) however large ``ratio`` is, while :func:`tune_workload` with ratio 1.3
reaches the paper's 130 % arrived workload. The ``qosched whatif --inflate X`` of the contract
("grow the workload to X times the cluster's GPU capacity") is :func:`tune_workload`.

Choices and departures from the Go code, all deliberate:

* Randomness comes from the passed ``numpy.random.Generator`` (Go's global ``math/rand`` cannot
  be reproduced bit for bit); the draws have the same distribution. Equal seeds give equal
  results. As in FGD, clone sources are indexed in name order (``SetWorkloadPods`` sorts the
  workload by name), and with ``shuffle=True`` the trace pods are put in a random order first
  (``SortClusterPods`` sorts by name, then shuffles) and the same Generator then draws the clones.
* Without ``shuffle`` the trace pods keep the order they are given in (FGD sorts them by creation
  time, ties by name; ``openb_pod_list_default.csv`` is already in creation-time order).
* The draws are made in vectorised batches; since both rules stop at the FIRST draw that fails
  the test, this selects exactly what the sequential loop would select from the same draws.
* ``ceil(n * ratio)`` is computed in float64 as Go does, so e.g. ``n = 50, ratio = 1.1`` gives
  ``ceil(55.00000000000001) - 50 = 6`` clones (not 5), as FGD would.
* CPU requests are the trace's ``cpu_milli``; FGD goes through Kubernetes' non-zero defaults
  (a request of 0 counts as 100 milli-cores), which no openb pod triggers (all request >= 1000).
* :func:`tune_workload` keeps FGD's test ``total + gpu_milli > ratio x capacity`` with the PER-GPU
  ``gpu_milli`` while adding ``num_gpu x gpu_milli``: a multi-GPU clone can overshoot the target by
  up to ``(num_gpu - 1) x 1000`` milli. Kept so that the arrived-workload curves match the paper's.
* Clones are copies of their source pod with only the name changed (``<name>-clone-<i>`` /
  ``<name>-tuned-<i>``, ``i`` counting from 0 as in FGD); their trace times are copied unchanged
  and mean nothing for a clone: the submission order is the order of ``InflatedWorkload.pods``,
  and in FGD's evaluation no pod departs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from qosched.policies.traces.openb import (
    ClusterCapacity,
    NodeTable,
    PodTable,
    TraceNode,
    TracePod,
    cluster_capacity,
)

__all__ = [
    "InflatedWorkload",
    "arrived_gpu_fraction",
    "inflate_workload",
    "tune_workload",
]


@dataclass(frozen=True, slots=True)
class InflatedWorkload:
    """A trace workload grown (or shrunk) by one of FGD's rules, in submission order.

    Attributes
    ----------
    pods : tuple of TracePod
        Trace pods first (in submission order), then the clones in the order they were drawn.
    source_index : tuple of int
        For each pod of ``pods``, the index of the trace pod it is (or was cloned from) in the
        sequence passed in.
    n_original : int
        Number of trace pods kept (all of them, except when :func:`tune_workload` shrinks).
    n_clones_target : int or None
        Clones the rule aimed at: ``ceil(n * ratio) - n`` for :func:`inflate_workload`; None for
        :func:`tune_workload`, which aims at a GPU total instead.
    stopped_at_capacity : bool
        True when :func:`inflate_workload` stopped before its target because the next clone would
        have exceeded the cluster's CPU or GPU capacity.
    total_cpu_milli, total_gpu_milli : int
        Total requests of ``pods`` [milli-cores], [milli-GPU].
    """

    pods: tuple[TracePod, ...]
    source_index: tuple[int, ...]
    n_original: int
    n_clones_target: int | None
    stopped_at_capacity: bool
    total_cpu_milli: int
    total_gpu_milli: int

    @property
    def n_clones(self) -> int:
        """Number of clones added."""
        return len(self.pods) - self.n_original

    @property
    def is_clone(self) -> np.ndarray:
        """Boolean mask over ``pods``: True for the clones."""
        mask = np.zeros(len(self.pods), dtype=bool)
        mask[self.n_original :] = True
        return mask

    def table(self) -> PodTable:
        """``pods`` in columnar form."""
        return PodTable.from_rows(self.pods)


def _capacity(cluster: ClusterCapacity | Iterable[TraceNode] | NodeTable) -> ClusterCapacity:
    return cluster if isinstance(cluster, ClusterCapacity) else cluster_capacity(cluster)


def _check_ratio(ratio: float) -> None:
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio >= 0):
        raise ValueError(f"ratio must be a finite number >= 0, got {ratio!r}")


def _order(
    pods: Sequence[TracePod], rng: np.random.Generator, shuffle: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Submission order of the trace pods and the name-sorted clone sources (indexes into ``pods``)."""
    names = [p.name for p in pods]
    if len(set(names)) != len(names):
        raise ValueError("pod names must be unique to clone them under unique names")
    by_name = np.array(sorted(range(len(pods)), key=names.__getitem__), dtype=np.int64)
    order = by_name[rng.permutation(len(pods))] if shuffle else np.arange(len(pods), dtype=np.int64)
    return order, by_name


def _clones(pods: Sequence[TracePod], sources: np.ndarray, suffix: str) -> tuple[list[TracePod], list[int]]:
    existing = {p.name for p in pods}
    clones = []
    for i, src in enumerate(sources.tolist()):
        name = f"{pods[src].name}-{suffix}-{i}"
        if name in existing:
            raise ValueError(f"clone name {name!r} is already the name of a trace pod")
        clones.append(replace(pods[src], name=name))
    return clones, sources.tolist()


def _result(
    pods: Sequence[TracePod],
    kept: np.ndarray,
    sources: np.ndarray,
    suffix: str,
    n_clones_target: int | None,
    stopped_at_capacity: bool,
) -> InflatedWorkload:
    clones, clone_src = _clones(pods, sources, suffix)
    originals = [pods[i] for i in kept.tolist()]
    all_pods = tuple(originals + clones)
    return InflatedWorkload(
        pods=all_pods,
        source_index=tuple(kept.tolist() + clone_src),
        n_original=len(originals),
        n_clones_target=n_clones_target,
        stopped_at_capacity=stopped_at_capacity,
        total_cpu_milli=sum(p.cpu_milli for p in all_pods),
        total_gpu_milli=sum(p.total_gpu_milli for p in all_pods),
    )


def inflate_workload(
    pods: Sequence[TracePod],
    cluster: ClusterCapacity | Iterable[TraceNode] | NodeTable,
    ratio: float,
    rng: np.random.Generator,
    *,
    shuffle: bool = False,
) -> InflatedWorkload:
    r"""Grow the workload by cloning trace pods, FGD's ``workloadInflationConfig`` rule.

    With :math:`n` trace pods, :math:`k = \lceil n \cdot ratio \rceil - n` clones are drawn one
    at a time, each a uniformly random trace pod (with replacement). Clone :math:`j` is kept if

    .. math:: C + c_j \le C_{cap} \quad\text{and}\quad G + g_j \le G_{cap},

    where :math:`C, G` are the total CPU [milli-cores] and GPU [milli-GPU, num_gpu x gpu_milli]
    requests of the trace pods and the clones kept so far; at the first clone that fails, the
    inflation stops (a smaller later pod is not tried). ``ratio <= 1`` adds nothing.

    Parameters
    ----------
    pods : sequence of TracePod
        The trace's pods, in submission order.
    cluster : ClusterCapacity, or the nodes
        The cluster whose capacity bounds the totals (FGD uses the gpu_node list).
    ratio : float
        Inflation ratio, e.g. 1.3 [-].
    rng : numpy.random.Generator
        Source of the draws; the result is a function of its state.
    shuffle : bool
        Put the trace pods in random order first (FGD's ``--shuffle-pod=true``).

    Returns
    -------
    InflatedWorkload

    Examples
    --------
    >>> import numpy as np
    >>> from qosched.policies.traces.openb import ClusterCapacity, TracePod
    >>> pod = TracePod("p", 1000, 1, 1, 500, (), "LS", "Running", 0.0, None, 0.0)
    >>> w = inflate_workload([pod] * 1, ClusterCapacity(10_000, 0, 10_000), 3.0, np.random.default_rng(0))
    >>> w.n_clones, [p.name for p in w.pods]
    (2, ['p', 'p-clone-0', 'p-clone-1'])
    """
    _check_ratio(ratio)
    capacity = _capacity(cluster)
    order, by_name = _order(pods, rng, shuffle)
    n = len(pods)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0 or ratio <= 1:
        return _result(pods, order, empty, "clone", 0, False)
    target = math.ceil(float(n) * float(ratio)) - n  # float64 as in Go's math.Ceil(float64(n)*ratio)
    cpu = np.array([p.cpu_milli for p in pods], dtype=np.int64)
    gpu = np.array([p.total_gpu_milli for p in pods], dtype=np.int64)
    sources = by_name[rng.integers(0, n, size=target)]
    cum_cpu = int(cpu.sum()) + np.cumsum(cpu[sources])
    cum_gpu = int(gpu.sum()) + np.cumsum(gpu[sources])
    fails = np.flatnonzero((cum_cpu > capacity.cpu_milli) | (cum_gpu > capacity.gpu_milli))
    kept = int(fails[0]) if fails.size else target
    return _result(pods, order, sources[:kept], "clone", target, kept < target)


def tune_workload(
    pods: Sequence[TracePod],
    cluster: ClusterCapacity | Iterable[TraceNode] | NodeTable,
    ratio: float,
    rng: np.random.Generator,
    *,
    shuffle: bool = False,
) -> InflatedWorkload:
    r"""Grow or shrink the workload to ``ratio x`` the GPU capacity, FGD's ``workloadTuningConfig``.

    With the target :math:`T = ratio \cdot G_{cap}` and :math:`G` the total GPU request
    [milli-GPU] of the trace pods:

    * :math:`G < T` (tune up): draw uniformly random trace pods (with replacement) and append
      each as a clone while :math:`G + g^{1}_j \le T`, where :math:`g^{1}_j` is the clone's
      per-GPU ``gpu_milli``; :math:`G` then grows by ``num_gpu x gpu_milli``. The first draw that
      fails ends it. CPU capacity is not checked.
    * :math:`G > T` (tune down): remove uniformly random trace pods until :math:`G \le T`.
    * :math:`G = T` or ``ratio == 0``: unchanged.

    This is the rule of the paper's runs (``-tune 1.3``): the arrived workload ends at about
    ``ratio`` (130 %) of the GPU capacity.

    Parameters
    ----------
    pods : sequence of TracePod
        The trace's pods, in submission order.
    cluster : ClusterCapacity, or the nodes
        The cluster (FGD uses the gpu_node list: 6,212 GPUs).
    ratio : float
        Target total GPU request / GPU capacity, e.g. 1.3 [-].
    rng : numpy.random.Generator
        Source of the draws.
    shuffle : bool
        Put the trace pods in random order first (FGD's ``--shuffle-pod=true``, used with ``-tune``).

    Returns
    -------
    InflatedWorkload
        ``n_clones_target`` is None.

    Raises
    ------
    ValueError
        The trace requests no GPU or the cluster has none (FGD panics there), or a bad ratio.
    """
    _check_ratio(ratio)
    capacity = _capacity(cluster)
    order, by_name = _order(pods, rng, shuffle)
    empty = np.zeros(0, dtype=np.int64)
    gpu = np.array([p.total_gpu_milli for p in pods], dtype=np.int64)
    per_gpu = np.array([p.gpu_milli for p in pods], dtype=np.int64)
    total = int(gpu.sum())
    if ratio == 0:
        return _result(pods, order, empty, "tuned", None, False)
    if total <= 0 or capacity.gpu_milli <= 0:
        raise ValueError(
            "tuning needs GPU requests and GPU capacity "
            f"(trace {total} milli-GPU, cluster {capacity.gpu_milli} milli-GPU)"
        )
    target = float(ratio) * float(capacity.gpu_milli)
    if total > target:  # tune down: uniformly random removals = a random permutation's prefix
        removal = order[rng.permutation(len(order))]
        remaining = total - np.cumsum(gpu[removal])
        n_removed = int(np.flatnonzero(remaining <= target)[0]) + 1
        removed = set(removal[:n_removed].tolist())
        kept = np.array([i for i in order.tolist() if i not in removed], dtype=np.int64)
        return _result(pods, kept, empty, "tuned", None, False)
    chosen: list[np.ndarray] = []
    n = len(pods)
    mean_gpu = float(gpu.mean())
    while True:
        batch = max(64, int(1.2 * (target - total) / mean_gpu) + 16)
        sources = by_name[rng.integers(0, n, size=batch)]
        before = total + np.concatenate(([0], np.cumsum(gpu[sources])[:-1]))
        fails = np.flatnonzero(before + per_gpu[sources] > target)
        if fails.size:
            chosen.append(sources[: int(fails[0])])
            break
        chosen.append(sources)
        total = int(before[-1] + gpu[sources[-1]])
    return _result(pods, order, np.concatenate(chosen), "tuned", None, False)


def arrived_gpu_fraction(
    pods: Sequence[TracePod] | PodTable | np.ndarray, cluster_gpu_milli: int | float
) -> np.ndarray:
    r"""Arrived workload after each submitted pod, the x axis of FGD's allocation curves.

    .. math:: a_k = \frac{\sum_{j \le k} num\_gpu_j \cdot gpu\_milli_j}{G_{cap}}

    Every submitted pod counts, whether or not it could be placed (FGD's ``arrPodGpuMilli`` is
    incremented before the pod is tried). Multiply by 100 for FGD's percent axis.

    Parameters
    ----------
    pods : sequence of TracePod, PodTable, or array of int
        Pods in submission order, or their total GPU requests [milli-GPU].
    cluster_gpu_milli : int or float
        GPU capacity of the cluster [milli-GPU] (``cluster_capacity(nodes).gpu_milli``).

    Returns
    -------
    ndarray of float64
        ``a_k`` [-], one per pod, non-decreasing.

    Examples
    --------
    >>> arrived_gpu_fraction(np.array([500, 0, 1000, 2000]), 2000).tolist()
    [0.25, 0.25, 0.75, 1.75]
    """
    if not (math.isfinite(cluster_gpu_milli) and cluster_gpu_milli > 0):
        raise ValueError(f"cluster_gpu_milli must be > 0, got {cluster_gpu_milli!r}")
    if isinstance(pods, PodTable):
        requests = pods.total_gpu_milli
    elif isinstance(pods, np.ndarray):
        requests = pods
    else:
        requests = np.array([p.total_gpu_milli for p in pods], dtype=np.int64)
    if requests.size and requests.min() < 0:
        raise ValueError("GPU requests must be >= 0")
    return np.cumsum(requests, dtype=np.float64) / float(cluster_gpu_milli)
