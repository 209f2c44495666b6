"""Delayed rewards: lists awaiting feedback, the join of a click to the slot it answers, and the
resolution of each list into policy updates and decision-log lines.

A published list stays *pending* until it is superseded by a newer list for the same user, or its
reward window (event time) passes. A click or purchase that names the list's `rec_id` — or,
failing that, matches an item of the user's latest pending list — rewards that slot. On
resolution every slot updates its source's arm (reward 0 if nothing happened) and may become one
decision-log line (see `streamrec.bandit.offpolicy.logs.LoggedDecision`). Pending lists are bounded
in number and are part of the checkpoint.

`RewardLoop` is the one object the pipeline drives, so its loop reads as: join each event's reward
→ learn → refresh (each new list is tracked) → settle. It is separate from `policies.py` because
the books (which list, which slot, when) change for other reasons than how a source is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamrec.bandit.policies import ARMS, SlotPolicy

__all__ = [
    "Feedback",
    "FeedbackEvent",
    "PendingList",
    "PendingRewards",
    "Resolution",
    "RewardLoop",
    "ShownSlot",
]

_POLICY_ARMS = frozenset(ARMS)


@dataclass
class PendingList:
    rec_id: str
    user_id: str
    generated_at: float  # event time (seconds) of the newest event learned when it was made
    items: list[str]
    sources: list[str]
    propensities: list[float]
    source_propensities: list[float]
    context: dict[str, float] | None = None
    rewards: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rewards:
            self.rewards = [0.0] * len(self.items)


@dataclass
class Resolution:
    """What became of one list: its slots' rewards; returned so the caller can log and count."""

    pending: PendingList
    expired: bool  # True: reward window passed or evicted; False: superseded


class PendingRewards:
    """Lists awaiting feedback, oldest first; bounded; joined to clicks and purchases."""

    def __init__(self, window_s: float, max_pending: int) -> None:
        self.window_s = window_s
        self.max_pending = max_pending
        self.by_rec_id: dict[str, PendingList] = {}
        self.latest_by_user: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.by_rec_id)

    def add(self, pending: PendingList) -> list[Resolution]:
        """Track a new list; resolves the user's previous list and any overflow."""
        done = []
        previous = self.latest_by_user.get(pending.user_id)
        if previous is not None and previous in self.by_rec_id:
            done.append(Resolution(self._pop(previous), expired=False))
        self.by_rec_id[pending.rec_id] = pending
        self.latest_by_user[pending.user_id] = pending.rec_id
        while len(self.by_rec_id) > self.max_pending:
            done.append(Resolution(self._pop(next(iter(self.by_rec_id))), expired=True))
        return done

    def reward(self, user_id: str, item_id: str, rec_id: str | None, value: float) -> str | None:
        """Credit `value` to the slot showing `item_id`; returns the credited source, if any."""
        target = self.by_rec_id.get(rec_id) if rec_id else None
        if target is None:
            latest = self.latest_by_user.get(user_id)
            target = self.by_rec_id.get(latest) if latest else None
        if target is None or target.user_id != user_id or item_id not in target.items:
            return None
        slot = target.items.index(item_id)
        target.rewards[slot] = max(target.rewards[slot], value)
        return target.sources[slot]

    def expire(self, now: float) -> list[Resolution]:
        """Resolve lists whose reward window (event time) has passed."""
        done = []
        while self.by_rec_id:
            oldest = next(iter(self.by_rec_id.values()))
            if oldest.generated_at + self.window_s > now:
                break
            done.append(Resolution(self._pop(oldest.rec_id), expired=True))
        return done

    def _pop(self, rec_id: str) -> PendingList:
        pending = self.by_rec_id.pop(rec_id)
        if self.latest_by_user.get(pending.user_id) == rec_id:
            del self.latest_by_user[pending.user_id]
        return pending


class ShownSlot(Protocol):
    """What the books need of one shown slot (`streamrec.core.recommend.Slot` is one)."""

    @property
    def source(self) -> str: ...
    @property
    def propensity(self) -> float: ...
    @property
    def source_propensity(self) -> float: ...


class FeedbackEvent(Protocol):
    """What the join needs of a click or purchase (`streamrec.contract.events` models are ones)."""

    @property
    def type(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def rec_id(self) -> str | None: ...


@dataclass
class Feedback:
    """One batch of bookkeeping, per source, for metrics and the decision log."""

    rewarded: dict[str, int]  # clicks and purchases joined to a shown slot
    earned: dict[str, float]  # reward of the resolved slots (unscaled)
    expired_slots: int  # slots of lists resolved because their window passed or they overflowed
    pending: int  # lists still awaiting feedback
    decisions: list[dict[str, Any]]  # one line per resolved slot, if the loop logs decisions


class RewardLoop:
    """Joins feedback to the lists it answers; turns resolved lists into policy updates.

    Its state is the policy and the pending lists (both in the checkpoint); what it gathers in
    between is one batch's: `join` each click or purchase, `expire` at the batch's event time,
    `track` each published list, then `settle` teaches the policy and returns the batch's
    `Feedback`. Rewards are scaled into [0, 1] for the policy (Exp3 and the Beta posteriors
    assume it); the decision log and `Feedback.earned` keep them as configured.

    Building one dict per resolved slot costs about as much as learning an event per list, so
    decision-log lines are made only with `decision_log=True`.
    """

    def __init__(
        self,
        policy: SlotPolicy,
        pending: PendingRewards,
        *,
        click_reward: float,
        purchase_reward: float,
        decision_log: bool = False,
    ) -> None:
        self.policy = policy
        self.pending = pending
        self.click_reward = click_reward
        self.purchase_reward = purchase_reward
        self.decision_log = decision_log
        self._scale = max(click_reward, purchase_reward, 1e-12)
        self._rewarded: dict[str, int] = {}
        self._resolved: list[Resolution] = []

    def join(self, event: FeedbackEvent) -> None:
        """Credit a click or purchase to the slot of the list it answers, if any showed it."""
        value = self.purchase_reward if event.type == "purchase" else self.click_reward
        source = self.pending.reward(event.user_id, event.item_id, event.rec_id, value)
        if source is not None:
            self._rewarded[source] = self._rewarded.get(source, 0) + 1

    def expire(self, now: float) -> None:
        """Resolve the lists whose reward window has passed by event time `now`."""
        self._resolved.extend(self.pending.expire(now))

    def track(
        self,
        rec_id: str,
        user_id: str,
        generated_at: float,
        items: list[str],
        slots: Sequence[ShownSlot],
        context: dict[str, float] | None = None,
    ) -> None:
        """Await feedback on a published list; the list it supersedes (and overflow) resolves."""
        self._resolved.extend(
            self.pending.add(
                PendingList(
                    rec_id=rec_id,
                    user_id=user_id,
                    generated_at=generated_at,
                    items=items,
                    sources=[slot.source for slot in slots],
                    propensities=[slot.propensity for slot in slots],
                    source_propensities=[slot.source_propensity for slot in slots],
                    context=context,
                )
            )
        )

    def settle(self) -> Feedback:
        """Teach the policy what every list resolved this batch earned; the batch's feedback."""
        resolved, self._resolved = self._resolved, []
        rewarded, self._rewarded = self._rewarded, {}
        lines: list[dict[str, Any]] = []
        earned = self._resolve(resolved, lines if self.decision_log else None)
        expired = sum(len(r.pending.items) for r in resolved if r.expired)
        return Feedback(rewarded, earned, expired, len(self.pending), lines)

    def flush(self) -> list[dict[str, Any]]:
        """Resolve every list still awaiting rewards (end of a replay); their decision lines."""
        lines: list[dict[str, Any]] = []
        self._resolve(self.pending.expire(float("inf")), lines)
        return lines

    def _resolve(
        self, resolved: list[Resolution], lines: list[dict[str, Any]] | None
    ) -> dict[str, float]:
        """Update the policy per resolved slot; the reward earned per source. With `lines`,
        one decision-log line per slot is appended to it."""
        update, scale = self.policy.update, self._scale
        earned: dict[str, float] = {}
        for resolution in resolved:
            p = resolution.pending
            for source, reward, source_prop in zip(
                p.sources, p.rewards, p.source_propensities, strict=True
            ):
                if source in _POLICY_ARMS:  # a pinned slot was a rule's, not the policy's
                    update(source, reward / scale, source_prop, p.context)
                if reward:
                    earned[source] = earned.get(source, 0.0) + reward
            if lines is None:
                continue
            for position, (item, source, prop, source_prop, reward) in enumerate(
                zip(
                    p.items,
                    p.sources,
                    p.propensities,
                    p.source_propensities,
                    p.rewards,
                    strict=True,
                ),
                start=1,
            ):
                lines.append(
                    {
                        "rec_id": p.rec_id,
                        "user_id": p.user_id,
                        "item_id": item,
                        "position": position,
                        "source": source,
                        "propensity": prop,
                        "source_propensity": source_prop,
                        "reward": reward,
                        **({"context": p.context} if p.context else {}),
                    }
                )
        return earned
