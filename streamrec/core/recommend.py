"""Top-K lists for a batch of users: ranker candidates, seen items excluded, explore slots.

Never `Ranker.rank()` (one `predict_one` per item, ~1 ms per user at 1,700 items): a sparse ranker
returns a few hundred candidates per user, a dense one scores the whole catalog for a block of
users with one matrix product (`score_dense`). Each slot is then filled from one source —
the model's next best item, a recently popular one, or a new one — chosen by the exploration
policy (`bandit.policies.SlotPolicy`), and carries the exact probability that it was shown there.
Nothing here creates model state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.bandit.policies import ARMS, SlotPolicy
from streamrec.contract.events import Source
from streamrec.core.model import RecommenderModel
from streamrec.learners.base import FloatArray, IntArray

DENSE_BLOCK_USERS = 256
"""Users scored per matrix product: bounds the temporary (users × items) score block."""


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~3x as much to build
class Slot:
    item: int
    score: float
    source: Source
    reason: str
    propensity: float = 1.0  # probability that this item was shown in this slot
    source_propensity: float = 1.0  # probability that this slot was filled from `source`


def popular_order(model: RecommenderModel, depth: int) -> IntArray:
    """Indices of the `depth` most popular items right now, most popular first (ties: oldest)."""
    n = model.n_items
    values = model.popularity.values[:n]
    top = np.argpartition(-values, depth)[:depth] if depth < n else np.arange(n)
    top = top[values[top] > 0.0]
    order = np.lexsort((top, -values[top]))
    return top[order].astype(np.int64)


def new_order(model: RecommenderModel, depth: int) -> IntArray:
    """Items first seen within `new_item_age_s` of the latest event, newest first."""
    first_seen = model.item_first_seen[: model.n_items]
    recent = np.flatnonzero(first_seen >= model.last_event_time - model.settings.new_item_age_s)
    return recent[np.argsort(-first_seen[recent], kind="stable")][:depth].astype(np.int64)


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


def _fill(blocked: set[int], queue: list[int], k: int) -> list[int]:
    """The first k items of `queue` not in `blocked` (seen or already chosen)."""
    extra: list[int] = []
    if k <= 0:
        return extra
    for item in queue:
        if item not in blocked:
            extra.append(item)
            if len(extra) == k:
                break
    return extra


def top_items(
    model: RecommenderModel, users: Sequence[int], k: int, popular: IntArray
) -> list[IntArray]:
    """What the model alone would show each (known) user: its picks, then popular fill. For
    evaluation; dense rankers score all the users with one matrix product per block."""
    fill = popular.tolist()
    shown = []
    for user, (best, _) in zip(users, _model_picks(model, users, k), strict=True):
        picked = best.tolist()
        blocked = set(model.seen[user]).union(picked)
        shown.append(np.array(picked + _fill(blocked, fill, k - len(picked)), dtype=np.int64))
    return shown


def _model_picks(
    model: RecommenderModel, users: Sequence[int], k: int
) -> list[tuple[IntArray, FloatArray]]:
    """Each user's k best unseen items by the ranker (dense rankers: one product per block)."""
    dense = getattr(model.ranker, "score_dense", None)
    picks = []
    if dense is None:
        for user in users:
            items, scores = model.ranker.candidates(user, model.positive_items(user))
            picks.append(_top(items, scores, model.seen_items(user), k))
        return picks
    n = model.n_items
    for start in range(0, len(users), DENSE_BLOCK_USERS):
        block = users[start : start + DENSE_BLOCK_USERS]
        scores = dense(np.asarray(block, dtype=np.int64), n)
        for row, user in enumerate(block):
            scores[row, model.seen_items(user)] = -np.inf  # a scratch copy from the product
        picks.extend(_top_rows(scores, k))
    return picks


def _top_rows(scores: FloatArray, k: int) -> list[tuple[IntArray, FloatArray]]:
    """Per row of a score block: the k best finite items, best first, ties by item index.

    One argpartition and one lexsort for the whole block: at these sizes, per-row numpy calls
    cost more in call overhead than in work.
    """
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if k < n_items:
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        best = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -best_scores), axis=1)  # -inf (masked) sorts last
    best = np.take_along_axis(best, order, axis=1).astype(np.int64)
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    n_finite = np.isfinite(best_scores).sum(axis=1).tolist()
    return [(best[row, :n], best_scores[row, :n]) for row, n in enumerate(n_finite)]


def recommend(
    model: RecommenderModel,
    users: Sequence[int],
    k: int,
    policy: SlotPolicy | None = None,
) -> list[list[Slot]]:
    """One top-K list per user; every item with its source, propensity and a readable reason."""
    policy = policy or SlotPolicy("none")
    depth = k + model.settings.history_length
    # Fill queues shared by every list; each list walks them past what its user has seen.
    popular = popular_order(model, depth).tolist()
    new = new_order(model, depth).tolist()
    contextual = policy.contextual
    choose = policy.choose
    cached: dict[tuple[str, ...], list[float]] = {}
    popularity = model.popularity.values
    lists = []
    for user, (best, best_scores) in zip(users, _model_picks(model, users, k), strict=True):
        seen = set(model.seen[user])
        cold = not seen
        best_items = best.tolist()
        model_scores = dict(zip(best_items, best_scores.tolist(), strict=True))
        context = slot_context(model, user) if contextual else None
        queues = (best_items, popular, new)  # in ARMS order; the model's picks are unseen
        position = [0, 0, 0]
        chosen: set[int] = set()
        picks: list[tuple[int, float, Source, float, float]] = []
        while len(picks) < k:
            # Each source's head: its next item neither seen by the user nor chosen already.
            arms: list[Source] = []
            heads: list[int] = []
            for a in (0, 1, 2):
                queue, i = queues[a], position[a]
                n = len(queue)
                while i < n and (queue[i] in chosen or (a and queue[i] in seen)):
                    i += 1
                position[a] = i
                if i < n:
                    arms.append(ARMS[a])
                    heads.append(queue[i])
            if not heads:
                break
            key = tuple(arms)
            if contextual:
                probs = _or_fill(policy.distribution(key, context), key)
            else:
                probs = cached.get(key) or cached.setdefault(
                    key, _or_fill(policy.distribution(key), key)
                )
            pick = choose(probs)
            item = heads[pick]
            propensity = 0.0  # every source whose head is this item would have shown it here
            for head, p in zip(heads, probs, strict=True):
                if head == item:
                    propensity += p
            score = model_scores.get(item)
            if score is None:
                score = float(popularity[item])
            picks.append((item, score, arms[pick], min(propensity, 1.0), probs[pick]))
            chosen.add(item)
        reasons = _reasons(
            model,
            user,
            model.positive_items(user),
            [(item, arm) for item, _, arm, _, _ in picks],
            cold,
        )
        lists.append(
            [
                Slot(item, score, arm, reason, propensity, source_propensity)
                for (item, score, arm, propensity, source_propensity), reason in zip(
                    picks, reasons, strict=True
                )
            ]
        )
    return lists


def _or_fill(probs: list[float], arms: tuple[str, ...]) -> list[float]:
    """`probs`, unless they are all zero (exploration off and the model has nothing left for
    this slot): then the list is filled from `popular` if it is among the arms, else the first."""
    if sum(probs) > 0.0:
        return probs
    fill = "popular" if "popular" in arms else arms[0]
    return [1.0 if arm == fill else 0.0 for arm in arms]


def slot_context(model: RecommenderModel, user: int) -> dict[str, float]:
    """Features a contextual exploration policy (LinUCB) sees for a user's slots."""
    return {"bias": 1.0, "history": float(np.log1p(len(model.seen[user])))}


def _reasons(
    model: RecommenderModel,
    user: int,
    history: IntArray,
    picks: list[tuple[int, Source]],
    cold: bool,
) -> list[str]:
    """A short reason per picked item; the model's items name the history item behind them."""
    ranker = model.ranker
    model_items = [item for item, source in picks if source == "model"]
    explain_many = getattr(ranker, "explain_many", None)
    if explain_many is not None:
        anchors = dict(zip(model_items, explain_many(user, history, model_items), strict=True))
    else:
        anchors = {item: ranker.explain(user, history, item) for item in model_items}
    reasons = []
    for item, source in picks:
        if source == "new":
            reasons.append("new here: just added to the catalog")
        elif source == "popular":
            reasons.append("trending now (new here? start exploring)" if cold else "trending now")
        else:
            anchor = anchors[item]
            reasons.append(
                "matches your taste"
                if anchor is None
                else f"because you liked {model.item_ids[anchor]}"
            )
    return reasons
