"""What ``create_app`` stores in ``app.extensions["qosched"]``: one typed object.

Routes reach everything of the running extender through :func:`state_of` (settings, the verbs'
runtime, metrics, the Prometheus registry, the profile store, the uploader) instead of several
extension keys and attributes set on the runtime from outside.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.server.metrics import ExtenderMetrics
from qosched.extender.server.runtime import Runtime
from qosched.extender.server.settings import ExtenderSettings
from qosched.extender.server.uploads import Uploader
from qosched.profiles.store import ProfileStore

#: The ``app.extensions`` key.
EXTENSION = "qosched"


@dataclass(frozen=True, slots=True)
class ExtenderState:
    """The running extender's parts (built once by ``create_app``)."""

    settings: ExtenderSettings
    runtime: Runtime
    metrics: ExtenderMetrics
    registry: CollectorRegistry
    profile_store: ProfileStore
    uploader: Uploader


def state_of(app: Flask) -> ExtenderState:
    """The extender's state of ``app`` (``flask.current_app`` inside a request)."""
    state = app.extensions[EXTENSION]
    assert isinstance(state, ExtenderState)
    return state


__all__ = ["EXTENSION", "ExtenderState", "state_of"]
