"""Incremental item-kNN for positive-only feedback, weighted by closeness in the user's sequence."""

from __future__ import annotations

import typing

import numpy as np
from river import base

from streamrec.learners.base import FloatArray, IntArray

__all__ = ["SequenceItemKNN"]


class SequenceItemKNN(base.Estimator):
    """Item-to-item co-occurrence where items consumed close together count more.

    Learning item `i` after history `h` adds `weight · proximity_decay^(d−1)` to the link between
    `i` and each of the last `window` history items, where `d` is how many steps back that item
    is. Links are symmetric and kept in sparse per-item neighbour lists; a list that grows past
    `2 · max_neighbours` is pruned to its `max_neighbours` strongest links, so memory per item is
    bounded by the cap and no items × items matrix ever exists (100k items × 400 links of
    (int, float) ≈ 4 GB in dicts at the very worst; far less in practice because most items have
    few links).

    Scoring a user sums, over the user's last `recent` items, `recency_decay^age` times the link
    strength normalised as `link / (n_j^alpha · n_k^(1−alpha))`, where `n` counts weighted
    positives per item: popular items would otherwise neighbour everything.

    Parameters
    ----------
    window
        How many previous items of the user each new item links to.
    proximity_decay
        Link weight multiplier per step of distance in the sequence.
    recent
        How many of the user's latest items score candidates.
    recency_decay
        Weight multiplier per step back in the user's history when scoring.
    alpha
        Normalisation exponent on the history item's count (the rest goes on the candidate's).
    max_neighbours
        Links kept per item after pruning.

    Examples
    --------

    >>> import numpy as np
    >>> from streamrec.learners import SequenceItemKNN
    >>> ranker = SequenceItemKNN()
    >>> for user, seq in {0: [0, 1, 2], 1: [0, 1, 3], 2: [4, 5]}.items():
    ...     for k, item in enumerate(seq):
    ...         ranker.learn_one(user, item, 1.0, np.array(seq[:k], dtype=np.int64))
    >>> items, scores = ranker.candidates(3, np.array([0], dtype=np.int64))
    >>> int(items[np.argmax(scores)])
    1
    >>> ranker.explain(3, np.array([4, 0], dtype=np.int64), 1)
    0

    """

    def __init__(
        self,
        window: int = 40,
        proximity_decay: float = 0.95,
        recent: int = 20,
        recency_decay: float = 0.9,
        alpha: float = 0.5,
        max_neighbours: int = 200,
    ) -> None:
        self.window = window
        self.proximity_decay = proximity_decay
        self.recent = recent
        self.recency_decay = recency_decay
        self.alpha = alpha
        self.max_neighbours = max_neighbours
        self.links: dict[int, dict[int, float]] = {}
        self.counts: dict[int, float] = {}

    def _link(self, a: int, b: int, w: float) -> None:
        row = self.links.get(a)
        if row is None:
            row = self.links[a] = {}
        row[b] = row.get(b, 0.0) + w
        if len(row) > 2 * self.max_neighbours:
            keep = sorted(row.items(), key=lambda kv: kv[1], reverse=True)[: self.max_neighbours]
            self.links[a] = dict(keep)

    def learn_one(self, user: int, item: int, weight: float, history: IntArray) -> None:
        item = int(item)
        self.counts[item] = self.counts.get(item, 0.0) + weight
        w = weight
        for other in reversed(history[-self.window :].tolist()):
            if other != item:
                self._link(item, other, w)
                self._link(other, item, w)
            w *= self.proximity_decay

    def _contributions(self, history: IntArray) -> typing.Iterator[tuple[int, float]]:
        """(history item, its recency weight / count normalisation) for the scoring items."""
        r = 1.0
        counts = self.counts
        for item in reversed(history[-self.recent :].tolist()):
            n = counts.get(item)
            if n:
                yield item, r / n**self.alpha
            r *= self.recency_decay

    def candidates(self, user: int, history: IntArray) -> tuple[IntArray, FloatArray]:
        scores: dict[int, float] = {}
        for item, w in self._contributions(history):
            for other, link in self.links.get(item, {}).items():
                scores[other] = scores.get(other, 0.0) + w * link
        if not scores:
            return np.empty(0, dtype=np.int64), np.empty(0)
        items = np.fromiter(scores.keys(), dtype=np.int64, count=len(scores))
        values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
        beta = 1.0 - self.alpha
        norm = np.fromiter((self.counts[k] for k in scores), dtype=np.float64, count=len(scores))
        return items, values / norm**beta

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        best, best_value = None, 0.0
        for other, w in self._contributions(history):
            value = w * self.links.get(other, {}).get(int(item), 0.0)
            if value > best_value:
                best, best_value = other, value
        return best

    @property
    def n_links(self) -> int:
        return sum(len(row) for row in self.links.values())

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"window": 5, "max_neighbours": 10}
