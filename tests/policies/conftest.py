"""Fixtures shared by the held-out latency tests (``test_heldout.py``, ``test_noise_floor.py``)."""

from __future__ import annotations

import pytest

from qosched.extender.cli import validate_latency as v
from qosched.policies.latency import heldout as h


@pytest.fixture(scope="module")
def traces() -> tuple[h.CoLocationTrace, ...]:
    """The three Ibis edge-TPU co-location traces (``../shared/data/ibis`` and ``data/ibis``)."""
    return v.held_out_traces(v.ibis_dir())


@pytest.fixture(scope="module")
def profiles(traces: tuple[h.CoLocationTrace, ...]) -> h.ProfileTable:
    """Solo profiles of every model in those traces."""
    return v.held_out_profiles(sorted({m for t in traces for m in t.models}))
