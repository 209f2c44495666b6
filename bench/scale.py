"""Scale out with a learn log: N instances of `streamrec run`, one model (prints one JSON object).

    OPENBLAS_NUM_THREADS=1 python -m bench.scale                        # ML-100K, 1, 2, 3 instances
    python -m bench.scale --events 20000 --instances 1,2 --no-moves     # a short run

With `kafka.learn_log_topic` set, the instances of one consumer group forward the event partitions
the group assigns them into a one-partition learn log, and every instance learns the whole learn
log as a replica (streamrec/service/forwarder.py). What this measures, per instance count N, on
ratings produced keyed by user_id to a fresh multi-partition topic:

- events_per_s: events / (first produce → every replica has learned every event). Every replica
  learns every event, so this is one replica's learning speed, shared with the other replicas
  for the machine's cores: more instances add availability and publishing capacity, never
  learning throughput, and the number says how much sharing the cores costs.
- rmse, recall_at_10: prequential quality of the model the replicas hold, i.e. the learn log
  replayed in its order through the evaluator `streamrec replay` uses. The learn log interleaves
  the partitions in forwarding order, not in the events' timestamp order; the timestamp-order
  replay of the same events is reported beside it for reference.
- item_digests_equal, lost, learned_twice, users_split: read from each replica's final checkpoint
  (offset ledger on) against the learn log and the events produced, never assumed.
- rebalance_resume_s_p99 (when N >= 2 is asked for): a second stream, paced, during which the
  group goes 1 → 2 → 3 instances, one is SIGKILLed and one is stopped (back to 1); for each
  partition a rebalance moved, the time it was not forwarded. Its audit adds to the totals.

Progress goes to stderr, the JSON alone to stdout. Benchmarks measure; they never assert.
"""

from __future__ import annotations

import os

# Before numpy loads, here and in the services (inherited): multithreaded BLAS is slower on 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from bench.common import (
    Events,
    broker,
    fresh_topic,
    load_events,
    machine_info,
    ml100k_path,
    now_iso,
    produce_all,
)
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.core.quality import PrequentialEvaluator
from streamrec.errors import CheckpointError
from streamrec.evaluate.replay import ReplayOptions, replay
from streamrec.io import learn_log
from streamrec.io.kafka_config import create_topics, produce, producer_config
from streamrec.io.kafka_source import to_record
from streamrec.settings import ModelSettings
from streamrec.store import checkpoint
from streamrec.store.checkpoint_key import KEY_ENV, KEY_FILE_ENV, state_dir_key

FAST_GROUP: dict[str, str | int] = {"session.timeout.ms": 3000, "heartbeat.interval.ms": 500}
"""The forwarders' group settings: a SIGKILLed member is noticed after 3 s, not librdkafka's 45 s
(tests/kafka_helpers.FAST_GROUP, which Tansu rejoins fastest with)."""

MOVES = (
    (0.15, "join"),  # 1 -> 2
    (0.35, "join"),  # 2 -> 3
    (0.55, "kill"),  # SIGKILL the newest: 3 -> 2, its partitions move after the session timeout
    (0.75, "leave"),  # SIGTERM the other added one: 2 -> 1
)
"""The scale changes of the move run, at these fractions of the events produced."""

READ_TIMEOUT_S = 60.0


def learn_timeout_s(events: int) -> float:
    """Long enough for three ensemble replicas sharing two cores (a deadline, not a measure)."""
    return 120.0 + events / 200.0


K = 10


def say(message: str) -> None:
    """One progress line on stderr (stdout carries only the JSON)."""
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    """What every run of one bench shares (all of it goes into the JSON's settings)."""

    partitions: int = 4
    rating_model: str = "ensemble"
    ranker: str = "knn"
    batch_size: int = 2_000
    moves_seconds: float = 60.0  # how long the paced stream of the move run lasts
    idle_exit_s: float = 900.0  # --stop-when-idle: only so a service never outlives a dead bench
    ready_timeout_s: float = 120.0

    def model(self) -> ModelSettings:
        return ModelSettings(rating_model=self.rating_model, ranker=self.ranker)


# ---- topics and the services -----------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    events: str
    learn_log: str
    recommendations: str
    dead_letters: str

    @classmethod
    def create(cls, bootstrap: str, stem: str, partitions: int) -> Topics:
        """A fresh event topic of `partitions` partitions and its one-partition learn log."""
        topics = cls(
            fresh_topic(stem),
            fresh_topic(f"{stem}-learn"),
            fresh_topic(f"{stem}-recs"),
            fresh_topic(f"{stem}-dlq"),
        )
        create_topics(bootstrap, [topics.events], partitions=partitions)
        create_topics(bootstrap, [topics.learn_log, topics.recommendations, topics.dead_letters])
        return topics


@dataclass(frozen=True)
class Assignment:
    """Partitions a service's consumer was given, as its log says ("assigned t:p@o, ...")."""

    instance: str
    at: float  # wall clock, seconds (the service's log record time)
    topic: str
    partition: int


class Instance:
    """One `python -m streamrec.service --progress` subprocess, its output read on threads.

    stdout carries a JSON progress line per batch and the summary at exit; stderr its JSON log,
    from which the assignments of both its consumers (the forwarder's, in the events' group, and
    the replica's, on the learn log) are taken with their times.
    """

    def __init__(
        self, name: str, state_dir: Path, argv: list[str], env: dict[str, str], events_topic: str
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.events_topic = events_topic
        self.started_at = time.time()
        # Progress lines come only with records: a restarted replica that has nothing left to
        # learn prints none, so it starts from what its newest checkpoint says it learned.
        self.events_learned = checkpointed_events(state_dir)
        self.published = 0
        self.learned_at: list[tuple[float, int]] = []  # (when read, events_learned)
        self.summary: dict[str, Any] | None = None
        self.assignments: list[Assignment] = []
        self.tail: deque[str] = deque(maxlen=20)  # last warnings/errors and non-JSON lines
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._stdout = threading.Thread(target=self._read_stdout, daemon=True)
        self._stderr = threading.Thread(target=self._read_stderr, daemon=True)
        self._stdout.start()
        self._stderr.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                self.tail.append(line.rstrip())
                continue
            if "summary" in doc:
                self.summary = doc["summary"]
                continue
            self.events_learned = int(doc["events_learned"])
            self.published = int(doc["published"])
            self.learned_at.append((time.time(), self.events_learned))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        # The whole log beside the state dir (appended to by a restart), for a post-mortem.
        with self.state_dir.with_suffix(".log").open("a") as saved:
            for line in self.process.stderr:
                saved.write(line)
                self._log_line(line)

    def _log_line(self, line: str) -> None:
        try:
            doc = orjson.loads(line)
            message = str(doc["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.tail.append(line.rstrip())
            return
        if message.startswith("assigned "):
            at = datetime.fromisoformat(doc["ts"]).timestamp()
            for part in message.removeprefix("assigned ").split(", "):
                where, _, _offset = part.rpartition("@")
                topic, _, partition = where.rpartition(":")
                self.assignments.append(Assignment(self.name, at, topic, int(partition)))
        elif doc.get("level") in ("warning", "error", "critical"):
            self.tail.append(message)

    # -- what the bench waits on --

    def alive(self) -> bool:
        return self.process.poll() is None

    def forwards(self) -> set[int]:
        """Event partitions this instance was ever assigned (enough to tell it joined)."""
        return {a.partition for a in self.assignments if a.topic == self.events_topic}

    def replicating(self) -> bool:
        return any(a.topic != self.events_topic for a in self.assignments)

    def reached(self, n: int) -> float | None:
        """When a progress line first said this replica had learned `n` events."""
        return next((at for at, learned in self.learned_at if learned >= n), None)

    def describe(self) -> str:
        """Where this instance stands, for an error message."""
        moves = ", ".join(f"{a.topic[-14:]}:{a.partition}@{a.at:.1f}" for a in self.assignments)
        state = "running" if self.alive() else f"exited {self.process.returncode}"
        return (
            f"{self.name} ({state}): learned {self.events_learned}, published {self.published}, "
            f"assigned [{moves}]; last lines: {' | '.join(self.tail)}"
        )

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"instance {self.name} exited ({self.process.returncode}); last lines: "
                + " | ".join(self.tail)
            )

    # -- stopping --

    def stop(self, timeout_s: float = 120.0) -> dict[str, Any] | None:
        """SIGTERM: the service finishes its batch, checkpoints, and prints its summary (None if
        it exited without one: `problem()` says how)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        finally:
            self.close()
        return self.summary if self.process.returncode == 0 else None

    def problem(self) -> str:
        return (
            f"{self.name}: SIGTERM → exit {self.process.returncode}, no summary; last lines: "
            + " | ".join(self.tail)
        )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.close()

    def close(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        self._stdout.join(10)
        self._stderr.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def checkpointed_events(state_dir: Path) -> int:
    """Events learned by the newest checkpoint in `state_dir` (its header only); 0 if none."""
    if not state_dir.is_dir():
        return 0
    try:
        info = checkpoint.inspect(state_dir, state_dir_key(state_dir), compute_digest=False)
    except CheckpointError:
        return 0
    return int(info["events_learned"])


def start_instance(
    bootstrap: str, topics: Topics, group: str, name: str, state_dir: Path, options: Options
) -> Instance:
    """`python -m streamrec.service` with the learn log on, as an operator would start it.

    The checkpoint key is the state dir's own random one (bench.common.service_command does the
    same), which the audit reads back; the offset ledger is on so the audit can count learn-log
    records learned twice.
    """
    env = {
        **{k: v for k, v in os.environ.items() if k not in (KEY_ENV, KEY_FILE_ENV)},
        KEY_ENV: state_dir_key(state_dir),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
        "STREAMREC_KAFKA__LEARN_LOG_TOPIC": topics.learn_log,
        "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": topics.recommendations,
        "STREAMREC_KAFKA__DLQ_TOPIC": topics.dead_letters,
        "STREAMREC_KAFKA__CONSUMER": orjson.dumps(FAST_GROUP).decode(),
        "STREAMREC_MODEL__RATING_MODEL": options.rating_model,
        "STREAMREC_MODEL__RANKER": options.ranker,
        "STREAMREC_SERVICE__INSTANCE_ID": name,
        "STREAMREC_SERVICE__OFFSET_LEDGER": "true",
        # INFO in JSON: the "assigned ..." lines, with their times, are what the bench reads.
        "STREAMREC_SERVICE__LOG_LEVEL": "INFO",
        "STREAMREC_SERVICE__LOG_FORMAT": "json",
    }
    argv = [
        sys.executable,
        "-m",
        "streamrec.service",
        "--progress",
        *("--bootstrap-servers", bootstrap, "--topics", topics.events, "--group-id", group),
        *("--state-dir", str(state_dir), "--metrics-port", "0"),
        *("--batch-size", str(options.batch_size)),
        *("--stop-when-idle", str(options.idle_exit_s)),
    ]
    return Instance(name, state_dir, argv, env, topics.events)


def wait_until(
    condition: Callable[[], bool],
    instances: Sequence[Instance],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> None:
    """Poll `condition`; fail early if a service died, and at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for instance in instances:
            instance.check()
        if time.monotonic() > deadline:
            states = "; ".join(i.describe() for i in instances)
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}: {states}")
        time.sleep(interval_s)


def wait_ready(instances: Sequence[Instance], partitions: int, timeout_s: float) -> None:
    """Every replica reads the learn log and the group gave each forwarder a partition (or all
    were given out, with more instances than partitions), then no assignment for a second."""

    def assigned() -> bool:
        forwarded = set().union(*(i.forwards() for i in instances))
        forwarding = sum(1 for i in instances if i.forwards())
        return (
            all(i.replicating() for i in instances)
            and len(forwarded) == partitions
            and forwarding == min(len(instances), partitions)
        )

    wait_until(assigned, instances, timeout_s, "the group and the replicas to be assigned")
    while True:
        last = max(a.at for i in instances for a in i.assignments)
        if time.time() - last >= 1.0:
            return
        time.sleep(0.2)


def assigned_since(instances: Sequence[Instance], since: float) -> bool:
    """A forwarder among `instances` was assigned event partitions after `since`."""
    return any(a.at > since for i in instances for a in i.assignments if a.topic == i.events_topic)


def settle(instances: Sequence[Instance], since: float, timeout_s: float) -> None:
    """Until the events' group is stable after a change at `since`: a forwarder among `instances`
    was assigned partitions after it, and then none for a second. Gives up quietly at the
    deadline (a member that owned nothing leaves without moving anything)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        moved = [a.at for i in instances for a in i.assignments if a.topic == i.events_topic]
        latest = max((at for at in moved if at > since), default=None)
        if latest is not None and time.time() - latest >= 1.0:
            return
        time.sleep(0.1)


def stop_all(instances: Sequence[Instance]) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """SIGTERM one at a time, the next once the group has settled after the previous one left.

    A service SIGTERMed while its group rebalances (another member just left) can hang in its
    shutdown until `service.shutdown_timeout_s` and exit 70 without a summary: seen on the
    embedded Tansu, once in three runs of three instances stopped back to back. Spacing the stops
    keeps that out of the measurement; if it happens anyway it is reported as a problem.
    """
    summaries: dict[str, dict[str, Any] | None] = {}
    problems: list[str] = []
    remaining = list(instances)
    while remaining:
        instance = remaining.pop(0)
        at = time.time()
        summaries[instance.name] = summary = instance.stop()
        if summary is None:
            problems.append(instance.problem())
        if remaining:
            settle(remaining, at, 20.0)
    return summaries, problems


@contextlib.contextmanager
def closing_all(instances: list[Instance]) -> Iterator[list[Instance]]:
    """Whatever happens to the bench, no service outlives it."""
    try:
        yield instances
    finally:
        for instance in instances:
            instance.close()


# ---- reading the topics back -------------------------------------------------------------------


def read_topic(bootstrap: str, topic: str, expected: int) -> list[Message]:
    """Every message of `topic`, all partitions: at least `expected`, then until none comes for
    a second (nothing writes to it any more when this is called).

    Not bounded by the high watermarks: the embedded Tansu reports wrong ones (seen: 1 for each
    partition of a topic holding 5,000 records, 4,744 for a 5,000-record learn log).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-scale-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    messages: list[Message] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(partitions)])
        deadline = time.monotonic() + READ_TIMEOUT_S
        quiet_since = time.monotonic()
        while len(messages) < expected or time.monotonic() - quiet_since < 1.0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"read {len(messages)} of {expected}+ records of {topic}")
            batch = [m for m in consumer.consume(2000, 0.2) if m.error() is None]
            if batch:
                messages.extend(batch)
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return messages


def end_offsets(messages: Sequence[Message]) -> dict[str, int]:
    """Per "topic:partition", one past the last offset read from it."""
    ends: dict[str, int] = {}
    for m in messages:
        key = f"{m.topic()}:{m.partition()}"
        ends[key] = max(ends.get(key, 0), (m.offset() or 0) + 1)
    return ends


def read_learn_log(bootstrap: str, topic: str) -> list[Record]:
    """The (one-partition) learn log, in order, as the Records a replica learns (each knows the
    learn-log message it came in: its `offset`). Called once nothing writes to it any more."""
    messages = sorted(read_topic(bootstrap, topic, 1), key=lambda m: m.offset() or 0)
    return [r for m in messages for r in learn_log.decode(to_record(m))[1]]


def read_ends(bootstrap: str, topic: str, produced: int) -> tuple[dict[str, int], list[str]]:
    """The event partitions' ends, and what is wrong if the topic does not hold exactly the
    `produced` events at offsets 0.. (the audit compares the replicas with these ends)."""
    messages = read_topic(bootstrap, topic, produced)
    ends = end_offsets(messages)
    problems = []
    if len(messages) != produced or sum(ends.values()) != produced:
        problems.append(f"{topic} holds {len(messages)} records, ends {ends}; {produced} produced")
    return ends, problems


# ---- quality: the learn log replayed, as `streamrec replay` evaluates ------------------------


@dataclass
class Quality:
    """The prequential scores of one pass over a learn log, and the model it ends with."""

    rmse: float | None
    recall_at_10: float | None
    evaluated_ratings: int
    evaluated_positive: int
    digest: str
    learned: int
    origins: dict[str, int]  # next origin offset not learned, per event partition


def prequential(records: Sequence[Record], model: ModelSettings) -> Quality:
    """Test-then-learn over `records` in their order, wired as `streamrec.evaluate.replay` wires
    it (settings with k, the evaluator as the pipeline's observer, the replay's batch size), but
    fed the learn log's Records, so their origins deduplicate as the replicas' do."""
    options = ReplayOptions(k=K, progress=False)
    settings = model.model_copy(update={"k": options.k})
    evaluator = PrequentialEvaluator(k=options.k, window=options.window)
    pipeline = Pipeline(settings, observer=evaluator)
    for start in range(0, len(records), options.batch_size):
        pipeline.process(records[start : start + options.batch_size])
    pipeline.flush_pending()
    evaluator.close_window()
    report = evaluator.report(pipeline.n_items)
    return Quality(
        report["rmse"],
        report["recall_at_k"],
        report["evaluated_ratings"],
        report["evaluated_positive"],
        pipeline.model_digest(),
        pipeline.events_learned,
        pipeline.preprocessor.origin_positions(),
    )


def timestamp_order_quality(events: Events, model: ModelSettings) -> dict[str, Any]:
    """`streamrec replay` itself over the events in their produced (timestamp) order."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"\n".join(events.values) + b"\n")
        report, _ = replay(path, model, ReplayOptions(k=K, progress=False))
    return {"rmse": report["rmse"], "recall_at_10": report["recall_at_k"]}


# ---- the audit of one replica --------------------------------------------------------------------


@dataclass
class Expected:
    """What each user's events must have left in a model that learned all of them: their count,
    and the bounded item histories RecommenderModel keeps (seen: distinct items in first-seen
    order; positives: most recent last), computed from the events as produced. One user's
    events are in one partition, so every learn-log order keeps them in this order."""

    counts: Counter[str]
    seen: dict[str, list[str]]
    positives: dict[str, list[str]]

    @classmethod
    def of(cls, events: Events, model: ModelSettings) -> Expected:
        limit, threshold = model.history_length, model.positive_threshold
        counts: Counter[str] = Counter()
        seen: dict[str, list[str]] = {}
        positives: dict[str, list[str]] = {}
        for user, item, rating in events.tuples:
            counts[user] += 1
            history = seen.setdefault(user, [])
            if item not in history:
                history.append(item)
                del history[:-limit]
            if rating >= threshold:
                liked = positives.setdefault(user, [])
                if item in liked:
                    liked.remove(item)
                liked.append(item)
                del liked[:-limit]
        return cls(counts, seen, positives)


@dataclass
class Audit:
    """One replica's final checkpoint, checked against the learn log and the events produced."""

    instance: str
    digest: str
    events_learned: int
    position: int  # learn-log offset it had consumed up to
    lost: int  # source offsets below the partition ends it never learned
    learned_twice: int  # learn-log records its ledger covers more than once
    split_users: list[str]  # users whose events are not all in this model
    problems: list[str] = field(default_factory=list)


def audit_replica(
    instance: str,
    state_dir: Path,
    learn_log: str,
    records: Sequence[Record],
    ends: dict[str, int],
    expected: Expected,
) -> Audit:
    """Lost, learned twice and split users of one replica, from its newest checkpoint.

    The ledger says which learn-log records the replica consumed, how often; replaying the
    replicas' duplicate rule (an origin offset below the next expected one is a repeat) over
    exactly those records says which source offsets it learned, and so which it never did and,
    per user, how many events it learned. The model itself is checked too: each user's
    histories must be the ones the user's produced events give.
    """
    key = state_dir_key(state_dir)
    info = checkpoint.inspect(state_dir, key)
    state = checkpoint.load(Path(info["path"]), key).state.pipeline
    problems: list[str] = []
    position = next((o["offset"] for o in info["offsets"] if o["topic"] == learn_log), 0)
    ranges = info["extra"].get("ledger", {}).get(f"{learn_log}:0", [])
    coverage = np.zeros(max(position, len(records)) + 1, dtype=np.int64)
    for start, stop in ranges:
        coverage[start] += 1
        coverage[stop] -= 1
    coverage = np.cumsum(coverage)
    learned_twice = int(np.maximum(coverage - 1, 0).sum())
    if not ranges and position:
        problems.append(f"{instance}: no offset ledger in its checkpoint")
    skipped = int((coverage[:position] == 0).sum())
    if skipped:
        problems.append(f"{instance}: {skipped} learn-log records below {position} never consumed")

    next_origin: dict[str, int] = {}
    learned_per_origin: Counter[str] = Counter()
    learned_per_user: Counter[str] = Counter()
    for record in records:
        if record.offset >= position:
            break
        if coverage[record.offset] == 0 or record.origin_offset < next_origin.get(
            record.origin, -1
        ):
            continue
        next_origin[record.origin] = record.origin_offset + 1
        learned_per_origin[record.origin] += 1
        learned_per_user[(record.key or b"").decode()] += 1
    lost = sum(max(0, end - learned_per_origin[origin]) for origin, end in ends.items())
    if next_origin != state.preprocessor.origin_positions():
        problems.append(f"{instance}: its origin positions differ from its ledger's")
    if info["events_learned"] != sum(learned_per_origin.values()):
        problems.append(
            f"{instance}: learned {info['events_learned']} events, its ledger says "
            f"{sum(learned_per_origin.values())}"
        )

    model = state.model
    split = []
    for user, count in expected.counts.items():
        index = model.user_index.get(user)
        if index is None or learned_per_user[user] != count:
            split.append(user)
            continue
        seen = [model.item_ids[i] for i in model.seen_items(index).tolist()]
        liked = [model.item_ids[i] for i in model.positive_items(index).tolist()]
        if seen != expected.seen[user] or liked != expected.positives.get(user, []):
            split.append(user)
    return Audit(
        instance,
        info["model_digest"],
        info["events_learned"],
        position,
        lost,
        learned_twice,
        sorted(split),
        problems,
    )


@dataclass
class RunAudit:
    """One run's replicas together: what the JSON reports per run, and adds to the totals."""

    digests_equal: bool
    lost: int
    learned_twice: int
    users_split: int
    quality: Quality
    replicas: list[Audit]
    learn_log_records: int
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        q = self.quality
        return {
            "rmse": q.rmse,
            "recall_at_10": q.recall_at_10,
            "evaluated_ratings": q.evaluated_ratings,
            "evaluated_positive": q.evaluated_positive,
            "item_digests_equal": self.digests_equal,
            "digest": q.digest[:16],
            "lost": self.lost,
            "learned_twice": self.learned_twice,
            "users_split": self.users_split,
            "learn_log_records": self.learn_log_records,
            "learn_log_repeats": self.learn_log_records - q.learned,
            "replicas": [
                {
                    "instance": a.instance,
                    "digest": a.digest[:16],
                    "events_learned": a.events_learned,
                    "learn_log_position": a.position,
                    "lost": a.lost,
                    "learned_twice": a.learned_twice,
                    "users_split": len(a.split_users),
                }
                for a in self.replicas
            ],
            "problems": self.problems,
        }


def audit_run(
    records: Sequence[Record],
    ends: dict[str, int],
    topics: Topics,
    replicas: Sequence[tuple[str, Path]],
    summaries: Sequence[dict[str, Any] | None],
    events: Events,
    options: Options,
    run_problems: Sequence[str] = (),
) -> RunAudit:
    """Replay the learn log (its quality, and the digest every replica must equal), audit each
    replica (name, state dir), and add up. A user is split if any replica's model lacks any of
    the user's events: whichever replica serves the user after the next rebalance must have
    them all."""
    model = options.model()
    say(f"  replaying the learn log ({len(records):,} records) through the evaluator")
    quality = prequential(records, model)
    expected = Expected.of(events, model)
    audits = [
        audit_replica(name, state_dir, topics.learn_log, records, ends, expected)
        for name, state_dir in replicas
    ]
    problems = [*run_problems, *(p for a in audits for p in a.problems)]
    digests = {a.digest for a in audits} | {s["model_digest"] for s in summaries if s}
    if quality.origins != ends:
        problems.append("the learn log replayed does not end at the event partitions' ends")
    return RunAudit(
        digests_equal=digests == {quality.digest},
        lost=sum(a.lost for a in audits),
        learned_twice=sum(a.learned_twice for a in audits),
        users_split=len({u for a in audits for u in a.split_users}),
        quality=quality,
        replicas=audits,
        learn_log_records=len(records),
        problems=problems,
    )


def first_forwarded(records: Sequence[Record]) -> dict[tuple[str, int], float]:
    """(event partition, origin offset) → when it was first appended to the learn log (s)."""
    first: dict[tuple[str, int], float] = {}
    for record in records:
        first.setdefault((record.origin, record.origin_offset), (record.timestamp_ms or 0) / 1e3)
    return first


# ---- run 1: N instances, one stream ------------------------------------------------------------


def run_instances(
    bootstrap: str, events: Events, n: int, options: Options, workdir: Path
) -> dict[str, Any]:
    """N instances joined first, then every event produced at once; timed until each replica
    has learned all of them."""
    total = len(events)
    topics = Topics.create(bootstrap, f"scale-n{n}", options.partitions)
    group = f"bench-scale-n{n}-{uuid.uuid4().hex[:8]}"
    with closing_all([]) as instances:
        for k in range(n):
            name = f"n{n}-{chr(ord('a') + k)}"
            instances.append(
                start_instance(bootstrap, topics, group, name, workdir / name, options)
            )
        wait_ready(instances, options.partitions, options.ready_timeout_s)
        say(f"N={n}: {n} instance(s) in the group; producing {total:,} events")
        started = time.time()
        produce_s = produce_all(bootstrap, topics.events, events.values, events.keys)
        wait_until(
            lambda: all(i.events_learned >= total for i in instances),
            instances,
            learn_timeout_s(total),
            f"{n} replicas to learn {total:,} events",
        )
        done = [i.reached(total) or time.time() for i in instances]
        seconds = max(done) - started
        say(f"N={n}: every replica learned every event {seconds:.1f} s after the first produce")
        stopped, problems = stop_all(instances)
    records = read_learn_log(bootstrap, topics.learn_log)
    ends, read_problems = read_ends(bootstrap, topics.events, total)
    forwarded = first_forwarded(records)
    summaries = [stopped[i.name] for i in instances]
    audit = audit_run(
        records,
        ends,
        topics,
        [(i.name, i.state_dir) for i in instances],
        summaries,
        events,
        options,
        [*problems, *read_problems],
    )
    say(
        f"N={n}: {total / seconds:,.0f} events/s; rmse {audit.quality.rmse:.4f}, digests equal: "
        f"{audit.digests_equal}, lost {audit.lost}, learned twice {audit.learned_twice}, "
        f"users split {audit.users_split}"
    )
    return {
        "instances": n,
        "events_per_s": total / seconds,
        "seconds": seconds,
        "produce_s": produce_s,
        # When the last event reached the learn log: forwarding is not what takes the time.
        "forwarded_s": max(forwarded.values()) - started if forwarded else None,
        "replica_done_s": [t - started for t in done],
        "published": [i.published for i in instances],  # lists, from its progress lines
        **audit.to_json(),
    }


# ---- run 2: scale changes mid-stream -----------------------------------------------------------


class PacedProducer(threading.Thread):
    """Produces the events (key = user id) at a steady rate, so that scale changes happen while
    every partition has records arriving, and a partition that stops being forwarded shows."""

    def __init__(self, bootstrap: str, topic: str, events: Events, rate: float) -> None:
        super().__init__(name="bench-scale-producer", daemon=True)
        self.bootstrap, self.topic, self.events, self.rate = bootstrap, topic, events, rate
        self.sent = 0
        self.started = 0.0
        self.error: str | None = None

    def reached(self, n: float) -> bool:
        """`n` events produced (or the producer ended: waiting longer would not help)."""
        return self.sent >= n or not self.is_alive()

    def run(self) -> None:
        producer = Producer(producer_config(None, **{"bootstrap.servers": self.bootstrap}))
        failures: list[str] = []

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        self.started = time.time()
        for n, (value, key) in enumerate(zip(self.events.values, self.events.keys, strict=True)):
            if n % 20 == 0:
                delay = self.started + n / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                producer.poll(0)
            produce(producer, self.topic, value, key, on_delivery=on_delivery)
            self.sent = n + 1
        remaining = producer.flush(60)
        if failures or remaining:
            self.error = f"{len(failures)} failed, {remaining} undelivered: {failures[:1]}"


@dataclass(frozen=True)
class Action:
    kind: str  # "join", "kill", "leave"
    instance: str
    at: float  # wall clock, s: the process started, or the signal was sent
    produced: int  # events produced by then (a change after the last one is not mid-stream)


def resume_samples(
    actions: Sequence[Action],
    assignments: Sequence[Assignment],
    records: Sequence[Record],
    events_topic: str,
    until: float,
) -> tuple[list[dict[str, Any]], int]:
    """For each event partition a scale change moved: when forwarding it resumed.

    A move is an "assigned" line of a forwarder after the change (and before the next one).
    Resumed: the first learn-log record from that partition at or after the assignment (only its
    new owner forwards it then). `stalled_s` is the gap since the partition's previous record in
    the learn log, i.e. from when the old owner stopped forwarding it (the revoke the joining or
    leaving member started, or the SIGKILL) until the new owner forwarded again; `after_action_s`
    counts from the change itself (process start for a join, so it includes Python's start-up).
    Returns the samples, and how many moves had no later record to measure by.
    """
    times: dict[str, list[float]] = {}
    for record in records:
        times.setdefault(record.origin, []).append((record.timestamp_ms or 0) / 1e3)
    sorted_times = {origin: np.sort(np.array(t)) for origin, t in times.items()}
    samples: list[dict[str, Any]] = []
    unmeasured = 0
    for k, action in enumerate(actions):
        end = actions[k + 1].at if k + 1 < len(actions) else until
        for move in assignments:
            if move.topic != events_topic or not action.at <= move.at < end:
                continue
            origin = f"{move.topic}:{move.partition}"
            forwarded = sorted_times.get(origin, np.array([]))
            # Learn-log timestamps are whole milliseconds, like the log's.
            i = int(np.searchsorted(forwarded, move.at - 0.001))
            if i == len(forwarded):
                unmeasured += 1
                continue
            resumed = float(forwarded[i])
            previous = float(forwarded[i - 1]) if i else action.at
            samples.append(
                {
                    "action": action.kind,
                    "changed": action.instance,
                    "to": move.instance,
                    "partition": move.partition,
                    "assigned_after_action_s": round(move.at - action.at, 3),
                    "after_action_s": round(resumed - action.at, 3),
                    "stalled_s": round(resumed - previous, 3),
                }
            )
    return samples, unmeasured


def run_moves(bootstrap: str, events: Events, options: Options, workdir: Path) -> dict[str, Any]:
    """1 → 2 → 3 instances, SIGKILL one, SIGTERM another (back to 1), on a paced stream; then
    the two that left come back on their state dirs and catch up, and all three are audited."""
    total = len(events)
    topics = Topics.create(bootstrap, "scale-moves", options.partitions)
    group = f"bench-scale-moves-{uuid.uuid4().hex[:8]}"
    rate = total / options.moves_seconds
    actions: list[Action] = []
    problems: list[str] = []

    def start(name: str) -> Instance:
        instance = start_instance(bootstrap, topics, group, name, workdir / name, options)
        started.append(instance)
        return instance

    with closing_all([]) as started:
        first = start("moves-a")
        wait_ready([first], options.partitions, options.ready_timeout_s)
        live = [first]
        producer = PacedProducer(bootstrap, topics.events, events, rate)
        producer.start()
        say(f"moves: 1 instance; producing {total:,} events at {rate:,.0f}/s")
        added: list[Instance] = []
        for fraction, kind in MOVES:
            wait_until(
                partial(producer.reached, fraction * total),
                live,
                options.moves_seconds * 3,
                f"{fraction:.0%} of the events to be produced",
            )
            at = time.time()
            if kind == "join":
                name = f"moves-{chr(ord('a') + len(started))}"
                joined = start(name)
                actions.append(Action(kind, name, joined.started_at, producer.sent))
                live.append(joined)
                added.append(joined)
                wait_until(
                    partial(assigned_since, [joined], 0.0),
                    live,
                    options.ready_timeout_s,
                    f"{name} to forward",
                )
                settle(live, joined.started_at, 10.0)
            else:
                gone = added.pop() if kind == "kill" else added.pop(0)
                live.remove(gone)
                actions.append(Action(kind, gone.name, at, producer.sent))
                if kind == "kill":
                    gone.kill()
                elif gone.stop() is None:
                    problems.append(gone.problem())
                # Until the partitions it forwarded have a new owner.
                wait_until(
                    partial(assigned_since, live, at),
                    live,
                    options.ready_timeout_s,
                    f"{gone.name}'s partitions to move",
                )
                settle(live, at, 10.0)
            say(f"moves: {kind} {actions[-1].instance} → {len(live)} instance(s)")
        producer.join()
        if producer.error:
            raise RuntimeError(f"producing the move run's events: {producer.error}")
        stream_end = time.time()
        wait_until(
            lambda: first.events_learned >= total,
            live,
            learn_timeout_s(total),
            f"{first.name} to learn every event",
        )
        # The two that left come back on their state dirs: the SIGKILLed one from its last
        # checkpoint, and learn the rest of the learn log, repeats dropped.
        for name in sorted({a.instance for a in actions} - {first.name}):
            live.append(start(name))
        wait_until(
            lambda: all(i.events_learned >= total for i in live),
            live,
            learn_timeout_s(total),
            "every replica to learn every event",
        )
        wait_until(
            lambda: all(i.forwards() for i in live),
            live,
            options.ready_timeout_s,
            "the group to take the returning instances",
        )
        settle(live, min(i.started_at for i in live[1:]), 10.0)
        say("moves: all three replicas caught up; stopping")
        summaries, stop_problems = stop_all(live)
        problems.extend(stop_problems)
    records = read_learn_log(bootstrap, topics.learn_log)
    ends, read_problems = read_ends(bootstrap, topics.events, total)
    replicas = sorted({(i.name, i.state_dir) for i in started})
    audit = audit_run(
        records,
        ends,
        topics,
        replicas,
        [summaries[n] for n, _ in replicas],
        events,
        options,
        [*problems, *read_problems],
    )
    assignments = [a for i in started for a in i.assignments]
    samples, unmeasured = resume_samples(actions, assignments, records, topics.events, stream_end)
    stalled = [s["stalled_s"] for s in samples]
    say(
        f"moves: {len(samples)} partition moves, stalled p99 "
        f"{np.percentile(stalled, 99) if stalled else float('nan'):.2f} s; lost {audit.lost}, "
        f"learned twice {audit.learned_twice}, users split {audit.users_split}"
    )
    return {
        "schedule": [
            {
                "action": a.kind,
                "instance": a.instance,
                "planned_at_fraction": f,
                "produced": a.produced,  # of `events`: == events means after the stream
                "at_s": round(a.at - producer.started, 2),  # since the stream started
            }
            for (f, _), a in zip(MOVES, actions, strict=True)
        ],
        "rate_events_per_s": rate,
        "rebalance_resume_s_p99": float(np.percentile(stalled, 99)) if stalled else None,
        "after_action_s_p99": (
            float(np.percentile([s["after_action_s"] for s in samples], 99)) if samples else None
        ),
        "moves": samples,
        "unmeasured_moves": unmeasured,
        **audit.to_json(),
    }


# ---- the command -------------------------------------------------------------------------------

NOTE = (
    "events_per_s = events / (first produce → the last replica has learned every event). Every "
    "instance learns every event as a replica of the learn log, so per-replica learning is the "
    "bottleneck and more instances add no learning throughput: they share this machine's cores "
    "(forwarded_s, when the last event reached the learn log, is a small part of the time). "
    "rmse and recall_at_10 are prequential (test then learn) over the learn log in its order, "
    "scored by streamrec.core.quality.PrequentialEvaluator wired as `streamrec replay` wires it; "
    "recall_at_10 is its hit rate@10 (Recall@10 with one held-out item) over the rating events "
    ">= positive_threshold (4) whose user was known and item new to them, on this rating stream "
    "(not README's click-stream Recall@10, where ratings < 4 are not events at all). "
    "*_timestamp_order: the same events replayed in produced order, for reference. "
    "lost / learned_twice / users_split: from each replica's final checkpoint (offset ledger, "
    "origin positions, model) against the learn log and the events produced, summed over the "
    "replicas of every run; a user is split if any replica's model lacks any of their events. "
    "rebalance_resume_s_p99: in the move run, for each event partition a scale change moved to "
    "another forwarder (its 'assigned' log line), the gap between its last learn-log record "
    "before the move and the first after (learn-log timestamps are forwarding times); "
    "after_action_s counts from the process start / the signal instead. A new replica also has "
    "to learn the learn log from its start before its users' lists are fresh; that is not in it."
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, help="ML-100K u.data (else $STREAMREC_ML100K)")
    parser.add_argument(
        "--instances", default="1,2,3", help="instance counts to measure (default 1,2,3)"
    )
    parser.add_argument("--events", type=int, help="use only the first N events")
    parser.add_argument("--partitions", type=int, default=Options.partitions)
    parser.add_argument(
        "--rating-model", choices=("ensemble", "biased_mf"), default=Options.rating_model
    )
    parser.add_argument("--ranker", choices=("knn", "mf"), default=Options.ranker)
    parser.add_argument(
        "--moves-seconds",
        type=float,
        default=Options.moves_seconds,
        help="how long the move run's paced stream lasts (default %(default)s)",
    )
    parser.add_argument("--no-moves", action="store_true", help="skip the move run")
    parser.add_argument(
        "--bootstrap-servers",
        help="an existing Kafka (else $STREAMREC_TEST_BROKER, else an embedded Tansu)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(n) for n in args.instances.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit("--instances: a comma-separated list of counts >= 1")
    options = Options(
        partitions=args.partitions,
        rating_model=args.rating_model,
        ranker=args.ranker,
        moves_seconds=args.moves_seconds,
    )
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["OPENBLAS_NUM_THREADS=1 python -m bench.scale", *given])
    machine, date = machine_info(), now_iso()
    # A SIGTERM to the bench unwinds through the `finally`s: no service outlives it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    begun = time.perf_counter()
    path = ml100k_path(args.data)
    events = load_events(path)
    if args.events:
        events = events.head(args.events)
    say(f"{events.name}; instances {counts}; {options.rating_model} + {options.ranker}")
    runs: list[dict[str, Any]] = []
    moves: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, contextlib.ExitStack() as stack:
        bootstrap, broker_desc = stack.enter_context(broker(args.bootstrap_servers, Path(tmp)))
        for n in counts:
            runs.append(run_instances(bootstrap, events, n, options, Path(tmp) / f"n{n}"))
        if max(counts) >= 2 and not args.no_moves:
            moves = run_moves(bootstrap, events, options, Path(tmp) / "moves")
    say("replaying the events in timestamp order (reference)")
    reference = timestamp_order_quality(events, options.model())
    audited = [*runs, *([moves] if moves else [])]
    result = {
        "instances": counts,
        "events_per_s": [r["events_per_s"] for r in runs],
        "rmse": [r["rmse"] for r in runs],
        "recall_at_10": [r["recall_at_10"] for r in runs],
        "item_digests_equal": all(r["item_digests_equal"] for r in audited),
        "lost": sum(r["lost"] for r in audited),
        "learned_twice": sum(r["learned_twice"] for r in audited),
        "users_split": sum(r["users_split"] for r in audited),
        "rebalance_resume_s_p99": moves["rebalance_resume_s_p99"] if moves else None,
        "rmse_timestamp_order": reference["rmse"],
        "recall_at_10_timestamp_order": reference["recall_at_10"],
        "problems": [p for r in audited for p in r["problems"]],
        "note": NOTE,
        "data": events.name,
        "events": len(events),
        "settings": {
            **asdict(options),
            "consumer": FAST_GROUP,
            "learn_log": "one partition; offset ledger on; checkpoints at the default interval",
            "moves": [f"{kind} at {fraction:.0%} produced" for fraction, kind in MOVES],
            "broker": broker_desc,
        },
        "runs": runs,
        "move_run": moves,
        "machine": machine,
        "date": date,
        "command": command,
        "seconds": time.perf_counter() - begun,
    }
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
