"""The bind's network step, kept apart from the decision: bounded, timed, logged, never guessed.

Three pieces the runtime's ``bind`` composes (``docs/reliability.md`` argues the design):

* :class:`BindGate` — at most ``limit`` binds in flight. gunicorn's gthread worker has a fixed
  pool of threads; a bind blocked on a slow API server holds one for up to the bind's deadline.
  With every thread in a bind, ``/filter`` queued behind them (p99 4.8 s in issue 12). The gate is
  non-blocking: a bind over the limit is answered at once with an ``Error``, which kube-scheduler
  handles as a failed binding cycle (the pod is forgotten from its cache and retried with
  backoff), so at least ``threads − limit`` threads always remain for filter, prioritize, probes
  and scrapes.
* :func:`call_binder` — one binder call, classified as ``bound``, ``already_bound`` (409 naming the
  same node: an earlier attempt went through), ``timeout`` (the outcome is *unknown*: the write
  may still commit), or a definite failure (``conflict``, ``not_found``, ``api``, ``error``), and
  logged in one line with pod, node, duration and outcome when it did not bind.
* :class:`UnknownBinds` — the pods whose last bind timed out, with the node and annotations sent.
  Their reservation is kept (kube-scheduler's assume cache does the same: an assumed pod stays
  until the informer confirms it or it expires), so the devices are never handed out twice. A
  retry to the same node asks the API again (idempotent: 201, or 409 "already assigned to" that
  node); a retry to another node is refused until the watch settles it or the reservation
  expires (``ASSUME_TTL_S``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from qosched.extender.kube.binding import Binder, BindError

log = logging.getLogger(__name__)

#: Outcomes of one binder call that leave the pod bound to the requested node.
BOUND = frozenset({"bound", "already_bound"})
#: Outcomes proving the pod cannot be bound by that write (deleted, recreated, bound elsewhere).
DEFINITE_REFUSALS = frozenset({"conflict", "not_found"})


class BindGate:
    """Non-blocking limit on binds in flight (``limit=None``: unlimited)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"bind limit must be >= 1 or None, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_enter(self) -> bool:
        """Take a slot if one is free; never waits."""
        with self._lock:
            if self.limit is not None and self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


@dataclass(frozen=True, slots=True)
class BindAttempt:
    """How one binder call ended; ``error`` is empty when the pod is bound to the node."""

    outcome: str
    error: str
    duration_ms: float
    #: For the log only: an unexpected exception's message (the answer names just its type).
    detail: str = ""

    @property
    def bound(self) -> bool:
        return self.outcome in BOUND


def call_binder(
    binder: Binder,
    namespace: str,
    name: str,
    uid: str,
    node: str,
    annotations: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> BindAttempt:
    """One ``binder.bind`` call, classified (module docstring) and logged unless it bound."""
    t0 = clock()
    detail = ""
    try:
        binder.bind(namespace, name, uid, node, annotations)
        outcome, error = "bound", ""
    except BindError as err:
        if err.conflict_node == node:  # an earlier attempt of this very bind went through
            outcome, error = "already_bound", ""
        else:
            outcome, error = err.reason, str(err)
    except Exception as err:  # a client bug must not leak a reservation: classify, log, go on
        outcome, error, detail = "error", type(err).__name__, f"{type(err).__name__}: {err}"
        log.debug("binder raised", exc_info=True)
    attempt = BindAttempt(outcome, error, (clock() - t0) * 1e3, detail)
    log_attempt(namespace, name, node, attempt)
    return attempt


def log_attempt(namespace: str, name: str, node: str, attempt: BindAttempt) -> None:
    """One line per bind that did not bind (WARNING), per bind that did (DEBUG)."""
    level = logging.DEBUG if attempt.bound else logging.WARNING
    log.log(
        level,
        "bind pod=%s/%s node=%s duration_ms=%.1f outcome=%s%s",
        namespace,
        name,
        node,
        attempt.duration_ms,
        attempt.outcome,
        f": {attempt.detail or attempt.error}" if attempt.error else "",
    )


@dataclass(frozen=True, slots=True)
class UnknownBind:
    """A bind that timed out: where it went and what it wrote (a retry sends the same)."""

    node: str
    annotations: Mapping[str, str]


@dataclass
class UnknownBinds:
    """``uid -> UnknownBind`` for reservations held because a bind's outcome is unknown.

    An entry is valid only while the cache still assumes the pod: once the watch confirms the
    binding (the pod is placed, not assumed) or drops it (deleted, bound elsewhere, expired), the
    entry is stale and :meth:`live` forgets it.
    """

    _by_uid: dict[str, UnknownBind] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    max_entries: int = 4096

    def add(self, uid: str, node: str, annotations: Mapping[str, str]) -> None:
        with self._lock:
            self._by_uid[uid] = UnknownBind(node, dict(annotations))
            if len(self._by_uid) > self.max_entries:  # pods never retried: drop the oldest
                del self._by_uid[next(iter(self._by_uid))]

    def discard(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)

    def live(self, uid: str, still_assumed: Callable[[str], bool]) -> UnknownBind | None:
        """The entry of ``uid`` if its reservation is still held, else None (and forget it)."""
        with self._lock:
            entry = self._by_uid.get(uid)
        if entry is None:
            return None
        if still_assumed(uid):
            return entry
        self.discard(uid)
        return None

    def prune(self, still_assumed: Callable[[str], bool]) -> int:
        """Forget the entries whose reservation ended; the number still held."""
        with self._lock:
            uids = list(self._by_uid)
        for uid in uids:
            if not still_assumed(uid):
                self.discard(uid)
        return len(self._by_uid)

    def __len__(self) -> int:
        return len(self._by_uid)


__all__ = [
    "BOUND",
    "DEFINITE_REFUSALS",
    "BindAttempt",
    "BindGate",
    "UnknownBind",
    "UnknownBinds",
    "call_binder",
    "log_attempt",
]
