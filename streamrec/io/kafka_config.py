"""Kafka client settings and the few calls every Kafka edge shares.

Options from `kafka.consumer` / `kafka.producer` settings are passed to librdkafka untouched and
override our defaults, except the few that the effectively-once design depends on
(`REQUIRED_CONSUMER`, `REQUIRED_PRODUCER`). librdkafka's own log goes through Python logging
(`KafkaLog`), so `log_format=json` covers it too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.errors import ConfigError, StreamrecError
from streamrec.settings import KafkaSettings

log = logging.getLogger(__name__)

DEFAULT_CONSUMER: dict[str, Any] = {
    # Where a partition starts when neither a checkpoint nor the group knows an offset: a new
    # group learns the whole history, not just the future. (Read by `initial_offset`; librdkafka
    # itself gets "error", see REQUIRED_CONSUMER.)
    "auto.offset.reset": "earliest",
    # Incremental rebalances: keeping partitions need no checkpoint, only moving ones do.
    "partition.assignment.strategy": "cooperative-sticky",
    # A dead instance's partitions move within seconds (the librdkafka default of 45 s is a long
    # outage for a recommender). Heartbeats come from librdkafka's own thread, so a slow batch or
    # checkpoint does not count against it; max.poll.interval.ms (5 min) bounds those.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1500,
    # Freshness target is p99 <= 50 ms; 10 ms keeps fetches cheap without idling the broker.
    "fetch.wait.max.ms": 10,
    # Prefetched records are the consumer's largest buffer: 32 MB bounds it whatever the backlog.
    "queued.max.messages.kbytes": 32768,
    "statistics.interval.ms": 5000,  # consumer lag, broker state and log ends, every 5 s
}
REQUIRED_CONSUMER: dict[str, Any] = {
    # Offsets move only when a checkpoint holding them is durable (the service commits).
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    # Every partition is assigned at an explicit offset, so librdkafka resets one only when the
    # log no longer holds it (deleted, recreated, expired by retention): the service must hear of
    # that, not have it silently papered over (see streamrec.io.kafka_source).
    "auto.offset.reset": "error",
}
DEFAULT_PRODUCER: dict[str, Any] = {
    "linger.ms": 5,  # batches form without adding latency that matters
    "compression.type": "lz4",
}
REQUIRED_PRODUCER: dict[str, Any] = {
    # No duplicates or reordering from internal retries; acks=all is implied.
    "enable.idempotence": True,
}

_START = {
    "earliest": OFFSET_BEGINNING,
    "smallest": OFFSET_BEGINNING,
    "beginning": OFFSET_BEGINNING,
    "latest": OFFSET_END,
    "largest": OFFSET_END,
    "end": OFFSET_END,
}


def consumer_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """Defaults, then the user's passthrough options, then what the design requires."""
    overridden = {
        k for k in ("enable.auto.commit", "enable.auto.offset.store") if k in kafka.consumer
    }
    if overridden:
        log.warning("ignoring kafka.consumer %s: streamrec commits offsets itself", overridden)
    return {
        **DEFAULT_CONSUMER,
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": kafka.group_id,
        "logger": KafkaLog(),
        **kafka.consumer,
        **extra,
        **REQUIRED_CONSUMER,
    }


def initial_offset(kafka: KafkaSettings) -> int:
    """The logical offset a partition starts at when nothing else says where: the user's
    `auto.offset.reset` (default earliest), applied by the service rather than by librdkafka."""
    value = str(kafka.consumer.get("auto.offset.reset", DEFAULT_CONSUMER["auto.offset.reset"]))
    try:
        return _START[value.lower()]
    except KeyError:
        raise ConfigError(
            f"kafka.consumer auto.offset.reset={value!r}: use 'earliest' or 'latest' (a reset of "
            "a known position is handled by service.on_log_reset)"
        ) from None


def producer_config(kafka: KafkaSettings | None = None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {**DEFAULT_PRODUCER, "logger": KafkaLog()}
    if kafka is not None:
        config["bootstrap.servers"] = kafka.bootstrap_servers
        config.update(kafka.producer)
    config.update(extra)
    config.update(REQUIRED_PRODUCER)
    return config


class KafkaLog:
    """librdkafka's log lines as records of the `streamrec.kafka` logger.

    librdkafka reports a failed connection on every reconnect attempt (facility FAIL, several a
    second per client during an outage); those go to DEBUG, because `BrokerWatch` says once that
    the broker is unreachable and once that it is back. Everything else keeps librdkafka's level.
    confluent-kafka calls `log` from `poll`/`consume`/`flush`, on the thread that polls.
    """

    NOISY_FACILITIES = frozenset({"FAIL", "REQTMOUT"})
    logger = logging.getLogger("streamrec.kafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if args and args[0] in self.NOISY_FACILITIES:
            level = logging.DEBUG
        self.logger.log(level, fmt, *args)


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
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": KafkaLog()}
    admin = AdminClient({**config, **(admin_config or {})})
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
    `wait_s` does that, then the message is offered again. Other errors (KafkaException: too
    large, fatal producer state) are the caller's to handle.
    """
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(wait_s)


class DeliveryError(StreamrecError):
    """Messages the producer could not deliver (after librdkafka's own retries)."""
