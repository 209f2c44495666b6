"""One side of a matrix factorization in dense arrays, and the dict views River's code sees.

River keeps each latent vector as its own small array in a defaultdict, and each bias as a float in
another. Scoring a user against the whole catalog then means one `predict_one` per item (about
1 ms per user for 1,700 items), and at a million users the per-key Python objects (an array, a
float, dict entries) take more memory than the numbers they hold. Here each side, users and items,
is one `DenseTable`: an `n × factors` matrix, a vector of biases and one flag byte per row. River's
code sees a table through dict-like views (`DenseRows` hands out row views into the matrix, which
River's SGD updates in place; `DenseBiases` reads and writes the vector), so every learned number
and prediction is bit-identical to River's.

This module is the storage alone (keys → rows, growth, pickling); `biased_mf.py` is the learner
that uses two tables. Kept apart because the table's key/row bookkeeping is subtle enough to be
read, and tested (tests/test_memory_layout.py), without the SGD step beside it.
"""

from __future__ import annotations

import numbers
import typing
from array import array
from collections.abc import Callable, Hashable, Iterator, MutableMapping

import numpy as np
import numpy.typing as npt

from streamrec.learners.base import FloatArray, IntArray

FlagArray = npt.NDArray[np.uint8]

__all__ = ["HAS_BIAS", "HAS_LATENT", "DenseBiases", "DenseRows", "DenseTable"]

_INITIAL_ROWS = 64
_HOT_ROWS = 1 << 14  # row views `DenseTable.hot` keeps at most (~4 MB)
_frombuffer = np.frombuffer

# A row's flag byte. 0: the row is free. HAS_BIAS / HAS_LATENT: the key of the row is in the bias /
# latent view (the `bit` that `ensure` and `keys_with` take). LISTED: that key is in
# `DenseTable.rows`; without it, the key is the int equal to the row (the pipeline's dense ids),
# which is stored nowhere.
HAS_BIAS = 1
HAS_LATENT = 2
_LISTED = 4


def _as_row(key: object) -> int:
    """The non-negative int equal to `key` (whose row it may own unlisted), or -1.

    Not only ints: a dict treats `True`, `1.0` and `np.int64(1)` as the key `1`, and so do the
    views, so they find the row of the int 1.
    """
    if type(key) is int:
        return key if key >= 0 else -1
    if isinstance(key, numbers.Number):
        try:
            row = int(key)  # type: ignore[call-overload]
        except (TypeError, ValueError, OverflowError):
            return -1
        return row if row >= 0 and row == key else -1
    return -1


class DenseTable:
    """One side of a matrix factorization (users or items): latent rows, biases, a flag per row.

    Memory per key is the numbers themselves (`n_factors` + 1 floats) and one flag byte: no Python
    object per key. Keys map to rows so that the common case stores nothing: a non-negative int
    key `k` gets row `k` when that row is free (with the pipeline's dense ids, row == id and
    column `j` of a score matrix is item `j`). Any other key (a string, a negative int, an int
    whose row another key took first or that lies beyond twice the capacity) gets the row after
    the highest in use and is *listed* in `rows`. The same row holds a key's bias and latent
    vector; the two views (`DenseBiases`, `DenseRows`) each have a flag bit saying whether they
    hold the key, as River's two dicts do.

    Capacity doubles as rows are needed; `matrix`, `biases` and `flags` always have the same length.
    `biases` is an `array('d')` (a Python float in and out without numpy's scalar conversion), and
    `flags` a `bytearray`, for the same reason; neither is ever handed out as a numpy view that
    could outlive a call, as a live buffer export would forbid growing them.
    """

    __slots__ = (
        "bias_initializer",
        "biases",
        "flags",
        "hot",
        "latent_initializer",
        "matrix",
        "n_biases",
        "n_factors",
        "n_latents",
        "n_rows",
        "rows",
    )

    def __init__(
        self,
        n_factors: int,
        bias_initializer: Callable[..., typing.Any],
        latent_initializer: Callable[..., typing.Any],
    ) -> None:
        self.n_factors = n_factors
        self.bias_initializer = bias_initializer  # River's `weight_initializer`, called with ()
        self.latent_initializer = latent_initializer  # called with shape=n_factors, as River
        self.matrix: FloatArray = np.zeros((_INITIAL_ROWS, n_factors))
        self.biases = array("d", bytes(8 * _INITIAL_ROWS))
        self.flags = bytearray(_INITIAL_ROWS)
        self.rows: dict[Hashable, int] = {}  # listed keys only
        self.n_rows = 0  # one past the highest row in use
        self.n_biases = 0
        self.n_latents = 0
        self.hot: dict[Hashable, tuple[int, FloatArray]] = {}

    def remember(self, key: Hashable, row: int) -> tuple[int, FloatArray]:
        """`(row, row view)` of a key both views hold, kept in `hot` for the next event.

        Making a row view costs about as much as a dict lookup, and `learn_one` needs two per
        event plus a check that the ids are known; a hit in `hot` gives all three at once (a
        bool or `1.0` finds the int 1's entry, as in a dict). Bounded, unlike a view per key: when
        full it is emptied. Growing the matrix re-points its views. Not state: never pickled.
        """
        hot = self.hot
        if len(hot) >= _HOT_ROWS:
            hot.clear()
        entry = hot[key] = (row, self.matrix[row])
        return entry

    def find(self, key: object) -> int:
        """The row of `key`, or -1 if no view holds it (a dict lookup's semantics)."""
        row = key if type(key) is int else _as_row(key)
        if 0 <= row < self.n_rows:
            flag = self.flags[row]
            if flag and not flag & _LISTED:
                return row
        return self.rows.get(key, -1)

    def ensure(self, key: Hashable, bit: int) -> int:
        """The row of `key` in the view `bit`, created as River's defaultdicts would if missing:
        a bias from `bias_initializer()`, a latent vector from `latent_initializer(shape=...)`."""
        row = self.find(key)
        if row >= 0 and self.flags[row] & bit:
            return row
        if bit == HAS_BIAS:
            return self.put_bias(key, self.bias_initializer(), row)
        return self.put_latent(key, self.latent_initializer(shape=self.n_factors), row)

    def put_bias(self, key: Hashable, value: typing.Any, row: int = -2) -> int:
        """Store `key`'s bias (`row`: its row or -1 if known, else looked up); returns the row."""
        number = float(value)  # before a row is taken, so a bad value leaves no trace
        if row == -2:
            row = self.find(key)
        if row < 0:
            row = self._add(key)
        self.biases[row] = number
        self._mark(row, HAS_BIAS)
        return row

    def put_latent(self, key: Hashable, value: typing.Any, row: int = -2) -> int:
        """Copy `key`'s latent vector into its row (`row` as in `put_bias`); returns the row."""
        vector = np.asarray(value, dtype=np.float64)
        if vector.shape != (self.n_factors,):  # checked before a row is taken, as above
            vector = np.broadcast_to(vector, (self.n_factors,))
        if row == -2:
            row = self.find(key)
        if row < 0:
            row = self._add(key)
        self.matrix[row] = vector
        self._mark(row, HAS_LATENT)
        return row

    def _add(self, key: Hashable) -> int:
        """A row for `key`, which no view holds yet."""
        flags = self.flags
        # Its own row if free, and if at most doubling the arrays makes room: a huge int id is
        # listed rather than allocating every row below it.
        implied = (
            isinstance(key, int | np.integer)
            and not isinstance(key, bool)
            and 0 <= key < 2 * max(len(flags), _INITIAL_ROWS)
            and (key >= len(flags) or not flags[key])
        )
        row = int(key) if implied else self.n_rows  # type: ignore[call-overload]
        if row >= len(flags):
            self._grow(row + 1)
        if not implied:
            self.rows[key] = row
        self.flags[row] = 0 if implied else _LISTED
        if row >= self.n_rows:
            self.n_rows = row + 1
        return row

    def _mark(self, row: int, bit: int) -> None:
        flag = self.flags[row]
        if not flag & bit:
            self.flags[row] = flag | bit
            if bit == HAS_BIAS:
                self.n_biases += 1
            else:
                self.n_latents += 1

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self.flags), _INITIAL_ROWS)
        extra = capacity - len(self.flags)
        matrix = np.zeros((capacity, self.n_factors))
        matrix[: len(self.matrix)] = self.matrix
        self.matrix = matrix
        self.hot = {key: (row, matrix[row]) for key, (row, _) in self.hot.items()}
        self.biases.frombytes(bytes(8 * extra))
        self.flags.extend(bytes(extra))

    def lookup(self, keys: list[Hashable]) -> tuple[IntArray, FlagArray]:
        """Rows (-1 if absent) and flag bytes (0 if absent) of many keys at once.

        Int keys (the pipeline's) are resolved with a few array operations; anything else, and
        ints that are not their own row, one `find` at a time.
        """
        rows = np.array(keys) if keys else np.zeros(0, dtype=np.int64)
        if rows.ndim != 1 or rows.dtype.kind != "i":
            found = [self.find(key) for key in keys]
            table = self.flags
            flags = np.array([table[row] if row >= 0 else 0 for row in found], dtype=np.uint8)
            return np.array(found, dtype=np.int64), flags
        rows = rows.astype(np.int64, copy=False)
        inside = (rows >= 0) & (rows < self.n_rows)
        flags = np.zeros(len(rows), dtype=np.uint8)
        flags[inside] = _frombuffer(self.flags, np.uint8)[rows[inside]]
        implied = (flags != 0) & (flags & _LISTED == 0)
        if not implied.all():
            flags[~implied] = 0
            rows = np.where(implied, rows, -1)
            if self.rows:
                for k in np.flatnonzero(~implied).tolist():
                    row = self.rows.get(keys[k], -1)
                    if row >= 0:
                        rows[k] = row
                        flags[k] = self.flags[row]
        return rows, flags

    def keys_with(self, bit: int) -> list[Hashable]:
        """The keys a view holds, in row order."""
        flags = _frombuffer(self.flags, np.uint8, count=self.n_rows)
        rows: list[int] = np.flatnonzero(flags & bit).tolist()
        listed: dict[int, Hashable] = {row: key for key, row in self.rows.items()}
        return [listed.get(row, row) for row in rows] if listed else list(rows)

    def __getstate__(self) -> dict[str, typing.Any]:
        """The rows in use, never the spare capacity: pickles and digests depend only on what was
        learned, not on how the arrays grew. Numpy arrays pickle as one buffer each (and the
        model digest hashes them in bulk)."""
        n = self.n_rows
        return {
            "n_factors": self.n_factors,
            "bias_initializer": self.bias_initializer,
            "latent_initializer": self.latent_initializer,
            "matrix": self.matrix[:n],
            "biases": _frombuffer(self.biases, np.float64, count=n).copy(),
            "flags": _frombuffer(self.flags, np.uint8, count=n).copy(),
            "rows": dict(self.rows),
        }

    def __setstate__(self, state: dict[str, typing.Any]) -> None:
        self.n_factors = state["n_factors"]
        self.bias_initializer = state["bias_initializer"]
        self.latent_initializer = state["latent_initializer"]
        # Learning writes rows in place: an array unpickled from bytes would be read-only.
        self.matrix = np.require(state["matrix"], np.float64, ["C", "W"])
        flags = np.asarray(state["flags"], dtype=np.uint8)
        self.biases = array("d", np.asarray(state["biases"], dtype=np.float64).tobytes())
        self.flags = bytearray(flags.tobytes())
        self.rows = dict(state["rows"])
        self.n_rows = len(self.flags)
        self.n_biases = int(np.count_nonzero(flags & HAS_BIAS))
        self.n_latents = int(np.count_nonzero(flags & HAS_LATENT))
        self.hot = {}


class _View(MutableMapping[Hashable, typing.Any]):
    """A dict-like view of one `DenseTable` for River's code: keys are held when the view's flag
    bit is set; a missing key is created on `[]` (as River's defaultdicts do), never on `get`."""

    __slots__ = ("table",)
    _bit = 0

    def __init__(self, table: DenseTable) -> None:
        self.table = table

    def _row(self, key: object) -> int:
        table = self.table
        row = table.find(key)
        return row if row >= 0 and table.flags[row] & self._bit else -1

    def __contains__(self, key: object) -> bool:
        # An unhashable key raises TypeError, as with a dict.
        return key in self.table.hot or self._row(key) >= 0

    def __delitem__(self, key: Hashable) -> None:
        raise TypeError(f"keys of a {type(self).__name__} cannot be deleted")

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.table.keys_with(self._bit))

    def __reduce__(self) -> tuple[typing.Any, ...]:
        return (type(self), (self.table,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} keys)"


class DenseBiases(_View):
    """`key → bias` (a Python float) over a `DenseTable`'s bias vector: River's `u_biases`."""

    __slots__ = ()
    _bit = HAS_BIAS

    # Each method first asks `hot` (keys learned lately hold both bits): River's own learn_one,
    # which other setups than squared loss + SGD run, reads and writes these views many times
    # per event.
    def __getitem__(self, key: Hashable) -> float:
        table = self.table
        hit = table.hot.get(key)
        return table.biases[hit[0] if hit is not None else table.ensure(key, HAS_BIAS)]

    def get(self, key: Hashable, default: typing.Any = None) -> typing.Any:
        table = self.table
        hit = table.hot.get(key)
        row = hit[0] if hit is not None else self._row(key)
        return table.biases[row] if row >= 0 else default

    def __setitem__(self, key: Hashable, value: typing.Any) -> None:
        table = self.table
        hit = table.hot.get(key)
        if hit is not None:
            table.biases[hit[0]] = float(value)
        else:
            table.put_bias(key, value)

    def __len__(self) -> int:
        return self.table.n_biases


class DenseRows(_View):
    """`key → row view` over a `DenseTable`'s latent matrix: River's `u_latents`/`i_latents`.

    `[]` returns a view of the key's row (the one kept in `hot` for keys learned lately, else a
    new one: a view per key would take more memory than the rows), so River's in-place SGD step
    writes straight into the matrix. Do not keep a view across learning: growing the matrix moves
    the data, and an old view then points at the old copy.
    """

    __slots__ = ()
    _bit = HAS_LATENT

    def __getitem__(self, key: Hashable) -> FloatArray:
        table = self.table
        hit = table.hot.get(key)
        return hit[1] if hit is not None else table.matrix[table.ensure(key, HAS_LATENT)]

    def get(self, key: Hashable, default: typing.Any = None) -> typing.Any:
        table = self.table
        hit = table.hot.get(key)
        if hit is not None:
            return hit[1]
        row = self._row(key)
        return table.matrix[row] if row >= 0 else default

    def __setitem__(self, key: Hashable, value: typing.Any) -> None:
        # River's SGD does `w[key] -= step`: an in-place update of the view `[]` returned, then
        # storing that same view back, which has nothing left to do.
        hit = self.table.hot.get(key)
        if hit is None or value is not hit[1]:
            self.table.put_latent(key, value)

    def __len__(self) -> int:
        return self.table.n_latents
