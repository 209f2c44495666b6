"""Exploration policies with exact propensities, and the delayed-reward join."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from streamrec.bandit import ARMS, POLICIES, PendingList, PendingRewards, SlotPolicy


@pytest.mark.parametrize("name", ["none", *POLICIES])
def test_distribution_is_a_probability_vector(name: str) -> None:
    policy = SlotPolicy(name, seed=1)
    for round_ in range(30):
        probs = policy.distribution(ARMS, {"bias": 1.0, "history": 1.0})
        assert len(probs) == len(ARMS)
        assert sum(probs) == pytest.approx(1.0)
        assert all(0.0 <= p <= 1.0 for p in probs)
        arm = ARMS[policy.choose(probs)]
        policy.update(
            arm,
            float(arm == "new" and round_ % 2 == 0),
            probs[ARMS.index(arm)],
            {"bias": 1.0, "history": 1.0},
        )


def test_epsilon_greedy_closed_form_and_draws_match_it() -> None:
    policy = SlotPolicy("epsilon_greedy", {"epsilon": 0.3}, seed=7)
    for _ in range(20):
        policy.update("popular", 1.0, 1.0)
        policy.update("model", 0.0, 1.0)
        policy.update("new", 0.0, 1.0)
    probs = policy.distribution(ARMS)
    assert probs == pytest.approx([0.1, 0.8, 0.1])
    draws = Counter(ARMS[policy.choose(probs)] for _ in range(20_000))
    for arm, p in zip(ARMS, probs, strict=True):
        assert draws[arm] / 20_000 == pytest.approx(p, abs=0.015)


def test_exp3_probabilities_follow_weights() -> None:
    policy = SlotPolicy("exp3", {"gamma": 0.2}, seed=0)
    assert policy.distribution(ARMS) == pytest.approx([1 / 3] * 3)
    policy.update("new", 1.0, 1 / 3)
    probs = policy.distribution(ARMS)
    assert probs[2] > probs[0] == pytest.approx(probs[1])


def test_thompson_prefers_the_rewarding_arm_but_keeps_every_arm_possible() -> None:
    policy = SlotPolicy("thompson", seed=3)
    for _ in range(200):
        policy.update("model", 1.0, 0.5)
        policy.update("popular", 0.0, 0.5)
        policy.update("new", 0.0, 0.5)
    probs = policy.distribution(ARMS)
    assert probs[0] > 0.9 and min(probs) > 0.0


def test_exploration_off_always_exploits() -> None:
    assert SlotPolicy("none").distribution(ARMS) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown exploration policy"):
        SlotPolicy("greedy-ish")


def _pending(rec_id: str, user: str, t: float) -> PendingList:
    return PendingList(
        rec_id,
        user,
        t,
        ["a", "b", "c"],
        ["model", "popular", "new"],
        [0.9, 0.05, 0.05],
        [0.9, 0.05, 0.05],
    )


def test_reward_join_by_rec_id_then_by_latest_list() -> None:
    pending = PendingRewards(window_s=60.0, max_pending=10)
    assert pending.add(_pending("r1", "u", 0.0)) == []
    assert pending.reward("u", "b", "r1", 1.0) == "popular"
    assert pending.reward("u", "c", None, 2.0) == "new"  # no rec_id: the user's latest list
    assert pending.reward("u", "zzz", "r1", 1.0) is None  # not in the list
    assert pending.reward("someone-else", "a", "r1", 1.0) is None
    (done,) = pending.expire(now=61.0)
    assert done.expired and done.pending.rewards == [0.0, 1.0, 2.0]
    assert len(pending) == 0


def test_superseded_and_overflowing_lists_are_resolved() -> None:
    pending = PendingRewards(window_s=60.0, max_pending=2)
    pending.add(_pending("r1", "u", 0.0))
    (superseded,) = pending.add(_pending("r2", "u", 1.0))
    assert superseded.pending.rec_id == "r1" and not superseded.expired
    pending.add(_pending("r3", "v", 2.0))
    (evicted,) = pending.add(_pending("r4", "w", 3.0))
    assert evicted.pending.rec_id == "r2"
    assert len(pending) == 2
    restored = pickle.loads(pickle.dumps(pending))
    assert restored.reward("w", "a", "r4", 1.0) == "model"


def test_exp3_weights_stay_finite_over_a_long_run() -> None:
    policy = SlotPolicy("exp3", {"gamma": 0.1}, seed=2)
    for n in range(50_000):
        probs = policy.distribution(ARMS)
        pick = policy.choose(probs)
        policy.update(ARMS[pick], 1.0 if pick == 0 else float(n % 7 == 0), probs[pick])
    probs = policy.distribution(ARMS)
    assert all(0.0 < p < 1.0 for p in probs) and sum(probs) == pytest.approx(1.0)
    assert probs[0] > 0.8


def test_linucb_learns_from_context() -> None:
    policy = SlotPolicy("linucb", seed=0)
    for _ in range(200):
        for context, good in (
            ({"bias": 1.0, "history": 0.0}, "popular"),
            ({"bias": 1.0, "history": 3.0}, "model"),
        ):
            probs = policy.distribution(ARMS, context)
            arm = ARMS[policy.choose(probs)]
            policy.update(arm, float(arm == good), probs[ARMS.index(arm)], context)
    cold = policy.distribution(ARMS, {"bias": 1.0, "history": 0.0})
    warm = policy.distribution(ARMS, {"bias": 1.0, "history": 3.0})
    assert cold[ARMS.index("popular")] == 1.0 and warm[ARMS.index("model")] == 1.0
