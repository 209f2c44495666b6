"""The one pipeline: a batch of raw records in → learn each event → refreshed lists out.

`streamrec run` (Kafka) and `streamrec replay` (file) both drive this object, so a replay test
tests production code. It knows nothing of Kafka or files: sources hand it `Record`s, sinks take
its `BatchResult`. Per batch:

    for each record: preprocess (decode, validate, dedup, guard)   nothing here reads the model
    live quality:    every Nth valid event scored against the model as it is (metrics only)
    for each event:  [evaluate] → join its reward → learn → mark the user dirty
    end of batch:    refresh every dirty user's top-K → Recommendation messages (each one
                     tracked by the bandit's `RewardLoop`) → settle resolved lists into policy
                     updates and decision-log lines
    report:          the batch's facts (`BatchReport`) to the metrics, once: here, or by the
                     service after it published them (core/observer.py)

Learning is per event and independent of where batch boundaries fall, so a model rebuilt from a
checkpoint plus the replayed tail is identical to one that never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamrec.bandit.policies import SlotPolicy
from streamrec.bandit.rewards import PendingRewards, RewardLoop
from streamrec.contract.catalog import CatalogItem, RetireItem, Rule
from streamrec.contract.events import (
    AnyEvent,
    ContextValue,
    RatingEvent,
    Recommendation,
    RecommendedItem,
)
from streamrec.contract.records import DeadLetter, Record
from streamrec.core.model import RecommenderModel, canonical_digest
from streamrec.core.observer import NO_OBSERVER, BatchObserver, BatchReport
from streamrec.core.preprocess import Preprocessor
from streamrec.core.quality import LiveQuality, LiveScores
from streamrec.core.recommend import recommend, slot_context
from streamrec.core.rules import RuleMeter
from streamrec.errors import CheckpointError
from streamrec.settings import ModelSettings

__all__ = ["BatchResult", "DeadLetter", "Pipeline", "PipelineState", "Record"]

Observer = Callable[[RecommenderModel, AnyEvent], None]
"""Called with each valid event *before* the model learns it (test-then-learn evaluation)."""

_CATALOG_TYPES = (CatalogItem, RetireItem, Rule)


@dataclass
class BatchResult:
    recommendations: list[Recommendation] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    learned: int = 0
    duplicates: int = 0
    # Message timestamps (ms) of the records whose users were refreshed, for latency metrics.
    event_timestamps_ms: list[int] = field(default_factory=list)
    # One line per resolved slot (streamrec.bandit.offpolicy.logs.LoggedDecision fields), for
    # evaluation; only from a Pipeline made with decision_log=True.
    decisions: list[dict[str, Any]] = field(default_factory=list)
    # What the metrics are told about the batch; filled by `Pipeline.process`.
    report: BatchReport | None = None


STATE_FORMAT = 7
"""Bump when the pickled layout of the model, a learner or the bandit state changes: unpickling
does not run `__init__`, so an object from an older layout would miss attributes and fail later,
mid-stream. A mismatch is refused up front instead. Moving a pickled class to another module
changes the layout too (a pickle names each class by module path): 5 is the learners/, bandit/
and evaluate/ packages, 6 the core/ package (model, pipeline, preprocess) of issue 17, 7 the
model's catalog."""


@dataclass
class PipelineState:
    """Everything a checkpoint must hold about the pipeline (positions are the service's)."""

    model: RecommenderModel
    preprocessor: Preprocessor
    policy: SlotPolicy
    pending: PendingRewards
    format_version: int = STATE_FORMAT


class Pipeline:
    def __init__(
        self,
        settings: ModelSettings,
        *,
        metrics: BatchObserver | None = None,
        observer: Observer | None = None,
        state: PipelineState | None = None,
        decision_log: bool = False,
        require_key: bool = False,
        catalog_topic: str | None = None,
    ) -> None:
        self.settings = settings
        # Records of this topic (or forwarded from it, with a learn log) are catalog records.
        self.catalog_topic = catalog_topic
        # Where each batch is reported; nobody without metrics, so `process` need not check.
        self.metrics: BatchObserver = metrics if metrics is not None else NO_OBSERVER
        # Kafka records must be keyed by user_id (one user's events stay ordered); a keyless one
        # is a dead letter (missing_key), judged after its value (see Preprocessor.check).
        self.require_key = require_key
        self.observer = observer
        # Live quality costs a model evaluation per sample: only when someone reads the scores.
        self.live_quality = (
            LiveQuality(settings.k, settings.online_eval_every)
            if metrics is not None and settings.online_eval_every
            else None
        )
        if state is None:
            state = PipelineState(
                RecommenderModel(settings),
                Preprocessor(settings),
                SlotPolicy(settings.exploration, settings.exploration_params, settings.seed),
                PendingRewards(settings.reward_window_s, settings.max_pending),
            )
        self.model = state.model
        self.preprocessor = state.preprocessor
        self.policy = state.policy
        self.rewards = RewardLoop(
            state.policy,
            state.pending,
            click_reward=settings.click_reward,
            purchase_reward=settings.purchase_reward,
            decision_log=decision_log,
        )

    @classmethod
    def from_state(cls, settings: ModelSettings, state: PipelineState, **kwargs: Any) -> Pipeline:
        found = getattr(state, "format_version", None)
        if found != STATE_FORMAT:
            raise CheckpointError(
                f"the checkpoint holds model state format {found}, this streamrec reads format "
                f"{STATE_FORMAT}: run the version that wrote it, or start from a new state dir "
                "(the consumer then relearns from the committed offsets)"
            )
        return cls(settings, state=state, **kwargs)

    def state(self) -> PipelineState:
        return PipelineState(self.model, self.preprocessor, self.policy, self.rewards.pending)

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
        """Digest of what was learned from events (not of exploration, which depends on when
        lists were refreshed, i.e. on batch boundaries)."""
        return self.model.digest()

    def state_digest(self) -> str:
        """Digest of the whole state: the model, the dedup window and origins, the exploration
        policy and the rewards it awaits. Replicas of one learn log that stand at the same
        position have the same one (the model digest alone leaves out exploration)."""
        preprocessor = self.preprocessor.__getstate__()
        del preprocessor["settings"]  # configuration, as in the model's digest
        return canonical_digest(
            [self.model.digest(), preprocessor, self.policy, self.rewards.pending]
        )

    def process(
        self, records: Sequence[Record], *, refresh: bool = True, report: bool = True
    ) -> BatchResult:
        """Learn every valid record in order; then refresh the users it touched.

        The batch's `result.report` goes to the metrics before this returns, unless `report` is
        False: then the caller completes it (the service adds its publish stage) and reports it.
        """
        started = time.perf_counter()
        result = BatchResult()
        # Users to refresh, in arrival order, with the context of their latest event (rules).
        dirty: dict[int, dict[str, ContextValue] | None] = {}
        now = time.time()
        consumed: dict[str, int] = {}
        check, learn, observer = self.preprocessor.check, self.model.learn, self.observer
        require_key, rewards = self.require_key, self.rewards
        # Pass 1: decode, validate, dedup (none of it depends on the model).
        events: list[AnyEvent] = []
        catalog_topic = self.catalog_topic
        catalog_records = 0
        for record in records:
            if catalog_topic is not None and _topic(record) == catalog_topic:
                change = self.preprocessor.check_catalog(record)
                if change is None:
                    result.duplicates += 1
                elif isinstance(change, DeadLetter):
                    result.dead_letters.append(change)
                else:
                    events.append(change)  # type: ignore[arg-type]  # learned in order below
                    catalog_records += 1
                continue
            outcome = check(record, now, require_key)
            if outcome is None:
                result.duplicates += 1
            elif isinstance(outcome, DeadLetter):
                result.dead_letters.append(outcome)
            else:
                events.append(outcome)
                if record.timestamp_ms is not None:
                    result.event_timestamps_ms.append(record.timestamp_ms)
        decoded_at = time.perf_counter()
        sampled = events
        if catalog_records:
            sampled = [e for e in events if not isinstance(e, _CATALOG_TYPES)]
        scores = (
            self.live_quality(self.model, sampled)  # before learning them
            if self.live_quality is not None and sampled
            else LiveScores()
        )
        # Pass 2: learn, in order.
        learn_catalog = self.model.learn_catalog
        for event in events:
            if catalog_records and isinstance(event, _CATALOG_TYPES):
                learn_catalog(event)
                continue
            consumed[event.type] = consumed.get(event.type, 0) + 1
            if not isinstance(event, RatingEvent):
                rewards.join(event)
            if observer is not None:
                observer(self.model, event)
            dirty[learn(event)] = event.context
        result.learned = sum(consumed.values())
        learned_at = time.perf_counter()
        rewards.expire(self.model.last_event_time)
        meter = RuleMeter()
        if refresh and dirty:
            result.recommendations = self.refresh(
                list(dirty), track=True, contexts=list(dirty.values()), meter=meter
            )
        # After the refresh: this batch's lists draw from the policy before it learns what the
        # lists resolved now earned (the order decides every later draw).
        feedback = rewards.settle()
        result.decisions = feedback.decisions
        done = time.perf_counter()
        model = self.model
        result.report = BatchReport(
            consumed=consumed,
            learned=result.learned,
            catalog_records=catalog_records,
            rule_items=meter.counts,
            duplicates=result.duplicates,
            dead_letters=result.dead_letters,
            recommendations=result.recommendations,
            event_timestamps_ms=result.event_timestamps_ms,
            feedback=feedback,
            rating_predictions=scores.ratings,
            top_k_hits=scores.hits,
            decode_s=decoded_at - started,
            learn_s=learned_at - decoded_at,
            refresh_s=done - learned_at,
            model_users=model.n_users,
            model_items=model.n_items,
            model_events_learned=model.events_learned,
        )
        if report:
            self.metrics.record_batch(result.report)
        return result

    def flush_pending(self) -> list[dict[str, Any]]:
        """Resolve every list still awaiting rewards (end of a replay); their decision lines."""
        return self.rewards.flush()

    def refresh(
        self,
        users: Sequence[int],
        *,
        track: bool = False,
        contexts: Sequence[dict[str, ContextValue] | None] | None = None,
        meter: RuleMeter | None = None,
    ) -> list[Recommendation]:
        """Fresh top-K messages for these users (indices).

        With `track`, each list awaits its rewards (the lists it supersedes resolve at the end
        of the batch); without it, e.g. when only looking, nothing is tracked. `contexts`: per
        user, the request context rules test (`when`); `meter` counts what each rule did.
        """
        model = self.model
        generated_at = datetime.now(UTC)
        version = model.events_learned
        messages = []
        item_ids = model.item_ids
        contextual = self.policy.contextual
        lists = recommend(model, users, self.settings.k, self.policy, contexts, meter)
        for user, slots in zip(users, lists, strict=True):
            user_id = model.user_ids[user]
            rec_id = f"{version:x}-{user:x}"
            if track:
                self.rewards.track(
                    rec_id,
                    user_id,
                    model.last_event_time,
                    [item_ids[slot.item] for slot in slots],
                    slots,
                    slot_context(model, user) if contextual else None,
                )
            messages.append(
                Recommendation(
                    rec_id,
                    user_id,
                    generated_at,
                    version,
                    [
                        RecommendedItem(
                            item_ids[slot.item],
                            slot.score,
                            rank,
                            slot.source,
                            slot.propensity,
                            slot.reason,
                        )
                        for rank, slot in enumerate(slots, start=1)
                    ],
                )
            )
        return messages


def _topic(record: Record) -> str:
    """The topic a record was first written to (a learn-log record names it in its origin)."""
    return record.origin.rpartition(":")[0] if record.origin else record.topic
