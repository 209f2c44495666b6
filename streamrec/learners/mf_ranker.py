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
        # One slot: a list explains ~10 items against the same history in a row.
        self._explain_key: tuple[int, bytes] | None = None
        self._explain_rows: tuple[IntArray, FloatArray] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"mf": self.mf}  # the explanation cache is not state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.mf = state["mf"]  # type: ignore[assignment]
        self._explain_key = None
        self._explain_rows = None

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

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        """The history item whose latent vector points most the same way as `item`'s."""
        factors = self.mf.item_factors
        if item >= len(factors) or not len(history):
            return None
        key = (user, history.tobytes())
        if key != self._explain_key or self._explain_rows is None:
            known = history[history < len(factors)]
            norms = np.linalg.norm(factors[known], axis=1)
            unit = factors[known] / np.where(norms > 0, norms, 1.0)[:, None]
            self._explain_key, self._explain_rows = key, (known, unit)
        known, unit = self._explain_rows
        if not len(known):
            return None
        return int(known[int(np.argmax(unit @ factors[item]))])
