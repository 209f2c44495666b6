"""Top-K refresh: users refreshed per second with a dense MF ranker, against River's `rank()`.

The model is streamrec's speed configuration (`rating_model="biased_mf"`, `ranker="mf"`): the MF
ranker scores a block of users against the whole catalog with one matrix product over
`DenseBiasedMF`'s item matrix. Two numbers per catalog:

- `recommend()` (the pipeline's call): dense scores → seen-items exclusion → top-K → exploration
  slots (epsilon-greedy, the default) → reasons;
- the kernel alone, `recommend._model_picks`: dense scores → exclusion → top-K.

River's `BiasedMF.rank(user, items)` (one `predict_one` per item, then a sort; no exclusion) is
timed on the smallest catalog, over a River model that learned the same events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.common import Row

if TYPE_CHECKING:
    from streamrec.core.model import RecommenderModel

K = 10
N_FACTORS = 32
RATINGS_PER_USER = 20
TARGET_SPEEDUP = 10.0


def _stream(n_users: int, n_items: int, seed: int) -> list[tuple[int, int, float]]:
    """Every item rated at least once, every user about RATINGS_PER_USER times; shuffled."""
    rng = np.random.default_rng(seed)
    n = max(n_items, n_users * RATINGS_PER_USER)
    users = rng.integers(0, n_users, n)
    items = np.concatenate([rng.permutation(n_items), rng.integers(0, n_items, n - n_items)])
    ratings = rng.integers(1, 6, n).astype(float)
    order = rng.permutation(n)
    return [(int(users[k]), int(items[k]), float(ratings[k])) for k in order]


def _model(
    n_users: int, n_items: int, seed: int = 0
) -> tuple[RecommenderModel, list[tuple[int, int, float]]]:
    from streamrec.contract.events import RatingEvent
    from streamrec.core.model import RecommenderModel
    from streamrec.settings import ModelSettings

    settings = ModelSettings(
        rating_model="biased_mf",
        rating_params={"n_factors": N_FACTORS},
        ranker="mf",
        k=K,
        seed=seed,
    )
    model = RecommenderModel(settings)
    stream = _stream(n_users, n_items, seed)
    base = 1_767_225_600.0
    for n, (user, item, rating) in enumerate(stream):
        model.learn(
            RatingEvent.model_construct(
                event_id=f"t{n}",
                type="rating",
                user_id=f"u{user}",
                item_id=f"i{item}",
                timestamp=base + n,
                rating=rating,
            )
        )
    return model, stream


def _users_per_second(fn: Callable[[Any], Any], users: Sequence[Any], min_seconds: float) -> float:
    """Users per second of `fn(users)`, repeated until `min_seconds` have passed."""
    done, started = 0, time.perf_counter()
    while True:
        fn(users)
        done += len(users)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def topk_rows(
    catalogs: Sequence[int], n_users: int, river_users: int, min_seconds: float
) -> list[Row]:
    """One row per catalog (full `recommend` path), the kernel in `extra`, then River and ratio."""
    from river import reco

    from streamrec.bandit.policies import SlotPolicy
    from streamrec.core.recommend import DENSE_BLOCK_USERS, _model_picks, recommend
    from streamrec.core.rules import NO_RULES

    rows: list[Row] = []
    smallest: Row | None = None
    smallest_model: tuple[RecommenderModel, list[tuple[int, int, float]]] | None = None
    for n_items in sorted(catalogs):
        model, stream = _model(n_users, n_items)
        users = [model.user_index[f"u{u}"] for u in range(n_users) if f"u{u}" in model.user_index]
        policy = SlotPolicy(model.settings.exploration, seed=0)
        full = _users_per_second(partial(recommend, model, k=K, policy=policy), users, min_seconds)
        kernel = _users_per_second(
            lambda block, m=model: _model_picks(m, block, K, [NO_RULES] * len(block)),
            users,
            min_seconds,
        )
        row = Row(
            f"topk_{n_items}",
            f"top-{K} refresh, {n_items:,} items (dense MF, recommend())",
            full,
            "users/s",
            dataset=f"synthetic: {n_users:,} users × {n_items:,} items, {len(stream):,} ratings",
            settings={
                "path": "recommend.recommend(), ranker=mf (DenseBiasedMF.score_dense)",
                "n_factors": N_FACTORS,
                "k": K,
                "exploration": model.settings.exploration,
                "dense_block_users": DENSE_BLOCK_USERS,
                "users_per_call": len(users),
            },
            note=f"kernel alone (score_dense + exclusion + top-K): {kernel:,.0f} users/s",
            extra={"kernel_users_per_s": kernel},
        )
        rows.append(row)
        if smallest is None:
            smallest, smallest_model = row, (model, stream)

    assert smallest is not None and smallest_model is not None
    model, stream = smallest_model
    n_items = model.n_items
    river_model = reco.BiasedMF(**_river_params(model))
    for user, item, rating in stream:
        river_model.learn_one(f"u{user}", f"i{item}", rating)
    catalog: set[Hashable] = {f"i{i}" for i in range(n_items)}
    ranked_users = [f"u{u}" for u in range(min(river_users, n_users))]

    def river_rank(us: Sequence[str]) -> None:
        for user in us:
            river_model.rank(user, catalog)

    river = _users_per_second(river_rank, ranked_users, min_seconds)
    river_row = Row(
        f"topk_river_{n_items}",
        f"River BiasedMF.rank(), {n_items:,} items",
        river,
        "users/s",
        dataset=smallest.dataset,
        settings={"path": "river.reco.BiasedMF.rank(user, catalog)", "n_factors": N_FACTORS},
        note="predict_one per item + sort; no exclusion, no exploration",
    )
    speedup = smallest.value / river if smallest.value and river else None
    kernel_speedup = smallest.extra["kernel_users_per_s"] / river if river else None
    rows += [
        river_row,
        Row(
            "topk_speedup",
            f"top-K speedup vs Ranker.rank() ({n_items:,} items)",
            speedup,
            "×",
            target=f"≥ {TARGET_SPEEDUP:g}×",
            met=speedup is not None and speedup >= TARGET_SPEEDUP,
            dataset=smallest.dataset,
            note=f"kernel alone: {kernel_speedup:,.0f}×" if kernel_speedup else "",
        ),
    ]
    return rows


def _river_params(model: RecommenderModel) -> dict[str, Any]:
    """The rating model's River hyper-parameters, so River learns the same way."""
    import copy
    import inspect

    from river import reco

    mf = model.rating_model
    names = inspect.signature(reco.BiasedMF).parameters
    return {name: copy.deepcopy(getattr(mf, name)) for name in names}
