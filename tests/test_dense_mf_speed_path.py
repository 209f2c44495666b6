"""DenseBiasedMF's inlined SGD step must stay bit-identical to River's BiasedMF, in every setup."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from river import optim, reco

from streamrec.learners import DenseBiasedMF, make_rating_model


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
        assert dense.item_biases[dense.i_latents.rows[i]] == bias  # type: ignore[attr-defined]
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


def _ml100k() -> Path | None:
    path = Path(
        os.environ.get(
            "STREAMREC_ML100K",
            Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data",
        )
    )
    return path if path.is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_ml100k() is None, reason="ML-100K u.data not available")
def test_speed_configuration_is_bit_identical_to_river_on_all_of_ml100k() -> None:
    """All 100k ratings through `make_rating_model("biased_mf")` and River's BiasedMF with the
    same settings: every prediction along the way and every learned number at the end are equal
    (np.dot's summation order and the ufunc path agree with River over real data, not just a toy
    stream)."""
    path = _ml100k()
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
