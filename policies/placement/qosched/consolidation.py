r"""Pack or spread: how ``qosched`` consolidates inference services onto GPUs (``gpu_consolidation``).

Among the devices the latency models accept, where a fractional service goes is a choice the SLO
does not make: spreading services over many GPUs keeps each GPU lightly loaded (headroom against
rate growth, fewer services behind one failing GPU); packing them onto few GPUs on few nodes
keeps whole GPUs and whole nodes free for pods that need them (training jobs of 1-8 whole GPUs).
This module states the choice as one knob and one term of the node score.

Settings (``QoschedOptions.gpu_consolidation``):

========== =====================================================================================
``spread``  no term: among nodes equal on fragmentation the slack σ of the chosen GPU decides
            (on a node, the first feasible GPU in fragmentation order): services spread over
            the nodes, a few per node.
``pack-gpu`` fill GPUs already in use before opening a new one, and open new ones on the least
            used nodes: fewest GPUs, spread over nodes.
``pack``    fill GPUs already in use, then open new ones on the busiest nodes: fewest GPUs on
            fewest nodes (whole nodes stay free for multi-GPU pods).
========== =====================================================================================

The term, per candidate node with chosen device(s) d, added to the score
(:func:`consolidation_term`):

.. math::

    s \mathrel{+}= w_c\,\kappa, \qquad
    \kappa = \begin{cases}
        0 & \text{spread, or } \sigma < m \\
        u_d - u_n & \text{pack-gpu} \\
        u_d + u_n & \text{pack}
    \end{cases}

- u_d ∈ [0, 1): milli-GPU already allocated on the chosen device(s) before the pod, over 1000
  (mean over the devices of a multi-device pod);
- u_n ∈ [0, 1]: milli-GPU allocated on the node before the pod over the node's GPU capacity;
- σ: the latency slack of the chosen device after placement (min over its services, the new one
  included, of (SLO − latency)/SLO, from the latency models); m: the margin
  ``consolidation_slack_frac`` (default 0.2: every co-located service predicted within 80 % of
  its SLO). Packing is rewarded only where the latency models leave that margin;
- w_c = :data:`CONSOLIDATION_WEIGHT` = 2: above the slack term's whole range (w_s·σ ≤ 1), so
  the setting, not σ, decides between a used and an empty GPU.

The device on each node follows the setting too (:func:`pack_order`): with ``pack``/``pack-gpu``
the fullest device is judged first (ties on fragmentation only; fragmentation still comes
first); where that device leaves less slack than m, the node's device is chosen again with
the least allocated device first (:meth:`QoschedPolicy._choose`), so a pod packs only while its
device keeps the margin. Every placement, packed or spread, is feasible by the interference rule first (every
co-located service's predicted latency within its SLO, utilisation and memory thresholds).

The knob applies to services (pods with a model and an SLO) requesting a GPU share; pods
without a latency target (training, batch) are placed by fragmentation and balance as before,
and pods without a GPU request (edge TPU, CPU) are unaffected.
"""

from __future__ import annotations

import numpy as np

from qosched.policies.types import GPU_MILLI_PER_DEVICE

__all__ = [
    "CONSOLIDATION_SETTINGS",
    "CONSOLIDATION_WEIGHT",
    "DEFAULT_CONSOLIDATION",
    "check_consolidation",
    "consolidation_term",
    "pack_order",
]

#: The settings of ``gpu_consolidation``, and the sign of u_n in κ (None: no term).
CONSOLIDATION_SETTINGS: dict[str, float | None] = {"spread": None, "pack-gpu": -1.0, "pack": 1.0}

#: The default setting (docs/placement.md, "Pack or spread": chosen from the mixed what-if).
DEFAULT_CONSOLIDATION = "pack"

#: w_c: κ's weight in the node score, above the slack term's range (w_s·σ ≤ 1 by default).
CONSOLIDATION_WEIGHT = 2.0


def check_consolidation(owner: str, setting: object, slack_frac: object) -> None:
    """One-line ``ValueError`` for an unknown setting or a margin outside [0, 1)."""
    if not isinstance(setting, str) or setting not in CONSOLIDATION_SETTINGS:
        raise ValueError(
            f"{owner}.gpu_consolidation must be one of {', '.join(CONSOLIDATION_SETTINGS)} (got {setting!r})"
        )
    if isinstance(slack_frac, bool) or not isinstance(slack_frac, int | float) or not 0.0 <= slack_frac < 1.0:
        raise ValueError(f"{owner}.consolidation_slack_frac must be a number in [0, 1) (got {slack_frac!r})")


def packs(setting: str) -> bool:
    """Whether ``setting`` consolidates (anything but ``spread``)."""
    return CONSOLIDATION_SETTINGS[setting] is not None


def pack_order(spread_order: np.ndarray, free_milli: np.ndarray, *, fullest_first: bool = True) -> np.ndarray:
    """Device order (lower first) that keeps ``spread_order``'s ranking within each node (row) and,
    among a node's devices tied on it, puts the most allocated first (``fullest_first=False``: the
    least allocated first, the fallback where the fullest one would break the margin).

    ``spread_order`` is the policy's key (ΔF rounded to a fixed resolution, or ``inf`` for an
    unusable device); the key returned is the device's rank in its row (how many of the row's
    keys are smaller: equal keys share a rank, ranks of different keys are ≥ 1 apart; ``inf``
    where the key is not finite) plus a tie-breaker in [0, 0.5]: 0.5 − u_d/2 (or u_d/2), with
    u_d = clip(1 − free/1000, 0, 1), computed as clip(free, 0, 1000)/2000 (or
    (1000 − clip(free, 0, 1000))/2000), so ranks never swap. Keys are compared only within a
    row (the search takes each node's smallest), so the rank within the row is all the order
    needs: D comparisons per device, where a rank over all m·D keys (``np.unique``) was a sort.

    >>> pack_order(np.array([[0.0, 0.0, 5.0]]), np.array([[1000, 500, 0]])).tolist()
    [[0.5, 0.25, 2.0]]
    >>> pack_order(np.array([[0.0, 0.0, 5.0]]), np.array([[1000, 500, 0]]), fullest_first=False).tolist()
    [[0.0, 0.25, 2.5]]
    >>> pack_order(np.array([[3.0, 1.0, 3.0, np.inf], [np.nan, 2.0, 0.5, 0.5]]), np.zeros((2, 4))).tolist()
    [[1.0, 0.0, 1.0, inf], [inf, 2.0, 0.0, 0.0]]
    """
    # Worked on (D, m) copies: each comparison and sum runs over contiguous memory.
    by_device = np.ascontiguousarray(spread_order.T)
    smaller = np.zeros(by_device.shape, dtype=np.uint8)
    for key in by_device:
        smaller += key < by_device
    free = np.clip(free_milli.T, 0, GPU_MILLI_PER_DEVICE)
    if not fullest_first:
        free = GPU_MILLI_PER_DEVICE - free
    order = free * (0.5 / GPU_MILLI_PER_DEVICE)
    order += smaller
    np.putmask(order, ~np.isfinite(by_device), np.inf)
    return np.ascontiguousarray(order.T)  # (the search reads rows: C order)


def consolidation_term(
    setting: str,
    device_used_frac: np.ndarray,
    node_used_frac: np.ndarray,
    slack_frac: np.ndarray,
    *,
    min_slack_frac: float,
) -> np.ndarray:
    """κ per candidate node (module docstring): u_d ± u_n where σ ≥ m, else 0; zeros for ``spread``.

    >>> consolidation_term("pack", np.array([0.5, 0.5]), np.array([0.25, 0.25]),
    ...                    np.array([0.9, 0.1]), min_slack_frac=0.2).tolist()
    [0.75, 0.0]
    """
    sign = CONSOLIDATION_SETTINGS[setting]
    if sign is None:
        return np.zeros(device_used_frac.shape)
    kappa = device_used_frac + sign * node_used_frac
    return np.where(keeps_margin(slack_frac, min_slack_frac), kappa, 0.0)


def keeps_margin(slack_frac: np.ndarray, margin: float) -> np.ndarray:
    """σ ≥ m, NaN (no device) read as σ = 0: ``np.nan_to_num(slack_frac, nan=0.0) >= margin``
    without the copy (±inf compare as they are: m is in [0, 1))."""
    keeps = slack_frac >= margin
    if margin <= 0.0:
        keeps |= np.isnan(slack_frac)
    return keeps


def used_fractions(
    free_milli: np.ndarray, exists: np.ndarray, devices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(u_d, u_n) per candidate: allocated share of the chosen devices (``devices``: (m, g), −1 =
    none; mean over the chosen ones, 0 without one) and of the node's GPUs, before the pod.

    ``free_milli`` (m, D) free milli-GPU per device slot, ``exists`` (m, D) whether the slot is a
    device.

    >>> u_d, u_n = used_fractions(np.array([[600, 1000]]), np.array([[True, True]]), np.array([[0]]))
    >>> u_d.tolist(), u_n.tolist()
    ([0.4], [0.2])
    """
    # Row sums as products with a vector of ones: exact here (integer milli-GPU, far below 2**53)
    # and several times faster than ``sum(axis=1)`` over rows of a few devices; divisions with
    # ``where=`` (0 elsewhere) rather than ``np.where`` under ``np.errstate``.
    m, d = exists.shape
    used = np.subtract(GPU_MILLI_PER_DEVICE, free_milli, out=np.zeros((m, d)), where=exists)
    cap = (exists.astype(np.float64) @ np.ones(d)) * float(GPU_MILLI_PER_DEVICE)
    u_n = np.divide(used @ np.ones(d), cap, out=np.zeros(m), where=cap > 0)
    chosen = devices >= 0
    if devices.shape[1] == 1:  # one device: u_d is its used share (as below, without the sums)
        picked = used.reshape(-1).take(np.arange(0, m * d, d) + np.where(chosen[:, 0], devices[:, 0], 0))
        return np.divide(picked, GPU_MILLI_PER_DEVICE, out=np.zeros(m), where=chosen[:, 0]), u_n
    picked = np.take_along_axis(used, np.where(chosen, devices, 0), axis=1)
    count = chosen.astype(np.float64) @ np.ones(chosen.shape[1])
    total = np.where(chosen, picked, 0.0) @ np.ones(chosen.shape[1])
    return np.divide(total, count * GPU_MILLI_PER_DEVICE, out=np.zeros(m), where=count > 0), u_n
