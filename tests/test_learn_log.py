"""Several instances, one model (`kafka.learn_log_topic`), against the real test broker.

Each instance forwards the event partitions it owns into a one-partition learn log and learns the
whole log as a replica. What must hold: every replica's model is the learn log replayed in order
(equal digests across instances), every source offset is learned exactly once by every replica
through crashes and moves, and each user's lists come from the instance that forwards the user's
partition.
"""

from __future__ import annotations

import shutil
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
    wait_for,
)

from streamrec import service
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.errors import ConfigError
from streamrec.io import learn_log
from streamrec.io.kafka_config import create_topics
from streamrec.io.kafka_source import to_record
from streamrec.settings import KafkaSettings, ServiceSettings, Settings, load_settings
from streamrec.store import checkpoint

MODEL = load_settings(None, model={"rating_model": "biased_mf"}).model
KEY = "test-checkpoint-key"
PARTITIONS = 4


def topics(bootstrap: str, unique_topic: Callable[..., str]) -> tuple[str, str]:
    """A fresh 4-partition event topic and its one-partition learn log (plus outputs)."""
    topic = unique_topic("events", partitions=PARTITIONS)
    log = f"{topic}.learn"
    create_topics(bootstrap, [log, f"{topic}.recs", f"{topic}.dlq"])
    return topic, log


def settings(bootstrap: str, topic: str, log_topic: str, state_dir: Path) -> Settings:
    return Settings(
        model=MODEL,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topics=[topic],
            group_id=f"g-{topic}",
            learn_log_topic=log_topic,
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


def learn_log_replayed(bootstrap: str, learn_log_topic: str, n: int) -> tuple[Pipeline, int]:
    """One in-process pass over the learn log's first `n` messages, in log order and in its
    batches (what every replica must equal), and the number of lists it made."""
    pipeline, lists = Pipeline(MODEL), 0
    for message in read_topic(bootstrap, learn_log_topic, n):
        _, records = learn_log.decode(to_record(message))
        lists += len(pipeline.process(records).recommendations)
    return pipeline, lists


def end_offsets(bootstrap: str, topic: str, n: int) -> dict[str, int]:
    """Per partition of `topic`, one past its last offset (read from the `n` records it holds)."""
    ends: dict[str, int] = {}
    for message in read_topic(bootstrap, topic, n):
        key = f"{message.topic()}:{message.partition()}"
        ends[key] = max(ends.get(key, 0), (message.offset() or 0) + 1)
    return ends


def test_two_instances_hold_one_model_and_split_the_publishing(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    total = 4_000
    topic, log_topic = topics(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=21)
    produce(kafka_bootstrap, topic, values[: total // 2])
    a = Instance(settings(kafka_bootstrap, topic, log_topic, tmp_path / "a"))
    b = Instance(settings(kafka_bootstrap, topic, log_topic, tmp_path / "b"))
    wait_for(lambda: a.now().assigned > 0 < b.now().assigned, 30, "both replicas to start")
    produce(kafka_bootstrap, topic, values[total // 2 :])
    wait_for(
        lambda: a.now().events_learned == total and b.now().events_learned == total,
        90,
        "both replicas to learn every event",
    )
    summaries = [a.finish(), b.finish()]

    infos = [checkpoint.inspect(tmp_path / name, KEY) for name in ("a", "b")]
    [position] = {info["offsets"][0]["offset"] for info in infos}  # both at the log's end
    replayed, made = learn_log_replayed(kafka_bootstrap, log_topic, position)
    assert [s.model_digest for s in summaries] == [replayed.model_digest()] * 2
    assert replayed.preprocessor.origin_positions() == end_offsets(kafka_bootstrap, topic, total)
    # Not only the model: the same batches drew the same exploration, so all state is equal.
    for info in infos:
        state = checkpoint.load(Path(info["path"]), KEY).state.pipeline
        assert Pipeline.from_state(MODEL, state).state_digest() == replayed.state_digest()
    # Both forwarded (the group split the partitions), and between them they published every
    # list the model made exactly once: who publishes a message's lists is written in it.
    assert all(s.published > 0 for s in summaries), summaries
    assert sum(s.published for s in summaries) == made
    lists = read_topic(kafka_bootstrap, f"{topic}.recs", sum(s.published for s in summaries))
    users = {orjson.loads(v)["user_id"] for v in values}
    assert {orjson.loads(m.value() or b"")["user_id"] for m in lists} == users


@pytest.mark.slow
def test_a_sigkilled_instance_restarts_and_every_replica_learns_each_event_once(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    total = 8_000
    topic, log_topic = topics(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=22)
    produce(kafka_bootstrap, topic, values[: total // 2])
    env = {
        "STREAMREC_MODEL__RATING_MODEL": MODEL.rating_model,
        "STREAMREC_KAFKA__LEARN_LOG_TOPIC": log_topic,
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
    replayed, _ = learn_log_replayed(kafka_bootstrap, log_topic, max(positions.values()))
    digest = replayed.model_digest()
    assert replayed.preprocessor.origin_positions() == ends
    for name, info in infos.items():
        assert info["events_learned"] == total, name
        assert info["model_digest"] == digest, name  # repeats past a shorter prefix change nothing
        # The replica learned every learn-log record up to its position exactly once...
        assert ledger_problems([info["extra"]["ledger"]], {f"{log_topic}:0": positions[name]}) == []
        # ...and so every source offset once: the repeats were dropped by origin.
        state = checkpoint.load(Path(info["path"]), KEY).state.pipeline
        assert state.preprocessor.origin_positions() == ends, name
        # The whole state, bandit included, is the log replayed: through the SIGKILL too.
        own, _ = learn_log_replayed(kafka_bootstrap, log_topic, positions[name])
        assert Pipeline.from_state(MODEL, state).state_digest() == own.state_digest(), name


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
    assert pipeline.preprocessor.origin_positions() == {"events:1": 7}


@pytest.mark.parametrize("partitions", [0, 2])
def test_a_learn_log_that_is_missing_or_split_stops_the_service_with_how_to_fix_it(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path, partitions: int
) -> None:
    topic = unique_topic("events", partitions=PARTITIONS)
    log_topic = unique_topic("learn", partitions=partitions) if partitions else f"{topic}.none"
    with pytest.raises(ConfigError, match=r"kafka\.learn_log_topic.*partitions 1"):
        service.run(settings(kafka_bootstrap, topic, log_topic, tmp_path), max_events=1)


def test_a_learn_log_message_holds_a_forwarded_batch_exactly() -> None:
    records = [
        Record(b'{"a": 1}', b"u1", "events", 3, 17, 5),
        Record(None, None, "events", 3, 18, 6),
        Record(b"", b"", "other", 0, 2**40, None),
        Record(b"\xff" * 70_000, b"u2", "events", 1, 0, 7),
    ]
    data = learn_log.encode(records, "streamrec-7")
    message = Record(data, None, "log", 0, 9, 1234)
    forwarder, decoded = learn_log.decode(message)
    assert forwarder == "streamrec-7"
    assert [(r.value, r.key, r.origin, r.origin_offset) for r in decoded] == [
        (r.value, r.key, f"{r.topic}:{r.partition}", r.offset) for r in records
    ]
    assert {(r.topic, r.partition, r.offset, r.timestamp_ms) for r in decoded} == {
        ("log", 0, 9, 1234)
    }
    for damaged in (b"not ours", data[:-1], data + b"x"):
        with pytest.raises(learn_log.LearnLogError):
            learn_log.decode(Record(damaged, None, "log", 0, 10))


def test_forwarded_batches_stay_under_the_message_limit() -> None:
    big = [Record(b"x" * 60_000, b"k", "e", 0, i) for i in range(30)]
    cut = learn_log.batches(big, max_records=1000)
    assert [r for batch in cut for r in batch] == big
    assert all(len(learn_log.encode(batch, "x")) <= learn_log.MAX_BATCH_BYTES for batch in cut)
    assert [len(b) for b in learn_log.batches(big[:5], max_records=2)] == [2, 2, 1]


def test_a_replica_whose_state_dir_was_emptied_learns_the_learn_log_again(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    """Its group committed the end of the learn log, but that was the lost state's position:
    the new state starts at the beginning, never with a model that lacks the events."""
    total = 1_500
    topic, log_topic = topics(kafka_bootstrap, unique_topic)
    produce(kafka_bootstrap, topic, make_events(total, seed=24))
    base = settings(kafka_bootstrap, topic, log_topic, tmp_path / "state")
    named = base.model_copy(
        update={"service": base.service.model_copy(update={"instance_id": "streamrec-0"})}
    )
    first = service.run(named, stop_when_idle=2)
    shutil.rmtree(tmp_path / "state")
    again = service.run(named, stop_when_idle=2)
    assert first.events_learned == again.events_learned == total
    assert again.model_digest == first.model_digest
