"""`streamrec produce`: publish a JSONL event log to a Kafka topic, keyed by user.

What tests, demos and backfills use to put events on the topic the service reads; the service
itself never calls it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from streamrec.errors import StreamrecError
from streamrec.io.kafka_config import REQUIRED_PRODUCER, DeliveryError, produce, producer_config


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
    key = the event's `user_id` (so one user's events stay in order on one partition). Catalog
    records (a catalog log, for `kafka.catalog_topic`) are keyed as a compacted topic needs:
    items and retirements by `item_id`, rules by `rule:<name>`.

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
            key = _record_key(value, key_field)
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


def _record_key(value: bytes, key_field: str) -> bytes | None:
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    kind = record.get("type")
    if kind in ("item", "retire"):
        key = record.get("item_id")
    elif kind == "rule":
        name = record.get("name")
        key = f"rule:{name}" if isinstance(name, str) and name else None
    else:
        key = record.get(key_field)
    return key.encode() if isinstance(key, str) and key else None
