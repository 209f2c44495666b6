"""Where records come from, apart from Kafka (see `streamrec.io`): event-log files and lists.

A file record's position is (path, line number), kept in `Record.topic` / `Record.offset`, so a
dead letter from a file says exactly which line to look at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from streamrec.contract.records import Record
from streamrec.errors import StreamrecError


def read_jsonl(path: Path, batch_size: int = 1000) -> Iterator[list[Record]]:
    """Batches of records, one per non-blank line of a JSONL event log (offset = line number)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise StreamrecError(f"cannot read event log {path}: {exc.strerror}") from exc
    name = str(path)
    with handle:
        batch: list[Record] = []
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            batch.append(Record(value=line, topic=name, offset=number))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def from_values(values: Iterable[bytes | str], batch_size: int = 1000) -> Iterator[list[Record]]:
    """Batches of records from in-memory values (tests, notebooks)."""
    batch: list[Record] = []
    for offset, value in enumerate(values):
        raw = value.encode() if isinstance(value, str) else value
        batch.append(Record(value=raw, topic="memory", offset=offset))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
