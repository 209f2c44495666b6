"""River's own `reco.Baseline` and `reco.BiasedMF`, unchanged, behind a read-only `predict_one`.

They are the reference points the quality numbers are quoted against, so they run River's code
as it is. Only reading is guarded: River's `predict_one` inserts biases and random latent vectors
for unseen users and items (memory grows with read traffic, and the random draws would make the
model's state depend on what was read). For a pair River knows, the prediction is River's own;
otherwise it is the global mean plus whichever bias is known (an unseen id has a zero bias and,
in River's expectation, a zero dot product).
"""

from __future__ import annotations

import typing
from collections.abc import Hashable

from river import optim, reco

__all__ = ["ReadOnlyRiver", "river_baseline", "river_biased_mf"]


class ReadOnlyRiver:
    """Wraps a River `reco` estimator with `u_biases`/`i_biases`; learning is River's own.

    Examples
    --------

    >>> from streamrec.learners.river_readonly import river_baseline
    >>> model = river_baseline()
    >>> model.learn_one(0, 0, 5.0)
    >>> round(model.predict_one(0, 0), 3), round(model.predict_one(7, 8), 3)
    (5.0, 5.0)
    >>> len(model.river.u_biases), len(model.river.i_biases)  # reading created nothing
    (1, 1)

    """

    def __init__(self, river_model: reco.base.Ranker) -> None:
        self.river = river_model

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:
        self.river.learn_one(user, item, y)  # type: ignore[arg-type]

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:
        model = typing.cast(typing.Any, self.river)
        if user in model.u_biases and item in model.i_biases:
            return float(model.predict_one(user, item))
        return float(
            model.global_mean.get() + model.u_biases.get(user, 0.0) + model.i_biases.get(item, 0.0)
        )


def river_baseline(
    rating_scale: tuple[float, float] | None = None, **params: typing.Any
) -> ReadOnlyRiver:
    """River `reco.Baseline` with the SGD step of River's ML-100K example (0.025).

    `seed=0`: River seeds an unused RNG from the OS otherwise, which would change model digests.
    """
    settings: dict[str, typing.Any] = {"optimizer": optim.SGD(0.025), "seed": 0}
    settings.update(params)
    return ReadOnlyRiver(reco.Baseline(**settings))


def river_biased_mf(
    rating_scale: tuple[float, float] | None = None, **params: typing.Any
) -> ReadOnlyRiver:
    """River `reco.BiasedMF` with River's documented ML-100K settings (RMSE 0.948 there)."""
    settings: dict[str, typing.Any] = {
        "n_factors": 10,
        "bias_optimizer": optim.SGD(0.025),
        "latent_optimizer": optim.SGD(0.05),
        "latent_initializer": optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
        "seed": 73,
    }
    settings.update(params)
    return ReadOnlyRiver(reco.BiasedMF(**settings))
