"""Records in from a Kafka consumer group: the record path of the service.

`KafkaSource` wraps one confluent-kafka consumer: it subscribes, polls batches (a
`streamrec.io.edges.Source`), hands out only records of partitions it owns at or past their
position (which moves past each), and commits offsets. Which partitions it owns, from where, and
what a log reset is belong to `streamrec.io.partitions`, whose rebalance callbacks librdkafka
runs inside `consume()` on the polling thread; the names it defines are importable from here too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamrec.contract.records import Record
from streamrec.errors import StreamrecError
from streamrec.io.broker_watch import BrokerWatch
from streamrec.io.kafka_config import consumer_config
from streamrec.io.partitions import (
    NOT_OWNED,
    TP,
    LogResetError,
    PartitionListener,
    Partitions,
    fmt_offsets,
)
from streamrec.settings import KafkaSettings, Settings

__all__ = [
    "TP",
    "KafkaSource",
    "LogResetError",
    "PartitionListener",
    "fmt_offsets",
    "to_record",
]

log = logging.getLogger(__name__)


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
        self.metrics = metrics
        self.watch = watch
        config = consumer_config(kafka, stats_cb=self._on_statistics, error_cb=self._on_error)
        self.consumer = Consumer(config)
        self.partitions = Partitions(
            self.consumer,
            listener,
            settings,
            incremental="cooperative" in str(config.get("partition.assignment.strategy", "")),
            metrics=metrics,
        )
        self._fatal: StreamrecError | None = None
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
            subscribed_topics(self.kafka),
            on_assign=self.partitions.on_assign,
            on_revoke=self.partitions.on_revoke,
            on_lost=self.partitions.on_lost,
        )

    def close(self) -> None:
        self.partitions.closing = True
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
        positions = self.partitions.positions
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_message_error(message, error)
                continue
            record = to_record(message)
            key = (record.topic, record.partition)
            position = positions.get(key, NOT_OWNED)
            if position == NOT_OWNED:
                continue  # fetched before a revoke: no longer ours
            if position is not None and record.offset < position:
                self.partitions.reset(key, f"a record at offset {record.offset} arrived below it")
                continue
            positions[key] = record.offset + 1
            records.append(record)
        self._raise_or_reset()
        return records

    def _raise_or_reset(self) -> None:
        """A fatal consumer error, else the log resets noted (never raised from inside a
        librdkafka callback, where an exception would leave the consumer half-updated)."""
        if self._fatal is not None:
            raise self._fatal
        self.partitions.raise_or_reset()

    @property
    def positions(self) -> dict[TP, int | None]:
        """Next offset to learn per owned partition (None before its first record)."""
        return self.partitions.positions

    @property
    def rebalances(self) -> int:
        """Rebalance callbacks so far (the idle clock restarts at each)."""
        return self.partitions.rebalances

    def owned(self) -> list[TP]:
        return list(self.partitions.positions)

    def offsets(self) -> dict[TP, int]:
        """Next offset to learn of every owned partition that has one (what a checkpoint holds)."""
        return {k: v for k, v in self.partitions.positions.items() if v is not None}

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

    # -- ownership (see streamrec.io.partitions) --

    def pause(self) -> None:
        """Stop fetching; rebalance callbacks are still served by `poll`."""
        self.partitions.pause()

    def resume(self) -> None:
        """Fetch again, every partition paused."""
        self.partitions.resume()

    def reposition(self) -> None:
        """Every owned partition back to where the listener's (reloaded) model stands."""
        self.partitions.reposition()

    # -- consumer callbacks --

    def _on_statistics(self, stats: bytes | str) -> None:
        doc = orjson.loads(stats)
        if self.metrics is not None:
            self.metrics.set_lag_from_statistics(doc)
        if self.watch is not None:
            self.watch.on_statistics(doc)
        self.partitions.check_statistics(doc)

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
            if key in self.partitions.positions:
                self.partitions.reset(key, f"Kafka reports the offset out of range ({error.str()})")
                return
        if error.fatal():
            raise StreamrecError(f"fatal Kafka consumer error: {error.str()}")
        # Retried by librdkafka (a topic not created yet, a broker restarting): at most once a
        # minute per error code.
        now = time.monotonic()
        if now - self._last_logged.get(code, -math.inf) >= 60.0:
            self._last_logged[code] = now
            log.warning("consumer: %s", error.str())


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


def subscribed_topics(kafka: KafkaSettings) -> list[str]:
    """The event topics, and the catalog topic if one is set, unless this consumer reads the
    learn log: catalog records then arrive through it, forwarded in order with the events."""
    topics = list(kafka.topics)
    reads_learn_log = kafka.learn_log_topic is not None and kafka.learn_log_topic in topics
    if kafka.catalog_topic is not None and not reads_learn_log:
        topics.append(kafka.catalog_topic)
    return topics
