"""Item neighbourhood model on baseline residuals: the ensemble member that MF misses most.

A *rating* model (it predicts a rating, as an ensemble member); the item-kNN that ranks
candidates for positive-only feedback is `sequence_knn.py`.
"""

from __future__ import annotations

import heapq
import math
import typing
from collections.abc import Hashable

from river import reco

from streamrec.learners.baselines import ShrunkBaseline

__all__ = ["ResidualItemKNN"]


def _abs_similarity(pair: tuple[float, float]) -> float:
    return abs(pair[0])


class ResidualItemKNN(reco.base.Ranker):
    """Baseline + similarity-weighted average of the user's residuals on neighbouring items.

    Each rating leaves a residual `x = r − baseline(u, i)` (computed before learning it). Item
    similarity is the cosine of residual vectors with missing entries as zeros, kept online as
    `S[i][j] = Σ_u x_ui x_uj` (sparse, only co-rated pairs) and `Q[i] = Σ_u x_ui²`. Zeros for
    missing entries shrink pairs with little co-support for free. The prediction is
    `baseline + Σ_j s_ij x_uj / (Σ_j |s_ij| + smoothing)` over the `k` most similar items among
    the user's last `history` ratings.

    Per-event cost is O(history): the user's residual history is capped for that reason.

    Parameters
    ----------
    k
        Neighbours used per prediction.
    smoothing
        Added to the sum of |similarity|: pulls weakly supported corrections towards zero
        (similarities are in [-1, 1], so this does not depend on the rating scale).
    history
        Most recent ratings kept per user (bounds per-event work and per-user memory).
    baseline
        Baseline whose residuals are modelled (default `ShrunkBaseline()`).

    Examples
    --------

    >>> from streamrec.learners import ResidualItemKNN
    >>> model = ResidualItemKNN(k=5)
    >>> data = [(0, 0, 5.0), (0, 1, 5.0), (1, 0, 5.0), (1, 1, 5.0), (2, 0, 1.0), (2, 1, 1.0),
    ...         (3, 0, 5.0), (4, 0, 1.0)]
    >>> for user, item, y in data:
    ...     model.learn_one(user, item, y)
    >>> model.predict_one(3, 1) > model.predict_one(4, 1)
    True
    >>> model.explain(3, 1)
    0

    """

    def __init__(
        self,
        k: int = 20,
        smoothing: float = 0.5,
        history: int = 100,
        baseline: ShrunkBaseline | None = None,
    ) -> None:
        super().__init__(seed=0)  # River seeds an unused RNG from the OS otherwise
        self.k = k
        self.smoothing = smoothing
        self.history = history
        self.baseline = baseline
        self._baseline = ShrunkBaseline() if baseline is None else baseline.clone()
        self.residuals: dict[Hashable, dict[Hashable, float]] = {}
        self.cross: dict[Hashable, dict[Hashable, float]] = {}
        self.square: dict[Hashable, float] = {}

    def _neighbours(self, user: Hashable, item: Hashable) -> list[tuple[float, float, Hashable]]:
        """(similarity, residual, history item) for the user's items co-rated with `item`."""
        residuals = self.residuals.get(user)
        row = self.cross.get(item)
        q_item = self.square.get(item, 0.0)
        if not residuals or row is None or q_item <= 0.0:
            return []
        square = self.square
        found = []
        for other, residual in residuals.items():
            s = row.get(other)
            q_other = square.get(other, 0.0)
            if s is not None and q_other > 0.0:  # an item whose residuals were all exactly 0
                found.append((s / math.sqrt(q_item * q_other), residual, other))
        if len(found) > self.k:
            found = heapq.nlargest(self.k, found, key=lambda t: abs(t[0]))
        return found

    def correction(self, user: Hashable, item: Hashable) -> float:
        """The neighbourhood's correction to the baseline (0 when there is no evidence).

        The hot path of the ensemble, so it is `_neighbours` without the bookkeeping: the
        factor `1/√Q[item]` is common to every similarity (so it cannot change which `k` are
        largest) and is applied once; a zero cross sum adds nothing, and a non-zero one implies
        `Q[other] > 0` (Cauchy-Schwarz), so no other test is needed.
        """
        residuals = self.residuals.get(user)
        row = self.cross.get(item)
        q_item = self.square.get(item, 0.0)
        if not residuals or row is None or q_item <= 0.0:
            return 0.0
        get, square, sqrt = row.get, self.square, math.sqrt
        found = [(s / sqrt(square[o]), r) for o, r in residuals.items() if (s := get(o))]
        if not found:
            return 0.0
        if len(found) > self.k:
            found.sort(key=_abs_similarity, reverse=True)  # stable, like heapq.nlargest
            del found[self.k :]
        scale = 1.0 / sqrt(q_item)
        num = scale * sum(s * r for s, r in found)
        den = scale * sum(abs(s) for s, _ in found)
        return num / (den + self.smoothing)

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        return self._baseline.predict_one(user, item) + self.correction(user, item)

    def explain(self, user: Hashable, item: Hashable) -> Hashable | None:
        """The rated item whose residual moves this prediction most, or None."""
        found = self._neighbours(user, item)
        if not found:
            return None
        return max(found, key=lambda t: abs(t[0] * t[1]))[2]

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        residual = y - self._baseline.predict_one(user, item)
        self._baseline.learn_one(user, item, y)
        history = self.residuals.setdefault(user, {})
        history.pop(item, None)  # a re-rating replaces the old residual
        row = self.cross.setdefault(item, {})
        cross, row_get = self.cross, row.get
        for other, other_residual in history.items():
            product = residual * other_residual
            row[other] = row_get(other, 0.0) + product
            other_row = cross[other]
            other_row[item] = other_row.get(item, 0.0) + product
        self.square[item] = self.square.get(item, 0.0) + residual * residual
        history[item] = residual
        if len(history) > self.history:
            del history[next(iter(history))]

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"k": 5, "history": 20}
