"""Quality of every model through the production pipeline, on MovieLens (prints; asserts nothing).

    OPENBLAS_NUM_THREADS=1 python bench/quality_ml100k.py [PATH] [--items ITEMS]

PATH is ML-100K `u.data` or an ml-latest `ratings.csv` (default: env STREAMREC_ML100K, else
../shared/data/ml-100k/u.data beside the checkout); ITEMS its movie file (`u.item` or
`movies.csv`, default: the one beside PATH), converted into a catalog (titles, genres) for the
content rows: kNN with the catalog loaded, content similarity off and on. "cold" is Recall@10 of
the positives whose item had at most 5 earlier events. The file is converted with
`streamrec.data.movielens.convert` into two event logs, as `streamrec convert movielens` would:

- rating stream: every rating, `--as rating` → RMSE of the rating predicted before learning it;
- click stream: ratings >= 4 (on 1-5 and on the half-star 0.5-5 scale alike), `--as click` →
  Recall@10 of the top 10 among items seen so far, the user's history excluded, for each click
  whose user is known and whose item is new to them.

Each configuration runs `streamrec.evaluate.replay.replay` — the same pipeline object the Kafka
service runs, with validation, recommendation refresh of every touched user and exploration on —
so the events/s column is the pipeline's throughput, not a bare learning loop. First / second
half: the replay's per-window series with the window set to half the stream, i.e. the model is
evaluated prequentially on each half in one run (the second half is scored after learning the
first).
Settings were chosen on the first half of ML-100K; the second half and other files check them.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from streamrec.data.movielens import convert, convert_catalog, read_ratings
from streamrec.evaluate.replay import ReplayOptions, replay
from streamrec.settings import ModelSettings

DEFAULT_PATH = Path(
    os.environ.get(
        "STREAMREC_ML100K",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data",
    )
)
POSITIVE = 4.0  # ratings >= 4 are the click stream, on 1-5 and 0.5-5 alike


@dataclass(frozen=True)
class Config:
    label: str
    stream: str  # "rating" or "click"
    rating_model: str
    ranker: str
    catalog: bool = False
    content_weight: float | None = None  # None: the setting's default


CONFIGS = [
    # Rating stream: the ranker is the popularity fill alone, so events/s is the rating model's.
    Config("River Baseline (SGD 0.025)", "rating", "river_baseline", "popular"),
    Config("River BiasedMF (docs settings)", "rating", "river_biased_mf", "popular"),
    Config("biased_mf (speed config)", "rating", "biased_mf", "popular"),
    Config("ensemble (default)", "rating", "ensemble", "popular"),
    # Click stream: clicks never train the rating model, so it does not matter which one it is.
    Config("popularity (time-decayed)", "click", "biased_mf", "popular"),
    Config("knn (default)", "click", "biased_mf", "knn"),
    Config("knn + catalog, content off", "click", "biased_mf", "knn", True, 0.0),
    Config("knn + catalog + content", "click", "biased_mf", "knn", True),
]


def run(
    config: Config,
    log: Path,
    n_events: int,
    scale: tuple[float, float],
    catalog: Path | None = None,
) -> dict[str, Any]:
    extra = {} if config.content_weight is None else {"content_weight": config.content_weight}
    settings = ModelSettings(
        rating_model=config.rating_model,
        ranker=config.ranker,
        rating_min=scale[0],
        rating_max=scale[1],
        positive_threshold=POSITIVE,
        **extra,
    )
    options = ReplayOptions(
        k=10,
        window=math.ceil(n_events / 2),
        progress=False,
        catalog=catalog if config.catalog else None,
    )
    started = time.perf_counter()
    report, _ = replay(log, settings, options)
    report["wall_seconds"] = time.perf_counter() - started
    return report


def row(config: Config, report: dict[str, Any]) -> str:
    key = "rmse" if config.stream == "rating" else "recall_at_k"
    halves = [window[key] for window in report["series"]]
    if len(halves) != 2:  # the last window may be empty only if the stream is tiny
        halves = [*halves, math.nan, math.nan][:2]
    values = "  ".join(f"{v:.4f}" for v in (report[key], *halves))
    us_per_event = 1e6 / report["events_per_second"]
    cold = report.get("cold_recall_at_k") if config.stream == "click" else None
    return (
        f"  {config.label:32s} {values}   {report['events_per_second']:8,.0f}   {us_per_event:6.1f}"
        + (f"   {cold:.4f} ({report['evaluated_cold_positive']:,})" if cold is not None else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, nargs="?", default=DEFAULT_PATH)
    parser.add_argument(
        "--items", type=Path, default=None, help="u.item or movies.csv (default: beside PATH)"
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only these rating models / rankers"
    )
    args = parser.parse_args()
    items = args.items
    if items is None:
        beside = [args.path.with_name(n) for n in ("u.item", "movies.csv")]
        items = next((f for f in beside if f.is_file()), None)
    ratings = [r[2] for r in read_ratings(args.path)]
    scale = (min(ratings), max(ratings))
    print(f"{args.path}: {len(ratings):,} ratings, scale {scale[0]:g}-{scale[1]:g}")
    with tempfile.TemporaryDirectory() as tmp:
        logs = {
            "rating": Path(tmp, "ratings.jsonl"),
            "click": Path(tmp, "clicks.jsonl"),
        }
        sizes = {
            "rating": convert(args.path, logs["rating"], as_type="rating"),
            "click": convert(args.path, logs["click"], as_type="click", min_rating=POSITIVE),
        }
        catalog = Path(tmp, "catalog.jsonl") if items is not None else None
        if items is not None and catalog is not None:
            print(f"{items}: {convert_catalog(items, catalog):,} catalog items")
        for stream, title in (
            ("rating", "RMSE, rating stream"),
            ("click", f"Recall@10, ratings >= {POSITIVE:g} as clicks"),
        ):
            print(
                f"\n{title} ({sizes[stream]:,} events)\n"
                f"  {'model':32s} whole   1st half 2nd half   events/s   µs/event"
                + ("   cold (positives)" if stream == "click" else "")
            )
            for config in CONFIGS:
                if config.stream != stream or (config.catalog and catalog is None):
                    continue
                chosen = config.ranker if stream == "click" else config.rating_model
                if args.only and chosen not in args.only:
                    continue
                report = run(config, logs[stream], sizes[stream], scale, catalog)
                print(row(config, report), flush=True)
    print(
        "\nµs/event: wall time of the whole replay per event (decode, validate, learn, refresh"
        " every touched user at each 1,000-event batch, prequential evaluation)."
    )


if __name__ == "__main__":
    main()
