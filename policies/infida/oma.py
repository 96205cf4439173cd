r"""The online mirror-ascent update of INFIDA and its step size (the paper's Algorithm 1, Theorem).

Algorithm (one step per window ``t``, every node on its own block):

1. :math:`g_t \in \partial_y G(r_t, y_t)` from the requests the node saw (:mod:`.gain`),
2. mirror step with :math:`\Phi(y) = \sum_i s_i y_i \log y_i` (weighted negative entropy):
   :math:`\nabla\Phi(\hat y) = \nabla\Phi(y_t) + \eta g_t`, i.e.
   :math:`\hat y_i = y_{t,i}\, e^{\eta g_{t,i} / s_i}` (multiplicative weights per MiB),
3. :math:`y_{t+1} = \Pi^\Phi_{\mathcal{Y}}(\hat y)` (:mod:`.projection`),
4. :math:`x_{t+1} \sim \text{DepRound}(y_{t+1})` (:mod:`.rounding`).

Start: :math:`y_1 = \arg\min_{\mathcal{Y}} \Phi`. Stationarity gives one value for all slots of a
node, :math:`y_{1} = \min\{1/e,\ b_v / \sum_{i \in v} s_i\}`.

Regret bound and step size
--------------------------
Write ``u_i = s_i y_i`` (memory). In ``u``, Φ is the negative entropy up to a linear term, and on
:math:`\{u \ge 0, \sum_{i\in v} u_i \le b_v\}` it is :math:`1/b_v`-strongly convex in
:math:`\|u_v\|_1` (Pinsker); over all nodes, by Cauchy–Schwarz, it is
:math:`\sigma = 1/\|b\|_1`-strongly convex in :math:`\|u\|_1 = \sum_i s_i |y_i|`, whose dual norm
is :math:`\|g\|_* = \max_i |g_i| / s_i` (gain per MiB). The standard online-mirror-descent bound
(Bubeck, *Convex Optimization: Algorithms and Complexity*, Thm 4.2; the form INFIDA's regret
theorem instantiates) gives, for any fixed fractional allocation :math:`y^*`,

.. math::

    \sum_{t=1}^T G(r_t, y^*) - G(r_t, y_t)
    \le \frac{D}{\eta} + \frac{\eta}{2\sigma} \sum_t \|g_t\|_*^2
    \le \frac{D}{\eta} + \frac{\eta}{2} \|b\|_1 L^2 T,

with :math:`L \ge \|g_t\|_*` and :math:`D \ge D_\Phi(y^*, y_1)`. Because :math:`y_1` minimises Φ
on :math:`\mathcal Y` and :math:`\Phi \le 0` on :math:`[0,1]`,
:math:`D_\Phi(y^*, y_1) \le \Phi(y^*) - \Phi(y_1) \le -\Phi(y_1) =: D`. The step size

.. math:: \eta^* = \frac{1}{L}\sqrt{\frac{2D}{\|b\|_1 T}}
    \quad\text{gives}\quad \text{Regret}_T \le L \sqrt{2 D \|b\|_1 T} = O(\sqrt{T}),

the paper's :math:`O(\sqrt T)` regret for the fractional allocation (with ``D`` of order
:math:`\|b\|_1 \log(\cdot)`: its :math:`\|b\|_1 L \sqrt{2 \log(\cdot)\, T}` form). The integral
allocation drawn by DepRound then has expected gain at least :math:`(1 - 1/e)` of
:math:`G(r_t, y_t)`, so its :math:`(1-1/e)`-regret is :math:`O(\sqrt T)` too (the paper's
theorem on the integral allocation).

The gradient bound ``L`` (:func:`gradient_bound_per_mib`): a slot's supergradient component is at
most its cost gap to the repository times the requests it can take in a window (its capacity and
the requests ``R`` of the service it serves): both stated a priori (the theorem needs them known
in advance; the what-if states ``R`` as the busiest window of each service in the trace).

Adaptive, horizon-free step (the default of the what-if; :class:`AdaptiveStep`)
-----------------------------------------------------------------------------
η* is tuned to the worst case: it needs ``T`` in advance and is scaled by the a-priori ``L``,
while the observed :math:`\|g_t\|_*` on the shipped scenarios is 0.07–0.67 of ``L`` (mostly
≈ 0.1–0.2: ``L`` takes every service's busiest window at its largest gap). The AdaGrad-norm step

.. math:: \eta_t = \sqrt{2D/\|b\|_1} \,\big/ \sqrt{L^2 + \textstyle\sum_{s<t} \|g_s\|_*^2}

uses only the gradients already seen, and is non-increasing. Plain OMD with a varying step has no
such bound when :math:`D_\Phi(y^*, y_t)` is unbounded (entropy near 0), so the step is taken in
the *dual-stabilised* form of Fang, Harvey, Portella, Friedlander ("Online mirror descent and dual
averaging: keeping pace in the dynamic case", ICML 2020, DS-OMD): after the mirror step the dual
point is pulled back towards the start's by :math:`\gamma_t = \eta_{t+1}/\eta_t`,

.. math:: \nabla\Phi(\hat y) = \gamma_t \big(\nabla\Phi(y_t) + \eta_t g_t\big)
          + (1-\gamma_t)\nabla\Phi(y_1), \qquad y_{t+1} = \Pi^\Phi(\hat y),

i.e. :math:`\log \hat y = \gamma_t (\log y_t + \eta_t g_t / s) + (1 - \gamma_t) \log y_1`
(with a constant step, γ = 1: the paper's step). Their theorem gives
:math:`\text{Regret}_T \le \frac{\|b\|_1}{2}\sum_t \eta_t \|g_t\|_*^2 + D/\eta_{T+1}`;
with :math:`\|g_t\|_* \le L` (so :math:`L^2 + S_{t-1} \ge S_t`, :math:`S_t = \sum_{s\le t}
\|g_s\|_*^2`) and :math:`\sum_t a_t/\sqrt{S_t} \le 2\sqrt{S_T}`:

.. math:: \text{Regret}_T \le \sqrt{2D\|b\|_1 S_T} + \sqrt{D\|b\|_1 (L^2 + S_T)/2}
          \le \tfrac{3}{\sqrt 2}\sqrt{D\,\|b\|_1\,(L^2 + S_T)}
          \le \tfrac{3}{2}\, L\sqrt{2 D \|b\|_1 (T+1)},

for every ``T`` at once (:meth:`AdaptiveStep.regret_bound`): O(√T) in the worst case, 1.5× the
bound η* gets when ``T`` is known, and smaller when the gradients are (``S_T ≪ L² T``). The
rounding's (1 − 1/e) argument is per window and unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from qosched.policies.infida.catalog import Catalog
from qosched.policies.infida.projection import project_allocation

__all__ = [
    "AdaptiveStep",
    "StepSize",
    "dual_norm_per_mib",
    "gradient_bound_per_mib",
    "initial_allocation",
    "mirror_ascent_step",
    "mirror_diameter",
    "negative_entropy",
    "stabilized_mirror_ascent_step",
    "step_size",
]

#: Smallest value kept in y before taking its log (an entry at exactly 0 could never recover).
Y_FLOOR = 1e-300


def initial_allocation(catalog: Catalog) -> np.ndarray:
    """:math:`y_1 = \\arg\\min_{\\mathcal Y} \\Phi`: ``min(1/e, b_v / Σ_{i∈v} s_i)`` on every slot."""
    total = np.bincount(catalog.node_of, weights=catalog.sizes_mib, minlength=len(catalog.nodes))
    per_node = np.minimum(1.0 / math.e, catalog.budgets_mib / np.where(total > 0, total, 1.0))
    return per_node[catalog.node_of].astype(float)


def negative_entropy(y: np.ndarray, sizes_mib: np.ndarray) -> float:
    """:math:`\\Phi(y) = \\sum_i s_i y_i \\log y_i` (``0 log 0 = 0``)."""
    y = np.asarray(y, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(np.where(y > 0, sizes_mib * y * np.log(y), 0.0)))


def mirror_diameter(catalog: Catalog) -> float:
    """:math:`D = -\\Phi(y_1)`, a bound of :math:`D_\\Phi(y^*, y_1)` over the feasible set."""
    return -negative_entropy(initial_allocation(catalog), catalog.sizes_mib)


def gradient_bound_per_mib(
    catalog: Catalog, gap_ms: ArrayLike, max_requests: ArrayLike, window_s: float
) -> float:
    r"""``L = max_i gap_i · min(capacity_i · W, R_i) / s_i`` (per slot, or scalars broadcast).

    The supergradient component of slot ``i`` is :math:`\sum_\rho l_{\rho,i} \sum_{k \ge k_i}
    \delta_k = \sum_\rho l_{\rho,i} (\gamma_{\text{repo}} - \gamma_i)`, at most its largest gap to
    the repository ``gap_i`` times the requests it can take in a window: its capacity
    ``capacity_i · W`` and the requests of the services it serves, ``R_i``.
    """
    if catalog.n_slots == 0:
        return 0.0
    gap = np.broadcast_to(np.asarray(gap_ms, dtype=float), (catalog.n_slots,))
    reach = np.minimum(catalog.capacity_rps * window_s, np.asarray(max_requests, dtype=float))
    return float(np.max(gap * reach / catalog.sizes_mib))


@dataclass(frozen=True, slots=True)
class StepSize:
    """η* of the module docstring and the regret bound it guarantees."""

    eta: float
    regret_bound: float
    diameter: float
    budget_total_mib: float
    gradient_bound_per_mib: float
    horizon: int


def step_size(catalog: Catalog, grad_bound_per_mib: float, horizon: int) -> StepSize:
    """:math:`\\eta^* = \\frac{1}{L}\\sqrt{2D/(\\|b\\|_1 T)}`, regret ≤ :math:`L\\sqrt{2D\\|b\\|_1 T}`."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 window, got {horizon}")
    d = mirror_diameter(catalog)
    b1 = float(catalog.budgets_mib.sum())
    if grad_bound_per_mib <= 0 or d <= 0 or b1 <= 0:
        return StepSize(0.0, 0.0, d, b1, grad_bound_per_mib, horizon)
    eta = math.sqrt(2.0 * d / (b1 * horizon)) / grad_bound_per_mib
    bound = grad_bound_per_mib * math.sqrt(2.0 * d * b1 * horizon)
    return StepSize(eta, bound, d, b1, grad_bound_per_mib, horizon)


def mirror_ascent_step(y: np.ndarray, g: np.ndarray, eta: float, catalog: Catalog) -> np.ndarray:
    """Steps 2–3: ``ŷ = y·exp(η g / s)`` then the Bregman projection (computed on ``log ŷ``)."""
    log_yhat = (
        np.log(np.maximum(np.asarray(y, dtype=float), Y_FLOOR)) + eta * np.asarray(g) / catalog.sizes_mib
    )
    return project_allocation(log_yhat, catalog)


@dataclass(frozen=True, slots=True)
class AdaptiveStep:
    r"""The AdaGrad-norm step of the module docstring: ``η_t = scale / sqrt(L² + S_{t−1})``.

    ``scale`` = :math:`\sqrt{2D/\|b\|_1}`, ``gradient_bound_per_mib`` = ``L``; ``S`` is the
    sum of the squared dual norms :math:`\|g_s\|_*^2 = (\max_i g_{s,i}/s_i)^2` seen so far.
    """

    scale: float
    gradient_bound_per_mib: float
    diameter: float
    budget_total_mib: float

    @classmethod
    def for_catalog(cls, catalog: Catalog, grad_bound_per_mib: float) -> AdaptiveStep:
        d = mirror_diameter(catalog)
        b1 = float(catalog.budgets_mib.sum())
        scale = math.sqrt(2.0 * d / b1) if d > 0 and b1 > 0 else 0.0
        return cls(scale, float(grad_bound_per_mib), d, b1)

    def eta(self, grad_sq_sum: float) -> float:
        r""":math:`\eta_t` given :math:`S_{t-1}` (0 when nothing can be learned)."""
        denom = math.sqrt(self.gradient_bound_per_mib**2 + grad_sq_sum)
        return self.scale / denom if denom > 0 else 0.0

    def regret_bound(self, grad_sq_sum: float) -> float:
        r""":math:`\frac{3}{\sqrt 2}\sqrt{D\|b\|_1 (L^2 + S_T)}` (module docstring)."""
        return (
            3.0
            / math.sqrt(2.0)
            * math.sqrt(
                self.diameter * self.budget_total_mib * (self.gradient_bound_per_mib**2 + grad_sq_sum)
            )
        )


def dual_norm_per_mib(g: np.ndarray, sizes_mib: np.ndarray) -> float:
    r""":math:`\|g\|_* = \max_i |g_i| / s_i` (0 for no slots)."""
    return float(np.max(np.abs(g) / sizes_mib)) if len(g) else 0.0


def stabilized_mirror_ascent_step(
    y: np.ndarray, g: np.ndarray, eta: float, eta_next: float, y_start: np.ndarray, catalog: Catalog
) -> np.ndarray:
    """DS-OMD (module docstring): ``log ŷ = γ(log y + η g/s) + (1−γ) log y₁``, γ = η_next/η, projected."""
    gamma = eta_next / eta if eta > 0 else 1.0
    log_x = np.log(np.maximum(np.asarray(y, dtype=float), Y_FLOOR)) + eta * np.asarray(g) / catalog.sizes_mib
    log_start = np.log(np.maximum(np.asarray(y_start, dtype=float), Y_FLOOR))
    return project_allocation(gamma * log_x + (1.0 - gamma) * log_start, catalog)
