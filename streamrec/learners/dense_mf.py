"""River's BiasedMF with item factors kept in one dense matrix, so all items score in one product.

River keeps each latent vector as its own small array in a defaultdict. Scoring a user against the
whole catalog then means one `predict_one` per item (about 1 ms per user for 1,700 items). Here the
item dictionary hands River *row views* into one `items × factors` matrix: River's SGD updates the
views in place, so the matrix is always current and predictions are bit-identical to River's.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Hashable, Iterable

import numpy as np
from river import optim, reco, stats

from streamrec.learners.base import FloatArray

__all__ = ["DenseBiasedMF", "DenseRows"]

_INITIAL_ROWS = 64
_SGD = optim.SGD
_SQUARED = optim.losses.Squared
_CONSTANT = optim.schedulers.Constant
_MEAN = stats.Mean
_add = np.add
_multiply = np.multiply
_subtract = np.subtract


def _grown(vector: FloatArray, n: int) -> FloatArray:
    """`vector` copied into one with room for at least `n` entries (capacity doubles)."""
    bigger = np.zeros(max(n, 2 * len(vector)))
    bigger[: len(vector)] = vector
    return bigger


class DenseRows(dict):
    """A dict of `key → row view` whose rows live in one growable dense matrix.

    A missing key gets the next free row, filled by `initializer` (River's latent initializer, so
    the random draws happen in the same order as River's defaultdict). Non-negative int keys get
    row `key` when it is free, so with the pipeline's dense ids column `j` of a score matrix is
    item `j`.

    Growing the matrix moves the data, so every stored view is re-pointed at the new matrix.
    Pickling stores the matrix and the key → row map and rebuilds the views: pickling the views
    themselves would give independent arrays and silently break the sharing.
    """

    def __init__(
        self,
        n_factors: int,
        initializer: Callable[..., typing.Any] | None,
        matrix: FloatArray | None = None,
        rows: dict[Hashable, int] | None = None,
    ) -> None:
        super().__init__()
        self.n_factors = n_factors
        self.initializer = initializer
        self.rows: dict[Hashable, int] = {}
        self.n_rows = 0  # one past the highest row in use
        self.matrix: FloatArray = np.zeros((_INITIAL_ROWS, n_factors))
        self.used = np.zeros(_INITIAL_ROWS, dtype=bool)
        if matrix is not None and rows is not None:
            self.matrix = np.array(matrix, dtype=np.float64).reshape(-1, n_factors)
            self.used = np.zeros(len(self.matrix), dtype=bool)
            self.rows = dict(rows)
            self.n_rows = max(self.rows.values(), default=-1) + 1
            for key, row in self.rows.items():
                self.used[row] = True
                dict.__setitem__(self, key, self.matrix[row])

    def _row_for(self, key: Hashable) -> int:
        if isinstance(key, int | np.integer) and not isinstance(key, bool) and key >= 0:
            row = int(key)
            if row >= len(self.used) or not self.used[row]:
                return row
        return self.n_rows

    def _allocate(self, key: Hashable) -> FloatArray:
        row = self._row_for(key)
        if row >= len(self.matrix):
            self._grow(row + 1)
        self.rows[key] = row
        self.used[row] = True
        self.n_rows = max(self.n_rows, row + 1)
        view = self.matrix[row]
        dict.__setitem__(self, key, view)
        return view

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * len(self.matrix))
        matrix = np.zeros((capacity, self.n_factors))
        matrix[: len(self.matrix)] = self.matrix
        self.matrix = matrix
        used = np.zeros(capacity, dtype=bool)
        used[: len(self.used)] = self.used
        self.used = used
        for key, row in self.rows.items():
            dict.__setitem__(self, key, matrix[row])

    def __missing__(self, key: Hashable) -> FloatArray:
        view = self._allocate(key)
        if self.initializer is not None:
            view[:] = self.initializer(shape=self.n_factors)
        return view

    def __setitem__(self, key: Hashable, value: typing.Any) -> None:
        # River's SGD does `w[key] -= step`: an in-place update, then re-storing the same view.
        current = dict.get(self, key)
        if current is value:
            return
        if current is None:
            current = self._allocate(key)
        current[:] = value

    def __delitem__(self, key: Hashable) -> None:
        raise TypeError("rows of a DenseRows cannot be deleted; they are shared with the matrix")

    def copy(self) -> DenseRows:  # dict.copy would return views into this matrix
        return DenseRows(self.n_factors, self.initializer, self.matrix[: self.n_rows], self.rows)

    def __reduce__(self) -> tuple[typing.Any, ...]:
        return (
            DenseRows,
            (self.n_factors, self.initializer, self.matrix[: self.n_rows].copy(), self.rows),
        )

    def __deepcopy__(self, memo: dict[int, typing.Any]) -> DenseRows:
        import copy

        return DenseRows(
            self.n_factors,
            copy.deepcopy(self.initializer, memo),
            self.matrix[: self.n_rows].copy(),
            dict(self.rows),
        )


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


class DenseBiasedMF(reco.BiasedMF):
    """River's `BiasedMF`, with item factors in one dense matrix and read-only prediction.

    Learning is River's `learn_one`, reproduced operation for operation (River's own code for
    setups other than squared loss + SGD), so for pairs River has seen the predictions are
    identical (same seed → same random draws, in the same order). Two things differ, on purpose:

    - `predict_one` never creates state: an unseen user or item contributes a zero bias and a zero
      latent vector (River inserts fresh random vectors, so its prediction for an unseen pair is
      the global mean plus a small random dot product, and memory grows with read traffic).
    - item latent vectors are rows of `item_factors`, and item biases are mirrored into
      `item_biases`, so `score_dense` scores every item for many users with one matrix product.

    With the pipeline's dense int item ids, column `j` of `score_dense` is item `j`; other keys get
    the rows after them (see `DenseRows`).

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
    >>> len(model.u_latents), len(model.i_latents)
    (2, 3)

    """

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
        # River's u_latents and i_latents draw from one shared initializer; keep sharing it. Users
        # live in a matrix too: a million tiny arrays cost ~3x the memory and pickle slowly.
        self.u_latents = DenseRows(n_factors, self.latent_initializer)  # type: ignore[assignment]
        self.i_latents = DenseRows(n_factors, self.latent_initializer)  # type: ignore[assignment]
        self._item_bias_vec: FloatArray = np.zeros(_INITIAL_ROWS)
        self._scratch = _scratch(self.n_factors)

    @property
    def item_factors(self) -> FloatArray:
        """The `(n_item_rows, n_factors)` matrix of item latent vectors (a view; do not write)."""
        rows: DenseRows = self.i_latents  # type: ignore[assignment]
        return rows.matrix[: rows.n_rows]

    @property
    def item_biases(self) -> FloatArray:
        """Item biases aligned with the rows of `item_factors` (a view; do not write)."""
        rows: DenseRows = self.i_latents  # type: ignore[assignment]
        return self._item_bias_vec[: rows.n_rows]

    def predict_one(self, user: Hashable, item: Hashable, x: dict | None = None) -> float:  # type: ignore[override]
        y_pred = (
            self.global_mean.get() + self.u_biases.get(user, 0.0) + self.i_biases.get(item, 0.0)
        )
        u = self.u_latents.get(user)
        i = self.i_latents.get(item)
        if u is not None and i is not None:
            y_pred += np.dot(u, i)
        return float(y_pred)

    def learn_one(self, user: Hashable, item: Hashable, y: float, x: dict | None = None) -> None:  # type: ignore[override]
        """River's `BiasedMF.learn_one`, bit for bit; for squared loss + SGD in ~3.6 µs, not ~6.

        River builds four one-entry gradient dicts and dispatches four optimizer steps, and every
        `scalar * array` pays numpy's scalar conversion. Here the same floating-point operations
        run in the same order (so tests can compare every value with River's using `==`), written
        as ufunc calls into preallocated arrays with the scalars passed as 0-d arrays. Any other
        loss, optimizer or running mean takes River's own generic path.
        """
        # River's predict_one materializes state in this order; doing the same keeps the RNG draws
        # (and so every learned value) identical to River's BiasedMF.
        u_biases = self.u_biases
        i_biases = self.i_biases
        bu = u_biases[user]
        bi = i_biases[item]
        pu = self.u_latents[user]
        qi = self.i_latents[item]
        # Checked every event rather than cached: the loss, an optimizer or the mean may be swapped
        # between events, and six type checks (~85 ns) cost less than a cache that would notice.
        ubo = self.u_bias_optimizer
        ibo = self.i_bias_optimizer
        ulo = self.u_latent_optimizer
        ilo = self.i_latent_optimizer
        mean = self.global_mean
        if (
            type(self.loss) is _SQUARED
            and type(ubo) is _SGD
            and type(ibo) is _SGD
            and type(ulo) is _SGD
            and type(ilo) is _SGD
            and type(mean) is _MEAN
        ):
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
            u_biases[user] = bu - rate * (g + l2_bias * bu)
            lr = ibo.lr
            rate = lr.learning_rate if type(lr) is _CONSTANT else lr.get(ibo.n_iterations)
            bi = i_biases[item] = bi - rate * (g + l2_bias * bi)
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
        else:
            super().learn_one(user, item, y, x)
            bi = self.i_biases[item]  # River's step may hand back a new dict
        # Mirror the item bias into the row-aligned vector that `score_dense` reads.
        row = self.i_latents.rows[item]  # type: ignore[attr-defined]
        try:
            self._item_bias_vec[row] = bi
        except IndexError:  # rows are never negative: this is a new row past the end
            biases = self._item_bias_vec = _grown(self._item_bias_vec, row + 1)
            biases[row] = bi

    def __getstate__(self) -> dict[str, typing.Any]:
        # Scratch buffers are not learned state: pickles and digests stay what they were before
        # the buffers existed, and a model restored from an older pickle simply gets new ones.
        state = self.__dict__.copy()
        state.pop("_scratch", None)
        return state

    def __setstate__(self, state: dict[str, typing.Any]) -> None:
        self.__dict__.update(state)
        self._scratch = _scratch(self.n_factors)

    def user_vectors(self, users: Iterable[Hashable]) -> tuple[FloatArray, FloatArray]:
        """Latent vectors `(n_users, n_factors)` and biases `(n_users,)`; unseen users get zeros."""
        users = list(users)
        vectors = np.zeros((len(users), self.n_factors))
        biases = np.zeros(len(users))
        for k, user in enumerate(users):
            vector = self.u_latents.get(user)
            if vector is not None:
                vectors[k] = vector
            biases[k] = self.u_biases.get(user, 0.0)
        return vectors, biases

    def score_dense(self, users: Iterable[Hashable]) -> FloatArray:
        """Predicted ratings `(n_users, n_item_rows)` for every item row, biases included.

        Equals `predict_one` for every seen pair up to floating-point summation order; rows of
        items never learned score as the global mean plus the user bias.
        """
        vectors, biases = self.user_vectors(users)
        scores = vectors @ self.item_factors.T
        scores += biases[:, None]
        scores += self.item_biases[None, :]
        scores += self.global_mean.get()
        return scores

    @classmethod
    def _unit_test_params(cls) -> typing.Iterator[dict[str, typing.Any]]:
        yield {"n_factors": 4, "seed": 42}
