"""The online learner: update rules by hand, state persistence, safe and bounded exploration,
convergence on a stationary problem and re-adaptation after a change (fixed seeds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qosched.policies.online.linucb import FEATURES, LearnerParams, LearnerStateError, LinUCB
from qosched.policies.online.policy import OnlineRouting, SafetyParams
from qosched.policies.requests.routing import ActionView, Objective, Outcome, RequestContext
from qosched.policies.requests.scenario import Action, ServiceDef

X = np.array([1.0, 0.5, 0.2, 0.3])


def test_first_update_is_the_ridge_step_towards_the_prior() -> None:
    """γ = 1, one observation: θ = θ0 + (u − θ0·x) / (λ + x·x) · x  (Sherman–Morrison by hand)."""
    params = LearnerParams(alpha=1.0, gamma=1.0, ridge=2.0, latency_weight=0.5)
    learner = LinUCB(params)
    learner.update("s", "edge/a", X, 0.6)
    theta0 = np.array([1.0, -0.5, 0.0, 0.0])
    # θ0·x = 1 − 0.25 = 0.75; λ + x·x = 2 + 1.38 = 3.38
    expected = theta0 + (0.6 - 0.75) / 3.38 * X
    np.testing.assert_allclose(learner.services["s"].theta()[0], expected, rtol=1e-12)
    mean, width = learner.scores("s", ["edge/a"], X[None, :])
    assert mean[0] == pytest.approx(expected @ X)
    # x·A⁻¹x with A = λI + xxᵀ: (x·x/λ) / (1 + x·x/λ) = 0.69 / 1.69
    assert width[0] == pytest.approx(np.sqrt(0.69 / 1.69))


def test_discount_fades_every_action_towards_the_prior() -> None:
    """γ < 1: A_k ← γA_k + (1−γ)λI, b_k ← γb_k + (1−γ)λθ0 for every action, then the new point."""
    p = LearnerParams(gamma=0.5, ridge=1.0)
    learner = LinUCB(p)
    learner.arms_of("s", ["a", "b"])
    learner.update("s", "a", X, 1.0)
    learner.update("s", "b", X, 0.0)
    sa = learner.services["s"]
    eye, theta0, xx = np.eye(4), p.prior, np.outer(X, X)
    a_after = 0.5 * (eye + xx) + 0.5 * eye  # a's point discounted once
    b_after = eye + xx
    np.testing.assert_allclose(sa.A[0], a_after)
    np.testing.assert_allclose(sa.A[1], b_after)
    np.testing.assert_allclose(sa.b[0], 0.5 * (theta0 + X) + 0.5 * theta0)
    np.testing.assert_allclose(sa.b[1], theta0)
    np.testing.assert_array_equal(sa.n, [1, 1])


def test_state_round_trips_through_json() -> None:
    learner = LinUCB(LearnerParams(alpha=0.2))
    learner.update("s", "edge/a", X, 0.3)
    learner.update("t", "cloud/b", X, -0.2)
    text = json.dumps(learner.to_json())
    back = LinUCB.from_json(json.loads(text))
    assert back.params == learner.params
    for name in ("s", "t"):
        np.testing.assert_allclose(back.services[name].A, learner.services[name].A)
        np.testing.assert_allclose(back.services[name].theta(), learner.services[name].theta())


def _doc() -> dict:
    learner = LinUCB()
    learner.update("s", "edge/a", X, 0.3)
    return learner.to_json()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(kind="other"), "kind 'other'"),
        (lambda d: d.update(version=0), "version 0 is not 1"),
        (lambda d: d.update(features=["bias"]), "features"),
        (lambda d: d["services"]["s"].update(A=[[1.0]]), "shapes do not match"),
        (lambda d: d["services"]["s"].update(A=np.zeros((1, 4, 4)).tolist()), "not positive definite"),
        (lambda d: d["services"]["s"].pop("b"), "unreadable"),
        (lambda d: d.update(params={"alpha": "x"}), "bad params"),
        (lambda d: d.update(services=[]), "'services' is not an object"),
    ],
    ids=["kind", "version", "features", "shape", "not-pd", "missing", "params", "services"],
)
def test_bad_state_is_rejected_with_the_reason(mutate: object, message: str) -> None:
    doc = _doc()
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(LearnerStateError) as err:
        LinUCB.from_json(doc)
    assert message in str(err.value)


def test_bad_state_that_is_not_an_object() -> None:
    with pytest.raises(LearnerStateError, match="not a JSON object"):
        LinUCB.from_json([1, 2])


# ---------------------------------------------------------------------------------------------
# The routing policy on a synthetic bandit

SERVICE = ServiceDef("s", ("a", "b", "c"), slo_ms=100.0)


def _context(i: int, predicted_ms: dict[str, float]) -> RequestContext:
    views = tuple(
        ActionView(Action("edge", v), 0.8, 0.0, 10.0, 100.0, 10.0, p - 10.0, 0.3)
        for v, p in predicted_ms.items()
    )
    return RequestContext(i, float(i), SERVICE, 100.0, views)


def _play(
    policy: OnlineRouting, true_ms: dict[str, float], rng: np.random.Generator, start: int, n: int
) -> list[str]:
    obj = Objective()
    chosen = []
    for i in range(start, start + n):
        ctx = _context(i, dict.fromkeys(true_ms, 50.0))  # the model cannot tell the arms apart
        action = policy.choose(ctx)
        assert action is not None
        resp = max(true_ms[action.variant] + rng.normal(0, 10.0), 1.0)
        policy.observe(
            Outcome(ctx, action, "n", resp, 10.0, 0.0, resp - 10.0, 0.8, 0.0, obj.reward(resp, 100.0, 0.0))
        )
        chosen.append(action.variant)
    return chosen


def test_converges_to_the_best_arm_then_readapts_after_a_change() -> None:
    rng = np.random.default_rng(7)
    policy = OnlineRouting()
    # the best arm is the last one listed (a tie would pick the first)
    first = _play(policy, {"a": 90.0, "b": 60.0, "c": 30.0}, rng, 0, 3000)
    assert first[-500:].count("c") / 500 >= 0.9
    # arm c turns bad (misses the SLO): the learner must move to b
    second = _play(policy, {"a": 90.0, "b": 60.0, "c": 160.0}, rng, 3000, 3000)
    assert second[-500:].count("b") / 500 >= 0.9
    stats = policy.stats()
    assert stats["explored"] <= 0.05 * 6000 + 20
    assert stats["learning_slo_attainment"] > 0.9


def test_unsafe_options_are_never_explored() -> None:
    rng = np.random.default_rng(1)
    policy = OnlineRouting(safety=SafetyParams(explore_rate=1.0, explore_burst=100.0))
    obj = Objective()
    for i in range(300):
        ctx = _context(i, {"a": 60.0, "b": 151.0, "c": 80.0})
        action = policy.choose(ctx)
        assert action is not None
        assert action.variant != "b"  # 151 ms > 1.5 x 100 ms SLO
        resp = 60.0 + rng.normal(0, 5.0)
        policy.observe(
            Outcome(ctx, action, "n", resp, 10.0, 0.0, resp, 0.8, 0.0, obj.reward(resp, 100.0, 0.0))
        )


def test_all_unsafe_takes_the_smallest_prediction() -> None:
    policy = OnlineRouting()
    action = policy.choose(_context(0, {"a": 400.0, "b": 300.0, "c": 500.0}))
    assert action == Action("edge", "b")
    assert policy.stats()["forced"] == 1.0


def test_exploration_is_bounded_by_the_token_bucket() -> None:
    policy = OnlineRouting(safety=SafetyParams(explore_rate=0.01, explore_burst=3.0))
    _play(policy, {"a": 50.0, "b": 50.0, "c": 50.0}, np.random.default_rng(2), 0, 1000)
    assert policy.stats()["explored"] <= 0.01 * 1000 + 3


def test_features_are_clipped() -> None:
    from qosched.policies.online.linucb import feature_vector

    assert feature_vector(float("inf"), 10.0, 0.5, 100.0).tolist() == [1.0, 4.0, 0.1, 0.5]
    assert len(FEATURES) == 4
