"""Per-user storage without per-user Python objects: learner tables and model histories.

`DenseTable` keeps a side's numbers in three arrays and lists only keys that are not their own
row; its views must still behave like River's defaultdicts for any hashable key. `Histories`
keeps each user's items as one `bytes`. Both must pickle compactly, deterministically and
independently of how the arrays grew, and cost few bytes per user.
"""

from __future__ import annotations

import pickle
import random
import tracemalloc
from array import array

import numpy as np
import pytest
from river import optim, reco

import streamrec.learners.dense_table as dense_table
from streamrec.contract.events import EVENT_ADAPTER
from streamrec.core.model import Histories, RecommenderModel
from streamrec.learners import DenseBiasedMF
from streamrec.learners.dense_table import DenseTable
from streamrec.settings import ModelSettings


def _mixed_events(n: int = 3000, seed: int = 4) -> list[tuple[object, object, float]]:
    """Ids of every kind a River user may pass: dense ints, strings, negative ints, large ints,
    and ints whose row a string took first (they must be listed elsewhere)."""
    rng = random.Random(seed)
    users: list[object] = ["ann", "bob", -1, -7, 3, 0, 5, 2**40, "zoe"]
    items: list[object] = ["x", 0, 1, "y", 2, -3, 9, 1000, ("t", 1)]
    return [(rng.choice(users), rng.choice(items), float(rng.randint(1, 5))) for _ in range(n)]


def _assert_like_river(dense: DenseBiasedMF, river_model: reco.BiasedMF) -> None:
    assert dense.global_mean.get() == river_model.global_mean.get()
    for ours, theirs in (
        (dense.u_biases, river_model.u_biases),
        (dense.i_biases, river_model.i_biases),
    ):
        assert set(ours) == set(theirs) and len(ours) == len(theirs)
        for key, value in theirs.items():
            assert key in ours and ours[key] == value and ours.get(key) == value
    for ours, theirs in (
        (dense.u_latents, river_model.u_latents),
        (dense.i_latents, river_model.i_latents),
    ):
        assert set(ours) == set(theirs) and len(ours) == len(theirs)
        for key, vector in theirs.items():
            assert np.array_equal(ours[key], vector) and np.array_equal(ours.get(key), vector)


def test_any_hashable_id_learns_exactly_like_river() -> None:
    params = {"n_factors": 4, "l2_latent": 0.01, "seed": 6}
    river_model, dense = reco.BiasedMF(**params), DenseBiasedMF(**params)
    for n, (u, i, y) in enumerate(_mixed_events()):
        if n % 7 == 0 and u in river_model.u_latents and i in river_model.i_latents:
            assert dense.predict_one(u, i) == river_model.predict_one(u, i)
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
    _assert_like_river(dense, river_model)
    users = dense.user_table
    # Strings, negative ints and an int far past the rows in use are listed; a small int is its
    # own row unless another key took that row first.
    assert {"ann", "bob", -1, -7, "zoe", 2**40} <= set(users.rows)
    assert len(users.matrix) <= 64  # 2**40 did not become a row number
    for key in (3, 0, 5):
        assert users.find(key) == users.rows.get(key, key)
    for key, row in users.rows.items():
        assert users.flags[row] & dense_table._LISTED and users.find(key) == row


def test_an_int_whose_row_is_taken_is_listed_elsewhere() -> None:
    model = DenseBiasedMF(n_factors=2, seed=0)
    model.learn_one("first", 0, 4.0)  # "first" takes row 0
    model.learn_one(0, 1, 3.0)  # so user 0 cannot be row 0
    users = model.user_table
    assert users.rows == {"first": 0, 0: 1}
    assert users.find(0) == 1 and users.find("first") == 0
    assert list(model.u_biases) == ["first", 0]  # row order
    vectors, biases = model.user_vectors([0, "first", "nobody", -5])
    assert np.array_equal(vectors[0], model.u_latents[0])
    assert np.array_equal(vectors[1], model.u_latents["first"])
    assert not vectors[2:].any() and not biases[2:].any()
    assert biases[0] == model.u_biases[0] and biases[1] == model.u_biases["first"]


def test_keys_equal_as_dict_keys_are_one_key() -> None:
    """A dict treats True, 1.0 and np.int64(1) as the key 1; so do the views, whichever came
    first."""
    model = DenseBiasedMF(n_factors=2, seed=0)
    model.learn_one(1, 1, 4.0)
    for alias in (True, 1.0, np.int64(1)):
        assert alias in model.u_biases and model.u_biases[alias] == model.u_biases[1]
        assert np.shares_memory(model.u_latents[alias], model.user_table.matrix)
    model.learn_one(True, 1.0, 2.0)  # learns user 1 and item 1 again
    assert len(model.u_biases) == 1 and len(model.i_biases) == 1
    other = DenseBiasedMF(n_factors=2, seed=0)
    other.learn_one(True, 1.0, 4.0)  # a bool and a float are listed, not their own row
    assert other.user_table.rows == {True: 0} and other.item_table.rows == {1.0: 0}
    other.learn_one(1, 1, 2.0)  # ... and the int 1 finds them
    assert len(other.u_biases) == 1 and len(other.i_latents) == 1
    with pytest.raises(TypeError):
        [1] in model.u_biases  # noqa: B015 - unhashable, as with a dict


def test_views_are_river_defaultdicts_and_do_not_delete() -> None:
    model = DenseBiasedMF(n_factors=3, seed=2)
    assert model.u_biases["new"] == 0.0 and "new" in model.u_biases  # created on []
    assert "new" not in model.u_latents  # each view holds its own keys
    assert model.u_latents.get("new") is None and model.u_biases.get("none", 7.0) == 7.0
    assert "none" not in model.u_biases  # get creates nothing
    vector = model.u_latents["new"]
    assert vector.shape == (3,) and vector.any()  # River's random initializer
    model.u_latents["set"] = [1.0, 2.0, 3.0]
    model.u_biases["set"] = np.float64(0.5)
    assert model.u_latents["set"].tolist() == [1.0, 2.0, 3.0] and model.u_biases["set"] == 0.5
    with pytest.raises(ValueError):
        model.u_latents["bad"] = [1.0, 2.0]  # wrong length: no row is taken
    assert "bad" not in model.u_latents and "bad" not in model.u_biases
    with pytest.raises(TypeError):
        del model.u_biases["new"]


def test_growth_and_a_small_hot_cache_stay_like_river(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense_table, "_HOT_ROWS", 5)
    params = {"n_factors": 3, "seed": 1}
    river_model, dense = reco.BiasedMF(**params), DenseBiasedMF(**params)
    rng = random.Random(2)
    for n in range(4000):
        u, i, y = rng.randrange(n // 10 + 1), rng.randrange(n // 5 + 1), float(rng.randint(1, 5))
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
        if n % 500 == 0:
            assert dense.predict_one(u, i) == river_model.predict_one(u, i)
    assert len(dense.user_table.hot) <= 5 and len(dense.user_table.matrix) >= 400
    for table in (dense.user_table, dense.item_table):
        for _, view in table.hot.values():
            assert np.shares_memory(view, table.matrix) and view is not None
    _assert_like_river(dense, river_model)


def test_reading_creates_nothing() -> None:
    model = DenseBiasedMF(n_factors=3, seed=0)
    for u, i, y in _mixed_events(500):
        model.learn_one(u, i, y)
    before = pickle.dumps(model)
    rows = (model.user_table.n_rows, model.item_table.n_rows)
    hot = (dict(model.user_table.hot), dict(model.item_table.hot))
    for k in range(300):
        model.predict_one(10_000 + k, "unseen")
        model.predict_one("ann", 50_000 + k)
    model.score_dense(["ann", 3, 99_999, "nobody"])
    model.user_vectors(range(-5, 50))
    assert (model.user_table.n_rows, model.item_table.n_rows) == rows
    assert (model.user_table.hot, model.item_table.hot) == hot
    assert pickle.dumps(model) == before


def test_pickles_do_not_depend_on_growth_or_restarts() -> None:
    """A model restored mid-stream (its arrays exactly full, its hot cache empty) and one that
    learned straight through pickle to the same bytes and keep learning alike."""
    events = _mixed_events(2000, seed=9) + [(n, n % 37, 3.0) for n in range(300)]
    straight = DenseBiasedMF(n_factors=4, seed=3)
    for u, i, y in events:
        straight.learn_one(u, i, y)
    restarted = DenseBiasedMF(n_factors=4, seed=3)
    for u, i, y in events[:1100]:
        restarted.learn_one(u, i, y)
    restarted = pickle.loads(pickle.dumps(restarted))
    assert len(restarted.user_table.matrix) == restarted.user_table.n_rows  # exactly full
    for u, i, y in events[1100:]:
        restarted.learn_one(u, i, y)
    assert pickle.dumps(restarted) == pickle.dumps(straight)
    assert "hot" not in straight.user_table.__getstate__()
    assert not {"u_biases", "u_latents", "_scratch", "_names"} & set(straight.__getstate__())


def test_clone_with_attributes_gets_its_own_tables() -> None:
    model = DenseBiasedMF(n_factors=2, seed=0)
    for u, i, y in _mixed_events(200):
        model.learn_one(u, i, y)
    clone = model.clone(include_attributes=True)
    assert clone.u_biases.table is clone.user_table is not model.user_table
    assert clone.i_latents.table is clone.item_table is not model.item_table
    assert clone.predict_one("ann", "x") == model.predict_one("ann", "x")
    clone.learn_one("ann", "x", 5.0)
    assert clone.predict_one("ann", "x") != model.predict_one("ann", "x")


def test_table_lookup_matches_find() -> None:
    table = DenseTable(2, optim.initializers.Zeros(), optim.initializers.Zeros())
    for key in [0, 3, "s", 7, -2, 1]:
        row = table.put_bias(key, 1.0)
        if key != 1:
            table.put_latent(key, [1.0, 2.0], row)
    for keys in ([0, 3, 7, 1, 2, 50, -2], [0, "s", -2, 3.0, True], []):
        rows, flags = table.lookup(list(keys))
        assert rows.tolist() == [table.find(key) for key in keys]
        assert flags.tolist() == [table.flags[r] if r >= 0 else 0 for r in rows.tolist()]
    assert table.keys_with(dense_table.HAS_LATENT) == [0, 3, "s", 7, -2]
    assert table.keys_with(dense_table.HAS_BIAS) == [0, 1, 3, "s", 7, -2]


# ---- bytes per user ---------------------------------------------------------------------------


def _traced(build):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        kept = build()
        return tracemalloc.get_traced_memory()[0] - start, kept
    finally:
        tracemalloc.stop()


def test_a_learned_user_costs_little_more_than_its_numbers() -> None:
    """32 factors + a bias are 264 B; River's dicts with a view per key cost ~650 B."""
    n = 60_000

    def build() -> DenseBiasedMF:
        model = DenseBiasedMF(n_factors=32, seed=0)
        for user in range(n):
            model.learn_one(user, user % 500, 3.0)
        return model

    size, model = _traced(build)
    # matrix capacity 65,536 rows (256 B) + bias + flag, and the bounded hot cache (~16k views)
    assert size / n < 400, size / n  # was ~585 B
    assert len(model.u_biases) == n


def test_a_short_history_costs_one_small_object() -> None:
    n = 50_000

    def build() -> Histories:
        histories = Histories()
        for user in range(n):  # half the users with one item, half with none
            histories.data.append(b"" if user % 2 else array("i", [user]).tobytes())
        return histories

    size, histories = _traced(build)
    # 8 B of list slot each, and a 40 B object for one item; an array('i') per user cost ~110 B
    # with one item and ~90 B empty.
    assert size / n < 35, size / n
    assert histories[0].tolist() == [0] and histories[1].tolist() == []


def test_model_histories_round_trip_and_digest_alike() -> None:
    settings = ModelSettings(rating_model="biased_mf", ranker="knn", history_length=5)
    a, b = RecommenderModel(settings), RecommenderModel(settings)
    rng = random.Random(1)
    events = []
    for n in range(1500):
        raw = {
            "event_id": f"e{n}",
            "type": rng.choice(["rating", "click"]),
            "user_id": f"u{rng.randrange(40)}",
            "item_id": f"i{rng.randrange(300)}",
            "timestamp": 1_700_000_000_000 + n,
        }
        if raw["type"] == "rating":
            raw["rating"] = float(rng.randint(1, 5))
        events.append(EVENT_ADAPTER.validate_python(raw))
    for event in events:
        a.learn(event)
    for event in events[:700]:
        b.learn(event)
    b = pickle.loads(pickle.dumps(b))
    for event in events[700:]:
        b.learn(event)
    assert a.digest() == b.digest()
    assert [a.seen[u].tolist() for u in range(a.n_users)] == [
        b.seen[u].tolist() for u in range(b.n_users)
    ]
    assert all(len(a.seen[u]) <= 5 and len(a.positives[u]) <= 5 for u in range(a.n_users))
    assert all(a.seen_items(u).dtype == np.int64 for u in range(a.n_users))
