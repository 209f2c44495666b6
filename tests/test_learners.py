"""Learners: equivalence with River, read-only prediction, pickling, and quality on ML-100K."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest
from ml100k import ml100k_path, needs_ml100k
from river import optim, reco
from river.checks import yield_checks

from streamrec.learners import (
    DenseBiasedMF,
    RecentBias,
    ResidualItemKNN,
    RLSEnsemble,
    SequenceItemKNN,
    SGDBaseline,
    ShrunkBaseline,
    SVDPlusPlus,
    make_ranker,
    make_rating_model,
)
from streamrec.learners.base import ItemRanker, RatingModel


def _ratings(n: int = 3000, n_users: int = 60, n_items: int = 80, seed: int = 0):
    """Synthetic low-rank ratings: enough structure that a model can learn something."""
    rng = np.random.default_rng(seed)
    pu = rng.normal(size=(n_users, 3))
    qi = rng.normal(size=(n_items, 3))
    bu = rng.normal(0, 0.6, size=n_users)
    bi = rng.normal(0, 0.6, size=n_items)
    out = []
    for _ in range(n):
        u, i = int(rng.integers(n_users)), int(rng.integers(n_items))
        y = float(
            np.clip(np.round(3 + bu[u] + bi[i] + pu[u] @ qi[i] * 0.5 + rng.normal(0, 0.3)), 1, 5)
        )
        out.append((u, i, y))
    return out


def _mf_params() -> dict:
    return {
        "n_factors": 5,
        "bias_optimizer": optim.SGD(0.025),
        "latent_optimizer": optim.SGD(0.05),
        "l2_latent": 0.01,
        "seed": 3,
    }


def test_dense_biased_mf_matches_river_biased_mf_exactly() -> None:
    river_model = reco.BiasedMF(**_mf_params())
    dense = DenseBiasedMF(**_mf_params())
    compared = 0
    for u, i, y in _ratings():
        if u in river_model.u_latents and i in river_model.i_latents:
            assert dense.predict_one(u, i) == river_model.predict_one(u, i)
            compared += 1
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
    assert compared > 2000


def test_dense_rows_share_memory_with_the_matrix_after_growth() -> None:
    model = DenseBiasedMF(n_factors=4, seed=1)
    for item in range(300):  # forces several reallocations of the matrix
        model.learn_one(item % 7, item, 4.0)
    for item in (0, 150, 299):
        assert np.shares_memory(model.i_latents[item], model.item_factors)
        assert model.item_factors[item] is not None
        np.testing.assert_array_equal(model.i_latents[item], model.item_factors[item])


def test_score_dense_equals_predict_one_and_columns_are_item_ids() -> None:
    model = DenseBiasedMF(**_mf_params())
    for u, i, y in _ratings(800):
        model.learn_one(u, i, y)
    users = [0, 5, 17, 999]  # 999 is unseen
    scores = model.score_dense(users)
    assert scores.shape == (4, model.item_factors.shape[0])
    for row, user in enumerate(users):
        for item in (0, 3, 40, 79):
            assert scores[row, item] == pytest.approx(model.predict_one(user, item), abs=1e-12)


def test_dense_biased_mf_pickle_keeps_views_shared() -> None:
    model = DenseBiasedMF(**_mf_params())
    for u, i, y in _ratings(500):
        model.learn_one(u, i, y)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.predict_one(1, 2) == model.predict_one(1, 2)
    assert np.shares_memory(restored.i_latents[2], restored.item_factors)
    restored.learn_one(1, 2, 5.0)  # learning after restore must still move the dense matrix
    np.testing.assert_array_equal(restored.i_latents[2], restored.item_factors[2])
    assert restored.predict_one(1, 2) != model.predict_one(1, 2)


def test_dense_biased_mf_accepts_string_ids() -> None:
    model = DenseBiasedMF(n_factors=3, seed=0)
    model.learn_one("alice", "heat", 5.0)
    model.learn_one("bob", 7, 2.0)
    assert model.item_factors.shape[0] >= 2
    assert np.shares_memory(model.i_latents["heat"], model.item_factors)


def test_sgd_baseline_matches_river_baseline() -> None:
    river_model = reco.Baseline(optimizer=optim.SGD(0.025))
    ours = SGDBaseline(learning_rate=0.025)
    for u, i, y in _ratings(1000):
        if u in river_model.u_biases and i in river_model.i_biases:
            assert ours.predict_one(u, i) == pytest.approx(river_model.predict_one(u, i), abs=1e-9)
        river_model.learn_one(u, i, y)
        ours.learn_one(u, i, y)


def _state_size(model: object) -> int:
    """Total length of every dict reachable through the model's attributes (one level of nesting
    into member lists), the thing that grows if predict_one inserts state."""
    total = 0
    seen: set[int] = set()

    def visit(obj: object, depth: int) -> None:
        nonlocal total
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, dict):
            total += len(obj)
            for value in obj.values():
                if isinstance(value, dict):
                    total += len(value)
            return
        if isinstance(obj, list):
            for value in obj:
                visit(value, depth + 1)
            return
        for value in getattr(obj, "__dict__", {}).values():
            visit(value, depth + 1)

    visit(model, 0)
    return total


RATING_MODELS = [
    lambda: DenseBiasedMF(**_mf_params()),
    ShrunkBaseline,
    lambda: RecentBias("user"),
    lambda: RecentBias("item"),
    SGDBaseline,
    ResidualItemKNN,
    SVDPlusPlus,
    RLSEnsemble,
    lambda: make_rating_model("biased_mf"),
    lambda: make_rating_model("river_baseline"),
    lambda: make_rating_model("river_biased_mf"),
]


@pytest.mark.parametrize("factory", RATING_MODELS)
def test_predict_one_creates_no_state(factory) -> None:
    model = factory()
    assert isinstance(model, RatingModel)
    for u, i, y in _ratings(400):
        model.learn_one(u, i, y)
    before = _state_size(model)
    for k in range(500):
        model.predict_one(10_000 + k, 20_000 + k)  # unseen users and items
        model.predict_one(k % 60, 20_000 + k)  # seen user, unseen item
        model.predict_one(10_000 + k, k % 80)
    assert _state_size(model) == before


@pytest.mark.parametrize("factory", RATING_MODELS)
def test_models_learn_the_synthetic_structure(factory) -> None:
    """Each member must beat the global mean prequentially (the test fails for a no-op model)."""
    data = _ratings(4000)
    model = factory()
    se_model = se_mean = 0.0
    mean, n = 0.0, 0
    for u, i, y in data:
        se_model += (min(5.0, max(1.0, model.predict_one(u, i))) - y) ** 2
        se_mean += (mean - y) ** 2 if n else 0.0
        model.learn_one(u, i, y)
        n, mean = n + 1, mean + (y - mean) / (n + 1)
    assert se_model < 0.97 * se_mean


def test_ensemble_is_test_then_learn() -> None:
    """The combiner sees the members' predictions from *before* they learn the event."""
    model = RLSEnsemble(members=[ShrunkBaseline(), SGDBaseline()])
    for u, i, y in _ratings(200):
        model.learn_one(u, i, y)
    before = model.member_predictions(3, 4)
    model._cache_key = None  # bypass the one-slot cache to ask the members again
    assert model.member_predictions(3, 4) == before
    model.learn_one(3, 4, 5.0)
    assert model.member_predictions(3, 4) != before


def test_ensemble_respects_a_half_star_scale() -> None:
    model = make_rating_model("ensemble", rating_scale=(0.5, 5.0))
    rng = random.Random(0)
    for _ in range(500):
        model.learn_one(rng.randrange(20), rng.randrange(30), rng.choice([0.5, 1.0, 4.5, 5.0]))
    assert all(0.5 - 1.0 < model.predict_one(u, 3) < 5.0 + 1.0 for u in range(20))


def test_svdpp_describes_a_user_by_which_items_they_rated() -> None:
    """Two new users give the same value to different items; the implicit part tells them apart.

    Fans of items 0-4 love item 10, fans of 5-9 hate it. A newcomer who rated 0-4 (all 3★) is
    predicted to like item 10 more than one who rated 5-9 (all 3★).
    """
    model = SVDPlusPlus(n_factors=4, seed=2)
    rng = random.Random(0)
    for user in range(40):
        fan_of_first = user % 2 == 0
        seen = list(range(0, 5) if fan_of_first else range(5, 10))
        rng.shuffle(seen)
        for _ in range(5):
            for item in seen:
                model.learn_one(user, item, 4.0)
            model.learn_one(user, 10, 5.0 if fan_of_first else 1.0)
    for item in range(5):
        model.learn_one("new-a", item, 3.0)
        model.learn_one("new-b", item + 5, 3.0)
    assert model.predict_one("new-a", 10) > model.predict_one("new-b", 10) + 0.5


def test_svdpp_caps_the_users_history_and_reads_leave_no_trace() -> None:
    model = SVDPlusPlus(n_factors=3, history=7, seed=0)
    for u, i, y in _ratings(2000):
        model.learn_one(u, i, y)
    assert max(len(rows) for rows in model.user_items.values()) == 7
    assert all(len(set(rows)) == len(rows) for rows in model.user_items.values())
    before = pickle.dumps(model)
    model.predict_one(3, 4)  # fills the one-slot cache, which is not state
    assert pickle.dumps(model) == before
    model.learn_one(3, 4, 5.0)  # the cache is dropped when the model changes
    restored = pickle.loads(pickle.dumps(model))
    assert (
        restored.predict_one(3, 4)
        == model.predict_one(3, 4)
        != pickle.loads(before).predict_one(3, 4)
    )


def test_default_ensemble_is_deterministic_and_reading_changes_no_bytes() -> None:
    def train() -> RLSEnsemble:
        model = RLSEnsemble()
        for u, i, y in _ratings(600):
            model.predict_one(u, i)
            model.learn_one(u, i, y)
        return model

    a, b = train(), train()
    assert pickle.dumps(a) == pickle.dumps(b)
    before = pickle.dumps(a)
    a.predict_one(1, 2)
    assert pickle.dumps(a) == before


def test_recent_item_bias_follows_an_item_whose_ratings_change() -> None:
    model = RecentBias("item", alpha=0.2)
    lifetime = ShrunkBaseline()
    for k in range(200):  # item 0 was loved and is now disliked; item 1 is steady
        y = 5.0 if k < 150 else 1.0
        for m in (model, lifetime):
            m.learn_one(k, 0, y)
            m.learn_one(k, 1, 3.0)
    assert abs(model.predict_one(999, 0) - 1.0) < abs(lifetime.predict_one(999, 0) - 1.0) - 0.5


@pytest.mark.parametrize(
    "estimator",
    [
        DenseBiasedMF(n_factors=4, seed=42),
        ShrunkBaseline(),
        RecentBias("user"),
        RecentBias("item"),
        SGDBaseline(),
        ResidualItemKNN(),
        SVDPlusPlus(n_factors=4, seed=1),
        RLSEnsemble(members=[ShrunkBaseline(), SGDBaseline()]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_river_estimator_checks(estimator) -> None:
    """River's `check_estimator`: generic checks (repr, clone, pickling, docs, params) and the
    reco routine. River yields no datasets for reco rankers, so its dataset-based checks do not
    apply; building that (empty) list imports scikit-learn, which is not installed here."""
    ran = []
    try:
        for check in yield_checks(estimator):
            if check.__name__ not in estimator._unit_test_skips():
                check(estimator.clone())
                ran.append(check.__name__)
    except ModuleNotFoundError as error:
        assert error.name == "sklearn"
    assert {"check_reco_routine", "check_pickling_supports_roundtrip", "check_doc"} <= set(ran)


def _history(seq: list[int]) -> np.ndarray:
    return np.array(seq, dtype=np.int64)


def test_ranker_prefers_items_close_in_sequence() -> None:
    ranker = SequenceItemKNN(window=5, proximity_decay=0.5)
    assert isinstance(ranker, ItemRanker)
    for user in range(10):
        seq = [0, 1, 2, 3]  # 3 follows 2 directly; 0 is three steps away from 3
        for k, item in enumerate(seq):
            ranker.learn_one(user, item, 1.0, _history(seq[:k]))
    items, scores = ranker.candidates(99, _history([3]))
    by_item = dict(zip(items.tolist(), scores.tolist(), strict=True))
    assert by_item[2] > by_item[1] > by_item[0]
    assert ranker.explain(99, _history([0, 3]), 2) == 3


def test_ranker_purchase_weight_counts_more() -> None:
    ranker = SequenceItemKNN()
    ranker.learn_one(0, 1, 1.0, _history([0]))
    ranker.learn_one(1, 2, 3.0, _history([0]))
    assert ranker.link(0, 2) == 3 * ranker.link(0, 1) > 0.0
    assert ranker.link(1, 0) == ranker.link(0, 1)  # links are symmetric
    assert ranker.link(1, 2) == 0.0 and ranker.link(99, 0) == 0.0


def _reference_scores(
    sequences: list[list[int]], history: list[int], params: dict
) -> dict[int, float]:
    """The ranker's formula written out with dicts and no cap, to check the tables against."""
    links: dict[tuple[int, int], float] = {}
    counts: dict[int, float] = {}
    for seq in sequences:
        for k, item in enumerate(seq):
            counts[item] = counts.get(item, 0.0) + 1.0
            w = 1.0
            for other in reversed(seq[max(0, k - params["window"]) : k]):
                for a, b in ((item, other), (other, item)):
                    links[a, b] = links.get((a, b), 0.0) + w
                w *= params["proximity_decay"]
    scores: dict[int, float] = {}
    for age, h in enumerate(reversed(history[-params["recent"] :])):
        r = params["recency_decay"] ** age * (params["last_boost"] if age == 0 else 1.0)
        for (a, b), link in links.items():
            if a == h:
                scores[b] = scores.get(b, 0.0) + r * link / counts[h] ** params["alpha"]
    return {b: v / counts[b] ** params["beta"] for b, v in scores.items()}


def test_ranker_tables_match_the_dict_formula() -> None:
    params = {
        "window": 4,
        "proximity_decay": 0.8,
        "recent": 3,
        "recency_decay": 0.7,
        "alpha": 0.4,
        "beta": 0.6,
        "last_boost": 2.0,
    }
    ranker = SequenceItemKNN(**params, max_neighbours=64)  # wide enough: nothing is pruned
    rng = random.Random(5)
    sequences = [rng.sample(range(40), 8) for _ in range(30)]
    for user, seq in enumerate(sequences):
        for k, item in enumerate(seq):
            ranker.learn_one(user, item, 1.0, _history(seq[:k]))
    history = [3, 17, 25, 8]
    items, scores = ranker.candidates(0, _history(history))
    expected = _reference_scores(sequences, history, params)
    assert set(items.tolist()) == set(expected)
    for item, score in zip(items.tolist(), scores.tolist(), strict=True):
        assert score == pytest.approx(expected[item], rel=1e-5)


def test_ranker_neighbour_lists_stay_capped_on_many_items() -> None:
    """Memory is bounded by the cap: a stream over 20,000 items never widens any row."""
    ranker = SequenceItemKNN(window=30, max_neighbours=16)
    rng = np.random.default_rng(1)
    # Zipf-like popularity: a few items co-occur with thousands of others.
    popular = np.minimum(rng.zipf(1.3, size=60_000), 20_000) - 1
    for user in range(2_000):
        seq = list(dict.fromkeys(popular[user * 30 : (user + 1) * 30].tolist()))
        for k, item in enumerate(seq):
            ranker.learn_one(user, item, 1.0, _history(seq[:k]))
    lengths = ranker.lengths[: ranker.n_rows]
    assert lengths.max() == 16  # popular rows filled up and were pruned, not widened
    assert ranker.neighbours.shape[1] == ranker.weights.shape[1] == 16
    assert ranker.neighbour_table_bytes() == ranker.n_rows * 16 * 8
    # Pruning keeps the strongest links of the most popular item.
    row = int(np.argmax(ranker.counts))
    kept = ranker.weights[row, : lengths[row]]
    assert kept.min() > 0.0 and (ranker.neighbours[row, : lengths[row]] != row).all()
    stored = set(ranker.neighbours[row, : lengths[row]].tolist())
    assert len(stored) == lengths[row]  # no neighbour twice in a row


def test_ranker_is_deterministic_and_pickles() -> None:
    def train() -> SequenceItemKNN:
        ranker = SequenceItemKNN(max_neighbours=8, link_decay=0.999)
        rng = random.Random(3)
        for user in range(50):
            seq = rng.sample(range(300), 20)
            for k, item in enumerate(seq):
                ranker.learn_one(user, item, 1.0, _history(seq[:k]))
        return ranker

    a, b = train(), train()
    a.candidates(0, _history([1, 2, 3]))  # fills the read cache: must not change the state
    assert pickle.dumps(a) == pickle.dumps(b)
    restored = pickle.loads(pickle.dumps(a))
    for ranker in (a, restored):
        ranker.learn_one(7, 5, 1.0, _history([1, 2, 3]))
    assert pickle.dumps(restored) == pickle.dumps(a)
    items, scores = restored.candidates(1, _history([5, 2]))
    np.testing.assert_array_equal(items, a.candidates(1, _history([5, 2]))[0])
    np.testing.assert_array_equal(scores, a.candidates(1, _history([5, 2]))[1])


def test_ranker_link_decay_lets_new_links_win() -> None:
    """With fading links, a pair seen often long ago loses to a pair seen lately."""
    for decay, newer_wins in ((1.0, False), (0.99, True)):
        ranker = SequenceItemKNN(link_decay=decay)
        for user in range(30):
            ranker.learn_one(user, 1, 1.0, _history([0]))
        for user in range(300):  # unrelated traffic: time passes
            ranker.learn_one(100 + user, 10 + user % 50, 1.0, _history([9]))
        for user in range(10):
            ranker.learn_one(1000 + user, 2, 1.0, _history([0]))
        assert (ranker.link(0, 2) > ranker.link(0, 1)) == newer_wins


def test_ranker_reads_create_no_state() -> None:
    ranker = make_ranker("knn")
    assert isinstance(ranker, SequenceItemKNN)
    for k, item in enumerate([0, 1, 2, 3, 4]):
        ranker.learn_one(0, item, 1.0, _history(list(range(k))))
    before = pickle.dumps(ranker)
    for user in range(100):
        ranker.candidates(1000 + user, _history([user, 9999, -1]))
        ranker.explain(1000 + user, _history([user, 9999]), 12345)
    assert pickle.dumps(ranker) == before
    assert len(ranker.candidates(1, _history([]))[0]) == 0
    assert ranker.explain(1, _history([]), 3) is None


def test_river_reference_models_are_rivers_own_numbers() -> None:
    ours = make_rating_model("river_biased_mf", rating_scale=(1.0, 5.0))
    river_model = reco.BiasedMF(
        n_factors=10,
        bias_optimizer=optim.SGD(0.025),
        latent_optimizer=optim.SGD(0.05),
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
        seed=73,
    )
    compared = 0
    for u, i, y in _ratings(1500):
        if u in river_model.u_biases and i in river_model.i_biases:
            assert ours.predict_one(u, i) == river_model.predict_one(u, i)
            compared += 1
        ours.learn_one(u, i, y)
        river_model.learn_one(u, i, y)
    assert compared > 1000


def test_popular_ranker_proposes_nothing() -> None:
    ranker = make_ranker("popular")
    assert isinstance(ranker, ItemRanker)
    ranker.learn_one(0, 1, 1.0, _history([0]))
    assert len(ranker.candidates(0, _history([0, 1]))[0]) == 0
    assert ranker.explain(0, _history([0]), 1) is None


def test_factory_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown rating model"):
        make_rating_model("nope")
    with pytest.raises(ValueError, match="unknown ranker"):
        make_ranker("nope")


@pytest.mark.slow
@needs_ml100k
def test_biased_mf_quality_on_ml100k_first_20k() -> None:
    """The speed configuration reproduces River's BiasedMF prequential RMSE on a prefix."""
    path = ml100k_path()
    assert path is not None
    raw = np.loadtxt(path, dtype=np.int64)
    raw = raw[np.argsort(raw[:, 3], kind="stable")][:20_000]
    dense = make_rating_model("biased_mf")
    river_model = reco.BiasedMF(
        n_factors=10,
        bias_optimizer=optim.SGD(0.025),
        latent_optimizer=optim.SGD(0.05),
        seed=73,
    )
    se_dense = se_river = 0.0
    for u, i, y in raw[:, :3].tolist():
        se_dense += (min(5, max(1, dense.predict_one(u, i))) - y) ** 2
        if u in river_model.u_latents and i in river_model.i_latents:
            se_river += (min(5, max(1, river_model.predict_one(u, i))) - y) ** 2
        else:
            se_river += (min(5, max(1, dense.predict_one(u, i))) - y) ** 2
        dense.learn_one(u, i, float(y))
        river_model.learn_one(u, i, float(y))
    assert math.sqrt(se_dense / len(raw)) == pytest.approx(math.sqrt(se_river / len(raw)))
    assert math.sqrt(se_dense / len(raw)) < 1.0
