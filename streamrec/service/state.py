"""What the service has learned and where in the streams it stands: restored from checkpoints,
saved to them, rolled back to them.

`ModelState` pairs the pipeline with the offsets its state has consumed. For partitions this
instance owns, the offsets live in the Kafka source (`KafkaSource.positions`); for partitions it
knows but does not own right now (from the restored checkpoint, or given away in a revoke) they
live here in `known`, consulted once when the partition is assigned (`start_offset`). `topic_ids`
says which log (topic id) those offsets were learned on, so a recreated topic is detected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING

from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.io.kafka_source import TP, fmt_offsets
from streamrec.settings import Settings
from streamrec.store.checkpoint import Checkpoint, CheckpointMeta, CheckpointStore

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Counters of one run, reported after every batch and returned at the end."""

    consumed: int = 0  # records taken from Kafka (valid, invalid and duplicate)
    learned: int = 0  # events learned in this run (replays after a rollback count again)
    relearned: int = 0  # of those, events learned again after a rollback in this run
    dead_letters: int = 0
    duplicates: int = 0
    published: int = 0  # recommendation lists handed to the producer
    checkpoints: int = 0
    rollbacks: int = 0  # times the model went back to its last checkpoint (see Worker.recover)
    events_learned: int = 0  # the model's total, across restarts
    users: int = 0
    items: int = 0
    assigned: int = 0  # partitions owned now


@dataclass
class RunSummary(Progress):
    stopped_by: str = ""  # "max_events", "idle", "signal" or "stop"
    elapsed_s: float = 0.0
    model_digest: str = ""
    checkpoint: str | None = None  # path of the last checkpoint written or restored


class ServiceState:
    """What a checkpoint holds besides offsets: the pipeline state."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def model_digest(self) -> str:
        """Used by `checkpoint.inspect` for checkpoints whose header has no digest."""
        return str(Pipeline.from_state(self.pipeline.model.settings, self.pipeline).model_digest())


class OffsetLedger:
    """Every consumed offset as [start, end) ranges per partition; overlaps are double learning.

    Only kept with `service.offset_ledger` (it grows with every gap in the offsets).
    """

    def __init__(self, ranges: dict[str, list[list[int]]] | None = None) -> None:
        self.ranges: dict[str, list[list[int]]] = ranges or {}

    def add(self, records: Sequence[Record]) -> None:
        for record in records:
            spans = self.ranges.setdefault(f"{record.topic}:{record.partition}", [])
            if spans and spans[-1][1] == record.offset:
                spans[-1][1] += 1
            else:
                spans.append([record.offset, record.offset + 1])


class ModelState:
    """The pipeline, the offsets it has learned up to, and the checkpoints that hold both."""

    def __init__(
        self,
        settings: Settings,
        store: CheckpointStore,
        metrics: Any = None,
        *,
        replica: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.pipeline = self._new_pipeline()
        self.ledger = OffsetLedger() if settings.service.offset_ledger else None
        # Offsets this model has learned up to, of partitions not owned right now.
        self.known: dict[TP, int] = {}
        # Partitions whose checkpoint offset wins even over a higher committed offset: those of
        # a checkpoint restored by falling back past a rejected newer one.
        self.trust_checkpoint: set[TP] = set()
        self.topic_ids: dict[str, str] = {}
        self.reset_topics: set[str] = set()  # logs reset in this run: start at their beginning
        # A replica of a learn log (streamrec.service.forwarder) is alone in its group: what the
        # group committed is its own past, never another instance's work.
        self.replica = replica
        self.restored = False
        self.committed_events = 0  # events_learned of the newest durable checkpoint
        self.last_checkpoint_path: Path | None = None
        self._digest: tuple[int, str] | None = None  # (events_learned, digest) last computed

    def _new_pipeline(self, state: Any = None) -> Pipeline:
        options: dict[str, Any] = {
            "metrics": self.metrics,
            "require_key": self.settings.kafka.require_key,
            "catalog_topic": self.settings.kafka.catalog_topic,
        }
        if state is None:
            return Pipeline(self.settings.model, **options)
        return Pipeline.from_state(self.settings.model, state, **options)

    # -- restore --

    def restore(self) -> Checkpoint | None:
        """Load the newest verified checkpoint (or start a new model); at start."""
        checkpoint = self.store.latest()
        self.load(checkpoint)
        self.restored = True
        return checkpoint

    def reload(self) -> None:
        """Back to the newest checkpoint: whatever was learned since is discarded."""
        self.load(self.store.latest())

    def load(self, checkpoint: Checkpoint | None) -> None:
        self._digest = None
        if checkpoint is None:
            self.pipeline = self._new_pipeline()
            self.known, self.trust_checkpoint, self.topic_ids = {}, set(), {}
            self.ledger = OffsetLedger() if self.settings.service.offset_ledger else None
            self.committed_events = 0
            log.info("no checkpoint in %s: starting with a new model", self.store.directory)
            return
        meta = checkpoint.meta
        self.pipeline = self._new_pipeline(checkpoint.state.pipeline)
        self.known = dict(meta.offsets)
        self.trust_checkpoint = set(self.known) if checkpoint.fell_back else set()
        self.topic_ids = dict(meta.extra.get("topic_ids") or {})
        if self.settings.service.offset_ledger:
            self.ledger = OffsetLedger(meta.extra.get("ledger"))
        self.committed_events = meta.events_learned
        self.last_checkpoint_path = checkpoint.path
        if self.metrics is not None:
            created = checkpoint.path.stat().st_mtime
            self.metrics.checkpoint_last_success_timestamp_seconds.set(created)
        log.info(
            "restored checkpoint %s: %d events learned, %d users, %d items, offsets %s",
            checkpoint.path.name,
            meta.events_learned,
            meta.users,
            meta.items,
            fmt_offsets(meta.offsets),
        )

    # -- positions --

    def start_offset(self, key: TP, committed: int | None) -> int | None:
        """Where an assigned partition starts: this model's offset for it, unless the group
        committed further (another instance learned those events since) and this model's offset
        is not one to trust over the group's (see checkpoint.py, falling back)."""
        ours = self.known.pop(key, None)
        trusted = key in self.trust_checkpoint
        self.trust_checkpoint.discard(key)
        if self.replica:
            # Only this state's own position counts: without a checkpoint (a new state dir under
            # an old instance id) the replica learns the learn log again from its start.
            if ours is None and committed is not None:
                log.warning(
                    "%s:%d: no checkpoint here, but this replica's group committed %d: learning "
                    "the learn log again from its start",
                    *key,
                    committed,
                )
            return OFFSET_BEGINNING if ours is None else ours
        if ours is None:
            if committed is None and key[0] in self.reset_topics:
                return OFFSET_BEGINNING
            return committed
        if committed is None or trusted or ours >= committed:
            return ours
        log.info(
            "%s:%d: the group committed %d beyond our checkpoint's %d (another instance learned "
            "them); starting there",
            *key,
            committed,
            ours,
        )
        return committed

    def check_topic(self, topic: str, topic_id: str) -> str | None:
        """Record `topic`'s current id; the id this model's offsets of it were learned on, if
        that differs (the topic was deleted and recreated since)."""
        old = self.topic_ids.get(topic)
        self.topic_ids[topic] = topic_id
        return old if old and old != topic_id else None

    def forget_topic(self, topic: str) -> None:
        """The offsets known for `topic` belong to a log that is gone."""
        for key in [k for k in self.known if k[0] == topic]:
            del self.known[key]
            self.trust_checkpoint.discard(key)
        self.reset_topics.add(topic)

    def remember(self, positions: Mapping[TP, int | None], keys: Sequence[TP]) -> None:
        """Partitions are given away: keep how far this model learned them."""
        for key in keys:
            position = positions.get(key)
            if position is not None:
                self.known[key] = position

    # -- checkpoint --

    def save(
        self, offsets: Mapping[TP, int], reason: str, *, final: bool
    ) -> tuple[CheckpointMeta, Path, int]:
        """Write a checkpoint of the model at `offsets`; durable when this returns."""
        extra: dict[str, Any] = {"reason": reason, "topic_ids": dict(self.topic_ids)}
        if self.ledger is not None:
            extra["ledger"] = self.ledger.ranges
        pipeline = self.pipeline
        meta, path, size = self.store.save(
            ServiceState(pipeline.state()),
            offsets,
            events_learned=pipeline.events_learned,
            users=pipeline.n_users,
            items=pipeline.n_items,
            model_digest=self.digest() if final else "",
            extra=extra,
        )
        self.committed_events = meta.events_learned
        self.last_checkpoint_path = path
        return meta, path, size

    def digest(self) -> str:
        """The model digest, computed at most once per model version (it is slow)."""
        learned = self.pipeline.events_learned
        if self._digest is None or self._digest[0] != learned:
            self._digest = (learned, self.pipeline.model_digest())
        return self._digest[1]
