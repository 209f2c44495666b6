"""Build learners by name, so settings files and benchmarks share one set of defaults."""

from __future__ import annotations

import typing

from river import optim

from streamrec.learners.base import ItemRanker, RatingModel
from streamrec.learners.biased_mf import DenseBiasedMF
from streamrec.learners.ensemble import RLSEnsemble
from streamrec.learners.popularity import PopularityOnly
from streamrec.learners.river_readonly import river_baseline, river_biased_mf
from streamrec.learners.sequence_knn import SequenceItemKNN

__all__ = ["DEFAULT_RANKER", "DEFAULT_RATING_MODEL", "make_ranker", "make_rating_model"]

DEFAULT_RATING_MODEL = "ensemble"
"""Quality default: RLS combiner over MF, SVD++, residual kNN and bias members."""

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
    "river_baseline": river_baseline,  # reference points: River's own classes, read-only
    "river_biased_mf": river_biased_mf,
}
_RANKERS: dict[str, typing.Callable[..., ItemRanker]] = {
    "knn": SequenceItemKNN,
    "popular": PopularityOnly,  # reference point: the pipeline's popularity fill alone
}


def make_rating_model(name: str = DEFAULT_RATING_MODEL, **params: typing.Any) -> RatingModel:
    """A fresh rating model; `params` override the named configuration's defaults."""
    factory = _RATING_MODELS.get(name)
    if factory is None:
        known = ", ".join(sorted(_RATING_MODELS))
        raise ValueError(f"unknown rating model {name!r}; choose one of: {known}")
    return factory(**params)


def make_ranker(name: str = DEFAULT_RANKER, **params: typing.Any) -> ItemRanker:
    """A fresh item ranker; `params` override the named configuration's defaults."""
    factory = _RANKERS.get(name)
    if factory is None:
        known = ", ".join(sorted(_RANKERS))
        raise ValueError(f"unknown ranker {name!r}; choose one of: {known}")
    return factory(**params)
