"""Top-N straight from the rating model's factors: the speed configuration's ranker.

`MFRanker` learns nothing itself. It ranks items by the rating model's predicted rating, read for
a whole block of users with one matrix product over `DenseBiasedMF`'s dense item matrix, so a
refresh costs one `(users × factors) @ (factors × items)` product instead of any per-item call.
It suits rating streams; on click-only streams the rating model never learns, so use `knn`.
"""

from __future__ import annotations

import numpy as np

from streamrec.learners.base import FloatArray, IntArray, RatingModel
from streamrec.learners.biased_mf import DenseBiasedMF


def find_dense_mf(model: RatingModel) -> DenseBiasedMF:
    """The DenseBiasedMF inside `model` (itself, or a member of an ensemble)."""
    if isinstance(model, DenseBiasedMF):
        return model
    for member in getattr(model, "_members", []):
        if isinstance(member, DenseBiasedMF):
            return member
    raise ValueError("the 'mf' ranker needs a rating model with a DenseBiasedMF inside")


class MFRanker:
    """Ranks by the predicted rating of a `DenseBiasedMF`; reads it, never writes it."""

    learns = False  # the pipeline skips building a history array for learn_one

    def __init__(self, rating_model: RatingModel) -> None:
        self.mf = find_dense_mf(rating_model)
        self._unit: tuple[tuple[float, int], FloatArray] | None = None

    def learn_one(self, user: int, item: int, weight: float, history: IntArray) -> None:
        """Nothing to learn: the rating model learns from the ratings themselves."""

    def score_dense(self, users: IntArray, n_items: int) -> FloatArray:
        """Scores `(len(users), n_items)`; items the rating model never saw get -inf."""
        scores = self.mf.score_dense(users.tolist())
        if scores.shape[1] < n_items:
            padded = np.full((len(users), n_items), -np.inf)
            padded[:, : scores.shape[1]] = scores
            return padded
        return scores[:, :n_items]

    def candidates(self, user: int, history: IntArray) -> tuple[IntArray, FloatArray]:
        scores = self.mf.score_dense([user])[0]
        return np.arange(len(scores), dtype=np.int64), scores

    def explain_many(self, user: int, history: IntArray, items: list[int]) -> list[int | None]:
        """`explain` for several items of one list, with one matrix product."""
        factors = self.mf.item_factors
        known = history[history < len(factors)]
        rated = [item for item in items if item < len(factors)]
        if not len(known) or not rated:
            return [None] * len(items)
        similarity = self._unit_factors()[known] @ factors[rated].T
        anchors = dict(zip(rated, known[similarity.argmax(axis=0)].tolist(), strict=True))
        return [anchors.get(item) for item in items]

    def _unit_factors(self) -> FloatArray:
        """Item factors scaled to unit length (zero rows stay zero), cached per model version.

        argmax over h of cos(f_h, f_i) only needs the history side normalized. A refresh explains
        many lists in a row from the same model, so normalizing the catalog once beats
        normalizing each user's history; `global_mean.n` counts learned ratings, so it changes
        whenever any factor does.
        """
        factors = self.mf.item_factors
        version = (self.mf.global_mean.n, len(factors))
        if self._unit is None or self._unit[0] != version:
            norms = np.sqrt(np.einsum("ij,ij->i", factors, factors))
            self._unit = (version, factors / np.where(norms > 0, norms, 1.0)[:, None])
        return self._unit[1]

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_unit"}  # a cache, not state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._unit = None

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        """The history item whose latent vector points most the same way as `item`'s."""
        return self.explain_many(user, history, [item])[0]
