"""DenseBiasedMF's inlined SGD step must stay bit-identical to River's BiasedMF, in every setup."""

from __future__ import annotations

import numpy as np
import pytest
from river import optim, reco

from streamrec.learners import DenseBiasedMF


def ratings(n: int = 2000) -> list[tuple[int, int, float]]:
    rng = np.random.default_rng(1)
    return [
        (int(rng.integers(50)), int(rng.integers(70)), float(rng.integers(1, 6))) for _ in range(n)
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"n_factors": 8, "l2_bias": 0.1, "l2_latent": 0.05, "clip_gradient": 0.5},
        {
            "n_factors": 4,
            "bias_optimizer": optim.SGD(optim.schedulers.InverseScaling(0.05)),
            "latent_optimizer": optim.SGD(optim.schedulers.InverseScaling(0.1, power=0.3)),
        },
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
    assert dense.global_mean.get() == river_model.global_mean.get()
    for u in range(50):
        assert dense.u_biases[u] == river_model.u_biases[u]
        assert np.array_equal(dense.u_latents[u], river_model.u_latents[u])
    for i in range(70):
        assert dense.i_biases[i] == river_model.i_biases[i]
        assert np.array_equal(dense.i_latents[i], river_model.i_latents[i])
    for ours, theirs in (
        (dense.u_bias_optimizer, river_model.u_bias_optimizer),
        (dense.i_latent_optimizer, river_model.i_latent_optimizer),
    ):
        assert ours.n_iterations == theirs.n_iterations == 2000
