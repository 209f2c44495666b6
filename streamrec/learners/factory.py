"""Build learners by name, so settings files and benchmarks share one set of defaults."""

from __future__ import annotations

import typing

from river import optim

from streamrec.learners.base import ItemRanker, RatingModel
from streamrec.learners.dense_mf import DenseBiasedMF
from streamrec.learners.ensemble import RLSEnsemble
from streamrec.learners.ranker import SequenceItemKNN

__all__ = ["DEFAULT_RANKER", "DEFAULT_RATING_MODEL", "make_ranker", "make_rating_model"]

DEFAULT_RATING_MODEL = "ensemble"
"""Quality default: RLS combiner over MF, residual kNN and bias members."""

DEFAULT_RANKER = "knn"

SPEED_RATING_MODEL = "biased_mf"
"""River BiasedMF semantics (River docs' ML-100K settings), with dense scoring."""


def _biased_mf(
    rating_scale: tuple[float, float] | None = None, **params: typing.Any
) -> DenseBiasedMF:
    # River's BiasedMF has no notion of a scale; the pipeline clips its predictions.
    settings: dict[str, typing.Any] = {
        "n_factors": 10,
        "bias_optimizer": optim.SGD(0.025),
        "latent_optimizer": optim.SGD(0.05),
        "seed": 73,
    }
    settings.update(params)
    return DenseBiasedMF(**settings)


def _ensemble(**params: typing.Any) -> RLSEnsemble:
    scale = params.get("rating_scale")
    if scale is not None:
        params["rating_scale"] = (float(scale[0]), float(scale[1]))
    return RLSEnsemble(**params)


_RATING_MODELS: dict[str, typing.Callable[..., RatingModel]] = {
    "biased_mf": _biased_mf,
    "ensemble": _ensemble,
}
_RANKERS: dict[str, typing.Callable[..., ItemRanker]] = {"knn": SequenceItemKNN}


def make_rating_model(name: str = DEFAULT_RATING_MODEL, **params: typing.Any) -> RatingModel:
    """A fresh rating model; `params` override the named configuration's defaults."""
    try:
        return _RATING_MODELS[name](**params)
    except KeyError:
        known = ", ".join(sorted(_RATING_MODELS))
        raise ValueError(f"unknown rating model {name!r}; choose one of: {known}") from None


def make_ranker(name: str = DEFAULT_RANKER, **params: typing.Any) -> ItemRanker:
    """A fresh item ranker; `params` override the named configuration's defaults."""
    try:
        return _RANKERS[name](**params)
    except KeyError:
        known = ", ".join(sorted(_RANKERS))
        raise ValueError(f"unknown ranker {name!r}; choose one of: {known}") from None
