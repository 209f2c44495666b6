"""The contract: events that come in, recommendations that go out.

Every message on the wire is one of these pydantic models serialized as JSON. `schemas/` holds the
JSON Schema generated from them (`streamrec schemas --out schemas/`); a test keeps the two equal.

Timestamps arrive as RFC 3339 strings or epoch milliseconds (`timestamps.py`) and are held as float
epoch *seconds*, so arithmetic on them (decay, reward windows, clock guards) needs no parsing later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
)

from streamrec.contract.timestamps import END_EPOCH_MS, MIN_EPOCH_MS, Timestamp

MAX_ID_LENGTH = 256
"""Ids longer than this are rejected: they are either bugs or attacks, and they bloat the model."""

MAX_CONTEXT_FIELDS = 32
MAX_QUANTITY = 1_000_000


def _json_integer(value: Any) -> Any:
    """JSON has one number type: JSON Schema's `integer` is any number with a zero fraction, so
    `2.0` is the integer 2 (as it is to every schema validator); other floats, strings and
    booleans are left to the strict int check, which refuses them."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


_NOT_WHITESPACE = r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
"""A character that is not Unicode White_Space, spelled out: `\\S` differs between the regex
dialects of pydantic (Rust: White_Space), Python (adds U+001C-U+001F) and ECMA-262 (adds U+FEFF,
drops U+0085), so the schema names the exact set pydantic enforces, in a syntax all three read."""
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=_NOT_WHITESPACE)]
ContextValue = str | int | float | bool | None


class _EventBase(BaseModel):
    # Producers evolve: unknown fields are ignored, not errors. Events are values: frozen.
    # Strict: a value has the JSON type the schema names ("4" is not a number, true is not 1).
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, strict=True)

    event_id: Id
    user_id: Id
    item_id: Id
    timestamp: Timestamp
    rec_id: Id | None = Field(
        default=None, description="The recommendation list (rec_id) this event answers, if any."
    )
    context: dict[str, ContextValue] | None = Field(
        default=None,
        max_length=MAX_CONTEXT_FIELDS,
        description="A small flat object of features (strings, numbers, booleans).",
    )


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


_EXAMPLE = {"event_id": "e-1", "user_id": "u7", "item_id": "m42"}


class ClickEvent(_EventBase):
    model_config = _examples(
        {
            **_EXAMPLE,
            "type": "click",
            "timestamp": "2026-01-01T12:00:00Z",
            "rec_id": "r-3e8",
            "context": {"page": "home", "slot": 2, "ab": True},
        }
    )

    type: Literal["click"]


class PurchaseEvent(_EventBase):
    model_config = _examples(
        {**_EXAMPLE, "type": "purchase", "timestamp": 1767268800000, "quantity": 2, "price": 19.99}
    )

    type: Literal["purchase"]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), BeforeValidator(_json_integer)] = 1
    price: Annotated[float, Field(ge=0)] | None = None


class RatingEvent(_EventBase):
    model_config = _examples(
        {**_EXAMPLE, "type": "rating", "timestamp": "2026-01-01T13:00:00.25+01:00", "rating": 4.5},
        {**_EXAMPLE, "type": "rating", "timestamp": 1767268800000, "rating": 4},
    )

    type: Literal["rating"]
    rating: float = Field(description="A JSON number inside the configured scale (default 1-5).")


Event = Annotated[ClickEvent | PurchaseEvent | RatingEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[ClickEvent | PurchaseEvent | RatingEvent] = TypeAdapter(Event)
AnyEvent = ClickEvent | PurchaseEvent | RatingEvent


Source = Literal["model", "popular", "explore", "new", "pinned"]


# Recommendations are plain dataclasses, not pydantic models: the pipeline builds ~11 objects per
# refreshed user, which as models cost ~3x more even through `model_construct`. pydantic still
# defines their JSON (RECOMMENDATION_ADAPTER: schema, validation, serialization).


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    item_id: str
    score: float
    rank: Annotated[int, Field(ge=1)]
    source: Annotated[Source, Field(description="How the item got into the list.")]
    propensity: Annotated[
        float,
        Field(
            ge=0.0,
            le=1.0,
            description="Probability that the policy would have shown this item in this slot.",
        ),
    ]
    reason: Annotated[str, Field(description="Short human-readable explanation.")]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One refreshed top-K list. Key = user_id; the latest message per key wins."""

    rec_id: str
    user_id: str
    generated_at: datetime
    model_version: Annotated[int, Field(ge=0, description="Events learned so far by the model.")]
    items: list[RecommendedItem]


RECOMMENDATION_ADAPTER: TypeAdapter[Recommendation] = TypeAdapter(Recommendation)


def encode_recommendation(recommendation: Recommendation) -> bytes:
    """The JSON message published for one list (what `schemas/recommendation.schema.json`
    describes)."""
    return RECOMMENDATION_ADAPTER.dump_json(recommendation)


def decode_recommendation(data: bytes | str) -> Recommendation:
    """Parse and validate a published list (consumers, tests); pydantic.ValidationError if bad."""
    return RECOMMENDATION_ADAPTER.validate_json(data)


_validate_json = EVENT_ADAPTER.validate_json
"""The full pydantic decode: the reference the fast path must agree with, and the fallback that
produces every error. A module global so a test can count how often `decode_event` falls back."""


def decode_event(data: bytes | str) -> AnyEvent:
    """Parse and validate one JSON event; raises pydantic.ValidationError on bad input.

    Decoding is the largest per-event cost of the hot loop, so ordinary events take a fast path
    (`_decode_fast`) that accepts only inputs for which the result is provably the one pydantic
    returns; everything else, and every error, goes through pydantic unchanged.
    """
    event = _decode_fast(data)
    if event is None:
        event = _validate_json(data)
    return event


# --- The fast path -------------------------------------------------------------------------------
#
# orjson parses; hand-written checks then accept a conservative subset of what the pydantic models
# accept, and for that subset build the same result. What makes the two parsers agree on a document:
# - Both reject what is not RFC 8259 JSON (orjson also rejects NaN, Infinity and numbers that
#   overflow to infinity, which pydantic's parser accepts: those fall back), and both keep the
#   *last* value of a duplicated key, at the top level and inside `context`.
# - pydantic's parser refuses nesting deeper than 200 levels, orjson allows 1024. A deep value can
#   hide in an ignored field or under a key that a later duplicate overwrites, so the fast path
#   takes only documents shorter than _SHALLOW_LENGTH (depth d needs 2*d brackets) or with at most
#   _MAX_BRACKETS opening brackets.
# - orjson turns integer literals beyond 64 bits into floats; pydantic keeps them as ints. Such a
#   float has magnitude >= 2**63, so the fast path accepts floats only below _FLOAT_LIMIT: every
#   float it accepts was written as a float literal, parsed by both to the nearest double.
# Ids are taken when their first char is printable ASCII other than space, which surely matches
# _NOT_WHITESPACE (other ids are left to pydantic); lengths count code points in both.

_SHALLOW_LENGTH = 256
_MAX_BRACKETS = 16
_FLOAT_LIMIT = 2.0**63
_INT_AS_FLOAT_LIMIT = 2**53
"""An int below this in magnitude converts to float exactly, whichever code converts it (pydantic
rounds larger ones as Python does too, as far as the tests see; the bound keeps it certain)."""

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_ID_FIRST_CHARS = frozenset(map(chr, range(ord("!"), ord("~") + 1)))
_NOT_FLOAT_SCALARS = frozenset({str, int, bool, type(None)})
_REQUIRED_FIELDS = frozenset({"event_id", "user_id", "item_id", "timestamp", "type"})
_RATING_FIELDS = _REQUIRED_FIELDS | {"rating"}

# model_construct costs more than pydantic's validation of a small event, so the fast path sets the
# four slots that BaseModel instances carry, as model_construct and unpickling do.
# tests/test_fast_decode.py checks that these are all of BaseModel's slots and that the results
# equal validated events in __dict__, model_fields_set and __getstate__.
_FAST_SLOTS = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _decode_fast(data: bytes | str) -> AnyEvent | None:
    """The event pydantic would return for `data`, or None whenever that is not certain.

    Written out inline on purpose: at ~2 us per event every call and attribute lookup shows.
    """
    if type(data) is bytes:
        if len(data) > _SHALLOW_LENGTH and data.count(b"{") + data.count(b"[") > _MAX_BRACKETS:
            return None
    elif type(data) is str:
        if len(data) > _SHALLOW_LENGTH and data.count("{") + data.count("[") > _MAX_BRACKETS:
            return None
    else:
        return None  # bytearray, memoryview, subclasses: pydantic's business
    try:
        obj = _loads(data)
    except _JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    try:
        kind = obj["type"]
        event_id = obj["event_id"]
        user_id = obj["user_id"]
        item_id = obj["item_id"]
        timestamp = obj["timestamp"]
    except KeyError:
        return None
    if not (
        type(event_id) is str
        and len(event_id) <= MAX_ID_LENGTH
        and event_id[:1] in _ID_FIRST_CHARS
        and type(user_id) is str
        and len(user_id) <= MAX_ID_LENGTH
        and user_id[:1] in _ID_FIRST_CHARS
        and type(item_id) is str
        and len(item_id) <= MAX_ID_LENGTH
        and item_id[:1] in _ID_FIRST_CHARS
    ):
        return None
    # _parse_timestamp returns float(value) / 1000.0 for a number in its range; `int / float`
    # converts the int the same way (exactly: the range is far inside 2**53), and a float in the
    # range is below _FLOAT_LIMIT, so it was written as a float literal.
    if not (
        (type(timestamp) is int or type(timestamp) is float)
        and MIN_EPOCH_MS <= timestamp < END_EPOCH_MS
    ):
        return None
    # One dict display per class, in field order (as pydantic fills __dict__): built at full size.
    seconds = timestamp / 1000.0
    values: dict[str, Any]
    cls: type[AnyEvent]
    if kind == "rating":
        rating = obj.get("rating")
        if type(rating) is float:
            if not -_FLOAT_LIMIT < rating < _FLOAT_LIMIT:
                return None
        elif type(rating) is int and -_INT_AS_FLOAT_LIMIT < rating < _INT_AS_FLOAT_LIMIT:
            rating = float(rating)
        else:
            return None
        cls = RatingEvent
        values = {
            "event_id": event_id,
            "user_id": user_id,
            "item_id": item_id,
            "timestamp": seconds,
            "rec_id": None,
            "context": None,
            "type": "rating",
            "rating": rating,
        }
        fields_set = set(_RATING_FIELDS)
    elif kind == "click":
        cls = ClickEvent
        values = {
            "event_id": event_id,
            "user_id": user_id,
            "item_id": item_id,
            "timestamp": seconds,
            "rec_id": None,
            "context": None,
            "type": "click",
        }
        fields_set = set(_REQUIRED_FIELDS)
    elif kind == "purchase":
        cls = PurchaseEvent
        values = {
            "event_id": event_id,
            "user_id": user_id,
            "item_id": item_id,
            "timestamp": seconds,
            "rec_id": None,
            "context": None,
            "type": "purchase",
            "quantity": 1,
            "price": None,
        }
        fields_set = set(_REQUIRED_FIELDS)
        if not _purchase_fields(obj, values, fields_set):
            return None
    else:
        return None
    if "rec_id" in obj:
        rec_id = obj["rec_id"]
        if not (
            rec_id is None
            or (
                type(rec_id) is str
                and len(rec_id) <= MAX_ID_LENGTH
                and rec_id[:1] in _ID_FIRST_CHARS
            )
        ):
            return None
        values["rec_id"] = rec_id
        fields_set.add("rec_id")
    if "context" in obj:
        context = obj["context"]
        if not (context is None or _plain_context(context)):
            return None
        values["context"] = context
        fields_set.add("context")
    event = _new(cls)
    _set_dict(event, values)
    _set_fields_set(event, fields_set)
    _set_extra(event, None)
    _set_private(event, None)
    return event


def _purchase_fields(obj: dict[str, Any], values: dict[str, Any], fields_set: set[str]) -> bool:
    """Sets quantity (int 1..MAX_QUANTITY) and price (float >= 0, or None) when present, as pydantic
    would; False when that is not certain."""
    if "quantity" in obj:
        quantity = obj["quantity"]
        if not (type(quantity) is int and 1 <= quantity <= MAX_QUANTITY):
            return False
        values["quantity"] = quantity
        fields_set.add("quantity")
    if "price" in obj:
        price = obj["price"]
        if type(price) is float:
            if not 0.0 <= price < _FLOAT_LIMIT:  # -0.0 passes ge=0 and stays -0.0
                return False
        elif type(price) is int and 0 <= price < _INT_AS_FLOAT_LIMIT:
            price = float(price)
        elif price is not None:
            return False
        values["price"] = price
        fields_set.add("price")
    return True


def _plain_context(value: object) -> bool:
    """A `context` that pydantic keeps as it is: a dict of at most MAX_CONTEXT_FIELDS entries
    whose values are str, int, bool, None or a float below _FLOAT_LIMIT (its smart union keeps
    each JSON scalar's own type: 1 stays int, 1.0 float, true bool)."""
    if type(value) is not dict or len(value) > MAX_CONTEXT_FIELDS:
        return False
    for item in value.values():
        kind = type(item)
        if kind is float:
            if not -_FLOAT_LIMIT < item < _FLOAT_LIMIT:
                return False
        elif kind not in _NOT_FLOAT_SCALARS:
            return False
    return True
