"""MovieLens ratings → a time-ordered streamrec event log; MovieLens movies → a catalog log.

Reads `u.data` (ML-100K: tab-separated user, item, rating, epoch seconds) and `ratings.csv`
(ML-latest and ML-20M/25M: header `userId,movieId,rating,timestamp`, half-star scale 0.5-5).
Rows are stably sorted by time, so ties keep file order and the log is reproducible.
"""

from __future__ import annotations

import csv
import re
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


ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
"""ML-100K's `u.genre`, in column order of `u.item`'s 19 genre flags."""

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def is_catalog_file(path: Path) -> bool:
    """True for a MovieLens item file: ML-100K `u.item` or ml-latest `movies.csv`."""
    if path.name == "u.item":
        return True
    try:
        with path.open("rb") as handle:
            first = handle.readline()
    except OSError:
        return False
    return first.lower().startswith(b"movieid,title")


def read_catalog(path: Path) -> list[dict[str, object]]:
    """Catalog records (`type: item`) of a MovieLens item file, in file order: title, genres as
    categories, the release year (from the title) as attribute `year`."""
    records: list[dict[str, object]] = []
    try:
        if path.name == "u.item" or not is_catalog_file(path):
            # ML-100K: pipe-separated, Latin-1 (titles such as "Café au lait").
            with path.open(newline="", encoding="latin-1") as handle:
                for number, fields in enumerate(csv.reader(handle, delimiter="|"), start=1):
                    if not fields:
                        continue
                    if len(fields) != 5 + len(ML100K_GENRES):
                        raise StreamrecError(
                            f"{path}:{number}: expected {5 + len(ML100K_GENRES)} |-separated "
                            f"fields (u.item), got {len(fields)}"
                        )
                    flags = zip(ML100K_GENRES, fields[5:], strict=True)
                    genres = [g for g, flag in flags if flag == "1" and g != "unknown"]
                    records.append(_item(fields[0], fields[1], genres))
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                next(reader)
                for number, fields in enumerate(reader, start=2):
                    if not fields:
                        continue
                    if len(fields) != 3:
                        raise StreamrecError(
                            f"{path}:{number}: expected movieId,title,genres; got {fields!r}"
                        )
                    genres = [g for g in fields[2].split("|") if g and g != "(no genres listed)"]
                    records.append(_item(fields[0], fields[1], genres))
    except OSError as exc:
        raise StreamrecError(f"cannot read {path}: {exc.strerror}") from exc
    return records


def _item(item_id: str, title: str, genres: list[str]) -> dict[str, object]:
    record: dict[str, object] = {"type": "item", "item_id": item_id, "title": title.strip()}
    if genres:
        record["categories"] = genres
    year = _YEAR.search(title)
    if year:
        record["attributes"] = {"year": float(year.group(1))}
    return record


def convert_catalog(path: Path, out: Path) -> int:
    """Write a MovieLens item file as a catalog log; returns the number of records written."""
    records = read_catalog(path)
    with out.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps(record) + b"\n")
    return len(records)
