"""SequenceItemKNN's fast paths against the implementation they replaced, bit for bit.

`learn_one` writes links from plain Python on flat memoryviews, `_prune` cuts with a partition
instead of a full stable sort, and `explain_many` multiplies out only the picked items' links.
Each must leave exactly the tables (neighbours, float32 weights, lengths, float64 counts) and
give exactly the answers of the original numpy code, which is copied below as `_Reference`:
same float arithmetic in the same order per link, same slots, same pruning ties.
"""

from __future__ import annotations

import pickle
import random
from array import array
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from ml100k import ml100k_path, needs_ml100k

from streamrec.core.model import _append_bounded
from streamrec.data.movielens import read_ratings
from streamrec.learners import SequenceItemKNN
from streamrec.learners.sequence_knn import _REBASE_AT, _strongest

IntArray = npt.NDArray[np.int64]


class _Reference(SequenceItemKNN):
    """The learn and read paths as they were before the fast paths (commit 86c7aaa), verbatim
    but for names. Construction, `_grow` and `_rebase` are copied too, so a later change to
    the class under test cannot change the reference."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._position = np.full(len(self.lengths), -1, dtype=np.int32)

    def _grow(self, needed: int) -> None:
        rows = max(needed, 2 * len(self.lengths))
        for name in ("neighbours", "weights", "lengths", "counts"):
            old = getattr(self, name)
            new = np.zeros((rows, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self._position = np.full(rows, -1, dtype=np.int32)

    def _rebase(self) -> None:
        self.weights *= np.float32(1.0 / self.scale)
        self.counts /= self.scale
        self.scale = 1.0

    def _prune(self, row: int, room: int) -> None:
        width = self.max_neighbours
        length = int(self.lengths[row])
        keep = min(length, width - max(room, width // 4))
        weights = self.weights[row, :length]
        strongest = np.sort(np.argsort(-weights, kind="stable")[:keep])
        self.neighbours[row, :keep] = self.neighbours[row, strongest]
        self.weights[row, :keep] = weights[strongest]
        self.neighbours[row, keep:length] = 0
        self.weights[row, keep:length] = 0.0
        self.lengths[row] = keep

    def _add_to_row(self, row: int, others: IntArray, amounts: npt.NDArray[np.float32]) -> None:
        length = int(self.lengths[row])
        stored = self.neighbours[row, :length]
        position = self._position
        position[stored] = self._slots[:length]
        slot = position[others]
        position[stored] = -1
        found = slot >= 0
        self.weights[row, slot[found]] += amounts[found]
        new = ~found
        others, amounts = others[new], amounts[new]
        n_new = len(others)
        if not n_new:
            return
        width = self.max_neighbours
        if n_new > width:
            others, amounts, n_new = others[:width], amounts[:width], width
        if length + n_new > width:
            self._prune(row, n_new)
            length = int(self.lengths[row])
        self.neighbours[row, length : length + n_new] = others
        self.weights[row, length : length + n_new] = amounts
        self.lengths[row] = length + n_new

    def _add_to_column(self, rows: IntArray, item: int, amounts: npt.NDArray[np.float32]) -> None:
        lengths = self.lengths[rows]
        width = int(lengths.max())
        hits = np.flatnonzero(self.neighbours[rows, :width] == item)
        which, slot = hits // width, hits % width
        used = slot < lengths[which]
        which, slot = which[used], slot[used]
        self.weights[rows[which], slot] += amounts[which]
        if len(which) == len(rows):
            return
        new = np.ones(len(rows), dtype=bool)
        new[which] = False
        rows, amounts, free = rows[new], amounts[new], lengths[new]
        for k in np.flatnonzero(free >= self.max_neighbours).tolist():
            self._prune(int(rows[k]), 1)
            free[k] = self.lengths[rows[k]]
        self.neighbours[rows, free] = item
        self.weights[rows, free] = amounts
        self.lengths[rows] = free + 1

    def learn_one(self, user: int, item: int, weight: float, history: IntArray) -> None:
        item = int(item)
        self.events += 1
        others: list[int] = history[-self.window :].tolist()
        others.reverse()
        if item in others or len(set(others)) < len(others):
            others = [other for other in dict.fromkeys(others) if other != item]
        top = max(item, max(others)) if others else item
        if top >= self.n_rows:
            if top >= len(self.lengths):
                self._grow(top + 1)
            self.n_rows = top + 1
        if self.link_decay < 1.0:
            self.scale /= self.link_decay
            if self.scale > _REBASE_AT:
                self._rebase()
        self.counts[item] += weight * self.scale
        if not others:
            return
        linked = np.array(others, dtype=np.intp)
        amounts = self._proximity[: len(others)] * np.float32(weight * self.scale)
        self._add_to_row(item, linked, amounts)
        self._add_to_column(linked, item, amounts)

    def _old_gather(self, history: IntArray) -> tuple[IntArray, Any, Any]:
        recent = history[-self.recent :]
        rows = np.asarray(recent, dtype=np.intp)[::-1]
        weights = self._recency[: len(rows)]
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            known = (rows >= 0) & (rows < self.n_rows)
            rows, weights = rows[known], weights[known]
        counts = self.counts[rows]
        if not counts.all():
            seen = counts > 0.0
            rows, weights, counts = rows[seen], weights[seen], counts[seen]
        width = int(self.lengths[rows].max()) if len(rows) else 0
        return (
            rows,
            self.neighbours[rows, :width],
            self.weights[rows, :width] * (weights / counts**self.alpha)[:, None],
        )

    def candidates(self, user: int, history: IntArray) -> tuple[IntArray, Any]:
        _, gathered, weighted = self._old_gather(history)
        if not gathered.size:
            return np.empty(0, dtype=np.int64), np.empty(0)
        neighbours = gathered.ravel()
        contributions = weighted.ravel()
        if self.n_rows <= 8 * len(neighbours):
            sums = np.bincount(neighbours, weights=contributions, minlength=self.n_rows)
            items = np.flatnonzero(sums)
            values = sums[items]
        else:
            items, inverse = np.unique(neighbours, return_inverse=True)
            values = np.bincount(inverse, weights=contributions)
            nonzero = values != 0.0
            items, values = items[nonzero], values[nonzero]
        factor = self.scale ** (self.alpha + self.beta - 1.0)
        return items.astype(np.int64), values * factor / self.counts[items] ** self.beta

    def explain(self, user: int, history: IntArray, item: int) -> int | None:
        rows, gathered, weighted = self._old_gather(history)
        if not gathered.size:
            return None
        hits = np.flatnonzero(gathered.ravel() == item)
        if not len(hits):
            return None
        contributions = weighted.ravel()[hits]
        best = int(np.argmax(contributions))
        if contributions[best] <= 0.0:
            return None
        return int(rows[hits[best] // gathered.shape[1]])

    def explain_many(self, user: int, history: IntArray, items: list[int]) -> list[int | None]:
        return [self.explain(user, history, item) for item in items]


def _assert_same_tables(new: SequenceItemKNN, old: SequenceItemKNN, when: str = "") -> None:
    assert (new.events, new.n_rows, new.scale) == (old.events, old.n_rows, old.scale), when
    for name in ("neighbours", "weights", "lengths", "counts"):
        a, b = getattr(new, name), getattr(old, name)
        assert a.dtype == b.dtype and a.shape == b.shape, (name, when)
        assert a.tobytes() == b.tobytes(), (name, when)  # bit for bit, -0.0 and NaN included


def _assert_same_reads(new: SequenceItemKNN, old: _Reference, history: IntArray) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):  # items learned with weight 0 only
        items, scores = new.candidates(0, history)
        old_items, old_scores = old.candidates(0, history)
    assert items.dtype == old_items.dtype and items.tobytes() == old_items.tobytes()
    assert scores.dtype == old_scores.dtype and scores.tobytes() == old_scores.tobytes()
    # Unknown ids, repeats, and item 0: empty slots hold it with weight 0 (explains nothing).
    picked = [*items[:12].tolist(), -1, 10**6, 0, *items[:3].tolist()]
    expected = [old.explain(0, history, item) for item in picked]
    assert new.explain_many(0, history, picked) == expected
    assert new.explain_many(0, history, []) == []
    assert [new.explain(0, history, item) for item in picked] == expected


def _stream(
    rng: random.Random, n_events: int, n_items: int, limit: int
) -> list[tuple[int, int, float, IntArray]]:
    """(user, item, weight, history) as `RecommenderModel.learn` passes them (unique, bounded
    histories that may hold the item itself), plus some raw ones with repeats, a skewed
    catalog so rows fill and prune, item 0 common (empty slots also read as item 0), and a
    few weights of 0 (links and counts that weigh nothing: ties at 0, unscored rows)."""
    histories: dict[int, array[int]] = {}
    events = []
    for _ in range(n_events):
        user = rng.randrange(40)
        item = min(int(rng.paretovariate(0.8)) - 1, n_items - 1)
        if rng.random() < 0.1:
            item = 0
        weight = rng.choice((1.0, 1.0, 1.0, 1.0, 3.0, 0.5, 0.0))  # 0.0: links that weigh nothing
        positives = histories.setdefault(user, array("i"))
        history = np.array(positives, dtype=np.int64)
        if rng.random() < 0.05:  # a caller that does not dedup: repeats and the item itself
            history = np.array([*positives, item, *positives[-3:]], dtype=np.int64)
        events.append((user, item, weight, history))
        _append_bounded(positives, item, limit)
    return events


@pytest.mark.parametrize(
    "params",
    [
        {"window": 6, "max_neighbours": 4},  # prunes constantly, a quarter of 4 is one slot
        {"window": 12, "max_neighbours": 8},  # window > max_neighbours: closest links only
        {"window": 10, "max_neighbours": 16, "link_decay": 0.9},  # rebases every ~260 events
        {"window": 40, "max_neighbours": 32, "proximity_decay": 0.8, "link_decay": 0.999},
        {},  # the defaults
    ],
    ids=["prune-4", "window>width", "decay-rebase", "decay-slow", "defaults"],
)
def test_learning_matches_the_reference_bit_for_bit(params: dict[str, Any]) -> None:
    rng = random.Random(11)
    new, old = SequenceItemKNN(**params), _Reference(**params)
    events = _stream(rng, 3_000, 300, limit=60)
    for k, (user, item, weight, history) in enumerate(events):
        new.learn_one(user, item, weight, history)
        old.learn_one(user, item, weight, history)
        if k % 250 == 0:
            _assert_same_tables(new, old, f"event {k}")
            _assert_same_reads(new, old, history)
    _assert_same_tables(new, old)
    if params.get("link_decay", 1.0) == 0.9:
        assert new.scale < _REBASE_AT < 0.9 ** -len(events)  # it rebased (about 11 times)
    if "max_neighbours" in params:  # narrow tables: rows filled and were pruned
        assert (new.lengths[: new.n_rows] == new.max_neighbours).any()
    for user in range(40):
        history = np.array(
            [e[3][-1] for e in events if e[0] == user and len(e[3])][-25:], dtype=np.int64
        )
        _assert_same_reads(new, old, history)
    for history in ([], [-3, 5, 10**6], [0], [7, 7, 7]):  # empty, unknown, item 0, repeats
        _assert_same_reads(new, old, np.array(history, dtype=np.int64))


def test_empty_slots_and_weightless_links_explain_nothing() -> None:
    """A gather is as wide as its longest row, so shorter rows show empty slots: item 0 with
    weight 0. Those, like links learned with weight 0, contribute 0 and explain nothing."""
    new, old = SequenceItemKNN(), _Reference()
    for ranker in (new, old):
        ranker.learn_one(0, 5, 1.0, np.array([1], dtype=np.int64))  # row 5: one link
        ranker.learn_one(1, 7, 1.0, np.array([2, 3, 4], dtype=np.int64))  # row 7: three
        ranker.learn_one(2, 8, 0.0, np.array([7], dtype=np.int64))  # 7 -> 8 weighs 0
    history = np.array([5, 7], dtype=np.int64)
    assert new.explain_many(0, history, [0, 8, 2, 1]) == [None, None, 7, 5]
    _assert_same_reads(new, old, history)


def test_int32_histories_and_numpy_weights_are_learned_alike() -> None:
    """Callers other than the pipeline: int32 index arrays, numpy float weights."""
    rng = random.Random(2)
    new, old = SequenceItemKNN(window=5, max_neighbours=6), _Reference(window=5, max_neighbours=6)
    for user, item, weight, history in _stream(rng, 800, 60, limit=20):
        for ranker in (new, old):
            ranker.learn_one(user, item, np.float32(weight), history.astype(np.int32))
    _assert_same_tables(new, old)


def test_strongest_is_the_stable_argsort_selection() -> None:
    rng = np.random.default_rng(4)
    for trial in range(400):
        length = int(rng.integers(1, 60))
        pool = rng.integers(1, 6, size=3) if trial % 2 else rng.random(3) * 100
        weights = rng.choice(pool, size=length).astype(np.float32)  # many ties
        if trial % 7 == 0:
            weights[rng.integers(length)] = np.nan
        if trial % 5 == 0:
            weights[rng.integers(length)] = -0.0
        for keep in {0, 1, length // 2, length - 1, length, length + 3}:
            expected = np.sort(np.argsort(-weights, kind="stable")[: max(keep, 0)])
            np.testing.assert_array_equal(_strongest(weights, keep), expected)


def test_pickled_attributes_are_unchanged() -> None:
    """The pipeline's STATE_FORMAT versions these; the fast paths add no pickled state."""
    ranker = SequenceItemKNN(window=3, max_neighbours=4)
    for user, seq in enumerate([[1, 2, 3], [2, 3, 4]]):
        for k, item in enumerate(seq):
            ranker.learn_one(user, item, 1.0, np.array(seq[:k], dtype=np.int64))
    ranker.candidates(0, np.array([2, 3], dtype=np.int64))  # fills the read cache
    state = ranker.__getstate__()
    assert sorted(state) == sorted(
        [
            "window",
            "proximity_decay",
            "recent",
            "recency_decay",
            "alpha",
            "beta",
            "last_boost",
            "link_decay",
            "max_neighbours",
            "events",
            "n_rows",
            "neighbours",
            "weights",
            "lengths",
            "counts",
            "_slots",
            "_position",
            "_proximity",
            "scale",
            "_recency",
            "_gathered",
        ]
    )
    assert state["_gathered"] is None
    restored = pickle.loads(pickle.dumps(ranker))
    _assert_same_tables(restored, ranker)
    assert (restored._position == -1).all()  # the scratch array is left clean


@needs_ml100k
def test_ml100k_clicks_learn_the_same_tables() -> None:
    """The production configuration on the real click stream (ratings >= 4, ~55k events),
    histories kept as `RecommenderModel` keeps positives (unique, last 200)."""
    path = ml100k_path()
    assert path is not None
    rows = sorted(read_ratings(path), key=lambda row: row[3])
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    positives: dict[int, array[int]] = {}
    new, old = SequenceItemKNN(), _Reference()
    for n, (user_id, item_id, _, _) in enumerate(row for row in rows if row[2] >= 4.0):
        user = users.setdefault(user_id, len(users))
        item = items.setdefault(item_id, len(items))
        history = np.array(positives.setdefault(user, array("i")), dtype=np.int64)
        new.learn_one(user, item, 1.0, history)
        old.learn_one(user, item, 1.0, history)
        _append_bounded(positives[user], item, 200)
        if n % 5_000 == 0:
            _assert_same_reads(new, old, history)
    _assert_same_tables(new, old)
    assert new.events > 50_000 and (new.lengths[: new.n_rows] == 400).any()
    for user in range(0, len(users), 37):
        _assert_same_reads(new, old, np.array(positives[user], dtype=np.int64))
