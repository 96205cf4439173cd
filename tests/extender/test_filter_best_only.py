"""``FILTER_KEEPS_BEST_ONLY``: filter keeps exactly the nodes prioritize would score highest.

With the option a scheduler config may drop ``prioritizeVerb``; the choice among qosched's nodes
must then be the one ``prioritize`` would have made (its argmax set), the outscored nodes in no
failure map, and nothing else changed (the real rejections; unmanaged, invalid, single-node answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.extender.extender_support import node, pod
from tests.extender.test_runtime import NAMES, P, runtime


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(NAMES, id="all"),
        pytest.param(["n3", "n1"], id="two-reversed"),
        pytest.param(["n2"], id="one"),
    ],
)
def test_filter_keeps_the_argmax_set_of_prioritize(tmp_path: Path, names: list[str]) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "best").mkdir()
    full, _ = runtime(tmp_path / "full")
    kept_full = full.filter(P, names).kept
    scores = dict(full.prioritize(P, kept_full))
    best = max(scores.values())
    rt, policy = runtime(tmp_path / "best")
    rt.keep_best_only = True
    outcome = rt.filter(P, names)
    assert outcome.kept == [n for n in kept_full if scores[n] == best]
    # The outscored nodes are in no map (kube-scheduler reads failure statuses only when no node
    # is left); the real rejections are the full protocol's, unchanged.
    outscored = {n for n in kept_full if scores[n] < best}
    assert not outscored & (set(outcome.failed) | set(outcome.unresolvable))
    full_outcome = full.filter(P, names)
    assert (outcome.failed, outcome.unresolvable) == (full_outcome.failed, full_outcome.unresolvable)
    assert policy.calls == [len(names)]  # the filter's evaluation is reused for the scores


def test_unmanaged_pods_pass_untouched(tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    rt.keep_best_only = True
    plain = pod("plain")
    plain["metadata"]["annotations"] = {}
    assert rt.filter(plain, NAMES).kept == NAMES


def _mixed_cluster() -> list[dict[str, Any]]:
    """Nodes that fit with different loads, one too small for the pod (CPU), one without GPU."""
    objects = [node(n, cpu="8") for n in NAMES]
    for i, n in enumerate(NAMES):
        objects += [pod(f"{n}-{k}", node_name=n, annotations={"qosched.io/device": "0"}) for k in range(i)]
    return [*objects, node("tiny", cpu="50m"), node("cpu-only", accelerator=None, gpus=0)]


CANDIDATES = [*NAMES, "tiny", "cpu-only", "ghost"]  # "ghost": a name the cache does not know


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from(CANDIDATES), min_size=1, max_size=9))
def test_best_only_matches_prioritize_with_unknown_duplicate_and_infeasible_names(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    """The kept set is prioritize's argmax set over the full protocol's kept names, whatever mix of
    unknown, repeated and infeasible names the scheduler sends (the filter's evaluation covers the
    known names only, so its positions differ from the names')."""
    full, _ = runtime(tmp_path_factory.mktemp("full"), _mixed_cluster())
    full_outcome = full.filter(P, names)
    kept_full = full_outcome.kept
    rt, policy = runtime(tmp_path_factory.mktemp("best"), _mixed_cluster())
    rt.keep_best_only = True
    outcome = rt.filter(P, names)
    assert (outcome.failed, outcome.unresolvable) == (full_outcome.failed, full_outcome.unresolvable)
    if len(kept_full) <= 1:
        assert outcome.kept == kept_full
        return
    scores = full.prioritize(P, kept_full)
    best = max(s for _, s in scores)
    assert outcome.kept == [n for n, s in scores if s == best]
    assert len(policy.calls) == 1  # one evaluation: the filter's
