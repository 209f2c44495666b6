"""The catalog on Kafka: a catalog topic read with the events, tombstones, and its dead letters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka_helpers import BASE_TIMESTAMP_MS, FAST_GROUP, headers_of, produce, read_topic

from streamrec import service
from streamrec.contract.events import decode_recommendation
from streamrec.io.kafka_config import create_topics
from streamrec.io.kafka_source import subscribed_topics
from streamrec.io.produce_file import _record_key
from streamrec.settings import KafkaSettings, ModelSettings, ServiceSettings, Settings

pytestmark = pytest.mark.kafka

GENRES = ("Comedy", "Horror")


def _catalog() -> list[bytes]:
    return [
        orjson.dumps(
            {
                "type": "item",
                "item_id": f"m{n}",
                "title": f"Film number {n} ({1990 + n})",
                "categories": [GENRES[n % 2]],
            }
        )
        for n in range(20)
    ]


def _clicks(n: int, first: int = 0) -> list[bytes]:
    # Users 0-9 like comedies (even films), users 10-19 horror (odd films).
    return [
        orjson.dumps(
            {
                "event_id": f"c{k}",
                "type": "click",
                "user_id": f"u{k % 20}",
                "item_id": f"m{(2 * ((k // 20) % 10)) + (1 if k % 20 >= 10 else 0)}",
                "timestamp": BASE_TIMESTAMP_MS + k * 1000,
            }
        )
        for k in range(first, first + n)
    ]


def test_produce_keys_catalog_records_for_compaction() -> None:
    assert _record_key(b'{"type":"item","item_id":"m1"}', "user_id") == b"m1"
    assert _record_key(b'{"type":"retire","item_id":"m1"}', "user_id") == b"m1"
    assert _record_key(b'{"type":"rule","name":"cap"}', "user_id") == b"rule:cap"
    assert _record_key(b'{"type":"click","user_id":"u1"}', "user_id") == b"u1"
    assert _record_key(b"[1]", "user_id") is None


def test_a_learn_log_replica_gets_the_catalog_through_the_log() -> None:
    kafka = KafkaSettings(topics=["ev"], catalog_topic="cat", learn_log_topic="log")
    assert subscribed_topics(kafka) == ["ev", "cat"]  # the forwarder reads both
    assert subscribed_topics(kafka.model_copy(update={"topics": ["log"]})) == ["log"]
    assert subscribed_topics(KafkaSettings(topics=["ev"])) == ["ev"]


def test_the_service_learns_the_catalog_topic_with_the_events(
    kafka_bootstrap: str, unique_topic: Callable[..., str], state_dir: Path
) -> None:
    events = unique_topic("events")
    catalog = unique_topic("catalog")
    create_topics(kafka_bootstrap, [f"{events}.recs", f"{events}.dlq"])
    bad = b'{"type":"item","item_id":"m99","available":"sometimes"}'
    produce(
        kafka_bootstrap,
        catalog,
        [*_catalog(), bad],
        keys=[*(f"m{n}".encode() for n in range(20)), b"m99"],
    )
    settings = Settings(
        model=ModelSettings(rating_model="biased_mf", exploration="none"),
        kafka=KafkaSettings(
            bootstrap_servers=kafka_bootstrap,
            topics=[events],
            catalog_topic=catalog,
            group_id=f"g-{events}",
            recommendations_topic=f"{events}.recs",
            dlq_topic=f"{events}.dlq",
            consumer=FAST_GROUP,
        ),
        service=ServiceSettings(state_dir=state_dir, checkpoint_key="k" * 16, metrics_port=0),
    )
    # Kafka orders records within a partition only: the catalog goes first, as a deployment
    # would load it, and the events follow once it is learned.
    loaded = service.run(settings, stop_when_idle=1.5)
    assert (loaded.consumed, loaded.learned, loaded.dead_letters) == (21, 0, 1)
    (dead,) = read_topic(kafka_bootstrap, f"{events}.dlq", 1)
    assert headers_of(dead)["streamrec.error.reason"] == "invalid_catalog"
    assert dead.key() == b"m99"
    produce(kafka_bootstrap, events, _clicks(400))
    first = service.run(settings, stop_when_idle=1.5)  # from its checkpoint, catalog included
    assert first.learned == 400
    lists = [
        decode_recommendation(m.value()) for m in read_topic(kafka_bootstrap, f"{events}.recs", 20)
    ]
    reasons = {item.reason for rec in lists for item in rec.items}
    assert any(r.startswith("because you liked Film number ") for r in reasons), reasons

    # Retire m0 with a tombstone; later lists never show it, whoever they are for.
    produce(kafka_bootstrap, catalog, [None], keys=[b"m0"])
    produce(kafka_bootstrap, events, _clicks(200, first=400))
    second = service.run(settings, stop_when_idle=1.5)  # restarts from its checkpoint
    assert second.learned == 200
    later = read_topic(kafka_bootstrap, f"{events}.recs", len(lists) + 1)[len(lists) :]
    assert later
    shown = {item.item_id for m in later for item in decode_recommendation(m.value()).items}
    assert "m0" not in shown and len(shown) >= 5
