"""Freshness: from `produce()` of an event to the refreshed recommendation for that user, consumed.

The service runs as its own process (`python -m streamrec.service`, the deployed entry point), so
the paced producer and the reader in this process do not share its interpreter lock. Each event's
produce time is kept by its position in the stream; the service learns every event exactly once
and in order (one partition), so after event `g` (0-based) its model version is at least `g + 1`.
An event is therefore answered by the first recommendation for its user whose `model_version` is
`≥ g + 1`. Latency = receive time of that message − produce time of the event, both on this
machine's clock.

Warm-up events go first and are waited for (group join takes seconds), so the measured events see
a running consumer; they are not counted.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.common import Events, Row, fresh_topic, service_command
from bench.throughput import mf_description
from streamrec.io.kafka_config import produce

WARMUP_EVENTS = 200
TARGET_P99_MS = 50.0


class RecommendationReader(threading.Thread):
    """Reads the recommendations topic from the start, noting (receive time, version) per user."""

    def __init__(self, bootstrap: str, topic: str, start: int = OFFSET_BEGINNING) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-fresh-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, start)])
        self.seen: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                messages = self.consumer.consume(1000, 0.02)
                received = time.time()
                for message in messages:
                    if message.error() is not None:
                        continue
                    rec = orjson.loads(message.value() or b"null")
                    self.seen[rec["user_id"]].append((received, rec["model_version"]))
                    self.count += 1
        finally:
            self.consumer.close()


def _service_process(
    bootstrap: str, topic: str, recs: str, state_dir: Path, max_events: int, ranker: str
) -> subprocess.Popen[bytes]:
    command, env = service_command(
        bootstrap,
        topic,
        state_dir,
        group_stem="fresh",
        max_events=max_events,
        model={"rating_model": "biased_mf", "ranker": ranker},
        recommendations_topic=recs,
        extra_args=["--stop-when-idle", "30"],
    )
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _paced_produce(
    producer: Producer,
    topic: str,
    events: Events,
    indices: range,
    rate: float | None,
    produced_at: np.ndarray,
) -> float:
    """Produce `events[indices]` at `rate` per second (None: as fast as possible); returns the
    achieved rate. Paced against the schedule, in small bursts (sleep granularity is ~0.1 ms)."""
    started = time.time()
    for n, g in enumerate(indices):
        if rate is not None:
            due = started + n / rate
            ahead = due - time.time()
            if ahead > 0.0005:
                producer.poll(0)
                time.sleep(ahead)
        produced_at[g] = time.time()
        produce(producer, topic, events.values[g], events.keys[g], wait_s=0.005)
    producer.poll(0)
    elapsed = time.time() - started
    return len(indices) / elapsed if elapsed > 0 else float("inf")


def _latencies(
    events: Events, first: int, produced_at: np.ndarray, reader: RecommendationReader
) -> tuple[np.ndarray, int]:
    """Per measured event: ms until its user's first list with model_version ≥ g + 1."""
    pending: dict[str, list[int]] = defaultdict(list)
    for g in range(first, len(events)):
        pending[events.tuples[g][0]].append(g)
    out: list[float] = []
    missing = 0
    for user, gs in pending.items():
        recs = reader.seen.get(user, [])
        r = 0
        for g in gs:  # both in stream order
            while r < len(recs) and recs[r][1] < g + 1:
                r += 1
            if r == len(recs):
                missing += 1
                continue
            out.append((recs[r][0] - produced_at[g]) * 1000.0)
    return np.asarray(out), missing


def freshness(events: Events, bootstrap: str, rate: float | None, ranker: str) -> Row:
    """One freshness measurement over `events` (the first WARMUP_EVENTS only warm up)."""
    from streamrec.io.kafka_config import create_topics, producer_config

    topic, recs = fresh_topic("fresh"), fresh_topic("fresh-recs")
    create_topics(bootstrap, [topic, recs])
    reader = RecommendationReader(bootstrap, recs)
    reader.start()
    producer = Producer(producer_config(None, **{"bootstrap.servers": bootstrap}))
    produced_at = np.zeros(len(events))
    warmup = min(WARMUP_EVENTS, len(events) // 10)
    load = "saturation (unpaced)" if rate is None else f"{rate:,.0f} events/s"
    key = f"fresh_{'saturation' if rate is None else int(rate)}_{ranker}"
    name = f"freshness p99, {load}, ranker={ranker}"
    with tempfile.TemporaryDirectory(prefix="bench-fresh-") as state:
        service = _service_process(bootstrap, topic, recs, Path(state), len(events), ranker)
        try:
            _paced_produce(producer, topic, events, range(warmup), None, produced_at)
            producer.flush(30)
            deadline = time.monotonic() + 60
            while reader.count == 0:  # the consumer group has formed and the pipeline answers
                if service.poll() is not None or time.monotonic() > deadline:
                    err = (service.stderr.read() if service.stderr else b"").decode()[-500:]
                    raise RuntimeError(f"service gave no recommendation after warm-up: {err}")
                time.sleep(0.05)
            achieved = _paced_produce(
                producer, topic, events, range(warmup, len(events)), rate, produced_at
            )
            producer.flush(30)
            service.wait(timeout=120 + len(events) / 1000)
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()
    time.sleep(0.3)  # the last lists are already on the topic; let the reader fetch them
    reader.stop.set()
    reader.join(10)
    latencies, missing = _latencies(events, warmup, produced_at, reader)
    if len(latencies) == 0:
        raise RuntimeError("no event was matched to a recommendation")
    p50, p99 = np.percentile(latencies, [50, 99])
    return Row(
        key,
        name,
        float(p99),
        "ms",
        target=f"≤ {TARGET_P99_MS:g} ms" if rate == 10_000 else "",
        met=bool(p99 <= TARGET_P99_MS) if rate == 10_000 else None,
        dataset=events.name,
        settings={
            "offered_events_per_s": rate or "unpaced",
            "achieved_produce_rate": round(achieved),
            "rating_model": "biased_mf",
            "ranker": ranker,
            "partitions": 1,
            "producer_linger_ms": 5,
            **mf_description(),
        },
        note=f"p50 {p50:.1f} ms, max {latencies.max():.0f} ms; {len(latencies):,} events matched"
        + (f", {missing} unmatched" if missing else ""),
        extra={
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "max_ms": float(latencies.max()),
            "matched": len(latencies),
            "unmatched": missing,
            "warmup_events": warmup,
        },
    )
