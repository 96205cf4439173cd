"""Summaries of request-level runs: the ``requests`` object, ``best-static``, regret and series.

``requests`` object of ``summary.json`` (contract §4), over all requests of the trace:

* ``total`` requests, ``served`` (the policy chose an action that a device of its tier serves);
* ``mean_response_ms`` / ``p95_response_ms`` over served requests (transfer + wait + service);
* ``slo_attainment``: share of *all* requests served within their service's SLO (a dropped
  request is a miss);
* ``mean_accuracy``: mean top-1 accuracy of the variants that served (requests of a variant of
  unknown accuracy left out);
* ``accuracy_loss``: mean, over served requests, of the percentage points between the most
  accurate allowed variant of the service and the variant that served.

``best-static`` (in hindsight): for each service in turn, every one of its actions is tried with
the other services held at their current choice, and the one with the highest mean reward
(:class:`~qosched.policies.requests.routing.Objective`) is kept (one pass of coordinate ascent,
started from ``always-edge``'s choice, or the first action). Services share tiers, so a joint
optimum could differ; the pass costs ``Σ_s |actions(s)|`` runs.

Regret of a policy against ``best-static`` at request ``n``: ``Σ_{i≤n} (r*_i − r_i)``, both runs
on the same arrivals, ``r`` the objective's reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qosched.policies.requests.engine import RunRecords
from qosched.policies.requests.routing import StaticRouting
from qosched.policies.requests.scenario import Action, Scenario

__all__ = ["best_static", "regret_series", "requests_summary", "tier_share_series", "windowed_mean"]


def requests_summary(records: RunRecords) -> dict[str, Any]:
    """The contract's ``requests`` object (see the module docstring)."""
    served = records.served
    resp = records.response_ms[served]
    met = served & (records.response_ms <= records.slo_ms)
    acc = records.accuracy[served]
    acc = acc[~np.isnan(acc)]
    total = len(records)
    return {
        "total": int(total),
        "served": int(served.sum()),
        "mean_response_ms": float(resp.mean()) if resp.size else None,
        "p95_response_ms": float(np.percentile(resp, 95)) if resp.size else None,
        "slo_attainment": float(met.sum() / total) if total else None,
        "mean_accuracy": float(acc.mean()) if acc.size else None,
        "accuracy_loss": float(records.accuracy_loss_pts[served].mean()) if served.any() else None,
    }


RunFn = Callable[[StaticRouting], RunRecords]


def best_static(scenario: Scenario, run: RunFn) -> tuple[dict[str, Action], RunRecords]:
    """Best fixed action per service in hindsight (see the module docstring); ``run`` simulates a policy."""
    mapping: dict[str, Action] = {}
    for s in scenario.services:
        start = scenario.most_accurate(s, "edge") or scenario.actions(s)[0]
        mapping[s] = start
    best_records: RunRecords | None = None
    for s in scenario.services:
        best_value = -np.inf
        for action in scenario.actions(s):
            trial = {**mapping, s: action}
            rec = run(StaticRouting(trial, name="best-static"))
            value = float(np.mean(rec.reward))
            if value > best_value:
                best_value, mapping, best_records = value, trial, rec
    assert best_records is not None
    return mapping, best_records


def regret_series(policy: RunRecords, reference: RunRecords) -> np.ndarray:
    """Cumulative regret ``Σ (r_ref − r_policy)`` after each request."""
    return np.cumsum(reference.reward - policy.reward)


def windowed_mean(time_s: np.ndarray, values: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` (NaN ignored) in consecutive windows of ``window_s``; (window centres, means)."""
    if time_s.size == 0:
        return np.zeros(0), np.zeros(0)
    t0 = float(time_s[0])
    idx = ((time_s - t0) // window_s).astype(np.int64)
    n = int(idx.max()) + 1
    ok = ~np.isnan(values)
    sums = np.bincount(idx[ok], weights=values[ok], minlength=n)
    counts = np.bincount(idx[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return t0 + (np.arange(n) + 0.5) * window_s, means


def tier_share_series(
    records: RunRecords, tiers: tuple[str, ...], window_s: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Share of the requests of each window served on each tier (unserved left out of every tier)."""
    tier_arr = np.asarray(records.tier)
    out: dict[str, np.ndarray] = {}
    centres = np.zeros(0)
    for t in tiers:
        centres, share = windowed_mean(records.time_s, (tier_arr == t).astype(np.float64), window_s)
        out[t] = share
    return centres, out
