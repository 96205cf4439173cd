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
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from qosched.extender.kube.configmap_reader import ConfigMapReader, split_ref
from qosched.extender.kube.objects import pod_service
from qosched.policies.requests.hints import CONFIGMAP_KEY, PlacementHints, hinted_variant
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
        self.namespace, self.name = split_ref(ref, "placement hints ConfigMap")
        self.core = core
        self.ttl_s = ttl_s
        self.max_age_s = max_age_s
        self.clock = clock
        self._reader = ConfigMapReader(
            core,
            self.namespace,
            self.name,
            CONFIGMAP_KEY,
            PlacementHints.from_json,
            self._problem,
            ttl_s=ttl_s,
            clock=clock,
        )

    def current(self) -> PlacementHints | None:
        """The hints to use now (None: none, or too old)."""
        now = self.clock()
        hints = self._reader.current(now)
        if hints is None or not hints.fresh(now, self.max_age_s):
            return None
        return hints

    def _problem(self, text: str) -> None:
        log.error("placement hints %s/%s: %s (keeping the last good hints)", self.namespace, self.name, text)


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
