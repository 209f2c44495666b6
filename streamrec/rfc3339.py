"""RFC 3339 `date-time` text → epoch seconds, accepting exactly the RFC's grammar.

`datetime.fromisoformat` reads much more of ISO 8601 than RFC 3339 allows (a space for `T`, no
seconds, week dates, `20260101T000000`, commas, offsets with seconds): an event schema that says
`"format": "date-time"` must not quietly accept those, or a producer tested against the schema
and one tested against the service see different contracts. So the grammar of RFC 3339 §5.6 is
written out here, as JSON Schema validators check it (the `T` and `Z` may be lower case, §5.6
NOTE; any number of fraction digits; offsets up to ±23:59).

Two limits that every JSON Schema validator shares with Python: second 60 (a leap second) and
year 0000 are rejected.

>>> parse_rfc3339("2026-01-01T01:00:00+01:00")
1767225600.0
>>> parse_rfc3339("2026-01-01 00:00:00Z") is None
True
"""

from __future__ import annotations

import calendar
import re
from datetime import date

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
