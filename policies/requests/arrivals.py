"""Request arrivals from a real trace, and synthetic network traces (pure; the shell reads files).

:func:`scale_arrivals` keeps the *shape* of a real arrival process (its burstiness, its lulls)
and changes its rate: the arrivals in ``[start_s, start_s + duration_s * speedup)`` of the trace
are shifted to 0 and their times divided by ``speedup``, so the rate is multiplied by
``speedup`` and the inter-arrival gaps keep their relative sizes (``time_s = (t - start_s) /
speedup``). The shipped end–edge–cloud scenario takes the Azure LLM inference trace 2023
(``../shared/data/azure-llm-2023``, timestamps only) this way.

:func:`synthetic_network` draws a piecewise-constant network trace for scenarios the repo does
not ship (checks that a policy is not fitted to the shipped trace): per tier, the link
alternates between its nominal value and a degraded one; degraded spells start as a Poisson
process of rate ``1 / mean_gap_s`` and last an exponential time of mean ``mean_spell_s``; a spell
multiplies the bandwidth by a factor drawn uniformly in ``[low_frac, high_frac]`` and the RTT by
its inverse square root (queueing in a congested link grows the RTT as the rate falls).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qosched.policies.requests.scenario import Link

__all__ = ["scale_arrivals", "synthetic_network"]


def scale_arrivals(timestamps_s: np.ndarray, start_s: float, duration_s: float, speedup: float) -> np.ndarray:
    """Arrival times [s] from 0 over ``duration_s``: a window of the trace compressed ``speedup`` times.

    >>> scale_arrivals(np.array([0.0, 10.0, 20.0, 30.0, 40.0]), 10.0, 10.0, 2.0).tolist()
    [0.0, 5.0]
    """
    if speedup <= 0 or duration_s <= 0 or start_s < 0:
        raise ValueError("speedup and duration_s must be > 0, start_s >= 0")
    t = np.sort(np.asarray(timestamps_s, dtype=np.float64))
    t = t - t[0] if t.size else t
    lo, hi = start_s, start_s + duration_s * speedup
    kept = t[(t >= lo) & (t < hi)]
    return (kept - lo) / speedup


def synthetic_network(
    rng: np.random.Generator,
    nominal: Mapping[str, Link],
    horizon_s: float,
    *,
    mean_gap_s: float = 120.0,
    mean_spell_s: float = 40.0,
    low_frac: float = 0.04,
    high_frac: float = 0.3,
) -> list[tuple[float, str, Link]]:
    """Rows ``(time_s, tier, link)`` of a random piecewise-constant trace (see the module docstring)."""
    rows: list[tuple[float, str, Link]] = []
    for tier in sorted(nominal):
        base = nominal[tier]
        rows.append((0.0, tier, base))
        t = float(rng.exponential(mean_gap_s))
        while t < horizon_s:
            frac = float(rng.uniform(low_frac, high_frac))
            bad = Link(base.rtt_ms / np.sqrt(frac), base.bandwidth_mbps * frac)
            rows.append((round(t, 3), tier, bad))
            t += float(rng.exponential(mean_spell_s))
            if t >= horizon_s:
                break
            rows.append((round(t, 3), tier, base))
            t += float(rng.exponential(mean_gap_s))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows
