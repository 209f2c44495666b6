"""The one pipeline: a batch of raw records in → learn each event → refreshed lists out.

`streamrec run` (Kafka) and `streamrec replay` (file) both drive this object, so a replay test
tests production code. It knows nothing of Kafka or files: sources hand it `Record`s, sinks take
its `BatchResult`. Per batch:

    for each record: preprocess (decode, validate, dedup, guard) → [evaluate] → learn → mark dirty
    end of batch:    refresh every dirty user's top-K → Recommendation messages

Learning is per event and independent of where batch boundaries fall, so a model rebuilt from a
checkpoint plus the replayed tail is identical to one that never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streamrec.events import AnyEvent, Recommendation, RecommendedItem
from streamrec.model import RecommenderModel
from streamrec.preprocess import DeadLetter, Preprocessor, Record
from streamrec.recommend import recommend
from streamrec.settings import ModelSettings

if TYPE_CHECKING:
    from streamrec.metrics import Metrics

__all__ = ["BatchResult", "DeadLetter", "Pipeline", "PipelineState", "Record"]

Observer = Callable[[RecommenderModel, AnyEvent], None]
"""Called with each valid event *before* the model learns it (test-then-learn evaluation)."""


@dataclass
class BatchResult:
    recommendations: list[Recommendation] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    learned: int = 0
    duplicates: int = 0
    # Message timestamps (ms) of the records whose users were refreshed, for latency metrics.
    event_timestamps_ms: list[int] = field(default_factory=list)


@dataclass
class PipelineState:
    """Everything a checkpoint must hold about the pipeline (positions are the service's)."""

    model: RecommenderModel
    preprocessor: Preprocessor
    format_version: int = 1


class Pipeline:
    def __init__(
        self,
        settings: ModelSettings,
        *,
        metrics: Metrics | None = None,
        observer: Observer | None = None,
        state: PipelineState | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.observer = observer
        self.model = state.model if state else RecommenderModel(settings)
        self.preprocessor = state.preprocessor if state else Preprocessor(settings)

    @classmethod
    def from_state(cls, settings: ModelSettings, state: PipelineState, **kwargs: Any) -> Pipeline:
        return cls(settings, state=state, **kwargs)

    def state(self) -> PipelineState:
        return PipelineState(self.model, self.preprocessor)

    @property
    def events_learned(self) -> int:
        return self.model.events_learned

    @property
    def n_users(self) -> int:
        return self.model.n_users

    @property
    def n_items(self) -> int:
        return self.model.n_items

    def model_digest(self) -> str:
        return self.model.digest()

    def process(self, records: Sequence[Record], *, refresh: bool = True) -> BatchResult:
        """Learn every valid record in order; then refresh the users it touched."""
        started = time.perf_counter()
        result = BatchResult()
        dirty: dict[int, None] = {}  # insertion-ordered set: lists come out in arrival order
        now = time.time()
        consumed: dict[str, int] = {}
        check, learn, observer = self.preprocessor.check, self.model.learn, self.observer
        for record in records:
            outcome = check(record, now)
            if outcome is None:
                result.duplicates += 1
                continue
            if isinstance(outcome, DeadLetter):
                result.dead_letters.append(outcome)
                continue
            consumed[outcome.type] = consumed.get(outcome.type, 0) + 1
            if observer is not None:
                observer(self.model, outcome)
            dirty[learn(outcome)] = None
            if record.timestamp_ms is not None:
                result.event_timestamps_ms.append(record.timestamp_ms)
        result.learned = sum(consumed.values())
        learned_at = time.perf_counter()
        if refresh and dirty:
            result.recommendations = self.refresh(list(dirty))
        if self.metrics is not None:
            self._record_metrics(result, consumed, started, learned_at)
        return result

    def refresh(self, users: Sequence[int]) -> list[Recommendation]:
        """Fresh top-K messages for these users (indices)."""
        model = self.model
        generated_at = datetime.now(UTC)
        version = model.events_learned
        messages = []
        for user, slots in zip(users, recommend(model, users, self.settings.k), strict=True):
            user_id = model.user_ids[user]
            messages.append(
                Recommendation(
                    rec_id=f"{version:x}-{user:x}",
                    user_id=user_id,
                    generated_at=generated_at,
                    model_version=version,
                    items=[
                        RecommendedItem(
                            item_id=model.item_ids[slot.item],
                            score=slot.score,
                            rank=rank,
                            source=slot.source,  # type: ignore[arg-type]
                            propensity=slot.propensity,
                            reason=slot.reason,
                        )
                        for rank, slot in enumerate(slots, start=1)
                    ],
                )
            )
        return messages

    def _record_metrics(
        self, result: BatchResult, consumed: dict[str, int], started: float, learned_at: float
    ) -> None:
        m = self.metrics
        assert m is not None
        done = time.perf_counter()
        for event_type, n in consumed.items():
            m.events_consumed_total.labels(type=event_type).inc(n)
        for dead in result.dead_letters:
            m.dead_letters_total.labels(reason=dead.reason).inc()
        if result.dead_letters:
            m.events_consumed_total.labels(type="invalid").inc(len(result.dead_letters))
        if result.duplicates:
            m.duplicates_total.inc(result.duplicates)
        m.events_learned_total.inc(result.learned)
        m.batch_duration_seconds.labels(stage="learn").observe(learned_at - started)
        m.batch_duration_seconds.labels(stage="refresh").observe(done - learned_at)
        m.model_users.set(self.model.n_users)
        m.model_items.set(self.model.n_items)
        m.model_events_learned.set(self.model.events_learned)
