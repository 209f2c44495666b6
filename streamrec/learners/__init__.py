"""River estimators that streamrec learns with: rating models, their combiner, item rankers."""

from streamrec.learners.baselines import RecentUserBias, SGDBaseline, ShrunkBaseline
from streamrec.learners.dense_mf import DenseBiasedMF, DenseRows
from streamrec.learners.ensemble import RLSEnsemble, default_members
from streamrec.learners.neighbors import ResidualItemKNN

__all__ = [
    "DenseBiasedMF",
    "DenseRows",
    "RLSEnsemble",
    "RecentUserBias",
    "ResidualItemKNN",
    "SGDBaseline",
    "ShrunkBaseline",
    "default_members",
]
