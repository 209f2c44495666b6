"""Exploration: which source fills each slot, with the exact probability of that choice.

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

This module decides; `rewards.py` keeps the books (which list a click answers, when a list
resolves, what each slot earned) and calls `SlotPolicy.update` with the outcome.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from river import bandit, proba

from streamrec.contract.events import Source

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
