"""Held-out co-location points: leave-one-pair-out and leave-one-level-out over the Ibis traces.

The maths is ``qosched.policies.latency.heldout`` (``h``); the traces and the bundled profiles
come through the tool (``qosched validate-latency``, ``v``): ../shared/data/ibis and the
repository's data/ibis (see their PROVENANCE.md). Bounds are the errors measured when this was
written plus a margin (docs/latency-models.md, "Held-out co-location pairs").
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qosched.extender.cli import validate_latency as v
from qosched.extender.cli.predict import ColocatedModel, predict_json
from qosched.policies.latency import heldout as h
from qosched.profiles.store import bundled_profiles

TRIPLE = "efficientnet-L+inception_v4+inception_v3"
V3_SSD = "inception_v3+ssd_mobilenet_v2"
V4_MNET = "inception_v4+mobilenet_v2"


@pytest.fixture(scope="module")
def reports(traces: tuple[h.CoLocationTrace, ...]) -> dict[tuple[str, str], h.HeldOutReport]:
    return {(r.protocol, r.method): r for r in v.held_out_reports(traces)}


def test_three_traces_from_shared_and_the_repo(traces: tuple[h.CoLocationTrace, ...]) -> None:
    assert [t.name for t in traces] == [TRIPLE, V3_SSD, V4_MNET]
    assert [len(t.levels) for t in traces] == [5, 5, 5]
    assert sum(len(lv.model_idx) for t in traces for lv in t.levels) == 7942 + 9706 + 16818


def _corrupt(trace: h.CoLocationTrace, seed: int) -> h.CoLocationTrace:
    """The same trace with every latency changed (completions delayed at random)."""
    rng = np.random.default_rng(seed)
    levels = []
    for lv in trace.levels:
        delay_s = rng.uniform(0.0, 0.05, size=lv.end_s.shape)
        levels.append(
            dataclasses.replace(lv, end_s=lv.end_s + delay_s, device_end_s=lv.device_end_s + delay_s)
        )
    return h.CoLocationTrace(tuple(levels))


def _predicted(report: h.HeldOutReport, pair: str) -> np.ndarray:
    return np.array([r.predicted_ms for r in dict(report.pairs)[pair].rows])


@pytest.mark.parametrize("method", ["calibrated", "measured"])
@pytest.mark.parametrize("held", [0, 1, 2], ids=["triple", "v3-ssd", "v4-mnet"])
def test_leave_one_pair_out_never_sees_the_held_out_pair(
    traces: tuple[h.CoLocationTrace, ...], profiles: h.ProfileTable, method: h.HeldOutMethod, held: int
) -> None:
    """Changing every latency of the held-out pair leaves its predictions unchanged; changing a
    training pair's latencies changes them (so the check can fail)."""
    name = traces[held].name
    base = _predicted(h.leave_one_pair_out(traces, method, profiles), name)
    held_bad = [_corrupt(t, 1) if k == held else t for k, t in enumerate(traces)]
    np.testing.assert_array_equal(_predicted(h.leave_one_pair_out(held_bad, method, profiles), name), base)
    train_bad = [_corrupt(t, 2) if k != held else t for k, t in enumerate(traces)]
    assert not np.allclose(_predicted(h.leave_one_pair_out(train_bad, method, profiles), name), base)


def test_training_sets_exclude_the_held_out(
    traces: tuple[h.CoLocationTrace, ...], profiles: h.ProfileTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    seen_levels: list[list[float]] = []
    real_train = h.train

    def spy(method, training, table, **kw):
        seen.append([t.name for t in training])
        seen_levels.append([lv.level for t in training for lv in t.levels])
        return real_train(method, training, table, **kw)

    monkeypatch.setattr(h, "train", spy)
    report = h.leave_one_pair_out(traces, "measured", profiles)
    assert [name for name, _ in report.pairs] == [t.name for t in traces]
    assert seen == [[t.name for t in traces if t.name != held.name] for held in traces]
    seen.clear()
    seen_levels.clear()
    h.leave_one_level_out(traces[:1], "measured", profiles)
    levels = [lv.level for lv in traces[0].levels]
    assert seen == [[TRIPLE]] * len(levels)
    assert seen_levels == [[x for x in levels if x != held] for held in levels]


# measured when written (validate-latency): per pair 2.94 / 3.97 / 3.62 %, all 3.43 %; max 8.9 %
LOPO_PREDICT_BOUNDS = [(TRIPLE, 0.04), (V3_SSD, 0.05), (V4_MNET, 0.05)]


@pytest.mark.parametrize(("pair", "bound"), LOPO_PREDICT_BOUNDS, ids=["triple", "v3-ssd", "v4-mnet"])
def test_predict_per_pair_error_held_out(
    reports: dict[tuple[str, str], h.HeldOutReport], pair: str, bound: float
) -> None:
    report = reports[("leave-one-pair-out", "predict")]
    assert report.pair_mape()[pair] <= bound
    assert max(abs(r.rel_error) for r in dict(report.pairs)[pair].rows) <= 0.11


def test_held_out_summary(reports: dict[tuple[str, str], h.HeldOutReport]) -> None:
    lopo = {m: reports[("leave-one-pair-out", m)].mape for m in h.HELD_OUT_METHODS}
    lolo = {m: reports[("leave-one-level-out", m)].mape for m in h.HELD_OUT_METHODS}
    print("\n" + h.format_summary(list(reports.values())))
    # the 3.7 % is the P-K wait (bernoulli); the Markov wait (predict) improves it
    assert lopo["bernoulli"] == pytest.approx(0.0370, abs=0.0005)
    assert lopo["predict"] <= 0.036  # 3.43 %; the goal 3 % is not met
    assert lopo["predict"] < lopo["bernoulli"] - 0.002
    assert lopo["predict"] < lopo["paper"]  # 3.43 < 3.76
    assert lopo["measured"] <= 0.034  # 3.23 % (3.28 % without the hand-off)
    assert lolo["measured"] <= 0.029  # 2.63 %: within a pair, measured physics meets 3 %
    # fitted global terms do not carry over to another pair: 3.20 % within, 4.50 % across,
    # worse than the physics with nothing fitted
    assert lopo["calibrated"] > lolo["calibrated"] + 0.005
    assert lopo["calibrated"] > lopo["predict"]
    # methods that train nothing give the same figures under both protocols
    for m in ("paper", "bernoulli", "predict"):
        assert lopo[m] == pytest.approx(lolo[m], rel=1e-12)


def test_p95_held_out(traces: tuple[h.CoLocationTrace, ...], profiles: h.ProfileTable) -> None:
    """tail.py's percentile on held-out pairs: 9.07 % at p95 (leave-one-pair-out, predict)."""
    report = h.leave_one_pair_out(traces, "predict", profiles, percentile=95.0)
    assert 0.05 < report.mape <= 0.10
    means = h.leave_one_pair_out(traces, "predict", profiles)
    assert all(t.predicted_ms > m.predicted_ms for t, m in zip(report.rows, means.rows, strict=True))
    lv = traces[2].levels[0]
    latency_ms = (lv.end_s - lv.start_s)[lv.model_idx == 1] * 1000.0
    assert h.measured_latency_ms(lv, "response", 95.0)[1] == pytest.approx(np.percentile(latency_ms, 95.0))


def test_predict_column_is_qosched_predict(
    traces: tuple[h.CoLocationTrace, ...], reports: dict[tuple[str, str], h.HeldOutReport]
) -> None:
    """One source of truth: the held-out ``predict`` figures are what ``qosched predict`` prints."""
    report = reports[("leave-one-pair-out", "predict")]
    for trace in traces:
        rows = dict(report.pairs)[trace.name].rows
        for point in h.operating_points(trace):
            colocated = tuple(
                ColocatedModel(v.profile_key(m), float(r), None)
                for m, r in zip(point.models, point.rate_rps, strict=True)
            )
            out, _ = predict_json("edgetpu", colocated, profiles=bundled_profiles())
            held = [r.predicted_ms for r in rows if r.run == point.label]
            np.testing.assert_allclose([o["predicted_latency_ms"] for o in out], held, rtol=1e-9)


def test_swap_overhead_does_not_depend_on_the_predecessor(traces: tuple[h.CoLocationTrace, ...]) -> None:
    """Oᵢ after each predecessor agrees within 1 ms (measured spread ≤ 0.22 ms)."""
    o = h.swap_by_predecessor(traces[0])
    assert np.isnan(np.diag(o)).all()
    for i in range(3):
        row = o[i][~np.isnan(o[i])]
        assert len(row) == 2
        assert np.ptp(row) <= 1.0
        assert 15.0 <= row.min() <= row.max() <= 22.0


def test_summary_fits_100_columns(reports: dict[tuple[str, str], h.HeldOutReport]) -> None:
    table = h.format_summary(list(reports.values()))
    assert max(len(line) for line in table.splitlines()) <= 100
    assert table.count("all pairs") == 2


@pytest.mark.parametrize(
    ("name", "short"),
    [
        (TRIPLE, "effnet-L+incv4+incv3"),
        (V3_SSD, "incv3+ssd-mnetv2"),
        (V4_MNET, "incv4+mnetv2"),
    ],
    ids=["triple", "v3-ssd", "v4-mnet"],
)
def test_short_names(name: str, short: str) -> None:
    assert h.short_name(name) == short


def test_unknown_method_and_model(traces: tuple[h.CoLocationTrace, ...], profiles: h.ProfileTable) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        h.train("magic", traces, profiles)  # type: ignore[arg-type]
    predictor = h.train("bernoulli", [], {})
    with pytest.raises(ValueError, match="no profile for model"):
        predictor.predict(h.operating_points(traces[0])[0])
