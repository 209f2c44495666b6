"""Exploration and delayed rewards: which source fills each slot, and what came of it.

**Arms are sources, not items.** Each slot of a list is filled by one of three sources: `model`
(the personal ranker's next best item), `popular` (recently popular) or `new` (items first seen
recently, which no model can know yet). A River bandit policy picks the source per slot and learns
each source's click-through from rewards. Item-level bandits would need one arm per item (100k
arms, no sharing between users); source-level arms are few, learn fast, and keep exploration
targeted at the cold-start problem the model cannot solve on its own.

**Propensities are exact.** River's policies only expose `pull()`. We compute the probability
distribution each policy would pull from (closed form for ε-greedy and Exp3, the deterministic
argmax with uniform tie-breaking for UCB, Bayes-UCB and LinUCB, a Monte Carlo estimate of the
argmax probabilities for Thompson sampling) and draw from *that* distribution with our own seeded
RNG, so the recorded probability is the true probability of what was done, as off-policy
evaluation needs. River's policy still does the learning (`update`).

**Delayed rewards.** A published list stays *pending* until it is superseded by a newer list for
the same user, or its reward window (event time) passes. A click or purchase that names the list's
`rec_id` — or, failing that, matches an item of the user's latest pending list — rewards that slot.
On resolution every slot updates its source's arm (reward 0 if nothing happened) and becomes one
decision-log line (see `streamrec.offpolicy.LoggedDecision`). Pending lists are bounded in number
and are part of the checkpoint.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import bandit, proba

from streamrec.events import Source

ARMS: tuple[Source, ...] = ("model", "popular", "new")

POLICIES = {
    "epsilon_greedy": lambda seed, **p: bandit.EpsilonGreedy(**{"epsilon": 0.1, **p}, seed=seed),
    "ucb": lambda seed, **p: bandit.UCB(**{"delta": 1.0, **p}, seed=seed),
    "thompson": lambda seed, **p: bandit.ThompsonSampling(
        **{"reward_obj": proba.Beta(), **p}, seed=seed
    ),
    "bayes_ucb": lambda seed, **p: bandit.BayesUCB(**p, seed=seed),
    "exp3": lambda seed, **p: bandit.Exp3(**{"gamma": 0.1, **p}, seed=seed),
    "linucb": lambda seed, **p: bandit.LinUCBDisjoint(**p, seed=seed),
}
"""Exploration policies by configuration name; `none` turns exploration off."""

_THOMPSON_DRAWS = 512
_PLAIN_UPDATE = frozenset({bandit.EpsilonGreedy, bandit.UCB})
"""Policies whose update takes the reward as it is."""


class SlotPolicy:
    """Chooses the source of each slot with a River policy, with exact propensities."""

    def __init__(self, name: str, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        if name != "none" and name not in POLICIES:
            choices = ", ".join(["none", *POLICIES])
            raise ValueError(f"unknown exploration policy {name!r}; choose one of {choices}")
        self.name = name
        self.policy = None if name == "none" else POLICIES[name](seed, **(params or {}))
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    @property
    def contextual(self) -> bool:
        return isinstance(self.policy, bandit.LinUCBDisjoint)

    def distribution(
        self, arms: Sequence[str], context: dict[str, float] | None = None
    ) -> list[float]:
        """Probability of each arm for one slot, exactly as the draw in `choose` uses it."""
        p = self.policy
        n = len(arms)
        if p is None:
            return [1.0 if arm == "model" else 0.0 for arm in arms]
        warm = [arm for arm in arms if p._counts[arm] < p.burn_in]
        if warm:  # River's burn-in: the first under-pulled arm, deterministically
            return [1.0 if arm == warm[0] else 0.0 for arm in arms]
        if isinstance(p, bandit.EpsilonGreedy):
            eps = p.current_epsilon
            means = [_mean(p, arm) for arm in arms]
            best = means.index(max(means))
            return [eps / n + (1.0 - eps if k == best else 0.0) for k in range(n)]
        if isinstance(p, bandit.Exp3):
            weights = [p._weights.get(arm, 1.0) for arm in arms]
            total = sum(weights)
            return [(1.0 - p.gamma) * w / total + p.gamma / n for w in weights]
        if isinstance(p, bandit.ThompsonSampling):
            draws = np.stack([self._posterior_draws(p, arm) for arm in arms])
            wins = np.bincount(draws.argmax(axis=0), minlength=n)
            # Keep every arm possible (propensity > 0), as unbiased estimators require.
            probs = (wins + 1.0) / (wins.sum() + n)
            return probs.tolist()
        if isinstance(p, bandit.UCB):
            index = [_ucb_index(p, arm) for arm in arms]
        elif isinstance(p, bandit.BayesUCB):
            index = [float(p.compute_index(arm)) for arm in arms]
        elif isinstance(p, bandit.LinUCBDisjoint):
            index = [_linucb_index(p, arm, context or {}) for arm in arms]
        else:  # pragma: no cover - POLICIES lists only the classes above
            raise TypeError(type(p))
        top = max(index)
        ties = [k for k, v in enumerate(index) if v == top]
        return [1.0 / len(ties) if k in ties else 0.0 for k in range(n)]

    def _posterior_draws(self, p: bandit.ThompsonSampling, arm: str) -> np.ndarray:
        posterior = p._rewards.get(arm)
        alpha = getattr(posterior, "alpha", 1.0)
        beta = getattr(posterior, "beta", 1.0)
        return self.np_rng.beta(alpha, beta, _THOMPSON_DRAWS)

    def choose(self, probabilities: Sequence[float]) -> int:
        """Index of the arm drawn from `probabilities` (our RNG, so the propensity is exact)."""
        x = self.rng.random()
        acc = 0.0
        for k, p in enumerate(probabilities):
            acc += p
            if x < acc:
                return k
        return max(range(len(probabilities)), key=lambda k: probabilities[k])

    def update(
        self,
        arm: str,
        reward: float,
        propensity: float,
        context: dict[str, float] | None = None,
    ) -> None:
        """Teach the policy one slot's outcome; `reward` in [0, 1]."""
        p = self.policy
        if type(p) in _PLAIN_UPDATE:  # the common case, ten times per list: no isinstance chain
            p.update(arm, reward)  # type: ignore[union-attr]
            return
        if p is None:
            return
        if isinstance(p, bandit.ThompsonSampling | bandit.BayesUCB):
            reward = 1.0 if reward > 0 else 0.0  # Beta posteriors take 0/1 outcomes
        if isinstance(p, bandit.Exp3):
            p._probabilities = {arm: propensity}  # Exp3 divides by the pull-time probability
            p.update(arm, reward)
            # The distribution depends only on weight ratios: renormalize so they never overflow
            # (arms never updated hold the implicit initial weight 1, so materialize them first).
            for known in ARMS:
                p._weights[known]
            top = max(p._weights.values())
            for key in p._weights:
                p._weights[key] /= top
            return
        if isinstance(p, bandit.LinUCBDisjoint):
            p.update(arm, context or {}, reward)
        else:
            p.update(arm, reward)


def _mean(p: Any, arm: str) -> float:
    reward = p._rewards.get(arm)
    return float(reward.get()) if reward is not None else 0.0


def _ucb_index(p: bandit.UCB, arm: str) -> float:
    if p._rewards.get(arm) is None or p._counts[arm] == 0:
        return math.inf
    return _mean(p, arm) + p.delta * math.sqrt(2 * math.log(max(p._n, 1)) / p._counts[arm])


def _linucb_index(p: bandit.LinUCBDisjoint, arm: str, context: dict[str, float]) -> float:
    model = p._bayes_lin_regs.get(arm)
    if model is None:
        return math.inf
    dist = model.predict_one(context, with_dist=True)
    return float(dist.mu + dist.sigma)


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
    expired: bool  # True: reward window passed; False: superseded or evicted


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
