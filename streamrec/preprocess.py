"""Decode, validate and guard raw records: each becomes a valid event, a duplicate or a dead letter.

Errors are data here (STYLE.md #4): a bad record becomes a `DeadLetter` with a bounded `reason`
label (safe as a metric label) and a readable `error`, and the loop goes on.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from pydantic import ValidationError

from streamrec.events import AnyEvent, RatingEvent, decode_event
from streamrec.settings import ModelSettings

MAX_RECORD_BYTES = 64 * 1024
"""A single event is a few hundred bytes; anything this large is a bug or abuse."""


@dataclass(frozen=True, slots=True)
class Record:
    """One raw message, whatever it came from (Kafka, a file line, a list in a test)."""

    value: bytes | None
    key: bytes | None = None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str
    error: str


def _describe(exc: ValidationError) -> tuple[str, str]:
    """A bounded reason label and a short readable message from a pydantic error."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": str(exc)}
    if first["type"] in ("json_invalid", "json_type"):
        return "invalid_json", f"not a JSON object: {first['msg']}"
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "<event>"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    loc0 = first["loc"]
    if first["type"] == "union_tag_invalid" or (loc0 and loc0[0] == "type"):
        return "unknown_type", "; ".join(parts) + more
    if first["type"] in ("union_tag_not_found", "missing"):
        return "missing_field", "; ".join(parts) + more
    return "invalid_event", "; ".join(parts) + more


class Preprocessor:
    """Turns records into events, drops duplicates inside a bounded window, rejects nonsense.

    The dedup window (the last `dedup_window` event ids) is part of the checkpointed state, so a
    producer retry that arrives after a restart is still recognised.
    """

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self._recent_ids: deque[str] = deque()
        self._recent_set: set[str] = set()

    def __getstate__(self) -> dict[str, object]:
        # A set of strings pickles in hash order, which differs between processes: store the
        # deque (arrival order) only and rebuild the set.
        return {"settings": self.settings, "recent_ids": list(self._recent_ids)}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.settings = state["settings"]  # type: ignore[assignment]
        self._recent_ids = deque(state["recent_ids"])  # type: ignore[call-overload]
        self._recent_set = set(self._recent_ids)

    def check(self, record: Record, now: float | None = None) -> AnyEvent | DeadLetter | None:
        """The valid event, a DeadLetter, or None for a duplicate."""
        value = record.value
        if value is None or len(value) == 0:
            return DeadLetter(record, "empty_value", "record has no value (tombstone or empty)")
        if len(value) > MAX_RECORD_BYTES:
            return DeadLetter(
                record, "oversize", f"record is {len(value)} bytes, over {MAX_RECORD_BYTES}"
            )
        try:
            event = decode_event(value)
        except ValidationError as exc:
            reason, error = _describe(exc)
            return DeadLetter(record, reason, error)
        problem = self._guard(event, time.time() if now is None else now)
        if problem is not None:
            return DeadLetter(record, *problem)
        if self._is_duplicate(event.event_id):
            return None
        return event

    def _guard(self, event: AnyEvent, now: float) -> tuple[str, str] | None:
        s = self.settings
        if isinstance(event, RatingEvent):
            r = event.rating
            if not (math.isfinite(r) and s.rating_min <= r <= s.rating_max):
                return (
                    "rating_out_of_range",
                    f"rating {r} is outside the scale [{s.rating_min}, {s.rating_max}]",
                )
        if event.timestamp > now + s.max_future_skew_s:
            return (
                "timestamp_in_future",
                f"timestamp is {event.timestamp - now:.0f} s in the future "
                f"(allowed skew {s.max_future_skew_s:.0f} s)",
            )
        if event.timestamp < s.min_timestamp_s:
            return (
                "timestamp_too_old",
                f"timestamp {event.timestamp:.0f} is before {s.min_timestamp_s:.0f} "
                "(epoch seconds sent where milliseconds are expected?)",
            )
        return None

    def _is_duplicate(self, event_id: str) -> bool:
        if event_id in self._recent_set:
            return True
        if self.settings.dedup_window:
            self._recent_ids.append(event_id)
            self._recent_set.add(event_id)
            if len(self._recent_ids) > self.settings.dedup_window:
                self._recent_set.discard(self._recent_ids.popleft())
        return False
