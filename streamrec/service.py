"""The Kafka run loop: consume a batch → process → publish → checkpoint when due → commit.

Delivery semantics (DESIGN.md, "State and delivery semantics"):

* Model updates are effectively-once. The checkpoint holds the pipeline state and, for every
  partition this instance owns, the next offset that state has not learned. On start the newest
  verified checkpoint is restored; on assignment each partition starts at its checkpoint offset
  (or, if the group's committed offset is further, there: another instance learned those events
  since), else at the committed offset, else at the earliest. Records below a partition's
  position are never learned, so a replayed tail cannot be learned twice.
* Offsets are committed only after the checkpoint that holds them is durable. The order of a
  commit point, written here because everything depends on it:

      1. flush the producer      recommendations and dead letters of the covered events are
                                 delivered (else DeliveryError: stop, nothing below happens)
      2. persist the checkpoint  temp file, fsync, rename, fsync dir (else CheckpointError)
      3. commit the offsets      exactly the offsets recorded in that checkpoint

  A crash or failure before 3 leaves Kafka's committed offsets where they were and the previous
  checkpoint in place: the restart replays the tail. A failed commit (3) is only logged: this
  instance trusts its checkpoint, and the group offset catches up at the next commit point.
* Commit points happen every `checkpoint_every_events` records or `checkpoint_every_seconds`,
  before partitions are revoked (so the next owner starts where this model stopped), and at
  shutdown (SIGTERM/SIGINT, burst-mode end). Lost partitions (the group expelled us, someone else
  may already own them) discard in-memory progress: the last checkpoint is reloaded.
* Recommendations and dead letters are at-least-once: after a crash the replayed tail publishes
  again. Recommendations are keyed by user_id and carry the model version, so consumers keep the
  latest per key and a duplicate is harmless.
* After a fallback to an older checkpoint (the newest failed verification, see checkpoint.py)
  its offsets win over the group's, so this model relearns the events it lost. With several
  instances, events another instance learned meanwhile from those partitions are learned again.

Model state is per instance: with several instances each learns from its own partitions.
Reconciling MF item factors between instances is a later issue; nothing here assumes one instance.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamrec.checkpoint import Checkpoint, CheckpointStore
from streamrec.checkpoint_key import signing_key
from streamrec.errors import StreamrecError
from streamrec.kafka_io import KafkaSink, consumer_config, producer_config, to_record
from streamrec.metrics import Metrics
from streamrec.metrics import serve as serve_metrics
from streamrec.pipeline import BatchResult, DeadLetter, Pipeline, Record
from streamrec.settings import Settings

log = logging.getLogger(__name__)

TP = tuple[str, int]
"""(topic, partition)."""

_NOT_OWNED = -1  # what `Worker.positions.get` returns for a partition not assigned here
MISSING_KEY = "record has no key; key events by user_id"


@dataclass
class Progress:
    """Counters of one run, reported after every batch and returned at the end."""

    consumed: int = 0  # records taken from Kafka (valid, invalid and duplicate)
    learned: int = 0  # events learned in this run (replays after a crash count again)
    dead_letters: int = 0
    duplicates: int = 0
    published: int = 0  # recommendation lists handed to the producer
    checkpoints: int = 0
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


GC_THRESHOLDS = (20_000, 20, 100)
"""CPython's cyclic collector thresholds while the service runs (the defaults are 700, 10, 10).

The loop allocates a few container objects per event (record, event, its field dict) that
reference counting frees, but each batch keeps its ~2,000 events alive until the batch ends. Under
the defaults they survive young collections, get promoted, and trigger a full collection every
~15k events, each walking every live object (pending lists, the bench's own data): measured at
~4 µs per event, a quarter of the end-to-end budget. With these thresholds a batch's objects die
before a collection sees them, and cyclic garbage is still collected, just less often.
"""

FINAL_REASONS = frozenset({"signal", "idle", "max_events", "stop"})
"""Commit points that end a run: only their checkpoints carry the model digest in the header.

The digest walks every parameter in Python (~1.4 s for a model of 5,000 users x 2,000 items,
against ~0.16 s to pickle it), so interval and revoke checkpoints leave it empty rather than
stall the stream; `checkpoint.inspect` computes it from the verified state when it is missing.
"""


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


class Worker:
    """The state shared by the consume loop and the rebalance callbacks of one consumer.

    The loop calls `handle()` and `commit_point()`; librdkafka calls `on_assign`, `on_revoke` and
    `on_lost` from inside `consume()`, on the same thread, so nothing here needs a lock.
    """

    def __init__(self, settings: Settings, store: CheckpointStore, metrics: Metrics | None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.pipeline = Pipeline(settings.model, metrics=metrics)
        self.ledger = OffsetLedger() if settings.service.offset_ledger else None
        self.consumer: Consumer | None = None
        self.sink: KafkaSink | None = None
        self.incremental = "cooperative" in str(
            consumer_config(settings.kafka).get("partition.assignment.strategy", "")
        )
        # Next offset to learn per owned partition; None until its first record (start resolved
        # by librdkafka from auto.offset.reset).
        self.positions: dict[TP, int | None] = {}
        # Offsets up to which this model has learned partitions it does not own right now (from
        # the restored checkpoint, or given away in a revoke); consulted once on assignment.
        self.known: dict[TP, int] = {}
        # Partitions whose checkpoint offset wins even over a higher committed offset: those of
        # a checkpoint restored by falling back past a rejected newer one (see module docstring).
        self.trust_checkpoint: set[TP] = set()
        self.restored = False
        self.failed = False  # after an error, callbacks must not checkpoint or commit
        self.changed = False  # positions moved since the last commit point
        self.rebalances = 0  # callbacks so far (the idle clock restarts at each)
        self._digest: tuple[int, str] | None = None  # (events_learned, digest) last computed
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.last_checkpoint_path: Path | None = None
        self.progress = Progress()

    # -- restore --

    def restore(self) -> Checkpoint | None:
        checkpoint = self.store.latest()
        self._load(checkpoint)
        self.restored = True
        self._update_ready()
        return checkpoint

    def _load(self, checkpoint: Checkpoint | None) -> None:
        self._digest = None
        if checkpoint is None:
            self.pipeline = Pipeline(self.settings.model, metrics=self.metrics)
            self.known = {}
            self.trust_checkpoint = set()
            self.ledger = OffsetLedger() if self.settings.service.offset_ledger else None
            log.info("no checkpoint in %s: starting with a new model", self.store.directory)
            return
        state: ServiceState = checkpoint.state
        self.pipeline = Pipeline.from_state(
            self.settings.model, state.pipeline, metrics=self.metrics
        )
        self.known = dict(checkpoint.meta.offsets)
        self.trust_checkpoint = set(self.known) if checkpoint.fell_back else set()
        if self.settings.service.offset_ledger:
            self.ledger = OffsetLedger(checkpoint.meta.extra.get("ledger"))
        self.last_checkpoint_path = checkpoint.path
        if self.metrics is not None:
            created = checkpoint.path.stat().st_mtime
            self.metrics.checkpoint_last_success_timestamp_seconds.set(created)
        log.info(
            "restored checkpoint %s: %d events learned, %d users, %d items, offsets %s",
            checkpoint.path.name,
            checkpoint.meta.events_learned,
            checkpoint.meta.users,
            checkpoint.meta.items,
            _fmt_offsets(checkpoint.meta.offsets),
        )

    # -- rebalance callbacks --

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        if self.metrics is not None:
            self.metrics.rebalances_total.labels(kind="assign").inc()
        committed = consumer.committed(partitions, timeout=30) if partitions else []
        for tp in committed:
            key = (tp.topic, tp.partition)
            tp.offset = self._start_offset(key, tp.offset if tp.offset >= 0 else None)
            self.positions[key] = tp.offset if tp.offset >= 0 else None
        if self.incremental:
            consumer.incremental_assign(committed)
        else:
            consumer.assign(committed)
        if committed:
            log.info("assigned %s", _fmt_offsets(self.positions))
        self._update_ready()

    def _start_offset(self, key: TP, committed: int | None) -> int:
        ours = self.known.pop(key, None)
        trusted = key in self.trust_checkpoint
        self.trust_checkpoint.discard(key)
        if ours is None:
            return committed if committed is not None else OFFSET_INVALID
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

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        if self.metrics is not None:
            self.metrics.rebalances_total.labels(kind="revoke").inc()
        if partitions and self.changed and not self.failed:
            # Before giving partitions up: the next owner starts at the offsets committed here.
            self.commit_point("revoke")
        self._forget(partitions)
        if self.incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group expelled us: another instance may already be learning these partitions.

        Whatever was learned since the last checkpoint may overlap with its work, so it is
        discarded by reloading the last checkpoint; owned partitions restart from there.
        """
        self.rebalances += 1
        if self.metrics is not None:
            self.metrics.rebalances_total.labels(kind="lost").inc()
        log.warning(
            "partitions lost (%s): discarding progress since the last checkpoint",
            ", ".join(f"{tp.topic}:{tp.partition}" for tp in partitions),
        )
        self._forget(partitions, keep_known=False)
        if self.incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        if self.failed:
            return
        self._load(self.store.latest())
        still_owned = list(self.positions)
        self.positions.clear()
        if still_owned:  # only under cooperative assignment, when part of it was lost
            committed = consumer.committed([TopicPartition(t, p) for t, p in still_owned], 30)
            for tp in committed:
                key = (tp.topic, tp.partition)
                start = self._start_offset(key, tp.offset if tp.offset >= 0 else None)
                self.positions[key] = start if start >= 0 else None
                if start >= 0:
                    consumer.seek(TopicPartition(tp.topic, tp.partition, start))
        self.changed = False
        self._update_ready()

    def _forget(self, partitions: list[TopicPartition], keep_known: bool = True) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            position = self.positions.pop(key, None)
            if keep_known and position is not None:
                self.known[key] = position
        if self.metrics is not None:
            self.metrics.forget_partitions((tp.topic, tp.partition) for tp in partitions)
        self._update_ready()

    def _update_ready(self) -> None:
        self.progress.assigned = len(self.positions)
        if self.metrics is not None:
            self.metrics.assigned_partitions.set(len(self.positions))
            self.metrics.set_ready(self.ready())

    def ready(self) -> bool:
        """Ready = model restored and partitions assigned (what /readyz reports)."""
        return self.restored and bool(self.positions)

    # -- one batch --

    def handle(self, messages: Sequence[Message]) -> BatchResult:
        """Learn a consumed batch and publish what it produced."""
        started = time.perf_counter()
        records: list[Record] = []
        keyless: list[DeadLetter] = []
        require_key = self.settings.kafka.require_key
        positions = self.positions
        for message in messages:
            error = message.error()
            if error is not None:
                _on_consumer_error(error)
                continue
            record = to_record(message)
            key = (record.topic, record.partition)
            position = positions.get(key, _NOT_OWNED)
            if position == _NOT_OWNED:
                continue  # fetched before a revoke: no longer ours
            if position is not None and record.offset < position:
                continue  # fetched before a seek back: already in the model
            positions[key] = record.offset + 1
            if require_key and record.key is None and record.value:
                keyless.append(DeadLetter(record, "missing_key", MISSING_KEY))
            else:
                records.append(record)
        if not records and not keyless:
            return BatchResult()
        result = self.pipeline.process(records)
        result.dead_letters.extend(keyless)
        processed = time.perf_counter()

        assert self.sink is not None
        self.sink.publish(result.recommendations)
        self.sink.dead_letter(result.dead_letters)
        if self.ledger is not None:
            self.ledger.add(records)
            self.ledger.add([d.record for d in keyless])

        n = len(records) + len(keyless)
        self.changed = True
        self.since_checkpoint += n
        p = self.progress
        p.consumed += n
        p.learned += result.learned
        p.dead_letters += len(result.dead_letters)
        p.duplicates += result.duplicates
        p.published += len(result.recommendations)
        if self.metrics is not None:
            m = self.metrics
            if result.event_timestamps_ms:
                sent_s = np.array(result.event_timestamps_ms, dtype=np.float64) / 1000.0
                latency = np.maximum(time.time() - sent_s, 0.0)
                m.event_to_publish_latency_seconds.observe_many(latency)
            for dead in keyless:
                m.dead_letters_total.labels(reason=dead.reason).inc()
            m.batch_size_events.observe(n)
            done = time.perf_counter()
            m.batch_duration_seconds.labels(stage="publish").observe(done - processed)
            m.batch_duration_seconds.labels(stage="total").observe(done - started)
        return result

    # -- checkpoint + commit --

    def checkpoint_due(self) -> bool:
        s = self.settings.service
        if not self.changed:
            return False
        return (
            self.since_checkpoint >= s.checkpoint_every_events
            or time.monotonic() - self.last_checkpoint >= s.checkpoint_every_seconds
        )

    def commit_point(self, reason: str) -> None:
        """flush producer → persist checkpoint → commit offsets (see the module docstring).

        Each step raises on failure, so a later step never runs after a failed earlier one.
        """
        assert self.consumer is not None and self.sink is not None
        started = time.perf_counter()
        offsets = {k: v for k, v in self.positions.items() if v is not None}
        try:
            self.sink.flush(self.settings.service.flush_timeout_s)  # 1
            extra: dict[str, Any] = {"reason": reason}
            if self.ledger is not None:
                extra["ledger"] = self.ledger.ranges
            pipeline = self.pipeline
            meta, path, size = self.store.save(  # 2
                ServiceState(pipeline.state()),
                offsets,
                events_learned=pipeline.events_learned,
                users=pipeline.n_users,
                items=pipeline.n_items,
                model_digest=self.digest() if reason in FINAL_REASONS else "",
                extra=extra,
            )
        except Exception:
            self.failed = True
            if self.metrics is not None:
                self.metrics.checkpoints_total.labels(result="error").inc()
            raise
        if offsets:
            commit = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
            try:
                self.consumer.commit(offsets=commit, asynchronous=False)  # 3
            except KafkaException as exc:
                log.warning(
                    "checkpoint %s is durable but committing its offsets failed (%s); the "
                    "group offset catches up at the next commit point",
                    path.name,
                    exc.args[0] if exc.args else exc,
                )
        duration = time.perf_counter() - started
        self.changed = False
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.last_checkpoint_path = path
        self.progress.checkpoints += 1
        if self.metrics is not None:
            m = self.metrics
            m.checkpoints_total.labels(result="ok").inc()
            m.checkpoint_duration_seconds.observe(duration)
            m.batch_duration_seconds.labels(stage="checkpoint").observe(duration)
            m.checkpoint_size_bytes.set(size)
            m.checkpoint_last_success_timestamp_seconds.set(time.time())
        log.info(
            "checkpoint %s (%s): %d events learned, %d bytes, %.1f ms, offsets %s",
            path.name,
            reason,
            meta.events_learned,
            size,
            duration * 1000,
            _fmt_offsets(offsets),
        )

    def digest(self) -> str:
        """The model digest, computed at most once per model version (it is slow)."""
        learned = self.pipeline.events_learned
        if self._digest is None or self._digest[0] != learned:
            self._digest = (learned, self.pipeline.model_digest())
        return self._digest[1]

    def snapshot(self) -> Progress:
        p = self.progress
        p.events_learned = self.pipeline.events_learned
        p.users = self.pipeline.n_users
        p.items = self.pipeline.n_items
        p.assigned = len(self.positions)
        return Progress(**asdict(p))


_last_logged: dict[int, float] = {}


def _on_consumer_error(error: KafkaError) -> None:
    """Fatal errors stop the service; others (a topic not created yet, a broker restarting) are
    retried by librdkafka and logged at most once a minute per error code."""
    if error.fatal():
        raise StreamrecError(f"fatal Kafka consumer error: {error}")
    code = error.code()
    if code == KafkaError._PARTITION_EOF:
        return
    now = time.monotonic()
    if now - _last_logged.get(code, -math.inf) >= 60.0:
        _last_logged[code] = now
        log.warning("consumer: %s", error)


def _fmt_offsets(offsets: Mapping[TP, int | None]) -> str:
    return ", ".join(f"{t}:{p}@{o}" for (t, p), o in sorted(offsets.items())) or "none"


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """GC_THRESHOLDS for the consume loop; what was there before afterwards.

    Objects alive at the start (the restored model, the process's own data) are frozen: they are
    long-lived, and a full collection need not walk them again.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


@contextmanager
def _stop_on_signals(
    stop: threading.Event, deadline_s: float, enabled: bool
) -> Iterator[dict[str, str]]:
    """SIGTERM/SIGINT ask the loop to stop; if the shutdown then overruns `deadline_s`, exit 70.

    The forced exit is a crash as far as state goes: the next start replays from the checkpoint.
    """
    info: dict[str, str] = {}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield info
        return

    def force_exit() -> None:
        log.error("shutdown did not finish within %.0f s; exiting without checkpoint", deadline_s)
        logging.shutdown()
        os._exit(70)

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            return
        info["signal"] = signal.Signals(signum).name
        log.info("%s received: finishing the batch, then checkpoint and commit", info["signal"])
        stop.set()
        timer = threading.Timer(deadline_s, force_exit)
        timer.daemon = True
        timer.start()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield info
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(
    settings: Settings,
    *,
    max_events: int | None = None,
    stop_when_idle: float | None = None,
    metrics: Metrics | None = None,
    on_batch: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> RunSummary:
    """`streamrec run`: consume, learn, publish and checkpoint until told to stop.

    Stops on SIGTERM/SIGINT (when called from the main thread), when `stop` is set, after
    `max_events` consumed records, or after `stop_when_idle` seconds without a record once
    partitions were assigned; every way ends with a final checkpoint and commit. Raises
    StreamrecError (CheckpointError, DeliveryError...) on failures that must stop the service; the
    last durable checkpoint is then what the next start resumes from.
    """
    started = time.monotonic()
    service = settings.service
    metrics = metrics if metrics is not None else Metrics()
    stop = stop if stop is not None else threading.Event()
    # First thing: without a key that was set on purpose nothing starts, not even /metrics.
    store = CheckpointStore(service.state_dir, signing_key(service), service.checkpoints_kept)
    worker = Worker(settings, store, metrics)
    # Serving before the restore: /healthz answers while a large checkpoint loads, /readyz waits.
    server = (
        serve_metrics(metrics, service.metrics_host, service.metrics_port, ready=worker.ready)
        if service.metrics_port
        else None
    )
    try:
        worker.restore()
        consumer = Consumer(
            consumer_config(settings.kafka, stats_cb=metrics.set_lag_from_statistics)
        )
        sink = KafkaSink(
            producer_config(settings.kafka),
            settings.kafka.recommendations_topic,
            settings.kafka.dlq_topic,
            metrics=metrics,
        )
    except BaseException:
        if server is not None:
            server.close()
        raise
    worker.consumer, worker.sink = consumer, sink
    stopped_by = "stop"
    try:
        consumer.subscribe(
            list(settings.kafka.topics),
            on_assign=worker.on_assign,
            on_revoke=worker.on_revoke,
            on_lost=worker.on_lost,
        )
        # Idle time counts from the last record or the last rebalance, whichever is later, and
        # only while partitions are owned: waiting for the group is not being idle.
        last_record: float | None = None
        rebalances_seen = -1
        with (
            _stop_on_signals(stop, service.shutdown_timeout_s, handle_signals) as signals,
            _collector_tuned(),
        ):
            while not stop.is_set():
                want = service.batch_size
                if max_events is not None:
                    want = min(want, max_events - worker.progress.consumed)
                    if want <= 0:
                        stopped_by = "max_events"
                        break
                messages = next_batch(consumer, want, service.poll_timeout_s)
                now = time.monotonic()
                if messages:
                    worker.handle(messages)
                    last_record = now
                    if on_batch is not None:
                        on_batch(worker.snapshot())
                if not worker.positions:
                    last_record = None
                elif last_record is None or worker.rebalances != rebalances_seen:
                    last_record, rebalances_seen = now, worker.rebalances
                sink.poll()
                sink.raise_if_fatal()
                if worker.checkpoint_due():
                    worker.commit_point("interval")
                if (
                    stop_when_idle is not None
                    and last_record is not None
                    and now - last_record >= stop_when_idle
                ):
                    stopped_by = "idle"
                    break
            if stop.is_set():
                stopped_by = "signal" if signals.get("signal") else "stop"
            if worker.changed:
                worker.commit_point(stopped_by)
    except BaseException:
        worker.failed = True  # the revoke inside close() must not checkpoint a failed state
        raise
    finally:
        _close(consumer, sink, server)
    summary = RunSummary(
        **asdict(worker.snapshot()),
        stopped_by=stopped_by,
        elapsed_s=time.monotonic() - started,
        model_digest=worker.digest(),
        checkpoint=str(worker.last_checkpoint_path) if worker.last_checkpoint_path else None,
    )
    log.info("stopped (%s): %s", stopped_by, summary)
    return summary


def next_batch(consumer: Consumer, size: int, timeout_s: float) -> list[Message]:
    """Up to `size` messages: what is already fetched, else the first to arrive within
    `timeout_s` plus whatever came with it.

    `consume(size, timeout)` alone waits until `size` messages arrived or the timeout passed,
    which at moderate rates adds the whole timeout to every event's latency (freshness target:
    p99 <= 50 ms). Rebalance callbacks are served by every call.
    """
    messages = consumer.consume(size, 0)
    if messages or size <= 1:
        return messages or consumer.consume(size, timeout_s)
    first = consumer.consume(1, timeout_s)
    if not first:
        return first
    return first + consumer.consume(size - 1, 0)


def _close(consumer: Consumer, sink: KafkaSink, server: Any) -> None:
    try:
        consumer.close()  # leaves the group now, so partitions move without a session timeout
    except (KafkaException, RuntimeError) as exc:
        log.warning("closing the consumer: %s", exc)
    sink.producer.flush(5.0)  # best effort: after a failure there may be nothing left to do
    if server is not None:
        server.close()


# -- `python -m streamrec.service` -------------------------------------------------------------


def settings_help() -> str:
    """Every setting with its environment variable, default and description (for --help)."""
    lines = [
        "settings (environment variable, default: description); a --config file (JSON/TOML) "
        "uses the same",
        'sections and names, e.g. {"kafka": {"consumer": {"security.protocol": "SASL_SSL"}}}:',
    ]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        for name, info in getattr(model, "model_fields", {}).items():
            default = info.get_default(call_default_factory=True)
            if name == "checkpoint_key":
                default = "no default: required, unless CHECKPOINT_KEY_FILE is set"
            described = f" {info.description}" if info.description else ""
            lines.append(f"  STREAMREC_{section.upper()}__{name.upper()} ({default!s}):{described}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streamrec.service",
        description="Run the streamrec Kafka consumer (what `streamrec run` calls): consume, "
        "learn, publish recommendations, checkpoint, commit. Flags override the config file, "
        "which overrides STREAMREC_* environment variables. kafka.consumer / kafka.producer "
        "are passed to librdkafka untouched (SASL, SSL, any option).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="settings file (JSON or TOML)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, HOST:PORT[,...]")
    parser.add_argument("--topics", help="event topics, comma-separated")
    parser.add_argument("--group-id", help="consumer group id")
    parser.add_argument("--state-dir", type=Path, help="where checkpoints are kept")
    parser.add_argument("--max-events", type=int, help="stop after this many records")
    parser.add_argument(
        "--stop-when-idle", type=float, metavar="SECONDS", help="stop after this long idle"
    )
    parser.add_argument("--checkpoint-every-events", type=int)
    parser.add_argument("--checkpoint-every-seconds", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--metrics-port", type=int, help="0 disables /metrics, /healthz, /readyz")
    parser.add_argument(
        "--progress", action="store_true", help="print one JSON line of counters per batch"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from streamrec.metrics import configure_logging
    from streamrec.settings import load_settings

    args = _parser().parse_args(argv)
    try:
        settings = load_settings(
            args.config,
            kafka={
                "bootstrap_servers": args.bootstrap_servers,
                "topics": args.topics.split(",") if args.topics else None,
                "group_id": args.group_id,
            },
            service={
                "state_dir": args.state_dir,
                "checkpoint_every_events": args.checkpoint_every_events,
                "checkpoint_every_seconds": args.checkpoint_every_seconds,
                "batch_size": args.batch_size,
                "metrics_port": args.metrics_port,
            },
        )
        configure_logging(settings.service.log_format, settings.service.log_level)

        def print_progress(progress: Progress) -> None:
            sys.stdout.write(orjson.dumps(asdict(progress)).decode() + "\n")
            sys.stdout.flush()

        summary = run(
            settings,
            max_events=args.max_events,
            stop_when_idle=args.stop_when_idle,
            on_batch=print_progress if args.progress else None,
        )
    except StreamrecError as exc:
        log.error("%s", exc)
        print(f"streamrec: error: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"summary": asdict(summary)}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    # Run the imported module, not this `__main__` copy: pickled classes (ServiceState) must be
    # named `streamrec.service.*`, or checkpoints written here would not load under `streamrec run`.
    from streamrec.service import main as _main

    sys.exit(_main())
