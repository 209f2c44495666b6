"""River's BiasedMF with each side's parameters in dense arrays, so all items score in one product.

River keeps each latent vector as its own small array in a defaultdict, and each bias as a float in
another. Scoring a user against the whole catalog then means one `predict_one` per item (about
1 ms per user for 1,700 items), and at a million users the per-key Python objects (an array, a
float, dict entries) take more memory than the numbers they hold. Here each side, users and items,
is one `DenseTable`: an `n × factors` matrix, a vector of biases and one flag byte per row. River's
code sees a table through dict-like views (`u_latents` hands out row views into the matrix, which
River's SGD updates in place; `u_biases` reads and writes the vector), so every learned number and
prediction is bit-identical to River's.
"""

from __future__ import annotations

import numbers
import sys
import typing
from array import array
from collections.abc import Callable, Hashable, Iterable, Iterator, MutableMapping

import numpy as np
import numpy.typing as npt
from river import optim, reco, stats

from streamrec.learners.base import FloatArray, IntArray

FlagArray = npt.NDArray[np.uint8]
_Hot = tuple[int, FloatArray]

__all__ = ["DenseBiasedMF", "DenseBiases", "DenseRows", "DenseTable"]

_INITIAL_ROWS = 64
_HOT_ROWS = 1 << 14  # row views `DenseTable.hot` keeps at most (~4 MB)
_SGD = optim.SGD
_SQUARED = optim.losses.Squared
_CONSTANT = optim.schedulers.Constant
_MEAN = stats.Mean
_add = np.add
_multiply = np.multiply
_subtract = np.subtract
_frombuffer = np.frombuffer

# A row's flag byte. 0: the row is free. HAS_BIAS / HAS_LATENT: the key of the row is in the bias /
# latent view. LISTED: that key is in `DenseTable.rows`; without it, the key is the int equal to
# the row (the pipeline's dense ids), which is stored nowhere.
_HAS_BIAS = 1
_HAS_LATENT = 2
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
        if bit == _HAS_BIAS:
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
        self._mark(row, _HAS_BIAS)
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
        self._mark(row, _HAS_LATENT)
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
            if bit == _HAS_BIAS:
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
        self.n_biases = int(np.count_nonzero(flags & _HAS_BIAS))
        self.n_latents = int(np.count_nonzero(flags & _HAS_LATENT))
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
    _bit = _HAS_BIAS

    # Each method first asks `hot` (keys learned lately hold both bits): River's own learn_one,
    # which other setups than squared loss + SGD run, reads and writes these views many times
    # per event.
    def __getitem__(self, key: Hashable) -> float:
        table = self.table
        hit = table.hot.get(key)
        return table.biases[hit[0] if hit is not None else table.ensure(key, _HAS_BIAS)]

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
    _bit = _HAS_LATENT

    def __getitem__(self, key: Hashable) -> FloatArray:
        table = self.table
        hit = table.hot.get(key)
        return hit[1] if hit is not None else table.matrix[table.ensure(key, _HAS_LATENT)]

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


def _scratch(n_factors: int) -> tuple[FloatArray, ...]:
    """Preallocated buffers for `DenseBiasedMF.learn_one`'s latent step: scratch, not state.

    Small-array ufunc calls cost mostly fixed overhead, and a Python-float operand adds ~200 ns of
    scalar conversion. So both latent vectors are updated as the two rows of `grads` (one call
    serves both), results go into these buffers (no allocations), and scalars go in through the
    0-d `scalar`. Returns `(grads, grads[0], grads[1], terms, scalar, rates)`: the row views are
    made once, as indexing costs ~100 ns.
    """
    grads = np.zeros((2, n_factors))
    return (
        grads,
        grads[0],
        grads[1],
        np.zeros((2, n_factors)),
        np.zeros(()),
        np.zeros((2, n_factors)),
    )


# Attributes rebuilt from the tables on load: not pickled, not part of the digest.
_DERIVED = ("_names", "_scratch", "_plain_sgd", "u_biases", "i_biases", "u_latents", "i_latents")
# What decides whether `learn_one` can take its inlined SGD step.
_STEP_PARTS = frozenset(
    (
        "loss",
        "u_bias_optimizer",
        "i_bias_optimizer",
        "u_latent_optimizer",
        "i_latent_optimizer",
        "global_mean",
    )
)


class DenseBiasedMF(reco.BiasedMF):
    """River's `BiasedMF`, with each side's parameters in a `DenseTable` and read-only prediction.

    Learning is River's `learn_one`, reproduced operation for operation (River's own code for
    setups other than squared loss + SGD), so for pairs River has seen the predictions are
    identical (same seed → same random draws, in the same order). Three things differ, on purpose:

    - `predict_one` never creates state: an unseen user or item contributes a zero bias and a zero
      latent vector (River inserts fresh random vectors, so its prediction for an unseen pair is
      the global mean plus a small random dot product, and memory grows with read traffic).
    - item latent vectors and biases are rows of `item_factors` and `item_biases`, so
      `score_dense` scores every item for many users with one matrix product.
    - `u_biases`, `i_biases`, `u_latents` and `i_latents` are views over the tables (River's code
      reads and writes them as it would its defaultdicts); they iterate in row order, and keys
      cannot be deleted.

    With the pipeline's dense int ids, row `k` is id `k` (column `j` of `score_dense` is item
    `j`); other keys get the rows after them (see `DenseTable`).

    Parameters
    ----------
    n_factors, bias_optimizer, latent_optimizer, loss, l2_bias, l2_latent, weight_initializer,
    latent_initializer, clip_gradient, seed
        As in `river.reco.BiasedMF`.

    Examples
    --------

    >>> from river import optim
    >>> from streamrec.learners import DenseBiasedMF

    >>> model = DenseBiasedMF(n_factors=4, bias_optimizer=optim.SGD(0.025),
    ...                       latent_optimizer=optim.SGD(0.05), seed=1)
    >>> for user, item, y in [(0, 0, 5.0), (0, 1, 1.0), (1, 0, 4.0), (1, 2, 2.0)]:
    ...     model.learn_one(user, item, y)
    >>> round(model.predict_one(1, 1), 4)
    2.9215
    >>> model.score_dense([0, 1]).shape
    (2, 3)
    >>> model.predict_one(99, 99) == model.global_mean.get()  # unseen: no state created
    True
    >>> len(model.u_latents), len(model.i_latents), len(model.i_biases)
    (2, 3, 3)

    """

    _names: dict[str, None]  # every attribute set, in order (see __setattr__)

    def __init__(
        self,
        n_factors: int = 10,
        bias_optimizer: optim.base.Optimizer | None = None,
        latent_optimizer: optim.base.Optimizer | None = None,
        loss: optim.losses.Loss | None = None,
        l2_bias: float = 0.0,
        l2_latent: float = 0.0,
        weight_initializer: optim.initializers.Initializer | None = None,
        latent_initializer: optim.initializers.Initializer | None = None,
        clip_gradient: float = 1e12,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            n_factors=n_factors,
            bias_optimizer=bias_optimizer,
            latent_optimizer=latent_optimizer,
            loss=loss,
            l2_bias=l2_bias,
            l2_latent=l2_latent,
            weight_initializer=weight_initializer,
            latent_initializer=latent_initializer,
            clip_gradient=clip_gradient,
            seed=seed,
        )
        # River's u_latents and i_latents draw from one shared initializer; keep sharing it.
        self.user_table = DenseTable(n_factors, self.weight_initializer, self.latent_initializer)
        self.item_table = DenseTable(n_factors, self.weight_initializer, self.latent_initializer)
        self._attach()

    def _attach(self) -> None:
        """The dict-like views River's code uses, and the scratch buffers: derived, not state."""
        self.u_biases = DenseBiases(self.user_table)  # type: ignore[assignment]
        self.i_biases = DenseBiases(self.item_table)  # type: ignore[assignment]
        self.u_latents = DenseRows(self.user_table)  # type: ignore[assignment]
        self.i_latents = DenseRows(self.item_table)  # type: ignore[assignment]
        self._scratch = _scratch(self.n_factors)
        self._plain_sgd = self._is_plain_sgd()

    def _is_plain_sgd(self) -> bool:
        """Whether River's step is squared loss, plain SGD everywhere and a plain running mean:
        the setup `learn_one` reproduces inline (anything else runs River's own code)."""
        # getattr, not `self.__dict__`: see `__setattr__`.
        return (
            type(getattr(self, "loss", None)) is _SQUARED
            and type(getattr(self, "u_bias_optimizer", None)) is _SGD
            and type(getattr(self, "i_bias_optimizer", None)) is _SGD
            and type(getattr(self, "u_latent_optimizer", None)) is _SGD
            and type(getattr(self, "i_latent_optimizer", None)) is _SGD
            and type(getattr(self, "global_mean", None)) is _MEAN
        )

    def __setattr__(self, name: str, value: typing.Any) -> None:
        """Keeps `_plain_sgd` current and records the attribute's name.

        The loss, an optimizer or the mean may be swapped between events; noticing it here costs
        `learn_one` nothing (six type checks per event cost ~0.15 µs). The names let
        `__getstate__` list the attributes without reading `self.__dict__`: in CPython 3.11 that
        read turns the compact attribute layout into a real dict for good, and every `self.x` in
        `learn_one` is then slower (~10%), after the first checkpoint or digest. Setting a table
        (River's `clone(include_attributes=True)` does) re-attaches the views to it.
        """
        object.__setattr__(self, name, value)
        try:
            names = self._names
        except AttributeError:  # the first attribute River's __init__ sets
            names = {}
            object.__setattr__(self, "_names", names)
        names[name] = None
        if name in _STEP_PARTS:
            object.__setattr__(self, "_plain_sgd", self._is_plain_sgd())
        elif name in ("user_table", "item_table") and hasattr(self, "_scratch"):
            self._attach()

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        self._names.pop(name, None)
        if name in _STEP_PARTS:
            object.__setattr__(self, "_plain_sgd", False)

    @property
    def item_factors(self) -> FloatArray:
        """The `(n_item_rows, n_factors)` matrix of item latent vectors (a view; do not write)."""
        items = self.item_table
        return items.matrix[: items.n_rows]

    @property
    def item_biases(self) -> FloatArray:
        """Item biases aligned with the rows of `item_factors` (a copy: see `DenseTable`)."""
        items = self.item_table
        return _frombuffer(items.biases, np.float64, count=items.n_rows).copy()

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        users = self.user_table
        items = self.item_table
        hot_user = users.hot.get(user)
        hot_item = items.hot.get(item)
        if hot_user is not None and hot_item is not None:  # both learned lately: both bits set
            u, pu = hot_user
            i, qi = hot_item
            y_pred = self.global_mean.get() + users.biases[u] + items.biases[i]
            return float(y_pred + pu.dot(qi))  # ndarray.dot is np.dot, without the dispatch
        # With no key listed (the pipeline's case), an int key is its own row or absent.
        if type(user) is int and not users.rows:
            u = user if 0 <= user < users.n_rows else -1
        else:
            u = users.find(user)
        if type(item) is int and not items.rows:
            i = item if 0 <= item < items.n_rows else -1
        else:
            i = items.find(item)
        u_flags = users.flags[u] if u >= 0 else 0
        i_flags = items.flags[i] if i >= 0 else 0
        y_pred = (
            self.global_mean.get()
            + (users.biases[u] if u_flags & _HAS_BIAS else 0.0)
            + (items.biases[i] if i_flags & _HAS_BIAS else 0.0)
        )
        if u_flags & i_flags & _HAS_LATENT:
            y_pred += users.matrix[u].dot(items.matrix[i])  # np.dot, without the dispatch
        return float(y_pred)

    def _rows(self, user: Hashable, item: Hashable) -> tuple[_Hot, _Hot]:
        """`(row, row view)` of `user` and `item`, creating what River's `predict_one` would.

        River's `learn_one` materializes state in this order (user bias, item bias, user latents,
        item latents); doing the same keeps the RNG draws, and so every learned value, identical.
        """
        users = self.user_table
        items = self.item_table
        users.ensure(user, _HAS_BIAS)
        items.ensure(item, _HAS_BIAS)
        u = users.ensure(user, _HAS_LATENT)
        i = items.ensure(item, _HAS_LATENT)
        return users.remember(user, u), items.remember(item, i)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        """River's `BiasedMF.learn_one`, bit for bit; for squared loss + SGD in ~3.6 µs, not ~6.

        River builds four one-entry gradient dicts and dispatches four optimizer steps, and every
        `scalar * array` pays numpy's scalar conversion. Here the same floating-point operations
        run in the same order (so tests can compare every value with River's using `==`), written
        as ufunc calls into preallocated arrays with the scalars passed as 0-d arrays, straight on
        the tables. Any other loss, optimizer or running mean takes River's own generic path.
        """
        users = self.user_table
        items = self.item_table
        # Ids of recent events: their rows and row views, known to hold both bias and latents.
        hot_user = users.hot.get(user)
        hot_item = items.hot.get(item)
        if hot_user is None or hot_item is None:
            hot_user, hot_item = self._rows(user, item)
        if not self._plain_sgd:  # kept current by __setattr__
            super().learn_one(user, item, y, x)
            return
        ubo = self.u_bias_optimizer
        ibo = self.i_bias_optimizer
        ulo = self.u_latent_optimizer
        ilo = self.i_latent_optimizer
        mean = self.global_mean
        u, pu = hot_user
        i, qi = hot_item
        u_biases = users.biases
        i_biases = items.biases
        bu = u_biases[u]
        bi = i_biases[i]
        # stats.Mean.update(y) with w = 1.0
        n = mean.n + 1.0
        mean.n = n
        global_mean = mean._mean = mean._mean + (1.0 / n) * (y - mean._mean)
        # BiasedMF.predict_one: left to right, the dot product last (np.dot, as River).
        y_pred = global_mean + bu + bi + float(pu.dot(qi))
        g = 2 * (y_pred - y)  # optim.losses.Squared.gradient
        # utils.math.clamp is max(min(g, clip), -clip); these two tests pick the same object
        # in every case (NaN, ties, a negative clip) at a seventh of the cost.
        clip = self.clip_gradient
        if clip < g:
            g = clip
        if -clip > g:
            g = -clip
        l2_bias = self.l2_bias
        # SGD's step reads `learning_rate`, i.e. `lr.get(n_iterations)`; `Constant.get` returns
        # its `learning_rate` attribute, read here directly (a third of the property's cost).
        lr = ubo.lr
        rate = lr.learning_rate if type(lr) is _CONSTANT else lr.get(ubo.n_iterations)
        u_biases[u] = bu - rate * (g + l2_bias * bu)
        lr = ibo.lr
        rate = lr.learning_rate if type(lr) is _CONSTANT else lr.get(ibo.n_iterations)
        i_biases[i] = bi - rate * (g + l2_bias * bi)
        # The latent step on two stacked rows, so each ufunc call serves both vectors:
        # grads = [q_i, p_u] * g (+ l2 * [p_u, q_i]), then p_u -= lr_u * grads[0] and
        # q_i -= lr_i * grads[1]. Elementwise, the same products and sums as River's
        # `g * q_i + l2 * p_u` and `w -= lr * grad`; both gradients come from the old vectors,
        # as River builds both gradient dicts before stepping.
        grads, u_grad, i_grad, terms, scalar, rates = self._scratch
        u_grad[...] = qi
        i_grad[...] = pu
        scalar[()] = g
        _multiply(grads, scalar, grads)
        l2_latent = self.l2_latent
        if l2_latent:  # `+ 0.0 * w` changes no value (at most the sign of an exact zero)
            terms[0] = pu
            terms[1] = qi
            scalar[()] = l2_latent
            _add(grads, _multiply(terms, scalar, terms), grads)
        lr = ulo.lr
        u_rate = lr.learning_rate if type(lr) is _CONSTANT else lr.get(ulo.n_iterations)
        lr = ilo.lr
        i_rate = lr.learning_rate if type(lr) is _CONSTANT else lr.get(ilo.n_iterations)
        # Both optimizers are copies of one `latent_optimizer`, so the rates are normally
        # equal: then one 0-d operand serves both rows. Equal nonzero numbers have equal bits;
        # 0.0 == -0.0 do not, so zero takes the per-row path.
        if u_rate == i_rate and u_rate:
            scalar[()] = u_rate
            _multiply(grads, scalar, grads)
        else:
            rates[0] = u_rate
            rates[1] = i_rate
            _multiply(grads, rates, grads)
        _subtract(pu, u_grad, pu)  # in place in the dense matrices, as SGD's `w -= ...`
        _subtract(qi, i_grad, qi)
        ubo.n_iterations += 1
        ibo.n_iterations += 1
        ulo.n_iterations += 1
        ilo.n_iterations += 1

    def __getstate__(self) -> dict[str, typing.Any]:
        # The views and scratch buffers are rebuilt from the tables on load: pickles and digests
        # hold each number once. Names, not `self.__dict__`: see `__setattr__`.
        return {name: getattr(self, name) for name in self._names if name not in _DERIVED}

    def __setstate__(self, state: dict[str, typing.Any]) -> None:
        names: dict[str, None] = {}
        for name, value in state.items():  # one at a time, keeping the compact layout
            name = sys.intern(name)  # as attribute names are: pickles then share them, as before
            object.__setattr__(self, name, value)
            names[name] = None
        object.__setattr__(self, "_names", names)
        self._attach()

    def user_vectors(self, users: Iterable[Hashable]) -> tuple[FloatArray, FloatArray]:
        """Latent vectors `(n_users, n_factors)` and biases `(n_users,)`; unseen users get zeros."""
        table = self.user_table
        rows, flags = table.lookup(list(users))
        vectors = np.zeros((len(rows), self.n_factors))
        biases = np.zeros(len(rows))
        has = (flags & _HAS_LATENT) != 0
        vectors[has] = table.matrix[rows[has]]
        has = (flags & _HAS_BIAS) != 0
        biases[has] = _frombuffer(table.biases, np.float64)[rows[has]]
        return vectors, biases

    def score_dense(self, users: Iterable[Hashable]) -> FloatArray:
        """Predicted ratings `(n_users, n_item_rows)` for every item row, biases included.

        Equals `predict_one` for every seen pair up to floating-point summation order; rows of
        items never learned score as the global mean plus the user bias.
        """
        items = self.item_table
        n = items.n_rows
        vectors, biases = self.user_vectors(users)
        scores = vectors @ items.matrix[:n].T
        scores += biases[:, None]
        scores += _frombuffer(items.biases, np.float64, count=n)[None, :]  # a transient view
        scores += self.global_mean.get()
        return scores

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"n_factors": 4, "seed": 42}
