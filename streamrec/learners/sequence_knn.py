"""Incremental item-kNN for positive-only feedback, weighted by closeness in the user's sequence.

The default item ranker (`ranker=knn`): it proposes the candidates a user's list is filled from.

The neighbour lists live in two fixed-width numpy tables (one row per item: neighbour index and
link weight), not in per-item dicts. Memory is then a known `8 · max_neighbours` bytes per item
(3.2 KB at the default 400 neighbours: 320 MB for 100k items), and scoring a user is one gather
of the rows of their recent items plus one `bincount`, not a Python loop over thousands of links.
"""

from __future__ import annotations

import dataclasses
import typing
from array import array

import numpy as np
import numpy.typing as npt
from river import base

from streamrec.learners.base import FloatArray, IntArray

__all__ = ["SequenceItemKNN"]

Float32Array = npt.NDArray[np.float32]


@dataclasses.dataclass(slots=True)
class _Gathered:
    rows: IntArray  # the user's recent known items, most recent first
    factors: FloatArray  # per row: recency / count^alpha (a link's weight times this scores)
    neighbours: npt.NDArray[np.int32]  # (rows, width) their neighbour tables
    # (rows · width) link weight × factor, flat: filled in by the first `candidates` call
    contributions: FloatArray | None = None


_INITIAL_ROWS = 64
_REBASE_AT = 2.0**40
"""With `link_decay`, new links are added scaled up by `1 / link_decay` per event instead of every
old link shrinking (one multiply instead of millions); the tables are divided back down once the
factor passes this, far below float32's range (3e38)."""

_DENSE_FACTOR = 8
"""Candidate scores are summed with a dense `bincount` over the catalog when it is at most this
many times larger than the number of gathered links, else over the unique gathered items only."""


if (np.dtype(np.int32).char, np.dtype(np.float32).char) != ("i", "f"):  # pragma: no cover
    # `learn_one` writes the int32 / float32 tables through memoryviews cast to "i" / "f".
    raise ImportError("SequenceItemKNN needs a platform where C int and float are 32 bits")


def _strongest(weights: Float32Array, keep: int) -> IntArray:
    """Positions of the `keep` largest `weights`, in position order; ties go to the earlier
    position. The same set as the first `keep` of a stable descending argsort, in O(n): a
    partition finds the cut value, everything above it is kept and the ties at it fill up
    from the front."""
    length = len(weights)
    if keep >= length:
        return np.arange(length)
    if keep <= 0:
        return np.arange(0)
    cut = np.partition(weights, length - keep)[length - keep]
    kept = weights > cut
    need = keep - int(np.count_nonzero(kept))
    if need:
        kept[np.flatnonzero(weights == cut)[:need]] = True
    strongest = np.flatnonzero(kept)
    if len(strongest) != keep:  # NaN weights (NaN input): sort as argsort does, NaN last
        strongest = np.sort(np.argsort(-weights, kind="stable")[:keep])
    return strongest


class SequenceItemKNN(base.Estimator):
    """Item-to-item co-occurrence where items consumed close together, and recently, count more.

    Learning item `i` after history `h` adds `weight · proximity_decay^(d−1)` to the link between
    `i` and each of the last `window` history items, where `d` is how many steps back that item
    is. Links are symmetric. Each item keeps at most `max_neighbours` links: when its row is full,
    the weakest quarter is dropped, so memory is bounded by the cap and no items × items matrix
    ever exists. With `link_decay < 1`, every link and item count fades by that factor per learned
    event, so new co-occurrences can displace stale ones and fading items stop being recommended.

    Scoring a user sums, over the user's last `recent` items, `recency_decay^age` times the link
    strength normalised as `link / (n_h^alpha · n_c^beta)`, where `n` counts weighted (faded)
    positives per item, `h` is the history item and `c` the candidate: popular items would
    otherwise neighbour everything. The most recent item's weight is multiplied by `last_boost`.

    Parameters
    ----------
    window
        How many previous items of the user each new item links to.
    proximity_decay
        Link weight multiplier per step of distance in the sequence.
    recent
        How many of the user's latest items score candidates.
    recency_decay
        Weight multiplier per step back in the user's history when scoring.
    alpha
        Normalisation exponent on the history item's count.
    beta
        Normalisation exponent on the candidate's count (smaller favours popular candidates).
    last_boost
        Extra weight of the user's most recent item when scoring.
    link_decay
        Per-event fading of links and counts (1.0: never forget). Counted in learned events, not
        seconds, so it does not depend on how busy the stream is in wall-clock time.
    max_neighbours
        Links kept per item (the width of the neighbour tables): the memory knob. On ML-100K
        Recall@10 rises with it (200: 0.182, 300: 0.184, 400: 0.1855) and costs 8 bytes a link.

    The defaults (`recency_decay`, `last_boost`) were chosen on the first half of the ML-100K
    ratings ≥ 4 stream; see `bench/learner_study.py`.

    Examples
    --------

    >>> import numpy as np
    >>> from streamrec.learners import SequenceItemKNN
    >>> ranker = SequenceItemKNN()
    >>> for user, seq in {0: [0, 1, 2], 1: [0, 1, 3], 2: [4, 5]}.items():
    ...     for k, item in enumerate(seq):
    ...         ranker.learn_one(user, item, 1.0, np.array(seq[:k], dtype=np.int64))
    >>> items, scores = ranker.candidates(3, np.array([0], dtype=np.int64))
    >>> int(items[np.argmax(scores)])
    1
    >>> ranker.explain(3, np.array([4, 0], dtype=np.int64), 1)
    0
    >>> ranker.neighbour_table_bytes() // ranker.n_rows  # bytes per item: index + weight
    3200

    """

    def __init__(
        self,
        window: int = 40,
        proximity_decay: float = 0.95,
        recent: int = 20,
        recency_decay: float = 0.85,
        alpha: float = 0.5,
        beta: float = 0.5,
        last_boost: float = 1.5,
        link_decay: float = 1.0,
        max_neighbours: int = 400,
    ) -> None:
        if max_neighbours < 4:
            raise ValueError("max_neighbours must be at least 4")
        if not 0.0 < link_decay <= 1.0:
            raise ValueError("link_decay must be in (0, 1]")
        self.window = window
        self.proximity_decay = proximity_decay
        self.recent = recent
        self.recency_decay = recency_decay
        self.alpha = alpha
        self.beta = beta
        self.last_boost = last_boost
        self.link_decay = link_decay
        self.max_neighbours = max_neighbours
        width = max_neighbours
        self.events = 0  # positives learned
        self.n_rows = 0  # one past the highest item index learned
        self.neighbours: npt.NDArray[np.int32] = np.zeros((_INITIAL_ROWS, width), dtype=np.int32)
        self.weights: npt.NDArray[np.float32] = np.zeros((_INITIAL_ROWS, width), dtype=np.float32)
        self.lengths: npt.NDArray[np.int32] = np.zeros(_INITIAL_ROWS, dtype=np.int32)
        self.counts: FloatArray = np.zeros(_INITIAL_ROWS, dtype=np.float64)
        self._slots = np.arange(max_neighbours, dtype=np.int32)
        self._position = np.full(_INITIAL_ROWS, -1, dtype=np.int32)
        self._proximity = (proximity_decay ** np.arange(max(window, 1))).astype(np.float32)
        self.scale = 1.0  # what a link or count added now is multiplied by (see link_decay)
        self._recency = recency_decay ** np.arange(max(recent, 1), dtype=np.float64)
        self._recency[0] *= last_boost
        self._gathered: tuple[tuple[int, bytes], _Gathered] | None = None

    # ---- learning --------------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        rows = max(needed, 2 * len(self.lengths))
        for name in ("neighbours", "weights", "lengths", "counts"):
            old = getattr(self, name)
            new = np.zeros((rows, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self._position = np.full(rows, -1, dtype=np.int32)

    def _rebase(self) -> None:
        """Divide every stored weight by the growth factor (rare: once per ~2^40 of growth)."""
        self.weights *= np.float32(1.0 / self.scale)
        self.counts /= self.scale
        self.scale = 1.0

    def _prune(self, row: int, room: int) -> None:
        """Drop `row`'s weakest links so at least `room` slots are free (and a quarter, at
        least, so pruning stays rare). Ties keep the older link: the order is stable."""
        width = self.max_neighbours
        length = int(self.lengths[row])
        keep = min(length, width - max(room, width // 4))
        weights = self.weights[row, :length]
        strongest = _strongest(weights, keep)
        neighbours = self.neighbours[row]
        neighbours[:keep] = neighbours[strongest]
        weights[:keep] = weights[strongest]
        neighbours[keep:length] = 0
        weights[keep:length] = 0.0
        self.lengths[row] = keep

    def learn_one(self, user: int, item: int, weight: float, history: IntArray) -> None:
        item = int(item)
        self.events += 1
        # Most recent first, without the item itself, each history item once (at its latest).
        recent = history[-self.window :]
        others: list[int] = recent.tolist()
        others.reverse()
        if item in others or len(set(others)) < len(others):
            others = [other for other in dict.fromkeys(others) if other != item]
            linked = np.array(others, dtype=np.intp)
        else:  # the pipeline's histories are already unique: index with the view itself
            linked = recent[::-1]
        top = max(others) if others else item
        if item > top:
            top = item
        if top >= self.n_rows:
            if top >= len(self.lengths):
                self._grow(top + 1)
            self.n_rows = top + 1
        if self.link_decay < 1.0:
            self.scale /= self.link_decay
            if self.scale > _REBASE_AT:
                self._rebase()
        scaled = weight * self.scale
        self.counts[item] += scaled
        n = len(others)
        if not n:
            return
        # The distance d is the position in the de-duplicated recent history. The float32
        # products as Python floats (exactly representable), so sums below round the same.
        proximity = self._proximity[:n]
        amounts: list[float] = (
            proximity.tolist() if scaled == 1.0 else (proximity * np.float32(scaled)).tolist()
        )
        width = self.max_neighbours
        lengths = self.lengths
        neighbours = self.neighbours
        # Search first, then write: row `item` is not among the rows of `others`.
        # Row `item`: the slot of each of `others` in it (-1: absent), via the scratch array
        # (indexed by intp: numpy converts an int32 index array first, at ~4x the cost).
        length = int(lengths[item])
        if length:
            stored = neighbours[item, :length].astype(np.intp)
            position = self._position
            position[stored] = self._slots[:length]
            row_slots: list[int] = position[linked].tolist()
            position[stored] = -1
        else:
            row_slots = [-1] * n
        # Column `item`: which rows of `others` already link to it, one gather for all. Whole
        # rows when they are mostly full (`take` is the cheapest gather), else the used part.
        used = max(int(lengths[linked].max()), 1)
        if 2 * used > width:
            used = width
            block = neighbours.take(linked, axis=0)
        else:
            block = neighbours[linked, :used]
        hits: list[int] = (block == item).reshape(-1).nonzero()[0].tolist()
        # Then the writes, in plain Python on flat views: a float32 store of the double sum
        # of two float32 values rounds exactly as numpy's float32 `+=` does.
        flat_weights = self.weights.data.cast("B").cast("f")
        flat_neighbours = neighbours.data.cast("B").cast("i")
        flat_lengths = lengths.data.cast("B").cast("i")
        base = item * width
        new_others: list[int] = []
        new_amounts: list[float] = []
        for slot, amount, other in zip(row_slots, amounts, others, strict=True):
            if slot < 0:
                new_others.append(other)
                new_amounts.append(amount)
            else:
                flat_weights[base + slot] += amount
        n_new = len(new_others)
        if n_new:
            if n_new > width:  # only when window > max_neighbours: keep the closest
                del new_others[width:], new_amounts[width:]
                n_new = width
            if length + n_new > width:
                self._prune(item, n_new)
                length = flat_lengths[item]
            at = base + length
            flat_neighbours[at : at + n_new] = array("i", new_others)
            flat_weights[at : at + n_new] = array("f", new_amounts)
            flat_lengths[item] = length + n_new
        # Rows of `others`: hits come in row order; the rows before a hit lack the link.
        k = 0
        hits.append(n * used)  # a sentinel past the last row: the rows after the last hit
        for hit in hits:
            row, slot = divmod(hit, used)
            if not item and row < n and slot >= flat_lengths[others[row]]:
                continue  # an empty slot (item 0, weight 0), not a link to item 0
            while k < row:  # a new link row → item at the end of the row
                other = others[k]
                free = flat_lengths[other]
                if free >= width:
                    self._prune(other, 1)
                    free = flat_lengths[other]
                at = other * width + free
                flat_neighbours[at] = item
                flat_weights[at] = amounts[k]
                flat_lengths[other] = free + 1
                k += 1
            if row < n:
                flat_weights[others[row] * width + slot] += amounts[row]
                k = row + 1

    # ---- reading (never changes learned state) ---------------------------------------------

    def _gather(self, history: IntArray) -> _Gathered:
        """The neighbour rows of the user's recent known items and their scoring factors.

        The pipeline asks for a user's candidates and then explains the picked items with the
        same history, so the last gather is kept (keyed by the history and the number of events
        learned; it is not learned state and is left out of pickles). The float product
        `weights · factor` is left to the caller: `candidates` needs all of it, explaining
        only the few links of the picked items.
        """
        recent = history[-self.recent :]
        key = (self.events, recent.tobytes())
        cached = self._gathered
        if cached is not None and cached[0] == key:
            return cached[1]
        # The checks on a few dozen ids in Python: cheaper than numpy reductions on them.
        listed: list[int] = recent.tolist()
        rows = np.asarray(recent, dtype=np.intp)[::-1]
        weights = self._recency[: len(rows)]
        if listed and (min(listed) < 0 or max(listed) >= self.n_rows):
            known = (rows >= 0) & (rows < self.n_rows)
            rows, weights = rows[known], weights[known]
        counts = self.counts[rows]
        if 0.0 in counts.tolist():  # `not counts.all()`: some item was never learned
            seen = counts > 0.0
            rows, weights, counts = rows[seen], weights[seen], counts[seen]
        width = int(self.lengths[rows].max()) if len(rows) else 0
        gathered = _Gathered(rows, weights / counts**self.alpha, self.neighbours[rows, :width])
        self._gathered = (key, gathered)
        return gathered

    def candidates(self, user: int, history: IntArray) -> tuple[IntArray, FloatArray]:
        gathered = self._gather(history)
        if not gathered.neighbours.size:
            return np.empty(0, dtype=np.int64), np.empty(0)
        neighbours = gathered.neighbours.reshape(-1)
        contributions = gathered.contributions
        if contributions is None:
            rows, width = gathered.rows, gathered.neighbours.shape[1]
            contributions = (self.weights[rows, :width] * gathered.factors[:, None]).reshape(-1)
            gathered.contributions = contributions
        if self.n_rows <= _DENSE_FACTOR * len(neighbours):
            # bincount sums each item's contributions in gathered order, as before.
            sums = np.bincount(neighbours, weights=contributions, minlength=self.n_rows)
            items = (sums != 0.0).nonzero()[0]  # `flatnonzero`, without its wrapper
            values = sums[items]
        else:  # a large catalog: aggregate over the few thousand gathered links only
            items, inverse = np.unique(neighbours, return_inverse=True)
            values = np.bincount(inverse, weights=contributions)
            nonzero = values != 0.0
            items, values = items[nonzero], values[nonzero]
        # Empty slots point at item 0 with weight 0: they add nothing and are dropped above.
        # The factor scale^(alpha + beta - 1) undoes the growth of stored weights (link_decay),
        # so scores do not drift with the stream's length (a factor of 1 changes nothing).
        factor = self.scale ** (self.alpha + self.beta - 1.0)
        if factor != 1.0:
            values = values * factor
        return items.astype(np.int64, copy=False), values / self.counts[items] ** self.beta

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        return self.explain_many(user, history, [item])[0]

    def explain_many(self, user: int, history: IntArray, items: list[int]) -> list[int | None]:
        """`explain` for each of `items`, sharing one gather of the user's rows.

        The pipeline scores a batch of users before explaining any list, so the last-gather
        cache rarely holds this user: the gather is then redone without the float product of
        all its links, and only the picked items' links are multiplied out (the same float64
        products `candidates` sums, so the answers are the same).
        """
        if not items:
            return []
        gathered = self._gather(history)
        block = gathered.neighbours
        if not block.size:
            return [None] * len(items)
        neighbours = block.reshape(-1)
        width = block.shape[1]
        rows, factors, contributions = gathered.rows, gathered.factors, gathered.contributions
        n_rows = self.n_rows
        found: dict[int, int | None] = {}
        for item in items:
            if item in found:
                continue
            found[item] = None
            if not 0 <= item < n_rows:  # unknown: in no row
                continue
            # An item appears at most once per row: each hit is one history item's share.
            hits = (neighbours == item).nonzero()[0]
            if not len(hits):
                continue
            if contributions is None:
                which = hits // width
                shares = self.weights[rows[which], hits - which * width] * factors[which]
            else:
                shares = contributions[hits]
            best = int(shares.argmax())  # ties: the most recent history item
            if shares[best] > 0.0 or shares[best] != shares[best]:  # not `<= 0.0`
                found[item] = int(rows[hits[best] // width])
        return [found[item] for item in items]

    def __getstate__(self) -> dict[str, typing.Any]:
        state = self.__dict__.copy()
        state["_gathered"] = None  # a read cache, not learned state (see `_gather`)
        return state

    def link(self, a: int, b: int) -> float:
        """The current (faded) strength of the link a → b, 0.0 if there is none."""
        if not 0 <= a < self.n_rows:
            return 0.0
        length = int(self.lengths[a])
        found = np.flatnonzero(self.neighbours[a, :length] == b)
        return float(self.weights[a, found[0]]) / self.scale if len(found) else 0.0

    @property
    def n_links(self) -> int:
        return int(self.lengths[: self.n_rows].sum())

    def neighbour_table_bytes(self) -> int:
        """Bytes the neighbour tables take for the items learned so far (index + weight)."""
        width = self.max_neighbours
        return self.n_rows * width * (self.neighbours.itemsize + self.weights.itemsize)

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"window": 5, "max_neighbours": 10}
