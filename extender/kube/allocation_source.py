"""INFIDA's allocation from its ConfigMap, for ``GET /allocation`` on the extender.

:class:`AllocationSource` reads ``namespace/name`` (key ``allocation.json``, written by ``qosched
controller --allocation``; :mod:`qosched.policies.infida.live`) at most once per ``ttl_s`` in the
thread that asks, and serves the last good document in between; a missing ConfigMap means no
allocation; an unreadable document or a failed read keeps the last good one (logged once per
distinct problem). The allocator's ``state`` is not served (it is the controller's).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from qosched.policies.infida.live import ALLOCATION_KEY, AllocationDocumentError, check_allocation_document

__all__ = ["AllocationSource"]

log = logging.getLogger(__name__)


class AllocationSource:
    """The current allocation document of one ConfigMap (see the module docstring)."""

    def __init__(
        self, core: Any, ref: str, *, ttl_s: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        namespace, sep, name = ref.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"allocation ConfigMap {ref!r}: expected NAMESPACE/NAME")
        self.core = core
        self.namespace, self.name = namespace, name
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None
        self._read_at = -float("inf")
        self._problem: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def current(self) -> dict[str, Any] | None:
        """The allocation (without the allocator's state), or None when there is none yet."""
        now = self.clock()
        with self._lock:
            if now - self._read_at >= self.ttl_s:
                self._read_at = now
                self._refresh()
            return self._doc

    def _refresh(self) -> None:
        try:
            cm = self.core.read_namespaced_config_map(self.name, self.namespace, _request_timeout=2)
        except ApiException as exc:
            if exc.status == 404:
                self._doc = None
                return
            self._report(f"read failed: {exc.status} {exc.reason}")
            return
        except Exception as exc:  # a timeout or a refused connection: keep the last good one
            self._report(f"read failed: {type(exc).__name__}")
            return
        raw = (cm.data or {}).get(ALLOCATION_KEY)
        if raw is None:
            self._doc = None
            return
        try:
            doc = check_allocation_document(json.loads(raw))
        except (ValueError, AllocationDocumentError) as exc:
            self._report(f"unreadable: {exc}")
            return
        doc.pop("state", None)
        self._doc = doc
        self._problem = None

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("allocation ConfigMap %s: %s; serving the last good one", self.ref, problem)
            self._problem = problem
