"""The Kafka service against a real broker: crash recovery, bad input, rebalances, shutdown.

These are the done-when tests of issue 3. Everything waits on conditions with deadlines; the only
randomness is *where* the consumer is killed, and the seed is in every failure message.
"""

from __future__ import annotations

import gc
import hashlib
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka_helpers import (
    FAST_GROUP,
    Instance,
    ServiceProcess,
    headers_of,
    ledger_problems,
    make_events,
    produce,
    read_topic,
    user_key,
    wait_for,
)

from streamrec import cli, service
from streamrec.contract.records import MAX_RECORD_BYTES, Record
from streamrec.core.pipeline import Pipeline
from streamrec.core.preprocess import Preprocessor
from streamrec.errors import CheckpointError
from streamrec.io import kafka_source
from streamrec.io.kafka_config import create_topics
from streamrec.io.kafka_sink import KafkaSink
from streamrec.io.produce_file import produce_file
from streamrec.settings import KafkaSettings, ServiceSettings, Settings, load_settings
from streamrec.store import checkpoint

pytestmark = pytest.mark.kafka

# The fast rating model: learning is what is tested here, not quality. Built the way the service
# process builds its settings (load_settings), so in-process references match it field for field.
MODEL = load_settings(None, model={"rating_model": "biased_mf"}).model
KEY = "test-checkpoint-key"


def make_settings(
    bootstrap: str,
    topic: str,
    state_dir: Path,
    group: str,
    consumer: dict[str, str | int | float | bool] | None = None,
    **service_options: Any,
) -> Settings:
    return Settings(
        model=MODEL,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topics=[topic],
            group_id=group,
            recommendations_topic=f"{topic}.recs",
            dlq_topic=f"{topic}.dlq",
            consumer={**FAST_GROUP, **(consumer or {})},
        ),
        service=ServiceSettings(
            state_dir=state_dir,
            checkpoint_key=KEY,
            metrics_port=0,
            offset_ledger=True,
            **service_options,
        ),
    )


def process_env(topic: str) -> dict[str, str]:
    """Environment of a `python -m streamrec.service` subprocess (the settings' env twins)."""
    return {
        "STREAMREC_MODEL__RATING_MODEL": MODEL.rating_model,
        "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": f"{topic}.recs",
        "STREAMREC_KAFKA__DLQ_TOPIC": f"{topic}.dlq",
        "STREAMREC_KAFKA__CONSUMER": orjson.dumps(FAST_GROUP).decode(),
        "STREAMREC_SERVICE__OFFSET_LEDGER": "true",
        "STREAMREC_SERVICE__CHECKPOINT_KEY": KEY,
        "STREAMREC_LOG_LEVEL": "WARNING",
        "OPENBLAS_NUM_THREADS": "1",
    }


def event_topic(bootstrap: str, unique_topic: Callable[..., str], partitions: int = 1) -> str:
    """A fresh event topic, with its recommendations and dead-letter topics beside it."""
    topic = unique_topic("events", partitions=partitions)
    create_topics(bootstrap, [f"{topic}.recs", f"{topic}.dlq"])
    return topic


def uninterrupted_digest(values: list[bytes]) -> str:
    """The model digest of one in-process pass over `values` (the reference for every run)."""
    pipeline = Pipeline(MODEL)
    records = [Record(value=v, key=user_key(v)) for v in values]
    for start in range(0, len(records), 1000):
        pipeline.process(records[start : start + 1000], refresh=False)
    return pipeline.model_digest()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return [tp.offset for tp in found]
    finally:
        consumer.close()


def final_checkpoint(state_dir: Path) -> dict[str, Any]:
    return checkpoint.inspect(state_dir, KEY)


# -- crash recovery ------------------------------------------------------------------------------


def _run_with_kills(
    bootstrap: str, topic: str, state_dir: Path, total: int, kills: int, seed: int
) -> int:
    """Start the service, SIGKILL it once its model passes each of `kills` random points,
    restart, and finally let it finish; the number of kills that hit a consumer mid-stream."""
    rng = random.Random(seed)
    thresholds = sorted(rng.sample(range(total // 20, total - total // 20), kills))
    args = [
        *("--bootstrap-servers", bootstrap, "--topics", topic, "--group-id", f"g-{topic}"),
        *("--state-dir", str(state_dir), "--batch-size", "200", "--metrics-port", "0"),
        *("--checkpoint-every-events", str(total // 12), "--stop-when-idle", "2"),
    ]
    env = process_env(topic)
    mid_stream = 0
    for threshold in thresholds:
        process = ServiceProcess(args, env)
        try:
            process.wait_progress(lambda p, t=threshold: p["events_learned"] >= t, timeout_s=60)
            process.kill()
        finally:
            process.close()
        mid_stream += process.last["events_learned"] < total
    process = ServiceProcess(args, env)
    assert process.wait(timeout_s=120) == 0, f"seed {seed}: {''.join(process.stderr[-5:])}"
    assert process.summary is not None and process.summary["stopped_by"] == "idle"
    return mid_stream


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_learns_nothing_twice(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    total = 20_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=1)
    produce(kafka_bootstrap, topic, values)
    seed = random.randrange(1_000_000)

    mid_stream = _run_with_kills(kafka_bootstrap, topic, state_dir, total, kills=6, seed=seed)

    info = final_checkpoint(state_dir)
    assert mid_stream >= 5, f"seed {seed}: only {mid_stream} kills hit a running stream"
    assert info["events_learned"] == total, f"seed {seed}"
    assert info["model_digest"] == uninterrupted_digest(values), f"seed {seed}"
    assert info["offsets"] == [{"topic": topic, "partition": 0, "offset": total}]
    assert ledger_problems([info["extra"]["ledger"]], {f"{topic}:0": total}) == []
    assert committed_offsets(kafka_bootstrap, f"g-{topic}", topic, 1) == [total]
    # The bandit state crossed every kill inside the checkpoints too: lists awaiting rewards are
    # pending, and resolved ones taught the policy.
    state = checkpoint.load(Path(info["path"]), KEY).state.pipeline
    assert len(state.pending) > 0
    assert sum(state.policy.policy._counts.values()) > 0


@pytest.mark.slow
def test_sigkill_with_several_partitions_learns_every_offset_exactly_once(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    total, partitions = 8_000, 4
    topic = event_topic(kafka_bootstrap, unique_topic, partitions=partitions)
    produce(kafka_bootstrap, topic, make_events(total, seed=2))
    seed = random.randrange(1_000_000)

    _run_with_kills(kafka_bootstrap, topic, state_dir, total, kills=3, seed=seed)

    info = final_checkpoint(state_dir)
    ends = {f"{o['topic']}:{o['partition']}": o["offset"] for o in info["offsets"]}
    assert len(ends) == partitions and sum(ends.values()) == total, f"seed {seed}: {ends}"
    assert ledger_problems([info["extra"]["ledger"]], ends) == [], f"seed {seed}"
    assert info["events_learned"] == total, f"seed {seed}"


# -- bad input -----------------------------------------------------------------------------------


def _malformed(i: int) -> tuple[bytes | None, bytes | None]:
    """The i-th malformed record (value, key), cycling through the ways input goes wrong."""
    good = orjson.loads(make_events(1, seed=1000 + i)[0])
    kinds: list[tuple[bytes | None, bytes | None]] = [
        (b"{not json", b"u1"),
        (b"[1, 2, 3]", b"u1"),
        (b'"a string"', b"u1"),
        (b"\xff\xfe\x00garbage", b"u1"),
        (orjson.dumps({k: v for k, v in good.items() if k != "user_id"}), b"u1"),
        (orjson.dumps({**good, "type": "view"}), b"u1"),
        (orjson.dumps({**good, "type": "rating", "rating": 7}), b"u1"),
        (orjson.dumps({**good, "type": "rating", "rating": None}), b"u1"),
        (orjson.dumps({**good, "timestamp": 4_102_444_800_000}), b"u1"),  # year 2100
        (orjson.dumps({**good, "timestamp": True}), b"u1"),
        (orjson.dumps({**good, "user_id": "u" * 300}), b"u1"),
        (orjson.dumps({**good, "type": "purchase", "quantity": -3}), b"u1"),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', b"u1"),  # oversize
        (None, b"u1"),  # tombstone
        (b"", b"u1"),
        (orjson.dumps(good), None),  # valid event, but no key
        (b"{not json", None),  # no key either, but the value is what is wrong with it
        (orjson.dumps({k: v for k, v in good.items() if k != "user_id"}), None),
    ]
    return kinds[i % len(kinds)]


def test_malformed_records_all_reach_the_dlq_and_the_model_sees_only_valid_ones(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    n_valid, n_bad = 3_000, 1_008
    topic = event_topic(kafka_bootstrap, unique_topic)
    valid = make_events(n_valid, seed=3)
    rng = random.Random(3)
    bad = [_malformed(i) for i in range(n_bad)]
    mixed: list[tuple[bytes | None, bytes | None, bool]] = [(v, user_key(v), True) for v in valid]
    for value, key in bad:
        mixed.insert(rng.randrange(len(mixed) + 1), (value, key, False))
    produce(kafka_bootstrap, topic, [v for v, _, _ in mixed], keys=[k for _, k, _ in mixed])
    settings = make_settings(kafka_bootstrap, topic, state_dir, f"g-{topic}", batch_size=500)

    collector = gc.get_threshold()
    during: set[tuple[int, ...]] = set()
    summary = service.run(
        settings, stop_when_idle=1.5, on_batch=lambda _: during.add(gc.get_threshold())
    )

    # The loop ran with the service's collector settings, and left the process as it found it.
    assert during == {service.GC_THRESHOLDS}
    assert (gc.get_threshold(), gc.get_freeze_count()) == (collector, 0)
    assert summary.stopped_by == "idle"  # it never exited on bad input
    assert (summary.consumed, summary.learned) == (len(mixed), n_valid)
    assert summary.dead_letters == n_bad
    dlq = read_topic(kafka_bootstrap, f"{topic}.dlq", n_bad)
    assert len(dlq) == n_bad
    preprocessor = Preprocessor(MODEL)
    reasons = set()
    for message in dlq:
        headers = headers_of(message)
        offset = int(headers["streamrec.source.offset"])
        value, key, is_valid = mixed[offset]
        assert not is_valid
        published = value
        if value is not None and len(value) > MAX_RECORD_BYTES:  # cut, with the original's digest
            assert headers["streamrec.original.sha256"] == hashlib.sha256(value).hexdigest()
            published = value[:MAX_RECORD_BYTES]
        assert (message.value(), message.key()) == (published, key)
        assert headers["streamrec.source.topic"] == topic
        assert headers["streamrec.source.partition"] == "0"
        assert headers["streamrec.error.message"]
        # The same reason as replay gives the same bytes (a file record has no key to miss).
        expected = getattr(preprocessor.check(Record(value=value)), "reason", None)
        if expected is None:
            assert key is None
            expected = "missing_key"
        assert headers["streamrec.error.reason"] == expected, (value, key)
        reasons.add(expected)
    assert len(reasons) >= 9 and "missing_key" in reasons
    assert summary.model_digest == uninterrupted_digest(valid)
    assert final_checkpoint(state_dir)["model_digest"] == summary.model_digest


# -- rebalance -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_a_second_consumer_joining_and_leaving_loses_and_repeats_nothing(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path, strategy: str
) -> None:
    """Incremental (cooperative) and eager (range) rebalances both hand partitions over at the
    offsets of a durable checkpoint."""
    total, partitions = 12_000, 4
    topic = event_topic(kafka_bootstrap, unique_topic, partitions=partitions)
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(make_events(total, seed=4)))
    # Events keep arriving while the group changes, as they would in production.
    producer = threading.Thread(
        target=produce_file, args=(log, kafka_bootstrap, topic, 1_000.0), daemon=True
    )
    producer.start()
    group = f"g-{topic}"
    options = {"partition.assignment.strategy": strategy}
    a = Instance(
        make_settings(kafka_bootstrap, topic, tmp_path / "a", group, options, batch_size=200)
    )
    wait_for(lambda: a.now().events_learned >= 1_500, 60, "the first consumer to learn")

    b = Instance(
        make_settings(kafka_bootstrap, topic, tmp_path / "b", group, options, batch_size=200)
    )
    wait_for(lambda: b.now().learned >= 300, 60, "the second consumer to get partitions")
    assert a.progress.assigned < partitions  # a gave partitions to b
    b_summary = b.finish()

    wait_for(lambda: a.now().assigned == partitions, 60, "b's partitions to come back to a")
    wait_for(lambda: a.now().consumed + b_summary.consumed >= total, 60, "every event consumed")
    producer.join(30)
    a_summary = a.finish()

    infos = [final_checkpoint(tmp_path / "a"), final_checkpoint(tmp_path / "b")]
    ends = {f"{o['topic']}:{o['partition']}": o["offset"] for o in infos[0]["offsets"]}
    assert sum(ends.values()) == total and len(ends) == partitions
    assert ledger_problems([info["extra"]["ledger"] for info in infos], ends) == []
    assert infos[0]["events_learned"] + infos[1]["events_learned"] == total
    assert a_summary.learned + b_summary.learned == total
    assert committed_offsets(kafka_bootstrap, group, topic, partitions) == [
        ends[f"{topic}:{p}"] for p in range(partitions)
    ]


# -- shutdown, tampering, commit order -----------------------------------------------------------


def test_sigterm_finishes_the_batch_checkpoints_commits_and_exits_0(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    total = 10_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    produce(kafka_bootstrap, topic, make_events(total, seed=5))
    args = [
        *("--bootstrap-servers", kafka_bootstrap, "--topics", topic, "--group-id", f"g-{topic}"),
        *("--state-dir", str(state_dir), "--batch-size", "100", "--metrics-port", "0"),
        *("--checkpoint-every-events", "1000000", "--checkpoint-every-seconds", "600"),
    ]
    process = ServiceProcess(args, process_env(topic))
    try:
        process.wait_progress(lambda p: p["events_learned"] >= 1_000, timeout_s=60)
        process.process.send_signal(signal.SIGTERM)
        assert process.wait(timeout_s=30) == 0, "".join(process.stderr[-5:])
    finally:
        process.close()

    assert process.summary is not None and process.summary["stopped_by"] == "signal"
    info = final_checkpoint(state_dir)
    learned = info["events_learned"]
    assert 1_000 <= learned < total  # stopped mid-stream, not at the end
    assert learned == process.summary["events_learned"] == process.summary["consumed"]
    assert info["offsets"] == [{"topic": topic, "partition": 0, "offset": learned}]
    assert committed_offsets(kafka_bootstrap, f"g-{topic}", topic, 1) == [learned]
    # What `python -m streamrec.service` wrote, `streamrec run` (this process) can restore.
    restored = checkpoint.CheckpointStore(state_dir, KEY).latest()
    assert restored is not None and restored.state.pipeline.model.events_learned == learned


def test_a_tampered_checkpoint_stops_the_service_with_a_clear_error(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    topic = event_topic(kafka_bootstrap, unique_topic)
    produce(kafka_bootstrap, topic, make_events(500, seed=6))
    settings = make_settings(kafka_bootstrap, topic, state_dir, f"g-{topic}")
    service.run(settings, max_events=500)
    [path] = list(state_dir.glob("checkpoint-*.ckpt"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))

    with pytest.raises(CheckpointError, match="integrity"):
        service.run(settings, max_events=500)
    argv = [
        *("--bootstrap-servers", kafka_bootstrap, "--topics", topic, "--group-id", "x"),
        *("--state-dir", str(state_dir), "--max-events", "1", "--metrics-port", "0"),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STREAMREC_SERVICE__CHECKPOINT_KEY", KEY)
        assert cli.main(["run", *argv]) == 1


def test_a_checkpoint_that_cannot_be_written_commits_nothing_and_stops_the_service(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = 2_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=7)
    produce(kafka_bootstrap, topic, values)
    group = f"g-{topic}"
    settings = make_settings(
        kafka_bootstrap, topic, state_dir, group, batch_size=100, checkpoint_every_events=500
    )
    real_save = checkpoint.CheckpointStore.save
    calls = {"n": 0}

    def save(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise CheckpointError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint.CheckpointStore, "save", save)
    collector = gc.get_threshold()
    with pytest.raises(CheckpointError, match="disk full"):
        service.run(settings, stop_when_idle=2)
    assert (gc.get_threshold(), gc.get_freeze_count()) == (collector, 0)  # restored on failure too

    [only] = list(state_dir.glob("checkpoint-*.ckpt"))  # the first commit point's, no other
    first = checkpoint.read_meta(only, KEY).offsets[(topic, 0)]
    assert 500 <= first < total
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == [first]

    monkeypatch.undo()
    summary = service.run(settings, stop_when_idle=1.5)  # the restart replays from there
    assert summary.consumed == total - first
    assert summary.events_learned == total
    assert summary.model_digest == uninterrupted_digest(values)


def test_outputs_lost_at_a_commit_point_roll_the_model_back_and_nothing_is_committed(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second commit point finds outputs that could not be delivered: it writes and commits
    nothing, the model goes back to the first checkpoint, replays, and ends where a run without
    the failure ends (the replayed events counted as relearned)."""
    from prometheus_client import CollectorRegistry

    from streamrec.obs.metrics import Metrics
    from streamrec.service.state import ModelState
    from streamrec.service.worker import Worker

    total = 2_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=7)
    produce(kafka_bootstrap, topic, values)
    settings = make_settings(
        kafka_bootstrap, topic, state_dir, f"g-{topic}", batch_size=100, checkpoint_every_events=500
    )
    steps: list[str] = []
    real_flush, real_save = KafkaSink.flush, ModelState.save
    real_commit, real_rollback = kafka_source.KafkaSource.commit, Worker._rollback

    def flush(sink: KafkaSink, timeout_s: float) -> int:
        steps.append("flush")
        remaining = real_flush(sink, timeout_s)
        if steps.count("flush") == 2:
            sink.lost += 3  # as if three deliveries had timed out
            steps.append("lost")
        return remaining

    def record(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            steps.append(name)
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(KafkaSink, "flush", flush)
    monkeypatch.setattr(ModelState, "save", record("save", real_save))
    monkeypatch.setattr(kafka_source.KafkaSource, "commit", record("commit", real_commit))
    monkeypatch.setattr(Worker, "_rollback", record("rollback", real_rollback))
    registry = CollectorRegistry()
    summary = service.run(settings, stop_when_idle=1.5, metrics=Metrics(registry))

    lost = steps.index("lost")
    assert steps[:lost] == ["flush", "save", "commit", "flush"]
    assert steps[lost + 1] == "rollback"  # nothing written or committed in between
    assert summary.rollbacks == 1 and summary.relearned > 0
    assert summary.events_learned == total
    assert summary.model_digest == uninterrupted_digest(values)
    info = final_checkpoint(state_dir)
    assert ledger_problems([info["extra"]["ledger"]], {f"{topic}:0": total}) == []
    sample = registry.get_sample_value
    assert sample("streamrec_rollbacks_total", {"cause": "delivery_failed"}) == 1
    assert sample("streamrec_events_relearned_total") == summary.relearned
    assert sample("streamrec_events_committed_total") == total
    assert sample("streamrec_events_learned_total") == total + summary.relearned


@pytest.mark.slow
def test_partitions_lost_while_frozen_discard_progress_since_the_checkpoint(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    """SIGSTOP past the session timeout: the group expels the consumer. On SIGCONT it must treat
    its partitions as lost (another member could own them), reload the last checkpoint, rejoin,
    and still learn every event exactly once."""
    total = 8_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=8)
    produce(kafka_bootstrap, topic, values)
    args = [
        *("--bootstrap-servers", kafka_bootstrap, "--topics", topic, "--group-id", f"g-{topic}"),
        *("--state-dir", str(state_dir), "--batch-size", "100", "--metrics-port", "0"),
        *("--checkpoint-every-events", "1000", "--stop-when-idle", "2"),
    ]
    process = ServiceProcess(args, {**process_env(topic), "STREAMREC_LOG_LEVEL": "INFO"})
    try:
        process.wait_progress(lambda p: p["events_learned"] >= 1_500, timeout_s=60)
        process.process.send_signal(signal.SIGSTOP)
        # The one timed wait in these tests: expiry happens inside the broker, and Tansu's
        # DescribeGroups lists no members, so there is nothing to poll. Twice the session
        # timeout; if that were too short the test fails (no "lost"), it cannot pass wrongly.
        time.sleep(2 * FAST_GROUP["session.timeout.ms"] / 1000)
        process.process.send_signal(signal.SIGCONT)
        assert process.wait(timeout_s=90) == 0, "".join(process.stderr[-5:])
    finally:
        process.close()

    assert any("partitions lost" in line for line in process.stderr), "".join(process.stderr)
    info = final_checkpoint(state_dir)
    log = "".join(process.stderr)
    assert info["events_learned"] == total, log
    assert ledger_problems([info["extra"]["ledger"]], {f"{topic}:0": total}) == []
    assert info["model_digest"] == uninterrupted_digest(values)


def test_metrics_and_readiness_follow_the_consumer(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    import urllib.error
    import urllib.request

    from prometheus_client import CollectorRegistry

    from streamrec.io.embedded_broker import free_port
    from streamrec.obs.metrics import Metrics

    total = 1_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    produce(kafka_bootstrap, topic, make_events(total, seed=9))
    port = free_port()
    settings = make_settings(kafka_bootstrap, topic, state_dir, f"g-{topic}")
    settings = settings.model_copy(
        update={
            "service": settings.service.model_copy(update={"metrics_port": port}),
            "kafka": settings.kafka.model_copy(
                update={"consumer": {**FAST_GROUP, "statistics.interval.ms": 200}}
            ),
        }
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    stop = threading.Event()
    result: dict[str, Any] = {}

    def target() -> None:
        result["summary"] = service.run(settings, metrics=metrics, stop=stop, handle_signals=False)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    statuses: list[int] = []

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
                statuses.append(reply.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
        except urllib.error.URLError:
            return False  # not listening yet
        return statuses[-1] == 200

    try:
        wait_for(ready, 60, "/readyz to report ready")
        assert statuses[0] == 503  # restored but not yet assigned: not ready
        sample = registry.get_sample_value
        wait_for(
            lambda: sample("streamrec_events_learned_total") == total, 60, "every event learned"
        )
        wait_for(
            lambda: sample("streamrec_consumer_lag", {"topic": topic, "partition": "0"}) == 0,
            30,
            "consumer lag 0",
        )
        assert sample("streamrec_rebalances_total", {"kind": "assign"}) >= 1
        assert sample("streamrec_assigned_partitions") == 1
        # Counted on delivery reports, which arrive a few milliseconds after the batch.
        wait_for(
            lambda: sample("streamrec_recommendations_published_total"), 30, "delivery reports"
        )
    finally:
        stop.set()
        thread.join(30)
    assert result["summary"].checkpoints >= 1
    assert registry.get_sample_value("streamrec_checkpoint_size_bytes") > 0
    assert registry.get_sample_value("streamrec_checkpoints_total", {"result": "ok"}) >= 1


def test_a_crash_between_checkpoint_and_commit_resumes_from_the_checkpoint(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The checkpoint, not the group's committed offset, says where this model stopped: after a
    crash right after a checkpoint became durable, the committed offset lags behind it."""
    total = 2_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=10)
    produce(kafka_bootstrap, topic, values)
    group = f"g-{topic}"
    settings = make_settings(
        kafka_bootstrap, topic, state_dir, group, batch_size=100, checkpoint_every_events=500
    )

    class CrashOnSecondCommit(Consumer):
        commits = 0

        def commit(self, *args: Any, **kwargs: Any) -> Any:
            CrashOnSecondCommit.commits += 1
            if CrashOnSecondCommit.commits == 2:
                raise SystemExit("simulated crash after the checkpoint, before the commit")
            return super().commit(*args, **kwargs)

    monkeypatch.setattr(kafka_source, "Consumer", CrashOnSecondCommit)
    with pytest.raises(SystemExit):
        service.run(settings, stop_when_idle=2)
    monkeypatch.undo()

    newest = checkpoint.CheckpointStore(state_dir, KEY).paths()[-1]
    checkpointed = checkpoint.read_meta(newest, KEY).offsets[(topic, 0)]
    [committed] = committed_offsets(kafka_bootstrap, group, topic, 1)
    assert 0 < committed < checkpointed < total

    summary = service.run(settings, stop_when_idle=1.5)

    assert summary.consumed == total - checkpointed  # not total - committed: nothing relearned
    assert summary.events_learned == total
    assert summary.model_digest == uninterrupted_digest(values)


def test_falling_back_past_a_corrupt_checkpoint_replays_from_the_older_ones_offsets(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The newest checkpoint is damaged: the service says so loudly, restores the previous one,
    and replays from *its* offsets although the group committed further (from the lost one)."""
    total = 1_000
    topic = event_topic(kafka_bootstrap, unique_topic)
    values = make_events(total, seed=11)
    produce(kafka_bootstrap, topic, values)
    group = f"g-{topic}"
    settings = make_settings(
        kafka_bootstrap, topic, state_dir, group, batch_size=100, checkpoint_every_events=300
    )
    service.run(settings, max_events=total)
    *_, previous, newest = checkpoint.CheckpointStore(state_dir, KEY).paths()
    older_offset = checkpoint.read_meta(previous, KEY).offsets[(topic, 0)]
    newest.write_bytes(newest.read_bytes()[:-10])
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == [total]

    summary = service.run(settings, stop_when_idle=1.5)

    assert any("REJECTED" in r.message and r.levelname == "ERROR" for r in caplog.records)
    assert summary.consumed == total - older_offset > 0
    assert summary.events_learned == total
    assert summary.model_digest == uninterrupted_digest(values)
