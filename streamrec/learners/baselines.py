"""Cheap bias models: members of the rating ensemble, and the baseline that kNN residuals use.

They keep plain dicts of Python floats: on tiny state, dict arithmetic is several times faster
than numpy, and none of them creates state when asked to predict.
"""

from __future__ import annotations

import typing
from collections.abc import Hashable

from river import reco

__all__ = ["RecentBias", "SGDBaseline", "ShrunkBaseline"]


class ShrunkBaseline(reco.base.Ranker):
    """Global mean plus user and item biases shrunk towards zero by how often each was seen.

    `b_i = Σ(r − μ) / (n_i + item_shrinkage)` and `b_u = Σ(r − μ − b_i) / (n_u + user_shrinkage)`,
    accumulated online. Shrinkage counts are in ratings, so they do not depend on the rating scale.
    Unlike SGD biases this is exact for stationary data and needs no learning rate; it is the
    anchor the combiner falls back on for cold users and items.

    Parameters
    ----------
    user_shrinkage
        Pseudo-count pulling a user bias towards zero.
    item_shrinkage
        Pseudo-count pulling an item bias towards zero.

    Examples
    --------

    >>> from streamrec.learners import ShrunkBaseline
    >>> model = ShrunkBaseline(user_shrinkage=1.0, item_shrinkage=1.0)
    >>> for user, item, y in [(0, 0, 5.0), (1, 0, 4.0), (1, 1, 2.0)]:
    ...     model.learn_one(user, item, y)
    >>> round(model.predict_one(0, 1), 3)
    2.833
    >>> len(model.n_user), model.predict_one(7, 7) == model.mean
    (2, True)

    """

    def __init__(self, user_shrinkage: float = 3.0, item_shrinkage: float = 3.0) -> None:
        super().__init__(seed=0)  # River seeds an unused RNG from the OS otherwise
        self.user_shrinkage = user_shrinkage
        self.item_shrinkage = item_shrinkage
        self.n = 0
        self.mean = 0.0
        self.sum_user: dict[Hashable, float] = {}
        self.n_user: dict[Hashable, int] = {}
        self.sum_item: dict[Hashable, float] = {}
        self.n_item: dict[Hashable, int] = {}

    def item_bias(self, item: Hashable) -> float:
        return self.sum_item.get(item, 0.0) / (self.n_item.get(item, 0) + self.item_shrinkage)

    def user_bias(self, user: Hashable) -> float:
        return self.sum_user.get(user, 0.0) / (self.n_user.get(user, 0) + self.user_shrinkage)

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        return self.mean + self.user_bias(user) + self.item_bias(item)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        self.n += 1
        self.mean += (y - self.mean) / self.n
        self.sum_item[item] = self.sum_item.get(item, 0.0) + y - self.mean
        self.n_item[item] = self.n_item.get(item, 0) + 1
        residual = y - self.mean - self.item_bias(item)
        self.sum_user[user] = self.sum_user.get(user, 0.0) + residual
        self.n_user[user] = self.n_user.get(user, 0) + 1

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"user_shrinkage": 1.0, "item_shrinkage": 2.0}


class RecentBias(reco.base.Ranker):
    """A shrunk baseline plus a moving average of the latest residuals of a user, or of an item.

    `side="user"`: users rate in sessions and their mood drifts; on ML-100K in timestamp order the
    average of a user's last few residuals predicts the next one better than their lifetime bias.
    `side="item"`: an item's lifetime bias lags behind how it is rated *now* (films age; who rates
    a film changes as it moves from new release to catalogue), so this is a time-aware item bias.
    Either costs one float per user or item; the combiner weighs it against the lifetime biases.

    Parameters
    ----------
    side
        Whose residuals are averaged: `"user"` or `"item"`.
    alpha
        Weight of the newest residual in the moving average (larger forgets faster). Items get
        far more ratings than users, so the item side suits a smaller step.
    baseline
        The baseline whose residuals are averaged (default: `ShrunkBaseline()`).

    Examples
    --------

    >>> from streamrec.learners import RecentBias
    >>> by_user = RecentBias("user", alpha=0.5)
    >>> for user, item, y in [(0, 0, 5.0), (0, 1, 5.0), (1, 0, 1.0), (1, 1, 1.0)]:
    ...     by_user.learn_one(user, item, y)
    >>> by_user.predict_one(0, 2) > by_user.predict_one(1, 2)
    True
    >>> by_item = RecentBias("item", alpha=0.5)
    >>> for user, item, y in [(0, 0, 5.0), (1, 0, 5.0), (0, 1, 1.0), (1, 1, 1.0)]:
    ...     by_item.learn_one(user, item, y)
    >>> by_item.predict_one(2, 0) > by_item.predict_one(2, 1)
    True
    >>> by_item.predict_one(9, 9) == by_item.predict_one(8, 7)  # unseen: nothing is created
    True

    """

    def __init__(
        self,
        side: typing.Literal["user", "item"] = "user",
        alpha: float = 0.2,
        baseline: ShrunkBaseline | None = None,
    ) -> None:
        super().__init__(seed=0)  # River seeds an unused RNG from the OS otherwise
        if side not in ("user", "item"):
            raise ValueError(f"side must be 'user' or 'item', not {side!r}")
        self.side = side
        self.alpha = alpha
        self.baseline = baseline
        self._baseline = ShrunkBaseline() if baseline is None else baseline.clone()
        self.recent: dict[Hashable, float] = {}

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        key = user if self.side == "user" else item
        return self._baseline.predict_one(user, item) + self.recent.get(key, 0.0)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        residual = y - self._baseline.predict_one(user, item)
        self._baseline.learn_one(user, item, y)
        key = user if self.side == "user" else item
        previous = self.recent.get(key, 0.0)
        self.recent[key] = previous + self.alpha * (residual - previous)

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"side": "user", "alpha": 0.3}
        yield {"side": "item", "alpha": 0.1}


class SGDBaseline(reco.base.Ranker):
    """River's `reco.Baseline` (squared loss, plain SGD, no L2) on dicts, read-only on predict.

    Its biases follow drift (a constant step size forgets), which the count-shrunk baseline does
    not; the combiner uses both. Same numbers as `river.reco.Baseline(optim.SGD(learning_rate))`.

    Parameters
    ----------
    learning_rate
        SGD step size.

    Examples
    --------

    >>> from streamrec.learners import SGDBaseline
    >>> model = SGDBaseline(learning_rate=0.1)
    >>> for user, item, y in [(0, 0, 5.0), (1, 0, 4.0), (1, 1, 2.0)]:
    ...     model.learn_one(user, item, y)
    >>> round(model.predict_one(0, 1), 4)
    3.3533

    """

    def __init__(self, learning_rate: float = 0.025) -> None:
        super().__init__(seed=0)  # River seeds an unused RNG from the OS otherwise
        self.learning_rate = learning_rate
        self.n = 0
        self.mean = 0.0
        self.user_biases: dict[Hashable, float] = {}
        self.item_biases: dict[Hashable, float] = {}

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        return self.mean + self.user_biases.get(user, 0.0) + self.item_biases.get(item, 0.0)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        self.n += 1
        self.mean += (y - self.mean) / self.n
        step = self.learning_rate * 2.0 * (self.predict_one(user, item) - y)
        self.user_biases[user] = self.user_biases.get(user, 0.0) - step
        self.item_biases[item] = self.item_biases.get(item, 0.0) - step

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"learning_rate": 0.05}
