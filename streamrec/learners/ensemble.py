"""Online stacking: recursive least squares over the members' predictions, per support bucket."""

from __future__ import annotations

import copy
import typing
from collections.abc import Hashable, Sequence

from river import reco

from streamrec.learners.base import RatingModel

__all__ = ["RLSEnsemble"]


def _bucket(count: int, edges: Sequence[int]) -> int:
    for k, edge in enumerate(edges):
        if count < edge:
            return k
    return len(edges)


class _RLS:
    """Recursive least squares in plain Python: d is ~6, where numpy calls cost more than math."""

    __slots__ = ("cov", "weights")

    def __init__(self, n_members: int, delta: float) -> None:
        d = n_members + 1
        # Start from "intercept 0, equal weights": a sane average before any evidence.
        self.weights = [0.0] + [1.0 / n_members] * n_members
        self.cov = [[delta if a == b else 0.0 for b in range(d)] for a in range(d)]

    def predict(self, x: list[float]) -> float:
        return sum(w * v for w, v in zip(self.weights, x, strict=True))

    def update(self, x: list[float], y: float, forgetting: float, max_trace: float) -> None:
        cov = self.cov
        d = len(x)
        px = [sum(row[b] * x[b] for b in range(d)) for row in cov]
        gain_den = forgetting + sum(x[a] * px[a] for a in range(d))
        gain = [v / gain_den for v in px]
        error = y - self.predict(x)
        self.weights = [w + g * error for w, g in zip(self.weights, gain, strict=True)]
        # Forgetting inflates the covariance in directions the members never vary in (they are
        # nearly collinear); stop inflating once it is large, or the weights blow up.
        trace = sum(cov[a][a] for a in range(d))
        scale = 1.0 / forgetting if trace < max_trace else 1.0
        for a in range(d):
            row = cov[a]
            ga = gain[a]
            for b in range(d):
                row[b] = (row[b] - ga * px[b]) * scale
        # Keep the covariance exactly symmetric: rounding otherwise makes it indefinite over time.
        for a in range(d):
            for b in range(a):
                mean = 0.5 * (cov[a][b] + cov[b][a])
                cov[a][b] = cov[b][a] = mean


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
        self._cache_key, self._cache = (user, item), x
        return x

    def _bucket(self, user: Hashable, item: Hashable) -> tuple[int, int]:
        return (
            _bucket(self.user_count.get(user, 0), self.user_edges),
            _bucket(self.item_count.get(item, 0), self.item_edges),
        )

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        features = self.member_predictions(user, item)
        combiner = self._combiners.get(self._bucket(user, item))
        mid = 0.5 * (self.rating_scale[0] + self.rating_scale[1])
        if combiner is None:
            return mid + sum(features[1:]) / len(self._members)
        return mid + combiner.predict(features)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        features = self.member_predictions(user, item)
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
        state["_cache_key"], state["_cache"] = None, []
        return state

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        from streamrec.learners.baselines import SGDBaseline, ShrunkBaseline

        yield {"members": [ShrunkBaseline(), SGDBaseline()]}


def default_members(seed: int = 73) -> list[RatingModel]:
    """The quality default: MF, kNN on residuals, and three cheap bias models.

    Chosen on the first half of ML-100K (see `bench/learner_study.py`).
    """
    from river import optim

    from streamrec.learners.baselines import RecentUserBias, SGDBaseline, ShrunkBaseline
    from streamrec.learners.dense_mf import DenseBiasedMF
    from streamrec.learners.neighbors import ResidualItemKNN

    return [
        DenseBiasedMF(
            n_factors=10,
            bias_optimizer=optim.SGD(0.025),
            latent_optimizer=optim.SGD(0.05),
            seed=seed,
        ),
        ResidualItemKNN(),
        ShrunkBaseline(),
        RecentUserBias(alpha=0.2),
        SGDBaseline(),
    ]
