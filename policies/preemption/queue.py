r"""Pending-queue order of the ``priority`` and ``qos-driven`` policies, and the expected wait.

da Silva et al. (JISA 2020, ``models.md`` §B) order the pending queue

- ``priority``   by class (rank 0, ``prod``, first), then submission time;
- ``qos-driven`` by class, then the pod's **current delivered QoS ascending** (the pod furthest
  from being served first), then submission time.

Both are total orders: the last key is the pod's position (its index in the workload, or in
the list given), so equal inputs always give the same order.

The expected wait (:func:`expected_wait_s`) is the predicted pause a preemption victim suffers
before it runs again — the ``d`` of :func:`qosched.policies.fairness.qos.has_slack`. It is
estimated from what the queue has done so far, per class (see the function).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["expected_wait_s", "priority_order", "qos_driven_order"]


def _positions(n: int, tiebreak: ArrayLike | None) -> NDArray[np.int64]:
    if tiebreak is None:
        return np.arange(n, dtype=np.int64)
    out = np.asarray(tiebreak, dtype=np.int64)
    if out.shape != (n,):
        raise ValueError(f"tiebreak: expected {n} values, got shape {out.shape}")
    return out


def _check(name: str, values: ArrayLike, n: int | None) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"{name}: expected a 1-d array of {n} values, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: NaN at position {int(np.flatnonzero(np.isnan(arr))[0])}")
    return arr


def priority_order(
    rank: ArrayLike, submit_s: ArrayLike, tiebreak: ArrayLike | None = None
) -> NDArray[np.int64]:
    """Positions of the pending pods in ``priority`` order: class rank ascending, then submission.

    Parameters
    ----------
    rank : array_like of int, shape (n,)
        Class rank of each pod (0 = highest class, ``ClassConfig.ranks``).
    submit_s : array_like, shape (n,)
        Submission time of each pod [s].
    tiebreak : array_like of int, optional
        Last key (default: the position), e.g. workload indexes.

    Returns
    -------
    numpy.ndarray of int64
        A permutation of ``range(n)``: ``order[0]`` is tried first.

    Examples
    --------
    >>> priority_order([1, 0, 1], [0.0, 5.0, -1.0]).tolist()
    [1, 2, 0]
    """
    r = _check("rank", rank, None)
    n = r.shape[0]
    s = _check("submit_s", submit_s, n)
    return np.lexsort((_positions(n, tiebreak), s, r)).astype(np.int64)


def qos_driven_order(
    rank: ArrayLike, qos: ArrayLike, submit_s: ArrayLike, tiebreak: ArrayLike | None = None
) -> NDArray[np.int64]:
    """Positions of the pending pods in ``qos-driven`` order: class, QoS ascending, submission.

    Parameters
    ----------
    rank : array_like of int, shape (n,)
        Class rank (0 = highest class).
    qos : array_like, shape (n,)
        Current delivered QoS of each pod (availability, ``PodLedger.availability(now_s)``).
    submit_s : array_like, shape (n,)
        Submission time [s].
    tiebreak : array_like of int, optional
        Last key (default: the position).

    Examples
    --------
    >>> qos_driven_order([1, 1, 0], [0.9, 0.2, 1.0], [0.0, 9.0, 5.0]).tolist()
    [2, 1, 0]
    """
    r = _check("rank", rank, None)
    n = r.shape[0]
    q = _check("qos", qos, n)
    s = _check("submit_s", submit_s, n)
    return np.lexsort((_positions(n, tiebreak), s, q, r)).astype(np.int64)


def expected_wait_s(
    rank: ArrayLike,
    waited_s: ArrayLike,
    episodes: ArrayLike,
    n_classes: int,
    *,
    floor_s: float,
    safety: float = 1.0,
) -> NDArray[np.float64]:
    r"""Expected wait of a pod entering the pending queue, per class rank [s].

    The wait of class :math:`c` is the mean length of the waiting episodes its pods have had so
    far, scaled by a safety factor and floored:

    .. math::

        \hat d_c = \max\Bigl(d_{min},\ \kappa \,
                   \frac{\sum_{i \in c} w_i}{\sum_{i \in c} e_i}\Bigr)

    with :math:`w_i` the time pod *i* has spent not running since submission (waiting so far,
    ongoing waits included) and :math:`e_i` its waiting episodes (1 + evictions for a pod that
    has arrived: the first wait, possibly 0 s, and one per eviction). A class with no pod yet
    gets the floor. Ongoing waits are counted at their length so far, so :math:`\hat d` is
    biased low while a queue builds up; :math:`\kappa` (``safety``) compensates.

    Parameters
    ----------
    rank : array_like of int, shape (n,)
        Class rank of each arrived pod.
    waited_s : array_like, shape (n,)
        Time not running since submission [s], >= 0.
    episodes : array_like, shape (n,)
        Waiting episodes, >= 1 for an arrived pod.
    n_classes : int
        Number of ranks (the result's length).
    floor_s : float
        :math:`d_{min}` [s], >= 0: the shortest pause assumed (e.g. the retry interval: an
        evicted pod cannot run again before the next retry).
    safety : float
        :math:`\kappa` >= 1 would be usual.

    Returns
    -------
    numpy.ndarray, shape (n_classes,)
        :math:`\hat d_c` per rank [s].

    Examples
    --------
    >>> expected_wait_s([0, 1, 1], [0.0, 30.0, 90.0], [1, 1, 2], 3, floor_s=10.0).tolist()
    [10.0, 40.0, 10.0]
    """
    r = np.asarray(rank, dtype=np.int64)
    w = _check("waited_s", waited_s, r.shape[0])
    e = _check("episodes", episodes, r.shape[0])
    if n_classes < 1:
        raise ValueError(f"n_classes: must be >= 1, got {n_classes}")
    if r.size and (r.min() < 0 or r.max() >= n_classes):
        raise ValueError(f"rank: values must be in [0, {n_classes})")
    if (w < 0).any() or (e < 0).any():
        raise ValueError("waited_s and episodes must be >= 0")
    if not (np.isfinite(floor_s) and floor_s >= 0):
        raise ValueError(f"floor_s: must be finite and >= 0, got {floor_s!r}")
    if not (np.isfinite(safety) and safety > 0):
        raise ValueError(f"safety: must be finite and > 0, got {safety!r}")
    total_w = np.bincount(r, weights=w, minlength=n_classes)
    total_e = np.bincount(r, weights=e, minlength=n_classes)
    mean = np.zeros(n_classes)
    np.divide(total_w, total_e, out=mean, where=total_e > 0)
    return np.maximum(floor_s, safety * mean)
