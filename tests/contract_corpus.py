"""Examples and counter-examples of the event contract, field by field.

Each case says how the published JSON Schema and `decode_event` judge it (the same, unless the case
says why not) and which dead-letter reason `Preprocessor.check` gives it (None: learned).
tests/test_contract.py checks all three; tests/test_fast_decode.py also runs every case through
its differential test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

NOW = 1_767_225_600.0
"""2026-01-01T00:00:00Z: the `now` the preprocess checks run at."""
NOW_MS = int(NOW * 1000)


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    schema: bool
    """The JSON Schema (Draft 2020-12, formats checked) accepts the document."""
    decodes: bool
    """`decode_event` accepts it."""
    reason: str | None
    """The reason `Preprocessor.check` dead-letters it for, or None when it is learned."""
    why: str = ""
    """Required where the schema and decode_event disagree, and where both accept what preprocess
    rejects: the difference is deliberate, and this says why."""


class Raw(str):
    """JSON text written into a document as it is (NaN, 1e400, 2.0 as written)."""


DROP = Raw("")
"""A field value that means: leave the field out."""

BASE: dict[str, Any] = {"event_id": "e-1", "user_id": "u-1", "item_id": "i-1", "timestamp": NOW_MS}
KINDS: dict[str, dict[str, Any]] = {
    "click": {"type": "click"},
    "purchase": {"type": "purchase", "quantity": 2, "price": 9.99},
    "rating": {"type": "rating", "rating": 4.0},
}


def event(kind: str = "click", /, **fields: Any) -> bytes:
    """A JSON event of `kind` with `fields` set (`DROP` leaves one out)."""
    doc = {**KINDS[kind], **BASE, **fields}
    parts = []
    for key, value in doc.items():
        if value is DROP:
            continue
        text = str(value) if isinstance(value, Raw) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{json.dumps(key)}:{text}")
    return ("{" + ",".join(parts) + "}").encode("utf-8", "surrogatepass")


def ok(name: str, data: bytes) -> Case:
    return Case(name, data, schema=True, decodes=True, reason=None)


def bad(name: str, data: bytes, reason: str) -> Case:
    return Case(name, data, schema=False, decodes=False, reason=reason)


def guarded(name: str, data: bytes, reason: str, why: str) -> Case:
    """Valid by the contract, rejected by a preprocess guard that is a setting or a limit."""
    return Case(name, data, schema=True, decodes=True, reason=reason, why=why)


SCALE = "the rating scale is a setting (model.rating_min/max), checked in preprocess.py"
CLOCK = "the clock guards are settings (model.min_timestamp_s, max_future_skew_s)"
SIZE = "the record size limit (64 KiB) is the transport's, checked before decoding"


def _ids() -> list[Case]:
    cases = []
    for field in ("event_id", "user_id", "item_id", "rec_id"):
        for name, value in [
            ("one char", "x"),
            ("256 chars", "x" * 256),
            ("256 non-ASCII code points", "é" * 256),
            ("256 astral code points", "\U0001f600" * 256),
            ("inner spaces", " x y "),
            ("a control char is not whitespace", "\x1c"),
            ("BOM is not whitespace", "\ufeff"),
        ]:
            cases.append(ok(f"{field}: {name}", event(**{field: value})))
        for name, value, reason in [
            ("empty", "", "invalid_event"),
            ("257 chars", "x" * 257, "invalid_event"),
            ("257 non-ASCII code points", "é" * 257, "invalid_event"),
            ("only spaces", "   ", "invalid_event"),
            ("only tabs and newlines", "\t\n\r\v\f", "invalid_event"),
            ("only NEL", "\x85", "invalid_event"),
            ("only no-break space", "\xa0", "invalid_event"),
            ("only ideographic space", "\u3000", "invalid_event"),
            ("a number", 7, "invalid_event"),
            ("a float", 7.5, "invalid_event"),
            ("a bool", True, "invalid_event"),
            ("an array", ["x"], "invalid_event"),
            ("an object", {"id": "x"}, "invalid_event"),
        ]:
            cases.append(bad(f"{field}: {name}", event(**{field: value}), reason))
        if field != "rec_id":
            cases.append(bad(f"{field}: null", event(**{field: None}), "invalid_event"))
            cases.append(bad(f"{field}: missing", event(**{field: DROP}), "missing_field"))
    cases.append(ok("rec_id: null", event(rec_id=None)))
    return cases


def _timestamps() -> list[Case]:
    cases = [
        ok(f"timestamp: {text}", event(timestamp=text))
        for text in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00+01:00",
            "2025-12-31T19:00:00-05:00",
            "2026-01-01T00:00:00-00:00",
            "2026-01-01t00:00:00z",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01T00:00:00.123456789Z",
            "2024-02-29T00:00:00Z",
            "2025-12-31T23:59:59+23:59",
        ]
    ]
    cases += [ok("timestamp: int ms", event()), ok("timestamp: float ms", event(timestamp=1.5e12))]
    cases += [ok("timestamp: ms as 1.767e12", event(timestamp=Raw("1.7672256E12")))]
    for text in [
        "2026-01-01 00:00:00Z",  # space for T: ISO 8601 readability, not RFC 3339's grammar
        "2026-01-01T00:00Z",  # no seconds
        "2026-01-01T00:00:00",  # no offset
        "2026-01-01",
        "2026-01-01T00:00:00+0100",
        "2026-01-01T00:00:00+01",
        "2026-01-01T00:00:00+01:00:30",
        "2026-01-01T00:00:00,5Z",
        "2026-01-01T00:00:00.Z",
        "20260101T000000Z",
        "2026-W01-4T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:60Z",  # a leap second: Python and JSON Schema validators refuse them
        "2026-01-01T00:00:00+24:00",
        "2026-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        " 2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00Z ",
        "２０２６-01-01T00:00:00Z",
        "2026-01-01T00:00:00UTC",
        "1767225600000",
        "yesterday",
        "",
    ]:
        cases.append(bad(f"timestamp: {text!r}", event(timestamp=text), "invalid_event"))
    for name, value in [
        ("true", True),
        ("null", None),
        ("array", [NOW_MS]),
        ("object", {"ms": NOW_MS}),
        ("year 10000 in ms", 253_402_300_800_000),
        ("before year 1 in ms", -62_135_596_800_001),
        ("microseconds", NOW_MS * 1000),
        ("nanoseconds", NOW_MS * 1_000_000),
        ("beyond 64 bits", Raw("1" + "0" * 30)),
        ("beyond double range", Raw("1" + "0" * 400)),
    ]:
        cases.append(bad(f"timestamp: {name}", event(timestamp=value), "invalid_event"))
    cases.append(bad("timestamp: missing", event(timestamp=DROP), "missing_field"))
    cases += [
        guarded("timestamp: 1970", event(timestamp=0), "timestamp_too_old", CLOCK),
        guarded("timestamp: seconds", event(timestamp=int(NOW)), "timestamp_too_old", CLOCK),
        guarded(
            "timestamp: year 1", event(timestamp="0001-01-01T00:00:00Z"), "timestamp_too_old", CLOCK
        ),
        guarded(
            "timestamp: in an hour",
            event(timestamp=NOW_MS + 3_600_000),
            "timestamp_in_future",
            CLOCK,
        ),
        guarded(
            "timestamp: year 9999",
            event(timestamp="9999-12-31T23:59:59Z"),
            "timestamp_in_future",
            CLOCK,
        ),
    ]
    return cases


def _numbers() -> list[Case]:
    cases = [
        ok("rating: float", event("rating", rating=4.5)),
        ok("rating: integer literal is a number", event("rating", rating=4)),
        ok("rating: exponent", event("rating", rating=Raw("4e0"))),
        ok("purchase: defaults", event("purchase", quantity=DROP, price=DROP)),
        ok("quantity: 1", event("purchase", quantity=1)),
        ok("quantity: 1000000", event("purchase", quantity=1_000_000)),
        # JSON has one number type; JSON Schema's integer is any number with a zero fraction.
        ok("quantity: 2.0 is the integer 2", event("purchase", quantity=Raw("2.0"))),
        ok("quantity: 1e2 is the integer 100", event("purchase", quantity=Raw("1e2"))),
        ok("price: 0", event("purchase", price=0)),
        ok("price: -0.0", event("purchase", price=-0.0)),
        ok("price: integer literal", event("purchase", price=12)),
        ok("price: null", event("purchase", price=None)),
    ]
    for field, kind in [("rating", "rating"), ("quantity", "purchase"), ("price", "purchase")]:
        for name, value in [
            ("string of digits", "4"),
            ("string of a float", "4.5"),
            ("empty string", ""),
            ("true", True),
            ("false", False),
            ("array", [4]),
            ("object", {"value": 4}),
            ("NaN", Raw("NaN")),
            ("Infinity", Raw("Infinity")),
        ]:
            cases.append(bad(f"{field}: {name}", event(kind, **{field: value}), "invalid_event"))
    cases += [
        bad("rating: null", event("rating", rating=None), "invalid_event"),
        bad("rating: missing", event("rating", rating=DROP), "missing_field"),
        bad("quantity: 2.5", event("purchase", quantity=2.5), "invalid_event"),
        bad("quantity: 0", event("purchase", quantity=0), "invalid_event"),
        bad("quantity: -1", event("purchase", quantity=-1), "invalid_event"),
        bad("quantity: 1000001", event("purchase", quantity=1_000_001), "invalid_event"),
        bad("quantity: null", event("purchase", quantity=None), "invalid_event"),
        bad("price: negative", event("purchase", price=-0.01), "invalid_event"),
        guarded("rating: above the scale", event("rating", rating=6), "rating_out_of_range", SCALE),
        guarded(
            "rating: below the scale", event("rating", rating=0.5), "rating_out_of_range", SCALE
        ),
        guarded("rating: 1e308", event("rating", rating=1e308), "rating_out_of_range", SCALE),
        guarded("rating: huge int", event("rating", rating=2**64), "rating_out_of_range", SCALE),
    ]
    return cases


def _type_and_context() -> list[Case]:
    scalars = {"s": "x", "i": 1, "f": 0.5, "b": True, "n": None, "big": 2**64, "": ""}
    cases = [
        ok("context: scalars of every JSON type", event(context=scalars)),
        ok("context: empty", event(context={})),
        ok("context: null", event(context=None)),
        ok("context: 32 fields", event(context={f"k{i}": i for i in range(32)})),
        ok("rating event with rec_id and context", event("rating", rec_id="r-1", context=scalars)),
        bad("context: 33 fields", event(context={f"k{i}": i for i in range(33)}), "invalid_event"),
        bad("context: nested object", event(context={"a": {"b": 1}}), "invalid_event"),
        bad("context: array value", event(context={"a": [1]}), "invalid_event"),
        bad("context: NaN value", event(context=Raw('{"a":NaN}')), "invalid_event"),
        bad("context: an array", event(context=[["a", 1]]), "invalid_event"),
        bad("context: a string", event(context="a=1"), "invalid_event"),
        bad("context: a number", event(context=1), "invalid_event"),
    ]
    cases += [ok(f"type: {kind}", event(kind)) for kind in KINDS]
    for kind in ["like", "Click", "click ", "", 1, True, None, ["click"], {"k": "click"}]:
        cases.append(bad(f"type: {kind!r}", event(type=kind), "unknown_type"))
    cases.append(bad("type: missing", event(type=DROP), "missing_field"))
    return cases


def _documents() -> list[Case]:
    cases = [
        ok("unknown fields are ignored", event(schema=2, meta={"src": ["web", {"a": None}]})),
        ok("a click's unknown 'rating' is ignored", event(rating="not a number")),
        ok("unknown field nested 100 deep", event(x=Raw("[" * 100 + "]" * 100))),
        ok("a duplicated key: the last wins", event()[:-1] + b',"user_id":"u-2"}'),
        ok("whitespace between tokens", event().replace(b",", b" ,\n\t")),
    ]
    cases += [
        bad(f"not an object: {text}", text.encode(), "invalid_json")
        for text in ["[]", "[1, 2]", '"click"', "1", "true", "null", f"[{event().decode()}]"]
    ]
    cases += [
        bad("an empty object", b"{}", "missing_field"),
        bad("not JSON", b"{not json", "invalid_json"),
        bad("truncated", event()[:-1], "invalid_json"),
        bad("two documents", event() + event(), "invalid_json"),
        bad("not UTF-8", b"\xff\xfe", "invalid_json"),
        bad("a BOM before the object", b"\xef\xbb\xbf" + event(), "invalid_json"),
        bad("NaN in a known field", event("rating", rating=Raw("NaN")), "invalid_event"),
        bad("empty", b"", "empty_value"),
        guarded("70,000 bytes", event(pad="p" * 70_000), "oversize", SIZE),
    ]
    not_json = "not RFC 8259 JSON, so no schema validator reads it"
    cases += [
        Case(
            "NaN in an unknown field",
            event(debug=Raw("NaN")),
            schema=False,
            decodes=True,
            reason=None,
            why=f"{not_json}; pydantic's parser reads NaN/Infinity (Python's json.dumps writes"
            " them) and drops them with the field it ignores",
        ),
        Case(
            "a lone surrogate in an id",
            event(user_id=Raw('"\\ud800"')),
            schema=True,
            decodes=False,
            reason="invalid_json",
            why="RFC 8259 §8.2 leaves unpaired surrogates unpredictable; pydantic's parser refuses"
            " them (no UTF-8 for them: they would break every consumer downstream)",
        ),
        Case(
            "rating 1e400",
            event("rating", rating=Raw("1e400")),
            schema=True,
            decodes=False,
            reason="invalid_event",
            why="valid JSON grammar, but no finite double: Python's json reads it as inf, which"
            " the schema's `number` accepts; the model refuses non-finite numbers",
        ),
        Case(
            "unknown field nested 300 deep",
            event(x=Raw("[" * 300 + "]" * 300)),
            schema=True,
            decodes=False,
            reason="invalid_json",
            why="pydantic's JSON parser stops at 200 levels of nesting (a guard against stack"
            " exhaustion); JSON Schema sets no depth limit",
        ),
        Case(
            "timestamp with a trailing newline",
            event(timestamp="2026-01-01T00:00:00Z\n"),
            schema=True,
            decodes=False,
            reason="invalid_event",
            why="rfc3339-validator's `$` also matches before a final newline; RFC 3339's grammar"
            " has none, and the model follows the RFC",
        ),
    ]
    return cases


CORPUS: list[Case] = _ids() + _timestamps() + _numbers() + _type_and_context() + _documents()
