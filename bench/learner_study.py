"""Prequential study of the learners on MovieLens ratings (prints; asserts nothing).

    OPENBLAS_NUM_THREADS=1 python bench/learner_study.py /path/to/ml-100k/u.data

Ratings: events in timestamp order, predict (clipped to the scale) then learn, RMSE over every
event, and over the first and second half of the stream (settings were chosen on the first half).
Top-N: ratings >= 4 (of a 1-5 scale) as clicks; for each one whose user is known and whose item is
new to that user, the top 10 among items seen so far, excluding the user's history (candidates,
then popularity), is a hit if it holds the item; then learn.

Reads u.data (tab-separated) or a ratings.csv with a header (userId,movieId,rating,timestamp).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from river import optim, reco

from streamrec.learners import (
    RLSEnsemble,
    SequenceItemKNN,
    make_ranker,
    make_rating_model,
)
from streamrec.learners.base import ItemRanker, RatingModel

Stream = tuple[list[int], list[int], list[float]]


def load(path: Path) -> Stream:
    csv = path.suffix == ".csv"
    raw = np.loadtxt(path, delimiter="," if csv else None, skiprows=1 if csv else 0)
    raw = raw[np.argsort(raw[:, 3], kind="stable")]
    users: dict[int, int] = {}
    items: dict[int, int] = {}
    u = [users.setdefault(int(x), len(users)) for x in raw[:, 0]]
    i = [items.setdefault(int(x), len(items)) for x in raw[:, 1]]
    return u, i, raw[:, 2].astype(float).tolist()


def rmse_parts(pred: np.ndarray, y: np.ndarray) -> str:
    err = (pred - y) ** 2
    half = len(y) // 2
    parts = (err.mean(), err[:half].mean(), err[half:].mean())
    return "  ".join(f"{math.sqrt(v):.4f}" for v in parts)


def prequential(
    model: RatingModel, stream: Stream, scale: tuple[float, float]
) -> tuple[np.ndarray, float, float]:
    users, items, ys = stream
    low, high = scale
    pred = np.empty(len(ys))
    t_predict = t_learn = 0.0
    clock = time.perf_counter
    for k, (u, i, y) in enumerate(zip(users, items, ys, strict=True)):
        t0 = clock()
        p = model.predict_one(u, i)
        t1 = clock()
        model.learn_one(u, i, y)
        t2 = clock()
        t_predict += t1 - t0
        t_learn += t2 - t1
        pred[k] = min(high, max(low, p))
    n = len(ys)
    return pred, t_predict / n * 1e6, t_learn / n * 1e6


def rating_study(stream: Stream, scale: tuple[float, float]) -> None:
    y = np.array(stream[2])
    print(f"RMSE (whole / first half / second half) on {len(y):,} ratings; µs per event")
    models: list[tuple[str, Callable[[], RatingModel]]] = [
        ("River Baseline SGD(0.025)", lambda: reco.Baseline(optimizer=optim.SGD(0.025))),
        (
            "River BiasedMF (docs: 10 factors, SGD 0.025/0.05)",
            lambda: reco.BiasedMF(
                n_factors=10,
                bias_optimizer=optim.SGD(0.025),
                latent_optimizer=optim.SGD(0.05),
                latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
            ),
        ),
        ("biased_mf (DenseBiasedMF)", lambda: make_rating_model("biased_mf")),
    ]
    for name, factory in models:
        pred, tp, tl = prequential(factory(), stream, scale)
        print(f"  {name:52s} {rmse_parts(pred, y)}   predict {tp:5.1f}  learn {tl:6.1f}")

    # The ensemble: members' own prequential predictions are the combiner's features, so one
    # pass reports every member too.
    ensemble = make_rating_model("ensemble", rating_scale=scale)
    assert isinstance(ensemble, RLSEnsemble)
    users, items, ys = stream
    feats = np.empty((len(ys), len(ensemble._members)))
    pred = np.empty(len(ys))
    mid = 0.5 * (scale[0] + scale[1])
    t_predict = t_learn = 0.0
    cpu_started = time.process_time()
    for k, (u, i, r) in enumerate(zip(users, items, ys, strict=True)):
        t0 = time.perf_counter()
        pred[k] = min(scale[1], max(scale[0], ensemble.predict_one(u, i)))
        feats[k] = ensemble.member_predictions(u, i)[1:]  # cached: no extra work
        t1 = time.perf_counter()
        ensemble.learn_one(u, i, r)
        t_learn += time.perf_counter() - t1
        t_predict += t1 - t0
    cpu = (time.process_time() - cpu_started) / len(ys) * 1e6
    for j, member in enumerate(ensemble._members):
        print(f"  member {type(member).__name__:45s} {rmse_parts(feats[:, j] + mid, y)}")
    n = len(ys)
    print(
        f"  {'ensemble (RLS combiner)':52s} {rmse_parts(pred, y)}   "
        f"predict {t_predict / n * 1e6:5.1f}  learn {t_learn / n * 1e6:6.1f}  "
        f"(CPU {cpu:5.1f} µs/event for both: other processes share the cores)"
    )


def recall_at_10(
    ranker: ItemRanker | None, stream: Stream, threshold: float, history_len: int = 200
) -> str:
    users, items, ys = stream
    events = [(u, i) for u, i, y in zip(users, items, ys, strict=True) if y >= threshold]
    n_items = max(items) + 1
    popularity = np.zeros(n_items)
    histories: dict[int, list[int]] = {}
    hits: list[tuple[int, bool]] = []
    t_learn = t_rec = 0.0
    empty = np.empty(0, dtype=np.int64)
    for k, (u, i) in enumerate(events):
        seq = histories.get(u)
        history = np.array(seq[-history_len:], dtype=np.int64) if seq else empty
        if seq is not None and i not in seq:
            t0 = time.perf_counter()
            top = top_k(ranker, u, history, set(seq), popularity, 10)
            t_rec += time.perf_counter() - t0
            hits.append((k, i in top))
        t0 = time.perf_counter()
        if ranker is not None:
            ranker.learn_one(u, i, 1.0, history)
        t_learn += time.perf_counter() - t0
        histories.setdefault(u, []).append(i)
        popularity[i] += 1
    hit = np.array([h for _, h in hits])
    first = np.array([k for k, _ in hits]) < len(events) // 2
    return (
        f"{hit.mean():.4f}  {hit[first].mean():.4f}  {hit[~first].mean():.4f}   "
        f"recommend {t_rec / len(hits) * 1e6:6.1f}  learn {t_learn / len(events) * 1e6:5.1f}"
    )


def top_k(
    ranker: ItemRanker | None,
    user: int,
    history: np.ndarray,
    exclude: set[int],
    popularity: np.ndarray,
    k: int,
) -> list[int]:
    top: list[int] = []
    if ranker is not None:
        cand, scores = ranker.candidates(user, history)
        for j in cand[np.argsort(-scores, kind="stable")].tolist():
            if j not in exclude:
                top.append(j)
                if len(top) == k:
                    return top
    taken = exclude | set(top)
    for j in np.argsort(-popularity, kind="stable").tolist():
        if popularity[j] == 0:
            break
        if j not in taken:
            top.append(j)
            if len(top) == k:
                break
    return top


def ranking_study(stream: Stream, threshold: float) -> None:
    print(f"\nRecall@10 (whole / first half / second half), ratings >= {threshold} as clicks; µs")
    n_items = max(stream[1]) + 1
    rankers: list[tuple[str, ItemRanker | None]] = [
        ("popularity", None),
        (
            "plain item-kNN, last 20 items, uncapped",
            SequenceItemKNN(
                window=20,
                proximity_decay=1.0,
                recent=20,
                recency_decay=1.0,
                last_boost=1.0,
                max_neighbours=n_items,  # as wide as the catalog: nothing is ever pruned
            ),
        ),
        ("knn, 200 neighbours per item", make_ranker("knn", max_neighbours=200)),
        ("knn (SequenceItemKNN defaults)", make_ranker("knn")),
    ]
    for name, ranker in rankers:
        print(f"  {name:40s} {recall_at_10(ranker, stream, threshold)}", end="")
        if isinstance(ranker, SequenceItemKNN):
            per_item = ranker.neighbour_table_bytes() / max(ranker.n_rows, 1)
            print(f"   {per_item:,.0f} B/item", end="")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="u.data (ML-100K) or ratings.csv (ml-latest)")
    parser.add_argument("--scale", type=float, nargs=2, default=None, help="lowest highest")
    parser.add_argument("--skip-ratings", action="store_true")
    parser.add_argument("--skip-ranking", action="store_true")
    args = parser.parse_args()
    stream = load(args.path)
    scale = tuple(args.scale) if args.scale else (min(stream[2]), max(stream[2]))
    print(f"{args.path}: {len(stream[2]):,} ratings, scale {scale[0]}-{scale[1]}\n")
    if not args.skip_ratings:
        rating_study(stream, (float(scale[0]), float(scale[1])))
    if not args.skip_ranking:
        threshold = 4.0  # as bench/quality_ml100k.py and issue 6: ratings >= 4, any scale
        ranking_study(stream, threshold)


if __name__ == "__main__":
    main()
