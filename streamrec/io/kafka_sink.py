"""Recommendations and dead letters out to Kafka, through one idempotent producer.

Every way an output can fail is handled as data, never as an exception that stops the loop:

* **A record the broker can never take** (too large, invalid: `PER_RECORD_ERRORS`) is counted in
  `streamrec_produce_errors_total{output,error}`, logged once per kind, and skipped. A dead letter
  gets a second try as headers only (no value, no key): the headers still say why the record was
  rejected and where it is. Dead letters of records over `MAX_RECORD_BYTES` never carry more than
  that: their value is cut there, with the original size and SHA-256 in headers.
* **Anything else that stops a delivery** (the broker unreachable for longer than
  `message.timeout.ms`, a fatal error of the idempotent producer) means outputs of events the
  model has learned are lost. `lost` counts them and `fatal` keeps a fatal error; the service
  then rolls its model back to the last checkpoint and replays from there, through a new sink if
  this producer is fatal, so outputs stay at-least-once.
* Messages not delivered yet (`undelivered`) are what a commit point waits for.

Delivery reports arrive in callbacks run by `poll`/`flush`, on the thread that polls.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamrec.contract.events import Recommendation, encode_recommendation
from streamrec.contract.records import MAX_RECORD_BYTES, DeadLetter
from streamrec.io.broker_watch import BrokerWatch
from streamrec.io.kafka_config import produce

log = logging.getLogger(__name__)

DLQ_MESSAGE_LIMIT = 1000
"""Error text in a DLQ header is cut to this many characters: headers are not for novels."""

PER_RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError._BAD_MSG,
        KafkaError._INVALID_ARG,
    }
)
"""Errors that come from the record itself: sending it again can only fail again."""

Headers = list[tuple[str, bytes]]


def dead_letter_headers(dead: DeadLetter) -> Headers:
    """Why, and where the record came from: its event topic, also when it was read from the
    learn log (then `origin` names the event partition it was forwarded from)."""
    record = dead.record
    if record.origin:
        topic, _, partition = record.origin.rpartition(":")
        offset = str(record.origin_offset)
    else:
        topic, partition, offset = record.topic, str(record.partition), str(record.offset)
    return [
        ("streamrec.error.reason", dead.reason.encode()),
        ("streamrec.error.message", dead.error[:DLQ_MESSAGE_LIMIT].encode()),
        ("streamrec.source.topic", topic.encode()),
        ("streamrec.source.partition", partition.encode()),
        ("streamrec.source.offset", offset.encode()),
    ]


def dead_letter_message(dead: DeadLetter) -> tuple[bytes | None, Headers]:
    """The DLQ value and headers of one dead letter: the original bytes, cut at
    `MAX_RECORD_BYTES` (anything larger was rejected as oversize), with the original's size and
    SHA-256 in headers when cut, so it can still be matched to what the producer sent."""
    value = dead.record.value
    headers = dead_letter_headers(dead)
    if value is not None and len(value) > MAX_RECORD_BYTES:
        headers += [
            ("streamrec.original.size", str(len(value)).encode()),
            ("streamrec.original.sha256", hashlib.sha256(value).hexdigest().encode()),
            ("streamrec.value.truncated", b"true"),
        ]
        value = value[:MAX_RECORD_BYTES]
    return value, headers


class KafkaSink:
    """The service's `streamrec.io.edges.Sink`: recommendations (key = user_id, latest wins) and
    dead letters."""

    def __init__(
        self,
        config: dict[str, Any],
        recommendations_topic: str,
        dlq_topic: str,
        metrics: Any = None,
        watch: BrokerWatch | None = None,
    ) -> None:
        self.producer = Producer({**config, "error_cb": self._on_client_error})
        self.recommendations_topic = recommendations_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics
        self.watch = watch
        self.delivered = 0
        self.skipped = 0  # records the broker can never take (PER_RECORD_ERRORS)
        self.lost = 0  # deliveries that failed otherwise: the service must replay
        self.fatal: KafkaError | None = None
        self.first_loss: str | None = None
        self._logged_kinds: set[tuple[str, int]] = set()
        self._headers_only: list[Headers] = []  # dead letters to send again without a value
        self._last_report = time.monotonic()  # last delivery report, or start of the backlog
        self._closed = False
        if metrics is not None:  # every series from the start: rates and alerts see a 0 first
            for output in ("recommendation", "dead_letter"):
                for code in PER_RECORD_ERRORS:
                    metrics.produce_errors_total.labels(
                        output=output, error=KafkaError(code).name()
                    )

    # -- callbacks (run inside producer.poll/flush) --

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = error
            log.error("fatal producer error: %s", error.str())
        elif self.watch is not None:
            self.watch.on_error(error)
        else:
            log.warning("producer: %s", error.str())

    def _on_recommendation(self, error: KafkaError | None, _message: Message) -> None:
        self._last_report = time.monotonic()
        if error is None:
            self._delivered()
            if self.metrics is not None:
                self.metrics.recommendations_published_total.inc()
        elif not self._per_record(error, "recommendation"):
            if self.metrics is not None:
                self.metrics.recommendation_publish_errors_total.inc()
            self._lose(error, "recommendation")

    def _on_dead_letter(self, error: KafkaError | None, message: Message) -> None:
        self._last_report = time.monotonic()
        if error is None:
            self._delivered()
        elif self._per_record(error, "dead_letter"):
            if message.value() is not None:  # not yet the headers-only second try
                # Our own dead letter's headers: the list of (str, bytes) pairs we produced.
                self._headers_only.append(cast(Headers, list(message.headers() or [])))
        else:
            self._lose(error, "dead_letter")

    def _delivered(self) -> None:
        self.delivered += 1

    def _per_record(self, error: KafkaError, output: str) -> bool:
        """Count and log (once per kind) an error of the record itself; False for other errors."""
        if error.code() not in PER_RECORD_ERRORS:
            return False
        self.skipped += 1
        if self.metrics is not None:
            self.metrics.produce_errors_total.labels(output=output, error=error.name()).inc()
        if (output, error.code()) not in self._logged_kinds:
            self._logged_kinds.add((output, error.code()))
            log.warning(
                "a %s could not be published and was skipped: %s (counted in "
                "streamrec_produce_errors_total; further ones are not logged)",
                output.replace("_", " "),
                error.str(),
            )
        return True

    def _lose(self, error: KafkaError, output: str) -> None:
        if self._closed:  # purged on purpose: the service replays these
            return
        self.lost += 1
        if error.fatal():
            self.fatal = error
        if self.first_loss is None:
            self.first_loss = f"{output.replace('_', ' ')}: {error.str()}"
            log.error("could not deliver a %s: %s", output.replace("_", " "), error.str())

    # -- producing --

    def _send(self, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> bool:
        """Hand one message to the producer; False if it refused it (the reason is handled)."""
        if not len(self.producer):  # a backlog starts: stall time counts from here
            self._last_report = time.monotonic()
        try:
            produce(self.producer, topic, value, key, **kwargs)
            return True
        except KafkaException as exc:
            error = exc.args[0]
            if not isinstance(error, KafkaError):
                raise
            output = "dead_letter" if topic == self.dlq_topic else "recommendation"
            if not self._per_record(error, output):
                if error.code() == KafkaError._FATAL or error.fatal():
                    self.fatal = self.fatal or error
                self._lose(error, output)
            return False

    def publish(self, recommendations: Sequence[Recommendation]) -> None:
        topic, callback = self.recommendations_topic, self._on_recommendation
        for rec in recommendations:
            if self.fatal is not None:  # every produce fails now; the service replays them
                self.lost += 1
                continue
            value = encode_recommendation(rec)
            self._send(topic, value, rec.user_id.encode(), on_delivery=callback)
        self.producer.poll(0)

    def dead_letter(self, dead_letters: Sequence[DeadLetter]) -> None:
        for dead in dead_letters:
            if self.fatal is not None:
                self.lost += 1
                continue
            value, headers = dead_letter_message(dead)
            sent = self._send(
                self.dlq_topic,
                value,
                dead.record.key,
                headers=headers,
                on_delivery=self._on_dead_letter,
            )
            if not sent and self.fatal is None:
                self._headers_only.append(headers)
        self.poll()

    def poll(self) -> None:
        self.producer.poll(0)
        while self._headers_only and self.fatal is None:
            headers = self._headers_only.pop()
            headers.append(("streamrec.value.dropped", b"true"))
            self._send(
                self.dlq_topic, None, None, headers=headers, on_delivery=self._on_dead_letter
            )

    @property
    def undelivered(self) -> int:
        """Messages handed to the producer and not yet delivered or failed."""
        return len(self.producer)

    def stalled_s(self) -> float:
        """Seconds the producer has had a backlog without a single delivery report (0 if none).

        librdkafka retries some failures forever within `message.timeout.ms` (5 minutes by
        default), e.g. an idempotent producer whose broker restarted without its producer ids
        bumps its epoch and retries, refused every time. Reachable Kafka and a long stall mean
        this producer is stuck: the service replaces it (see Worker.tick).
        """
        return time.monotonic() - self._last_report if len(self.producer) else 0.0

    def flush(self, timeout_s: float) -> int:
        """Serve delivery reports until everything is delivered or `timeout_s` passed; the
        number still undelivered (0: everything produced so far has a delivery report)."""
        remaining = self.producer.flush(timeout_s)
        self.poll()
        if self._headers_only or (remaining == 0 and len(self.producer)):
            remaining = self.producer.flush(timeout_s)
        return int(remaining)

    def close(self) -> None:
        """Give up on what is still queued (after a fatal error, or when replaced)."""
        self._closed = True
        try:
            self.producer.purge()
            self.producer.flush(0)
        except KafkaException:
            pass
