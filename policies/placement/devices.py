"""Which device(s) of each candidate node a pod takes, vectorised over all candidates.

A node offers ``D`` device slots; a pod occupies ``count`` of them (one for a fractional or
single-GPU request, ``gpu_count`` for whole GPUs; a whole-GPU request is only ``ok`` on devices
with all 1000 milli free, which :func:`qosched.policies.placement.constraints.gather` already
encodes in ``device_ok``). Each function returns, per node, the chosen device indexes in
preference order, shape ``(m, count)``, ``-1`` on rows where fewer than ``count`` devices are ok.

Ties always go to the lower device index (a stable order), so a decision depends only on the
state: the same snapshot gives the same devices.

- :func:`first_fit`: the lowest-indexed devices that fit (what the NVIDIA device plugin hands out).
- :func:`best_fit`:  the devices with the least free milli-GPU that still fit (packs devices,
  keeps whole GPUs free for whole-GPU pods; the FGD simulator's ``gpuSelMethod: best``).
- :func:`worst_fit`: the devices with the most free milli-GPU (spreads load across devices).
- :func:`by_key`:    the devices with the smallest value of any per-device key (a policy's own
  order, e.g. predicted latency or fragmentation increase).
"""

from __future__ import annotations

import numpy as np

__all__ = ["best_fit", "by_key", "first_fit", "worst_fit"]


def by_key(key: np.ndarray, ok: np.ndarray, count: int) -> np.ndarray:
    """Per row, the ``count`` devices with the smallest ``key`` among those ``ok``.

    Parameters
    ----------
    key : (m, D) array
        Lower is preferred. Must be finite where ``ok`` (NaN would make the order undefined).
    ok : (m, D) bool
        Devices the pod may take.
    count : int
        Devices to take per node (``0`` is treated as 1 column of -1: the pod takes none).

    Returns
    -------
    (m, max(count, 1)) int64
        Device indexes, best first; ``-1`` rows where fewer than ``count`` devices are ok.
    """
    m = ok.shape[0]
    if count <= 0 or ok.shape[1] == 0:
        return np.full((m, max(count, 1)), -1, dtype=np.int64)
    masked = np.where(ok, key, np.inf)
    if count == 1:
        best = np.argmin(masked, axis=1)  # argmin returns the first minimum: ties → lower index
        hit = ok[np.arange(m), best]
        return np.where(hit, best, -1).astype(np.int64)[:, None]
    order = np.argsort(masked, axis=1, kind="stable")[:, :count]
    enough = ok.sum(axis=1) >= count
    return np.where(enough[:, None], order, -1).astype(np.int64)


def first_fit(free_milli: np.ndarray, ok: np.ndarray, count: int) -> np.ndarray:
    """The lowest-indexed ``count`` devices that are ok."""
    key = np.broadcast_to(np.arange(ok.shape[1], dtype=np.float64), ok.shape)
    return by_key(key, ok, count)


def best_fit(free_milli: np.ndarray, ok: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` ok devices with the least free milli-GPU (ties: lower index)."""
    return by_key(free_milli.astype(np.float64, copy=False), ok, count)


def worst_fit(free_milli: np.ndarray, ok: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` ok devices with the most free milli-GPU (ties: lower index)."""
    return by_key(-free_milli.astype(np.float64, copy=False), ok, count)
