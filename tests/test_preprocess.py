"""Validation, guards and dedup: every bad record becomes a dead letter with a reason."""

from __future__ import annotations

import orjson
import pytest

from streamrec.preprocess import DeadLetter, Preprocessor, Record
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
