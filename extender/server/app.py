"""Flask application factory of the extender (gunicorn runs ``qosched.extender.server.app:create_app()``).

Nothing happens at import. ``create_app`` reads settings (``qosched.extender.server.settings``), builds
the profile store, the cluster cache (a snapshot file, or a live watch started here, inside the
worker process, never before a fork), the policy, the binder and the metrics, and stores them
as one ``Runtime`` in ``app.extensions["qosched"]``. Tests pass their own cache, binder and
registry.

Worker model: the cache and its assumptions must be shared by every request, so production runs
ONE gunicorn worker process with threads (``extender/server/gunicorn_conf.py``); more processes would
each hold their own cache and could double-book a device between two concurrent binds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.kube.binding import Binder
from qosched.extender.kube.cache import ClusterCache, StaticCluster
from qosched.extender.server.metrics import CacheCollector, ExtenderMetrics
from qosched.extender.server.runtime import Runtime
from qosched.extender.server.settings import load_config
from qosched.extender.server.uploads import ConfigMapSink, load_configmap_profiles, make_uploader
from qosched.policies.fairness.classes import (
    CLASS_ANNOTATION,
    DEFAULT_CLASS_CONFIG,
    ClassConfig,
    UnknownClassError,
)
from qosched.policies.latency.colocation_rule import Thresholds
from qosched.policies.placement.base import PlacementPolicy
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.registry import make_policy, policy_options
from qosched.policies.types import DemandError
from qosched.profiles.store import ProfileStore

log = logging.getLogger(__name__)

EXTENSION = "qosched"


def create_app(
    overrides: Mapping[str, Any] | None = None,
    *,
    cache: ClusterCache | None = None,
    binder: Binder | None = None,
    registry: CollectorRegistry | None = None,
    profile_store: ProfileStore | None = None,
    api_client: Any | None = None,
) -> Flask:
    """Build the extender app; see the module docstring.

    ``api_client`` (a ``kubernetes.client.ApiClient``) serves the upload token Secret and the
    profiles ConfigMap; in live mode without a caller-supplied cache it is made from the settings.
    """
    app = Flask(__name__)
    settings = load_config((overrides or {}).get("CONFIG_FILE"), overrides=overrides)
    app.config.update(settings)
    app.config["MAX_CONTENT_LENGTH"] = int(settings["MAX_CONTENT_LENGTH"])
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ExtenderMetrics(registry)
    store = profile_store if profile_store is not None else _profile_store(settings)
    live = cache is None and not settings.get("CLUSTER_FILE")
    if live and api_client is None:
        from qosched.extender.kube.watch import api_client_from

        api_client = api_client_from(settings)
    if settings.get("PROFILES_CONFIGMAP") and api_client is not None:
        # Uploaded profiles of earlier runs, before the cache computes any service parameter.
        load_configmap_profiles(
            store, ConfigMapSink.from_ref(api_client, str(settings["PROFILES_CONFIGMAP"]))
        )
    lookup, device_memory = lookup_from_profiles(store.current())
    if cache is None:
        cache, default_binder = _cluster(settings, lookup, device_memory, api_client)
        binder = binder or default_binder
    if binder is None:
        raise ValueError("create_app: a binder is required with a caller-supplied cache")
    registry.register(CacheCollector(cache.stats))
    policy = policy_from_settings(settings)
    runtime = Runtime(cache, policy, binder, observer=metrics, class_of=class_mapper(settings))
    runtime.profile_store = store  # type: ignore[attr-defined]
    runtime.settings = settings  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = runtime
    app.extensions["qosched.registry"] = registry
    app.extensions["qosched.metrics"] = metrics
    uploader = make_uploader(settings, store, cache, api_client)
    app.extensions["qosched.uploader"] = uploader
    if live:  # every replica hot-reloads what any replica stored in the ConfigMap
        from qosched.extender.kube.watch import WatchSettings

        uploader.follow(WatchSettings.from_config(settings))
    from qosched.extender.server.routes import api

    app.register_blueprint(api)
    return app


def class_mapper(settings: Mapping[str, Any]) -> Callable[[str | None, str | None], str]:
    """``class_of(annotation, priorityClassName)`` from the ``CLASSES`` / ``PRIORITY_CLASS_MAP`` settings.

    ``CLASSES`` takes the mapping form of ``ClassConfig.from_mapping`` (classes with their QoS
    targets, default class, priority-class map and keywords); ``PRIORITY_CLASS_MAP`` adds exact
    ``priorityClassName -> class`` entries on top. An annotation naming an unknown class is an
    invalid request (the pod is rejected with the reason), not an internal error.
    """
    data: dict[str, Any] = dict(settings.get("CLASSES") or {})
    if settings.get("PRIORITY_CLASS_MAP"):
        data["priority_class_map"] = {
            **dict(data.get("priority_class_map") or {}),
            **settings["PRIORITY_CLASS_MAP"],
        }
    config = ClassConfig.from_mapping(data) if data else DEFAULT_CLASS_CONFIG

    def class_of(annotation: str | None, priority_class: str | None) -> str:
        try:
            return config.resolve({CLASS_ANNOTATION: annotation} if annotation else None, priority_class).name
        except UnknownClassError as err:
            raise DemandError(str(err)) from None

    return class_of


def policy_from_settings(settings: Mapping[str, Any]) -> PlacementPolicy:
    """The configured policy, judging placements with the configured latency-model thresholds.

    Every policy's options say where its interference model goes (``with_interference``), so
    the thresholds apply to any policy of the registry without naming it here.
    """
    thresholds = Thresholds(
        memory_frac=float(settings["THRESHOLD_MEMORY_FRAC"]),
        utilization=float(settings["THRESHOLD_UTILIZATION"]),
        frontend_utilization=float(settings["THRESHOLD_FRONTEND_UTILIZATION"]),
    )
    name = str(settings["POLICY"])
    options = policy_options(name).with_interference(InterferenceModel(thresholds=thresholds))
    return make_policy(name, options)


def runtime_of(app: Flask) -> Runtime:
    rt = app.extensions[EXTENSION]
    assert isinstance(rt, Runtime)
    return rt


def _profile_store(settings: Mapping[str, Any]) -> ProfileStore:
    extra = settings.get("PROFILES_DIR")
    if extra:
        # Uploads persist here; start empty when it is new. (A read-only mount that is missing
        # stays an error: ProfileStore names the directory.)
        with contextlib.suppress(OSError):
            Path(extra).mkdir(parents=True, exist_ok=True)
    return ProfileStore(directories=[extra] if extra else [])


def _cluster(
    settings: Mapping[str, Any], lookup: Any, device_memory: Any, api_client: Any | None
) -> tuple[ClusterCache, Binder]:
    ttl = float(settings["ASSUME_TTL_S"])
    if settings.get("CLUSTER_FILE"):
        static = StaticCluster.from_file(settings["CLUSTER_FILE"], lookup, device_memory, assume_ttl_s=ttl)
        from qosched.extender.kube.binding import SnapshotBinder

        return static, SnapshotBinder(static)
    from qosched.extender.kube.kube_binder import KubeBinder
    from qosched.extender.kube.watch import LiveCluster

    if api_client is None:
        raise ValueError("create_app: live mode needs a Kubernetes API client")
    live = LiveCluster(api_client, lookup, device_memory, settings=settings, assume_ttl_s=ttl)
    live.start()
    return live, KubeBinder(api_client, timeout_s=float(settings["BIND_TIMEOUT_S"]))
