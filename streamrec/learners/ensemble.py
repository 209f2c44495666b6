"""Online stacking: recursive least squares over the members' predictions, per support bucket."""

from __future__ import annotations

import copy
import typing
from collections.abc import Hashable, Sequence

import numpy as np
from river import reco

from streamrec.learners.base import FloatArray, RatingModel

__all__ = ["RLSEnsemble"]


def _bucket(count: int, edges: Sequence[int]) -> int:
    for k, edge in enumerate(edges):
        if count < edge:
            return k
    return len(edges)


class _RLS:
    """Recursive least squares on small numpy arrays (d is ~8: a few vector ops per event)."""

    __slots__ = ("cov", "weights")

    def __init__(self, n_members: int, delta: float) -> None:
        # Start from "intercept 0, equal weights": a sane average before any evidence.
        self.weights: FloatArray = np.full(n_members + 1, 1.0 / n_members)
        self.weights[0] = 0.0
        self.cov: FloatArray = np.eye(n_members + 1) * delta

    def predict(self, x: FloatArray) -> float:
        return float(self.weights @ x)

    def update(self, x: FloatArray, y: float, forgetting: float, max_trace: float) -> None:
        cov = self.cov
        px = cov @ x
        gain = px / (forgetting + x @ px)
        self.weights += gain * (y - self.weights @ x)
        cov -= np.outer(gain, px)
        # Forgetting inflates the covariance in directions the members never vary in (they are
        # nearly collinear); stop inflating once it is large, or the weights blow up.
        if cov.trace() < max_trace:
            cov /= forgetting
        # Keep the covariance exactly symmetric: rounding otherwise makes it indefinite over time.
        cov += cov.T
        cov *= 0.5


class RLSEnsemble(reco.base.Ranker):
    """Online linear stacking of rating models, with weights that depend on user and item support.

    For each event the members predict first, the combiner learns from those predictions (so it
    learns how the members do on data they have not seen: test-then-learn), then the members
    learn. One small recursive-least-squares model per (user-support, item-support) bucket
    combines `[1, clipped member predictions]`: cold users lean on the baselines, warm ones on MF
    and kNN, and the data decides how much.

    Parameters
    ----------
    members
        The rating models to combine (default: `default_members()`).
    user_edges, item_edges
        Bucket boundaries on how many ratings the user / item had before this one.
    forgetting
        RLS forgetting factor (1.0 = never forget); slightly below 1 follows drift in how good
        each member is.
    delta
        Initial covariance scale (how fast the first events move the weights).
    max_trace
        Forgetting pauses while the covariance trace exceeds this (keeps the RLS stable).
    rating_scale
        (lowest, highest) rating; member predictions are clipped to it before combining.

    Examples
    --------

    >>> from streamrec.learners import RLSEnsemble, ShrunkBaseline, SGDBaseline
    >>> model = RLSEnsemble(members=[ShrunkBaseline(), SGDBaseline()])
    >>> for user, item, y in [(0, 0, 5.0), (0, 1, 4.0), (1, 0, 4.0), (1, 1, 2.0)] * 5:
    ...     model.learn_one(user, item, y)
    >>> 1.0 <= model.predict_one(1, 0) <= 5.0
    True
    >>> round(model.predict_one(9, 9), 3)  # unseen user and item: no state is created
    3.824
    >>> len(model.user_count), len(model.item_count)
    (2, 2)

    """

    def __init__(
        self,
        members: list[RatingModel] | None = None,
        user_edges: tuple[int, ...] = (5, 30),
        item_edges: tuple[int, ...] = (5, 30),
        forgetting: float = 0.9995,
        delta: float = 1.0,
        max_trace: float = 100.0,
        rating_scale: tuple[float, float] = (1.0, 5.0),
    ) -> None:
        super().__init__(seed=0)  # River seeds an unused RNG from the OS otherwise
        self.members = members
        self.user_edges = user_edges
        self.item_edges = item_edges
        self.forgetting = forgetting
        self.delta = delta
        self.max_trace = max_trace
        self.rating_scale = rating_scale
        self._members: list[RatingModel] = (
            default_members() if members is None else [copy.deepcopy(m) for m in members]
        )
        self.user_count: dict[Hashable, int] = {}
        self.item_count: dict[Hashable, int] = {}
        self._combiners: dict[tuple[int, int], _RLS] = {}
        self._cache_key: tuple[Hashable, Hashable] | None = None
        self._cache: list[float] = []
        self._cache_array: FloatArray = np.zeros(0)

    def member_predictions(self, user: Hashable, item: Hashable) -> list[float]:
        """`[1.0, p_1 - mid, ..., p_m - mid]`: clipped member predictions behind an intercept.

        Centring on the middle of the scale makes the intercept nearly orthogonal to the members
        (which all hover around the mean), which keeps the forgetting RLS well conditioned.
        """
        if self._cache_key == (user, item):
            return self._cache
        low, high = self.rating_scale
        mid = 0.5 * (low + high)
        x = [1.0]
        for member in self._members:
            p = member.predict_one(user, item)  # type: ignore[arg-type]
            x.append((low if p < low else high if p > high else p) - mid)
        # One slot, cleared by learn_one: predict-then-learn asks the members only once.
        self._cache_key, self._cache, self._cache_array = (user, item), x, np.array(x)
        return x

    def _features(self, user: Hashable, item: Hashable) -> FloatArray:
        self.member_predictions(user, item)
        return self._cache_array

    def _bucket(self, user: Hashable, item: Hashable) -> tuple[int, int]:
        return (
            _bucket(self.user_count.get(user, 0), self.user_edges),
            _bucket(self.item_count.get(item, 0), self.item_edges),
        )

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        features = self._features(user, item)
        combiner = self._combiners.get(self._bucket(user, item))
        mid = 0.5 * (self.rating_scale[0] + self.rating_scale[1])
        if combiner is None:
            return mid + float(features[1:].mean())
        return mid + combiner.predict(features)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        features = self._features(user, item)
        key = self._bucket(user, item)
        combiner = self._combiners.get(key)
        if combiner is None:
            combiner = self._combiners[key] = _RLS(len(self._members), self.delta)
        mid = 0.5 * (self.rating_scale[0] + self.rating_scale[1])
        combiner.update(features, y - mid, self.forgetting, self.max_trace)
        self._cache_key = None
        for member in self._members:
            member.learn_one(user, item, y)  # type: ignore[arg-type]
        self.user_count[user] = self.user_count.get(user, 0) + 1
        self.item_count[item] = self.item_count.get(item, 0) + 1

    def __getstate__(self) -> dict[str, typing.Any]:
        # The one-slot prediction cache is not learned state: leaving it out keeps checkpoints
        # and model digests independent of which predictions happened to be asked for.
        state = self.__dict__.copy()
        state["_cache_key"], state["_cache"], state["_cache_array"] = None, [], np.zeros(0)
        return state

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        from streamrec.learners.baselines import SGDBaseline, ShrunkBaseline

        yield {"members": [ShrunkBaseline(), SGDBaseline()]}


def default_members(seed: int = 73) -> list[RatingModel]:
    """The quality default: two factor models, kNN on residuals, and four cheap bias models.

    Chosen on the first half of ML-100K (see `bench/learner_study.py`): each member lowers the
    combined first-half RMSE; none is tuned to the 1-5 scale (steps act on rating residuals, and
    counts and similarities do not depend on the scale).
    """
    from river import optim

    from streamrec.learners.baselines import (
        RecentBias,
        SGDBaseline,
        ShrunkBaseline,
    )
    from streamrec.learners.biased_mf import DenseBiasedMF
    from streamrec.learners.residual_knn import ResidualItemKNN
    from streamrec.learners.svdpp import SVDPlusPlus

    return [
        DenseBiasedMF(
            n_factors=10,
            bias_optimizer=optim.SGD(0.025),
            latent_optimizer=optim.SGD(0.05),
            seed=seed,
        ),
        ResidualItemKNN(k=50, smoothing=1.0),
        ShrunkBaseline(),
        RecentBias("user", alpha=0.2),
        SGDBaseline(),
        SVDPlusPlus(seed=seed),
        RecentBias("item", alpha=0.05),
    ]
