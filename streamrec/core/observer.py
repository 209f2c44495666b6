"""What the core reports about each batch it processed, and the interface it reports through.

The core must not know Prometheus (nor any other metrics library), yet operators need to see
what every batch did. So the pipeline states facts, one `BatchReport` per batch, and hands them
to a `BatchObserver`; `streamrec.obs.metrics.Metrics` implements that protocol structurally and
turns the facts into counters and histograms, each in one place (`Metrics.record_batch`). A
report carries what the pipeline already holds (the published lists, the dead letters, the
bandit's feedback) by reference, so making one costs the core nothing per event; the counting
happens only in an observer that wants it.

Every batch is reported exactly once. A pipeline used on its own (replay, bench, tests) reports
at the end of `Pipeline.process`. The service still has a stage to go after that (publishing),
so it calls `process(..., report=False)`, fills in `BatchReport.published`, and reports the
batch itself: otherwise the publish figures of a batch would be counted apart from the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streamrec.bandit.rewards import Feedback
from streamrec.contract.events import Recommendation
from streamrec.contract.records import DeadLetter

__all__ = ["NO_OBSERVER", "BatchObserver", "BatchReport", "NoObserver", "Published"]


@dataclass(slots=True)
class Published:
    """What the service adds once a batch's outputs were handed to its sink."""

    records: int
    """Records in the consumed batch: valid, invalid and duplicate alike."""
    relearned: int
    """Events of the batch that this process had learned before, ahead of a rollback."""
    publish_s: float
    """From the end of `Pipeline.process` to the outputs handed over (the `publish` stage)."""
    total_s: float
    """The whole batch, from handing it to the pipeline to its outputs handed over."""
    at: float
    """Unix time of the hand-over: each event's publish latency counts from its timestamp to it."""


@dataclass(slots=True)
class BatchReport:
    """The facts of one processed batch, as the pipeline saw them."""

    consumed: dict[str, int]
    """Valid events by event type (invalid records are the dead letters)."""
    learned: int
    duplicates: int
    dead_letters: Sequence[DeadLetter]
    recommendations: Sequence[Recommendation]
    """The refreshed lists, as they go to the sink."""
    event_timestamps_ms: Sequence[int]
    """Message timestamps of the valid records, for the event-to-publish latency."""
    feedback: Feedback
    """The bandit's bookkeeping of the batch: rewards joined, lists resolved, lists pending."""
    rating_predictions: Sequence[tuple[float, float]]
    """(predicted, actual) of the sampled rating events, predicted before learning them."""
    top_k_hits: Sequence[bool]
    """Of the sampled positive events: was the item in the user's top-K before learning it?"""
    decode_s: float
    learn_s: float
    refresh_s: float
    model_users: int
    model_items: int
    model_events_learned: int
    catalog_records: int = 0
    """Catalog records applied (items, retirements, rules)."""
    rule_items: dict[tuple[str, str], int] | None = None
    """Items affected per (rule, effect): filtered, boosted, pinned, capped."""
    published: Published | None = None
    """None from a pipeline used on its own: nothing was published, so no publish figures."""


class BatchObserver(Protocol):
    """Whatever the pipeline reports its batches to (`streamrec.obs.metrics.Metrics`)."""

    def record_batch(self, report: BatchReport) -> None:
        """Take one batch's report; called once per batch, when the batch is done."""


class NoObserver:
    """Reports to nobody: the observer of a pipeline made without metrics, so the pipeline need
    not check for one."""

    def record_batch(self, report: BatchReport) -> None:
        pass


NO_OBSERVER = NoObserver()
