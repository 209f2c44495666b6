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

from streamrec.contract.catalog import AnyCatalogRecord, CatalogItem, RetireItem
from streamrec.contract.events import AnyEvent, RatingEvent
from streamrec.core.catalog import Catalog
from streamrec.learners import make_ranker, make_rating_model
from streamrec.learners.base import FloatArray, IntArray, ItemRanker, RatingModel
from streamrec.learners.mf_ranker import MFRanker
from streamrec.settings import ModelSettings

_LN2 = math.log(2.0)
_ENTRY = struct.Struct("i")  # one history entry: a native C int, as `array('i')` holds it
_ENTRY_SIZE = _ENTRY.size
_pack = _ENTRY.pack
_LOW_BYTE = 0 if sys.byteorder == "little" else _ENTRY_SIZE - 1  # offset of an entry's low byte
_INT64 = np.dtype(np.int64)
_CINT = np.dtype(np.intc)  # numpy's name for a C int
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


class Histories:
    """Every user's bounded item history, as one `bytes` of packed C ints per user.

    A history is short (one or two items for most users of a large stream), and per-user Python
    objects cost more than the items: an `array('i')` is an 80-byte object plus a separate buffer,
    ~110 B for one item, where `bytes` is one 33-byte object plus the data (40 B for one item) and
    an empty history is the shared `b""` (only the list slot). An append builds a new `bytes`
    (histories are bounded, so that copy is small), and the membership search runs on the bytes
    themselves (`_position`) without copying them out of an array first.

    `histories[user]` is an `array('i')` copy (what the lists used to hold, for readers that
    iterate); `items(user)` the int64 numpy copy the rankers take. `data` is the list itself, for
    the learning loop. Pickles and digests see two arrays, the lengths and all items in user order:
    a million tiny objects pickle and hash far slower than two buffers.
    """

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, user: int) -> array[int]:
        return array("i", self.data[user])

    def items(self, user: int) -> IntArray:
        """The user's items, oldest first, as a new int64 array."""
        return np.frombuffer(self.data[user], _CINT).astype(_INT64)

    def __getstate__(self) -> dict[str, Any]:
        data = self.data
        lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
        lengths //= _ENTRY_SIZE
        return {"lengths": lengths, "items": np.frombuffer(b"".join(data), _CINT)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        flat = np.asarray(state["items"], dtype=_CINT).tobytes()
        ends = (np.cumsum(state["lengths"]) * _ENTRY_SIZE).tolist()
        # Empty slices are all the one shared b"", as when the users were added.
        self.data = [flat[a:b] for a, b in zip([0, *ends], ends, strict=False)]


class RecommenderModel:
    """Id maps, user histories, popularity and the learners, updated one event at a time."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.user_index: dict[str, int] = {}
        self.user_ids: list[str] = []
        self.item_index: dict[str, int] = {}
        self.item_ids: list[str] = []
        # C int item indices, packed: see `Histories`.
        self.seen = Histories()  # every item the user interacted with, oldest first
        self.positives = Histories()  # positively-rated/clicked/bought items, in order
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
        # What each item is (titles, categories, availability, content), from the catalog stream.
        self.catalog = Catalog()
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
            self.seen.data.append(b"")
            self.positives.data.append(b"")
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
        s = self.settings
        if isinstance(event, RatingEvent):
            rating = event.rating
            self.rating_model.learn_one(u, i, rating)
            # positive_weight, without the call (a RatingEvent's type is "rating")
            weight = s.rating_weight if rating >= s.positive_threshold else 0.0
        else:
            weight = self.positive_weight(event)
        size = s.history_length * _ENTRY_SIZE
        entry = _pack(i)
        if weight > 0.0:
            positives = self.positives.data
            history = positives[u]
            ranker = self.ranker
            if getattr(ranker, "learns", True):  # no history copy for a ranker that ignores it
                ranker.learn_one(u, i, weight, np.frombuffer(history, _CINT).astype(_INT64))
            positives[u] = _appended(history, entry, size)
            self.popularity.add(i, t, weight)
        seen = self.seen.data
        history = seen[u]
        if _position(history, entry) < 0:  # a set for exclusion: order only decides which ages out
            history += entry
            seen[u] = history[-size:] if len(history) > size else history
        self.events_learned += 1
        if t > self.last_event_time:  # max(last, t), without the builtin call
            self.last_event_time = t
        return u

    def learn_catalog(self, record: AnyCatalogRecord) -> None:
        """Apply one catalog record. An item no event named yet is added (first seen at the
        record's timestamp, else at the stream's latest event time), so it can be shown before
        its first click; a rule replaces the stream's rule of that name."""
        if not isinstance(record, CatalogItem | RetireItem):
            self.catalog.set_rule(record)
            return
        index = self.item_index.get(record.item_id)
        if index is None:
            first_seen = getattr(record, "timestamp", None)
            if first_seen is None:
                first_seen = self.last_event_time
            index = self._item(record.item_id, first_seen)
        if isinstance(record, RetireItem):
            self.catalog.retire(index)
        else:
            self.catalog.upsert(index, record)

    def content_scores(self, users: IntArray) -> FloatArray | None:
        """(len(users) × n_items) content similarity of each item to each user's recent
        positives, or None when the catalog has no content or content is switched off."""
        content = self.catalog.content
        if not len(content) or self.settings.content_weight <= 0.0:
            return None
        depth = self.settings.content_history
        histories = [self.positive_items(int(u))[-depth:] for u in users]
        return content.scores(histories, self.n_items)

    # ---- reading (never creates state) -----------------------------------------------------

    def seen_items(self, user: int) -> IntArray:
        return np.frombuffer(self.seen.data[user], _CINT).astype(_INT64)

    def positive_items(self, user: int) -> IntArray:
        return np.frombuffer(self.positives.data[user], _CINT).astype(_INT64)

    def has_seen(self, user_id: str, item_id: str) -> bool:
        u = self.user_index.get(user_id)
        i = self.item_index.get(item_id)
        return u is not None and i is not None and _position(self.seen.data[u], _pack(i)) >= 0

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
        # Settings are configuration, not learning (and pydantic tracks which fields were set
        # explicitly, which would make equal models hash differently).
        return canonical_digest({k: v for k, v in self.__dict__.items() if k != "settings"})


def canonical_digest(obj: Any) -> str:
    """SHA-256 of `obj` in a canonical order: equal content, equal digest, in any process."""
    h = hashlib.sha256()
    _feed(h, obj, set())
    return h.hexdigest()


def _position(history: bytes, entry: bytes) -> int:
    """Index of the packed item `entry` in a packed history, or -1 (as `array.index` would say).

    ~0.3 µs for a 90-item history (`item in array` boxed every entry: ~1.4 µs): `bytes.find` of
    the entry's low byte is a memchr, and only hits on an entry's low byte are compared, four
    bytes at once. A zero low byte would hit most entries' high bytes, so those items (1 in 256)
    are searched for whole, skipping hits that straddle two entries. (A whole-entry search for
    every item is slower: with small ids most bytes are zero, so its skip table rarely skips.)
    """
    low = entry[_LOW_BYTE]
    if not low:
        k = history.find(entry)
        while k % _ENTRY_SIZE and k > 0:
            k = history.find(entry, k + 1)
        return k // _ENTRY_SIZE  # -1 stays -1
    k = history.find(low)
    while k >= 0:
        if k % _ENTRY_SIZE == _LOW_BYTE and history.startswith(entry, k - _LOW_BYTE):
            return k // _ENTRY_SIZE
        k = history.find(low, k + 1)
    return -1


def _appended(history: bytes, entry: bytes, size: int) -> bytes:
    """`history` with `entry` as most recent (moved there if present), cut to its last `size`
    bytes (the bound in entries times the entry size)."""
    k = _position(history, entry)
    if k < 0:
        history += entry
        return history[-size:] if len(history) > size else history
    start = k * _ENTRY_SIZE
    end = start + _ENTRY_SIZE
    if end == len(history):  # already the most recent (a repeated click): nothing moves
        return history
    return b"".join((history[:start], history[end:], entry))


def _append_bounded(history: array[int], item: int, limit: int) -> None:
    """`_appended` for an `array('i')` history, in place: the layout histories had before
    `Histories`, which other tests still build reference histories with."""
    if item in history:
        history.remove(item)
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
