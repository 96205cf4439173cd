"""``fgd``: Fragmentation Gradient Descent (Weng et al., USENIX ATC 2023; models.md §F).

Each pod goes to the node, and for a fractional request the device, where the expected
fragmentation of the node (:mod:`.score`) grows least. The node's score is the simulator's
integer (:func:`simulator_score`): ``⌊100 · sigmoid(−ΔF / 1000)⌋`` (ΔF in milli-GPU), the
highest wins and ties go to the first candidate — the simulator's scheduler takes the smallest
node name among equal scores (its kubernetes fork's ``selectHost``), the same node when rows
are in name order. The truncation is not cosmetic: nodes whose ΔF differ by less than about 40
milli-GPU tie, and the tie goes to the lowest-named node, which packs the cluster from one end;
scoring by the exact −ΔF instead reaches 94.2 % instead of 95.2 % on the default trace
(docs/fgd-reproduction.md). The device of a fractional pod is the first (in device order) of
the highest integer score, as the simulator's loop over the devices keeps it. A pod
asking for whole GPUs takes the lowest-indexed fully free ones (the simulator's
``AllocateExclusiveGpuId``). Interference-blind, as in the paper.

The expected workload is an explicit input: give a fixed :class:`~.mix.WorkloadMix`
(``mix=``), or a :class:`~.mix.WorkloadLearner` (``learner=``) that the caller feeds with
``observe(pod)`` as pods arrive; ``evaluate`` reads the learner's current mix and is otherwise a
pure function of ``(state, pod, mix)`` (:func:`fgd_evaluate`). While the mix is still empty (no
pod observed) the pod's own shape is the whole mix, so the first decisions already avoid
leaving unusable remainders for pods like it.

Followed: hkust-adsl/kubernetes-scheduler-simulator ``pkg/simulator/plugin/fgd_score.go``
(``calculateGpuShareFragExtendScore``: per-device trial for shared GPUs, node-level for whole
GPUs) and ``pkg/utils/frag.go`` (``NodeGpuShareFragAmount``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qosched.policies.placement import devices as device_choice
from qosched.policies.placement.base import Evaluation
from qosched.policies.placement.common import BlindPolicy, Scored
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.fgd.mix import PodShape, WorkloadLearner, WorkloadMix, shape_of
from qosched.policies.placement.fgd.score import fragmentation_delta
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.placement.options import BlindOptions, check_instance
from qosched.policies.state import ClusterState
from qosched.policies.types import GPU_MILLI_PER_DEVICE, PodDemand

__all__ = [
    "FGDPolicy",
    "FgdOptions",
    "ShapeMixMemo",
    "fgd_evaluate",
    "frag_delta_for",
    "mix_for",
    "simulator_score",
]


class ShapeMixMemo:
    """The single-shape mixes of the pods a policy has scored with no workload known yet.

    Owned by one policy object (no module-global memo): :class:`WorkloadMix` is immutable
    (read-only tables), so one per pod shape serves every call, and building its tables costs
    about a tenth of a decision at 5,000 nodes. At most ``limit`` shapes are kept; past that the
    oldest is dropped (a trace has a few hundred shapes).
    """

    __slots__ = ("_mixes", "limit")

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._mixes: dict[PodShape, WorkloadMix] = {}

    def get(self, shape: PodShape) -> WorkloadMix:
        mix = self._mixes.get(shape)
        if mix is None:
            if len(self._mixes) >= self.limit:
                del self._mixes[next(iter(self._mixes))]
            mix = self._mixes[shape] = WorkloadMix((shape,), np.ones(1))
        return mix


def mix_for(pod: PodDemand, mix: WorkloadMix | None, own: ShapeMixMemo) -> WorkloadMix:
    """``mix``, or the pod's own shape (from the caller's ``own`` memo) when no workload is known yet."""
    if mix is None or mix.empty:
        return own.get(shape_of(pod))
    return mix


def frag_delta_for(cand: Candidates, mix: WorkloadMix) -> np.ndarray:
    """ΔF [milli-GPU] of the pod per candidate device, (m, D); inf where the device is not ok.

    Each node reads the tables of its GPU model (``NodeView.gpu_model``) where the mix has shapes
    constrained to GPU models (the simulator's ``NoAccess``, :mod:`.score`)."""
    pod = cand.pod
    count = pod.gpu_count if pod.gpu_milli > 0 else 0
    st = cand.state
    table = mix.tables_of(st.gpu_models, st.gpu_model_code[cand.row]) if mix.models else None
    return fragmentation_delta(
        mix,
        cand.free_milli,
        cand.cpu_free_milli,
        cpu_milli=pod.cpu_milli,
        milli=cand.milli,
        count=count,
        device_ok=cand.device_ok,
        table=table,
    )


def simulator_score(delta_milli: np.ndarray) -> np.ndarray:
    """FGD's node score: ``⌊100 · sigmoid(−ΔF/1000)⌋`` in 0..100 (``fgd_score.go``,
    ``int64(sigmoid((old − new)/1000) · MaxNodeScore)``); ``−inf`` where ΔF is ``inf``.

    >>> simulator_score(np.array([0.0, -1000.0, 40.0, np.inf])).tolist()
    [50.0, 73.0, 49.0, -inf]
    """
    with np.errstate(over="ignore"):
        score = np.floor(100.0 / (1.0 + np.exp(np.asarray(delta_milli, dtype=np.float64) / 1000.0)))
    return np.where(np.isinf(delta_milli) & (np.asarray(delta_milli) > 0), -np.inf, score)


def fgd_devices(cand: Candidates, delta: np.ndarray) -> np.ndarray:
    """Devices FGD takes: for a fractional pod the first device of the highest
    :func:`simulator_score`, else the first fully free ones."""
    if 0 < cand.milli < GPU_MILLI_PER_DEVICE:
        return device_choice.by_key(-simulator_score(delta), cand.device_ok, cand.need)
    return device_choice.first_fit(cand.free_milli, cand.device_ok, cand.need)


def node_delta(cand: Candidates, delta: np.ndarray, devices: np.ndarray) -> np.ndarray:
    """ΔF of each node for the chosen devices (m,); inf where none was chosen but some are needed."""
    if cand.need == 0 or delta.shape[1] == 0:
        return delta[:, 0] if delta.shape[1] else np.zeros(cand.m)
    first = devices[:, 0]
    m, d = delta.shape
    # delta[i, first[i]] as one flat gather (take_along_axis builds a fancy index: slower).
    at = np.arange(m) * d + np.maximum(first, 0)
    return np.where(first >= 0, delta.take(at), np.inf)


@dataclass(frozen=True, slots=True)
class FgdOptions(BlindOptions):
    """Options of ``fgd``: :class:`~qosched.policies.placement.options.BlindOptions` and the
    expected workload, a fixed ``mix`` or a ``learner`` the caller feeds (not both; neither: each
    pod's own shape)."""

    mix: WorkloadMix | None = None
    learner: WorkloadLearner | None = None

    def __post_init__(self) -> None:
        super(FgdOptions, self).__post_init__()
        check_instance(self, "mix", self.mix, (WorkloadMix, type(None)), "a WorkloadMix or None")
        check_instance(
            self, "learner", self.learner, (WorkloadLearner, type(None)), "a WorkloadLearner or None"
        )
        if self.mix is not None and self.learner is not None:
            raise ValueError("fgd: give a fixed mix or a learner, not both")


class FGDPolicy(BlindPolicy):
    """Fragmentation Gradient Descent (see the module docstring)."""

    name = "fgd"

    def __init__(
        self,
        *,
        mix: WorkloadMix | None = None,
        learner: WorkloadLearner | None = None,
        predict_latency: bool = True,
        model: InterferenceModel | None = None,
    ) -> None:
        super().__init__(predict_latency=predict_latency, model=model)
        if mix is not None and learner is not None:
            raise ValueError("fgd: give a fixed mix or a learner, not both")
        self.mix = mix
        self.learner = learner
        self.own_mixes = ShapeMixMemo()

    def current_mix(self) -> WorkloadMix | None:
        return self.learner.mix() if self.learner is not None else self.mix

    def memo_token(self, pod: PodDemand) -> object | None:
        """The mix ΔF is measured against (:mod:`qosched.policies.placement.row_memo`): a
        verdict is otherwise a function of the node's own row and the pod's shape."""
        mix = self.current_mix()
        return mix if mix is not None else self.own_mixes

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        mix = mix_for(cand.pod, self.current_mix(), self.own_mixes)
        delta = frag_delta_for(cand, mix)
        devices = fgd_devices(cand, delta)
        d_node = node_delta(cand, delta, devices)
        return Scored(simulator_score(d_node), devices, {"frag_delta_milli": d_node})


def fgd_evaluate(
    state: ClusterState, pod: PodDemand, candidates: np.ndarray, mix: WorkloadMix | None
) -> Evaluation:
    """The pure form: FGD's evaluation of ``pod`` against ``mix`` (no learner involved)."""
    return FGDPolicy(mix=mix).evaluate(state, pod, candidates)
