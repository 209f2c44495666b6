"""Top-N straight from the rating model's factors: the speed configuration's ranker.

`MFRanker` learns nothing itself. It ranks items by the rating model's predicted rating, read for
a whole block of users with one matrix product over `DenseBiasedMF`'s dense item matrix, so a
refresh costs one `(users × factors) @ (factors × items)` product instead of any per-item call.
It suits rating streams; on click-only streams the rating model never learns, so use `knn`.
"""

from __future__ import annotations

import numpy as np

from streamrec.learners.base import FloatArray, IntArray, RatingModel
from streamrec.learners.dense_mf import DenseBiasedMF


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
        """`explain` for several items of one list, with one matrix product.

        The cosine's item norm is the same for every history item, so only the history side is
        normalized: argmax over h of (f_h · f_i) / |f_h|.
        """
        factors = self.mf.item_factors
        known = history[history < len(factors)]
        rated = [item for item in items if item < len(factors)]
        if not len(known) or not rated:
            return [None] * len(items)
        past = factors[known]
        norms = np.sqrt(np.einsum("ij,ij->i", past, past))
        similarity = past @ factors[rated].T
        similarity /= np.where(norms > 0, norms, 1.0)[:, None]
        anchors = dict(zip(rated, known[similarity.argmax(axis=0)].tolist(), strict=True))
        return [anchors.get(item) for item in items]

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        """The history item whose latent vector points most the same way as `item`'s."""
        return self.explain_many(user, history, [item])[0]
