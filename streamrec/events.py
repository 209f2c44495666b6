"""The contract: events that come in, recommendations that go out.

Every message on the wire is one of these pydantic models serialized as JSON. `schemas/` holds the
JSON Schema generated from them (`streamrec schemas --out schemas/`); a test keeps the two equal.

Timestamps arrive as RFC 3339 strings or epoch milliseconds and are held as float epoch *seconds*,
so arithmetic on them (decay, reward windows, clock guards) needs no parsing later.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
)

MAX_ID_LENGTH = 256
"""Ids longer than this are rejected: they are either bugs or attacks, and they bloat the model."""

MAX_CONTEXT_FIELDS = 32


def _parse_timestamp(value: Any) -> float:
    """RFC 3339 string or epoch milliseconds → epoch seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be RFC 3339 text or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        try:
            seconds = float(value) / 1000.0
        except OverflowError:  # an int beyond float range must be an error, not a crash
            raise ValueError("timestamp is out of range") from None
        if not math.isfinite(seconds):
            raise ValueError("timestamp must be finite")
        return seconds
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("timestamp must be RFC 3339 text or epoch milliseconds") from None
        if parsed.tzinfo is None:
            raise ValueError("RFC 3339 timestamp needs a UTC offset (e.g. 'Z' or '+02:00')")
        return parsed.timestamp()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    raise ValueError("timestamp must be RFC 3339 text or epoch milliseconds")


Timestamp = Annotated[
    float,
    BeforeValidator(_parse_timestamp),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "description": "epoch milliseconds"},
            ],
            "description": "RFC 3339 date-time with offset, or epoch milliseconds",
        }
    ),
]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"\S")]
ContextValue = str | int | float | bool | None


class _EventBase(BaseModel):
    # Producers evolve: unknown fields are ignored, not errors. Events are values: frozen.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

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


class ClickEvent(_EventBase):
    type: Literal["click"]


class PurchaseEvent(_EventBase):
    type: Literal["purchase"]
    quantity: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    price: Annotated[float, Field(ge=0)] | None = None


class RatingEvent(_EventBase):
    type: Literal["rating"]
    rating: float = Field(description="Inside the configured scale (default 1-5).")


Event = Annotated[ClickEvent | PurchaseEvent | RatingEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[ClickEvent | PurchaseEvent | RatingEvent] = TypeAdapter(Event)
AnyEvent = ClickEvent | PurchaseEvent | RatingEvent


Source = Literal["model", "popular", "explore", "new"]


class RecommendedItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float
    rank: int = Field(ge=1)
    source: Source = Field(description="How the item got into the list.")
    propensity: float = Field(
        ge=0.0,
        le=1.0,
        description="Probability that the policy would have shown this item in this slot.",
    )
    reason: str = Field(description="Short human-readable explanation.")


class Recommendation(BaseModel):
    """One refreshed top-K list. Key = user_id; the latest message per key wins."""

    model_config = ConfigDict(frozen=True)

    rec_id: str
    user_id: str
    generated_at: datetime
    model_version: int = Field(ge=0, description="Events learned so far by the model.")
    items: list[RecommendedItem]


def decode_event(data: bytes | str) -> AnyEvent:
    """Parse and validate one JSON event; raises pydantic.ValidationError on bad input."""
    return EVENT_ADAPTER.validate_json(data)


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema files that `schemas/` must contain, by file name."""
    return {
        "event.schema.json": EVENT_ADAPTER.json_schema(),
        "recommendation.schema.json": Recommendation.model_json_schema(),
    }
