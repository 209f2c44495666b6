"""Event timestamps: RFC 3339 `date-time` text or epoch milliseconds → epoch seconds (float).

`datetime.fromisoformat` reads much more of ISO 8601 than RFC 3339 allows (a space for `T`, no
seconds, week dates, `20260101T000000`, commas, offsets with seconds): an event schema that says
`"format": "date-time"` must not quietly accept those, or a producer tested against the schema
and one tested against the service see different contracts. So the grammar of RFC 3339 §5.6 is
written out here, as JSON Schema validators check it (the `T` and `Z` may be lower case, §5.6
NOTE; any number of fraction digits; offsets up to ±23:59).

Two limits that jsonschema's `date-time` check (rfc3339-validator) shares with Python's datetime:
second 60 (a leap second) and year 0000 are rejected.

>>> to_epoch_seconds("2026-01-01T01:00:00+01:00"), to_epoch_seconds(1767225600000)
(1767225600.0, 1767225600.0)
>>> parse_rfc3339("2026-01-01 00:00:00Z") is None
True
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DATE_TIME = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(\d\d)[Tt]([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.(\d+))?"
    r"(?:[Zz]|([+-])([01]\d|2[0-3]):([0-5]\d))",
    re.ASCII,
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def parse_rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 date-time, or None if `text` is not one.

    Digits below the microsecond are dropped, as `datetime` does: the result is the same float
    `datetime.fromisoformat(text).timestamp()` gives for every text both accept.
    """
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_hour, off_minute = match.groups()
    y, m, d = int(year), int(month), int(day)
    if y == 0 or not 1 <= d <= calendar.monthrange(y, m)[1]:
        return None
    seconds = (date(y, m, d).toordinal() - _EPOCH_ORDINAL) * 86400
    seconds += int(hour) * 3600 + int(minute) * 60 + int(second)
    if sign is not None:
        offset = int(off_hour) * 3600 + int(off_minute) * 60
        seconds += -offset if sign == "+" else offset
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    # One division of exact integers, as timedelta.total_seconds() does: correctly rounded.
    return (seconds * 1_000_000 + micros) / 1_000_000


MIN_EPOCH_MS = -62_135_596_800_000
"""0001-01-01T00:00:00Z: epoch milliseconds cover the instants RFC 3339's 4-digit years do."""
END_EPOCH_MS = 253_402_300_800_000
"""10000-01-01T00:00:00Z, excluded. A number beyond is a unit bug (micro- or nanoseconds), not a
time, and is rejected by both the schema and the model."""


def to_epoch_seconds(value: Any) -> float:
    """RFC 3339 string or epoch milliseconds → epoch seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be RFC 3339 text or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        # Compared before any conversion: a huge int must be an error, not an OverflowError.
        if not MIN_EPOCH_MS <= value < END_EPOCH_MS:  # NaN fails too
            raise ValueError(
                "epoch milliseconds must be within years 0001-9999"
                " (seconds, microseconds or nanoseconds sent?)"
            )
        return float(value) / 1000.0
    if isinstance(value, str):
        seconds = parse_rfc3339(value)
        if seconds is None:
            raise ValueError(
                "timestamp must be epoch milliseconds or RFC 3339 text such as"
                " '2026-01-01T12:00:00Z' or '2026-01-01T13:00:00.5+01:00'"
            )
        return seconds
    if isinstance(value, datetime):  # Python callers only: JSON has no datetimes
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    raise ValueError("timestamp must be RFC 3339 text or epoch milliseconds")


Timestamp = Annotated[
    float,
    BeforeValidator(to_epoch_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {
                    "type": "number",
                    "minimum": MIN_EPOCH_MS,
                    "exclusiveMaximum": END_EPOCH_MS,
                    "description": "epoch milliseconds (years 0001-9999)",
                },
            ],
            "description": "RFC 3339 date-time (e.g. 2026-01-01T12:00:00Z), or epoch milliseconds",
        }
    ),
]
