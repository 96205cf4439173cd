r"""Bregman projection under the weighted negative entropy onto one node's budget set (INFIDA §IV).

INFIDA's mirror map is the weighted negative entropy :math:`\Phi(y) = \sum_i s_i y_i \log y_i`
(``s_i`` the slot's memory). Its Bregman divergence is the generalised KL divergence weighted by
the sizes,

.. math:: D_\Phi(y, \hat y) = \sum_i s_i \big(y_i \log(y_i/\hat y_i) - y_i + \hat y_i\big),

and the projection of :math:`\hat y > 0` onto one node's set
:math:`\mathcal{Y}_v = \{0 \le y \le 1,\ \sum_i s_i y_i \le b\}` (the paper's projection step,
its Algorithm 2 for the capped simplex) has the closed form given by the KKT conditions:
stationarity :math:`s_i \log(y_i/\hat y_i) + \lambda s_i + \mu_i = 0` with :math:`\lambda \ge 0`
for the budget and :math:`\mu_i \ge 0` for :math:`y_i \le 1` gives

.. math:: y_i = \min\{1,\ c\, \hat y_i\}, \qquad c = e^{-\lambda} \in (0, 1].

If :math:`\sum_i s_i \min(1, \hat y_i) \le b` the budget is slack and ``c = 1``. Otherwise ``c``
solves :math:`f(c) = \sum_i s_i \min(1, c \hat y_i) = b`; ``f`` is continuous, increasing and
piecewise linear with breakpoints at :math:`c = 1/\hat y_i`. With the entries sorted by
:math:`\hat y` decreasing and the first ``k`` capped at 1,

.. math:: c_k = \frac{b - \sum_{j<k} s_j}{\sum_{j \ge k} s_j \hat y_j},

and the answer is the ``k`` whose :math:`c_k` lies in its own interval
:math:`[1/\hat y_{k-1}, 1/\hat y_k]` of the sorted order. ``f(1/ŷ_(k))`` is monotone in ``k``, so
that ``k`` is found by bisection over the breakpoints (``numpy.searchsorted``), and ``c`` is then
exact, not iterated to a tolerance: O(n log n) per node.

The computation runs on :math:`\log \hat y` so that the multiplicative update
``ŷ = y·exp(η g / s)`` cannot overflow (``c`` is carried as ``log c``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from qosched.policies.infida.catalog import Catalog

__all__ = ["bregman_divergence", "project_allocation", "project_node", "project_node_log"]


def project_node_log(log_yhat: np.ndarray, sizes_mib: np.ndarray, budget_mib: float) -> np.ndarray:
    """:math:`\\Pi^{\\Phi}_{\\mathcal{Y}_v}` of ``exp(log_yhat)`` (see the module docstring).

    Every size must be > 0 and ≤ ``budget_mib`` (a slot that cannot fit alone is not a slot).
    Entries of ``log_yhat`` may be ``-inf`` (zero mass stays zero).
    """
    log_yhat = np.asarray(log_yhat, dtype=float)
    s = np.asarray(sizes_mib, dtype=float)
    if log_yhat.size == 0:
        return np.zeros(0)
    log_capped = np.minimum(log_yhat, 0.0)
    if float(s @ np.exp(log_capped)) <= budget_mib:
        return np.exp(log_capped)
    order = np.argsort(-log_yhat, kind="stable")
    ly, ss = log_yhat[order], s[order]
    k = _capped_count(ly, ss, budget_mib)
    log_c = np.log(budget_mib - ss[:k].sum()) - logsumexp(ly[k:], b=ss[k:])
    out = np.empty_like(ly)
    out[:k] = 1.0
    out[k:] = np.exp(np.minimum(ly[k:] + log_c, 0.0))
    y = np.empty_like(out)
    y[order] = out
    return y


def _capped_count(ly: np.ndarray, ss: np.ndarray, budget_mib: float) -> int:
    """How many of the sorted entries sit at 1 in the projection.

    ``f(c) = Σ s·min(1, c·ŷ)`` evaluated at the breakpoints ``c = 1/ŷ_(j)`` (entry j just reaches
    1) is increasing in ``j``; the entries capped are those whose breakpoint has ``f ≤ b``.
    At ``c = 1/ŷ_(j)`` entries ``0..j`` are at 1 and the rest are ``ŷ/ŷ_(j)``.
    """
    finite = int(np.count_nonzero(np.isfinite(ly)))
    with np.errstate(divide="ignore"):
        weighted = ly + np.log(ss)
    # suffix[j] = log Σ_{i≥j} s_i ŷ_i, with suffix[n] = log 0
    suffix = np.append(np.logaddexp.accumulate(weighted[::-1])[::-1], -np.inf)
    head = np.cumsum(ss[:finite])  # Σ_{i≤j} s_i
    f_at_break = head + np.exp(suffix[1 : finite + 1] - ly[:finite])
    # f_at_break is non-decreasing in j (the breakpoints 1/ŷ_(j) increase).
    return int(np.searchsorted(f_at_break, budget_mib, side="right"))


def project_node(yhat: np.ndarray, sizes_mib: np.ndarray, budget_mib: float) -> np.ndarray:
    """:func:`project_node_log` of ``log(yhat)`` (``yhat ≥ 0``)."""
    with np.errstate(divide="ignore"):
        return project_node_log(np.log(np.asarray(yhat, dtype=float)), sizes_mib, budget_mib)


def project_allocation(log_yhat: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Project every node's block: the feasible set is the product of the nodes' sets."""
    y = np.zeros(catalog.n_slots)
    for v, node in enumerate(catalog.nodes):
        idx = catalog.slots_of(v)
        if idx.size:
            y[idx] = project_node_log(log_yhat[idx], catalog.sizes_mib[idx], node.budget_mib)
    return y


def bregman_divergence(y: np.ndarray, yhat: np.ndarray, sizes_mib: np.ndarray) -> float:
    """:math:`D_\\Phi(y, \\hat y)` of the module docstring (``0·log 0 = 0``)."""
    y = np.asarray(y, dtype=float)
    yhat = np.asarray(yhat, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / yhat), 0.0)
    return float(np.sum(sizes_mib * (term - y + yhat)))
