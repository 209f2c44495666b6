"""Where results go, apart from Kafka (see `streamrec.io`): JSONL files and in-memory lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

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


class JsonlSink:
    """Writes recommendations, dead letters and decision-log lines to JSONL (each optional)."""

    def __init__(
        self,
        recommendations: Path | None = None,
        dead_letters: Path | None = None,
        decisions: Path | None = None,
    ) -> None:
        self._recs: IO[bytes] | None = recommendations.open("wb") if recommendations else None
        self._dlq: IO[bytes] | None = dead_letters.open("wb") if dead_letters else None
        self._decisions: IO[bytes] | None = decisions.open("wb") if decisions else None

    def write(
        self,
        recs: Sequence[Recommendation],
        dead: Sequence[DeadLetter],
        decisions: Sequence[dict[str, Any]] = (),
    ) -> None:
        if self._recs is not None and recs:
            self._recs.write(b"".join(encode_recommendation(r) + b"\n" for r in recs))
        if self._dlq is not None and dead:
            self._dlq.write(b"".join(dead_letter_json(d) + b"\n" for d in dead))
        if self._decisions is not None and decisions:
            self._decisions.write(b"".join(orjson.dumps(d) + b"\n" for d in decisions))

    def close(self) -> None:
        for handle in (self._recs, self._dlq, self._decisions):
            if handle is not None:
                handle.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ListSink:
    """Keeps everything in memory: the sink for tests and notebooks."""

    def __init__(self) -> None:
        self.recommendations: list[Recommendation] = []
        self.dead_letters: list[DeadLetter] = []
        self.decisions: list[dict[str, Any]] = []

    def write(
        self,
        recs: Sequence[Recommendation],
        dead: Sequence[DeadLetter],
        decisions: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.recommendations.extend(recs)
        self.dead_letters.extend(dead)
        self.decisions.extend(decisions)
