"""What the pipeline needs from a learner.

The pipeline maps string ids to dense integer indices (users and items numbered 0, 1, 2, ... in
order of first appearance) and hands learners only those integers, so learners can keep numpy
arrays indexed by item and never store strings.

Two roles:

- a *rating model* predicts explicit ratings. It is a River `reco` estimator
  (`learn_one(user, item, y)`, `predict_one(user, item)`), e.g. `river.reco.BiasedMF` or our
  online combiner of several members.
- an *item ranker* learns from positive feedback (clicks, purchases, high ratings) and proposes
  candidate items for a user given that user's history. It produces the top-N lists.

Reading (predict, candidates, explain) must never create state: River's `predict_one` inserts
latent vectors for unseen ids into its defaultdicts, and read traffic must not grow memory.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class RatingModel(Protocol):
    def learn_one(self, user: int, item: int, y: float, x: dict | None = None) -> None: ...

    def predict_one(self, user: int, item: int, x: dict | None = None) -> float: ...


@runtime_checkable
class ItemRanker(Protocol):
    """A ranker may set `learns = False` when it only reads another model (the pipeline then
    skips `learn_one` and the history copy it needs), and may offer
    `explain_many(user, history, items) -> list[int | None]` to explain a whole list at once."""

    def learn_one(self, user: int, item: int, weight: float, history: IntArray) -> None:
        """Learn that `user` interacted positively with `item`.

        `history` holds the user's earlier items (indices, oldest first, most recent last, without
        `item`), bounded in length by the pipeline.
        """
        ...

    def candidates(self, user: int, history: IntArray) -> tuple[IntArray, FloatArray]:
        """Candidate item indices and their scores (higher is better) for this user.

        May include items in `history` (the caller excludes them). Must not change state.
        """
        ...

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        """The history item that contributes most to `item`'s score, or None."""
        ...
