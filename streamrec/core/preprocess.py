"""Decode, validate and guard raw records: each becomes a valid event, a duplicate or a dead letter.

Errors are data here (STYLE.md #4): a bad record becomes a `DeadLetter` with a bounded `reason`
label (safe as a metric label) and a readable `error`, and the loop goes on.
"""

from __future__ import annotations

import math
import time
from collections import deque

from pydantic import ValidationError

from streamrec.contract.catalog import AnyCatalogRecord, RetireItem, decode_catalog_record
from streamrec.contract.events import AnyEvent, RatingEvent, decode_event
from streamrec.contract.records import MAX_RECORD_BYTES, DeadLetter, Record
from streamrec.settings import ModelSettings

MISSING_KEY = "record has no key; key events by user_id"


def _describe(exc: ValidationError) -> tuple[str, str]:
    """A bounded reason label and a short readable message from a pydantic error."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": str(exc)}
    # Not JSON at all, or JSON that is not an object (an array, a string, null...): either way
    # there is no event to speak of, so no field to name.
    if first["type"] in ("json_invalid", "json_type") or (
        first["type"] in ("dict_type", "model_type", "model_attributes_type") and not first["loc"]
    ):
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
        # Learn-log records: the next origin offset not learned yet, per origin partition.
        self._origins: dict[str, int] = {}

    @property
    def settings(self) -> ModelSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: ModelSettings) -> None:
        # `check` reads these limits for every event: plain attributes are read about three times
        # faster than fields of a pydantic model (which has a __getattr__ hook).
        self._settings = settings
        self._min_timestamp_s = settings.min_timestamp_s
        self._max_future_skew_s = settings.max_future_skew_s
        self._rating_min = settings.rating_min
        self._rating_max = settings.rating_max
        self._dedup_window = settings.dedup_window

    def __getstate__(self) -> dict[str, object]:
        # A set of strings pickles in hash order, which differs between processes: store the
        # deque (arrival order) only and rebuild the set.
        return {
            "settings": self.settings,
            "recent_ids": list(self._recent_ids),
            "origins": sorted(self._origins.items()),
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        self.settings = state["settings"]  # type: ignore[assignment]
        self._recent_ids = deque(state["recent_ids"])  # type: ignore[call-overload]
        self._recent_set = set(self._recent_ids)
        self._origins = dict(state.get("origins", ()))  # type: ignore[call-overload]

    def origin_positions(self) -> dict[str, int]:
        """Per origin partition, the next origin offset not learned (learn-log mode)."""
        return dict(self._origins)

    def check(
        self, record: Record, now: float | None = None, require_key: bool = False
    ) -> AnyEvent | DeadLetter | None:
        """The valid event, a DeadLetter, or None for a duplicate.

        `require_key` (Kafka sources): a valid event without a key is a dead letter too. It is
        judged after the value, so the same bytes get the same reason from every source.

        A learn-log record (one with an `origin`) is judged by the log alone, so every instance
        that reads the log judges it the same: it is a duplicate if its origin offset was
        learned already (a forwarder that crashed before committing forwards again), and "now"
        is the time it was forwarded (its timestamp), not this instance's clock.
        """
        if record.origin:
            if self._replayed(record):
                return None
            if record.timestamp_ms is not None:
                now = record.timestamp_ms / 1000.0
        value = record.value
        if not value:  # None, or no bytes
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
        if now is None:
            now = time.time()
        # The common case costs one chained comparison (two for a rating); only an event outside
        # it goes to _guard, which says what is wrong, if anything.
        fine = self._min_timestamp_s <= event.timestamp <= now + self._max_future_skew_s
        if fine and isinstance(event, RatingEvent):
            rating = event.rating
            fine = self._rating_min <= rating <= self._rating_max and math.isfinite(rating)
        if not fine:
            problem = self._guard(event, now)
            if problem is not None:
                return DeadLetter(record, *problem)
        if require_key and record.key is None:
            return DeadLetter(record, "missing_key", MISSING_KEY)
        # Dedup inline, for the same reason.
        event_id = event.event_id
        recent = self._recent_set
        if event_id in recent:
            return None
        if self._dedup_window:
            recent_ids = self._recent_ids
            recent_ids.append(event_id)
            recent.add(event_id)
            if len(recent_ids) > self._dedup_window:
                recent.discard(recent_ids.popleft())
        return event

    def _replayed(self, record: Record) -> bool:
        """A learn-log record whose origin offset was learned already; else note it learned."""
        if record.origin_offset < self._origins.get(record.origin, -1):
            return True
        self._origins[record.origin] = record.origin_offset + 1
        return False

    def check_catalog(self, record: Record) -> AnyCatalogRecord | DeadLetter | None:
        """A catalog record, a DeadLetter, or None for a learn-log duplicate. A tombstone (a key
        and no value) retires the item its key names."""
        if record.origin and self._replayed(record):
            return None
        value = record.value
        if not value:
            if not record.key:
                return DeadLetter(record, "empty_value", "catalog record has neither value nor key")
            key = record.key.decode(errors="replace")
            try:
                return RetireItem(type="retire", item_id=key)
            except ValidationError as exc:
                return DeadLetter(record, "invalid_catalog", f"tombstone key: {_describe(exc)[1]}")
        if len(value) > MAX_RECORD_BYTES:
            return DeadLetter(
                record, "oversize", f"record is {len(value)} bytes, over {MAX_RECORD_BYTES}"
            )
        try:
            return decode_catalog_record(value)
        except ValidationError as exc:
            reason, error = _describe(exc)
            if reason == "invalid_event":
                reason = "invalid_catalog"
            return DeadLetter(record, reason, error)

    def _guard(self, event: AnyEvent, now: float) -> tuple[str, str] | None:
        """What is wrong with a decoded event's rating or timestamp, or None; `check` inlines the
        test for the common case and asks here only when it fails."""
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
