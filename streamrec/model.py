"""Everything the recommender has learned, in one picklable object.

`RecommenderModel` numbers users and items densely (0, 1, 2, ... in order of first appearance),
keeps a bounded history per user (to exclude seen items and to feed the ranker), time-decayed
item popularity (cold start), and the two learners: a rating model for explicit ratings and an
item ranker for top-N. Learners only ever see integer ids.

Reading never creates state: lookups of unknown ids use `.get`, and learners are only asked to
predict for ids they have learned (or guard themselves).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import struct
import sys
import types
from array import array
from typing import Any

import numpy as np

from streamrec.events import AnyEvent, RatingEvent
from streamrec.learners import make_ranker, make_rating_model
from streamrec.learners.base import IntArray, ItemRanker, RatingModel
from streamrec.learners.mf_ranker import MFRanker
from streamrec.settings import ModelSettings

_LN2 = math.log(2.0)
_ITEM_SIZE = array("i").itemsize  # histories hold C ints
_LOW_BYTE = 0 if sys.byteorder == "little" else _ITEM_SIZE - 1  # offset of an int's low byte
_NOT_STATE = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    type,
    functools.partial,
)


def _grown(array: np.ndarray, n: int) -> np.ndarray:
    """`array` with room for at least `n` entries (capacity doubles, new slots are 0)."""
    if n <= len(array):
        return array
    bigger = np.zeros(max(n, 2 * len(array)), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class DecayedCounts:
    """Per-item counts that halve every `half_life` seconds of event time.

    Stored scaled by exp(rate * (t - t_ref)) so an update touches one slot; rebased before the
    scale factor could overflow.
    """

    def __init__(self, half_life_s: float) -> None:
        self.rate = _LN2 / half_life_s
        self.t_ref: float | None = None
        self.values = np.zeros(64, dtype=np.float64)

    def grow(self, n: int) -> None:
        self.values = _grown(self.values, n)

    def add(self, index: int, t: float, weight: float) -> None:
        t_ref = self.t_ref
        if t_ref is None:
            t_ref = self.t_ref = t
        exponent = (t - t_ref) * self.rate
        values = self.values
        if exponent > 200.0:
            values *= math.exp(-exponent)
            self.t_ref, exponent = t, 0.0
        # `values[index] += x` in Python floats: the same IEEE sum, without a numpy scalar.
        values[index] = values.item(index) + weight * math.exp(exponent)


class RecommenderModel:
    """Id maps, user histories, popularity and the learners, updated one event at a time."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.user_index: dict[str, int] = {}
        self.user_ids: list[str] = []
        self.item_index: dict[str, int] = {}
        self.item_ids: list[str] = []
        # int32 item indices: half the memory of Python ints or int64 at 1M users.
        self.seen: list[array[int]] = []  # every item the user interacted with, oldest first
        self.positives: list[array[int]] = []  # positively-rated/clicked/bought items, in order
        self.popularity = DecayedCounts(settings.popularity_half_life_s)
        # Event time each item was first seen (read per refresh for the 'new' source): numpy, so
        # a refresh slices it instead of converting a Python list of the whole catalog.
        self.item_first_seen = np.zeros(64, dtype=np.float64)
        self.rating_model: RatingModel = make_rating_model(
            settings.rating_model,
            rating_scale=(settings.rating_min, settings.rating_max),
            **settings.rating_params,
        )
        # The 'mf' ranker reads the rating model's factors, so it is built from it.
        self.ranker: ItemRanker = (
            MFRanker(self.rating_model)
            if settings.ranker == "mf"
            else make_ranker(settings.ranker, **settings.ranker_params)
        )
        self.events_learned = 0
        self.last_event_time = 0.0

    # ---- ids -------------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _user(self, user_id: str) -> int:
        index = self.user_index.get(user_id)
        if index is None:
            index = self.user_index[user_id] = len(self.user_ids)
            self.user_ids.append(user_id)
            self.seen.append(array("i"))
            self.positives.append(array("i"))
        return index

    def _item(self, item_id: str, t: float) -> int:
        index = self.item_index.get(item_id)
        if index is None:
            index = self.item_index[item_id] = len(self.item_ids)
            self.item_ids.append(item_id)
            self.item_first_seen = _grown(self.item_first_seen, index + 1)
            self.item_first_seen[index] = t
            self.popularity.grow(index + 1)
        return index

    # ---- learning --------------------------------------------------------------------------

    def positive_weight(self, event: AnyEvent) -> float:
        """How much this event says 'the user likes the item' (0 if it says nothing)."""
        s = self.settings
        if event.type == "click":
            return s.click_weight
        if event.type == "purchase":
            return s.purchase_weight
        return s.rating_weight if event.rating >= s.positive_threshold else 0.0

    def learn(self, event: AnyEvent) -> int:
        """Learn one event; returns the user's index (the pipeline marks that user dirty)."""
        # Known ids are the common case: look them up here, call the helpers only to add one.
        u = self.user_index.get(event.user_id)
        if u is None:
            u = self._user(event.user_id)
        t = event.timestamp
        i = self.item_index.get(event.item_id)
        if i is None:
            i = self._item(event.item_id, t)
        if isinstance(event, RatingEvent):
            self.rating_model.learn_one(u, i, event.rating)
        weight = self.positive_weight(event)
        limit = self.settings.history_length
        if weight > 0.0:
            positives = self.positives[u]
            ranker = self.ranker
            if getattr(ranker, "learns", True):  # no history copy for a ranker that ignores it
                ranker.learn_one(u, i, weight, np.array(positives, dtype=np.int64))
            _append_bounded(positives, i, limit)
            self.popularity.add(i, t, weight)
        seen = self.seen[u]
        if _position(seen, i) < 0:  # a set for exclusion: order only decides which ages out
            seen.append(i)
            if len(seen) > limit:
                del seen[0]
        self.events_learned += 1
        if t > self.last_event_time:  # max(last, t), without the builtin call
            self.last_event_time = t
        return u

    # ---- reading (never creates state) -----------------------------------------------------

    # Copies, not np.frombuffer views: a live view would forbid the array from growing.
    def seen_items(self, user: int) -> IntArray:
        return np.array(self.seen[user], dtype=np.int64)

    def positive_items(self, user: int) -> IntArray:
        return np.array(self.positives[user], dtype=np.int64)

    def has_seen(self, user_id: str, item_id: str) -> bool:
        u = self.user_index.get(user_id)
        i = self.item_index.get(item_id)
        return u is not None and i is not None and i in self.seen[u]

    def predict_rating(self, user_id: str, item_id: str) -> float:
        """Predicted rating, clipped to the scale. Unknown ids fall back inside the learner."""
        s = self.settings
        u = self.user_index.get(user_id, -1)
        i = self.item_index.get(item_id, -1)
        y = self.rating_model.predict_one(u, i)
        return min(max(y, s.rating_min), s.rating_max)

    def digest(self) -> str:
        """SHA-256 over every learned parameter in a canonical order.

        Two models that learned the same events in the same order print the same digest, in any
        process (no hash-order or object-identity dependence), which is what the crash tests
        compare.
        """
        h = hashlib.sha256()
        # Settings are configuration, not learning (and pydantic tracks which fields were set
        # explicitly, which would make equal models hash differently).
        _feed(h, {k: v for k, v in self.__dict__.items() if k != "settings"}, set())
        return h.hexdigest()


def _position(history: array[int], item: int) -> int:
    """`history.index(item)`, or -1 if absent; ~0.4 µs where `item in history` took ~1.4 µs.

    (Per event on ML-100K, where histories average ~90 entries; the scan runs twice per event.)
    `in` boxes every entry into a Python int to compare it. Here `bytes.find` (memchr) scans the
    raw buffer for the item's low byte, and only hits on an entry's low byte are compared, as ints,
    so the answer is exact whatever the hits. A zero low byte would hit most entries' high bytes,
    so those items (1 in 256) take the plain scan.
    """
    low = item & 0xFF  # two's complement, so right for negative entries too
    if not low:
        return history.index(item) if item in history else -1
    data = history.tobytes()
    k = data.find(low)
    while k >= 0:
        if k % _ITEM_SIZE == _LOW_BYTE and history[k // _ITEM_SIZE] == item:
            return k // _ITEM_SIZE
        k = data.find(low, k + 1)
    return -1


def _append_bounded(history: array[int], item: int, limit: int) -> None:
    """Append `item` as most recent, moving it if already present, keeping the last `limit`."""
    k = _position(history, item)
    if k >= 0:
        del history[k]
    history.append(item)
    if len(history) > limit:
        del history[: len(history) - limit]


def _feed(h: Any, obj: Any, active: set[int]) -> None:
    """Hash `obj` canonically: containers in key order, numbers exactly, skip callables."""
    if obj is None or isinstance(obj, bool | int | str):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, float):
        h.update(struct.pack("<d", obj))
    elif isinstance(obj, np.ndarray):
        h.update(str(obj.dtype).encode() + str(obj.shape).encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        h.update(obj.tobytes())
    elif isinstance(obj, array):
        h.update(obj.typecode.encode() + obj.tobytes())
    elif isinstance(obj, random.Random):
        _feed(h, obj.getstate(), active)
    elif isinstance(obj, np.random.RandomState):
        _feed(h, obj.get_state(legacy=False), active)
    elif isinstance(obj, np.random.Generator):
        _feed(h, obj.bit_generator.state, active)
    elif isinstance(obj, _NOT_STATE):
        return
    else:
        if id(obj) in active:
            return
        active.add(id(obj))
        if isinstance(obj, dict) and len(obj) > 64 and _feed_bulk(h, obj):
            pass
        elif isinstance(obj, dict):
            h.update(b"{")
            for key in sorted(obj, key=_sort_key):
                _feed(h, key, active)
                _feed(h, obj[key], active)
            h.update(b"}")
        elif isinstance(obj, list | tuple):
            h.update(b"[")
            for value in obj:
                _feed(h, value, active)
            h.update(b"]")
        elif isinstance(obj, set | frozenset):
            _feed(h, sorted(obj, key=_sort_key), active)
        else:  # what pickling would keep: classes drop caches in __getstate__
            h.update(type(obj).__qualname__.encode())
            _feed(h, obj.__getstate__(), active)
        active.discard(id(obj))


def _feed_bulk(h: Any, obj: dict[Any, Any]) -> bool:
    """Hash a large int-keyed dict of floats or equal-shape arrays in bulk; False if it is not one.

    A million user biases or latent rows hashed one `_feed` call at a time take seconds; as a few
    numpy buffers they take milliseconds. The byte layout differs from the generic path, but it is
    just as canonical (key order, exact values), which is all a digest needs.
    """
    keys = sorted(obj)  # ints sort natively; anything unorderable falls back below
    if not all(type(k) is int for k in keys):
        return False
    values = [obj[k] for k in keys]
    first = values[0]
    if all(type(v) is float for v in values):
        block = np.array(values, dtype=np.float64)
    elif isinstance(first, np.ndarray) and all(
        isinstance(v, np.ndarray) and v.shape == first.shape and v.dtype == first.dtype
        for v in values
    ):
        block = np.stack(values)
    else:
        return False
    h.update(b"bulk{" + str(block.dtype).encode() + str(block.shape).encode())
    h.update(np.array(keys, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(block).tobytes())
    h.update(b"}")
    return True


def _sort_key(key: Any) -> tuple[str, str]:
    return (type(key).__name__, repr(key))
