"""River estimators that streamrec learns with: rating models, their combiner, item rankers."""

from streamrec.learners.baselines import (
    RecentBias,
    SGDBaseline,
    ShrunkBaseline,
)
from streamrec.learners.biased_mf import DenseBiasedMF
from streamrec.learners.dense_table import DenseRows
from streamrec.learners.ensemble import RLSEnsemble, default_members
from streamrec.learners.factory import (
    DEFAULT_RANKER,
    DEFAULT_RATING_MODEL,
    SPEED_RATING_MODEL,
    make_ranker,
    make_rating_model,
)
from streamrec.learners.residual_knn import ResidualItemKNN
from streamrec.learners.sequence_knn import SequenceItemKNN
from streamrec.learners.svdpp import SVDPlusPlus

__all__ = [
    "DEFAULT_RANKER",
    "DEFAULT_RATING_MODEL",
    "SPEED_RATING_MODEL",
    "DenseBiasedMF",
    "DenseRows",
    "RLSEnsemble",
    "RecentBias",
    "ResidualItemKNN",
    "SGDBaseline",
    "SVDPlusPlus",
    "SequenceItemKNN",
    "ShrunkBaseline",
    "default_members",
    "make_ranker",
    "make_rating_model",
]
