"""How events reach streamrec and lists come back, one call per batch of visits.

One loop, two transports: **in-process** drives `Pipeline.process` batch by batch (fast and
deterministic: tests and measurements), **Kafka** produces events to the events topic and reads
lists back from the recommendations topic while the streamrec consumer runs (started as a child
process by `streamrec.sim.run`, or anywhere else). After each batch the Kafka loop waits, with a
deadline, until every user who acted got a fresh list, so both transports see lists equally fresh.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from streamrec.contract.events import Recommendation, decode_recommendation
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.errors import StreamrecError
from streamrec.settings import KafkaSettings, ModelSettings
from streamrec.sim.users import ShownList

log = logging.getLogger(__name__)


class Loop(Protocol):
    """How events reach streamrec and lists come back: one call per batch of visits."""

    def exchange(self, events: list[tuple[bytes, bytes]], users: set[str]) -> list[ShownList]:
        """Deliver `(key, value)` events; return the lists published since the last call.

        `users` are the user ids that acted: each should get a fresh list.
        """
        ...

    def publish_catalog(self, records: list[tuple[bytes, bytes]]) -> None:
        """Deliver `(key, value)` catalog records before the events that follow."""
        ...

    def close(self) -> None: ...


class InProcessLoop:
    """Events straight into a `Pipeline` (the one the service runs); its lists straight back."""

    def __init__(self, settings: ModelSettings) -> None:
        self.pipeline = Pipeline(settings)

    def publish_catalog(self, records: list[tuple[bytes, bytes]]) -> None:
        """In process there is no catalog topic: catalog records are never sent."""

    def exchange(self, events: list[tuple[bytes, bytes]], users: set[str]) -> list[ShownList]:
        result = self.pipeline.process([Record(value=value, key=key) for key, value in events])
        return [shown_list(rec) for rec in result.recommendations]

    def close(self) -> None:
        pass


class KafkaLoop:
    """Produce events to the events topic; read lists from the recommendations topic.

    Reads from the end of the recommendations topic as it was when the loop started (lists from
    earlier runs are not this run's). After each batch it waits until every user who acted got
    a list or `sync_timeout_s` passes; `check()` is called while waiting so a dead consumer
    service fails the run at once instead of after a timeout per batch.

    Both clients are the service's Kafka edges, so the simulator talks to the broker the way
    streamrec does: the producer is configured by `producer_config` and fed through `produce`
    (never dropping on a full queue), the reader is configured by `consumer_config` and its
    messages become `Record`s through `to_record`, and lists are decoded by the contract's
    `decode_recommendation`. The reader is not a `KafkaSource`: that joins a consumer group on
    the events topics and asks a checkpoint where each partition starts, and a subscription
    learns its partitions only after a rebalance. This reader must stand at each partition's end
    as of loop start, before the run's first event is produced, so it assigns itself there.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        sync_timeout_s: float = 20.0,
        check: Callable[[], None] | None = None,
    ) -> None:
        # Kafka clients are imported here: in-process runs never load librdkafka.
        from confluent_kafka import Consumer, Producer, TopicPartition

        from streamrec.io.kafka_config import producer_config

        self.events_topic = kafka.topics[0]
        self.catalog_topic = kafka.catalog_topic
        self.sync_timeout_s = sync_timeout_s
        self.check = check or (lambda: None)
        self.timeouts = 0
        self.producer = Producer(producer_config(kafka))
        self.consumer = Consumer(reader_config(kafka))
        recommendations_topic = kafka.recommendations_topic
        metadata = self.consumer.list_topics(recommendations_topic, timeout=15)
        topic = metadata.topics.get(recommendations_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise StreamrecError(f"cannot read topic {recommendations_topic!r}: does it exist?")
        start = []
        for partition in topic.partitions:
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(recommendations_topic, partition), timeout=15
            )
            start.append(TopicPartition(recommendations_topic, partition, high))
        self.consumer.assign(start)
        self.failures: list[str] = []

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failures.append(str(error))

    def publish_catalog(self, records: list[tuple[bytes, bytes]]) -> None:
        """Send catalog records to the catalog topic (if one is set) and wait for them, so they
        are in the broker before the events that name their items."""
        from streamrec.io.kafka_config import produce

        if self.catalog_topic is None or not records:
            return
        for key, value in records:
            produce(self.producer, self.catalog_topic, value, key, on_delivery=self._delivered)
        self.producer.flush(30.0)

    def exchange(self, events: list[tuple[bytes, bytes]], users: set[str]) -> list[ShownList]:
        from streamrec.io.kafka_config import produce
        from streamrec.io.kafka_source import to_record

        for key, value in events:
            produce(self.producer, self.events_topic, value, key, on_delivery=self._delivered)
        self.producer.poll(0)
        waiting = set(users)
        lists: list[ShownList] = []
        deadline = time.monotonic() + self.sync_timeout_s
        while True:
            for message in self.consumer.consume(1000, 0.02):
                if message.error() is not None:
                    continue
                shown = _decode_list(to_record(message).value)
                if shown is not None:
                    lists.append(shown)
                    waiting.discard(shown.user_id)
            self.producer.poll(0)
            if self.failures:
                raise StreamrecError(f"could not produce events: {self.failures[0]}")
            if not waiting:
                return lists
            self.check()
            if time.monotonic() >= deadline:
                self.timeouts += 1
                log.warning(
                    "%d users got no fresh list within %.0f s", len(waiting), self.sync_timeout_s
                )
                return lists

    def close(self) -> None:
        self.producer.flush(10.0)
        self.consumer.close()
        # Drop the clients now, not at some later garbage collection: a librdkafka handle that
        # outlives the embedded broker logs connection errors for a broker stopped on purpose.
        del self.producer, self.consumer
        gc.collect()


def reader_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The service's consumer config (`consumer_config`), for a reader assigned by hand.

    Three settings differ, because this reader never commits and is not the service: its own
    throwaway group (never the service's); no statistics (nothing here reads them); and
    `auto.offset.reset` as the user's `kafka.consumer` says, else librdkafka's "latest", instead
    of the "error" that `REQUIRED_CONSUMER` forces to protect the offsets the service commits.
    If the reader's position leaves the log (the topic recreated during the run), it goes on
    reading the new log rather than stopping while the run times out batch after batch.
    """
    from streamrec.io.kafka_config import consumer_config

    config = consumer_config(
        kafka,
        **{"group.id": f"streamrec-simulator-{uuid.uuid4().hex[:8]}", "statistics.interval.ms": 0},
    )
    config["auto.offset.reset"] = kafka.consumer.get("auto.offset.reset", "latest")
    return config


def _decode_list(value: bytes | None) -> ShownList | None:
    """A published list as the user sees it; None for a message that is not one."""
    try:
        return shown_list(decode_recommendation(value or b""))
    except ValidationError:
        return None


def shown_list(rec: Recommendation) -> ShownList:
    """What the simulated user sees of a list: who it is for, its id, items and their sources."""
    return ShownList(
        rec.user_id,
        rec.rec_id,
        [item.item_id for item in rec.items],
        [item.source for item in rec.items],
        [item.reason for item in rec.items],
    )
