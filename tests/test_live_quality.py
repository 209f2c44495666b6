"""Live quality: which events are sampled across batches, and against which model state."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from streamrec.contract.events import RatingEvent
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.core.quality import LiveQuality
from streamrec.obs.metrics import Metrics
from streamrec.settings import ModelSettings


class _Model:
    """Just what LiveQuality reads; remembers which items it was asked to predict."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.user_index: dict[str, int] = {}
        self.events_learned = 0

    def predict_rating(self, user_id: str, item_id: str) -> float:
        self.asked.append(item_id)
        return 3.0

    def positive_weight(self, event: Any) -> float:
        return 0.0


def _rating(n: int) -> RatingEvent:
    return RatingEvent(
        event_id=f"e{n}", type="rating", user_id="u", item_id=f"i{n}", timestamp=1e12, rating=4.0
    )


def test_every_nth_valid_event_is_sampled_whatever_the_batch_boundaries() -> None:
    for sizes in ([7, 1, 5], [13], [1] * 13, [2, 0, 11]):
        model = _Model()
        live = LiveQuality(k=10, sample_every=3)
        start = 0
        scored: list[tuple[float, float]] = []
        for size in sizes:
            batch = [_rating(n) for n in range(start, start + size)]
            scored += live(model, batch).ratings  # type: ignore[arg-type]
            start += size
        assert model.asked == ["i2", "i5", "i8", "i11"], sizes
        assert scored == [(3.0, 4.0)] * 4  # (predicted, actual), for the batch's report


def test_samples_are_scored_against_the_model_at_the_start_of_their_batch() -> None:
    registry = CollectorRegistry()
    settings = ModelSettings(rating_model="biased_mf", ranker="mf", online_eval_every=2)
    pipeline = Pipeline(settings, metrics=Metrics(registry))
    # One user rates ten new items in batches of 4, 4, 2; every second event is sampled. At the
    # start of the first batch the user is unknown, so its samples get no top-K check.
    values = [
        orjson.dumps(
            {
                "event_id": f"e{n}",
                "type": "rating",
                "user_id": "u1",
                "item_id": f"i{n}",
                "timestamp": 1_767_225_600_000 + n,
                "rating": 5,
            }
        )
        for n in range(10)
    ]
    for start in (0, 4):
        pipeline.process([Record(v) for v in values[start : start + 4]])
    pipeline.process([Record(v) for v in values[8:]])
    value = registry.get_sample_value
    assert value("streamrec_online_evaluated_total", {"kind": "rating"}) == 5
    # Sampled: e1, e3 (batch 1, not top-K evaluable), e5, e7 (batch 2), e9 (batch 3).
    assert value("streamrec_online_evaluated_total", {"kind": "positive"}) == 3
