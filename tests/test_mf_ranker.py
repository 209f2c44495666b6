"""MFRanker explanations: the history item most similar (cosine of latent vectors) to each pick."""

from __future__ import annotations

import pickle

import numpy as np

from streamrec.learners import make_rating_model
from streamrec.learners.mf_ranker import MFRanker


def test_explain_many_names_the_most_similar_history_item_as_the_model_learns() -> None:
    mf = make_rating_model("biased_mf")
    rng = np.random.default_rng(1)
    for _ in range(3000):
        mf.learn_one(int(rng.integers(50)), int(rng.integers(80)), float(rng.integers(1, 6)))
    ranker = MFRanker(mf)
    factors = mf.item_factors  # type: ignore[attr-defined]
    for _ in range(100):
        history = rng.choice(80, size=int(rng.integers(1, 30)), replace=False).astype(np.int64)
        items = [int(x) for x in rng.choice(80, size=5, replace=False)]
        for item, anchor in zip(items, ranker.explain_many(0, history, items), strict=True):
            cosine = (factors[history] @ factors[item]) / (
                np.linalg.norm(factors[history], axis=1) * np.linalg.norm(factors[item])
            )
            assert anchor == history[np.argmax(cosine)]
        mf.learn_one(int(rng.integers(50)), int(rng.integers(80)), 3.0)  # the cache must follow
    assert ranker.explain_many(0, np.array([], dtype=np.int64), [1, 2]) == [None, None]
    assert ranker.explain_many(0, np.array([1]), [999]) == [None]  # unknown item


def test_the_normalized_factor_cache_is_not_pickled() -> None:
    mf = make_rating_model("biased_mf")
    mf.learn_one(0, 1, 4.0)
    mf.learn_one(0, 2, 5.0)
    ranker = MFRanker(mf)
    ranker.explain_many(0, np.array([1]), [2])
    restored = pickle.loads(pickle.dumps(ranker))
    assert restored._unit is None
    assert restored.explain_many(0, np.array([1]), [2]) == [1]
