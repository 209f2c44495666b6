"""The two shapes of an edge: a `Source` of record batches and a `Sink` of results.

Kafka, event-log files and in-memory lists plug into the pipeline the same way, so the replay and
the service differ only in which source and sink they build. The protocols hold only what every
edge means alike: lifecycle (closing, flushing) differs in meaning between Kafka and files (a
closed `KafkaSink` gives up on what is queued, a closed `JsonlSink` has written everything), so
each class documents its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from streamrec.contract.events import Recommendation
from streamrec.contract.records import DeadLetter, Record


class Source(Protocol):
    """Where records come from, a batch at a time."""

    def poll(self, size: int, timeout_s: float) -> list[Record]:
        """Up to `size` records, waiting at most `timeout_s` for the first. An empty batch means
        nothing arrived in time; a finite source (a file) returns one only when exhausted."""
        ...


class Sink(Protocol):
    """Where the pipeline's results go: refreshed recommendation lists and dead letters."""

    def publish(self, recommendations: Sequence[Recommendation]) -> None:
        """Hand on refreshed recommendation lists, in order."""
        ...

    def dead_letter(self, dead_letters: Sequence[DeadLetter]) -> None:
        """Hand on records the pipeline rejected, each with the reason."""
        ...
