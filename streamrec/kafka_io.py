"""Kafka at the edges: client config, topics, records in, recommendations and dead letters out.

Everything here is a thin adapter around confluent-kafka; the consume loop and its delivery
semantics live in `service.py`. Options from `kafka.consumer` / `kafka.producer` settings are
passed to librdkafka untouched and override our defaults, except the few that the
effectively-once design depends on (`REQUIRED_CONSUMER`, `REQUIRED_PRODUCER`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.errors import StreamrecError
from streamrec.events import Recommendation, encode_recommendation
from streamrec.preprocess import DeadLetter, Record
from streamrec.settings import KafkaSettings

log = logging.getLogger(__name__)

DEFAULT_CONSUMER: dict[str, Any] = {
    "auto.offset.reset": "earliest",  # a new group learns the whole history, not just the future
    # Incremental rebalances: keeping partitions need no checkpoint, only moving ones do.
    "partition.assignment.strategy": "cooperative-sticky",
    # A dead instance's partitions move within seconds (the librdkafka default of 45 s is a long
    # outage for a recommender). Heartbeats come from librdkafka's own thread, so a slow batch or
    # checkpoint does not count against it; max.poll.interval.ms (5 min) bounds those.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1500,
    # Freshness target is p99 <= 50 ms; 10 ms keeps fetches cheap without idling the broker.
    "fetch.wait.max.ms": 10,
    "statistics.interval.ms": 5000,  # consumer lag per partition, for metrics
}
REQUIRED_CONSUMER: dict[str, Any] = {
    # Offsets move only when a checkpoint holding them is durable (service.py does the commits).
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
}
DEFAULT_PRODUCER: dict[str, Any] = {
    "linger.ms": 5,  # batches form without adding latency that matters
    "compression.type": "lz4",
}
REQUIRED_PRODUCER: dict[str, Any] = {
    # No duplicates or reordering from internal retries; acks=all is implied.
    "enable.idempotence": True,
}

DLQ_MESSAGE_LIMIT = 1000
"""Error text in a DLQ header is cut to this many characters: headers are not for novels."""


class DeliveryError(StreamrecError):
    """Messages the producer could not deliver (after librdkafka's own retries)."""


def consumer_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """Defaults, then the user's passthrough options, then what the design requires."""
    overridden = {k for k in REQUIRED_CONSUMER if k in kafka.consumer}
    if overridden:
        log.warning("ignoring kafka.consumer %s: streamrec commits offsets itself", overridden)
    return {
        **DEFAULT_CONSUMER,
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        **kafka.consumer,
        **extra,
        **REQUIRED_CONSUMER,
    }


def producer_config(kafka: KafkaSettings | None = None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = dict(DEFAULT_PRODUCER)
    if kafka is not None:
        config["bootstrap.servers"] = kafka.bootstrap_servers
        config.update(kafka.producer)
    config.update(extra)
    config.update(REQUIRED_PRODUCER)
    return config


def create_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int = 1,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
    admin_config: dict[str, Any] | None = None,
) -> None:
    """Create topics that do not exist yet (existing ones are left as they are)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(admin_config or {})})
    wanted = [NewTopic(t, partitions, replication_factor) for t in topics]
    if not wanted:
        return
    futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise StreamrecError(f"cannot create topic {topic!r}: {error}") from exc


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    *,
    wait_s: float = 0.05,
    **kwargs: Any,
) -> None:
    """`producer.produce`, waiting while the local queue is full: nothing is ever dropped.

    A full queue (BufferError) is librdkafka saying "serve delivery reports first"; polling for
    `wait_s` does that, then the message is offered again.
    """
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(wait_s)


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


def dead_letter_headers(dead: DeadLetter) -> list[tuple[str, bytes]]:
    record = dead.record
    return [
        ("streamrec.error.reason", dead.reason.encode()),
        ("streamrec.error.message", dead.error[:DLQ_MESSAGE_LIMIT].encode()),
        ("streamrec.source.topic", record.topic.encode()),
        ("streamrec.source.partition", str(record.partition).encode()),
        ("streamrec.source.offset", str(record.offset).encode()),
    ]


class KafkaSink:
    """Recommendations (key = user_id, latest wins) and dead letters, through one idempotent
    producer.

    Delivery results arrive in `on_delivery` on the thread that polls. Failures are counted and
    logged; `check()` turns them into a DeliveryError, which the service raises *before* writing
    the checkpoint that would cover those records, so a restart replays and re-publishes them
    (outputs are at-least-once, never silently dropped).
    """

    def __init__(
        self,
        config: dict[str, Any],
        recommendations_topic: str,
        dlq_topic: str,
        metrics: Any = None,
    ) -> None:
        self.producer = Producer({**config, "error_cb": self._on_client_error})
        self.recommendations_topic = recommendations_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics
        self.delivered = 0
        self.failed = 0
        self.fatal: KafkaError | None = None
        self._first_failure: str | None = None

    # -- callbacks (run inside producer.poll/flush) --

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = error
            log.error("fatal producer error: %s", error)
        else:
            log.warning("producer: %s", error)

    def _on_recommendation(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
            if self.metrics is not None:
                self.metrics.recommendations_published_total.inc()
            return
        if self.metrics is not None:
            self.metrics.recommendation_publish_errors_total.inc()
        self._on_failure(error, "recommendation")

    def _on_dead_letter(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self._on_failure(error, "dead letter")

    def _on_failure(self, error: KafkaError, what: str) -> None:
        self.failed += 1
        if error.fatal():
            self.fatal = error
        if self._first_failure is None:
            self._first_failure = f"{what}: {error}"
        # The first failure in full, then one line per thousand: a broker outage must not
        # become a log flood.
        if self.failed == 1 or self.failed % 1000 == 0:
            log.error("could not deliver a %s (%d failures so far): %s", what, self.failed, error)

    # -- producing --

    def publish(self, recommendations: Sequence[Recommendation]) -> None:
        topic, callback = self.recommendations_topic, self._on_recommendation
        for rec in recommendations:
            value = encode_recommendation(rec)
            produce(self.producer, topic, value, rec.user_id.encode(), on_delivery=callback)
        self.producer.poll(0)

    def dead_letter(self, dead_letters: Sequence[DeadLetter]) -> None:
        for dead in dead_letters:
            produce(
                self.producer,
                self.dlq_topic,
                dead.record.value,
                dead.record.key,
                headers=dead_letter_headers(dead),
                on_delivery=self._on_dead_letter,
            )
        self.producer.poll(0)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything produced so far is delivered, then `check()`.

        DeliveryError if anything failed or is still undelivered at the deadline.
        """
        remaining = self.producer.flush(timeout_s)
        self.check()
        if remaining:
            raise DeliveryError(
                f"{remaining} messages still undelivered after {timeout_s:.0f} s; "
                "is the broker reachable?"
            )

    def raise_if_fatal(self) -> None:
        """A fatal producer error (e.g. the idempotent sequence is broken) ends the service now;
        ordinary delivery failures wait for the next commit point (`check`)."""
        if self.fatal is not None:
            raise DeliveryError(f"fatal producer error: {self.fatal}")

    def check(self) -> None:
        self.raise_if_fatal()
        if self.failed:
            raise DeliveryError(
                f"{self.failed} messages could not be delivered (first: {self._first_failure})"
            )


def produce_file(
    path: Path,
    bootstrap_servers: str,
    topic: str,
    rate: float | None = None,
    *,
    producer_options: dict[str, Any] | None = None,
    key_field: str = "user_id",
) -> int:
    """`streamrec produce`: publish a JSONL event log to `topic`, one message per non-blank line,
    key = the event's `user_id` (so one user's events stay in order on one partition).

    Lines that are not JSON objects are sent unchanged without a key: the consumer's dead-letter
    path is what should judge them. `rate` limits messages per second (None = as fast as the
    broker takes them). Returns the number of messages delivered; DeliveryError if any failed.
    """
    config = producer_config(None, **{"bootstrap.servers": bootstrap_servers})
    config.update(producer_options or {})
    config.update(REQUIRED_PRODUCER)
    producer = Producer(config)
    failures: list[str] = []
    delivered = 0

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1
        else:
            failures.append(str(error))

    started = time.monotonic()
    sent = 0
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise StreamrecError(f"cannot read event log {path}: {exc.strerror}") from exc
    with handle:
        for line in handle:
            value = line.strip()
            if not value:
                continue
            key = _event_key(value, key_field)
            produce(producer, topic, value, key, on_delivery=on_delivery)
            sent += 1
            if rate:
                # Pace against the schedule (not per message), so rounding never drifts; poll
                # returns early on delivery reports, hence the loop.
                while (ahead := started + sent / rate - time.monotonic()) > 0:
                    producer.poll(ahead)
            elif sent % 1000 == 0:
                producer.poll(0)
    remaining = producer.flush(60.0)
    if failures or remaining:
        raise DeliveryError(
            f"{len(failures)} of {sent} messages failed, {remaining} undelivered "
            f"(first error: {failures[0] if failures else 'timeout'})"
        )
    return delivered


def _event_key(value: bytes, key_field: str) -> bytes | None:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    key = event.get(key_field) if isinstance(event, dict) else None
    return key.encode() if isinstance(key, str) and key else None
