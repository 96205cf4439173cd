"""The ``qosched`` score as a plain function: s = −w_f·ΔF/1000 + w_s·σ + w_q·φ (−∞ where infeasible)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qosched.policies.placement.qosched.score import base_score, qosched_score

INF = math.inf


@pytest.mark.parametrize(
    ("delta_milli", "slack", "feasible", "weights", "expected"),
    [
        (500.0, 0.2, True, (1.0, 1.0), -0.5 + 0.2),
        (0.0, 0.5, True, (1.0, 2.0), 1.0),
        (2000.0, 0.0, True, (0.5, 1.0), -1.0),
        (300.0, math.nan, True, (1.0, 1.0), -0.3),  # no SLO on the device: slack counts 0
        (300.0, 0.4, False, (1.0, 1.0), -INF),  # infeasible
        (INF, 0.4, True, (1.0, 1.0), -INF),  # no device chosen: ΔF infinite
        (100.0, 0.9, True, (0.0, 0.0), 0.0),
    ],
    ids=[
        "frag-and-slack",
        "slack-weight",
        "frag-weight",
        "nan-slack",
        "infeasible",
        "inf-delta",
        "zero-weights",
    ],
)
def test_base_score_formula(
    delta_milli: float, slack: float, feasible: bool, weights: tuple[float, float], expected: float
) -> None:
    got = base_score(
        np.array([delta_milli]),
        np.array([slack]),
        np.array([feasible]),
        frag_weight=weights[0],
        slack_weight=weights[1],
    )
    assert got[0] == pytest.approx(expected) if math.isfinite(expected) else got[0] == expected


def test_score_adds_the_weighted_fairness_term() -> None:
    base = np.array([0.5, -INF, -0.25])
    fair = np.array([0.2, 0.0, -0.4])
    assert qosched_score(base, fair, fairness_weight=0.5).tolist() == [0.6, -INF, -0.45]
    assert qosched_score(base, fair, fairness_weight=0.0).tolist() == base.tolist()


def test_less_fragmentation_or_more_slack_never_lowers_the_score() -> None:
    delta = np.array([0.0, 100.0, 100.0])
    slack = np.array([0.5, 0.5, 0.9])
    got = base_score(delta, slack, np.ones(3, dtype=bool), frag_weight=1.0, slack_weight=1.0)
    assert got[0] > got[1]
    assert got[2] > got[1]
