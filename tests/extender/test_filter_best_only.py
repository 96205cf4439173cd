"""``FILTER_KEEPS_BEST_ONLY``: filter keeps exactly the nodes prioritize would score highest.

With the option a scheduler config may drop ``prioritizeVerb``; the choice among qosched's nodes
must then be the one ``prioritize`` would have made (its argmax set), with the rest reported in
``FailedNodes`` and nothing else changed (unmanaged, invalid, single-node answers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.extender.extender_support import pod
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
    assert set(outcome.failed) >= {n for n in kept_full if scores[n] < best}
    assert all("better qosched score" in outcome.failed[n] for n in kept_full if scores[n] < best)
    assert policy.calls == [len(names)]  # the filter's evaluation is reused for the scores


def test_unmanaged_pods_pass_untouched(tmp_path: Path) -> None:
    rt, _ = runtime(tmp_path)
    rt.keep_best_only = True
    plain = pod("plain")
    plain["metadata"]["annotations"] = {}
    assert rt.filter(plain, NAMES).kept == NAMES
