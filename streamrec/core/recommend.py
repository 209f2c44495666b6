"""Top-K lists for a batch of users: ranker candidates, seen items excluded, explore slots.

Never `Ranker.rank()` (one `predict_one` per item, ~1 ms per user at 1,700 items): a sparse ranker
returns a few hundred candidates per user, a dense one scores the whole catalog for a block of
users with one matrix product (`score_dense`). Each slot is then filled from one source —
the model's next best item, a recently popular one, or a new one — chosen by the exploration
policy (`bandit.policies.SlotPolicy`), and carries the exact probability that it was shown there.

With a catalog, the model's score of an item is a hybrid: the ranker's score scaled to [0, 1]
per user plus `content_weight` times the item's content similarity to the user's recent positives
(`core/content.py`), so an item with a catalog record ranks before its first click. Business rules
(`core/rules.py`) act before each slot is chosen: excluded items never enter a queue, boosts scale
model scores, pins take the first slots, caps skip a full category's items; the draw then runs
over what is left, so every logged propensity is the probability the draw actually used.
Nothing here creates model state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.bandit.policies import ARMS, SlotPolicy
from streamrec.contract.events import ContextValue, Source
from streamrec.core.model import RecommenderModel
from streamrec.core.rules import NO_RULES, ListRules, RuleMeter, resolve
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
    evaluation; exclusions and boosts apply (no request context), pins and caps do not."""
    fill = popular.tolist()
    rules = list_rules(model, [None] * len(users))
    excluded = set(rules[0].excluded.tolist()) if rules and len(rules[0].excluded) else set()
    shown = []
    for user, (best, _) in zip(users, _model_picks(model, users, k, rules), strict=True):
        picked = best[:k].tolist()  # a cap rule asks for deeper picks; caps do not apply here
        blocked = set(model.seen[user]).union(picked, excluded)
        shown.append(np.array(picked + _fill(blocked, fill, k - len(picked)), dtype=np.int64))
    return shown


def list_rules(
    model: RecommenderModel,
    contexts: Sequence[dict[str, ContextValue] | None],
    cache: dict[tuple[object, ...], ListRules] | None = None,
) -> list[ListRules]:
    """The rules of each request, resolved once per distinct set of applicable rules."""
    configured = model.settings.rules
    catalog = model.catalog
    if not configured and not catalog.unavailable and not catalog.rules:
        return [NO_RULES] * len(contexts)
    cache = {} if cache is None else cache
    return [resolve(configured, catalog, model.item_index, c, cache) for c in contexts]


def _model_picks(
    model: RecommenderModel,
    users: Sequence[int],
    k: int,
    rules: Sequence[ListRules],
    meter: RuleMeter | None = None,
) -> list[tuple[IntArray, FloatArray]]:
    """Each user's best unseen, not excluded items by the (hybrid) model score, best first: k of
    them, or 3k for a list whose caps may skip some (dense rankers: one product per block)."""
    dense = getattr(model.ranker, "score_dense", None)
    weight = model.settings.content_weight
    n = model.n_items
    picks = []
    for start in range(0, len(users), DENSE_BLOCK_USERS):
        block = users[start : start + DENSE_BLOCK_USERS]
        content = model.content_scores(np.asarray(block, dtype=np.int64))
        if dense is None:
            for row, user in enumerate(block):
                items, scores = model.ranker.candidates(user, model.positive_items(user))
                if content is not None:
                    items, scores = _hybrid_sparse(items, scores, content[row], weight)
                r = rules[start + row]
                depth = 3 * k if r.caps else k
                if r is NO_RULES:
                    picks.append(_top(items, scores, model.seen_items(user), depth))
                    continue
                exclude = model.seen_items(user)
                if len(r.excluded):
                    if meter is not None:
                        fresh = items[~np.isin(items, exclude)]
                        for name, excluded in r.exclusions:
                            meter.add(name, "filtered", int(np.isin(fresh, excluded).sum()))
                    exclude = np.concatenate((exclude, r.excluded))
                scores = _boosted(items, scores, r)
                picks.append(_top(items, scores, exclude, depth))
            continue
        scores = dense(np.asarray(block, dtype=np.int64), n)
        if content is not None:
            scores = _hybrid_dense(scores, content, weight)
        depth = k
        for row, user in enumerate(block):
            scores[row, model.seen_items(user)] = -np.inf  # a scratch copy from the product
            r = rules[start + row]
            if r is NO_RULES:
                continue
            if r.caps:
                depth = 3 * k
            for name, excluded in r.exclusions:
                if meter is not None:
                    meter.add(name, "filtered", int(np.isfinite(scores[row, excluded]).sum()))
                scores[row, excluded] = -np.inf
            for _, boosted, factor in r.boosts:
                scores[row, boosted] *= factor
        picks.extend(_top_rows(scores, depth))
    return picks


def _hybrid_dense(scores: FloatArray, content: FloatArray, weight: float) -> FloatArray:
    """Each row scaled to [0, 1] by its best finite score, plus `weight` × content; an item the
    ranker cannot score (-inf) but whose content matches gets the content part alone."""
    finite = np.isfinite(scores)
    top = np.where(finite, scores, -np.inf).max(axis=1, initial=-np.inf)
    scale = np.where(top > 0.0, top, 1.0)[:, None]
    base = np.where(finite, scores / scale, np.where(content > 0.0, 0.0, -np.inf))
    return base + weight * content


def _hybrid_sparse(
    items: IntArray, scores: FloatArray, content: FloatArray, weight: float
) -> tuple[IntArray, FloatArray]:
    """`_hybrid_dense` for one user's sparse candidates: every item with a positive score."""
    combined = weight * content
    if len(items):
        top = float(scores.max())
        if top > 0.0:
            np.add.at(combined, items, scores / top)
    keep = np.flatnonzero(combined > 0.0)
    return keep.astype(np.int64), combined[keep]


def _boosted(items: IntArray, scores: FloatArray, rules: ListRules) -> FloatArray:
    if not rules.boosts:
        return scores
    scores = scores.copy()
    for _, boosted, factor in rules.boosts:
        scores[np.isin(items, boosted)] *= factor
    return scores


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
    contexts: Sequence[dict[str, ContextValue] | None] | None = None,
    meter: RuleMeter | None = None,
) -> list[list[Slot]]:
    """One top-K list per user; every item with its source, propensity and a readable reason.

    `contexts`: per user, the request context that rules' `when` test; `meter` counts what each
    rule did to these lists.
    """
    policy = policy or SlotPolicy("none")
    rules = list_rules(model, contexts if contexts is not None else [None] * len(users))
    depth = k + model.settings.history_length
    # Fill queues shared by every list; each list walks them past what its user has seen.
    popular = popular_order(model, depth).tolist()
    new = new_order(model, depth).tolist()
    # Per distinct exclusion set: the fill queues without its items (deeper, to still fill k).
    filtered: dict[int, tuple[list[int], list[int]]] = {}
    contextual = policy.contextual
    choose = policy.choose
    cached: dict[tuple[str, ...], list[float]] = {}
    popularity = model.popularity.values
    categories = model.catalog.categories
    lists = []
    all_picks = _model_picks(model, users, k, rules, meter)
    for user, r, (best, best_scores) in zip(users, rules, all_picks, strict=True):
        seen = set(model.seen[user])
        cold = not seen
        best_items = best.tolist()
        model_scores = dict(zip(best_items, best_scores.tolist(), strict=True))
        context = slot_context(model, user) if contextual else None
        if len(r.excluded):
            queues_for = filtered.get(id(r.excluded))
            if queues_for is None:
                excluded = set(r.excluded.tolist())
                deeper = depth + len(excluded)
                queues_for = filtered.setdefault(
                    id(r.excluded),
                    (
                        [i for i in popular_order(model, deeper).tolist() if i not in excluded],
                        [i for i in new_order(model, deeper).tolist() if i not in excluded],
                    ),
                )
            queues = (best_items, *queues_for)
        else:
            queues = (best_items, popular, new)  # in ARMS order; the model's picks are unseen
        position = [0, 0, 0]
        chosen: set[int] = set()
        picks: list[tuple[int, float, Source, float, float]] = []
        for name, pinned, limit in r.pins:  # usually none
            excluded_now = r.excluded
            taken = 0
            for item in pinned:
                if taken == limit or len(picks) == k:
                    break
                if item in seen or item in chosen or _contains(excluded_now, item):
                    continue
                score = model_scores.get(item, float(popularity[item]))
                picks.append((item, score, "pinned", 1.0, 1.0))
                chosen.add(item)
                taken += 1
            if meter is not None:
                meter.add(name, "pinned", taken)
        caps = r.caps
        per_category: dict[tuple[str, str], int] = {}
        while len(picks) < k:
            # Each source's head: its next item neither seen by the user nor chosen already
            # (nor, under a cap rule, of a category the list holds enough of).
            arms: list[Source] = []
            heads: list[int] = []
            for a in (0, 1, 2):
                queue, i = queues[a], position[a]
                n = len(queue)
                while i < n and (
                    queue[i] in chosen
                    or (a and queue[i] in seen)
                    or (caps and _capped(r, categories.get(queue[i]), per_category, meter))
                ):
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
            if caps:
                _count_categories(r, categories.get(item), per_category)
        if meter is not None and r.boosts:
            shown = np.array([item for item, _, arm, _, _ in picks if arm == "model"], np.int64)
            for name, boosted, _ in r.boosts:
                meter.add(name, "boosted", int(np.isin(shown, boosted).sum()))
        reasons = _reasons(model, user, model.positive_items(user), picks, cold)
        lists.append(
            [
                Slot(item, score, arm, reason, propensity, source_propensity)
                for (item, score, arm, propensity, source_propensity), reason in zip(
                    picks, reasons, strict=True
                )
            ]
        )
    return lists


def _contains(sorted_items: IntArray, item: int) -> bool:
    at = int(np.searchsorted(sorted_items, item))
    return at < len(sorted_items) and int(sorted_items[at]) == item


def _capped(
    rules: ListRules,
    item_categories: tuple[str, ...] | None,
    per_category: dict[tuple[str, str], int],
    meter: RuleMeter | None,
) -> bool:
    """True if a cap rule's category of this item is full in the list (metered as capped)."""
    if not item_categories:
        return False
    for name, capped, limit in rules.caps:
        for category in item_categories:
            if (capped is None or category in capped) and per_category.get(
                (name, category), 0
            ) >= limit:
                if meter is not None:
                    meter.add(name, "capped", 1)
                return True
    return False


def _count_categories(
    rules: ListRules,
    item_categories: tuple[str, ...] | None,
    per_category: dict[tuple[str, str], int],
) -> None:
    for name, capped, _ in rules.caps:
        for category in item_categories or ():
            if capped is None or category in capped:
                per_category[(name, category)] = per_category.get((name, category), 0) + 1


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
    picks: list[tuple[int, float, Source, float, float]],
    cold: bool,
) -> list[str]:
    """A short reason per picked item, in words a person reads: the liked item behind a model
    pick by its title, the category of a popular or new one, and whether the slot explored."""
    ranker = model.ranker
    catalog = model.catalog
    ids = model.item_ids
    model_items = [item for item, _, source, _, _ in picks if source == "model"]
    explain_many = getattr(ranker, "explain_many", None)
    if explain_many is not None:
        anchors = dict(zip(model_items, explain_many(user, history, model_items), strict=True))
    else:
        anchors = {item: ranker.explain(user, history, item) for item in model_items}
    reasons = []
    for item, _, source, _, source_propensity in picks:
        category = catalog.first_category(item)
        if source == "pinned":
            reasons.append("featured")
            continue
        if source == "model":
            anchor = anchors[item]
            if anchor is None and len(catalog.content):
                anchor = catalog.content.most_similar(history, item)
            reasons.append(
                "matches your taste"
                if anchor is None
                else f"because you liked {catalog.title(anchor, ids[anchor])}"
            )
            continue
        if source == "new":
            reason = f"new in {category}" if category else "new here: just added to the catalog"
        elif category:
            reason = f"popular in {category} this week"
        else:
            reason = "trending now (new here? start exploring)" if cold else "trending now"
        # Drawn against the odds (an exploration slot): say so, as a person would.
        reasons.append(f"trying something new: {reason}" if source_propensity < 0.5 else reason)
    return reasons
