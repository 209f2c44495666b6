"""The Kafka edges against a real broker: embedded broker, topics, produce_file, the output sink."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from kafka_helpers import headers_of, make_events, read_topic

from streamrec.contract.events import Recommendation, RecommendedItem, decode_recommendation
from streamrec.contract.records import DeadLetter, Record
from streamrec.io.kafka_config import consumer_config, create_topics, producer_config
from streamrec.io.kafka_sink import KafkaSink
from streamrec.io.produce_file import produce_file
from streamrec.settings import KafkaSettings

pytestmark = pytest.mark.kafka


def test_broker_module_prints_its_address_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "streamrec.io.embedded_broker"], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            address = process.stdout.readline().strip()  # printed only once the port accepts
            host, port = address.split(":")
            assert host == "127.0.0.1" and int(port) > 0
            create_topics(address, ["probe"])
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_create_topics_is_idempotent(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=3)
    create_topics(kafka_bootstrap, [topic], partitions=3)  # exists already: no error


def test_produce_file_keys_events_by_user_and_sends_garbage_unkeyed(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = unique_topic()
    events = make_events(50)
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join([*events[:25], b"", b"not json {", *events[25:], b"[1,2]"]) + b"\n")

    assert produce_file(log, kafka_bootstrap, topic) == 52

    messages = read_topic(kafka_bootstrap, topic, 52)
    assert len(messages) == 52
    by_value = {m.value(): m.key() for m in messages}
    for value in events:
        assert by_value[value] == orjson.loads(value)["user_id"].encode()
    assert by_value[b"not json {"] is None and by_value[b"[1,2]"] is None


def test_produce_file_honours_the_rate(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    import time

    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(make_events(40)))
    started = time.monotonic()
    produce_file(log, kafka_bootstrap, unique_topic(), rate=100)
    assert time.monotonic() - started >= 0.38  # 40 messages at 100/s take at least 0.39 s


def replace_reason(rec: Recommendation, reason: str) -> Recommendation:
    from dataclasses import replace

    return replace(rec, items=[replace(item, reason=reason) for item in rec.items])


def _recommendation(user: str) -> Recommendation:
    return Recommendation(
        rec_id=f"r-{user}",
        user_id=user,
        generated_at=datetime.now(UTC),
        model_version=7,
        items=[
            RecommendedItem(
                item_id="i1", score=1.0, rank=1, source="model", propensity=1.0, reason="test"
            )
        ],
    )


def test_sink_publishes_keyed_recommendations_and_never_drops_on_a_full_queue(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    recs_topic, dlq_topic = unique_topic("recs"), unique_topic("dlq")
    # A local queue of 10 messages forces BufferError again and again.
    config = producer_config(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        **{"queue.buffering.max.messages": 10},
    )
    sink = KafkaSink(config, recs_topic, dlq_topic)
    sink.publish([_recommendation(f"u{i}") for i in range(500)])
    assert sink.flush(30) == 0

    assert sink.delivered == 500 and sink.lost == sink.skipped == 0
    messages = read_topic(kafka_bootstrap, recs_topic, 500)
    assert len(messages) == 500
    first = decode_recommendation(messages[0].value())
    assert messages[0].key() == first.user_id.encode()


def test_dead_letters_keep_the_original_bytes_and_carry_error_headers(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    dlq_topic = unique_topic("dlq")
    sink = KafkaSink(
        producer_config(KafkaSettings(bootstrap_servers=kafka_bootstrap)), "unused", dlq_topic
    )
    bad = Record(value=b"\xff not json", key=b"u1", topic="events", partition=2, offset=41)
    tombstone = Record(value=None, key=b"u2", topic="events", partition=0, offset=7)
    sink.dead_letter(
        [
            DeadLetter(bad, "invalid_json", "not a JSON object: " + "x" * 5000),
            DeadLetter(tombstone, "empty_value", "record has no value"),
        ]
    )
    sink.flush(30)

    messages = sorted(read_topic(kafka_bootstrap, dlq_topic, 2), key=lambda m: m.key())
    assert [(m.key(), m.value()) for m in messages] == [(b"u1", bad.value), (b"u2", None)]
    headers = headers_of(messages[0])
    assert headers["streamrec.error.reason"] == "invalid_json"
    assert headers["streamrec.error.message"].startswith("not a JSON object")
    assert len(headers["streamrec.error.message"]) <= 1000
    assert headers["streamrec.source.topic"] == "events"
    assert headers["streamrec.source.partition"] == "2"
    assert headers["streamrec.source.offset"] == "41"
    assert headers_of(messages[1])["streamrec.error.reason"] == "empty_value"


def test_undeliverable_messages_are_counted_as_lost_for_the_service_to_replay() -> None:
    from streamrec.io.embedded_broker import free_port

    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = producer_config(
        KafkaSettings(bootstrap_servers=nowhere), **{"message.timeout.ms": 300}
    )
    sink = KafkaSink(config, "recs", "dlq")
    sink.publish([_recommendation("u1")])

    assert sink.flush(10) == 0  # nothing pending: the message failed instead
    assert (sink.lost, sink.skipped, sink.delivered) == (1, 0, 0)
    assert sink.first_loss is not None and sink.first_loss.startswith("recommendation")


def test_a_record_too_large_for_kafka_is_dead_lettered_truncated_with_its_digest(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    import hashlib

    from streamrec.core.preprocess import MAX_RECORD_BYTES

    dlq_topic = unique_topic("dlq")
    sink = KafkaSink(
        producer_config(KafkaSettings(bootstrap_servers=kafka_bootstrap)), "unused", dlq_topic
    )
    huge = b'{"pad": "' + b"x" * 1_500_000 + b'"}'
    record = Record(value=huge, key=b"u1", topic="events", partition=0, offset=3)
    sink.dead_letter([DeadLetter(record, "oversize", f"record is {len(huge)} bytes")])
    assert sink.flush(30) == 0

    [message] = read_topic(kafka_bootstrap, dlq_topic, 1)
    assert message.value() == huge[:MAX_RECORD_BYTES] and message.key() == b"u1"
    headers = headers_of(message)
    assert headers["streamrec.error.reason"] == "oversize"
    assert headers["streamrec.original.size"] == str(len(huge))
    assert headers["streamrec.original.sha256"] == hashlib.sha256(huge).hexdigest()
    assert headers["streamrec.value.truncated"] == "true"
    assert (sink.lost, sink.skipped) == (0, 0)


def test_outputs_kafka_refuses_are_skipped_and_counted_never_raised(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    """A producer limit below the record: the dead letter goes again as headers only, the
    recommendation is skipped; both are counted by kind, and nothing raises."""
    from prometheus_client import CollectorRegistry

    from streamrec.obs.metrics import Metrics

    recs_topic, dlq_topic = unique_topic("recs"), unique_topic("dlq")
    registry = CollectorRegistry()
    config = producer_config(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), **{"message.max.bytes": 2000}
    )
    sink = KafkaSink(config, recs_topic, dlq_topic, metrics=Metrics(registry))
    record = Record(value=b"y" * 20_000, key=b"u1", topic="events", partition=1, offset=9)
    sink.dead_letter([DeadLetter(record, "invalid_json", "not a JSON object")])
    big = replace_reason(_recommendation("u2"), "z" * 5000)  # larger than the limit
    sink.publish([big, _recommendation("u3")])
    assert sink.flush(30) == 0

    [dead] = read_topic(kafka_bootstrap, dlq_topic, 1)
    assert dead.value() is None and dead.key() is None
    headers = headers_of(dead)
    assert headers["streamrec.error.reason"] == "invalid_json"
    assert headers["streamrec.source.offset"] == "9"
    assert headers["streamrec.value.dropped"] == "true"
    [rec] = read_topic(kafka_bootstrap, recs_topic, 1)
    assert rec.key() == b"u3"
    assert (sink.skipped, sink.lost) == (2, 0)
    sample = registry.get_sample_value
    for output in ("dead_letter", "recommendation"):
        labels = {"output": output, "error": "MSG_SIZE_TOO_LARGE"}
        assert sample("streamrec_produce_errors_total", labels) == 1, output


def test_passthrough_options_reach_librdkafka_but_cannot_enable_auto_commit() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="b:9092",
        consumer={"security.protocol": "SASL_SSL", "enable.auto.commit": True},
        producer={"enable.idempotence": False, "acks": "all"},
    )
    consumer = consumer_config(kafka)
    assert consumer["security.protocol"] == "SASL_SSL"
    # Resets of a known position are the service's to handle (service.on_log_reset).
    assert consumer["auto.offset.reset"] == "error"
    assert consumer["enable.auto.commit"] is False
    assert consumer["enable.auto.offset.store"] is False
    assert consumer["group.id"] == "streamrec"
    producer = producer_config(kafka)
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
