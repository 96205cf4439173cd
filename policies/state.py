"""The cluster snapshot as numpy arrays: cluster → node → device → co-located services.

Every placement decision reads this one structure, in the extender (fed by the cache) and in
the what-if simulator (fed by the replay), so there is a single implementation of accounting.
It is updated *incrementally* (``add`` / ``remove`` touch one node's rows), because rebuilding
O(cluster) arrays per watch event or per simulated pod would dominate the decision time; policies
read the arrays vectorised over all candidate nodes at once.

Shapes: ``n`` nodes, ``D`` device slots per node (the largest device count; absent devices have
``dev_exists == False``), ``K`` service slots per device (grows on demand). A node whose
accelerator is ``cpu`` has one "device": its CPU, shared by processor sharing.

Per-device summaries, kept current by ``add`` / ``remove`` (recomputed from the device's slots
on every change, never by running ``+=``/``-=``, so they equal a from-scratch recomputation
exactly): the load sums of the time-slicing model (``dev_load_sums``), the end of the used slot
prefix, and counts of services that need the general model path (a percentile SLO, their own
co-location overhead, parameters the latency models reject). The judge of a pod on a device
reads them instead of re-reading every service slot.

Concurrency: the state is not locked here. The extender serialises writers and readers with
one lock held only around pure, in-memory work (never across I/O); the simulator is
single-threaded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from qosched.policies.latency.queueing import MS_PER_S
from qosched.policies.latency.sharing import LoadSums, valid_services
from qosched.policies.types import (
    CPU_ACCELERATOR,
    GPU_MILLI_PER_DEVICE,
    SHARING_MODES,
    Allocation,
    NodeView,
    PodDemand,
)


@dataclass(frozen=True, slots=True)
class ServiceParams:
    """What the latency models need to know of one model on one accelerator type (from a profile).

    service_ms, second_moment_ms2: solo service time of one request, mean [ms] and E[S²] [ms²].
    swap_ms: reload overhead when another model ran last (edge TPU) [ms].
    memory_mib: device memory the model needs [MiB]. frontend_ms: pre-processing on the node CPU [ms].
    accuracy: top-1 accuracy when known (variant choice).
    overhead_frac: the model's own co-location slowdown (profile ``contention.overhead_frac``).
    """

    service_ms: float
    second_moment_ms2: float
    swap_ms: float = 0.0
    memory_mib: float = 0.0
    frontend_ms: float = 0.0
    accuracy: float | None = None
    overhead_frac: float = 0.0


#: ``lookup(accelerator, model)`` → the model's parameters on that accelerator, or None when no
#: profile exists (then the model cannot be placed there; see the contract §1 "Profile keys").
ServiceLookup = Callable[[str, str], "ServiceParams | None"]
#: ``device_memory(accelerator)`` → memory of one device of that type [MiB] (inf when unknown).
DeviceMemoryLookup = Callable[[str], float]


class StateError(ValueError):
    """An update the accounting cannot take (unknown node, duplicate pod, bad device index)."""


@dataclass(slots=True)
class _Placed:
    alloc: Allocation
    node_idx: int
    slots: list[tuple[int, int]]  # (device, k) service slots taken
    affinity: int = -1  # -1 no GPU; 0 shared GPU; c >= 1 column c-1 of ``gpu_whole_pods``
    invalid: bool = False  # its profile parameters fail ``latency.sharing.valid_services``


class DerivedTables(dict[tuple[object, ...], object]):
    """Tables derived from a state's fixed inputs, memoised by the modules that build them.

    Owned by one :class:`ClusterState` (``state.derived``), so a memo lives and dies with its
    state instead of in a module-global map. Only what depends on inputs a state never changes
    (its profile lookup; its accelerator list, which only grows, so keys carry its length) may be
    kept here, which keeps every hit exact. Copies and pickles start empty, as a fresh state
    would (the tables are rebuilt on first use).
    """

    def __deepcopy__(self, memo: dict[int, object]) -> DerivedTables:
        return DerivedTables()

    def __reduce__(self) -> tuple[type[DerivedTables], tuple[()]]:
        return (DerivedTables, ())


class ClusterState:
    """Incrementally maintained arrays of what runs where (see the module docstring)."""

    def __init__(
        self,
        nodes: Sequence[NodeView],
        lookup: ServiceLookup,
        device_memory: DeviceMemoryLookup,
        *,
        services_per_device: int = 4,
    ) -> None:
        self._lookup = lookup
        self._device_memory = device_memory
        self.version = 0
        self.node_views: list[NodeView] = []
        self.node_names: list[str] = []
        self.node_index: dict[str, int] = {}
        self.accelerators: list[str] = []
        self._accel_code_of: dict[str, int] = {}
        self.gpu_models: list[str] = []
        self._gpu_model_code_of: dict[str, int] = {}
        self._placed: dict[str, _Placed] = {}
        self._pods_by_node: list[set[str]] = []
        # Services (over the whole state) with a percentile SLO, with their own co-location
        # overhead, and with parameters the latency models reject (``valid_services``).
        self.n_pct_services = 0
        self.n_overhead_services = 0
        self.n_invalid_services = 0
        self._valid_params: dict[ServiceParams, bool] = {}
        #: Memo of derived tables (``placement.constraints``, ``placement.interference``).
        self.derived = DerivedTables()
        n = len(nodes)
        d = max([1, *(self._device_slots(v) for v in nodes)])
        k = max(1, services_per_device)
        self._alloc_arrays(n, d, k)
        for i, view in enumerate(nodes):
            if view.name in self.node_index:
                raise StateError(f"node {view.name} listed twice")
            self.node_views.append(view)
            self.node_names.append(view.name)
            self.node_index[view.name] = i
            self._pods_by_node.append(set())
            self._write_node_row(i, view)

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _device_slots(view: NodeView) -> int:
        if view.accelerator == CPU_ACCELERATOR:
            return 1
        return view.device_count

    def _alloc_arrays(self, n: int, d: int, k: int) -> None:
        self.n_nodes, self.n_devices, self.n_slots = n, d, k
        self.accel_code = np.full(n, -1, dtype=np.int32)
        # Code of ``NodeView.gpu_model`` (e.g. ``V100M16``) in ``self.gpu_models``; -1 when unset.
        # Matched against ``PodDemand.gpu_spec`` together with the accelerator key.
        self.gpu_model_code = np.full(n, -1, dtype=np.int32)
        self.sharing_code = np.zeros(n, dtype=np.int8)
        self.device_count = np.zeros(n, dtype=np.int32)
        self.schedulable = np.zeros(n, dtype=bool)
        self.cpu_cap_milli = np.zeros(n, dtype=np.int64)
        self.cpu_used_milli = np.zeros(n, dtype=np.int64)
        self.mem_cap_mib = np.zeros(n, dtype=np.float64)
        self.mem_used_mib = np.zeros(n, dtype=np.float64)
        self.frontend_util = np.zeros(n, dtype=np.float64)
        self.pod_count = np.zeros(n, dtype=np.int32)
        # Bumped whenever anything about node i changes (its row, or a pod added or removed), so
        # a consumer may memoise per-node results and reuse them while the version is unchanged.
        self.node_version = np.zeros(n, dtype=np.int64)
        # GPU "affinity" of the pods on each node, as the FGD simulator's GpuClustering reads it:
        # pods sharing one GPU (gpu_milli < 1000), and pods of c whole GPUs in column c - 1.
        self.gpu_share_pods = np.zeros(n, dtype=np.int32)
        self.gpu_whole_pods = np.zeros((n, d), dtype=np.int32)
        self.dev_exists = np.zeros((n, d), dtype=bool)
        self.gpu_used_milli = np.zeros((n, d), dtype=np.int32)
        self.dev_mem_cap_mib = np.full(n, np.inf, dtype=np.float64)
        self.dev_mem_used_mib = np.zeros((n, d), dtype=np.float64)
        self.dev_unmodelled = np.zeros((n, d), dtype=np.int32)
        self.svc_mask = np.zeros((n, d, k), dtype=bool)
        self.svc_rate_rps = np.zeros((n, d, k))
        self.svc_service_ms = np.zeros((n, d, k))
        self.svc_second_ms2 = np.zeros((n, d, k))
        self.svc_swap_ms = np.zeros((n, d, k))
        self.svc_share_frac = np.ones((n, d, k))
        self.svc_slo_ms = np.full((n, d, k), np.inf)
        # Percentile the SLO refers to (``qosched.io/slo-percentile``); NaN = the mean.
        self.svc_slo_percentile = np.full((n, d, k), np.nan)
        self.svc_overhead_frac = np.zeros((n, d, k))
        self.svc_mem_mib = np.zeros((n, d, k))
        # Per device, from its valid service slots (see ``_refresh_device``): the sums of
        # ``latency.sharing.LoadSums`` (Σλ [1/ms], Σλ·S, Σλ·E[S²] [ms], active services), one
        # past the last slot in use (0: none), and the services with a percentile SLO / with
        # their own overhead. Invariant the judge relies on: an empty slot has SLO inf.
        self.dev_rate_per_ms = np.zeros((n, d))
        self.dev_load = np.zeros((n, d))
        self.dev_second_load_ms = np.zeros((n, d))
        self.dev_active = np.zeros((n, d), dtype=np.int32)
        self.dev_slot_end = np.zeros((n, d), dtype=np.int32)
        self.dev_pct_services = np.zeros((n, d), dtype=np.int32)
        self.dev_overhead_services = np.zeros((n, d), dtype=np.int32)
        self.svc_class: list[list[list[str | None]]] = [[[None] * k for _ in range(d)] for _ in range(n)]
        self.svc_uid: list[list[list[str | None]]] = [[[None] * k for _ in range(d)] for _ in range(n)]

    def accelerator_code(self, accelerator: str) -> int:
        """Stable small integer for an accelerator key (index into ``self.accelerators``)."""
        code = self._accel_code_of.get(accelerator)
        if code is None:
            code = len(self.accelerators)
            self.accelerators.append(accelerator)
            self._accel_code_of[accelerator] = code
        return code

    def gpu_model_code_of(self, gpu_model: str) -> int:
        """Stable small integer for a GPU model name (index into ``self.gpu_models``)."""
        code = self._gpu_model_code_of.get(gpu_model)
        if code is None:
            code = len(self.gpu_models)
            self.gpu_models.append(gpu_model)
            self._gpu_model_code_of[gpu_model] = code
        return code

    def _write_node_row(self, i: int, view: NodeView) -> None:
        self.node_version[i] += 1
        slots = self._device_slots(view)
        if slots > self.n_devices:
            self._grow(devices=slots)
        self.accel_code[i] = -1 if view.accelerator is None else self.accelerator_code(view.accelerator)
        self.gpu_model_code[i] = -1 if view.gpu_model is None else self.gpu_model_code_of(view.gpu_model)
        self.sharing_code[i] = SHARING_MODES.index(view.sharing)
        self.device_count[i] = slots
        self.schedulable[i] = view.schedulable
        self.cpu_cap_milli[i] = view.cpu_milli
        self.mem_cap_mib[i] = view.memory_mib
        self.dev_exists[i, :] = False
        self.dev_exists[i, :slots] = True
        self.dev_mem_cap_mib[i] = (
            np.inf if view.accelerator is None else float(self._device_memory(view.accelerator))
        )

    def _grow(
        self, *, nodes: int | None = None, devices: int | None = None, slots: int | None = None
    ) -> None:
        """Reallocate the arrays bigger, keeping contents (amortised: sizes at least double)."""
        # Node rows grow exactly (every array has exactly one row per node, so policies never
        # slice); service slots double, since a busy device gains services one at a time.
        n_new = max(self.n_nodes, nodes or 0)
        d_new = max(self.n_devices, devices or 0)
        k_new = max(self.n_slots, slots or 0)
        if slots and slots > self.n_slots:
            k_new = max(slots, 2 * self.n_slots)
        if (n_new, d_new, k_new) == (self.n_nodes, self.n_devices, self.n_slots):
            return
        old = {
            name: getattr(self, name) for name in vars(self) if isinstance(getattr(self, name), np.ndarray)
        }
        old_class, old_uid = self.svc_class, self.svc_uid
        n0, d0, k0 = self.n_nodes, self.n_devices, self.n_slots
        self._alloc_arrays(n_new, d_new, k_new)
        for name, arr in old.items():
            new = getattr(self, name)
            if arr.ndim == 1:
                new[:n0] = arr
            elif arr.ndim == 2:
                new[:n0, :d0] = arr
            else:
                new[:n0, :d0, :k0] = arr
        for i in range(n0):
            for d in range(d0):
                self.svc_class[i][d][:k0] = old_class[i][d]
                self.svc_uid[i][d][:k0] = old_uid[i][d]

    # ------------------------------------------------------------------ nodes
    def upsert_node(self, view: NodeView) -> None:
        """Add a node, or update an existing node's labels/allocatable (its pods stay)."""
        i = self.node_index.get(view.name)
        if i is None:
            i = len(self.node_names)
            self._grow(nodes=i + 1)
            self.node_views.append(view)
            self.node_names.append(view.name)
            self.node_index[view.name] = i
            self._pods_by_node.append(set())
        else:
            old = self.node_views[i]
            if (old.accelerator, self._device_slots(old)) != (view.accelerator, self._device_slots(view)):
                # Devices changed under running pods: recompute that node's services.
                uids = list(self._pods_by_node[i])
                allocs = [self._placed[u].alloc for u in uids]
                for u in uids:
                    self.remove(u)
                self.node_views[i] = view
                self._write_node_row(i, view)
                for a in allocs:
                    self.add(a, strict=False)
                self.version += 1
                return
            self.node_views[i] = view
        self._write_node_row(i, view)
        self.version += 1

    def remove_node(self, name: str) -> list[Allocation]:
        """Forget a node; returns the allocations that were on it (they are dropped too)."""
        i = self.node_index.get(name)
        if i is None:
            return []
        dropped = [self._placed[u].alloc for u in list(self._pods_by_node[i])]
        for a in dropped:
            self.remove(a.uid)
        # Mark the row unusable; indexes of other nodes stay stable (compacted by ``rebuilt``).
        self.schedulable[i] = False
        self.dev_exists[i, :] = False
        self.device_count[i] = 0
        self.cpu_cap_milli[i] = 0
        self.mem_cap_mib[i] = 0
        self.accel_code[i] = -1
        self.gpu_model_code[i] = -1
        self.node_version[i] += 1
        self.node_views[i] = NodeView(name=name, schedulable=False)
        self.version += 1
        return dropped

    # ------------------------------------------------------------------ pods
    def __contains__(self, uid: object) -> bool:
        return uid in self._placed

    def __len__(self) -> int:
        return len(self._placed)

    def allocations(self) -> Iterator[Allocation]:
        return (p.alloc for p in self._placed.values())

    def allocation(self, uid: str) -> Allocation | None:
        placed = self._placed.get(uid)
        return None if placed is None else placed.alloc

    def service_params(self, accelerator: str | None, model: str | None) -> ServiceParams | None:
        if accelerator is None or model is None:
            return None
        return self._lookup(accelerator, model)

    def add(self, alloc: Allocation, *, strict: bool = True) -> None:
        """Account a pod on its node and devices.

        ``strict`` refuses device indexes outside the node and over-committed devices (what a
        policy must never produce); the cache passes ``strict=False`` for pods that the API
        server says are running, since reality wins over accounting.
        """
        uid = alloc.uid
        if uid in self._placed:
            raise StateError(f"pod {alloc.pod.namespace}/{alloc.pod.name} ({uid}) is already placed")
        i = self.node_index.get(alloc.node)
        if i is None:
            raise StateError(f"pod {alloc.pod.name}: unknown node {alloc.node}")
        pod = alloc.pod
        devices = self._checked_devices(alloc, i, strict)
        milli = pod.milli_per_device if pod.gpu_milli > 0 else 0
        placed = _Placed(
            alloc=alloc if devices == alloc.devices else _with_devices(alloc, devices), node_idx=i, slots=[]
        )
        self.cpu_used_milli[i] += pod.cpu_milli
        self.mem_used_mib[i] += pod.memory_mib
        self.pod_count[i] += 1
        self.node_version[i] += 1
        self._count_affinity(i, pod, placed)
        view = self.node_views[i]
        model = alloc.model or pod.model
        params = self.service_params(view.accelerator, model) if pod.is_inference else None
        placed.invalid = params is not None and not self.params_valid(params)
        for d in devices:
            self.gpu_used_milli[i, d] += milli
            if not pod.is_inference:
                continue
            if params is None:
                self.dev_unmodelled[i, d] += 1
                continue
            k = self._free_slot(i, d)
            self._write_service(i, d, k, alloc, params, len(devices))
            placed.slots.append((d, k))
            self.n_invalid_services += placed.invalid
        if params is not None:
            self.frontend_util[i] += pod.rate_rps * params.frontend_ms / 1000.0
        self._placed[uid] = placed
        self._pods_by_node[i].add(uid)
        self.version += 1

    def _checked_devices(self, alloc: Allocation, i: int, strict: bool) -> tuple[int, ...]:
        """The pod's devices on node ``i``: out-of-range indexes and over-committed devices are an
        error when ``strict``, else out-of-range ones are dropped (see :meth:`add`)."""
        pod = alloc.pod
        devices = tuple(alloc.devices)
        n_dev = int(self.device_count[i])
        if any(not 0 <= d < n_dev for d in devices):
            if strict:
                raise StateError(
                    f"pod {pod.name}: devices {devices} outside node {alloc.node} ({n_dev} devices)"
                )
            devices = tuple(d for d in devices if 0 <= d < n_dev)
        milli = pod.milli_per_device if pod.gpu_milli > 0 else 0
        if strict and milli and devices:
            used = self.gpu_used_milli[i, list(devices)]
            if np.any(used + milli > GPU_MILLI_PER_DEVICE):
                raise StateError(f"pod {pod.name}: devices {devices} of {alloc.node} lack {milli} milli-GPU")
        return devices

    def _count_affinity(self, i: int, pod: PodDemand, placed: _Placed) -> None:
        """Count the pod in node ``i``'s GPU affinity (shared GPU, or c whole GPUs)."""
        if pod.gpu_milli <= 0:
            return
        if pod.gpu_milli < GPU_MILLI_PER_DEVICE:
            placed.affinity = 0
            self.gpu_share_pods[i] += 1
        else:
            placed.affinity = min(pod.gpu_count, self.n_devices)
            self.gpu_whole_pods[i, placed.affinity - 1] += 1

    def _free_slot(self, i: int, d: int) -> int:
        free = np.flatnonzero(~self.svc_mask[i, d])
        if free.size:
            return int(free[0])
        k = self.n_slots
        self._grow(slots=k + 1)
        return k

    def _write_service(
        self, i: int, d: int, k: int, alloc: Allocation, params: ServiceParams, n_devices: int
    ) -> None:
        pod = alloc.pod
        sharing = SHARING_MODES[int(self.sharing_code[i])]
        share = (
            pod.milli_per_device / GPU_MILLI_PER_DEVICE
            if sharing in ("mps", "mig") and pod.gpu_milli
            else 1.0
        )
        self.svc_mask[i, d, k] = True
        # A multi-device pod spreads its requests over its devices.
        self.svc_rate_rps[i, d, k] = pod.rate_rps / max(1, n_devices)
        self.svc_service_ms[i, d, k] = params.service_ms
        self.svc_second_ms2[i, d, k] = params.second_moment_ms2
        self.svc_swap_ms[i, d, k] = params.swap_ms
        self.svc_share_frac[i, d, k] = share
        self.svc_slo_ms[i, d, k] = np.inf if pod.slo_ms is None else pod.slo_ms
        self.svc_slo_percentile[i, d, k] = np.nan if pod.slo_percentile is None else pod.slo_percentile
        self.svc_overhead_frac[i, d, k] = params.overhead_frac
        self.svc_mem_mib[i, d, k] = params.memory_mib
        self.dev_mem_used_mib[i, d] += params.memory_mib
        self.svc_class[i][d][k] = pod.qos_class
        self.svc_uid[i][d][k] = pod.uid
        self._count_service(i, d, k, +1)
        self._refresh_device(i, d)

    def _count_service(self, i: int, d: int, k: int, sign: int) -> None:
        """Add (``sign`` +1) or take back (-1) slot (i, d, k) in the per-device service counts."""
        if np.isfinite(self.svc_slo_percentile[i, d, k]):
            self.n_pct_services += sign
            self.dev_pct_services[i, d] += sign
        if self.svc_overhead_frac[i, d, k] != 0.0:
            self.n_overhead_services += sign
            self.dev_overhead_services[i, d] += sign

    def params_valid(self, params: ServiceParams) -> bool:
        """Whether the latency models accept a service of these parameters (memoised).

        The rest of a slot is valid by construction: ``PodDemand`` checks its rate (finite,
        >= 0) and milli-GPU, so the share is in (0, 1].
        """
        ok = self._valid_params.get(params)
        if ok is None:
            ok = bool(
                valid_services(
                    0.0,
                    params.service_ms,
                    params.second_moment_ms2,
                    swap_ms=params.swap_ms,
                    overhead_frac=params.overhead_frac,
                )
            )
            self._valid_params[params] = ok
        return ok

    def _refresh_device(self, i: int, d: int) -> None:
        """Recompute device (i, d)'s summaries from its slots (exact; see the module docstring)."""
        # ``LoadSums.of`` on this device's slots, in its order (slot by slot, one addition at a
        # time; Python floats are IEEE doubles, so the result is the same bit for bit, tested),
        # without its per-call array overhead: this runs on every add and remove.
        used = np.flatnonzero(self.svc_mask[i, d]).tolist()
        rates = self.svc_rate_rps[i, d].tolist()
        service = self.svc_service_ms[i, d].tolist()
        second = self.svc_second_ms2[i, d].tolist()
        lam_sum = load = second_load = 0.0
        active = 0
        for k in used:
            lam = rates[k] / MS_PER_S
            lam_sum += lam
            load += lam * service[k]
            second_load += lam * second[k]
            active += rates[k] > 0
        self.dev_rate_per_ms[i, d] = lam_sum
        self.dev_load[i, d] = load
        self.dev_second_load_ms[i, d] = second_load
        self.dev_active[i, d] = active
        self.dev_slot_end[i, d] = used[-1] + 1 if used else 0

    def dev_load_sums(self, flat: np.ndarray) -> LoadSums:
        """The ``LoadSums`` of devices ``flat`` (indexes into the (n·D) flattened device axes)."""
        return LoadSums(
            rate_per_ms=self.dev_rate_per_ms.take(flat),
            load=self.dev_load.take(flat),
            second_load_ms=self.dev_second_load_ms.take(flat),
            active=self.dev_active.take(flat),
        )

    def remove(self, uid: str) -> Allocation | None:
        """Release a pod's accounting; returns its allocation (None if it was not placed)."""
        placed = self._placed.pop(uid, None)
        if placed is None:
            return None
        i, alloc, pod = placed.node_idx, placed.alloc, placed.alloc.pod
        self._pods_by_node[i].discard(uid)
        self.cpu_used_milli[i] -= pod.cpu_milli
        self.mem_used_mib[i] -= pod.memory_mib
        self.pod_count[i] -= 1
        self.node_version[i] += 1
        if placed.affinity == 0:
            self.gpu_share_pods[i] -= 1
        elif placed.affinity > 0:
            self.gpu_whole_pods[i, placed.affinity - 1] -= 1
        milli = pod.milli_per_device if pod.gpu_milli > 0 else 0
        modelled = {d for d, _ in placed.slots}
        for d in alloc.devices:
            self.gpu_used_milli[i, d] -= milli
            if pod.is_inference and d not in modelled:
                self.dev_unmodelled[i, d] -= 1
        for d, k in placed.slots:
            self._count_service(i, d, k, -1)
            self.n_invalid_services -= placed.invalid
            self.dev_mem_used_mib[i, d] -= self.svc_mem_mib[i, d, k]
            self.svc_mask[i, d, k] = False
            self.svc_rate_rps[i, d, k] = 0.0
            self.svc_service_ms[i, d, k] = 0.0
            self.svc_second_ms2[i, d, k] = 0.0
            self.svc_swap_ms[i, d, k] = 0.0
            self.svc_share_frac[i, d, k] = 1.0
            self.svc_slo_ms[i, d, k] = np.inf
            self.svc_slo_percentile[i, d, k] = np.nan
            self.svc_overhead_frac[i, d, k] = 0.0
            self.svc_mem_mib[i, d, k] = 0.0
            self.svc_class[i][d][k] = None
            self.svc_uid[i][d][k] = None
            self._refresh_device(i, d)
        if placed.slots:
            params = self.service_params(self.node_views[i].accelerator, alloc.model or pod.model)
            if params is not None:
                # A running sum: adds and removes in another order leave a float residue, which
                # must not go below 0 (the latency rule refuses a negative utilisation).
                left = float(self.frontend_util[i]) - pod.rate_rps * params.frontend_ms / 1000.0
                self.frontend_util[i] = max(left, 0.0)
        self.version += 1
        return alloc

    # ------------------------------------------------------------------ derived views
    def free_gpu_milli(self) -> np.ndarray:
        """Free milli-GPU per device slot, shape (n, D); 0 for absent devices."""
        return np.where(self.dev_exists, GPU_MILLI_PER_DEVICE - self.gpu_used_milli, 0)

    def copy(self) -> ClusterState:
        """An independent deep copy (what-if forks, tests)."""
        return copy.deepcopy(self)

    def rebuilt(
        self, lookup: ServiceLookup | None = None, device_memory: DeviceMemoryLookup | None = None
    ) -> ClusterState:
        """A fresh state with the same nodes and pods, e.g. after profiles were reloaded."""
        views = [v for v in self.node_views if v.schedulable or v.device_count or v.cpu_milli]
        fresh = ClusterState(
            views,
            lookup or self._lookup,
            device_memory or self._device_memory,
            services_per_device=self.n_slots,
        )
        for alloc in self.allocations():
            if alloc.node in fresh.node_index:
                fresh.add(alloc, strict=False)
        fresh.version = self.version + 1
        return fresh


def _with_devices(alloc: Allocation, devices: tuple[int, ...]) -> Allocation:
    return Allocation(
        pod=alloc.pod,
        node=alloc.node,
        devices=devices,
        model=alloc.model,
        assumed=alloc.assumed,
        assumed_until_s=alloc.assumed_until_s,
    )


__all__ = [
    "ClusterState",
    "DeviceMemoryLookup",
    "ServiceLookup",
    "ServiceParams",
    "StateError",
]
