"""The popularity reference point for top-N quality: a ranker that learns and proposes nothing.

`ranker=popular` leaves every slot to the pipeline's time-decayed popularity fill, the number
top-N quality is quoted against (README's Quality table). A file of its own because it is an
algorithm of its own, however small, and the factory lists it beside the real rankers.
"""

from __future__ import annotations

import numpy as np

from streamrec.learners.base import FloatArray, IntArray

__all__ = ["PopularityOnly"]


class PopularityOnly:
    """A ranker that learns nothing and proposes nothing: lists are the pipeline's popularity
    fill alone (time-decayed counts). The reference point top-N quality is quoted against."""

    def learn_one(self, user: int, item: int, weight: float, history: IntArray) -> None:
        return None

    def candidates(self, user: int, history: IntArray) -> tuple[IntArray, FloatArray]:
        return np.empty(0, dtype=np.int64), np.empty(0)

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        return None
