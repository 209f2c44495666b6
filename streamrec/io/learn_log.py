"""The learn log's message format: one message is one batch of forwarded records.

With several instances (`kafka.learn_log_topic`, see streamrec.service.forwarder) every replica
learns the learn log in its one order. One message per *batch*, rather than per record, makes the
batch boundaries part of the log too, so every replica refreshes the same users at the same points
and its exploration policy draws the same numbers: the whole state, bandit included, is the same
in every replica, and a list's `rec_id` means the same list everywhere (clicks on it are rewarded
by whichever replica serves the user next). Fewer, larger messages are also cheaper for Kafka.

The message also names the instance that forwarded it: that instance, and no other, publishes the
lists and dead letters of its records. Who publishes is then written in the log, not decided at
the moment each replica learns it: around a rebalance no list goes out twice or not at all.

Layout (little-endian): `SRL2`, the forwarding instance's id, the number of origins and each
origin ("topic:partition"), the number of records, then per record its origin's index, origin
offset, and key and value. Strings are UTF-8 and, like keys and values, length-prefixed; a
length of -1 is None.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from streamrec.contract.records import Record
from streamrec.errors import StreamrecError

MAGIC = b"SRL2"
MAX_BATCH_BYTES = 512 * 1024
"""Forwarders start a new message past this size (Kafka's default message limit is 1 MiB)."""

_COUNT = struct.Struct("<I")
_RECORD = struct.Struct("<IqiI")  # origin index, origin offset, key length (-1: None), value length
_NONE = 0xFFFFFFFF


class LearnLogError(StreamrecError):
    """A learn-log message that streamrec did not write (or that was damaged)."""


def encode(records: Sequence[Record], forwarder: str) -> bytes:
    """One learn-log message holding `records`, each with its topic/partition/offset as origin,
    forwarded by the instance named `forwarder`."""
    origins: dict[str, int] = {}
    body: list[bytes] = []
    for record in records:
        origin = f"{record.topic}:{record.partition}"
        index = origins.setdefault(origin, len(origins))
        key, value = record.key, record.value
        body.append(
            _RECORD.pack(
                index,
                record.offset,
                -1 if key is None else len(key),
                _NONE if value is None else len(value),
            )
        )
        if key:
            body.append(key)
        if value:
            body.append(value)
    name = forwarder.encode()
    head = [MAGIC, _COUNT.pack(len(name)), name, _COUNT.pack(len(origins))]
    for origin in origins:
        name = origin.encode()
        head += [_COUNT.pack(len(name)), name]
    head.append(_COUNT.pack(len(records)))
    return b"".join(head + body)


def decode(message: Record) -> tuple[str, list[Record]]:
    """The instance that forwarded a learn-log message, and its records, each knowing its origin.
    Their timestamp is the message's (when it was forwarded), so every replica judges them by
    the same clock."""
    data = message.value or b""
    if data[:4] != MAGIC:
        raise LearnLogError(
            f"{message.topic}:{message.partition} offset {message.offset} is not a learn-log "
            "message (only streamrec instances may write to kafka.learn_log_topic)"
        )
    try:
        (size,) = _COUNT.unpack_from(data, 4)
        forwarder = data[8 : 8 + size].decode()
        at = 8 + size
        (n,) = _COUNT.unpack_from(data, at)
        at += 4
        origins = []
        for _ in range(n):
            (size,) = _COUNT.unpack_from(data, at)
            origins.append(data[at + 4 : at + 4 + size].decode())
            at += 4 + size
        (count,) = _COUNT.unpack_from(data, at)
        at += 4
        records = []
        unpack, size_of = _RECORD.unpack_from, _RECORD.size
        timestamp = message.timestamp_ms
        for _ in range(count):
            index, offset, key_size, value_size = unpack(data, at)
            at += size_of
            key = None
            if key_size >= 0:
                key, at = data[at : at + key_size], at + key_size
            value = None
            if value_size != _NONE:
                value, at = data[at : at + value_size], at + value_size
            records.append(
                Record(
                    value,
                    key,
                    message.topic,
                    message.partition,
                    message.offset,
                    timestamp,
                    origins[index],
                    offset,
                )
            )
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise LearnLogError(
            f"{message.topic}:{message.partition} offset {message.offset}: a damaged learn-log "
            f"message ({exc})"
        ) from None
    if at != len(data):
        raise LearnLogError(
            f"{message.topic}:{message.partition} offset {message.offset}: {len(data) - at} "
            "bytes after the last record"
        )
    return forwarder, records


def batches(records: Sequence[Record], max_records: int) -> list[list[Record]]:
    """`records` cut into learn-log messages of at most `max_records` and ~MAX_BATCH_BYTES."""
    out: list[list[Record]] = []
    batch: list[Record] = []
    size = 0
    for record in records:
        n = len(record.value or b"") + len(record.key or b"") + _RECORD.size
        if batch and (len(batch) >= max_records or size + n > MAX_BATCH_BYTES):
            out.append(batch)
            batch, size = [], 0
        batch.append(record)
        size += n
    if batch:
        out.append(batch)
    return out
