"""Where results go, apart from Kafka (see `streamrec.io`): JSONL files and in-memory lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import orjson

from streamrec.contract.events import Recommendation, encode_recommendation
from streamrec.contract.records import DeadLetter


def dead_letter_json(dead: DeadLetter) -> bytes:
    """One dead letter as a JSON line: the original record (as text if it is UTF-8), and why."""
    value = dead.record.value
    original: str | None
    try:
        original = value.decode() if value is not None else None
    except UnicodeDecodeError:
        original = value.hex() if value is not None else None
    return orjson.dumps(
        {
            "reason": dead.reason,
            "error": dead.error,
            "source": dead.record.topic,
            "partition": dead.record.partition,
            "offset": dead.record.offset,
            "original": original,
        }
    )


class _Files:
    """Output files opened for writing (each optional), closed together."""

    _handles: tuple[IO[bytes] | None, ...] = ()

    def close(self) -> None:
        for handle in self._handles:
            if handle is not None:
                handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class JsonlSink(_Files):
    """A `streamrec.io.edges.Sink` writing recommendations and dead letters to JSONL files (each
    optional: None drops that output). Everything is written once it is closed."""

    def __init__(
        self, recommendations: Path | None = None, dead_letters: Path | None = None
    ) -> None:
        self._recs: IO[bytes] | None = recommendations.open("wb") if recommendations else None
        self._dlq: IO[bytes] | None = dead_letters.open("wb") if dead_letters else None
        self._handles = (self._recs, self._dlq)

    def publish(self, recommendations: Sequence[Recommendation]) -> None:
        if self._recs is not None and recommendations:
            self._recs.write(b"".join(encode_recommendation(r) + b"\n" for r in recommendations))

    def dead_letter(self, dead_letters: Sequence[DeadLetter]) -> None:
        if self._dlq is not None and dead_letters:
            self._dlq.write(b"".join(dead_letter_json(d) + b"\n" for d in dead_letters))


class DecisionLogFile(_Files):
    """The bandit's decision log as JSONL, what `streamrec evaluate-policy` reads (None: not
    kept). Not part of the `Sink`: only the replay keeps one, the service publishes no decisions."""

    def __init__(self, path: Path | None = None) -> None:
        self._file: IO[bytes] | None = path.open("wb") if path else None
        self._handles = (self._file,)

    def write(self, decisions: Sequence[dict[str, Any]]) -> None:
        if self._file is not None and decisions:
            self._file.write(b"".join(orjson.dumps(d) + b"\n" for d in decisions))


class ListSink:
    """A `streamrec.io.edges.Sink` keeping everything in memory: for tests and notebooks."""

    def __init__(self) -> None:
        self.recommendations: list[Recommendation] = []
        self.dead_letters: list[DeadLetter] = []

    def publish(self, recommendations: Sequence[Recommendation]) -> None:
        self.recommendations.extend(recommendations)

    def dead_letter(self, dead_letters: Sequence[DeadLetter]) -> None:
        self.dead_letters.extend(dead_letters)
