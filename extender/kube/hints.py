"""Placement hints from a ConfigMap (written by ``qosched controller --online`` or INFIDA), for the extender.

:class:`HintsSource` reads ``namespace/name`` (key ``hints.json``, the
:class:`~qosched.policies.requests.hints.PlacementHints` document) at most once per ``ttl_s``, in the
thread that asks (a scheduling verb), so no extra thread and no watch; between reads the last good
document is served. A missing ConfigMap means no hints; an unreadable document or a failed read
keeps the last good hints and logs once per distinct problem; hints older than ``max_age_s`` are
not served (a stopped controller must not steer placement for ever).

How the extender uses them (:mod:`qosched.extender.server.runtime`):

* ``prioritize`` adds :func:`~qosched.policies.requests.hints.tier_bonus` (up to 3 of the 10
  points, by the hinted tier's share of the service's traffic) to nodes of the hinted tier, capped
  at 10;
* every verb sees the pod's variants with the hinted one first when the pod offers it, so the
  placement policy picks it wherever it is feasible and bind writes it into ``qosched.io/variant``
  (:func:`prefer_hinted_variant`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from qosched.extender.kube.objects import pod_service
from qosched.policies.requests.hints import CONFIGMAP_KEY, HintsError, PlacementHints, hinted_variant
from qosched.policies.types import PodDemand

__all__ = ["HintsSource", "prefer_hinted_variant"]

log = logging.getLogger(__name__)


class HintsSource:
    """The current placement hints of one ConfigMap (see the module docstring)."""

    def __init__(
        self,
        core: Any,
        ref: str,
        *,
        ttl_s: float = 10.0,
        max_age_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        namespace, sep, name = ref.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"placement hints ConfigMap {ref!r}: expected NAMESPACE/NAME")
        self.core = core
        self.namespace, self.name = namespace, name
        self.ttl_s = ttl_s
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._hints: PlacementHints | None = None
        self._read_at = -float("inf")
        self._last_problem: str | None = None

    def current(self) -> PlacementHints | None:
        """The hints to use now (None: none, or too old)."""
        now = self.clock()
        with self._lock:
            if now - self._read_at >= self.ttl_s:
                self._read_at = now
                self._refresh()
            hints = self._hints
        if hints is None or not hints.fresh(now, self.max_age_s):
            return None
        return hints

    def _refresh(self) -> None:
        try:
            cm = self.core.read_namespaced_config_map(self.name, self.namespace, _request_timeout=2)
        except ApiException as exc:
            if exc.status == 404:
                self._hints = None
                return
            self._problem(f"read failed: {exc.status} {exc.reason}")
            return
        except Exception as exc:  # a network error must not fail a scheduling verb
            self._problem(f"read failed: {exc}")
            return
        raw = (cm.data or {}).get(CONFIGMAP_KEY)
        if raw is None:
            self._hints = None
            return
        try:
            self._hints = PlacementHints.from_json(json.loads(raw))
            self._last_problem = None
        except (ValueError, HintsError) as exc:
            self._problem(str(exc))

    def _problem(self, text: str) -> None:
        if text != self._last_problem:
            log.error(
                "placement hints %s/%s: %s (keeping the last good hints)", self.namespace, self.name, text
            )
            self._last_problem = text


def prefer_hinted_variant(
    demand: PodDemand, pod: Mapping[str, Any], hints: PlacementHints | None
) -> PodDemand:
    """The demand with the hinted variant first when the pod offers several and the hint names one of them."""
    if hints is None or len(demand.variants) < 2:
        return demand
    variant = hinted_variant(hints, pod_service(pod), demand.variants)
    if variant is None or demand.variants[0] == variant:
        return demand
    return dataclasses.replace(demand, variants=(variant, *(v for v in demand.variants if v != variant)))
