"""Several instances, one model (`kafka.learn_log_topic`), against the real test broker.

Each instance forwards the event partitions it owns into a one-partition learn log and learns the
whole log as a replica. What must hold: every replica's model is the learn log replayed in order
(equal digests across instances), every source offset is learned exactly once by every replica
through crashes and moves, and each user's lists come from the instance that forwards the user's
partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka_helpers import (
    FAST_GROUP,
    Instance,
    ServiceProcess,
    ledger_problems,
    make_events,
    produce,
    read_topic,
)

from streamrec import service
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.errors import ConfigError
from streamrec.io.kafka_config import create_topics
from streamrec.io.kafka_source import to_learn_record
from streamrec.settings import KafkaSettings, ServiceSettings, Settings, load_settings
from streamrec.store import checkpoint

MODEL = load_settings(None, model={"rating_model": "biased_mf"}).model
KEY = "test-checkpoint-key"
PARTITIONS = 4


def topics(bootstrap: str, unique_topic: Callable[..., str]) -> tuple[str, str]:
    """A fresh 4-partition event topic and its one-partition learn log (plus outputs)."""
    topic = unique_topic("events", partitions=PARTITIONS)
    learn_log = f"{topic}.learn"
    create_topics(bootstrap, [learn_log, f"{topic}.recs", f"{topic}.dlq"])
    return topic, learn_log


def settings(bootstrap: str, topic: str, learn_log: str, state_dir: Path) -> Settings:
    return Settings(
        model=MODEL,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topics=[topic],
            group_id=f"g-{topic}",
            learn_log_topic=learn_log,
            recommendations_topic=f"{topic}.recs",
            dlq_topic=f"{topic}.dlq",
            consumer=dict(FAST_GROUP),
        ),
        service=ServiceSettings(
            state_dir=state_dir,
            checkpoint_key=KEY,
            metrics_port=0,
            offset_ledger=True,
            batch_size=300,
            checkpoint_every_events=1_500,
        ),
    )


def learn_log_replayed(bootstrap: str, learn_log: str, n: int) -> tuple[str, dict[str, int]]:
    """The digest of one in-process pass over the learn log's first `n` records, in log order
    (what every replica must equal), and the origin positions that pass ends at."""
    messages = read_topic(bootstrap, learn_log, n)
    pipeline = Pipeline(MODEL)
    records = [to_learn_record(m) for m in messages]
    for start in range(0, len(records), 1000):
        pipeline.process(records[start : start + 1000], refresh=False)
    return pipeline.model_digest(), pipeline.preprocessor.origin_positions()


def end_offsets(bootstrap: str, topic: str, n: int) -> dict[str, int]:
    """Per partition of `topic`, one past its last offset (read from the `n` records it holds)."""
    ends: dict[str, int] = {}
    for message in read_topic(bootstrap, topic, n):
        key = f"{message.topic()}:{message.partition()}"
        ends[key] = max(ends.get(key, 0), (message.offset() or 0) + 1)
    return ends


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_instances_hold_one_model_and_split_the_publishing(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    total = 4_000
    topic, learn_log = topics(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=21)
    produce(kafka_bootstrap, topic, values[: total // 2])
    a = Instance(settings(kafka_bootstrap, topic, learn_log, tmp_path / "a"))
    b = Instance(settings(kafka_bootstrap, topic, learn_log, tmp_path / "b"))
    wait_until(lambda: a.now().assigned and b.now().assigned, 30, "both replicas to start")
    produce(kafka_bootstrap, topic, values[total // 2 :])
    wait_until(
        lambda: a.now().events_learned == total and b.now().events_learned == total,
        90,
        "both replicas to learn every event",
    )
    summaries = [a.finish(), b.finish()]

    digest, origins = learn_log_replayed(kafka_bootstrap, learn_log, total)
    assert [s.model_digest for s in summaries] == [digest, digest]
    assert origins == end_offsets(kafka_bootstrap, topic, total)
    # Both forwarded (the group split the partitions), and between them every user got a list.
    assert all(s.published > 0 for s in summaries), summaries
    lists = read_topic(kafka_bootstrap, f"{topic}.recs", sum(s.published for s in summaries))
    users = {orjson.loads(v)["user_id"] for v in values}
    assert {orjson.loads(m.value())["user_id"] for m in lists} == users


@pytest.mark.slow
def test_a_sigkilled_instance_restarts_and_every_replica_learns_each_event_once(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    total = 8_000
    topic, learn_log = topics(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=22)
    produce(kafka_bootstrap, topic, values[: total // 2])
    env = {
        "STREAMREC_MODEL__RATING_MODEL": MODEL.rating_model,
        "STREAMREC_KAFKA__LEARN_LOG_TOPIC": learn_log,
        "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": f"{topic}.recs",
        "STREAMREC_KAFKA__DLQ_TOPIC": f"{topic}.dlq",
        "STREAMREC_KAFKA__CONSUMER": orjson.dumps(FAST_GROUP).decode(),
        "STREAMREC_SERVICE__OFFSET_LEDGER": "true",
        "STREAMREC_SERVICE__CHECKPOINT_KEY": KEY,
        "OPENBLAS_NUM_THREADS": "1",
    }

    def start(name: str) -> ServiceProcess:
        args = [
            *("--bootstrap-servers", kafka_bootstrap, "--topics", topic),
            *("--group-id", f"g-{topic}", "--state-dir", str(tmp_path / name)),
            *("--batch-size", "200", "--metrics-port", "0", "--checkpoint-every-events", "700"),
            *("--stop-when-idle", "8"),
        ]
        return ServiceProcess(args, env)

    a, b = start("a"), start("b")
    try:
        b.wait_progress(lambda p: p["events_learned"] >= total // 4, timeout_s=60)
        b.kill()  # mid-stream: its forwarder's uncommitted tail is forwarded again by its heir
        produce(kafka_bootstrap, topic, values[total // 2 :])
        b = start("b")  # the same state dir: the same replica, from its last checkpoint
        assert a.wait(timeout_s=120) == 0, "".join(a.stderr[-5:])
        assert b.wait(timeout_s=120) == 0, "".join(b.stderr[-5:])
    finally:
        a.close()
        b.close()

    assert a.summary is not None and b.summary is not None
    ends = end_offsets(kafka_bootstrap, topic, total)
    infos = {name: checkpoint.inspect(tmp_path / name, KEY) for name in ("a", "b")}
    positions = {name: info["offsets"][0]["offset"] for name, info in infos.items()}
    assert min(positions.values()) >= total  # forwarded at least once, some of it twice
    digest, origins = learn_log_replayed(kafka_bootstrap, learn_log, max(positions.values()))
    assert origins == ends
    for name, info in infos.items():
        assert info["events_learned"] == total, name
        assert info["model_digest"] == digest, name  # repeats past a shorter prefix change nothing
        # The replica learned every learn-log record up to its position exactly once...
        assert ledger_problems([info["extra"]["ledger"]], {f"{learn_log}:0": positions[name]}) == []
        # ...and so every source offset once: the repeats were dropped by origin.
        state = checkpoint.load(Path(info["path"]), KEY).state.pipeline
        assert state.preprocessor.origin_positions() == ends, name


def test_learn_log_records_are_judged_by_the_log_alone() -> None:
    """A forwarded-again record is a duplicate by origin; "now" is the forwarding time, so an
    event far ahead of this machine's clock but not of the forwarder's is learned."""
    pipeline = Pipeline(MODEL)
    event = make_events(1, seed=23)[0]
    future = orjson.loads(event)
    future["event_id"], future["timestamp"] = "later", int(time.time() * 1000) + 7 * 86_400_000
    forwarded_at, now_ms = future["timestamp"], int(time.time() * 1000)
    records = [
        Record(event, b"u", "log", 0, 0, now_ms, origin="events:1", origin_offset=5),
        Record(event, b"u", "log", 0, 1, now_ms, origin="events:1", origin_offset=5),  # again
        Record(orjson.dumps(future), b"u", "log", 0, 2, forwarded_at, "events:1", 6),
    ]
    result = pipeline.process(records)
    assert (result.learned, result.duplicates, result.dead_letters) == (2, 1, [])
    assert result.origins == ["events:1"] * len(result.recommendations)
    assert pipeline.preprocessor.origin_positions() == {"events:1": 7}


@pytest.mark.parametrize("partitions", [0, 2])
def test_a_learn_log_that_is_missing_or_split_stops_the_service_with_how_to_fix_it(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path, partitions: int
) -> None:
    topic = unique_topic("events", partitions=PARTITIONS)
    learn_log = unique_topic("learn", partitions=partitions) if partitions else f"{topic}.none"
    with pytest.raises(ConfigError, match=r"kafka\.learn_log_topic.*partitions 1"):
        service.run(settings(kafka_bootstrap, topic, learn_log, tmp_path), max_events=1)
