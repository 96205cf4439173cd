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

Both are double prefix sums of a popularity grid (rows: CPU rank, columns: milli-GPU or GPU
count). The learner changes the mix with nearly every pod it observes (one more pod of a kept
shape renormalises every popularity), so it keeps its ranking up to date in O(#shapes) per pod
and rebuilds only the tables, on the occupied GPU columns (:class:`_Layout`); the result is
bit-for-bit the dense computation.
"""

from __future__ import annotations

import bisect
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


class _Layout:
    """Where each shape of a mix lands in the lookup tables (it depends on the shapes, not on p).

    The g table is built on the *occupied* milli-GPU columns only, then spread over 0..1000 by
    a gather. That is exact, bit for bit, against the dense double prefix sum
    ``A.cumsum(axis=0).cumsum(axis=1)`` of the popularity grid ``A``: ``cumsum`` adds in order,
    and every term it skips is ``+0.0``, which leaves a non-negative float unchanged.
    """

    __slots__ = (
        "breaks",
        "g_cols",
        "g_expand",
        "g_rows",
        "h_cols",
        "h_rows",
        "k_max",
        "multi",
        "rows",
        "single",
        "width",
    )

    def __init__(self, cpu: np.ndarray, milli: np.ndarray, num: np.ndarray) -> None:
        self.breaks = np.unique(cpu)
        rank = np.searchsorted(self.breaks, cpu)  # row r holds shapes with rank < r
        self.rows = int(self.breaks.shape[0]) + 1
        single = num == 1
        self.single = np.flatnonzero(single)
        columns = np.unique(milli[single])
        # Compact column 0 stays zero: it stands for the milli values below the first occupied one.
        self.width = int(columns.shape[0]) + 1
        self.g_rows = rank[single] + 1
        self.g_cols = np.searchsorted(columns, milli[single]) + 1
        self.g_expand = np.searchsorted(columns, np.arange(GPU_MILLI_PER_DEVICE + 1), side="right")
        self.k_max = int(max(1, num.max(initial=1)))
        multi = num > 1
        self.multi = np.flatnonzero(multi)
        self.h_rows = rank[multi] + 1
        self.h_cols = num[multi]

    def tables(self, p: np.ndarray, *, distinct: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(g_table, h_table)`` of the popularities ``p`` (module docstring).

        ``distinct``: no two shapes share a cell (true of a learner's shapes), so the grid is
        filled by assignment; otherwise repeated shapes are summed in order (``np.add.at``).
        """
        compact = np.zeros((self.rows, self.width))
        h = np.zeros((self.rows, self.k_max + 1))
        if distinct:
            compact[self.g_rows, self.g_cols] = p[self.single]
            h[self.h_rows, self.h_cols] = p[self.multi]
        else:
            np.add.at(compact, (self.g_rows, self.g_cols), p[self.single])
            np.add.at(h, (self.h_rows, self.h_cols), p[self.multi])
        g = compact.cumsum(axis=0).cumsum(axis=1).take(self.g_expand, axis=1)
        return g, h.cumsum(axis=0).cumsum(axis=1)


def _layout_of(shapes: Sequence[PodShape]) -> _Layout:
    cpu = np.array([s.cpu_milli for s in shapes], dtype=np.int64)
    milli = np.array([s.gpu_milli for s in shapes], dtype=np.int64)
    num = np.array([s.num_gpu for s in shapes], dtype=np.int64)
    return _Layout(cpu, milli, num)


@dataclass(frozen=True, eq=False)
class WorkloadMix:
    """Pod shapes and their popularity (normalised to sum 1); see the module docstring.

    Build it with :meth:`of` (shapes and weights) or :meth:`from_pods`.
    """

    shapes: tuple[PodShape, ...]
    popularity: np.ndarray
    #: Share of the pods behind the mix that carried a GPU-type constraint (``gpu_spec``); the
    #: shapes themselves have no type (:class:`PodShape`), so this says how far that matters.
    typed_share: float = 0.0
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
        self._freeze(p, _layout_of(self.shapes), distinct=False)

    def _freeze(self, p: np.ndarray, layout: _Layout, *, distinct: bool) -> None:
        g, h = layout.tables(p, distinct=distinct)
        for name, value in (("popularity", p), ("cpu_breaks", layout.breaks), ("g_table", g), ("h_table", h)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @classmethod
    def _learned(
        cls, shapes: tuple[PodShape, ...], counts: np.ndarray, layout: _Layout, typed_share: float = 0.0
    ) -> WorkloadMix:
        """A mix of distinct ``shapes`` with positive integer ``counts``, tables by ``layout``
        (the learner's path: no validation to repeat; the same values as the constructor)."""
        mix = object.__new__(cls)
        object.__setattr__(mix, "shapes", shapes)
        object.__setattr__(mix, "typed_share", typed_share)
        p = counts.astype(np.float64)
        mix._freeze(p / p.sum(), layout, distinct=True)
        return mix

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


#: A shape's sort key in the learner's ranking: (−count, cpu_milli, gpu_milli, num_gpu).
_Key = tuple[int, int, int, int]


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

    Cost: :meth:`observe` moves one shape in a ranking kept sorted by (−count, shape), O(#shapes).
    :meth:`mix` finds the cut (O(#shapes)), returns the previous mix when the kept shapes and
    their counts did not change (a rare shape was seen), reuses the table layout when only the
    counts did, and otherwise lays the tables out again; the tables themselves are filled on
    the occupied cells only (:class:`_Layout`).
    """

    def __init__(self, *, popularity_threshold: float = 0.95) -> None:
        if not 0.0 < popularity_threshold <= 1.0:
            raise ValueError(f"popularity_threshold must be in (0, 1] (got {popularity_threshold!r})")
        self.popularity_threshold = popularity_threshold
        self._count: dict[tuple[int, int, int], int] = {}
        self._shape: dict[tuple[int, int, int], PodShape] = {}
        self._ranked: list[_Key] = []  # sorted: most frequent first, ties by shape
        self._total = 0
        self._typed = 0  # pods seen with a GPU-type constraint
        self._mix: WorkloadMix | None = None
        self._dirty = True
        self._kept: list[_Key] = []  # the ranked prefix the current mix was built from
        self._layout: tuple[list[tuple[int, int, int]], _Layout] | None = None

    def observe(self, pod: PodDemand) -> None:
        """Count one more pod of this pod's shape."""
        if pod.gpu_milli <= 0:
            key = (pod.cpu_milli, 0, 0)
        else:
            key = (pod.cpu_milli, pod.milli_per_device, pod.gpu_count)
        old = self._count.get(key, 0)
        if old == 0:
            self._shape[key] = PodShape(*key)  # validates the shape once
        else:
            ranked = self._ranked
            del ranked[bisect.bisect_left(ranked, (-old, *key))]
        bisect.insort(self._ranked, (-old - 1, *key))
        self._count[key] = old + 1
        self._total += 1
        self._typed += 1 if pod.gpu_spec else 0
        self._dirty = True

    @property
    def seen(self) -> int:
        return self._total

    def _cut(self) -> int:
        """Shapes kept: the most frequent until they cover the threshold (at least one)."""
        need = self.popularity_threshold * self._total
        covered = 0
        kept = 0
        for key in self._ranked:
            if kept and covered >= need:
                break
            covered -= key[0]
            kept += 1
        return kept

    def mix(self) -> WorkloadMix:
        """The current typical mix (the same object until the kept shapes or counts change)."""
        if self._mix is not None and not self._dirty:
            return self._mix
        self._dirty = False
        kept = self._ranked[: self._cut()]
        typed_share = self._typed / self._total if self._total else 0.0
        if self._mix is not None and kept == self._kept and typed_share == self._mix.typed_share:
            return self._mix
        self._kept = kept
        keys = [(k[1], k[2], k[3]) for k in kept]
        shapes = tuple(self._shape[k] for k in keys)
        if self._layout is None or self._layout[0] != keys:
            self._layout = (keys, _layout_of(shapes))
        counts = np.fromiter((-k[0] for k in kept), dtype=np.int64, count=len(kept))
        self._mix = WorkloadMix._learned(shapes, counts, self._layout[1], typed_share)
        return self._mix
