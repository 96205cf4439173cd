r"""Resource arithmetic of "would the pod fit here once these pods are gone?".

A necessary test, exact for pods without a latency target: the hard constraints of every
placement policy (:mod:`qosched.policies.placement.constraints`) on the resources that evicting
a pod gives back. On node :math:`j` with victims :math:`V`:

.. math::

    c_j + \sum_{v \in V} c_v \ge c_{pod}, \qquad m_j + \sum_{v \in V} m_v \ge m_{pod},

    \#\{\,d : f_{j,d} + \sum_{v \in V,\ d \in D_v} g_v \ge g_{pod}\,\} \ge n_{pod}

with :math:`c` free/requested milli-CPU, :math:`m` memory [MiB], :math:`f_{j,d}` the free
milli-GPU of device :math:`d`, :math:`g` the milli-GPU per device (1000 for whole GPUs) and
:math:`n_{pod}` the devices the pod occupies. On an ``exclusive`` node a device must be wholly
free (:math:`f = 1000`). Policies may reject more (interference, device memory): the caller
confirms the final choice with the policy itself.

:func:`fits_if_all_gone` runs the test for every node at once (victims summed per node and
device: :func:`freed_gpu_milli`, one ``bincount`` over (node, device) pairs read from the
victims' device bit masks when they are given, else from their device tuples);
:class:`NodeRoom` runs it for subsets of one node's victims. :class:`FreedRoom` keeps what
evicting a whole set frees per node, for testing many pods against the same set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qosched.policies.state import ClusterState
from qosched.policies.types import GPU_MILLI_PER_DEVICE, SHARING_MODES, PodDemand

__all__ = ["FreedRoom", "NodeRoom", "VictimResources", "fits_if_all_gone", "freed_gpu_milli", "pod_need"]

_EXCLUSIVE = SHARING_MODES.index("exclusive")
# Memory is a float [MiB]: sums of freed memory may round just below the request.
_MEM_EPS_MIB = 1e-6


def pod_need(pod: PodDemand) -> tuple[int, int]:
    """(devices the pod occupies, milli-GPU per device), as the hard constraints count them.

    An inference pod with no GPU request still occupies one device (its edge TPU or CPU) with
    0 milli; a plain pod occupies none.
    """
    if pod.gpu_milli > 0:
        return pod.gpu_count, pod.milli_per_device
    return (1 if pod.is_inference else 0), 0


@dataclass(frozen=True, slots=True)
class VictimResources:
    """Resources ``k`` running pods give back when evicted (parallel arrays / lists of length k).

    row: state row of each pod's node; cpu_milli, memory_mib: requests; milli: milli-GPU per
    device it holds (0 for none); devices: the device indexes it holds; bits (optional): the
    same devices as int64 bit masks (bit *d* = device *d*), which lets the per-device sums be
    vectorised (``PodLedger.devices.bits`` in the replay).
    """

    row: np.ndarray
    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    milli: np.ndarray
    devices: Sequence[tuple[int, ...]]
    bits: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.row.shape[0])


def freed_gpu_milli(state: ClusterState, victims: VictimResources) -> np.ndarray:
    """(n, D) int64: milli-GPU that evicting all ``victims`` frees on each device of each node.

    Exact integer sums (a ``bincount`` over flat (row, device) positions: float64 sums of
    integers far below 2**53, converted back).
    """
    n, width = state.n_nodes, state.n_devices
    has_gpu = victims.milli > 0
    if not has_gpu.any() or width == 0:
        return np.zeros((n, width), dtype=np.int64)
    rows_v = victims.row[has_gpu]
    milli_v = victims.milli[has_gpu]
    if victims.bits is not None:
        on = (victims.bits[has_gpu][:, None] >> np.arange(width, dtype=np.int64)) & 1
        which, devs = np.nonzero(on)
        rows, milli_each = rows_v[which], milli_v[which]
    else:
        gpu_idx = np.flatnonzero(has_gpu).tolist()
        counts = np.fromiter((len(victims.devices[i]) for i in gpu_idx), dtype=np.int64, count=len(gpu_idx))
        rows = np.repeat(rows_v, counts)
        devs = np.fromiter(
            (d for i in gpu_idx for d in victims.devices[i]),
            dtype=np.int64,
            count=int(counts.sum()),
        )
        milli_each = np.repeat(milli_v, counts)
    flat = np.bincount(rows * width + devs, weights=milli_each, minlength=n * width)
    return flat.astype(np.int64).reshape(n, width)


@dataclass(frozen=True, slots=True, eq=False)
class FreedRoom:
    """Free resources per node once a fixed set of victims is gone (see :func:`fits_if_all_gone`).

    Built once for a set (e.g. every victim one preemptor class may take at one instant), then
    :meth:`fits` tests any number of pods against it. ``cpu_milli``/``memory_mib``: (n,) free
    after the eviction (float64, as the sums are taken); ``gpu_milli``: (n, D) int64 free per
    device slot (0 for absent devices).
    """

    cpu_milli: np.ndarray
    memory_mib: np.ndarray
    gpu_milli: np.ndarray
    exclusive: np.ndarray
    dev_exists: np.ndarray

    @classmethod
    def of(cls, state: ClusterState, victims: VictimResources) -> FreedRoom:
        n = state.n_nodes
        cpu = (
            state.cpu_cap_milli
            - state.cpu_used_milli
            + np.bincount(victims.row, weights=victims.cpu_milli, minlength=n)
        )
        mem = (
            state.mem_cap_mib
            - state.mem_used_mib
            + np.bincount(victims.row, weights=victims.memory_mib, minlength=n)
        )
        free = state.free_gpu_milli().astype(np.int64) + freed_gpu_milli(state, victims)
        return cls(cpu, mem, free, (state.sharing_code == _EXCLUSIVE)[:, None], state.dev_exists)

    def fits(self, pod: PodDemand) -> np.ndarray:
        """(n,) bool: ``pod`` passes the resource test on each node with the victims gone."""
        ok = (self.cpu_milli >= pod.cpu_milli) & (self.memory_mib + _MEM_EPS_MIB >= pod.memory_mib)
        need, milli = pod_need(pod)
        if need == 0:
            return np.asarray(ok)
        free = self.gpu_milli
        usable = self.dev_exists & np.where(self.exclusive, free >= GPU_MILLI_PER_DEVICE, free >= milli)
        return np.asarray(ok & (usable.sum(axis=1) >= need))


def fits_if_all_gone(state: ClusterState, pod: PodDemand, victims: VictimResources) -> np.ndarray:
    """(n,) bool per state row: the pod passes the resource test once all ``victims`` there are gone.

    Rows with no victim are tested as they are. Static eligibility (accelerator type, GPU
    model, schedulable) is not tested here: intersect with the hard constraints' verdict.
    """
    return FreedRoom.of(state, victims).fits(pod)


class NodeRoom:
    """The resource test on one node for subsets of its candidate victims (plain Python, k small).

    Parameters
    ----------
    state : ClusterState
    row : int
        The node's state row.
    pod : PodDemand
        The pod to place.
    victims : VictimResources
        The node's candidate victims (all on ``row``); subsets are given as positions into it.
    """

    __slots__ = ("_cpu", "_dev_free", "_exclusive", "_mem", "_milli", "_need", "_pod", "_victims")

    def __init__(self, state: ClusterState, row: int, pod: PodDemand, victims: VictimResources) -> None:
        self._pod = pod
        self._victims = victims
        self._cpu = int(state.cpu_cap_milli[row] - state.cpu_used_milli[row])
        self._mem = float(state.mem_cap_mib[row] - state.mem_used_mib[row])
        self._need, self._milli = pod_need(pod)
        exists = state.dev_exists[row]
        self._dev_free = [
            int(GPU_MILLI_PER_DEVICE - used) if e else -1
            for used, e in zip(state.gpu_used_milli[row].tolist(), exists.tolist(), strict=True)
        ]
        self._exclusive = int(state.sharing_code[row]) == _EXCLUSIVE

    def fits(self, subset: Sequence[int]) -> bool:
        """The pod passes the resource test once the victims at positions ``subset`` are gone."""
        v, pod = self._victims, self._pod
        cpu, mem = self._cpu, self._mem
        for i in subset:
            cpu += int(v.cpu_milli[i])
            mem += float(v.memory_mib[i])
        if cpu < pod.cpu_milli or mem + _MEM_EPS_MIB < pod.memory_mib:
            return False
        if self._need == 0:
            return True
        free = list(self._dev_free)
        for i in subset:
            m = int(v.milli[i])
            if m:
                for d in v.devices[i]:
                    if 0 <= d < len(free) and free[d] >= 0:
                        free[d] += m
        want = GPU_MILLI_PER_DEVICE if self._exclusive else self._milli
        return sum(1 for f in free if f >= want and f >= 0) >= self._need

    def free_gpu_after(self, subset: Sequence[int]) -> int:
        """Free milli-GPU of the node after the eviction, before the pod (worst-fit tie-break)."""
        v = self._victims
        freed = sum(int(v.milli[i]) * len(v.devices[i]) for i in subset)
        return sum(f for f in self._dev_free if f > 0) + freed
