"""The expected workload FGD measures fragmentation against: a popularity-weighted set of pod shapes.

FGD (Weng et al., USENIX ATC 2023, models.md §F) defines a node's fragmentation *with respect to
a target workload*: the pod shapes (CPU, per-GPU milli, GPU count) that will keep arriving, each
with its popularity. :class:`WorkloadMix` is that input, explicit and immutable, so the policy's
``evaluate`` is a pure function of ``(state, pod, mix)``. :class:`WorkloadLearner` learns it from
the pods seen so far (the caller calls ``observe(pod)``), keeping the most popular shapes that
cover ``popularity_threshold`` of them, as the FGD simulator's ``GetTypicalPods`` does
(hkust-adsl/kubernetes-scheduler-simulator ``pkg/utils/frag.go``, with its experiments'
``podPopularityThreshold: 95`` and CPU-only pods included, ``isInvolvedCpuPods: true``).

The mix also carries the lookup tables that make the fragmentation of thousands of nodes a few
array lookups (see :mod:`qosched.policies.placement.fgd.score`):

- ``g_table[r, x]`` = Σ pₜ over single-device GPU shapes t with ``cpu_t`` among the r smallest
  distinct CPU requests and ``gpu_milli_t ≤ x`` (x = 0..1000 free milli on one device);
- ``h_table[r, k]`` = Σ pₜ over multi-GPU shapes (whole GPUs) with the same CPU condition and
  ``num_gpu_t ≤ k`` (k fully free GPUs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qosched.policies.types import GPU_MILLI_PER_DEVICE, PodDemand

__all__ = ["PodShape", "WorkloadLearner", "WorkloadMix", "shape_of"]


@dataclass(frozen=True, slots=True, order=True)
class PodShape:
    """A pod's resource shape: CPU [milli-CPU], milli-GPU per GPU (0..1000), number of GPUs."""

    cpu_milli: int
    gpu_milli: int
    num_gpu: int

    def __post_init__(self) -> None:
        if self.cpu_milli < 0:
            raise ValueError(f"PodShape.cpu_milli must be >= 0 (got {self.cpu_milli})")
        if not 0 <= self.gpu_milli <= GPU_MILLI_PER_DEVICE:
            raise ValueError(f"PodShape.gpu_milli must be within 0..1000 per GPU (got {self.gpu_milli})")
        if self.num_gpu < 0 or (self.num_gpu == 0) != (self.gpu_milli == 0):
            raise ValueError(
                f"PodShape: num_gpu ({self.num_gpu}) must be 0 exactly when gpu_milli ({self.gpu_milli}) is 0"
            )
        if self.num_gpu > 1 and self.gpu_milli != GPU_MILLI_PER_DEVICE:
            raise ValueError(f"PodShape: a {self.num_gpu}-GPU shape must take whole GPUs (gpu_milli 1000)")


def shape_of(pod: PodDemand) -> PodShape:
    """The shape of a pod: (cpu_milli, milli per GPU, GPU count)."""
    if pod.gpu_milli <= 0:
        return PodShape(pod.cpu_milli, 0, 0)
    return PodShape(pod.cpu_milli, pod.milli_per_device, pod.gpu_count)


@dataclass(frozen=True, eq=False)
class WorkloadMix:
    """Pod shapes and their popularity (normalised to sum 1); see the module docstring.

    Build it with :meth:`of` (shapes and weights) or :meth:`from_pods`.
    """

    shapes: tuple[PodShape, ...]
    popularity: np.ndarray
    cpu_breaks: np.ndarray = field(init=False, repr=False)
    g_table: np.ndarray = field(init=False, repr=False)
    h_table: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p = np.asarray(self.popularity, dtype=np.float64).ravel()
        if p.shape[0] != len(self.shapes):
            raise ValueError(f"WorkloadMix: {len(self.shapes)} shapes but {p.shape[0]} popularities")
        if p.size and not (np.isfinite(p).all() and (p >= 0).all() and p.sum() > 0):
            raise ValueError("WorkloadMix.popularity must be finite, >= 0 and not all 0")
        if p.size:
            p = p / p.sum()
        object.__setattr__(self, "popularity", p)
        cpu = np.array([s.cpu_milli for s in self.shapes], dtype=np.int64)
        milli = np.array([s.gpu_milli for s in self.shapes], dtype=np.int64)
        num = np.array([s.num_gpu for s in self.shapes], dtype=np.int64)
        breaks = np.unique(cpu)
        rank = np.searchsorted(breaks, cpu)  # row r holds shapes with rank < r
        rows = breaks.shape[0] + 1
        g = np.zeros((rows, GPU_MILLI_PER_DEVICE + 1))
        single = num == 1
        np.add.at(g, (rank[single] + 1, milli[single]), p[single])
        g = g.cumsum(axis=0).cumsum(axis=1)
        k_max = int(max(1, num.max(initial=1)))
        h = np.zeros((rows, k_max + 1))
        multi = num > 1
        np.add.at(h, (rank[multi] + 1, num[multi]), p[multi])
        h = h.cumsum(axis=0).cumsum(axis=1)
        for name, value in (("cpu_breaks", breaks), ("g_table", g), ("h_table", h)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        p.setflags(write=False)

    @classmethod
    def of(
        cls, shapes: Sequence[PodShape | tuple[int, int, int]], weights: Sequence[float] | np.ndarray
    ) -> WorkloadMix:
        """A mix from shapes (``PodShape`` or ``(cpu_milli, gpu_milli, num_gpu)``) and weights."""
        return cls(tuple(s if isinstance(s, PodShape) else PodShape(*s) for s in shapes), np.asarray(weights))

    @classmethod
    def from_pods(cls, pods: Iterable[PodDemand], *, popularity_threshold: float = 0.95) -> WorkloadMix:
        """The typical shapes of ``pods`` (see :class:`WorkloadLearner`)."""
        learner = WorkloadLearner(popularity_threshold=popularity_threshold)
        for pod in pods:
            learner.observe(pod)
        return learner.mix()

    @property
    def empty(self) -> bool:
        return len(self.shapes) == 0

    def cpu_row(self, cpu_free_milli: np.ndarray) -> np.ndarray:
        """Row of the tables for nodes with this much free CPU: the number of CPU breaks ≤ it."""
        return np.searchsorted(self.cpu_breaks, cpu_free_milli, side="right")

    def __repr__(self) -> str:
        return f"WorkloadMix({len(self.shapes)} shapes)"


class WorkloadLearner:
    """Learns the workload mix from the pods seen so far (the caller calls :meth:`observe`).

    Parameters
    ----------
    popularity_threshold : float
        Keep the most frequent shapes until they cover this fraction of the pods seen (FGD
        simulator ``podPopularityThreshold``, 95 % in its experiments); the rest are dropped and
        the kept popularities renormalised. 1.0 keeps every shape.

    Notes
    -----
    Ties in frequency are broken by the shape's order (CPU, milli, count), so the same sequence of
    observations always gives the same mix.
    """

    def __init__(self, *, popularity_threshold: float = 0.95) -> None:
        if not 0.0 < popularity_threshold <= 1.0:
            raise ValueError(f"popularity_threshold must be in (0, 1] (got {popularity_threshold!r})")
        self.popularity_threshold = popularity_threshold
        self._counts: Counter[PodShape] = Counter()
        self._mix: WorkloadMix | None = None

    def observe(self, pod: PodDemand) -> None:
        """Count one more pod of this pod's shape."""
        self._counts[shape_of(pod)] += 1
        self._mix = None

    @property
    def seen(self) -> int:
        return sum(self._counts.values())

    def mix(self) -> WorkloadMix:
        """The current typical mix (cached until the next :meth:`observe`)."""
        if self._mix is None:
            ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))
            total = sum(count for _, count in ranked)
            kept: list[tuple[PodShape, int]] = []
            covered = 0
            for shape, count in ranked:
                if kept and covered >= self.popularity_threshold * total:
                    break
                kept.append((shape, count))
                covered += count
            self._mix = WorkloadMix(tuple(s for s, _ in kept), np.array([c for _, c in kept], dtype=float))
        return self._mix
