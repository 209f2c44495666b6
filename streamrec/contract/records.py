"""The two shapes every edge shares: a raw record in, and a record that could not become an event.

They live here, not beside the preprocessor, so sources and sinks depend on the contract and not
on a core module.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RECORD_BYTES = 64 * 1024
"""A single event is a few hundred bytes; anything this large is a bug or abuse."""


@dataclass(slots=True)
class Record:
    """One raw message, whatever it came from (Kafka, a file line, a list in a test).

    Treat it as read-only. It is not a frozen dataclass because one is built per consumed message,
    and frozen ones cost about three times as much to build.
    """

    value: bytes | None
    key: bytes | None = None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int | None = None
    # With a learn log (kafka.learn_log_topic): the partition ("topic:partition") and offset the
    # event first arrived at, before it was forwarded into the learn log; "" and -1 otherwise.
    origin: str = ""
    origin_offset: int = -1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str
    error: str
