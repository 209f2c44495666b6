"""Helpers for the Kafka tests: make events, produce them, read topics back, wait on conditions."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streamrec import service
from streamrec.io.kafka_config import produce as kafka_produce
from streamrec.obs.metrics import Metrics
from streamrec.service import Progress
from streamrec.settings import Settings

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
    config: dict[str, Any] | None = None,
) -> int:
    """Produce and wait for delivery; keys default to each event's user_id."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "enable.idempotence": True,
            **(config or {}),
        }
    )
    errors: list[str] = []
    values = list(values)
    key_list = list(keys) if keys is not None else [user_key(v) if v else None for v in values]
    extra = {} if partition is None else {"partition": partition}
    for value, key in zip(values, key_list, strict=True):
        kafka_produce(
            producer,
            topic,
            value,
            key,
            on_delivery=lambda e, _m: errors.append(str(e)) if e else None,
            **extra,
        )
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


# Tansu lets a consumer (re)join fastest with a short session: restarts after SIGKILL take ~3 s
# instead of ~13 s with the defaults. Production keeps librdkafka-friendlier values.
FAST_GROUP = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500}


class ServiceProcess:
    """`python -m streamrec.service --progress` in a subprocess, its JSON progress lines read on a
    thread so the test can wait on them with a deadline."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import os
        import queue
        import subprocess
        import sys
        import threading

        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.last: dict[str, Any] = {}
        self.summary: dict[str, Any] | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrec.service", "--progress", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            doc = orjson.loads(line)
            if "summary" in doc:
                self.summary = doc["summary"]
            else:
                self.lines.put(doc)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def wait_progress(self, condition: Callable[[dict[str, Any]], bool], timeout_s: float) -> None:
        """Block until a progress line satisfies `condition`; fail on exit or at the deadline."""
        import queue

        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching progress in {timeout_s:.0f} s; last {self.last}")
            try:
                doc = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if doc is None:
                raise AssertionError(
                    f"service exited ({self.process.wait()}) before the expected progress; "
                    f"last {self.last}; stderr tail: {''.join(self.stderr[-5:])}"
                )
            self.last = doc
            if condition(doc):
                return

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.close()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def ledger_problems(
    ledgers: Iterable[dict[str, list[list[int]]]], ends: dict[str, int]
) -> list[str]:
    """What is wrong with the union of offset ledgers: offsets learned twice, or never.

    `ends` maps "topic:partition" to the partition's end offset; every offset below it must
    appear exactly once across all ledgers.
    """
    problems: list[str] = []
    spans: dict[str, list[tuple[int, int]]] = {}
    for ledger in ledgers:
        for key, ranges in ledger.items():
            spans.setdefault(key, []).extend((start, end) for start, end in ranges)
    for key, end in ends.items():
        expected = 0
        for start, stop in sorted(spans.get(key, [])):
            if start < expected:
                problems.append(f"{key}: offsets {start}..{min(stop, expected) - 1} learned twice")
            elif start > expected:
                problems.append(f"{key}: offsets {expected}..{start - 1} never learned")
            expected = max(expected, stop)
        if expected != end:
            problems.append(f"{key}: learned up to {expected}, partition ends at {end}")
    return problems


class Instance:
    """`service.run` on a thread, with its latest progress."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = threading.Event()
        self.progress = Progress()
        self.summary: service.RunSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = service.run(
                self.settings,
                stop=self.stop,
                on_batch=self._on_batch,
                handle_signals=False,
                metrics=self.metrics,
            )
        except BaseException as exc:
            self.error = exc

    def _on_batch(self, progress: Progress) -> None:
        self.progress = progress

    def now(self) -> Progress:
        """Latest progress; raises the service's error at once if it died (no waiting it out)."""
        if self.error is not None:
            raise self.error
        return self.progress

    def finish(self, timeout_s: float = 60) -> service.RunSummary:
        self.stop.set()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary
