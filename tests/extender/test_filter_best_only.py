"""``FILTER_KEEPS_BEST_ONLY``: filter keeps the one node the policy chooses.

With the option a scheduler config may drop ``prioritizeVerb``; the node kept must be one that
``prioritize`` scores highest (in its argmax set) and, among those, the policy's own argmax (the
what-if's choice, ``best_candidate``); the other nodes in no failure map, and nothing else changed
(the real rejections; unmanaged, invalid, single-node answers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qosched.extender.server.runtime import Runtime
from qosched.policies.placement.base import best_candidate, make_policy
from tests.extender.extender_support import node, pod
from tests.extender.test_runtime import NAMES, P, runtime


def policy_choice(rt: Runtime, names: list[str]) -> str:
    """The what-if's choice among ``names`` (feasible, known): the policy's raw-score argmax."""
    demand = rt.demand_of(P)
    with rt.cache.reading() as state:
        rows = np.array([state.node_index[n] for n in names], dtype=np.int64)
        evaluation = make_policy("qosched").evaluate(state, demand, rows)
    pos = best_candidate(evaluation)
    assert pos is not None
    return names[pos]


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(NAMES, id="all"),
        pytest.param(["n3", "n1"], id="two-reversed"),
        pytest.param(["n2"], id="one"),
    ],
)
def test_filter_keeps_the_policys_choice_within_prioritizes_argmax_set(
    tmp_path: Path, names: list[str]
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "best").mkdir()
    full, _ = runtime(tmp_path / "full")
    kept_full = full.filter(P, names).kept
    scores = dict(full.prioritize(P, kept_full))
    best = max(scores.values())
    rt, policy = runtime(tmp_path / "best")
    rt.keep_best_only = True
    outcome = rt.filter(P, names)
    assert len(outcome.kept) == 1
    assert scores[outcome.kept[0]] == best
    assert outcome.kept == [policy_choice(full, kept_full)]
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
    scores = dict(full.prioritize(P, kept_full))
    best = max(scores.values())
    assert len(outcome.kept) == 1
    assert scores[outcome.kept[0]] == best
    assert outcome.kept == [policy_choice(full, list(dict.fromkeys(kept_full)))]
    assert len(policy.calls) == 1  # one evaluation: the filter's (the reservation reuses it)
