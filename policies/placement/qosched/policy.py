r"""``qosched``: interference-aware, fragmentation-aware and QoS-fair placement.

1. **Feasibility** (interference-aware, as ``ibis-*``): a device is kept only if the latency
   models predict every co-located SLO met with the pod there, the pod's included, within the
   memory / utilisation / front-end thresholds (:mod:`qosched.policies.placement.interference`);
   the pod takes, per node, the first of its variants (preference order) that fits.
2. **Device** on each node: the feasible device where the expected fragmentation grows least
   (FGD's device rule, :mod:`qosched.policies.placement.fgd`); for a pod without a GPU request
   (edge TPU, CPU) all devices tie on fragmentation and the least-loaded one (Σ λ·S of its
   services) is tried first.
3. **Score** of the node, a plain function of the gathered inputs (:mod:`.score`; weights in
   :class:`~.config.QoschedConfig`):
   :math:`s = -w_f\,\Delta F/1000 + w_s\,\sigma + w_q\,\phi`, with ΔF the fragmentation increase
   [milli-GPU], σ the latency slack of the chosen device (min over its services of
   (SLO − latency)/SLO), φ the fairness hook's term (:mod:`.fairness_hook`; 0 without one);
   for services on GPU shares, plus the pack-or-spread term w_c·κ (:mod:`.consolidation`,
   ``gpu_consolidation``), with the device order following the same setting.
   A service asking for no GPU share (edge TPU, Jetson, CPU node: ΔF is 0 everywhere) is
   scored instead by the share of the device's admitted capacity it takes,
   :math:`s = -(c + 0.5\,a) + w_q\,\phi` (:mod:`.edge_share`): σ alone sent every service to
   its fastest device, where the services with no alternative then found no room.

The workload mix for ΔF is explicit, as for ``fgd``: ``mix=`` (fixed), ``learner=`` (a
:class:`~qosched.policies.placement.fgd.mix.WorkloadLearner` the caller feeds), or neither — then
the policy keeps a learner of its own and :meth:`QoschedPolicy.observe` must be called with the
pods seen. Pods without a model and SLO are placed by fragmentation (and fairness) alone.
For them (no latency target, no GPU type) ΔF is measured against the mix's *refill target*
(:mod:`.refill`, ``config.refill_target``): a single-GPU size class whose remainder fewer pods
fit than it leaves counts through its CPU only, so no whole GPU is kept for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from qosched.policies.placement.common import AwarePolicy, Scored
from qosched.policies.placement.common import _merge as merge_verdicts
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.feasible_devices import NodeVerdicts
from qosched.policies.placement.fgd.mix import WorkloadLearner, WorkloadMix
from qosched.policies.placement.fgd.policy import ShapeMixMemo, frag_delta_for, mix_for, node_delta
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.placement.options import check_instance
from qosched.policies.placement.qosched import consolidation
from qosched.policies.placement.qosched.config import QoschedConfig
from qosched.policies.placement.qosched.edge_share import edge_score, edge_share
from qosched.policies.placement.qosched.fairness_hook import FairnessHook, FairnessInputs
from qosched.policies.placement.qosched.multi_gpu import cpu_balance_scale
from qosched.policies.placement.qosched.refill import refill_target
from qosched.policies.placement.qosched.score import balance, base_score, qosched_score
from qosched.policies.types import GPU_MILLI_PER_DEVICE, PodDemand

__all__ = ["QoschedOptions", "QoschedPolicy"]


def _balance_after(cand: Candidates) -> np.ndarray:
    """β of each candidate node with the pod on it (:func:`.score.balance`): free CPU, memory
    and GPU after placement over the node's capacity; GPU only where the node has GPU capacity.

    Only for pods without a latency target: for a service the slack term σ already weighs the
    device's headroom, and β competing with it changed the services meeting their SLO on the
    edge cluster by +1, +4 and −2 at rate scales 0.25, 0.5 and 1.0 (docs/placement.md), so
    services are placed as before."""
    st, row, pod = cand.state, cand.row, cand.pod
    if st.n_nodes == 0:  # an empty state: every candidate is unknown (and infeasible)
        return np.ones(cand.m)
    cpu_cap = np.maximum(st.cpu_cap_milli[row], 1)
    mem_cap = np.maximum(st.mem_cap_mib[row], 1.0)
    cpu = (cand.cpu_free_milli - pod.cpu_milli) / cpu_cap
    mem = (cand.mem_free_mib - pod.memory_mib) / mem_cap
    gpu_cap = st.dev_exists[row].sum(axis=1) * GPU_MILLI_PER_DEVICE
    gpu_free = cand.free_milli.sum(axis=1) - max(pod.gpu_milli, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gpu = np.where(gpu_cap > 0, gpu_free / gpu_cap, np.nan)
    return balance(cpu, mem, gpu)


#: ΔF is rounded to this [milli-GPU] before ordering devices, so float noise cannot split ties.
_DELTA_RESOLUTION = 1e-6


@dataclass(frozen=True, slots=True)
class QoschedOptions:
    """Options of ``qosched``.

    Attributes
    ----------
    config : QoschedConfig
        Score weights and the interference model (validated by :class:`QoschedConfig`).
    mix, learner : WorkloadMix or WorkloadLearner, optional
        The expected workload of ΔF: a fixed mix or a learner the caller feeds (not both;
        neither: the policy learns from :meth:`QoschedPolicy.observe`).
    fairness : FairnessHook, optional
        The fairness term φ (None: φ = 0).
    gpu_consolidation : str
        Pack or spread services on GPUs (:mod:`.consolidation`): ``spread`` (no term: σ decides,
        services spread over the nodes), ``pack-gpu`` (fill used GPUs, open new ones on the least
        used nodes) or
        ``pack`` (fill used GPUs, open new ones on the busiest nodes). Score term
        s += 2·κ, κ = u_d ± u_n (allocated share of the chosen GPU and of the node before the pod)
        where the chosen GPU keeps latency slack σ ≥ ``consolidation_slack_frac``, else 0.
        Default ``pack``: on 500 nodes × 4 GPUs, 1,500 services and a whole-GPU training stream,
        every service meets its SLO either way and packing places the training pods that
        spreading strands (docs/placement.md, "Pack or spread").
    consolidation_slack_frac : float
        m ∈ [0, 1): pack only where every service on the chosen GPU keeps predicted latency
        ≤ (1 − m)·SLO (default 0.2); every placement is within the SLO regardless (feasibility).
    """

    config: QoschedConfig = field(default_factory=QoschedConfig)
    mix: WorkloadMix | None = None
    learner: WorkloadLearner | None = None
    fairness: FairnessHook | None = None
    gpu_consolidation: str = consolidation.DEFAULT_CONSOLIDATION
    consolidation_slack_frac: float = 0.2

    def __post_init__(self) -> None:
        check_instance(self, "config", self.config, QoschedConfig, "a QoschedConfig")
        check_instance(self, "mix", self.mix, (WorkloadMix, type(None)), "a WorkloadMix or None")
        check_instance(
            self, "learner", self.learner, (WorkloadLearner, type(None)), "a WorkloadLearner or None"
        )
        if self.fairness is not None and not callable(self.fairness):
            raise ValueError(
                f"QoschedOptions.fairness must be a FairnessHook or None (got {self.fairness!r})"
            )
        if self.mix is not None and self.learner is not None:
            raise ValueError("qosched: give a fixed mix or a learner, not both")
        consolidation.check_consolidation(
            "QoschedOptions", self.gpu_consolidation, self.consolidation_slack_frac
        )

    def with_interference(self, model: InterferenceModel) -> Self:
        return dataclasses.replace(self, config=dataclasses.replace(self.config, interference=model))


class QoschedPolicy(AwarePolicy):
    """The full policy (see the module docstring)."""

    name = "qosched"
    search = "first"
    #: The judge also predicts each device without the pod: the edge score's Δρ (:mod:`.edge_share`).
    with_before = True

    def __init__(
        self,
        *,
        config: QoschedConfig | None = None,
        mix: WorkloadMix | None = None,
        learner: WorkloadLearner | None = None,
        fairness: FairnessHook | None = None,
        gpu_consolidation: str = consolidation.DEFAULT_CONSOLIDATION,
        consolidation_slack_frac: float = 0.2,
    ) -> None:
        consolidation.check_consolidation("qosched", gpu_consolidation, consolidation_slack_frac)
        self.gpu_consolidation = gpu_consolidation
        self.consolidation_slack_frac = float(consolidation_slack_frac)
        self.config = config if config is not None else QoschedConfig()
        super().__init__(model=self.config.interference)
        if mix is not None and learner is not None:
            raise ValueError("qosched: give a fixed mix or a learner, not both")
        if mix is None and learner is None:
            learner = WorkloadLearner(popularity_threshold=self.config.popularity_threshold)
        self.mix = mix
        self.learner = learner
        self.own_mixes = ShapeMixMemo()
        #: (mix, its refill target): the last mix :func:`.refill.refill_target` was built for.
        self._refill_memo: tuple[WorkloadMix | None, WorkloadMix | None] = (None, None)
        #: (mix, its β scale for CPU-only pods): the last mix :func:`.multi_gpu.cpu_balance_scale` saw.
        self._scale_memo: tuple[WorkloadMix | None, float] = (None, 1.0)
        # INTEGRATION: a FairnessHook (e.g. fairness_hook.SnapshotFairness over
        # qosched.policies.fairness.fairness_term); None → the fairness term is 0.
        self.fairness = fairness

    def observe(self, pod: PodDemand) -> None:
        """Feed the policy's own workload learner (no-op with a fixed mix)."""
        if self.learner is not None:
            self.learner.observe(pod)

    def current_mix(self) -> WorkloadMix | None:
        return self.learner.mix() if self.learner is not None else self.mix

    def memo_token(self, pod: PodDemand) -> object | None:
        """What a verdict depends on beyond the node's own row and the pod's shape
        (:mod:`qosched.policies.placement.row_memo`): the mix ΔF is measured against (the same
        object while it is the same). None with a fairness term: φ reads the whole cluster."""
        if self.fairness is not None and self.config.fairness_weight > 0:
            return None
        mix = self.current_mix()
        return mix if mix is not None else self.own_mixes

    def _frag_delta(self, cand: Candidates) -> np.ndarray:
        """ΔF per device, computed once per call (kept in the call's own ``cand.extras``)."""
        delta = cand.extras.get("frag_delta")
        if delta is None:
            delta = frag_delta_for(cand, self._target_mix(cand))
            cand.extras["frag_delta"] = delta
        return delta

    def _target_mix(self, cand: Candidates) -> WorkloadMix:
        """The workload ΔF is measured against: the current mix, and for pods without a latency
        target and without a GPU type, with ``config.refill_target`` on, that mix with the size
        classes whose remainders nothing refills counted through their CPU only
        (:func:`.refill.refill_target`; built once per mix). Services keep FGD's mix, so their
        decisions (edge cluster, SLOs) are unchanged."""
        mix = mix_for(cand.pod, self.current_mix(), self.own_mixes)
        if not self.config.refill_target or cand.pod.is_inference or cand.pod.gpu_spec:
            return mix
        if self._refill_memo[0] is not mix:
            self._refill_memo = (mix, refill_target(mix))
        target = self._refill_memo[1]
        assert target is not None
        return target

    def device_order(self, cand: Candidates) -> np.ndarray:
        order = self._spread_order(cand)
        if self._consolidates(cand):
            return consolidation.pack_order(order, cand.free_milli)
        return order

    def _spread_order(self, cand: Candidates) -> np.ndarray:
        delta = self._frag_delta(cand)
        if cand.milli > 0:
            order = cand.extras.get("spread_order")
            if order is None:  # (once per call: the pack fallback reads it again)
                order = np.round(delta / _DELTA_RESOLUTION) * _DELTA_RESOLUTION
                cand.extras["spread_order"] = order
            return order
        # No GPU request: fragmentation cannot tell devices apart; least loaded first.
        st = cand.state
        load = (st.svc_rate_rps[cand.row] * st.svc_service_ms[cand.row]).sum(axis=-1)
        return np.where(cand.device_ok, load, np.inf)

    def node_score(self, cand: Candidates, verdicts: NodeVerdicts, variant: np.ndarray) -> Scored:
        """Gather the score's inputs on each node's chosen devices; :mod:`.score` computes it."""
        cfg = self.config
        d_node = node_delta(cand, self._frag_delta(cand), verdicts.devices)
        feasible = verdicts.devices[:, 0] >= 0 if cand.need > 0 else cand.ok
        base = base_score(
            d_node,
            verdicts.slack_frac,
            feasible,
            frag_weight=cfg.frag_weight,
            slack_weight=cfg.slack_weight,
            balance_frac=_balance_after(cand) if self._balance_applies(cand) else None,
            balance_weight=cfg.balance_weight * self._balance_scale(cand),
        )
        if self._edge_applies(cand):
            share = edge_share(cand, verdicts, variant, self.model.thresholds)
            base = np.where(np.isfinite(base), edge_score(share), -np.inf)
        fair = self._fairness_term(cand, verdicts, base)
        raw = qosched_score(base, fair, fairness_weight=cfg.fairness_weight)
        extras = {"frag_delta_milli": d_node, "fairness": fair}
        if self._consolidates(cand):
            kappa = self._consolidation(cand, verdicts)
            raw = raw + consolidation.CONSOLIDATION_WEIGHT * kappa
            extras["consolidation"] = kappa
        return Scored(raw, verdicts.devices, extras)

    @staticmethod
    def _edge_applies(cand: Candidates) -> bool:
        """A service asking for no GPU share (edge TPU, Jetson, CPU node): ΔF is 0 on every
        device, and the admitted share it takes replaces σ as the score (:mod:`.edge_share`)."""
        return cand.milli <= 0 and cand.pod.is_inference and cand.variants is not None

    # ------------------------------------------------------------ pack or spread (.consolidation)
    def _consolidates(self, cand: Candidates) -> bool:
        """The knob applies: not ``spread``, a service (model and SLO) asking for a GPU share."""
        return consolidation.packs(self.gpu_consolidation) and cand.pod.is_inference and cand.milli > 0

    def _consolidation(self, cand: Candidates, verdicts: NodeVerdicts) -> np.ndarray:
        """κ per candidate node (:func:`.consolidation.consolidation_term`)."""
        exists = (
            cand.state.dev_exists.take(cand.row, axis=0)
            if cand.state.n_nodes
            else np.zeros_like(cand.device_ok)
        )
        u_dev, u_node = consolidation.used_fractions(cand.free_milli, exists, verdicts.devices)
        return consolidation.consolidation_term(
            self.gpu_consolidation,
            u_dev,
            u_node,
            verdicts.slack_frac,
            min_slack_frac=self.consolidation_slack_frac,
        )

    def _choose(
        self, cand: Candidates, variant: int, nodes: np.ndarray, order: np.ndarray | None
    ) -> NodeVerdicts:
        """The node's device in the pack order; where it leaves less slack than the margin, again
        with the least allocated device first (a pod packs only while its device keeps the margin).

        The second search runs only on the nodes where it can change the device: a node whose
        emptiest-first search would judge the chosen device first gets that device again, with the
        same verdict (a one-device pod; the verdicts already judged come back from the cache)."""
        chosen = super()._choose(cand, variant, nodes, order)
        if order is None or not self._consolidates(cand):
            return chosen
        low = (
            nodes
            & (chosen.devices[:, 0] >= 0)
            & ~consolidation.keeps_margin(chosen.slack_frac, self.consolidation_slack_frac)
        )
        if not low.any():
            return chosen
        emptiest = consolidation.pack_order(self._spread_order(cand), cand.free_milli, fullest_first=False)
        if cand.need <= 1:
            rows = np.flatnonzero(low)
            masked = np.where(cand.device_ok[rows], emptiest[rows], np.inf)
            low[rows[np.argmin(masked, axis=1) == chosen.devices[rows, 0]]] = False
            if not low.any():
                return chosen
        again = super()._choose(cand, variant, low, emptiest)
        return merge_verdicts(chosen, again, low)

    def _balance_applies(self, cand: Candidates) -> bool:
        """β scores pods without a latency target and without a GPU-type constraint; on
        workloads with GPU-type-constrained pods, only those that ask for a GPU.

        Services keep σ as their tie-breaker (β competing with it lost services at full load on
        the edge cluster). Typed pods (``gpu_spec``) are left to ΔF, which knows their models.
        Where the workload has typed pods (the mix's ``typed_share`` > 0), CPU-only pods are
        left to ΔF too: β measures balance against the node's own capacity, the GPU models
        differ widely in CPU per GPU (G2 nodes: 8 GPUs, 96 cores; T4: 2 GPUs, 104 cores), and
        with β on them the CPU-only pods used up the CPU of the G2 nodes — on the upstream
        ``gpuspec33`` variant (seed 42) 336 G2 GPUs stayed free on nodes with 1,407 of 52,704
        cores left while the T4 nodes kept 17,434: 92.35 % against ``fgd``'s 94.79 %; with β
        for GPU pods only, 95.41 % (docs/fgd-reproduction.md).
        """
        pod = cand.pod
        if self.config.balance_weight <= 0 or pod.is_inference or pod.gpu_spec:
            return False
        mix = self.current_mix()
        return mix is None or mix.typed_share == 0.0 or pod.gpu_milli > 0

    def _balance_scale(self, cand: Candidates) -> float:
        """The factor on β's weight: 1 for GPU pods; for CPU-only pods s = max(0, 1 − 2g), g the
        multi-GPU share of the mix's GPU demand (:mod:`.multi_gpu`; once per mix): β sent CPU-only
        pods to the 8-GPU nodes' CPU that the multi-GPU pods need."""
        if cand.pod.gpu_milli > 0:
            return 1.0
        mix = self.current_mix()
        if self._scale_memo[0] is not mix:
            self._scale_memo = (mix, cpu_balance_scale(mix))
        return self._scale_memo[1]

    def _fairness_term(self, cand: Candidates, verdicts: NodeVerdicts, base: np.ndarray) -> np.ndarray:
        """φ per candidate from the fairness hook (NaN → 0); zeros without a hook or weight."""
        if self.fairness is None or self.config.fairness_weight <= 0:
            return np.zeros(cand.m)
        inputs = FairnessInputs(
            state=cand.state,
            pod=cand.pod,
            rows=cand.row,
            devices=verdicts.devices,
            latency_ms=verdicts.latency_ms,
            slack_frac=verdicts.slack_frac,
            base_score=base,
        )
        return np.nan_to_num(np.asarray(self.fairness(inputs), dtype=np.float64), nan=0.0)
