"""Exact memo of device verdicts across calls: :class:`VerdictCache`.

A verdict of :func:`~qosched.policies.placement.interference.judge` depends only on the device's
node and on the pod's signature, so while ``ClusterState.node_version`` of a node is unchanged
its verdicts can be given back bit for bit. One cache per policy object (the policy owns it).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.interference import DeviceVerdicts, InterferenceModel, NewService, judge
from qosched.policies.state import ClusterState

__all__ = ["VerdictCache", "judge_with"]


@dataclass(slots=True)
class _Memo:
    """Memoised verdicts of one pod signature on one state, per flat device index (n·D)."""

    version: np.ndarray
    reason: np.ndarray
    latency_ms: np.ndarray
    utilization: np.ndarray
    utilization_before: np.ndarray
    slack_frac: np.ndarray

    @classmethod
    def empty(cls, size: int) -> _Memo:
        # Only ``version`` needs a value: an entry is read only after it was written at the
        # node's current version.
        return cls(
            version=np.full(size, -1, dtype=np.int64),
            reason=np.empty(size, dtype=np.int8),
            latency_ms=np.empty(size),
            utilization=np.empty(size),
            utilization_before=np.empty(size),
            slack_frac=np.empty(size),
        )

    @property
    def size(self) -> int:
        return int(self.version.shape[0])


class VerdictCache:
    """Exact memo of device verdicts across calls, per state and pod signature.

    A verdict depends only on the device's node (its services, memory, front end, accelerator,
    sharing mode) and on the pod's signature (the variant's model, rate, SLO, percentile,
    milli-GPU, device count); the policy's :class:`InterferenceModel` is fixed per cache (one cache
    per policy object). An entry is reused only while ``ClusterState.node_version`` of its node is
    the one it was computed at, so a reused verdict is bit-for-bit what :func:`judge` would
    return. It pays off when the same pod is judged again on an unchanged cluster (the extender's
    ``prioritize`` after ``filter``) and when pods of one signature arrive in a row (replicas; in
    the simulator, one node changes between two decisions).

    States are held weakly (a dropped state drops its memo); at most ``max_signatures`` pod
    signatures per state are kept (least recently used evicted).
    """

    #: Dropped memos kept for reuse (see ``_recycle``).
    _SPARE = 2

    def __init__(self, max_signatures: int = 16) -> None:
        if max_signatures < 1:
            raise ValueError(f"VerdictCache.max_signatures must be >= 1 (got {max_signatures})")
        self.max_signatures = max_signatures
        self._states: weakref.WeakKeyDictionary[ClusterState, OrderedDict[tuple[object, ...], _Memo]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._spare: list[_Memo] = []
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        with self._lock:
            for per in self._states.values():
                for memo in per.values():
                    self._recycle(memo)
            self._states.clear()

    def _recycle(self, memo: _Memo) -> None:
        """Keep a dropped memo's arrays for the next one of the same size.

        A fresh memo is about 40 bytes per device (0.8 MB at 5,000 nodes × 4 GPUs); allocating
        it anew after each drop has the allocator return and re-fault that memory page by page,
        which costs more than judging every node. At most ``_SPARE`` memos are kept.
        """
        self._spare.append(memo)
        del self._spare[: -self._SPARE]

    def _new_memo(self, size: int) -> _Memo:
        for i, memo in enumerate(self._spare):
            if memo.size == size:
                del self._spare[i]
                memo.version.fill(-1)
                return memo
        return _Memo.empty(size)

    def __reduce__(self) -> tuple[type[VerdictCache], tuple[int]]:
        # Copies and pickles (a policy sent to a worker process, a deep-copied scheduler) start
        # empty: the memo is tied to state objects of this process, and a lock cannot be copied.
        return (VerdictCache, (self.max_signatures,))

    def _memo(self, state: ClusterState, key: tuple[object, ...]) -> _Memo:
        size = state.n_nodes * state.n_devices
        per = self._states.get(state)
        if per is None:
            per = OrderedDict()
            self._states[state] = per
        memo = per.get(key)
        if memo is None or memo.size != size:
            if memo is not None:
                self._recycle(memo)
            memo = self._new_memo(size)
            per[key] = memo
            while len(per) > self.max_signatures:
                self._recycle(per.popitem(last=False)[1])
        per.move_to_end(key)
        return memo

    def judge(
        self,
        cand: Candidates,
        new: NewService,
        pos: np.ndarray,
        dev: np.ndarray,
        model: InterferenceModel,
        *,
        with_before: bool = False,
        screen_memory: bool = True,
    ) -> DeviceVerdicts:
        """:func:`judge`, answering from the memo where the node is unchanged."""
        if new.signature is None or pos.size == 0:
            return judge(cand, new, pos, dev, model, with_before=with_before, screen_memory=screen_memory)
        state = cand.state
        row = cand.row[pos]
        flat = row * state.n_devices + dev
        versions = state.node_version.take(row)
        with self._lock:
            memo = self._memo(state, (new.signature, with_before, screen_memory))
            stale = np.flatnonzero(memo.version.take(flat) != versions)
            self.hits += int(pos.size - stale.size)
            self.misses += int(stale.size)
            if stale.size == pos.size:
                # Nothing known yet (a new pod, or every node changed): judge, store, and return
                # the fresh verdicts as they are (the memo would give back the same values).
                v = judge(cand, new, pos, dev, model, with_before=with_before, screen_memory=screen_memory)
                memo.reason[flat] = v.reason
                memo.latency_ms[flat] = v.latency_ms
                memo.utilization[flat] = v.utilization
                if with_before:  # (NaN otherwise: nothing to keep)
                    memo.utilization_before[flat] = v.utilization_before
                memo.slack_frac[flat] = v.slack_frac
                memo.version[flat] = versions
                return v
            if stale.size:
                v = judge(
                    cand,
                    new,
                    pos[stale],
                    dev[stale],
                    model,
                    with_before=with_before,
                    screen_memory=screen_memory,
                )
                at = flat[stale]
                memo.reason[at] = v.reason
                memo.latency_ms[at] = v.latency_ms
                memo.utilization[at] = v.utilization
                if with_before:
                    memo.utilization_before[at] = v.utilization_before
                memo.slack_frac[at] = v.slack_frac
                memo.version[at] = versions[stale]
            return DeviceVerdicts(
                pos=pos,
                dev=dev,
                reason=memo.reason.take(flat),
                latency_ms=memo.latency_ms.take(flat),
                utilization=memo.utilization.take(flat),
                utilization_before=memo.utilization_before.take(flat)
                if with_before
                else np.full(pos.size, np.nan),
                slack_frac=memo.slack_frac.take(flat),
            )


def judge_with(
    cache: VerdictCache | None,
    cand: Candidates,
    new: NewService,
    pos: np.ndarray,
    dev: np.ndarray,
    model: InterferenceModel,
    *,
    with_before: bool = False,
    screen_memory: bool = True,
) -> DeviceVerdicts:
    """:func:`~.interference.judge` through ``cache`` when there is one."""
    if cache is None:
        return judge(cand, new, pos, dev, model, with_before=with_before, screen_memory=screen_memory)
    return cache.judge(cand, new, pos, dev, model, with_before=with_before, screen_memory=screen_memory)
