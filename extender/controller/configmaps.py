"""The controller loops' persisted documents: one key of a ConfigMap, read and written whole.

The online learner (state, placement hints) and the INFIDA allocation (allocation document,
hints merged into the same ConfigMap) keep their state the same way, so they share this one
reader/writer: a missing ConfigMap reads as ``(None, None)``; a write re-reads the map, keeps its
other keys, and replaces it with the ``resourceVersion`` it read (creates it when missing), so a
concurrent writer's change makes the write fail with 409 instead of being lost.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes.client import CoreV1Api, V1ConfigMap, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from qosched.policies.requests.hints import CONFIGMAP_KEY, HintsError, PlacementHints

log = logging.getLogger(__name__)


class ConfigMapStore:
    """Whole-key reads and optimistic writes of ConfigMaps in one namespace (module docstring)."""

    def __init__(self, core: CoreV1Api, namespace: str, logger: logging.Logger = log) -> None:
        self.core = core
        self.namespace = namespace
        self.log = logger  # the loop's own logger, so its warnings keep their name

    def read(self, name: str) -> tuple[dict[str, str] | None, str | None]:
        """``(data, resourceVersion)`` of the ConfigMap; ``(None, None)`` when it does not exist."""
        try:
            cm: Any = self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        return dict(cm.data or {}), (cm.metadata.resource_version if cm.metadata else None)

    def write(self, name: str, key: str, text: str) -> None:
        """Set ``key`` to ``text``, other keys kept; create when missing, else replace at the version read."""
        data, rv = self.read(name)
        body = V1ConfigMap(
            metadata=V1ObjectMeta(name=name, namespace=self.namespace, resource_version=rv),
            data={**(data or {}), key: text},
        )
        if rv is None:
            self.core.create_namespaced_config_map(self.namespace, body)
        else:
            self.core.replace_namespaced_config_map(name, self.namespace, body)

    def read_hints(self, name: str, who: str) -> PlacementHints | None:
        """The placement hints stored in ``name`` (key ``hints.json``); None when missing or unusable.

        An unusable document is logged (a warning prefixed ``who``) and reads as None: the caller's
        next write replaces it.
        """
        data, _ = self.read(name)
        if not data or CONFIGMAP_KEY not in data:
            return None
        try:
            return PlacementHints.from_json(json.loads(data[CONFIGMAP_KEY]))
        except (ValueError, HintsError) as exc:
            self.log.warning("%s: hints in %s unusable (%s); replacing them", who, name, exc)
            return None
