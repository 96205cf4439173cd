"""Leader election on a ``coordination.k8s.io/v1`` Lease, so that only one controller replica acts.

The algorithm is client-go's ``tools/leaderelection`` (``tryAcquireOrRenew``), on the official
Python client:

1. GET the Lease. If it does not exist, CREATE it with ``holderIdentity`` = us: we lead (a 409
   AlreadyExists means another replica created it first: we do not).
2. If another identity holds it and its record (holder, ``renewTime``, ...) has *changed within
   the last* ``leaseDurationSeconds`` *as observed on our own monotonic clock*, we do not lead.
   Comparing our observation times instead of the server's ``renewTime`` with our wall clock
   makes the election immune to clock skew between replicas, as client-go does; the price is
   that a newly started replica waits one lease duration before it can take over a lease that
   merely looks stale.
3. Otherwise (we hold it, it was released, or it expired) UPDATE it with our identity and
   ``renewTime`` = now, sending the ``resourceVersion`` we read: optimistic concurrency. A 409
   Conflict means another replica wrote in between — we lost this round.

The leader renews every ``retry_period_s``; it may *act* only while its last successful renewal
is younger than ``renew_deadline_s`` (:attr:`LeaderElector.is_leader`), which is shorter than the
lease duration, so it stops acting before anyone else may start. :meth:`LeaderElector.release`
hands the lease over at shutdown (empty holder, as client-go's ``ReleaseOnCancel``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Where the lease lives and its timing (client-go's defaults: 15 s, 10 s, 2 s).

    Attributes
    ----------
    namespace, name : str
        The Lease object (``manifests/rbac.yaml`` grants get/update on ``qosched-controller``
        in ``qosched-system``).
    lease_duration_s : float
        How long a holder's silence must last before another replica may take over [s].
    renew_deadline_s : float
        How long the leader keeps acting without a successful renewal [s]; < lease duration.
    retry_period_s : float
        Time between attempts to acquire or renew [s]; < renew deadline.
    """

    namespace: str = "qosched-system"
    name: str = "qosched-controller"
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.namespace or not self.name:
            raise ValueError("LeaseSettings.namespace and .name must not be empty")
        if not (0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s):
            raise ValueError(
                "LeaseSettings: need 0 < retry_period_s < renew_deadline_s < lease_duration_s, got "
                f"{self.retry_period_s}, {self.renew_deadline_s}, {self.lease_duration_s}"
            )


def default_identity() -> str:
    """``<hostname>_<random>``: the pod name in a Deployment, unique across restarts."""
    host = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


def _record(spec: Any) -> tuple[Any, ...]:
    if spec is None:
        return (None,) * 5
    return (
        spec.holder_identity,
        spec.lease_duration_seconds,
        spec.acquire_time,
        spec.renew_time,
        spec.lease_transitions,
    )


class LeaderElector:
    """Acquire and renew one Lease for ``identity``.

    Parameters
    ----------
    coordination : kubernetes.client.CoordinationV1Api
    identity : str
        This replica's ``holderIdentity`` (unique per process).
    settings : LeaseSettings, optional
    monotonic : callable, optional
        Seconds on a monotonic clock (tests inject a fake).
    wall_clock : callable, optional
        Aware UTC ``datetime`` for ``acquireTime``/``renewTime`` (informational only).
    """

    def __init__(
        self,
        coordination: CoordinationV1Api,
        identity: str,
        settings: LeaseSettings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        self.api = coordination
        self.identity = identity
        self.settings = settings or LeaseSettings()
        self._monotonic = monotonic
        self._wall = wall_clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None

    # ------------------------------------------------------------------ state
    @property
    def is_leader(self) -> bool:
        """True while the last successful acquire/renew is younger than ``renew_deadline_s``."""
        return self._renewed_at is not None and (
            self._monotonic() - self._renewed_at < self.settings.renew_deadline_s
        )

    # ------------------------------------------------------------------ protocol
    def try_acquire_or_renew(self) -> bool:
        """One round of the election; True when we hold the lease after it.

        Three steps, as client-go's ``tryAcquireOrRenew``: read the lease (create it when
        absent), give up while another holder's lease is still fresh, else write ourselves in.
        """
        now = self._monotonic()
        read = self._read_lease(now)
        if isinstance(read, bool):
            return read
        lease = read
        holder = lease.spec.holder_identity if lease.spec is not None else None
        if self._held_by_other(lease, holder, now):
            return False
        return self._write_renewal(lease, holder, now)

    def _read_lease(self, now: float) -> V1Lease | bool:
        """The current lease, or the round's result when there is none to renew."""
        s = self.settings
        try:
            lease: V1Lease = self.api.read_namespaced_lease(s.name, s.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return self._create(now)
            return self._failed("read", exc)
        except Exception as exc:  # connection refused, timeout: not leader this round
            return self._failed("read", exc)
        return lease

    def _held_by_other(self, lease: V1Lease, holder: str | None, now: float) -> bool:
        """True while another identity holds a lease we have seen unchanged for less than its duration.

        Freshness is judged on our own monotonic clock from when we first observed this record,
        never on the holder's timestamps (clocks of two nodes need not agree).
        """
        s = self.settings
        record = _record(lease.spec)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = float((lease.spec.lease_duration_seconds if lease.spec else None) or s.lease_duration_s)
        if not (holder and holder != self.identity and now < self._observed_at + duration):
            return False
        if self._renewed_at is not None:
            log.warning("lease %s/%s is held by %s: no longer leading", s.namespace, s.name, holder)
        self._renewed_at = None
        return True

    def _write_renewal(self, lease: V1Lease, holder: str | None, now: float) -> bool:
        """Write ourselves as holder (a transition when someone else held it); a 409 lost the race."""
        s = self.settings
        stamp = self._stamp()
        spec = lease.spec or V1LeaseSpec()
        if holder != self.identity:  # as client-go: every acquisition is a transition
            spec.acquire_time = stamp
            spec.lease_transitions = int(spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = round(s.lease_duration_s)
        spec.renew_time = stamp
        lease.spec = spec
        try:
            updated: V1Lease = self.api.replace_namespaced_lease(s.name, s.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                log.info("lease %s/%s: lost the race to another replica (409)", s.namespace, s.name)
                self._renewed_at = None
                return False
            return self._failed("update", exc)
        except Exception as exc:
            return self._failed("update", exc)
        return self._won(updated, now, acquired=holder != self.identity)

    def release(self) -> bool:
        """Give the lease up (empty holder) if we hold it; True when released."""
        s = self.settings
        if self._renewed_at is None:
            return False
        self._renewed_at = None
        try:
            lease: V1Lease = self.api.read_namespaced_lease(s.name, s.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return False
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = self._stamp()
            self.api.replace_namespaced_lease(s.name, s.namespace, lease)
        except Exception as exc:
            log.warning("lease %s/%s: could not release (%s)", s.namespace, s.name, exc)
            return False
        log.info("lease %s/%s released by %s", s.namespace, s.name, self.identity)
        return True

    # ------------------------------------------------------------------ internals
    def _stamp(self) -> datetime:
        """Now, never on a whole second: the client sends ``isoformat()``, which drops a zero
        fraction, and the apiserver parses ``MicroTime`` with exactly six fractional digits."""
        stamp = self._wall()
        return stamp.replace(microsecond=1) if stamp.microsecond == 0 else stamp

    def _create(self, now: float) -> bool:
        s = self.settings
        stamp = self._stamp()
        body = V1Lease(
            metadata=V1ObjectMeta(name=s.name, namespace=s.namespace),
            spec=V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=round(s.lease_duration_s),
                acquire_time=stamp,
                renew_time=stamp,
                lease_transitions=0,
            ),
        )
        try:
            created: V1Lease = self.api.create_namespaced_lease(s.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                log.info("lease %s/%s: created by another replica first", s.namespace, s.name)
                return False
            return self._failed("create", exc)
        except Exception as exc:
            return self._failed("create", exc)
        return self._won(created, now, acquired=True)

    def _won(self, lease: V1Lease, now: float, *, acquired: bool) -> bool:
        self._observed, self._observed_at = _record(lease.spec), now
        if acquired or self._renewed_at is None:
            s = self.settings
            log.info("lease %s/%s: %s is the leader", s.namespace, s.name, self.identity)
        self._renewed_at = now
        return True

    def _failed(self, verb: str, exc: BaseException) -> bool:
        s = self.settings
        status = getattr(exc, "status", None)
        reason = f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else type(exc).__name__
        log.warning("lease %s/%s: %s failed (%s)", s.namespace, s.name, verb, reason)
        # Keep leading until the renew deadline passes (is_leader checks it); report this round.
        return self.is_leader
