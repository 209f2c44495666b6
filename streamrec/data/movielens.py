"""MovieLens ratings → a time-ordered streamrec event log.

Reads `u.data` (ML-100K: tab-separated user, item, rating, epoch seconds) and `ratings.csv`
(ML-latest and ML-20M/25M: header `userId,movieId,rating,timestamp`, half-star scale 0.5-5).
Rows are stably sorted by time, so ties keep file order and the log is reproducible.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import orjson

from streamrec.errors import StreamrecError

EventType = Literal["rating", "click", "purchase"]


def read_ratings(path: Path) -> list[tuple[str, str, float, int]]:
    """(user, item, rating, epoch seconds) rows of a MovieLens file, in file order."""
    rows: list[tuple[str, str, float, int]] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            first = handle.readline()
            handle.seek(0)
            if "\t" in first:
                reader: Iterator[list[str]] = csv.reader(handle, delimiter="\t")
            elif first.lower().startswith("userid,"):
                reader = csv.reader(handle)
                next(reader)
            elif "::" in first:  # ML-1M / ML-10M ratings.dat
                reader = (line.rstrip("\n").split("::") for line in handle)
            else:
                reader = csv.reader(handle)
            for number, fields in enumerate(reader, start=1):
                if not fields:
                    continue
                try:
                    user, item, rating, ts = fields[:4]
                    rows.append((user, item, float(rating), int(float(ts))))
                except ValueError:
                    raise StreamrecError(
                        f"{path}:{number}: expected user, item, rating, timestamp; got {fields!r}"
                    ) from None
    except OSError as exc:
        raise StreamrecError(f"cannot read {path}: {exc.strerror}") from exc
    return rows


def convert(
    path: Path, out: Path, *, as_type: EventType = "rating", min_rating: float | None = None
) -> int:
    """Write the event log; returns the number of events written."""
    rows = read_ratings(path)
    order = sorted(range(len(rows)), key=lambda n: rows[n][3])  # stable: ties keep file order
    written = 0
    with out.open("wb") as handle:
        for n in order:
            user, item, rating, ts = rows[n]
            if min_rating is not None and rating < min_rating:
                continue
            event: dict[str, object] = {
                "event_id": f"ml-{n}",
                "type": as_type,
                "user_id": user,
                "item_id": item,
                "timestamp": ts * 1000,
            }
            if as_type == "rating":
                event["rating"] = rating
            handle.write(orjson.dumps(event) + b"\n")
            written += 1
    return written
