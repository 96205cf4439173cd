r"""Discounted LinUCB with a model prior: the learner of where (tier) and with what (variant).

Why a contextual bandit, and this one
-------------------------------------
Each request is one round: the context is observed (per action: predicted device latency,
transfer time, tier load), one action is taken, and only that action's outcome is seen (bandit
feedback); the action does not change the *next* request's context except through load, which
the context already measures. That is a contextual bandit, not an MDP: tabular Q-learning would
spend samples on a state transition model it does not need and would have to discretise a
continuous context (its convergence needs every state-action visited infinitely often; here the
network state changes faster than that). A linear payoff model per action is enough because the
reward is almost linear in the context's latency ratios, so LinUCB applies:

* LinUCB (Li et al., WWW 2010) keeps a ridge estimate :math:`\hat\theta_a = A_a^{-1} b_a` per
  action and plays :math:`\arg\max_a \hat\theta_a^\top x_a + \alpha \sqrt{x_a^\top A_a^{-1} x_a}`.
  Its analysed variant SupLinUCB has regret :math:`O(\sqrt{T d \ln^3(K T \ln T / \delta)})`
  against the best linear policy (Chu et al., AISTATS 2011), sublinear in the horizon T for d
  features and K actions.
* Network and load drift, so the estimates are *discounted* (D-LinUCB, Russac, Vernade and
  Cappé, NeurIPS 2019): every observation of a service multiplies the statistics of all its
  actions by :math:`\gamma` and refills the ridge term, so old evidence fades with an effective
  memory of :math:`1/(1-\gamma)` observations; D-LinUCB's dynamic regret is
  :math:`\tilde O(d^{2/3} B_T^{1/3} T^{2/3})` for a total parameter variation :math:`B_T`, the
  price of tracking a moving optimum. An action left alone regains width, so it is re-tried after
  a change.
* The ridge is centred on a **model prior** :math:`\theta_0` instead of 0 (Bayesian linear
  regression with prior mean :math:`\theta_0` and precision :math:`\lambda`): qosched's latency
  models already predict the latency, so before any observation the learner ranks actions as the
  model does, and it learns the model's error, not the whole payoff from scratch.

The learned quantity is the latency part of the objective
(:class:`~qosched.policies.requests.routing.Objective`),
:math:`u = 1[\text{resp} \le \text{SLO}] - w_\ell \min(\text{resp}/\text{SLO}, c)`; the accuracy
term :math:`-w_a \cdot \text{loss}_a` is known exactly and added, not learnt.

Features (:data:`FEATURES`): ``1``, predicted response / SLO, transfer / SLO, tier utilisation
(each clipped to [0, 4]). Prior :math:`\theta_0 = (1, -w_\ell, 0, 0)`: "the SLO is met and the
latency ratio is the predicted one".

Update of action :math:`a` of a service on an observation :math:`(x, u)` (all actions of the
service first discounted)::

    A_k ← γ A_k + (1 − γ) λ I          b_k ← γ b_k + (1 − γ) λ θ0      for every action k
    A_a ← A_a + x xᵀ                    b_a ← b_a + u x
    θ_a = A_a⁻¹ b_a

With γ = 1 it is ordinary ridge regression towards θ0 (the hand-checked case of the tests:
:math:`\theta = \theta_0 + \frac{u - \theta_0^\top x}{1 + x^\top x/\lambda}\, x/\lambda` after one
observation).

State
-----
:class:`LinUCB` is plain data (arrays per service) and serialises to versioned JSON
(:meth:`LinUCB.to_json` / :meth:`LinUCB.from_json`); a document of another kind or version, or
with inconsistent shapes, raises :class:`LearnerStateError` with the reason, and the caller starts
fresh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FEATURES",
    "STATE_KIND",
    "STATE_VERSION",
    "LearnerParams",
    "LearnerStateError",
    "LinUCB",
    "ServiceArms",
]

FEATURES: tuple[str, ...] = ("bias", "predicted_over_slo", "transfer_over_slo", "tier_utilization")
STATE_KIND = "qosched.online-learner"
STATE_VERSION = 1
FEATURE_CLIP = 4.0


class LearnerStateError(ValueError):
    """A persisted learner state that cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class LearnerParams:
    """Hyper-parameters: UCB width α, discount γ, prior precision λ, latency weight of the prior."""

    alpha: float = 0.3
    gamma: float = 0.998
    ridge: float = 4.0
    latency_weight: float = 0.5

    def __post_init__(self) -> None:
        if not (self.alpha >= 0 and 0 < self.gamma <= 1 and self.ridge > 0):
            raise ValueError("need alpha >= 0, 0 < gamma <= 1, ridge > 0")

    @property
    def prior(self) -> np.ndarray:
        """θ0 = (1, −w_ℓ, 0, 0) (see the module docstring)."""
        return np.array([1.0, -self.latency_weight, 0.0, 0.0])


def feature_vector(predicted_ms: float, transfer_ms: float, utilization: float, slo_ms: float) -> np.ndarray:
    """x = (1, predicted/SLO, transfer/SLO, utilisation), each clipped to [0, 4] (inf → 4)."""
    raw = (predicted_ms / slo_ms, transfer_ms / slo_ms, utilization)
    return np.array(
        [1.0, *(min(max(v, 0.0), FEATURE_CLIP) if not math.isnan(v) else FEATURE_CLIP for v in raw)]
    )


@dataclass
class ServiceArms:
    """Statistics of one service's actions: ``A`` (K, d, d), ``b`` (K, d), observation counts (K)."""

    arms: list[str]
    A: np.ndarray
    b: np.ndarray
    n: np.ndarray
    _inv: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def fresh(cls, arms: Sequence[str], params: LearnerParams) -> ServiceArms:
        k, d = len(arms), len(FEATURES)
        A = np.broadcast_to(params.ridge * np.eye(d), (k, d, d)).copy()
        b = np.broadcast_to(params.ridge * params.prior, (k, d)).copy()
        return cls(list(arms), A, b, np.zeros(k))

    def inverse(self) -> np.ndarray:
        if self._inv is None:
            self._inv = np.linalg.inv(self.A)
        return self._inv

    def theta(self) -> np.ndarray:
        """θ_k = A_k⁻¹ b_k for every action (K, d)."""
        return np.einsum("kij,kj->ki", self.inverse(), self.b)


@dataclass
class LinUCB:
    """Per-service discounted LinUCB (see the module docstring)."""

    params: LearnerParams = field(default_factory=LearnerParams)
    services: dict[str, ServiceArms] = field(default_factory=dict)

    def arms_of(self, service: str, arms: Sequence[str]) -> ServiceArms:
        """The service's statistics, extended with fresh (prior) actions it did not have."""
        sa = self.services.get(service)
        if sa is None:
            sa = self.services[service] = ServiceArms.fresh(arms, self.params)
            return sa
        missing = [a for a in arms if a not in sa.arms]
        if missing:
            new = ServiceArms.fresh(missing, self.params)
            sa.arms += missing
            sa.A = np.concatenate([sa.A, new.A])
            sa.b = np.concatenate([sa.b, new.b])
            sa.n = np.concatenate([sa.n, new.n])
            sa._inv = None
        return sa

    def scores(self, service: str, arms: Sequence[str], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean estimate θ_aᵀx_a and width α√(x_aᵀA_a⁻¹x_a) of each listed action (x: (len(arms), d))."""
        sa = self.arms_of(service, arms)
        idx = [sa.arms.index(a) for a in arms]
        inv = sa.inverse()[idx]
        theta = np.einsum("kij,kj->ki", inv, sa.b[idx])
        mean = np.einsum("ki,ki->k", theta, x)
        width = self.params.alpha * np.sqrt(np.maximum(np.einsum("ki,kij,kj->k", x, inv, x), 0.0))
        return mean, width

    def update(self, service: str, arm: str, x: np.ndarray, u: float) -> None:
        """Discount every action of the service, then add the observation ``(x, u)`` to ``arm``."""
        sa = self.arms_of(service, [arm])
        p = self.params
        if p.gamma < 1.0:
            d = len(FEATURES)
            sa.A *= p.gamma
            sa.A += (1.0 - p.gamma) * p.ridge * np.eye(d)
            sa.b *= p.gamma
            sa.b += (1.0 - p.gamma) * p.ridge * p.prior
        k = sa.arms.index(arm)
        sa.A[k] += np.outer(x, x)
        sa.b[k] += u * x
        sa.n[k] += 1
        sa._inv = None

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        """A plain JSON document of the state (``kind``, ``version``, params, per-service arrays)."""
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "features": list(FEATURES),
            "params": {
                "alpha": self.params.alpha,
                "gamma": self.params.gamma,
                "ridge": self.params.ridge,
                "latency_weight": self.params.latency_weight,
            },
            "services": {
                name: {"arms": list(sa.arms), "A": sa.A.tolist(), "b": sa.b.tolist(), "n": sa.n.tolist()}
                for name, sa in sorted(self.services.items())
            },
        }

    @classmethod
    def from_json(cls, doc: Any, params: LearnerParams | None = None) -> LinUCB:
        """Rebuild a state; ``params`` (when given) override the stored hyper-parameters.

        Raises :class:`LearnerStateError` naming what is wrong.
        """
        if not isinstance(doc, Mapping):
            raise LearnerStateError("learner state: not a JSON object")
        if doc.get("kind") != STATE_KIND:
            raise LearnerStateError(f"learner state: kind {doc.get('kind')!r} is not {STATE_KIND!r}")
        if doc.get("version") != STATE_VERSION:
            raise LearnerStateError(
                f"learner state: version {doc.get('version')!r} is not {STATE_VERSION} (written by another release)"
            )
        if list(doc.get("features") or ()) != list(FEATURES):
            raise LearnerStateError(
                f"learner state: features {doc.get('features')!r} are not {list(FEATURES)}"
            )
        try:
            stored = LearnerParams(**{k: float(v) for k, v in dict(doc.get("params") or {}).items()})
        except (TypeError, ValueError) as err:
            raise LearnerStateError(f"learner state: bad params ({err})") from None
        learner = cls(params or stored)
        services = doc.get("services")
        if not isinstance(services, Mapping):
            raise LearnerStateError("learner state: 'services' is not an object")
        for name, entry in services.items():
            learner.services[str(name)] = _arms_from_json(str(name), entry)
        return learner


def _arms_from_json(name: str, entry: Any) -> ServiceArms:
    d = len(FEATURES)
    try:
        arms = [str(a) for a in entry["arms"]]
        A = np.asarray(entry["A"], dtype=np.float64)
        b = np.asarray(entry["b"], dtype=np.float64)
        n = np.asarray(entry["n"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise LearnerStateError(f"learner state: service {name}: unreadable ({err})") from None
    k = len(arms)
    if A.shape != (k, d, d) or b.shape != (k, d) or n.shape != (k,) or len(set(arms)) != k:
        raise LearnerStateError(
            f"learner state: service {name}: shapes do not match {k} action(s) of {d} features"
        )
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
        raise LearnerStateError(f"learner state: service {name}: non-finite numbers")
    if k and np.min(np.linalg.eigvalsh((A + A.transpose(0, 2, 1)) / 2)) <= 0:
        raise LearnerStateError(f"learner state: service {name}: a matrix is not positive definite")
    return ServiceArms(arms, A, b, n)
