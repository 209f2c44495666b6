"""Helpers for the Kafka tests: make events, produce them, read topics back, wait on conditions."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

T = TypeVar("T")

BASE_TIMESTAMP_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: in the past, inside the guards


def make_events(n: int, *, seed: int = 0, users: int = 200, items: int = 150) -> list[bytes]:
    """`n` valid events (ratings, clicks, purchases) as JSON bytes, deterministic for `seed`."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        kind = rng.choice(("rating", "rating", "click", "purchase"))
        event: dict[str, Any] = {
            "event_id": f"s{seed}-e{i}",
            "type": kind,
            "user_id": f"u{rng.randrange(users)}",
            "item_id": f"i{rng.randrange(items)}",
            "timestamp": BASE_TIMESTAMP_MS + i * 1000,
        }
        if kind == "rating":
            event["rating"] = rng.randint(1, 5)
        events.append(orjson.dumps(event))
    return events


def user_key(value: bytes) -> bytes | None:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    user = event.get("user_id") if isinstance(event, dict) else None
    return user.encode() if isinstance(user, str) else None


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    *,
    keys: Iterable[bytes | None] | None = None,
    partition: int | None = None,
) -> int:
    """Produce and wait for delivery; keys default to each event's user_id."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    errors: list[str] = []
    values = list(values)
    key_list = list(keys) if keys is not None else [user_key(v) if v else None for v in values]
    extra = {} if partition is None else {"partition": partition}
    for value, key in zip(values, key_list, strict=True):
        while True:
            try:
                producer.produce(
                    topic,
                    value,
                    key,
                    on_delivery=lambda e, _m: errors.append(str(e)) if e else None,
                    **extra,
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0, "messages left undelivered"
    assert not errors, errors[:3]
    return len(values)


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Message]:
    """Every message of `topic` (all partitions), waiting until at least `expected` arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "streamrec-test-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            messages.extend(m for m in consumer.consume(1000, 0.2) if m.error() is None)
        # Anything beyond `expected` that is already there is read too (the test may assert on it).
        while batch := [m for m in consumer.consume(1000, 0.3) if m.error() is None]:
            messages.extend(batch)
        return messages
    finally:
        consumer.close()


def wait_for(
    condition: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def headers_of(message: Message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (message.headers() or [])}
