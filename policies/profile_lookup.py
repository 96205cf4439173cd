"""Adapters from a profile set (``qosched.profiles``) to the lookups ``ClusterState`` takes.

``ClusterState`` does not import the profile package: it takes two plain callables,
``lookup(accelerator, model) -> ServiceParams | None`` and ``device_memory(accelerator) -> MiB``
(see :mod:`qosched.policies.state`). This module builds both from a ``ProfileSet`` so that the
extender and the what-if simulator read the same numbers, with a dict cache in front (the
lookups run inside decision code; a profile set is immutable, so a cache per set never goes
stale — a new set, after ``PUT /profiles/...``, gets new lookups and ``ClusterState.rebuilt``).

Field mapping (profile file format v1 → :class:`~qosched.policies.state.ServiceParams`):

================================  =========================================
``service_time.mean_ms``          ``service_ms``        (S [ms])
``service_time.second_moment_ms2`` ``second_moment_ms2`` (E[S²] [ms²])
``swap_overhead_ms``              ``swap_ms``           (O [ms], edge TPU)
``memory_mib``                    ``memory_mib``
``frontend_service_time_ms``      ``frontend_ms``
``accuracy``                      ``accuracy``
``contention_overhead_frac``      ``overhead_frac``
``device.memory_mib``             device memory of the accelerator [MiB]
================================  =========================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from qosched.policies.state import DeviceMemoryLookup, ServiceLookup, ServiceParams

__all__ = ["lookup_from_profiles", "service_params_from_profile"]


class _ServiceTimeLike(Protocol):
    @property
    def mean_ms(self) -> float: ...
    @property
    def second_moment_ms2(self) -> float: ...


class _DeviceLike(Protocol):
    @property
    def memory_mib(self) -> float: ...


class _ProfileLike(Protocol):
    """The fields of ``qosched.profiles.schema.Profile`` read here (structural, no import)."""

    @property
    def accelerator(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def service_time(self) -> _ServiceTimeLike: ...
    @property
    def swap_overhead_ms(self) -> float: ...
    @property
    def memory_mib(self) -> float: ...
    @property
    def frontend_service_time_ms(self) -> float: ...
    @property
    def accuracy(self) -> float | None: ...
    @property
    def device(self) -> _DeviceLike | None: ...
    @property
    def contention_overhead_frac(self) -> float: ...


class _ProfileSetLike(Protocol):
    def find(self, accelerator: str, model: str) -> _ProfileLike | None: ...
    def profiles(self) -> Iterable[_ProfileLike]: ...


def service_params_from_profile(profile: _ProfileLike) -> ServiceParams:
    """The latency-model parameters of one profile (see the module docstring for the mapping)."""
    st = profile.service_time
    return ServiceParams(
        service_ms=float(st.mean_ms),
        second_moment_ms2=float(st.second_moment_ms2),
        swap_ms=float(profile.swap_overhead_ms),
        memory_mib=float(profile.memory_mib),
        frontend_ms=float(profile.frontend_service_time_ms),
        accuracy=None if profile.accuracy is None else float(profile.accuracy),
        overhead_frac=float(getattr(profile, "contention_overhead_frac", 0.0)),
    )


def lookup_from_profiles(profile_set: _ProfileSetLike) -> tuple[ServiceLookup, DeviceMemoryLookup]:
    """Build ``(lookup, device_memory)`` for :class:`~qosched.policies.state.ClusterState`.

    Parameters
    ----------
    profile_set : ProfileSet
        E.g. ``qosched.profiles.store.bundled_profiles()``; anything with
        ``find(accelerator, model) -> Profile | None`` and ``profiles()``.

    Returns
    -------
    lookup : callable
        ``lookup(accelerator, model)`` → :class:`ServiceParams`, or None when the set has no
        profile for the pair (the node is then filtered out with ``Reason.NO_PROFILE``).
    device_memory : callable
        ``device_memory(accelerator)`` → memory of one device [MiB]. When several profiles of
        the accelerator state it and disagree, the smallest wins (a feasibility check must not
        assume memory that one measurement did not see); ``inf`` when no profile states it.

    Notes
    -----
    Both callables memoise in a dict (absent answers too); the profile set is immutable.
    """
    params_cache: dict[tuple[str, str], ServiceParams | None] = {}
    memory_by_accelerator: dict[str, float] = {}
    for profile in profile_set.profiles():
        if profile.device is None:
            continue
        mem = float(profile.device.memory_mib)
        if math.isfinite(mem) and mem > 0:
            old = memory_by_accelerator.get(profile.accelerator, math.inf)
            memory_by_accelerator[profile.accelerator] = min(old, mem)

    def lookup(accelerator: str, model: str) -> ServiceParams | None:
        key = (accelerator, model)
        try:
            return params_cache[key]
        except KeyError:
            pass
        profile = profile_set.find(accelerator, model)
        params = None if profile is None else service_params_from_profile(profile)
        params_cache[key] = params
        return params

    def device_memory(accelerator: str) -> float:
        return memory_by_accelerator.get(accelerator, math.inf)

    return lookup, device_memory
