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
count).

GPU types. A shape may be constrained to GPU models (``gpu_spec``, e.g. ``("V100M16",
"V100M32")``); as in the simulator, whose typical pods are keyed by ``PodResource.GpuType`` too,
such a shape is a shape of its own, and on a node whose model it does not accept it can use
none of the free GPU (``NoAccess`` in ``GetNodePodFrag``: all of it counts as fragment, as for a
shape that does not fit). So the tables come in blocks, one per *table* (:attr:`WorkloadMix.models`):
table 0 holds the untyped shapes only (nodes of a model no shape names, or without a model);
table j + 1 the untyped shapes and the typed ones accepting ``models[j]``. A node reads the rows
of its model's block (:meth:`WorkloadMix.table_row`). Without typed shapes there is one block,
the tables as before. The learner changes the mix with nearly every pod it observes (one more pod of a kept
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
    """A pod's resource shape: CPU [milli-CPU], milli-GPU per GPU (0..1000), number of GPUs, and
    the GPU models it accepts (``gpu_spec``, sorted; empty: any)."""

    cpu_milli: int
    gpu_milli: int
    num_gpu: int
    gpu_spec: tuple[str, ...] = ()

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
    """The shape of a pod: (cpu_milli, milli per GPU, GPU count, accepted GPU models)."""
    return PodShape(*_key_of(pod))


def _key_of(pod: PodDemand) -> tuple[int, int, int, tuple[str, ...]]:
    """(cpu_milli, milli per GPU, GPU count, sorted gpu_spec); a pod without GPU has no type
    (the simulator's fit and fragmentation tests ignore the type of a CPU-only pod)."""
    if pod.gpu_milli <= 0:
        return (pod.cpu_milli, 0, 0, ())
    return (pod.cpu_milli, pod.milli_per_device, pod.gpu_count, tuple(sorted(pod.gpu_spec)))


class _Layout:
    """Where each shape of a mix lands in the lookup tables (it depends on the shapes, not on p).

    Each shape is entered once per table it counts in (module docstring: an untyped shape in
    every table, a typed one in the tables of the models it accepts); a table is a block of
    ``rows`` rows. The g table is built on the *occupied* milli-GPU columns only, then spread
    over 0..1000 by a gather. That is exact, bit for bit, against the dense double prefix sum
    ``A.cumsum(axis=0).cumsum(axis=1)`` of each block's popularity grid ``A``: ``cumsum`` adds
    in order, and every term it skips is ``+0.0``, which leaves a non-negative float unchanged.
    """

    __slots__ = (
        "breaks",
        "g_cols",
        "g_expand",
        "g_rows",
        "g_shape",
        "h_cols",
        "h_rows",
        "h_shape",
        "k_max",
        "models",
        "rows",
        "width",
    )

    def __init__(
        self, cpu: np.ndarray, milli: np.ndarray, num: np.ndarray, specs: Sequence[tuple[str, ...]]
    ) -> None:
        self.breaks = np.unique(cpu)
        rank = np.searchsorted(self.breaks, cpu)  # row r holds shapes with rank < r
        self.rows = int(self.breaks.shape[0]) + 1
        self.models = tuple(sorted({model for spec in specs for model in spec}))
        shape, table = _entries(specs, self.models)
        single = num[shape] == 1
        self.g_shape = shape[single]
        columns = np.unique(milli[self.g_shape])
        # Compact column 0 stays zero: it stands for the milli values below the first occupied one.
        self.width = int(columns.shape[0]) + 1
        self.g_rows = table[single] * self.rows + rank[self.g_shape] + 1
        self.g_cols = np.searchsorted(columns, milli[self.g_shape]) + 1
        self.g_expand = np.searchsorted(columns, np.arange(GPU_MILLI_PER_DEVICE + 1), side="right")
        self.k_max = int(max(1, num.max(initial=1)))
        multi = num[shape] > 1
        self.h_shape = shape[multi]
        self.h_rows = table[multi] * self.rows + rank[self.h_shape] + 1
        self.h_cols = num[self.h_shape]

    def tables(self, p: np.ndarray, *, distinct: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(g_table, h_table)`` of the popularities ``p`` (module docstring).

        ``distinct``: no two shapes share a cell (true of a learner's untyped shapes), so the
        grid is filled by assignment; otherwise repeated cells are summed in order
        (``np.add.at``). Typed shapes may share a cell of a model's table (same CPU and milli,
        different specs accepting that model), so they are always summed.
        """
        blocks = len(self.models) + 1
        compact = np.zeros((blocks * self.rows, self.width))
        h = np.zeros((blocks * self.rows, self.k_max + 1))
        if distinct and not self.models:
            compact[self.g_rows, self.g_cols] = p[self.g_shape]
            h[self.h_rows, self.h_cols] = p[self.h_shape]
        else:
            np.add.at(compact, (self.g_rows, self.g_cols), p[self.g_shape])
            np.add.at(h, (self.h_rows, self.h_cols), p[self.h_shape])
        g = _block_prefix(compact, blocks).take(self.g_expand, axis=1)
        return g, _block_prefix(h, blocks)


def _block_prefix(grid: np.ndarray, blocks: int) -> np.ndarray:
    """Double prefix sum (rows, then columns) within each of ``blocks`` equal row blocks."""
    shaped = grid.reshape(blocks, grid.shape[0] // blocks, grid.shape[1])
    return shaped.cumsum(axis=1).cumsum(axis=2).reshape(grid.shape)


def _entries(specs: Sequence[tuple[str, ...]], models: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(shape index, table index) of every table entry: an untyped shape in every table
    0..len(models), a typed one in table j + 1 for each model j it accepts."""
    index = {model: j + 1 for j, model in enumerate(models)}
    everywhere = range(len(models) + 1)
    pairs = [
        (i, t)
        for i, spec in enumerate(specs)
        for t in (sorted(index[m] for m in spec) if spec else everywhere)
    ]
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    arr = np.array(pairs, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def _layout_of(shapes: Sequence[PodShape]) -> _Layout:
    cpu = np.array([s.cpu_milli for s in shapes], dtype=np.int64)
    milli = np.array([s.gpu_milli for s in shapes], dtype=np.int64)
    num = np.array([s.num_gpu for s in shapes], dtype=np.int64)
    return _Layout(cpu, milli, num, [s.gpu_spec for s in shapes])


@dataclass(frozen=True, eq=False)
class WorkloadMix:
    """Pod shapes and their popularity (normalised to sum 1); see the module docstring.

    Build it with :meth:`of` (shapes and weights) or :meth:`from_pods`.
    """

    shapes: tuple[PodShape, ...]
    popularity: np.ndarray
    #: Share of the pods behind the mix that carried a GPU-type constraint (``gpu_spec``).
    typed_share: float = 0.0
    #: The GPU models the typed shapes name, sorted: table j + 1 is ``models[j]``'s, table 0
    #: every other node's (module docstring).
    models: tuple[str, ...] = field(init=False, repr=False)
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
        object.__setattr__(self, "models", layout.models)
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
        cls,
        shapes: Sequence[PodShape | tuple[int, int, int] | tuple[int, int, int, tuple[str, ...]]],
        weights: Sequence[float] | np.ndarray,
    ) -> WorkloadMix:
        """A mix from shapes (``PodShape``, ``(cpu_milli, gpu_milli, num_gpu)`` or with the
        accepted GPU models fourth) and weights."""
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

    def table_row(self, cpu_free_milli: np.ndarray, table: np.ndarray | None) -> np.ndarray:
        """Row of the tables for nodes with this much free CPU, in their model's table
        (``table``: from :meth:`tables_of`; None: table 0, every node alike)."""
        row = self.cpu_row(cpu_free_milli)
        if table is None or not self.models:
            return row
        return table * (self.cpu_breaks.shape[0] + 1) + row

    def tables_of(self, model_names: Sequence[str], model_code: np.ndarray) -> np.ndarray | None:
        """Table of each node from its GPU model code (an index into ``model_names``, −1 for
        none): j + 1 for ``models[j]``, 0 for a model no shape names. None when the mix has no
        typed shape (one table)."""
        if not self.models:
            return None
        index = {model: j + 1 for j, model in enumerate(self.models)}
        lookup = np.array([index.get(name, 0) for name in model_names] + [0], dtype=np.int64)
        return lookup[model_code]  # code −1 reads the trailing 0

    def __repr__(self) -> str:
        return f"WorkloadMix({len(self.shapes)} shapes)"


#: A shape's sort key in the learner's ranking: (−count, cpu_milli, gpu_milli, num_gpu, gpu_spec).
_Key = tuple[int, int, int, int, tuple[str, ...]]
#: A shape's identity in the learner: (cpu_milli, gpu_milli, num_gpu, gpu_spec).
_ShapeKey = tuple[int, int, int, tuple[str, ...]]


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
    Ties in frequency are broken by the shape's order (CPU, milli, count, GPU models), so the same sequence of
    observations always gives the same mix.

    Cost: :meth:`observe` moves one shape in a ranking kept sorted by (−count, shape), O(#shapes).
    :meth:`mix` finds the cut (O(#shapes)), returns the previous mix when the kept shapes and
    their counts did not change (a rare shape was seen) or their proportions did not (one
    shape seen again), reuses the table layout when only the
    counts did, and otherwise lays the tables out again; the tables themselves are filled on
    the occupied cells only (:class:`_Layout`).
    """

    def __init__(self, *, popularity_threshold: float = 0.95) -> None:
        if not 0.0 < popularity_threshold <= 1.0:
            raise ValueError(f"popularity_threshold must be in (0, 1] (got {popularity_threshold!r})")
        self.popularity_threshold = popularity_threshold
        self._count: dict[_ShapeKey, int] = {}
        self._shape: dict[_ShapeKey, PodShape] = {}
        self._ranked: list[_Key] = []  # sorted: most frequent first, ties by shape
        self._total = 0
        self._typed = 0  # pods seen with a GPU-type constraint
        self._mix: WorkloadMix | None = None
        self._dirty = True
        self._kept: list[_Key] = []  # the ranked prefix the current mix was built from
        self._layout: tuple[list[_ShapeKey], _Layout] | None = None

    def observe(self, pod: PodDemand) -> None:
        """Count one more pod of this pod's shape."""
        key = _key_of(pod)
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
        """The current typical mix (the same object until the kept shapes or their proportions
        change)."""
        if self._mix is not None and not self._dirty:
            return self._mix
        self._dirty = False
        kept = self._ranked[: self._cut()]
        typed_share = self._typed / self._total if self._total else 0.0
        if self._mix is not None and kept == self._kept and typed_share == self._mix.typed_share:
            return self._mix
        self._kept = kept
        keys: list[_ShapeKey] = [(k[1], k[2], k[3], k[4]) for k in kept]
        counts = np.fromiter((-k[0] for k in kept), dtype=np.int64, count=len(kept))
        if (
            self._mix is not None
            and self._layout is not None
            and self._layout[0] == keys
            and typed_share == self._mix.typed_share
            and np.array_equal(counts / counts.sum(), self._mix.popularity)
        ):
            # The same shapes in the same proportions (one shape, or counts grown in step): the
            # same tables, so the same object — callers may key memos on the mix's identity.
            return self._mix
        shapes = tuple(self._shape[k] for k in keys)
        if self._layout is None or self._layout[0] != keys:
            self._layout = (keys, _layout_of(shapes))
        self._mix = WorkloadMix._learned(shapes, counts, self._layout[1], typed_share)
        return self._mix
