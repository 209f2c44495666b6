"""Validation, guards and dedup: every bad record becomes a dead letter with a reason."""

from __future__ import annotations

import math

import orjson
import pytest

from streamrec.contract.records import DeadLetter, Record
from streamrec.core.preprocess import Preprocessor
from streamrec.settings import ModelSettings

NOW = 1_767_225_600.0
HUGE_TS = b',"user_id":"u","item_id":"i","timestamp":1' + b"0" * 400 + b"}"
"""An int timestamp beyond float range: once an OverflowError that stopped the loop."""


def record(**fields: object) -> Record:
    event = {
        "event_id": "e1",
        "type": "click",
        "user_id": "u",
        "item_id": "i",
        "timestamp": int(NOW * 1000),
    }
    event.update(fields)
    return Record(orjson.dumps({k: v for k, v in event.items() if v is not None}), offset=7)


@pytest.mark.parametrize(
    ("rec", "reason"),
    [
        (Record(None), "empty_value"),
        (Record(b""), "empty_value"),
        (Record(b"x" * 70_000), "oversize"),
        (Record(b"{not json"), "invalid_json"),
        (Record(b"\xff\xfe"), "invalid_json"),
        (record(type="like"), "unknown_type"),
        (record(user_id=None), "missing_field"),
        (record(type="rating", rating=6), "rating_out_of_range"),
        (record(type="rating", rating=0.5), "rating_out_of_range"),
        (record(timestamp=int((NOW + 3600) * 1000)), "timestamp_in_future"),
        (record(timestamp=int(NOW)), "timestamp_too_old"),  # seconds sent as milliseconds
        (record(item_id="x" * 1000), "invalid_event"),
        (Record(orjson.dumps({"event_id": "e1", "type": "click"})[:-1] + HUGE_TS), "invalid_event"),
    ],
)
def test_bad_records_become_dead_letters(rec: Record, reason: str) -> None:
    outcome = Preprocessor(ModelSettings()).check(rec, now=NOW)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == reason, outcome.error
    assert outcome.error and outcome.record is rec


def test_configured_scale_is_respected() -> None:
    half_stars = Preprocessor(ModelSettings(rating_min=0.5, rating_max=5.0))
    assert not isinstance(half_stars.check(record(type="rating", rating=0.5), now=NOW), DeadLetter)


def test_duplicates_dropped_inside_window_only() -> None:
    pre = Preprocessor(ModelSettings(dedup_window=2))
    assert pre.check(record(event_id="a"), now=NOW) is not None
    assert pre.check(record(event_id="a"), now=NOW) is None  # duplicate
    pre.check(record(event_id="b"), now=NOW)
    pre.check(record(event_id="c"), now=NOW)  # "a" leaves the window
    assert pre.check(record(event_id="a"), now=NOW) is not None


def test_dedup_window_survives_pickling() -> None:
    import pickle

    pre = Preprocessor(ModelSettings())
    pre.check(record(event_id="a"), now=NOW)
    restored = pickle.loads(pickle.dumps(pre))
    assert restored.check(record(event_id="a"), now=NOW) is None


def reference_reason(event: dict[str, object], settings: ModelSettings, now: float) -> str | None:
    """The guard as first written (before `check` inlined its common case)."""
    if event["type"] == "rating":
        r = float(event["rating"])  # type: ignore[arg-type]
        if not (math.isfinite(r) and settings.rating_min <= r <= settings.rating_max):
            return "rating_out_of_range"
    timestamp = float(event["timestamp"]) / 1000.0  # type: ignore[arg-type]
    if timestamp > now + settings.max_future_skew_s:
        return "timestamp_in_future"
    if timestamp < settings.min_timestamp_s:
        return "timestamp_too_old"
    return None


@pytest.mark.parametrize(
    "settings",
    [
        ModelSettings(),
        ModelSettings(rating_min=0.5, rating_max=5.0, max_future_skew_s=0.0),
        ModelSettings(rating_min=-10.0, rating_max=10.0, min_timestamp_s=NOW - 1.0),
    ],
)
def test_guard_boundaries_as_before(settings: ModelSettings) -> None:
    edges_s = [
        settings.min_timestamp_s,
        NOW + settings.max_future_skew_s,
        NOW,
        0.0,
    ]
    timestamps_ms = {t * 1000 + d for t in edges_s for d in (-1, -0.5, 0, 0.5, 1)}
    ratings = [settings.rating_min, settings.rating_max, 0.0, 1.0, 3.0, 4.5, 5.0, 5.5, 6, -0.0]
    ratings += [settings.rating_min - 1e-9, settings.rating_max + 1e-9, 1e300, -1e300]
    pre = Preprocessor(settings)
    n = 0
    for ts in sorted(timestamps_ms):
        for fields in [{"type": "click"}] + [{"type": "rating", "rating": r} for r in ratings]:
            n += 1
            rec = record(event_id=f"e{n}", timestamp=ts, **fields)
            outcome = pre.check(rec, now=NOW)
            event = orjson.loads(rec.value or b"")
            expected = reference_reason(event, settings, NOW)
            got = outcome.reason if isinstance(outcome, DeadLetter) else None
            assert got == expected, event
            assert outcome is not None


def test_new_settings_take_effect() -> None:
    pre = Preprocessor(ModelSettings())
    assert isinstance(pre.check(record(type="rating", rating=0.5), now=NOW), DeadLetter)
    pre.settings = ModelSettings(rating_min=0.5, rating_max=5.0, dedup_window=0)
    assert not isinstance(pre.check(record(type="rating", rating=0.5), now=NOW), DeadLetter)


def test_settings_survive_pickling() -> None:
    import pickle

    pre = Preprocessor(ModelSettings(rating_min=0.5, rating_max=5.0, max_future_skew_s=0.0))
    restored = pickle.loads(pickle.dumps(pre))
    assert restored.settings == pre.settings
    assert not isinstance(restored.check(record(type="rating", rating=0.5), now=NOW), DeadLetter)
    late = record(event_id="late", timestamp=int(NOW * 1000) + 1)
    assert restored.check(late, now=NOW).reason == "timestamp_in_future"  # type: ignore[union-attr]


def test_no_dedup_with_a_zero_window() -> None:
    pre = Preprocessor(ModelSettings(dedup_window=0))
    assert pre.check(record(event_id="a"), now=NOW) is not None
    assert pre.check(record(event_id="a"), now=NOW) is not None
