"""INFIDA's allocation from its ConfigMap, for ``GET /allocation`` on the extender.

:class:`AllocationSource` reads ``namespace/name`` (key ``allocation.json``, written by ``qosched
controller --allocation``; :mod:`qosched.policies.infida.live`) at most once per ``ttl_s`` in the
thread that asks, and serves the last good document in between; a missing ConfigMap means no
allocation; an unreadable document or a failed read keeps the last good one (logged once per
distinct problem). The allocator's ``state`` is not served (it is the controller's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from qosched.extender.kube.configmap_reader import ConfigMapReader, split_ref
from qosched.policies.infida.live import ALLOCATION_KEY, check_allocation_document

__all__ = ["AllocationSource"]

log = logging.getLogger(__name__)


class AllocationSource:
    """The current allocation document of one ConfigMap (see the module docstring)."""

    def __init__(
        self, core: Any, ref: str, *, ttl_s: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.namespace, self.name = split_ref(ref, "allocation ConfigMap")
        self.core = core
        self.ttl_s = ttl_s
        self.clock = clock
        self._reader = ConfigMapReader(
            core,
            self.namespace,
            self.name,
            ALLOCATION_KEY,
            _served,
            self._report,
            ttl_s=ttl_s,
            clock=clock,
            describe_bad=lambda exc: f"unreadable: {exc}",
            describe_failure=lambda exc: type(exc).__name__,
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def current(self) -> dict[str, Any] | None:
        """The allocation (without the allocator's state), or None when there is none yet."""
        return self._reader.current()

    def _report(self, problem: str) -> None:
        log.warning("allocation ConfigMap %s: %s; serving the last good one", self.ref, problem)


def _served(doc: Any) -> dict[str, Any]:
    """The checked document without the allocator's ``state`` (the controller's, not served)."""
    checked = check_allocation_document(doc)
    checked.pop("state", None)
    return checked
