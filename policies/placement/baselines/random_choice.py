"""``random``: a uniformly random feasible node and device, reproducible per pod.

The FGD paper's Random baseline (hkust-adsl/kubernetes-scheduler-simulator
``pkg/simulator/plugin/random_score.go`` picks one node uniformly among the feasible ones; GPUs
with ``gpuSelMethod: random``). Here every node gets a uniform score and the best feasible one
wins, which is the same distribution, and every device a uniform key.

Reproducible without global state: the generator is seeded from (policy ``seed``, BLAKE2b hash of
the pod's uid), so one pod always gets the same scores in any process (Python's ``hash()`` is
salted per process and is not used), and different pods get independent draws. Scores are drawn
for every row of the state and then indexed, so a node's score does not depend on which other
nodes are candidates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from qosched.policies.placement import devices as device_choice
from qosched.policies.placement.common import BlindPolicy, Scored
from qosched.policies.placement.constraints import Candidates
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.placement.options import BlindOptions, check_int

__all__ = ["RandomOptions", "RandomPolicy", "pod_generator"]


def pod_generator(uid: str, seed: int) -> np.random.Generator:
    """A generator determined by (seed, pod uid) only."""
    digest = hashlib.blake2b(uid.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int.from_bytes(digest, "little")])


@dataclass(frozen=True, slots=True)
class RandomOptions(BlindOptions):
    """Options of ``random``: :class:`~qosched.policies.placement.options.BlindOptions` and the
    ``seed`` (an int, default 0) mixed with each pod's uid into its generator."""

    seed: int = 0

    def __post_init__(self) -> None:
        super(RandomOptions, self).__post_init__()
        check_int(self, "seed")


class RandomPolicy(BlindPolicy):
    """Uniform random node and devices, seeded per pod (see the module docstring)."""

    name = "random"

    def __init__(
        self, *, seed: int = 0, predict_latency: bool = True, model: InterferenceModel | None = None
    ) -> None:
        super().__init__(predict_latency=predict_latency, model=model)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"random: seed must be an int (got {seed!r})")
        self.seed = int(seed)

    def score(self, cand: Candidates, reason: np.ndarray) -> Scored:
        state = cand.state
        rng = pod_generator(cand.pod.uid, self.seed)
        node_draw = rng.random(max(state.n_nodes, 1))
        device_draw = rng.random((max(state.n_nodes, 1), max(state.n_devices, 1)))
        raw = node_draw[cand.row]
        key = device_draw[cand.row][:, : cand.device_ok.shape[1]]
        devices = device_choice.by_key(key, cand.device_ok, cand.need)
        return Scored(raw, devices)
