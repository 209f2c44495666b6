"""SVD++ learned online: MF whose user vector also sums factors of the items the user has rated."""

from __future__ import annotations

import math
import typing
from collections.abc import Hashable

import numpy as np
from river import reco

from streamrec.learners.base import FloatArray

__all__ = ["SVDPlusPlus"]

_INITIAL_ROWS = 64


class SVDPlusPlus(reco.base.Ranker):
    """Koren's SVD++ by per-event SGD: `μ + b_u + b_i + q_i · (p_u + |N(u)|^-½ Σ_{j∈N(u)} y_j)`.

    `N(u)` is *which* items the user rated before this event, whatever the values: a user is
    described by their own factor plus the implicit factors `y_j` of their items. A new user
    therefore gets a useful vector after a rating or two, long before `p_u` has learned anything,
    and two users who rated the same films look alike even when their ratings differ. That makes
    its errors differ from plain biased MF's, which is what the ensemble's combiner needs.

    Only the user's last `history` items are kept (per-user memory and per-event work are
    O(history)); the event being predicted is never in `N(u)` (test-then-learn stays honest).
    Item factors `q_i` and `y_j` are rows of two growable dense matrices, so the implicit sum and
    its update are one gather and one scatter. Steps are on `err = y − ŷ` (River's SGD steps on
    the squared-loss gradient `2·(ŷ − y)`, so River's 0.05 is 0.1 here).

    Parameters
    ----------
    n_factors
        Length of the latent vectors.
    learning_rate
        SGD step of the factors `p_u`, `q_i`, `y_j`.
    bias_learning_rate
        SGD step of the biases.
    l2
        L2 penalty on every parameter except the global mean.
    history
        Most recent items kept per user as `N(u)`.
    init_std
        Standard deviation of the random initial `q_i` (`p_u` and `y_j` start at zero).
    seed
        Seed of the generator that draws `q_i` (items draw in order of first appearance).

    Examples
    --------

    >>> from streamrec.learners import SVDPlusPlus
    >>> model = SVDPlusPlus(n_factors=4, seed=1)
    >>> for user, item, y in [(0, 0, 5.0), (0, 1, 5.0), (1, 0, 5.0), (1, 2, 1.0), (2, 2, 1.0)] * 10:
    ...     model.learn_one(user, item, y)
    >>> model.predict_one(0, 0) > model.predict_one(2, 2)
    True
    >>> model.predict_one(7, 9) == model.mean  # unseen user and item: nothing is created
    True
    >>> len(model.user_items), len(model.item_rows)
    (3, 3)

    """

    def __init__(
        self,
        n_factors: int = 10,
        learning_rate: float = 0.1,
        bias_learning_rate: float = 0.05,
        l2: float = 0.02,
        history: int = 30,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)  # River keeps a `random.Random(seed)` that is never used
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.bias_learning_rate = bias_learning_rate
        self.l2 = l2
        self.history = history
        self.init_std = init_std
        self._draw = np.random.default_rng(seed)
        self.n = 0
        self.mean = 0.0
        self.user_biases: dict[Hashable, float] = {}
        self.user_factors: dict[Hashable, FloatArray] = {}
        self.user_items: dict[Hashable, list[int]] = {}  # rows of N(u), oldest first
        self.item_rows: dict[Hashable, int] = {}
        self.item_biases: dict[int, float] = {}
        self.q: FloatArray = np.zeros((_INITIAL_ROWS, n_factors))
        self.y: FloatArray = np.zeros((_INITIAL_ROWS, n_factors))
        self._cache_key: tuple[Hashable, Hashable] | None = None
        self._cache: tuple[float, FloatArray, float] = (0.0, np.zeros(0), 0.0)

    def _user_vector(self, user: Hashable) -> tuple[FloatArray, float]:
        """`p_u + |N(u)|^-½ Σ y_j` and the normalizer (0 when the user has no history)."""
        p = self.user_factors.get(user)
        rows = self.user_items.get(user)
        vector = np.zeros(self.n_factors) if p is None else p.copy()
        if not rows:
            return vector, 0.0
        norm = 1.0 / math.sqrt(len(rows))
        vector += self.y[rows].sum(axis=0) * norm
        return vector, norm

    def _predict(self, user: Hashable, item: Hashable) -> tuple[float, FloatArray, float]:
        if self._cache_key == (user, item):
            return self._cache
        row = self.item_rows.get(item)
        y_pred = self.mean + self.user_biases.get(user, 0.0)
        if row is None:
            return y_pred, np.zeros(0), 0.0
        vector, norm = self._user_vector(user)
        y_pred += self.item_biases[row] + float(self.q[row] @ vector)
        # One slot, cleared by learn_one: predict-then-learn computes the user vector once.
        self._cache_key, self._cache = (user, item), (y_pred, vector, norm)
        return self._cache

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        return self._predict(user, item)[0]

    def _add_item(self, item: Hashable) -> int:
        row = self.item_rows[item] = len(self.item_rows)
        if row >= len(self.q):
            self.q = np.concatenate([self.q, np.zeros_like(self.q)])
            self.y = np.concatenate([self.y, np.zeros_like(self.y)])
        self.q[row] = self._draw.normal(0.0, self.init_std, self.n_factors)
        self.item_biases[row] = 0.0
        return row

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        if item not in self.item_rows:
            self._add_item(item)
        y_pred, vector, norm = self._predict(user, item)
        self._cache_key = None
        row = self.item_rows[item]
        self.n += 1
        self.mean += (y - self.mean) / self.n
        err = y - y_pred
        lr, l2 = self.learning_rate, self.l2
        b_user = self.user_biases.get(user, 0.0)
        self.user_biases[user] = b_user + self.bias_learning_rate * (err - l2 * b_user)
        b_item = self.item_biases[row]
        self.item_biases[row] = b_item + self.bias_learning_rate * (err - l2 * b_item)
        q = self.q[row].copy()
        self.q[row] += lr * (err * vector - l2 * q)
        p = self.user_factors.get(user)
        if p is None:
            p = self.user_factors[user] = np.zeros(self.n_factors)
        p += lr * (err * q - l2 * p)
        rows = self.user_items.setdefault(user, [])
        if rows:  # rows are distinct (see below), so the fancy-indexed update is exact
            implicit = self.y[rows]
            self.y[rows] = implicit + lr * (err * norm * q - l2 * implicit)
        if row in rows:
            rows.remove(row)  # a re-rating moves the item to the end instead of counting twice
        rows.append(row)
        if len(rows) > self.history:
            del rows[0]

    def __getstate__(self) -> dict[str, typing.Any]:
        # The one-slot prediction cache is not learned state: leaving it out keeps checkpoints
        # and model digests independent of which predictions happened to be asked for.
        state = self.__dict__.copy()
        state["_cache_key"], state["_cache"] = None, (0.0, np.zeros(0), 0.0)
        return state

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"n_factors": 4, "history": 5, "seed": 1}
