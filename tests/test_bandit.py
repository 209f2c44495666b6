"""Exploration policies with exact propensities, and the delayed-reward join."""

from __future__ import annotations

import pickle
from collections import Counter
from types import SimpleNamespace

import pytest

from streamrec.bandit.policies import ARMS, POLICIES, SlotPolicy
from streamrec.bandit.rewards import PendingList, PendingRewards, RewardLoop
from streamrec.core.recommend import Slot


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


def _click(kind: str, user: str, item: str, rec_id: str | None) -> SimpleNamespace:
    return SimpleNamespace(type=kind, user_id=user, item_id=item, rec_id=rec_id)


def test_reward_loop_settles_one_batch_into_updates_counts_and_log_lines() -> None:
    policy = SlotPolicy("epsilon_greedy", seed=0)
    loop = RewardLoop(
        policy,
        PendingRewards(window_s=60.0, max_pending=10),
        click_reward=1.0,
        purchase_reward=4.0,
        decision_log=True,
    )
    slots = [Slot(0, 1.0, "model", "", 0.9, 0.9), Slot(1, 0.5, "popular", "", 0.1, 0.1)]
    loop.track("r1", "u", 0.0, ["a", "b"], slots)
    loop.track("r2", "v", 0.0, ["a", "b"], slots)
    loop.join(_click("purchase", "u", "b", "r1"))
    loop.join(_click("click", "v", "a", None))  # no rec_id: v's latest list
    loop.join(_click("click", "u", "zzz", "r1"))  # shown nowhere: no credit
    loop.track("r3", "u", 1.0, ["b", "a"], slots)  # supersedes r1: it resolves, not expired
    first = loop.settle()
    assert first.rewarded == {"popular": 1, "model": 1}
    assert first.earned == {"popular": 4.0} and first.expired_slots == 0 and first.pending == 2
    assert [(d["rec_id"], d["item_id"], d["position"], d["reward"]) for d in first.decisions] == [
        ("r1", "a", 1, 0.0),
        ("r1", "b", 2, 4.0),
    ]
    assert policy.policy._counts == {"model": 1, "popular": 1}  # type: ignore[union-attr]
    loop.expire(now=60.5)  # r2's window has passed, r3's has not
    second = loop.settle()
    assert second.rewarded == {} and second.earned == {"model": 1.0}
    assert second.expired_slots == 2 and second.pending == 1
    assert [d["rec_id"] for d in second.decisions] == ["r2", "r2"]
    assert [d["rec_id"] for d in loop.flush()] == ["r3", "r3"]
    assert loop.settle().pending == 0


def test_reward_loop_builds_log_lines_only_when_asked() -> None:
    loop = RewardLoop(
        SlotPolicy("none"), PendingRewards(60.0, 10), click_reward=1.0, purchase_reward=1.0
    )
    loop.track("r1", "u", 0.0, ["a"], [Slot(0, 1.0, "model", "")])
    loop.expire(now=100.0)
    feedback = loop.settle()
    assert feedback.decisions == [] and feedback.expired_slots == 1


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
