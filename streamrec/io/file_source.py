"""Where records come from, apart from Kafka (see `streamrec.io`): event-log files and lists.

A file record's position is (path, line number), kept in `Record.topic` / `Record.offset`, so a
dead letter from a file says exactly which line to look at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from streamrec.contract.records import Record
from streamrec.errors import StreamrecError


class FileSource:
    """A JSONL event log as a `streamrec.io.edges.Source`: one record per non-blank line.

    Batches follow `KafkaSource.poll`, so the replay reads a file the way the service reads a
    topic; a file never waits, so `poll` ignores its timeout and returns an empty batch only once
    the file is exhausted.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._handle = path.open("rb")
        except OSError as exc:
            raise StreamrecError(f"cannot read event log {path}: {exc.strerror}") from exc
        self._name = str(path)
        self._line = 0  # number of the last line read (blank ones count: they are lines)

    def poll(self, size: int, timeout_s: float = 0.0) -> list[Record]:
        """The next `size` records (fewer at the end of the file; none once it is exhausted)."""
        batch: list[Record] = []
        for line in self._handle:
            self._line += 1
            line = line.strip()
            if not line:
                continue
            batch.append(Record(value=line, topic=self._name, offset=self._line))
            if len(batch) >= size:
                break
        return batch

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
