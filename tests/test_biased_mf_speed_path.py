"""The fast path of learning one event must change no result.

DenseBiasedMF's inlined SGD step stays bit-identical to River's BiasedMF in every setup; the
model's per-event bookkeeping (history search, popularity) matches the plain formulas it replaced.
"""

from __future__ import annotations

import math
import pickle
import random
from array import array

import numpy as np
import pytest
from ml100k import ml100k_path, needs_ml100k
from river import optim, reco

from streamrec.contract.events import EVENT_ADAPTER
from streamrec.core.model import (
    DecayedCounts,
    Histories,
    RecommenderModel,
    _append_bounded,
    _appended,
    _position,
)
from streamrec.learners import DenseBiasedMF, make_rating_model
from streamrec.settings import ModelSettings


def ratings(n: int = 2000) -> list[tuple[int, int, float]]:
    rng = np.random.default_rng(1)
    return [
        (int(rng.integers(50)), int(rng.integers(70)), float(rng.integers(1, 6))) for _ in range(n)
    ]


def assert_same_state(dense: DenseBiasedMF, river_model: reco.BiasedMF, n_events: int) -> None:
    """Every learned number equal with `==` (not approx), and the same Python types."""
    assert dense.global_mean.get() == river_model.global_mean.get()
    assert dense.global_mean.n == river_model.global_mean.n
    assert set(dense.u_biases) == set(river_model.u_biases)
    assert set(dense.i_biases) == set(river_model.i_biases)
    for u, bias in river_model.u_biases.items():
        assert dense.u_biases[u] == bias and type(dense.u_biases[u]) is type(bias)
        assert np.array_equal(dense.u_latents[u], river_model.u_latents[u])
    for i, bias in river_model.i_biases.items():
        assert dense.i_biases[i] == bias and type(dense.i_biases[i]) is type(bias)
        assert np.array_equal(dense.i_latents[i], river_model.i_latents[i])
        assert dense.item_biases[dense.item_table.find(i)] == bias
    for name in (
        "u_bias_optimizer",
        "i_bias_optimizer",
        "u_latent_optimizer",
        "i_latent_optimizer",
    ):
        assert getattr(dense, name).n_iterations == getattr(river_model, name).n_iterations
        assert getattr(dense, name).n_iterations == n_events


@pytest.mark.parametrize(
    "params",
    [
        {"n_factors": 8, "l2_bias": 0.1, "l2_latent": 0.05, "clip_gradient": 0.5},
        {
            "n_factors": 4,
            "bias_optimizer": optim.SGD(optim.schedulers.InverseScaling(0.05)),
            "latent_optimizer": optim.SGD(optim.schedulers.InverseScaling(0.1, power=0.3)),
        },
        {"n_factors": 4, "latent_optimizer": optim.SGD(0.0)},  # zero rate: the per-row path
        {  # int rates, as River allows
            "n_factors": 4,
            "bias_optimizer": optim.SGD(1),
            "latent_optimizer": optim.SGD(1),
            "clip_gradient": 0.01,
        },
        {"n_factors": 4, "latent_optimizer": optim.SGD(0)},
        {"n_factors": 4, "latent_optimizer": optim.Adam(0.01)},  # not plain SGD: River's path
        {"n_factors": 4, "loss": optim.losses.Absolute()},  # not squared loss: River's path
    ],
)
def test_learning_is_bit_identical_to_river(params: dict) -> None:
    river_model = reco.BiasedMF(**params, seed=5)
    dense = DenseBiasedMF(**params, seed=5)
    for u, i, y in ratings():
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
    assert_same_state(dense, river_model, 2000)


def test_different_user_and_item_latent_rates_stay_identical() -> None:
    """BiasedMF copies one latent optimizer for both sides; differing rates take the per-row
    multiply, which must give River's numbers too."""
    river_model = reco.BiasedMF(n_factors=6, l2_latent=0.02, seed=9)
    dense = DenseBiasedMF(n_factors=6, l2_latent=0.02, seed=9)
    for model in (river_model, dense):
        model.i_latent_optimizer = optim.SGD(0.037)
    for u, i, y in ratings():
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
    assert_same_state(dense, river_model, 2000)


def test_swapping_the_optimizer_between_events_is_honoured() -> None:
    river_model = reco.BiasedMF(n_factors=4, seed=2)
    dense = DenseBiasedMF(n_factors=4, seed=2)
    events = ratings()
    for u, i, y in events[:1000]:
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
    for model in (river_model, dense):
        model.u_latent_optimizer = optim.Adam(0.01)  # River's path from here on
        model.u_bias_optimizer.lr.learning_rate = 0.003  # a Constant changed in place
    for u, i, y in events[1000:]:
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
    assert dense.u_latent_optimizer.n_iterations == river_model.u_latent_optimizer.n_iterations
    for u in river_model.u_biases:
        assert dense.u_biases[u] == river_model.u_biases[u]
        assert np.array_equal(dense.u_latents[u], river_model.u_latents[u])
    for i in river_model.i_biases:
        assert dense.i_biases[i] == river_model.i_biases[i]
        assert np.array_equal(dense.i_latents[i], river_model.i_latents[i])


def test_a_restored_model_keeps_learning_like_river() -> None:
    """Scratch buffers are not pickled and are rebuilt on load; learning continues exactly (the
    restored learning rates are equal but no longer the same float object)."""
    river_model = reco.BiasedMF(n_factors=5, l2_latent=0.01, seed=4)
    dense = DenseBiasedMF(n_factors=5, l2_latent=0.01, seed=4)
    events = ratings()
    for u, i, y in events[:700]:
        river_model.learn_one(u, i, y)
        dense.learn_one(u, i, y)
    restored = pickle.loads(pickle.dumps(dense))
    assert "_scratch" not in dense.__getstate__()
    for u, i, y in events[700:]:
        river_model.learn_one(u, i, y)
        restored.learn_one(u, i, y)
    assert_same_state(restored, river_model, 2000)


@pytest.mark.slow
@needs_ml100k
def test_speed_configuration_is_bit_identical_to_river_on_all_of_ml100k() -> None:
    """All 100k ratings through `make_rating_model("biased_mf")` and River's BiasedMF with the
    same settings: every prediction along the way and every learned number at the end are equal
    (np.dot's summation order and the ufunc path agree with River over real data, not just a toy
    stream)."""
    path = ml100k_path()
    assert path is not None
    raw = np.loadtxt(path, dtype=np.int64)
    raw = raw[np.argsort(raw[:, 3], kind="stable")]
    dense = make_rating_model("biased_mf")
    assert isinstance(dense, DenseBiasedMF)
    river_model = reco.BiasedMF(
        n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05), seed=73
    )
    for n, (u, i, y) in enumerate(raw[:, :3].tolist()):
        if n % 5 == 0 and u in river_model.u_latents and i in river_model.i_latents:
            assert dense.predict_one(u, i) == river_model.predict_one(u, i)
        dense.learn_one(u, i, float(y))
        river_model.learn_one(u, i, float(y))
    assert_same_state(dense, river_model, len(raw))


# ---- the model's bookkeeping ----------------------------------------------------------------


def _packed(items: list[int]) -> bytes:
    return array("i", items).tobytes()


def test_history_position_equals_array_index() -> None:
    """Every kind of item: low byte zero, bytes equal to other entries' bytes (hits that straddle
    two entries must be skipped), absent, negative, the int32 extremes."""
    rng = random.Random(3)
    for size in (0, 1, 7, 64, 200):
        for universe in (300, 70_000):
            items = rng.sample(range(universe), size)
            history = _packed(items)
            probes = [*items, 0, 1, 5, 256, 512, 1280, 65_536, -1, -256, 2**31 - 1, -(2**31)]
            probes += [rng.randrange(-10, universe + 10) for _ in range(200)]
            for item in probes:
                expected = items.index(item) if item in items else -1
                assert _position(history, _packed([item])) == expected, (size, universe, item)
    # 0x01000000 then 0x00000001: the bytes 01 00 00 00 straddle the two entries (little endian)
    # or start the second one only; 1 is at index 1 either way, 256 nowhere.
    straddling = [0x01000000, 0x00000001, -3, 2**31 - 1, -(2**31)]
    for item in [*straddling, 256, 65_536, 3, -7]:
        expected = straddling.index(item) if item in straddling else -1
        assert _position(_packed(straddling), _packed([item])) == expected


def test_appended_matches_remove_append_trim() -> None:
    rng = random.Random(8)
    ours, in_place, reference = b"", array("i"), []
    for _ in range(5000):
        item = rng.choice([rng.randrange(600), rng.randrange(3) * 256, rng.randrange(8)])
        ours = _appended(ours, _packed([item]), 40 * array("i").itemsize)
        _append_bounded(in_place, item, 40)  # the array form other tests build references with
        if item in reference:
            reference.remove(item)
        reference.append(item)
        del reference[: max(0, len(reference) - 40)]
        assert array("i", ours).tolist() == in_place.tolist() == reference


def test_histories_pickle_as_two_arrays_and_read_as_before() -> None:
    histories = Histories()
    histories.data += [b"", _packed([3, 1, 2]), b"", _packed([7])]
    state = histories.__getstate__()
    assert state["lengths"].tolist() == [0, 3, 0, 1]
    assert state["items"].tolist() == [3, 1, 2, 7]
    restored = pickle.loads(pickle.dumps(histories))
    assert restored.data == histories.data
    assert restored.data[0] is restored.data[2]  # empty histories share one object
    assert len(restored) == 4
    assert restored[1] == array("i", [3, 1, 2]) and restored[0] == array("i")
    items = restored.items(1)
    assert items.dtype == np.int64 and items.tolist() == [3, 1, 2]
    assert pickle.loads(pickle.dumps(Histories())).data == []


def test_popularity_add_equals_the_numpy_scalar_update() -> None:
    rng = random.Random(5)
    counts = DecayedCounts(3600.0)
    counts.grow(50)
    reference = np.zeros(50)
    t_ref = None
    t = 1_000_000.0
    for _ in range(3000):
        t += rng.expovariate(1 / 500.0)  # sometimes far enough to rebase
        index, weight = rng.randrange(50), rng.choice([1.0, 3.0, 0.5])
        counts.add(index, t, weight)
        t_ref = t if t_ref is None else t_ref
        exponent = (t - t_ref) * counts.rate
        if exponent > 200.0:
            reference *= math.exp(-exponent)
            t_ref, exponent = t, 0.0
        reference[index] += weight * math.exp(exponent)
    assert counts.t_ref == t_ref
    assert np.array_equal(counts.values[:50], reference)


def test_model_histories_follow_the_plain_list_rules() -> None:
    """Ratings, clicks and purchases with repeats, over more than 256 items (ids with a zero low
    byte) and a short history bound: `seen` and `positives` equal the list-based reference."""
    limit = 12
    model = RecommenderModel(
        ModelSettings(rating_model="biased_mf", ranker="mf", history_length=limit)
    )
    rng = random.Random(11)
    seen: dict[int, list[int]] = {}
    positives: dict[int, list[int]] = {}
    for n in range(6000):
        kind = rng.choice(["rating", "rating", "click", "purchase"])
        raw = {
            "event_id": f"e{n}",
            "type": kind,
            "user_id": f"u{rng.randrange(15)}",
            "item_id": f"i{rng.randrange(700)}",
            "timestamp": 1_700_000_000_000 + 1000 * n,
        }
        if kind == "rating":
            raw["rating"] = float(rng.randint(1, 5))
        event = EVENT_ADAPTER.validate_python(raw)
        u = model.learn(event)
        i = model.item_index[event.item_id]
        if model.positive_weight(event) > 0.0:
            history = positives.setdefault(u, [])
            if i in history:
                history.remove(i)
            history.append(i)
            del history[: max(0, len(history) - limit)]
        history = seen.setdefault(u, [])
        if i not in history:
            history.append(i)
            del history[: max(0, len(history) - limit)]
    assert model.n_items > 512
    for u in range(model.n_users):
        assert model.seen[u].tolist() == seen.get(u, [])
        assert model.positives[u].tolist() == positives.get(u, [])
