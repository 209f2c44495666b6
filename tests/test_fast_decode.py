"""decode_event's fast path (orjson + hand-written checks) against pydantic: for every input the
same event, down to the type of each value and the set of fields given, or the same error.

The reference is `EVENT_ADAPTER.validate_json`, which is also the fallback; a fast path that
accepted something pydantic rejects, or built a different event, fails the differential test.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from contract_corpus import CORPUS as CONTRACT_CORPUS
from pydantic import ValidationError

from streamrec.contract import events
from streamrec.contract.events import (
    EVENT_ADAPTER,
    MAX_CONTEXT_FIELDS,
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    AnyEvent,
    ClickEvent,
    PurchaseEvent,
    RatingEvent,
    decode_event,
)
from streamrec.contract.timestamps import END_EPOCH_MS, MIN_EPOCH_MS

Outcome = tuple[Any, ...]


class Raw(str):
    """JSON text written into a document as it is (number spellings, NaN, deep nesting)."""


def render(pairs: list[tuple[str, Any]], *, ascii: bool = True, sep: str = ",") -> str:
    """A JSON object from key/value pairs; keys may repeat (json.dumps cannot write that)."""
    return "{" + sep.join(f"{dump(k, ascii)}:{dump(v, ascii, sep)}" for k, v in pairs) + "}"


def dump(value: Any, ascii: bool, sep: str = ",") -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return render(list(value.items()), ascii=ascii, sep=sep)
    if isinstance(value, list):
        return "[" + sep.join(dump(v, ascii, sep) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii)


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


def outcome(decode: Callable[[bytes | str], AnyEvent], data: bytes | str) -> Outcome:
    """Everything a caller could observe: the class, every value with its type and repr (so 1,
    1.0, True and -0.0 differ), field order, the fields set; or the full pydantic error."""
    try:
        event = decode(data)
    except ValidationError as exc:
        errors = [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_url=False)]
        return ("error", errors, str(exc))
    values = event.__dict__
    return (
        "event",
        type(event),
        repr(values),
        [(k, type(v)) for k, v in values.items()],
        [(k, type(v)) for k, v in (values["context"] or {}).items()],
        type(event.__pydantic_fields_set__),
        sorted(event.model_fields_set),
        event.__pydantic_extra__,
        event.__pydantic_private__,
        event.model_dump_json(),
    )


def assert_same(data: bytes | str) -> Outcome:
    expected = outcome(EVENT_ADAPTER.validate_json, data)
    actual = outcome(decode_event, data)
    assert actual == expected, data
    if expected[0] == "event":
        assert decode_event(data) == EVENT_ADAPTER.validate_json(data)
    return expected


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[bytes | str]:
    """The inputs `decode_event` handed to pydantic, through its fallback seam."""
    seen: list[bytes | str] = []
    validate = events._validate_json

    def counting(data: bytes | str) -> AnyEvent:
        seen.append(data)
        return validate(data)

    monkeypatch.setattr(events, "_validate_json", counting)
    return seen


# --- hand-written edge cases ---------------------------------------------------------------------

NOW_MS = 1767225600000
BASE: list[tuple[str, Any]] = [
    ("event_id", "e-1"),
    ("user_id", "u-1"),
    ("item_id", "i-1"),
    ("timestamp", NOW_MS),
]
KINDS: dict[str, list[tuple[str, Any]]] = {
    "click": [("type", "click")],
    "purchase": [("type", "purchase"), ("quantity", 2), ("price", 9.99)],
    "rating": [("type", "rating"), ("rating", 4.0)],
}
DEEP_ARRAY = Raw("[" * 300 + "]" * 300)
DEEP_OBJECT = Raw('{"a":' * 250 + "1" + "}" * 250)


_DROP = object()
"""A field value that means: leave the field out."""


def doc(kind: str = "click", **fields: Any) -> list[tuple[str, Any]]:
    pairs = dict(KINDS[kind] + BASE)
    pairs.update(fields)
    return [(k, v) for k, v in pairs.items() if v is not _DROP]


def edge_cases() -> Iterator[bytes | str]:
    for kind in KINDS:
        yield encode(render(doc(kind)))
        yield render(doc(kind))  # str input
        yield encode(render(doc(kind), sep=" ,\n\t"))
        for name in ("event_id", "user_id", "item_id", "timestamp", "type"):
            yield encode(render(doc(kind, **{name: _DROP})))
    ids = [
        "x",
        "!",
        "~",
        "x" * MAX_ID_LENGTH,
        "x" * (MAX_ID_LENGTH + 1),
        "é" * MAX_ID_LENGTH,
        "x" + "é" * (MAX_ID_LENGTH - 1),
        "x" + "é" * MAX_ID_LENGTH,
        "x" + "\U0001f600" * (MAX_ID_LENGTH - 1),
        "x" + "\U0001f600" * MAX_ID_LENGTH,
        "",
        " ",
        " x",
        "x ",
        "\t\n",
        "\u00a0",
        "\u2003",
        "\u3000",
        "\u3000x",
        "\u1680",
        "\x1c",  # whitespace to Python, not to pydantic's regex
        "\x1cx",
        "\x00",
        "\x7f",
        "\x85",
        "\ud800",
        "x\ud800",
        "\U0001f600",
        7,
        7.5,
        True,
        None,
        [],
        {},
        ["x"],
    ]
    for value in ids:
        for name in ("event_id", "user_id", "item_id", "rec_id"):
            yield encode(render(doc("click", **{name: value}), ascii=False))
            yield encode(render(doc("click", **{name: value}), ascii=True))
        yield render(doc("rating", event_id=value), ascii=False)  # str, lone surrogates too
    numbers: list[Any] = [
        0,
        -1,
        3,
        3.0,
        4.5,
        -0.0,
        1e308,
        -1e308,
        5e-324,
        2**53,
        2**53 + 1,
        -(2**53) - 1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        -(2**63),
        2.0**63,
        -(2.0**63),
        9.223372036854775e18,
        1.8e19,
        NOW_MS + 0.5,
        MIN_EPOCH_MS,  # the epoch-milliseconds range, both ends, as ints and floats
        MIN_EPOCH_MS - 1,
        MIN_EPOCH_MS - 0.5,
        float(MIN_EPOCH_MS),
        END_EPOCH_MS,
        END_EPOCH_MS - 1,
        END_EPOCH_MS - 0.25,
        float(END_EPOCH_MS),
        True,
        False,
        None,
        "4.5",
        "3",
        "",
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00+01:00",
        "2026-01-01T00:00",
        "yesterday",
        Raw("1E2"),
        Raw("1e+2"),
        Raw("-0"),
        Raw("1.0e-400"),
        Raw("1e400"),
        Raw("-1e400"),
        Raw("NaN"),
        Raw("Infinity"),
        Raw("-Infinity"),
        Raw("18446744073709551616"),
        Raw("-9223372036854775809"),
        Raw("123456789012345678901234567890"),
        Raw("9007199254740993"),
        Raw("1" + "0" * 400),
        Raw("-1" + "0" * 400),
        Raw("1" + "0" * 300),
        Raw("9007199254740993.0"),  # halfway between two doubles: ties to even
        Raw("1.00000000000000011102230246251565404236316680908203125"),  # halfway
        Raw("1.00000000000000011102230246251565404236316680908203126"),  # just above
        Raw("2.2250738585072011e-308"),
        Raw("4.9406564584124654e-324"),
        Raw("1.7976931348623157e308"),
        Raw("1.7976931348623159e308"),  # rounds to infinity
        Raw("0.1000000000000000055511151231257827"),
        Raw("4.50000000000000000000000000001"),
        [],
        {},
        [3],
    ]
    for value in numbers:
        yield encode(render(doc("click", timestamp=value)))
        yield encode(render(doc("rating", rating=value)))
        yield encode(render(doc("purchase", price=value)))
        yield encode(render(doc("purchase", quantity=value)))
        yield encode(render(doc("click", context={"v": value})))
        yield encode(render(doc("click", extra=value)))
    for quantity in (1, MAX_QUANTITY, MAX_QUANTITY + 1, 0, -1, 2.0, 2.5):
        yield encode(render(doc("purchase", quantity=quantity)))
    yield encode(render(doc("purchase", quantity=_DROP, price=_DROP)))
    yield encode(render(doc("purchase", price=None)))
    for n in (0, 1, MAX_CONTEXT_FIELDS - 1, MAX_CONTEXT_FIELDS, MAX_CONTEXT_FIELDS + 1):
        context = {f"k{i}": [i, float(i), str(i), i % 2 == 0, None][i % 5] for i in range(n)}
        yield encode(render(doc("click", context=context)))
    mixed = {"s": "x", "i": 1, "f": 1.0, "b": True, "n": None, "z": -0.0, "": "", "é": "ü"}
    yield encode(render(doc("purchase", context=mixed, rec_id="r-1")))
    yield encode(render(doc("click", context=None, rec_id=None)))
    yield encode(render(doc("click", context={"a": {"b": 1}})))
    yield encode(render(doc("click", context={"a": [1]})))
    yield encode(render(doc("click", context=[["a", 1]])))
    yield encode(render(doc("click", context="a=1")))
    for kind in ("like", "Click", " click", "click ", "", 1, None, True, ["click"], {"k": 1}):
        yield encode(render(doc("click", type=kind)))
    # Extra fields, and what orjson and pydantic's parser disagree on.
    yield encode(render(doc("click", new_field=[1], meta={"a": {"b": [None]}}, rating=4)))
    yield encode(render(doc("click", x=DEEP_ARRAY)))
    yield encode(render(doc("click", x=DEEP_OBJECT)))
    yield encode(render(doc("click", x=Raw("[" * 150 + "]" * 150))))
    # The deepest nesting that fits in _SHALLOW_LENGTH, where the fast path counts no brackets:
    # pydantic's parser must accept it too.
    short = render(doc("click", x=Raw("")))
    depth = (events._SHALLOW_LENGTH - len(short)) // 2
    deepest_short = encode(render(doc("click", x=Raw("[" * depth + "]" * depth))))
    assert len(deepest_short) == events._SHALLOW_LENGTH - (events._SHALLOW_LENGTH - len(short)) % 2
    yield deepest_short
    yield encode(render(doc("click", context={"pad": "p" * 300}, x=Raw("[" * 20 + "]" * 20))))
    # Duplicated keys: the last value wins in both parsers; a deep first value must not hide.
    click = doc("click")
    yield encode(render([*click, ("type", "rating"), ("rating", 2)]))
    yield encode(render([*click, ("user_id", "")]))
    yield encode(render([("user_id", ""), *click]))
    yield encode(render([("user_id", DEEP_ARRAY), *click]))
    yield encode(render([("x", DEEP_ARRAY), ("x", 1), *click]))
    yield encode(render([("context", DEEP_OBJECT), *click, ("context", {"a": 1})]))
    yield encode(render([*click, ("context", {"a": 1}), ("context", {"a": [1]})]))
    yield encode(render(click)[:-1] + ',"t\\u0079pe":"purchase"}')  # an escaped "type"
    yield encode(render(doc("click", context=Raw('{"a":1,"b":2,"a":"3"}'))))
    many = ",".join(f'"k{i}":{i}' for i in range(MAX_CONTEXT_FIELDS))
    yield encode(render(doc("click", context=Raw("{" + many + ',"k0":"again"}'))))
    yield encode(
        render([(f"x{i}", i) for i in range(40)] + click + [("type", "rating"), ("rating", 5)])
    )
    # Not an object, not JSON, not UTF-8.
    body = encode(render(doc("rating")))
    yield from [b"", b" ", b"null", b"[]", b"[1, 2]", b'"click"', b"1", b"{}", b"{not json"]
    yield from [b"\xff\xfe", b"\xef\xbb\xbf" + body, "\ufeff" + body.decode(), body + b"\x00"]
    yield from [body + b"{}", body[:-1], b"[" + body + b"]", body + b"\n", b"\n " + body]
    yield from [body.replace(b"u-1", b"u-\xff"), body.replace(b"u-1", b"u-\xed\xa0\x80")]
    yield from [body.replace(b"u-1", b"u-\x01"), body.replace(b"u-1", b"u-\\x")]
    # Every example and counter-example of the contract: strings, bools and nulls for numbers,
    # integral floats, RFC 3339 edge cases, epoch bounds (tests/contract_corpus.py).
    for case in CONTRACT_CORPUS:
        yield case.data


CASES = list(edge_cases())


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
def test_edge_case_decodes_as_pydantic_does(data: bytes | str) -> None:
    assert_same(data)


def test_parser_disagreements_are_left_to_pydantic() -> None:
    """Inputs orjson reads differently from pydantic's parser: each must end as pydantic says."""
    click = doc("click")
    hidden_deep = encode(render([("x", DEEP_ARRAY), ("x", 1), *click]))
    assert events._loads(hidden_deep)["x"] == 1  # orjson accepts it...
    with pytest.raises(ValidationError):  # ...pydantic's parser does not
        decode_event(hidden_deep)
    big = encode(render(doc("click", context={"n": Raw("18446744073709551616")})))
    assert type(events._loads(big)["context"]["n"]) is float  # orjson: a float...
    context = decode_event(big).context
    assert context is not None and type(context["n"]) is int  # pydantic: an int
    for literal in ("NaN", "Infinity", "1e400"):
        assert decode_event(encode(render(doc("click", x=Raw(literal))))).type == "click"


# --- seeded random documents ---------------------------------------------------------------------

FIELDS = ["event_id", "user_id", "item_id", "timestamp", "type", "rating", "quantity", "price"]
FIELDS += ["rec_id", "context"]
TRICKY_STRINGS = ["", " ", "\u2003", "\x1c", "x" * 257, "é" * 256, "4.5", "click", "rating"]
TRICKY_STRINGS += ["2026-01-01T00:00:00Z", "2026-01-01T00:00", "\ud800x", "purchase", "u"]
TRICKY_NUMBERS: list[Any] = [True, False, None, 0, -0.0, 1, 5, 6, 2**53 + 1, 2**63, 2**64 - 1]
TRICKY_NUMBERS += [Raw("18446744073709551616"), Raw("-0"), Raw("1E400"), Raw("NaN"), 1e308]
TRICKY_NUMBERS += [2.0**63, 9.2e18, 1_000_000, 1_000_001, NOW_MS, NOW_MS / 1000]
TRICKY_CONTAINERS: list[Any] = [[], {}, [1], {"a": 1}, {"a": {"b": 1}}, DEEP_ARRAY, DEEP_OBJECT]


def random_float_text(rng: random.Random) -> Raw:
    """Float literals in many spellings, with more digits than a double holds: both parsers must
    round them to the same double."""
    value = rng.random() * 10.0 ** rng.randint(-30, 30) * rng.choice([1, -1])
    form = rng.choice(["%r", "%.17g", "%.25g", "%.3e", "%.40f", "%E"])
    text = form % value
    if "." not in text and "e" not in text.lower() and "n" not in text.lower():
        text += ".0"
    return Raw(text)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if pick < 0.25:
        return rng.choice(TRICKY_STRINGS)
    if pick < 0.45:
        return rng.choice(TRICKY_NUMBERS)
    if pick < 0.6:
        return random_float_text(rng)
    if pick < 0.7:
        return rng.randint(-(2**70), 2**70) if rng.random() < 0.3 else rng.randint(-9, 9)
    if pick < 0.8 and depth < 2:
        return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}
    if pick < 0.85 and depth < 2:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if pick < 0.9:
        return rng.choice(TRICKY_CONTAINERS)
    return "".join(rng.choice('ab \t\u00a0\u3000é😀\\"/') for _ in range(rng.randint(0, 6)))


def random_context(rng: random.Random) -> Any:
    n = rng.choice([0, 1, 3, MAX_CONTEXT_FIELDS, MAX_CONTEXT_FIELDS + 1])
    scalars: list[Any] = ["x", "", 1, -7, 0.5, -0.0, True, False, None, 2**64 - 1]
    context = {f"c{i}": rng.choice(scalars) for i in range(n)}
    if context and rng.random() < 0.3:
        context[rng.choice(list(context))] = random_value(rng)
    return context


def random_document(rng: random.Random) -> bytes | str:
    kind = rng.choice(list(KINDS))
    pairs = doc(
        kind,
        event_id=f"e-{rng.randrange(10**6)}",
        user_id=str(rng.randrange(1000)),
        item_id=rng.choice([str(rng.randrange(2000)), "item é😀", "x" * MAX_ID_LENGTH]),
        timestamp=rng.choice([NOW_MS + rng.randrange(-(10**9), 10**9), random_float_text(rng)]),
    )
    if kind == "rating":
        pairs = [(k, rng.choice([4.0, 3, 0.5, 2.5]) if k == "rating" else v) for k, v in pairs]
    if rng.random() < 0.5:
        pairs.append(("rec_id", rng.choice([f"r-{rng.randrange(99)}", None])))
    if rng.random() < 0.4:
        pairs.append(("context", random_context(rng)))
    if kind == "purchase" and rng.random() < 0.5:
        pairs = [(k, v) for k, v in pairs if k not in ("quantity", "price")]
        if rng.random() < 0.5:
            pairs.append(("price", rng.choice([None, 0, 12, random_float_text(rng)])))
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        mutation = rng.random()
        if mutation < 0.35:  # a field gets a tricky value
            name = rng.choice(FIELDS)
            pairs = [(k, v) for k, v in pairs if k != name] + [(name, random_value(rng))]
        elif mutation < 0.5 and pairs:  # a field goes missing
            pairs.pop(rng.randrange(len(pairs)))
        elif mutation < 0.65:  # a duplicated key, before or after the original
            pair = (rng.choice(FIELDS), random_value(rng))
            pairs.insert(rng.choice([0, len(pairs)]), pair)
        elif mutation < 0.8:  # an extra field
            pairs.insert(rng.randrange(len(pairs) + 1), (f"x{rng.randrange(9)}", random_value(rng)))
        elif mutation < 0.9:
            pairs.append(("context", random_context(rng)))
        else:
            pairs.append(("type", rng.choice(["like", "Rating", "click", "purchase", 1, None])))
    data = encode(render(pairs, ascii=rng.random() < 0.5, sep=rng.choice([",", ", ", ",\n"])))
    if rng.random() < 0.1:  # damage the bytes
        at = rng.randrange(len(data) + 1)
        damage = rng.choice([b"", b"\xff", b"\x00", b"{", b"]", b",", b'"', b"\\", b" ", b"0"])
        data = data[:at] + damage + data[at + rng.randint(0, 2) :]
    if rng.random() < 0.02:
        data = rng.choice([b"\xef\xbb\xbf" + data, b"[" + data + b"]", data + b"null"])
    if rng.random() < 0.2:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return data
    return data


def test_random_documents_decode_as_pydantic_does() -> None:
    rng = random.Random(20260101)
    kinds: dict[str, int] = {"event": 0, "error": 0}
    for _ in range(12_000):
        kinds[assert_same(random_document(rng))[0]] += 1
    # The generator must exercise both sides, or the test proves little.
    assert kinds["event"] > 3000 and kinds["error"] > 3000, kinds


def test_random_documents_mostly_take_the_fast_path(fallbacks: list[bytes | str]) -> None:
    """A guard against a fast path that quietly accepts nothing (the differential test would
    still pass): most unmutated valid documents must not fall back."""
    rng = random.Random(7)
    fast = 0
    for _ in range(2000):
        data = random_document(rng)
        before = len(fallbacks)
        try:
            decode_event(data)
        except ValidationError:
            continue
        fast += len(fallbacks) == before
    assert fast > 600, fast


# --- the fast path is taken, and builds real events ----------------------------------------------

ORDINARY = [
    b'{"event_id":"ml-1","type":"rating","user_id":"196","item_id":"242",'
    b'"timestamp":881250949000,"rating":3.0}',
    b'{"event_id":"ml-2","type":"rating","user_id":"196","item_id":"242",'
    b'"timestamp":881250949000,"rating":4}',
    b'{"event_id":"c-1","type":"click","user_id":"u-9","item_id":"i-7","timestamp":1767225600000,'
    b'"rec_id":"r-3","context":{"page":"home","slot":2,"score":0.5,"ab":true,"ref":null}}',
    b'{"event_id":"p-1","type":"purchase","user_id":"u-9","item_id":"i-7",'
    b'"timestamp":1767225600000.5,"rec_id":"r-3","quantity":2,"price":19.99}',
    b'{"event_id":"p-2","type":"purchase","user_id":"u-9","item_id":"i-7",'
    b'"timestamp":1767225600000,"price":null,"rec_id":null,"context":null}',
    '{"type":"click","event_id":"x-é","user_id":"u","item_id":"i 😀","timestamp":1767225600000,'
    '"schema":2,"meta":{"src":["web"]}}',
]


@pytest.mark.parametrize("data", ORDINARY)
def test_ordinary_events_take_the_fast_path(data: bytes | str, fallbacks: list[object]) -> None:
    fast = decode_event(data)
    assert fallbacks == []
    assert outcome(lambda d: fast, data) == outcome(EVENT_ADAPTER.validate_json, data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"event_id":"1","type":"click","user_id":"u","item_id":"i",'
        b'"timestamp":"2026-01-01T00:00:00Z"}',
        b'{"event_id":"1","type":"click","user_id":"u","item_id":"i",'
        b'"timestamp":"2026-01-01t00:00:00.123456789z"}',
        b'{"event_id":"1","type":"rating","user_id":"u","item_id":"i","timestamp":1,'
        b'"rating":9007199254740993}',
        b'{"event_id":"\\u00a0x","type":"click","user_id":"u","item_id":"i","timestamp":1}',
        b'{"event_id":"1","type":"purchase","user_id":"u","item_id":"i","timestamp":1,"quantity":2.0}',
    ],
)
def test_unusual_valid_events_fall_back_to_pydantic(data: bytes, fallbacks: list[object]) -> None:
    assert decode_event(data) == EVENT_ADAPTER.validate_json(data)
    assert fallbacks == [data]


def test_errors_come_from_pydantic(fallbacks: list[object]) -> None:
    data = b'{"event_id":"","type":"click","user_id":"u","item_id":"i","timestamp":1}'
    with pytest.raises(ValidationError) as raised:
        decode_event(data)
    assert fallbacks == [data]
    assert raised.value.errors()[0]["type"] == "string_too_short"


def test_fast_events_are_real_pydantic_instances() -> None:
    """Built without model_construct: the slots it fills must be all there are, and the instances
    must behave like validated ones (pickle, copy, hash, dump)."""
    for cls in (ClickEvent, PurchaseEvent, RatingEvent):
        slots = {s for klass in cls.__mro__ for s in klass.__dict__.get("__slots__", ())}
        assert slots == set(events._FAST_SLOTS)
    for data in ORDINARY:
        fast, slow = events._decode_fast(data), EVENT_ADAPTER.validate_json(data)
        assert fast is not None
        assert fast.__getstate__() == slow.__getstate__()
        assert pickle.loads(pickle.dumps(fast)) == slow
        assert fast.model_dump() == slow.model_dump()
        assert repr(fast) == repr(slow)
        if fast.context is None:
            assert hash(fast) == hash(slow)
        copied = fast.model_copy(update={"item_id": "other"})
        assert copied.item_id == "other" and fast.item_id == slow.item_id
        assert fast.model_fields_set == slow.model_fields_set
        with pytest.raises(ValidationError):
            fast.user_id = "x"  # type: ignore[misc]


def test_fast_path_knows_every_field() -> None:
    """The fast path writes each class's __dict__ in this order; a field added to a model must be
    added there too (the differential tests fail as well, less readably)."""
    common = ["event_id", "user_id", "item_id", "timestamp", "rec_id", "context", "type"]
    assert list(ClickEvent.model_fields) == common
    assert list(PurchaseEvent.model_fields) == [*common, "quantity", "price"]
    assert list(RatingEvent.model_fields) == [*common, "rating"]
