"""The ``qosched`` score as a plain function: s = w_f·f(ΔF) + w_s·σ + w_b·β + w_q·φ (−∞ where
infeasible), f(ΔF) = (⌊100·sigmoid(−ΔF/1000)⌋ − 50)/25, FGD's integer score in GPUs (issue 18:
it was −ΔF/1000; the cases below were recomputed with f, same intent)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qosched.policies.placement.qosched.score import balance, base_score, frag_term, qosched_score

INF = math.inf


@pytest.mark.parametrize(
    ("delta_milli", "slack", "feasible", "weights", "expected"),
    [
        (500.0, 0.2, True, (1.0, 1.0), -0.52 + 0.2),  # ⌊100·sigmoid(−0.5)⌋ = 37 → −13/25
        (0.0, 0.5, True, (1.0, 2.0), 1.0),
        (2000.0, 0.0, True, (0.5, 1.0), -0.78),  # ⌊11.9⌋ = 11 → −39/25, × 0.5
        (300.0, math.nan, True, (1.0, 1.0), -0.32),  # no SLO on the device: slack counts 0; ⌊42.6⌋
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


def test_frag_term_ties_below_one_integer_step() -> None:
    # One step of FGD's integer score is about 40 milli-GPU near ΔF = 0 (⌊·⌋ of 100·sigmoid):
    # −39..0 all score 50, 1..39 all 49, 41 scores 48.
    got = frag_term(np.array([-39.0, 0.0, 1.0, 39.0, 41.0]))
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.04, -0.04, -0.08])


def test_balance_term_is_weighted_and_breaks_ties() -> None:
    beta = balance(np.array([0.5, 0.1]), np.array([0.5, 0.9]), np.array([0.5, 0.5]))
    assert beta.tolist() == pytest.approx([1.0, 0.2])
    got = base_score(
        np.zeros(2),
        np.zeros(2),
        np.ones(2, dtype=bool),
        frag_weight=1.0,
        slack_weight=1.0,
        balance_frac=beta,
        balance_weight=0.4,
    )
    assert got.tolist() == pytest.approx([0.4, 0.08])
