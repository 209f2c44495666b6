"""Records in from a Kafka consumer group: which partitions this instance owns, where each stands.

`KafkaSource` wraps one confluent-kafka consumer. It assigns every partition at an explicit offset
(asked of a `PartitionListener`, the service, which knows what its checkpoint holds), hands out
only records of partitions it owns at or past their position, and calls the listener back from
the rebalance callbacks, which librdkafka runs inside `consume()` on the polling thread.

**Log resets.** A partition whose log no longer holds the position the model stands at (the topic
was deleted and recreated, an in-memory broker restarted, retention removed events before they
were learned) must never be skipped silently. Four signs of it are watched:

1. the topic's id differs from the one the position was learned on (checked at assignment);
2. librdkafka reports `_AUTO_OFFSET_RESET` (Kafka answered a fetch with offset out of range:
   `auto.offset.reset` is forced to "error", see streamrec.io.kafka_config);
3. the fetch position lies outside the log's [start, end) in two statistics reports in a row
   (brokers that answer an out-of-range fetch with an empty one, as Tansu does);
4. a record arrives below the partition's position.

What happens then is `service.on_log_reset`: "fail" (the default) stops the service with a
message that says what to do, learning nothing more; "earliest" counts the reset in
`streamrec_log_resets_total`, logs it, and learns the partition again from its first offset.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streamrec.contract.records import Record
from streamrec.errors import StreamrecError
from streamrec.io.broker_watch import BrokerWatch
from streamrec.io.kafka_config import KafkaLog, consumer_config, initial_offset
from streamrec.settings import Settings

log = logging.getLogger(__name__)

TP = tuple[str, int]
"""(topic, partition)."""

_NOT_OWNED = -1  # what `positions.get` returns for a partition not assigned here
_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the all-zero Uuid of brokers without topic ids
_ADMIN_PREFIXES = ("security.", "sasl.", "ssl.", "client.", "socket.", "broker.")


class LogResetError(StreamrecError):
    """A partition's log no longer holds the position the model stands at (service.on_log_reset
    is "fail")."""


class PartitionListener(Protocol):
    """What the source asks of the service when partitions come and go."""

    def check_topic(self, topic: str, topic_id: str) -> str | None:
        """Note the id of `topic` now; the id its known offsets were learned on if different
        (the topic was deleted and recreated since), else None."""
        ...

    def forget_topic(self, topic: str) -> None:
        """`topic`'s log was reset: forget its known offsets; its partitions start over at the
        beginning of the new log."""
        ...

    def start_offset(self, key: TP, committed: int | None) -> int | None:
        """Where to start an assigned partition, given the group's committed offset (None: the
        configured initial offset); what the listener knew of the partition is used up."""
        ...

    def before_revoke(self, keys: list[TP]) -> None:
        """Partitions are about to move to another instance (commit what was learned of them)."""
        ...

    def after_lost(self, keys: list[TP]) -> None:
        """Partitions were taken without a revoke (this instance was expelled)."""
        ...


def to_record(message: Message) -> Record:
    """A consumed Kafka message as the pipeline's source-agnostic Record."""
    kind, timestamp = message.timestamp()
    return Record(
        message.value(),
        message.key(),
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        timestamp if kind != 0 else None,  # 0 = TIMESTAMP_NOT_AVAILABLE
    )


class KafkaSource:
    """The consumer side of the service."""

    def __init__(
        self,
        settings: Settings,
        listener: PartitionListener,
        *,
        metrics: Any = None,
        watch: BrokerWatch | None = None,
    ) -> None:
        kafka = settings.kafka
        self.kafka = kafka
        self.listener = listener
        self.metrics = metrics
        self.watch = watch
        self.policy = settings.service.on_log_reset
        self.initial = initial_offset(kafka)
        config = consumer_config(kafka, stats_cb=self._on_statistics, error_cb=self._on_error)
        self.incremental = "cooperative" in str(config.get("partition.assignment.strategy", ""))
        self.consumer = Consumer(config)
        self._admin_config: dict[str, Any] = {
            "bootstrap.servers": kafka.bootstrap_servers,
            "logger": KafkaLog(),
            **{k: v for k, v in kafka.consumer.items() if k.startswith(_ADMIN_PREFIXES)},
        }
        self._admin: AdminClient | None = None
        # Next offset to learn per owned partition; None until its first record (the start is a
        # logical offset librdkafka resolves).
        self.positions: dict[TP, int | None] = {}
        self.rebalances = 0  # callbacks so far (the idle clock restarts at each)
        self.paused = False
        self._paused_keys: set[TP] = set()
        self._suspect: dict[TP, int] = {}  # statistics reports in a row showing a reset
        self._pending_resets: dict[TP, str] = {}  # found in callbacks, handled in poll()
        self._fatal: StreamrecError | None = None
        self._current_ids: dict[str, str] = {}  # topic ids seen at the latest assignments
        self._last_logged: dict[int, float] = {}

    # -- lifecycle --

    def wait_until_reachable(self, timeout_s: float) -> None:
        """Fail with one clear line if no broker answers within `timeout_s` (at start)."""
        started = time.monotonic()
        try:
            self.consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            why = self.watch.last_error if self.watch and self.watch.last_error else exc.args[0]
            raise StreamrecError(
                f"cannot reach Kafka at {self.kafka.bootstrap_servers}: no answer in "
                f"{time.monotonic() - started:.0f} s ({why}). Check kafka.bootstrap_servers "
                "(STREAMREC_KAFKA__BOOTSTRAP_SERVERS, --bootstrap-servers) and that the broker "
                "is up; service.connect_timeout_s sets how long to wait"
            ) from None

    def subscribe(self) -> None:
        self.consumer.subscribe(
            list(self.kafka.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def close(self) -> None:
        try:
            self.consumer.close()  # leaves the group now: partitions move without a timeout
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the consumer: %s", exc)

    # -- records --

    def poll(self, size: int, timeout_s: float) -> list[Record]:
        """Up to `size` records of owned partitions, each at or past its partition's position
        (which moves past it). Rebalance and statistics callbacks run in here."""
        messages = _next_batch(self.consumer, size, timeout_s)
        self._raise_or_reset()
        records: list[Record] = []
        positions = self.positions
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_message_error(message, error)
                continue
            record = to_record(message)
            key = (record.topic, record.partition)
            position = positions.get(key, _NOT_OWNED)
            if position == _NOT_OWNED:
                continue  # fetched before a revoke: no longer ours
            if position is not None and record.offset < position:
                self._reset(key, f"a record at offset {record.offset} arrived below it")
                continue
            positions[key] = record.offset + 1
            records.append(record)
        self._raise_or_reset()
        return records

    def owned(self) -> list[TP]:
        return list(self.positions)

    def offsets(self) -> dict[TP, int]:
        """Next offset to learn of every owned partition that has one (what a checkpoint holds)."""
        return {k: v for k, v in self.positions.items() if v is not None}

    def commit(self, offsets: Mapping[TP, int], *, wait: bool) -> None:
        """Commit `offsets` to the group; failures are logged (the checkpoint is what counts)."""
        if not offsets:
            return
        commit = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
        try:
            if wait:
                self.consumer.commit(offsets=commit, asynchronous=False)
            else:
                self.consumer.commit(offsets=commit, asynchronous=True)
        except KafkaException as exc:
            log.warning(
                "committing offsets failed (%s); the group offset catches up at the next commit",
                exc.args[0] if exc.args else exc,
            )

    def pause(self) -> None:
        """Stop fetching (rebalance callbacks are still served by `poll`); partitions assigned
        while paused are paused too."""
        if not self.paused:
            self.paused = True
            self._pause(list(self.positions))
        self._show_paused()

    def resume(self) -> None:
        """Fetch again: every partition paused, including ones lost and assigned again since
        (librdkafka keeps a partition's pause across a reassignment)."""
        self.paused = False
        if self._paused_keys:
            tps = [TopicPartition(t, p) for t, p in sorted(self._paused_keys)]
            self._paused_keys.clear()
            with contextlib.suppress(KafkaException):  # partitions no longer assigned
                self.consumer.resume(tps)
        self._show_paused()

    def _pause(self, keys: list[TP]) -> None:
        if keys:
            self._paused_keys.update(keys)
            self.consumer.pause([TopicPartition(t, p) for t, p in keys])

    def _show_paused(self) -> None:
        if self.metrics is not None:
            self.metrics.consumption_paused.set(1.0 if self.paused else 0.0)

    def reposition(self) -> None:
        """Every owned partition back to where the listener's (reloaded) model stands."""
        owned = list(self.positions)
        if not owned:
            return
        for topic, topic_id in self._current_ids.items():
            # A checkpoint older than a reset handled (and counted) already: its offsets belong
            # to the old log.
            if self.listener.check_topic(topic, topic_id) is not None:
                self.listener.forget_topic(topic)
        committed = self._committed(owned)
        for key in owned:
            start = self.listener.start_offset(key, committed.get(key))
            self._start(key, start)
            self.consumer.seek(TopicPartition(*key, self._logical(start)))

    # -- rebalance callbacks --

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._count_rebalance("assign")
        keys = [(tp.topic, tp.partition) for tp in partitions]
        committed = self._committed(keys) if keys else {}
        self._check_topic_ids({t for t, _ in keys}, keys)
        assign = []
        for key in keys:
            start = self.listener.start_offset(key, committed.get(key))
            self._start(key, start)
            assign.append(TopicPartition(*key, self._logical(start)))
        if self.incremental:
            consumer.incremental_assign(assign)
        else:
            consumer.assign(assign)
        if self.paused:
            self._pause(keys)
        if keys:
            log.info("assigned %s", fmt_offsets({k: self.positions[k] for k in keys}))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._count_rebalance("revoke")
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if keys:
            self.listener.before_revoke(keys)
        self._forget(keys)
        if self.incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._count_rebalance("lost")
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.warning(
            "partitions lost (%s): discarding progress since the last checkpoint",
            ", ".join(f"{t}:{p}" for t, p in keys),
        )
        self._forget(keys)
        if self.incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        self.listener.after_lost(keys)

    def _count_rebalance(self, kind: str) -> None:
        self.rebalances += 1
        if self.metrics is not None:
            self.metrics.rebalances_total.labels(kind=kind).inc()

    def _forget(self, keys: list[TP]) -> None:
        for key in keys:
            self.positions.pop(key, None)
            self._suspect.pop(key, None)
        if self.metrics is not None:
            self.metrics.forget_partitions(keys)

    def _start(self, key: TP, start: int | None) -> None:
        self.positions[key] = start if start is not None and start >= 0 else None

    def _logical(self, start: int | None) -> int:
        return self.initial if start is None else start

    def _committed(self, keys: Sequence[TP]) -> dict[TP, int | None]:
        try:
            found = self.consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=30)
        except KafkaException as exc:
            raise StreamrecError(
                f"cannot read the group's committed offsets ({exc.args[0]}); a restart resumes "
                "from the last checkpoint"
            ) from None
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in found}

    # -- log resets --

    def _check_topic_ids(self, topics: set[str], keys: list[TP]) -> None:
        """A topic whose id differs from the one this model's offsets were learned on was
        deleted and recreated: under "earliest" the model forgets those offsets (counted once),
        under "fail" poll() raises before anything of it is learned."""
        current = self._topic_ids(topics)
        self._current_ids.update(current)
        for topic, topic_id in current.items():
            old = self.listener.check_topic(topic, topic_id)
            if old is None:
                continue
            why = f"the topic was deleted and recreated (its id changed from {old} to {topic_id})"
            if self.policy == "fail":
                key = next(k for k in keys if k[0] == topic)
                self._pending_resets[key] = why
            else:
                self._accept_reset(topic, why)
                self.listener.forget_topic(topic)

    def _topic_ids(self, topics: set[str]) -> dict[str, str]:
        if not topics:
            return {}
        if self._admin is None:
            self._admin = AdminClient(self._admin_config)
        ids = {}
        try:
            futures = self._admin.describe_topics(
                TopicCollection(sorted(topics)), request_timeout=10
            )
            for topic, future in futures.items():
                topic_id = str(future.result(timeout=10).topic_id)
                if topic_id and topic_id != _NO_TOPIC_ID:
                    ids[topic] = topic_id
        except (KafkaException, TimeoutError) as exc:
            log.warning("could not read topic ids (%s): a recreated topic is not detected", exc)
        return ids

    def _on_statistics(self, stats: bytes | str) -> None:
        doc = orjson.loads(stats)
        if self.metrics is not None:
            self.metrics.set_lag_from_statistics(doc)
        if self.watch is not None:
            self.watch.on_statistics(doc)
        for topic, topic_stats in (doc.get("topics") or {}).items():
            for partition, p in (topic_stats.get("partitions") or {}).items():
                key = (topic, int(partition))
                if key not in self.positions or not isinstance(p, Mapping):
                    continue
                if p.get("fetch_state") != "active":
                    continue
                low, high, fetching = (
                    p.get("lo_offset", -1),
                    p.get("hi_offset", -1),
                    p.get("next_offset", -1),
                )
                outside = fetching >= 0 and ((high >= 0 and fetching > high) or fetching < low)
                if not outside:
                    self._suspect.pop(key, None)
                    continue
                self._suspect[key] = self._suspect.get(key, 0) + 1
                if self._suspect[key] >= 2:  # twice in a row: not a stale report
                    self._suspect.pop(key)
                    self._pending_resets[key] = (
                        f"the log holds offsets {low}..{high - 1}, the fetch position is {fetching}"
                    )

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = StreamrecError(f"fatal Kafka consumer error: {error.str()}")
        elif self.watch is not None:
            self.watch.on_error(error)

    def _on_message_error(self, message: Message, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code == KafkaError._AUTO_OFFSET_RESET and message.topic():
            key = (message.topic() or "", message.partition() or 0)
            if key in self.positions:
                self._reset(key, f"Kafka reports the offset out of range ({error.str()})")
                return
        if error.fatal():
            raise StreamrecError(f"fatal Kafka consumer error: {error.str()}")
        # Retried by librdkafka (a topic not created yet, a broker restarting): at most once a
        # minute per error code.
        now = time.monotonic()
        if now - self._last_logged.get(code, -math.inf) >= 60.0:
            self._last_logged[code] = now
            log.warning("consumer: %s", error.str())

    def _reset(self, key: TP, why: str) -> None:
        """Note a reset of an owned partition; `_raise_or_reset` acts on it (never from inside
        a librdkafka callback, where an exception would leave the consumer half-updated)."""
        self._pending_resets[key] = why

    def _raise_or_reset(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if not self._pending_resets:
            return
        if self.policy == "fail":
            key, why = next(iter(self._pending_resets.items()))
            position = self.positions.get(key)
            raise LogResetError(
                f"the log of {key[0]}:{key[1]} was reset: {why}; this model has learned it up "
                f"to offset {position if position is not None else 'unknown'} (a topic deleted "
                "and recreated, a broker that lost its data, or retention removing events "
                "before they were learned do this); nothing more was learned from it. To learn the "
                "partition again from the start of its log, set service.on_log_reset=earliest "
                "(STREAMREC_SERVICE__ON_LOG_RESET); resets are then counted in "
                "streamrec_log_resets_total"
            )
        resets, self._pending_resets = self._pending_resets, {}
        for key, why in resets.items():
            if key in self.positions:
                self._accept_reset(f"{key[0]}:{key[1]}", why)
                self.positions[key] = None
                self.consumer.seek(TopicPartition(*key, OFFSET_BEGINNING))

    def _accept_reset(self, what: str, why: str) -> None:
        log.error(
            "the log of %s was reset (%s): learning it again from its first offset "
            "(service.on_log_reset=earliest); the model keeps what it learned before",
            what,
            why,
        )
        if self.metrics is not None:
            self.metrics.log_resets_total.inc()


def _next_batch(consumer: Consumer, size: int, timeout_s: float) -> list[Message]:
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


def fmt_offsets(offsets: Mapping[TP, int | None]) -> str:
    return ", ".join(f"{t}:{p}@{o}" for (t, p), o in sorted(offsets.items())) or "none"
