"""Several instances, one model: this instance's share of the events, forwarded into the learn log.

With `kafka.learn_log_topic` set, the instances of a consumer group do not each learn their own
partitions (that splits every user's history across models, and every item's statistics). The
group only decides who *forwards* which event partition: `Forwarder` consumes the partitions this
instance owns and appends each polled batch, untouched, as one message to the one-partition
learn log (`streamrec.io.learn_log`: each record with the partition and offset it came from).
Every instance then learns the whole learn log, in its one order and in those batches, as a
replica (`streamrec.service.loop`), so every instance holds the same state, and publishes only
the lists and dead letters of the messages it forwarded itself. This is Kafka Streams' global
store made of a log topic: ownership follows the group's assignment, state follows the log.

Delivery: forwarding is at-least-once. Offsets of an event partition are committed only after
everything forwarded from it was delivered to the learn log; a forwarder that dies before that is
replaced by one that forwards the tail again, and the replicas drop the repeats, because the
origin offset of every learned record is part of their checkpointed state
(`Preprocessor.check`). So each event is learned exactly once by every replica, whoever forwarded
it and however often.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

from confluent_kafka import Producer

from streamrec.contract.records import MAX_RECORD_BYTES, Record
from streamrec.errors import ConfigError, StreamrecError
from streamrec.io import learn_log
from streamrec.io.kafka_config import produce, producer_config
from streamrec.io.kafka_source import TP, KafkaSource
from streamrec.obs.metrics import Metrics
from streamrec.settings import Settings

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 1.0
"""How often forwarded offsets are committed: a replacement forwards at most this much again."""


class Forwarder:
    """Forwards the event partitions this instance owns into the learn log, on its own thread."""

    def __init__(
        self, settings: Settings, instance_id: str, metrics: Metrics | None = None
    ) -> None:
        kafka = settings.kafka
        if kafka.learn_log_topic is None:
            raise ValueError("a Forwarder needs kafka.learn_log_topic")
        self.settings = settings
        self.topic = kafka.learn_log_topic
        # Its consumer is the one in the events' group: its lag is the lag operators watch.
        self.source = KafkaSource(settings, self, metrics=metrics)
        self.metrics = metrics
        self.producer = Producer(producer_config(kafka))
        self.instance_id = instance_id  # named in every message: its replica publishes those
        self.error: BaseException | None = None
        self._undelivered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamrec-forwarder", daemon=True)

    # -- lifecycle --

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self, connect_timeout_s: float) -> None:
        """Join the events' group and forward (once this instance's replica has caught up)."""
        self.source.wait_until_reachable(connect_timeout_s)
        self.source.subscribe()
        self._thread.start()

    def check(self) -> None:
        """Raise the forwarder's failure in the caller's thread (the run loop stops on it)."""
        if self.error is not None:
            raise StreamrecError(f"forwarding to the learn log failed: {self.error}")

    def close(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        try:
            self.source.close()  # leaves the group: the next owner starts at what was committed
        except StreamrecError as exc:  # what was forwarded is committed or forwarded again
            log.warning("leaving the events' group: %s", exc)
        self.producer.flush(5.0)

    def check_learn_log(self, timeout_s: float) -> None:
        """The learn log must exist with exactly one partition: its one order is the model's."""
        metadata = self.source.consumer.list_topics(self.topic, timeout=timeout_s)
        topic = metadata.topics.get(self.topic)
        how = (
            f"create it with one partition and no retention limit, e.g. kafka-topics.sh --create "
            f"--topic {self.topic} --partitions 1 --config retention.ms=-1"
        )
        if topic is None or topic.error is not None:
            raise ConfigError(f"kafka.learn_log_topic {self.topic!r} does not exist: {how}")
        if len(topic.partitions) != 1:
            raise ConfigError(
                f"kafka.learn_log_topic {self.topic!r} has {len(topic.partitions)} partitions; "
                f"it needs exactly one (every instance learns it in one order): {how}"
            )

    # -- the thread --

    def _run(self) -> None:
        service = self.settings.service
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                records = self.source.poll(service.batch_size, service.poll_timeout_s)
                for batch in learn_log.batches(records, service.batch_size):
                    produce(
                        self.producer,
                        self.topic,
                        learn_log.encode([_capped(r) for r in batch], self.instance_id),
                        on_delivery=self._delivered,
                    )
                if self.metrics is not None and records:
                    self.metrics.forwarded_records_total.inc(len(records))
                self.producer.poll(0)
                if time.monotonic() - last_commit >= COMMIT_EVERY_S:
                    self._commit(list(self.source.positions))
                    last_commit = time.monotonic()
            self._commit(list(self.source.positions))
        except BaseException as exc:  # reported to the run loop by check()
            log.error("forwarder stopped: %s", exc)
            self.error = exc

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._undelivered.append(str(error))

    def _commit(self, keys: list[TP]) -> None:
        """Commit the positions of `keys` once everything forwarded so far was delivered."""
        remaining = self.producer.flush(self.settings.service.flush_timeout_s)
        if self._undelivered:
            raise StreamrecError(
                f"{len(self._undelivered)} records could not be forwarded to {self.topic!r} "
                f"(first: {self._undelivered[0]}); nothing past the last commit was committed"
            )
        if remaining:
            return  # not delivered yet: commit later, never ahead of the learn log
        positions = self.source.positions
        self.source.commit({k: v for k in keys if (v := positions.get(k)) is not None}, wait=True)

    # -- PartitionListener (called from inside poll(), on the forwarder's thread) --

    def check_topic(self, topic: str, topic_id: str) -> str | None:
        return None  # the replicas check the learn log; an event topic is only read here

    def forget_topic(self, topic: str) -> None:
        pass

    def start_offset(self, key: TP, committed: int | None) -> int | None:
        return committed

    def before_revoke(self, keys: list[TP]) -> None:
        # The next owner starts at what is committed here: deliver and commit first.
        self._commit(keys)

    def after_lost(self, keys: list[TP]) -> None:
        # Another instance may forward these already; what was forwarded here since the last
        # commit arrives twice, and the replicas learn it once.
        pass


def _capped(record: Record) -> Record:
    """The record as forwarded: a value over the limit is cut to one byte over it, so replicas
    still dead-letter it as oversize but the learn log never carries more."""
    value = record.value
    if value is None or len(value) <= MAX_RECORD_BYTES:
        return record
    return replace(record, value=value[: MAX_RECORD_BYTES + 1])


INSTANCE_ID_FILE = "instance-id"


def replica_settings(settings: Settings) -> tuple[Settings, str]:
    """The settings of this instance's replica, and the instance's id: the replica reads the
    learn log in a group of its own.

    The group is private (`<group_id>.replica.<instance id>`) so that this replica alone reads
    the learn log's one partition, and its committed offset is this instance's position; the
    instance id is `service.instance_id`, else one generated once into the state dir, so a
    restart with the same state dir resumes the same replica. (A new state dir is a new replica:
    it learns the learn log from its start, so the learn log keeps every event: retention.ms=-1.)
    """
    kafka, service = settings.kafka, settings.service
    assert kafka.learn_log_topic is not None
    instance = service.instance_id
    if instance is None:
        path = service.state_dir / INSTANCE_ID_FILE
        try:
            instance = path.read_text().strip()
        except FileNotFoundError:
            instance = ""
        if not instance:
            service.state_dir.mkdir(parents=True, exist_ok=True)
            instance = uuid.uuid4().hex[:12]
            path.write_text(instance + "\n")
    replica = kafka.model_copy(
        update={
            "topics": [kafka.learn_log_topic],
            "group_id": f"{kafka.group_id}.replica.{instance}",
        }
    )
    return settings.model_copy(update={"kafka": replica}), instance
