"""Flask application factory of the extender (gunicorn runs ``qosched.extender.server.app:create_app()``).

Nothing happens at import. ``create_app`` reads settings (``qosched.extender.server.settings``), builds
the profile store, the policy, the cluster cache (a snapshot file, or a live watch started here,
inside the worker process, never before a fork), the binder and the metrics, and stores them as
one typed ``ExtenderState`` (``qosched.extender.server.state``) in ``app.extensions["qosched"]``.
Tests pass their own cache, binder and registry.

Worker model: the cache and its assumptions must be shared by every request, so production runs
ONE gunicorn worker process with threads (``extender/server/gunicorn_conf.py``); more processes would
each hold their own cache and could double-book a device between two concurrent binds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry

from qosched.extender.kube.binding import Binder
from qosched.extender.kube.cache import ClusterCache, StaticCluster
from qosched.extender.kube.class_mapping import class_config
from qosched.extender.kube.class_mapping import class_mapper as mapper_for
from qosched.extender.kube.objects import ClassMapper
from qosched.extender.server.metrics import CacheCollector, ExtenderMetrics
from qosched.extender.server.runtime import Runtime
from qosched.extender.server.settings import ExtenderSettings, load_settings
from qosched.extender.server.state import EXTENSION, ExtenderState, state_of
from qosched.extender.server.uploads import ConfigMapSink, load_configmap_profiles, make_uploader
from qosched.policies.latency.colocation_rule import Thresholds
from qosched.policies.placement.base import PlacementPolicy
from qosched.policies.placement.interference import InterferenceModel
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.policies.registry import make_policy, policy_options
from qosched.profiles.store import ProfileStore

log = logging.getLogger(__name__)


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

    ``overrides`` are settings by key (``CONFIG_FILE`` is the ``--config`` file); an unknown key
    or an inconsistent bind deadline is a ``ConfigError`` here, at start-up. ``api_client`` (a
    ``kubernetes.client.ApiClient``) serves the upload token Secret and the profiles ConfigMap;
    in live mode without a caller-supplied cache it is made from the settings.
    """
    settings = load_settings(overrides=overrides)
    conf = settings.as_mapping()  # for the mapping consumers (watch, uploads, Flask's config)
    app = Flask(__name__)
    app.config.update(conf)
    registry = registry if registry is not None else CollectorRegistry()
    store = profile_store if profile_store is not None else _profile_store(settings)
    live = cache is None and settings.live  # this app watches an API server itself
    if live and api_client is None:
        from qosched.extender.kube.watch import api_client_from

        api_client = api_client_from(conf)
    if settings.profiles_configmap and api_client is not None:
        # Uploaded profiles of earlier runs, before the cache computes any service parameter.
        load_configmap_profiles(store, ConfigMapSink.from_ref(api_client, settings.profiles_configmap))
    policy = policy_from_settings(conf)  # an unknown policy fails before any watch starts
    class_of = class_mapper(conf)  # one mapping for running pods (cache) and requests (runtime)
    if cache is None:
        cache, default_binder = _cluster(settings, store, api_client, class_of)
        binder = binder or default_binder
    if binder is None:
        raise ValueError("create_app: a binder is required with a caller-supplied cache")
    metrics = ExtenderMetrics(registry)
    registry.register(CacheCollector(cache.stats))
    runtime = Runtime(
        cache,
        policy,
        binder,
        observer=metrics,
        class_of=class_of,
        # Only binds that wait on an API server need the gate: a snapshot is bound in memory.
        bind_limit=None if isinstance(cache, StaticCluster) else settings.bind_in_flight_limit,
    )
    runtime.keep_best_only = settings.filter_keeps_best_only
    if live and settings.placement_hints_configmap and api_client is not None:
        from qosched.extender.kube.hints import HintsSource
        from qosched.extender.kube.rest import LeanCoreV1

        runtime.hints = HintsSource(
            LeanCoreV1(api_client),  # one read per TTL; CoreV1Api's import alone costs 2 s
            settings.placement_hints_configmap,
            ttl_s=settings.placement_hints_ttl_s,
            max_age_s=settings.placement_hints_max_age_s,
        )
    if live and settings.allocation_configmap and api_client is not None:
        from qosched.extender.kube.allocation_source import AllocationSource
        from qosched.extender.kube.rest import LeanCoreV1

        runtime.allocation = AllocationSource(LeanCoreV1(api_client), settings.allocation_configmap)
    metrics.follow_binds(lambda: runtime.binds_in_flight, lambda: runtime.binds_outcome_unknown)
    uploader = make_uploader(conf, store, cache, api_client)
    if live:  # every replica hot-reloads what any replica stored in the ConfigMap
        from qosched.extender.kube.watch import WatchSettings

        uploader.follow(WatchSettings.from_config(conf))
    app.extensions[EXTENSION] = ExtenderState(settings, runtime, metrics, registry, store, uploader)
    from qosched.extender.server.routes import api

    app.register_blueprint(api)
    from qosched.extender.server.verbs_wsgi import install

    install(app)  # the scheduler verbs without Flask's per-request machinery
    return app


def class_mapper(settings: Mapping[str, Any]) -> ClassMapper:
    """``class_of(annotation, priorityClassName)`` from the ``CLASSES`` / ``PRIORITY_CLASS_MAP``
    settings (:mod:`qosched.extender.kube.class_mapping`, the one adapter)."""
    return mapper_for(class_config(settings.get("CLASSES"), settings.get("PRIORITY_CLASS_MAP")))


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
    own = settings.get("POLICY_OPTIONS") or {}  # validated by ExtenderSettings
    options = policy_options(name, own).with_interference(InterferenceModel(thresholds=thresholds))
    return make_policy(name, options)


def runtime_of(app: Flask) -> Runtime:
    """The verbs' runtime of ``app`` (``state_of(app).runtime``)."""
    return state_of(app).runtime


def _profile_store(settings: ExtenderSettings) -> ProfileStore:
    extra = settings.profiles_dir
    if extra:
        # Uploads persist here; start empty when it is new. (A read-only mount that is missing
        # stays an error: ProfileStore names the directory.)
        with contextlib.suppress(OSError):
            Path(extra).mkdir(parents=True, exist_ok=True)
    return ProfileStore(directories=[extra] if extra else [])


def _cluster(
    settings: ExtenderSettings, store: ProfileStore, api_client: Any | None, class_of: ClassMapper
) -> tuple[ClusterCache, Binder]:
    """The cache and binder the settings name: a snapshot file, else the live watch (started)."""
    lookup, device_memory = lookup_from_profiles(store.current())
    ttl = settings.assume_ttl_s
    if settings.cluster_file:
        static = StaticCluster.from_file(
            settings.cluster_file, lookup, device_memory, assume_ttl_s=ttl, class_of=class_of
        )
        from qosched.extender.kube.binding import SnapshotBinder

        return static, SnapshotBinder(static)
    from qosched.extender.kube.kube_binder import KubeBinder
    from qosched.extender.kube.watch import LiveCluster

    if api_client is None:
        raise ValueError("create_app: live mode needs a Kubernetes API client")
    live = LiveCluster(
        api_client, lookup, device_memory, settings=settings.as_mapping(), assume_ttl_s=ttl, class_of=class_of
    )
    live.start()
    return live, KubeBinder(api_client, timeout_s=settings.bind_api_timeout_s)
