"""Top-K lists for a batch of users: ranker candidates, seen items excluded, popularity fill.

Never `Ranker.rank()` (one `predict_one` per item, ~1 ms per user at 1,700 items): a sparse ranker
returns a few hundred candidates per user, a dense one scores the whole catalog for a block of
users with one matrix product (`score_dense`). Nothing here creates model state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.learners.base import FloatArray, IntArray
from streamrec.model import RecommenderModel

DENSE_BLOCK_USERS = 256
"""Users scored per matrix product: bounds the temporary (users × items) score block."""


@dataclass(frozen=True, slots=True)
class Slot:
    item: int
    score: float
    source: str
    reason: str
    propensity: float = 1.0


def popular_order(model: RecommenderModel, depth: int) -> IntArray:
    """Indices of the `depth` most popular items right now, most popular first (ties: oldest)."""
    n = model.n_items
    values = model.popularity.values[:n]
    top = np.argpartition(-values, depth)[:depth] if depth < n else np.arange(n)
    order = np.lexsort((top, -values[top]))
    return top[order].astype(np.int64)


def _top(
    items: IntArray, scores: FloatArray, exclude: IntArray, k: int
) -> tuple[IntArray, FloatArray]:
    """The k best (item, score) pairs not in `exclude`, best first; ties broken by item index."""
    if len(exclude) and len(items):
        keep = ~np.isin(items, exclude)
        items, scores = items[keep], scores[keep]
    keep = scores > 0.0
    items, scores = items[keep], scores[keep]
    if len(items) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        items, scores = items[part], scores[part]
    order = np.lexsort((items, -scores))
    return items[order], scores[order]


def _fill(chosen: list[int], exclude: IntArray, popular: IntArray, k: int) -> list[int]:
    """Popular items not seen and not already chosen, to fill the list up to k."""
    if len(chosen) >= k:
        return []
    blocked = set(exclude.tolist())
    blocked.update(chosen)
    extra: list[int] = []
    for item in popular.tolist():
        if item not in blocked:
            extra.append(item)
            if len(chosen) + len(extra) == k:
                break
    return extra


def top_items(model: RecommenderModel, user: int | None, k: int, popular: IntArray) -> IntArray:
    """The item indices a user would be shown (model picks, then popular fill). For evaluation."""
    if user is None:
        return popular[:k]
    exclude = model.seen_items(user)
    items, scores = model.ranker.candidates(user, model.positive_items(user))
    best, _ = _top(items, scores, exclude, k)
    picked = best.tolist()
    return np.array(picked + _fill(picked, exclude, popular, k), dtype=np.int64)


def recommend(model: RecommenderModel, users: Sequence[int], k: int) -> list[list[Slot]]:
    """One top-K list per user, with a source and a human-readable reason for every item."""
    popular = popular_order(model, k + model.settings.history_length)
    dense = getattr(model.ranker, "score_dense", None)
    lists: list[list[Slot]] = []
    for start in range(0, len(users), DENSE_BLOCK_USERS if dense else len(users) or 1):
        block = list(users[start : start + DENSE_BLOCK_USERS]) if dense else list(users)
        block_scores = dense(np.array(block, dtype=np.int64)) if dense else None
        all_items = np.arange(model.n_items, dtype=np.int64)
        for row, user in enumerate(block):
            history = model.positive_items(user)
            exclude = model.seen_items(user)
            if block_scores is not None:
                items, scores = all_items, block_scores[row, : model.n_items]
            else:
                items, scores = model.ranker.candidates(user, history)
            best, best_scores = _top(items, scores, exclude, k)
            slots = [
                Slot(item, score, "model", _reason(model, user, history, item))
                for item, score in zip(best.tolist(), best_scores.tolist(), strict=True)
            ]
            cold = len(exclude) == 0
            for item in _fill([s.item for s in slots], exclude, popular, k):
                reason = "trending now (new here? start exploring)" if cold else "trending now"
                slots.append(Slot(item, float(model.popularity.values[item]), "popular", reason))
            lists.append(slots)
        if not dense:
            break
    return lists


def _reason(model: RecommenderModel, user: int, history: IntArray, item: int) -> str:
    anchor = model.ranker.explain(user, history, item)
    if anchor is None:
        return "matches your taste"
    return f"because you liked {model.item_ids[anchor]}"
