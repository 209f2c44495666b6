"""Overload: a backlog of 500,000 events waiting when the consumer starts, then a paced tail.

What it shows (issue 12): the consumer's memory stays bounded however large the backlog, and
freshness recovers once the backlog is drained. The backlog is the bench events repeated with
new event ids (so the model stops growing after the first pass, and any further growth of the
resident size would be buffers); the service (`python -m streamrec.service`, biased MF with the
MF ranker) drains it while this process samples its VmRSS from /proc every 0.2 s. Then a tail of
events is produced at a steady rate and its freshness measured as `bench/freshness.py` does.

Where the bound comes from: librdkafka prefetches at most `queued.max.messages.kbytes` (32 MB)
of records, the producer holds at most `service.max_undelivered` outputs (the consumer pauses
beyond it), and a batch is at most `service.batch_size` records; everything else is the model.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import OFFSET_END, Producer

from bench.common import Events, Row, fresh_topic, produce_all, service_command
from bench.freshness import RecommendationReader, _latencies, _paced_produce

BACKLOG_EVENTS = 500_000
TAIL_EVENTS = 5_000
TAIL_RATE = 2_000.0


def _rss_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """(seconds since start, resident bytes) of a process, every `interval_s`."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.wait(self.interval_s):
            rss = _rss_of(self.pid)
            if rss is None:
                return
            self.samples.append((time.monotonic() - started, rss))


def repeated(events: Events, n: int) -> Events:
    """`n` events cycling through `events`, each with its own event id (none is a duplicate)."""
    values, keys, tuples = [], [], []
    for k in range(n):
        j = k % len(events)
        event = orjson.loads(events.values[j])
        event["event_id"] = f"overload-{k}"
        values.append(orjson.dumps(event))
        keys.append(events.keys[j])
        tuples.append(events.tuples[j])
    name = f"{events.name}, repeated to {n:,} events"
    return Events(name, events.source, values, keys, tuples)


def overload(events: Events, bootstrap: str, backlog: int = BACKLOG_EVENTS) -> list[Row]:
    """Peak RSS while draining the backlog, the drain rate, and the tail's freshness p99."""
    from streamrec.io.kafka_config import create_topics, producer_config

    warmup = 200  # tail events that wait for the reader to run (not measured)
    total = backlog + warmup + TAIL_EVENTS
    stream = repeated(events, total)
    topic, recs = fresh_topic("overload"), fresh_topic("overload-recs")
    create_topics(bootstrap, [topic, recs])
    produce_all(bootstrap, topic, stream.values[:backlog], stream.keys[:backlog], timeout_s=300)
    produced_at = np.zeros(total)
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as state:
        command, env = service_command(
            bootstrap,
            topic,
            Path(state),
            group_stem="overload",
            max_events=total,
            model={"rating_model": "biased_mf", "ranker": "mf"},
            recommendations_topic=recs,
            extra_args=["--stop-when-idle", "30", "--progress"],
        )
        started = time.monotonic()
        service = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        sampler = RssSampler(service.pid)
        sampler.start()
        try:
            assert service.stdout is not None
            learned = 0
            one_pass_rss = 0  # the model is complete once every distinct event was learned
            for line in service.stdout:  # one progress line per batch
                doc = orjson.loads(line)
                learned = int(doc.get("events_learned", learned))
                if not one_pass_rss and learned >= len(events) and sampler.samples:
                    one_pass_rss = sampler.samples[-1][1]
                if learned >= backlog:
                    break
            drained_s = time.monotonic() - started
            drain_rss = max((rss for _, rss in sampler.samples), default=0)
            # Read only lists published from now on: the backlog's would keep the reader busy
            # and show its lag, not the service's.
            reader = RecommendationReader(bootstrap, recs, start=OFFSET_END)
            reader.start()
            producer = Producer(producer_config(None, **{"bootstrap.servers": bootstrap}))
            measured = backlog + warmup
            _paced_produce(producer, topic, stream, range(backlog, measured), None, produced_at)
            producer.flush(30)
            deadline = time.monotonic() + 60
            while reader.count == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            achieved = _paced_produce(
                producer, topic, stream, range(measured, total), TAIL_RATE, produced_at
            )
            producer.flush(30)
            for _line in service.stdout:  # drain its output until it stops (idle or max_events)
                pass
            service.wait(timeout=120)
        finally:
            sampler.stop.set()
            if service.poll() is None:
                service.kill()
                service.wait()
    reader.stop.set()
    reader.join(10)
    latencies, missing = _latencies(stream, backlog + warmup, produced_at, reader)
    peak = max((rss for _, rss in sampler.samples), default=0)
    mib = 1024 * 1024
    settings = {
        "backlog_events": backlog,
        "rating_model": "biased_mf",
        "ranker": "mf",
        "queued.max.messages.kbytes": 32768,
        "max_undelivered": 50_000,
    }
    p50, p99 = np.percentile(latencies, [50, 99]) if len(latencies) else (np.nan, np.nan)
    return [
        Row(
            "overload_rss_peak",
            f"peak RSS of the consumer draining a {backlog:,}-event backlog",
            peak / mib,
            "MiB",
            dataset=stream.name,
            settings=settings,
            note=f"{len(sampler.samples)} samples; peak while draining {drain_rss / mib:.0f} MiB, "
            f"{one_pass_rss / mib:.0f} MiB after the first {len(events):,} (one pass)",
            extra={"rss_mib": [[round(t, 1), round(r / mib, 1)] for t, r in sampler.samples]},
        ),
        Row(
            "overload_drain",
            f"backlog of {backlog:,} drained (start, join, learn, publish)",
            backlog / drained_s,
            "events/s",
            dataset=stream.name,
            settings=settings,
            note=f"{drained_s:.1f} s from process start",
        ),
        Row(
            "overload_tail_fresh_p99",
            f"freshness p99 after the backlog, {TAIL_RATE:,.0f} events/s",
            float(p99),
            "ms",
            dataset=stream.name,
            settings={**settings, "tail_events": TAIL_EVENTS, "achieved_rate": round(achieved)},
            note=f"p50 {p50:.1f} ms; {len(latencies):,} events matched"
            + (f", {missing} unmatched" if missing else ""),
        ),
    ]
