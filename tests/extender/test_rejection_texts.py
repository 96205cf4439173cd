"""Property: one filter answer gives every node failing with a reason code the same text, one text
per code, with the numbers of the node closest to fitting (issue 16; docs/extender.md).

kube-scheduler counts nodes per identical message (``FitError.Error``), so a text per node would
turn its event into one entry per node.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosched.extender.kube.cache import StaticCluster
from qosched.extender.server.runtime import Runtime
from qosched.policies.placement.base import make_policy
from qosched.policies.profile_lookup import lookup_from_profiles
from qosched.profiles.store import bundled_profiles
from tests.extender.extender_support import RecordingBinder, node, pod, write_snapshot

LOOKUP, DEVICE_MEMORY = lookup_from_profiles(bundled_profiles())

# A node: (CPU cores free in milli, accelerator or None, GPUs).
NODES = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=40).map(lambda c: c * 100),
        st.sampled_from(["nvidia-t4", "nvidia-t4", "edgetpu", None]),
        st.integers(min_value=0, max_value=2),
    ),
    min_size=1,
    max_size=12,
)


def _filter(nodes: list[tuple[int, str | None, int]], cpu_milli: int) -> tuple[Any, dict[str, int]]:
    objects = [node(f"n{i}", accel, gpus=gpus, cpu=f"{cpu}m") for i, (cpu, accel, gpus) in enumerate(nodes)]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_snapshot(Path(tmp) / "c.json", objects)
        cache = StaticCluster.from_file(path, LOOKUP, DEVICE_MEMORY)
    rt = Runtime(cache, make_policy("qosched"), RecordingBinder())
    names = [f"n{i}" for i in range(len(nodes))] + ["ghost"]
    outcome = rt.filter(pod("p", cpu=f"{cpu_milli}m", slo_ms=1000, rate_rps=1), names)
    return outcome, {f"n{i}": cpu for i, (cpu, _, _) in enumerate(nodes)}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=NODES, cpu_milli=st.integers(min_value=100, max_value=4000))
def test_one_text_per_code_and_the_closest_cpu_node(
    nodes: list[tuple[int, str | None, int]], cpu_milli: int
) -> None:
    outcome, free = _filter(nodes, cpu_milli)
    rejected = {**outcome.failed, **outcome.unresolvable}
    assert set(rejected) | set(outcome.kept) == {*free, "ghost"}
    heads: dict[str, set[str]] = {}
    for text in rejected.values():
        head = text.split(" (closest: ", 1)[0].split(" (e.g. ", 1)[0]
        heads.setdefault(head, set()).add(text)
    assert all(len(texts) == 1 for texts in heads.values()), heads  # one text per code
    cpu_nodes = [n for n, text in rejected.items() if "not enough free CPU" in text]
    if cpu_nodes:
        (text,) = {rejected[n] for n in cpu_nodes}
        best = max(free[n] for n in cpu_nodes)
        closest = next(n for n in cpu_nodes if free[n] == best)  # the first of the largest
        assert text == (
            f"qosched (qosched): not enough free CPU (closest: {closest}: needs {cpu_milli}m CPU, has {best}m free)"
        )


def test_a_pod_no_node_fits_is_logged_with_the_texts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="qosched.extender.server.runtime"):
        outcome, _ = _filter([(500, "nvidia-t4", 1), (800, "nvidia-t4", 1)], 1000)
    assert outcome.kept == []
    lines = [r.getMessage() for r in caplog.records if r.name == "qosched.extender.server.runtime"]
    assert lines == [
        "filter pod=default/p: no node fits: "
        "2x qosched (qosched): not enough free CPU (closest: n1: needs 1000m CPU, has 800m free); "
        "1x qosched (qosched): node is not in the extender's cache (e.g. ghost)"
    ]
