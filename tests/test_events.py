"""The wire contract: parsing rules, and the checked-in schemas equal what the models generate."""

from __future__ import annotations

import calendar
import json
import random
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.contract.events import (
    ClickEvent,
    PurchaseEvent,
    RatingEvent,
    decode_event,
)
from streamrec.contract.schemas import json_schemas
from streamrec.contract.timestamps import parse_rfc3339

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def test_checked_in_schemas_match_models() -> None:
    generated = json_schemas()
    on_disk = {p.name for p in SCHEMAS.glob("*.json")}
    assert on_disk == set(generated), "run `streamrec schemas --out schemas/`"
    for name, schema in generated.items():
        assert json.loads((SCHEMAS / name).read_text()) == schema, (
            f"schemas/{name} is stale: run `streamrec schemas --out schemas/`"
        )


def test_timestamp_accepts_rfc3339_and_epoch_millis() -> None:
    a = decode_event(
        b'{"event_id":"1","type":"click","user_id":"u","item_id":"i",'
        b'"timestamp":"2026-01-01T00:00:00Z"}'
    )
    b = decode_event(
        b'{"event_id":"2","type":"click","user_id":"u","item_id":"i","timestamp":1767225600000}'
    )
    c = decode_event(
        b'{"event_id":"3","type":"click","user_id":"u","item_id":"i",'
        b'"timestamp":"2026-01-01T01:00:00+01:00"}'
    )
    assert a.timestamp == b.timestamp == c.timestamp == 1_767_225_600.0


def test_discriminated_union_and_unknown_fields_ignored() -> None:
    base = '"event_id":"e","user_id":"u","item_id":"i","timestamp":1767225600000,"new_field":[1]'
    assert isinstance(decode_event('{"type":"click",' + base + "}"), ClickEvent)
    bought = decode_event('{"type":"purchase","quantity":2,"price":9.5,' + base + "}")
    assert isinstance(bought, PurchaseEvent) and bought.quantity == 2
    rated = decode_event('{"type":"rating","rating":4.5,' + base + "}")
    assert isinstance(rated, RatingEvent) and rated.rating == 4.5


@pytest.mark.parametrize(
    "body",
    [
        '{"type":"rating","event_id":"e","user_id":"u","item_id":"i","timestamp":1}',  # no rating
        '{"type":"click","event_id":"e","user_id":"","item_id":"i","timestamp":1}',
        '{"type":"click","event_id":"e","user_id":"   ","item_id":"i","timestamp":1}',
        '{"type":"click","event_id":"e","user_id":"' + "x" * 300 + '","item_id":"i","timestamp":1}',
        '{"type":"click","event_id":"e","user_id":"u","item_id":"i","timestamp":"yesterday"}',
        '{"type":"click","event_id":"e","user_id":"u","item_id":"i","timestamp":"2026-01-01T00:00"}',
        '{"type":"click","event_id":"e","user_id":"u","item_id":"i","timestamp":true}',
        '{"type":"rating","event_id":"e","user_id":"u","item_id":"i","timestamp":1,"rating":NaN}',
        '{"type":"like","event_id":"e","user_id":"u","item_id":"i","timestamp":1}',
        '{"type":"click","event_id":"e","user_id":7,"item_id":"i","timestamp":1}',
        "[1, 2]",
    ],
)
def test_invalid_events_are_rejected(body: str) -> None:
    with pytest.raises(ValidationError):
        decode_event(body)


def test_rfc3339_parser_gives_the_float_datetime_gives() -> None:
    """The strict parser replaced `datetime.fromisoformat`: on every text both accept, the epoch
    seconds must be the same float, so events replayed before and after learn the same."""
    rng = random.Random(3339)
    for _ in range(3000):
        year, month = rng.randint(1, 9999), rng.randint(1, 12)
        day = rng.randint(1, calendar.monthrange(year, month)[1])
        fraction = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 1, 3, 6, 9])))
        offset = rng.choice(
            ["Z", f"{rng.choice('+-')}{rng.randint(0, 23):02}:{rng.randint(0, 59):02}"]
        )
        text = (
            f"{year:04}-{month:02}-{day:02}T{rng.randint(0, 23):02}:{rng.randint(0, 59):02}:"
            f"{rng.randint(0, 59):02}{'.' + fraction if fraction else ''}{offset}"
        )
        try:
            expected = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):  # beyond datetime's years once the offset is applied
            continue
        assert parse_rfc3339(text) == expected, text
        assert parse_rfc3339(text.lower()) == expected, text
