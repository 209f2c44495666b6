"""Prequential (test-then-learn) evaluation of the live model, event by event.

`PrequentialEvaluator` is a pipeline observer: it sees every valid event just *before* the model
learns it, so each prediction is honest (the model has never seen that event).

- rating events: the predicted rating (clipped to the scale) → RMSE, MAE;
- positive events (click, purchase, rating ≥ threshold) whose user is known and whose item is new
  to that user: the user's top-K among items seen so far, history excluded → hit rate
  (= Recall@K with one held-out item), NDCG@K.

Totals cover the whole stream; `series` holds the same metrics per window of `window` events.
`cold_recall_at_k` is the hit rate of the positives whose item had at most `COLD_INTERACTIONS`
earlier events: how well brand-new items find their users (what content features are for).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.contract.events import AnyEvent, RatingEvent
from streamrec.core.model import RecommenderModel
from streamrec.core.recommend import popular_order, top_items
from streamrec.learners.base import IntArray


class PopularCache:
    """The popularity order used to fill lists, recomputed when the model has learned more than
    `max_staleness` events since (0: after every event, as the offline protocol wants; the live
    service allows some staleness, since ranking the whole catalog per sample is costly)."""

    def __init__(self, max_staleness: int = 0) -> None:
        self.max_staleness = max_staleness
        self._order: IntArray | None = None
        self._version = -1

    def order(self, model: RecommenderModel, k: int) -> IntArray:
        stale = model.events_learned - self._version > self.max_staleness
        if stale or self._order is None:
            self._order = popular_order(model, k + model.settings.history_length)
            self._version = model.events_learned
        return self._order

    def shown_if_evaluable(
        self, model: RecommenderModel, event: AnyEvent, k: int
    ) -> IntArray | None:
        """The top-K the user would see now, if this positive event is evaluable (user known,
        item new to them); None otherwise."""
        user = model.user_index.get(event.user_id)
        if user is None or model.has_seen(event.user_id, event.item_id):
            return None
        (shown,) = top_items(model, [user], k, self.order(model, k))
        return shown


def hit_position(model: RecommenderModel, event: AnyEvent, shown: IntArray) -> int | None:
    """0-based position of the event's item in `shown`, or None for a miss."""
    target = model.item_index.get(event.item_id)
    if target is None:
        return None
    found = np.flatnonzero(shown == target)
    return int(found[0]) if len(found) else None


COLD_INTERACTIONS = 5
"""An item with at most this many earlier events (of any type) counts as cold."""


@dataclass
class _Totals:
    events: int = 0
    ratings: int = 0
    squared_error: float = 0.0
    absolute_error: float = 0.0
    positives: int = 0
    hits: int = 0
    dcg: float = 0.0
    cold_positives: int = 0
    cold_hits: int = 0

    def summary(self, k: int) -> dict[str, Any]:
        return {
            "rmse": math.sqrt(self.squared_error / self.ratings) if self.ratings else None,
            "mae": self.absolute_error / self.ratings if self.ratings else None,
            "recall_at_k": self.hits / self.positives if self.positives else None,
            "ndcg_at_k": self.dcg / self.positives if self.positives else None,
            "cold_recall_at_k": (
                self.cold_hits / self.cold_positives if self.cold_positives else None
            ),
            "evaluated_ratings": self.ratings,
            "evaluated_positive": self.positives,
            "evaluated_cold_positive": self.cold_positives,
            "k": k,
        }


@dataclass
class PrequentialEvaluator:
    k: int = 10
    window: int = 5_000
    total: _Totals = field(default_factory=_Totals)
    current: _Totals = field(default_factory=_Totals)
    series: list[dict[str, Any]] = field(default_factory=list)
    recommended_items: set[int] = field(default_factory=set)
    _window_started: float = field(default_factory=time.perf_counter)
    _popular_cache: PopularCache = field(default_factory=lambda: PopularCache())
    _item_events: dict[str, int] = field(default_factory=dict)

    def __call__(self, model: RecommenderModel, event: AnyEvent) -> None:
        for totals in (self.total, self.current):
            totals.events += 1
        if isinstance(event, RatingEvent):
            error = model.predict_rating(event.user_id, event.item_id) - event.rating
            for totals in (self.total, self.current):
                totals.ratings += 1
                totals.squared_error += error * error
                totals.absolute_error += abs(error)
        earlier = self._item_events.get(event.item_id, 0)
        self._item_events[event.item_id] = earlier + 1
        if model.positive_weight(event) > 0.0:
            shown = self._popular_cache.shown_if_evaluable(model, event, self.k)
            if shown is not None:
                self.recommended_items.update(shown.tolist())
                position = hit_position(model, event, shown)
                cold = earlier <= COLD_INTERACTIONS
                for totals in (self.total, self.current):
                    totals.positives += 1
                    totals.cold_positives += cold
                    if position is not None:
                        totals.hits += 1
                        totals.cold_hits += cold
                        totals.dcg += 1.0 / math.log2(position + 2)
        if self.current.events >= self.window:
            self.close_window()

    def close_window(self) -> None:
        """End the current window (also call once at the end of a stream)."""
        if self.current.events == 0:
            return
        now = time.perf_counter()
        elapsed = now - self._window_started
        row = self.current.summary(self.k)
        row["events"] = self.total.events
        row["events_per_second"] = self.current.events / elapsed if elapsed > 0 else None
        self.series.append(row)
        self.current = _Totals()
        self._window_started = now

    def report(self, n_items: int) -> dict[str, Any]:
        out = self.total.summary(self.k)
        out["coverage"] = len(self.recommended_items) / n_items if n_items else 0.0
        out["series"] = self.series
        return out


LIVE_POPULARITY_STALENESS = 1_000
"""Events the live evaluator's popularity fill may lag behind the model."""


@dataclass(slots=True)
class LiveScores:
    """What `LiveQuality` scored in one batch, for the batch's report (and so the metrics)."""

    ratings: list[tuple[float, float]] = field(default_factory=list)  # (predicted, actual)
    hits: list[bool] = field(default_factory=list)  # one per evaluable positive event


class LiveQuality:
    """Prequential quality on the live stream, sampled: what the metrics' recent windows average.

    Called once per batch with its valid events, *before* the batch is learned: every
    `sample_every`-th event is scored against the model as it stood at the start of the batch,
    which has not learned it (prequential, though up to one batch staler than the per-event
    replay evaluator). Scoring the batch's samples together costs one matrix product per block
    instead of one small product per sample, which is most of an evaluation's cost.

    It returns the scores rather than counting them: they belong to the batch's report, which
    the metrics record in one place with the rest of the batch (streamrec.core.observer).
    """

    def __init__(self, k: int, sample_every: int) -> None:
        self.k = k
        self.sample_every = sample_every
        self._countdown = sample_every  # valid events until the next sample, this one included
        self._popular_cache = PopularCache(max_staleness=LIVE_POPULARITY_STALENESS)

    def __call__(self, model: RecommenderModel, events: Sequence[AnyEvent]) -> LiveScores:
        scores = LiveScores()
        first = self._countdown - 1
        if first >= len(events):
            self._countdown -= len(events)
            return scores
        sampled = events[first :: self.sample_every]
        last = first + (len(sampled) - 1) * self.sample_every
        self._countdown = self.sample_every - (len(events) - 1 - last)
        evaluable: list[tuple[int, AnyEvent]] = []
        for event in sampled:
            if isinstance(event, RatingEvent):
                predicted = model.predict_rating(event.user_id, event.item_id)
                scores.ratings.append((predicted, event.rating))
            if model.positive_weight(event) > 0.0:
                user = model.user_index.get(event.user_id)
                if user is not None and not model.has_seen(event.user_id, event.item_id):
                    evaluable.append((user, event))
        if not evaluable:
            return scores
        popular = self._popular_cache.order(model, self.k)
        shown = top_items(model, [user for user, _ in evaluable], self.k, popular)
        for (_, event), items in zip(evaluable, shown, strict=True):
            scores.hits.append(hit_position(model, event, items) is not None)
        return scores
