"""Which partitions a Kafka consumer owns, where each stands, and whether a log was reset.

`Partitions` answers librdkafka's rebalance callbacks (run inside `consume()`, on the polling
thread): it assigns every partition at an explicit offset, asked of a `PartitionListener` (the
service, which knows what its checkpoint holds), and calls the listener back when partitions are
revoked or lost. `streamrec.io.kafka_source` moves the positions as records arrive.

**Log resets.** A partition whose log no longer holds the position the model stands at (the topic
was deleted and recreated, an in-memory broker restarted, retention removed events before they
were learned) must never be skipped silently. Four signs of it are watched:

1. the topic's id differs from the one the position was learned on (checked at assignment);
2. librdkafka reports `_AUTO_OFFSET_RESET` (Kafka answered a fetch with offset out of range:
   `auto.offset.reset` is forced to "error", see streamrec.io.kafka_config);
3. the fetch position lies outside the log's [start, end) in two statistics reports in a row
   (brokers that answer an out-of-range fetch with an empty one, as Tansu does);
4. a record arrives below the partition's position.

What happens then is `service.on_log_reset`: "fail" (the default) stops the service with a
message that says what to do, learning nothing more; "earliest" counts the reset in
`streamrec_log_resets_total`, logs it, and learns the partition again from its first offset.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streamrec.errors import StreamrecError
from streamrec.io.kafka_config import KafkaLog, initial_offset
from streamrec.settings import Settings

log = logging.getLogger(__name__)

TP = tuple[str, int]
"""(topic, partition)."""

NOT_OWNED = -1
"""What `positions.get(key, NOT_OWNED)` returns for a partition not assigned here."""

_NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the all-zero Uuid of brokers without topic ids
_ADMIN_PREFIXES = ("security.", "sasl.", "ssl.", "client.", "socket.", "broker.")


class LogResetError(StreamrecError):
    """A partition's log no longer holds the position the model stands at (service.on_log_reset
    is "fail")."""


class PartitionListener(Protocol):
    """What the source asks of the service when partitions come and go."""

    def check_topic(self, topic: str, topic_id: str) -> str | None:
        """Note the id of `topic` now; the id its known offsets were learned on if different
        (the topic was deleted and recreated since), else None."""
        ...

    def forget_topic(self, topic: str) -> None:
        """`topic`'s log was reset: forget its known offsets; its partitions start over at the
        beginning of the new log."""
        ...

    def start_offset(self, key: TP, committed: int | None) -> int | None:
        """Where to start an assigned partition, given the group's committed offset (None: the
        configured initial offset); what the listener knew of the partition is used up."""
        ...

    def before_revoke(self, keys: list[TP]) -> None:
        """Partitions are about to move to another instance (commit what was learned of them)."""
        ...

    def after_lost(self, keys: list[TP]) -> None:
        """Partitions were taken without a revoke (this instance was expelled)."""
        ...


class Partitions:
    """The partitions one consumer owns and the next offset to learn of each."""

    def __init__(
        self,
        consumer: Consumer,
        listener: PartitionListener,
        settings: Settings,
        *,
        incremental: bool,
        metrics: Any = None,
    ) -> None:
        kafka = settings.kafka
        self.consumer = consumer
        self.listener = listener
        self.metrics = metrics
        self.policy = settings.service.on_log_reset
        self.initial = initial_offset(kafka)  # where a partition nothing is known of starts
        self.incremental = incremental  # cooperative assignment: (un)assign only what changed
        self._admin_config: dict[str, Any] = {  # the topic ids' client, built when first needed
            "bootstrap.servers": kafka.bootstrap_servers,
            "logger": KafkaLog(),
            **{k: v for k, v in kafka.consumer.items() if k.startswith(_ADMIN_PREFIXES)},
        }
        self._admin: AdminClient | None = None
        # Next offset to learn per owned partition; None until its first record (the start is a
        # logical offset librdkafka resolves). The source moves them as records arrive.
        self.positions: dict[TP, int | None] = {}
        self.rebalances = 0  # callbacks so far (the idle clock restarts at each)
        self.closing = False  # set by KafkaSource.close(): leaving the group
        self.paused = False
        self._paused_keys: set[TP] = set()
        self._suspect: dict[TP, int] = {}  # statistics reports in a row showing a reset
        self._pending_resets: dict[TP, str] = {}  # found in callbacks, handled in poll()
        self._current_ids: dict[str, str] = {}  # topic ids seen at the latest assignments

    # -- pausing and seeking --

    def pause(self) -> None:
        """Stop fetching (rebalance callbacks are still served by `poll`); partitions assigned
        while paused are paused too."""
        if not self.paused:
            self.paused = True
            self._pause(list(self.positions))
        self._show_paused()

    def resume(self) -> None:
        """Fetch again: every partition paused, including ones lost and assigned again since
        (librdkafka keeps a partition's pause across a reassignment)."""
        self.paused = False
        if self._paused_keys:
            tps = [TopicPartition(t, p) for t, p in sorted(self._paused_keys)]
            self._paused_keys.clear()
            with contextlib.suppress(KafkaException):  # partitions no longer assigned
                self.consumer.resume(tps)
        self._show_paused()

    def _pause(self, keys: list[TP]) -> None:
        if keys:
            self._paused_keys.update(keys)
            self.consumer.pause([TopicPartition(t, p) for t, p in keys])

    def _show_paused(self) -> None:
        if self.metrics is not None:
            self.metrics.consumption_paused.set(1.0 if self.paused else 0.0)

    def reposition(self) -> None:
        """Every owned partition back to where the listener's (reloaded) model stands."""
        owned = list(self.positions)
        if not owned:
            return
        for topic, topic_id in self._current_ids.items():
            # A checkpoint older than a reset handled (and counted) already: its offsets belong
            # to the old log.
            if self.listener.check_topic(topic, topic_id) is not None:
                self.listener.forget_topic(topic)
        committed = self._committed(owned)
        for key in owned:
            start = self.listener.start_offset(key, committed.get(key))
            self._start(key, start)
            self.consumer.seek(TopicPartition(*key, self._logical(start)))

    # -- rebalance callbacks --

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._count_rebalance("assign")
        if self.closing:
            # A last rebalance served by consumer.close(), another member having left: take
            # nothing (the next owner starts at what is committed). Asking the group for
            # offsets now can only time out, and would hold the shutdown for it.
            if self.incremental:
                consumer.incremental_assign(partitions)
            else:
                consumer.assign(partitions)
            return
        keys = [(tp.topic, tp.partition) for tp in partitions]
        committed = self._committed(keys) if keys else {}
        self._check_topic_ids({t for t, _ in keys}, keys)
        assign = []
        for key in keys:
            start = self.listener.start_offset(key, committed.get(key))
            self._start(key, start)
            assign.append(TopicPartition(*key, self._logical(start)))
        if self.incremental:
            consumer.incremental_assign(assign)
        else:
            consumer.assign(assign)
        if self.paused:
            self._pause(keys)
        if keys:
            log.info("assigned %s", fmt_offsets({k: self.positions[k] for k in keys}))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._count_rebalance("revoke")
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if keys:
            self.listener.before_revoke(keys)
        self._forget(keys)
        if self.incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._count_rebalance("lost")
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.warning(
            "partitions lost (%s): discarding progress since the last checkpoint",
            ", ".join(f"{t}:{p}" for t, p in keys),
        )
        self._forget(keys)
        if self.incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        self.listener.after_lost(keys)

    def _count_rebalance(self, kind: str) -> None:
        self.rebalances += 1
        if self.metrics is not None:
            self.metrics.rebalances_total.labels(kind=kind).inc()

    def _forget(self, keys: list[TP]) -> None:
        for key in keys:
            self.positions.pop(key, None)
            self._suspect.pop(key, None)
        if self.metrics is not None:
            self.metrics.forget_partitions(keys)

    def _start(self, key: TP, start: int | None) -> None:
        self.positions[key] = start if start is not None and start >= 0 else None

    def _logical(self, start: int | None) -> int:
        return self.initial if start is None else start

    def _committed(self, keys: Sequence[TP]) -> dict[TP, int | None]:
        try:
            found = self.consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=30)
        except KafkaException as exc:
            raise StreamrecError(
                f"cannot read the group's committed offsets ({exc.args[0]}); a restart resumes "
                "from the last checkpoint"
            ) from None
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in found}

    # -- log resets --

    def _check_topic_ids(self, topics: set[str], keys: list[TP]) -> None:
        """A topic whose id differs from the one this model's offsets were learned on was
        deleted and recreated: under "earliest" the model forgets those offsets (counted once),
        under "fail" poll() raises before anything of it is learned."""
        current = self._topic_ids(topics)
        self._current_ids.update(current)
        for topic, topic_id in current.items():
            old = self.listener.check_topic(topic, topic_id)
            if old is None:
                continue
            why = f"the topic was deleted and recreated (its id changed from {old} to {topic_id})"
            if self.policy == "fail":
                key = next(k for k in keys if k[0] == topic)
                self._pending_resets[key] = why
            else:
                self._accept_reset(topic, why)
                self.listener.forget_topic(topic)

    def _topic_ids(self, topics: set[str]) -> dict[str, str]:
        if not topics:
            return {}
        if self._admin is None:
            self._admin = AdminClient(self._admin_config)
        ids = {}
        try:
            futures = self._admin.describe_topics(
                TopicCollection(sorted(topics)), request_timeout=10
            )
            for topic, future in futures.items():
                topic_id = str(future.result(timeout=10).topic_id)
                if topic_id and topic_id != _NO_TOPIC_ID:
                    ids[topic] = topic_id
        except (KafkaException, TimeoutError) as exc:
            log.warning("could not read topic ids (%s): a recreated topic is not detected", exc)
        return ids

    def check_statistics(self, doc: Mapping[str, Any]) -> None:
        """Look for sign 3 in a librdkafka statistics report: an owned partition whose fetch
        position lies outside its log twice in a row."""
        for topic, topic_stats in (doc.get("topics") or {}).items():
            for partition, p in (topic_stats.get("partitions") or {}).items():
                key = (topic, int(partition))
                if key not in self.positions or not isinstance(p, Mapping):
                    continue
                if p.get("fetch_state") != "active":
                    continue
                low, high, fetching = (
                    p.get("lo_offset", -1),
                    p.get("hi_offset", -1),
                    p.get("next_offset", -1),
                )
                outside = fetching >= 0 and ((high >= 0 and fetching > high) or fetching < low)
                if not outside:
                    self._suspect.pop(key, None)
                    continue
                self._suspect[key] = self._suspect.get(key, 0) + 1
                if self._suspect[key] >= 2:  # twice in a row: not a stale report
                    self._suspect.pop(key)
                    self._pending_resets[key] = (
                        f"the log holds offsets {low}..{high - 1}, the fetch position is {fetching}"
                    )

    def reset(self, key: TP, why: str) -> None:
        """Note a reset of an owned partition; `raise_or_reset` acts on it (never from inside
        a librdkafka callback, where an exception would leave the consumer half-updated)."""
        self._pending_resets[key] = why

    def raise_or_reset(self) -> None:
        """Act on the resets noted: LogResetError under "fail", else each partition learned
        again from its first offset."""
        if not self._pending_resets:
            return
        if self.policy == "fail":
            key, why = next(iter(self._pending_resets.items()))
            position = self.positions.get(key)
            raise LogResetError(
                f"the log of {key[0]}:{key[1]} was reset: {why}; this model has learned it up "
                f"to offset {position if position is not None else 'unknown'} (a topic deleted "
                "and recreated, a broker that lost its data, or retention removing events "
                "before they were learned do this); nothing more was learned from it. To learn the "
                "partition again from the start of its log, set service.on_log_reset=earliest "
                "(STREAMREC_SERVICE__ON_LOG_RESET); resets are then counted in "
                "streamrec_log_resets_total"
            )
        resets, self._pending_resets = self._pending_resets, {}
        for key, why in resets.items():
            if key in self.positions:
                self._accept_reset(f"{key[0]}:{key[1]}", why)
                self.positions[key] = None
                self.consumer.seek(TopicPartition(*key, OFFSET_BEGINNING))

    def _accept_reset(self, what: str, why: str) -> None:
        log.error(
            "the log of %s was reset (%s): learning it again from its first offset "
            "(service.on_log_reset=earliest); the model keeps what it learned before",
            what,
            why,
        )
        if self.metrics is not None:
            self.metrics.log_resets_total.inc()


def fmt_offsets(offsets: Mapping[TP, int | None]) -> str:
    return ", ".join(f"{t}:{p}@{o}" for (t, p), o in sorted(offsets.items())) or "none"
