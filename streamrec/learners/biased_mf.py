"""River's BiasedMF with each side's parameters in a dense table, so all items score in one product.

The learner alone: River's `learn_one` reproduced operation for operation on two `DenseTable`s
(dense_table.py holds the storage and the dict views River's code reads), read-only prediction,
and `score_dense`, the one matrix product the top-K refresh scores a batch of users with. It is
the speed configuration's rating model and a member of the ensemble.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Hashable, Iterable

import numpy as np
from river import optim, reco, stats

from streamrec.learners.base import FloatArray
from streamrec.learners.dense_table import (
    HAS_BIAS,
    HAS_LATENT,
    DenseBiases,
    DenseRows,
    DenseTable,
)

__all__ = ["DenseBiasedMF"]

_Hot = tuple[int, FloatArray]
_SGD = optim.SGD
_SQUARED = optim.losses.Squared
_CONSTANT = optim.schedulers.Constant
_MEAN = stats.Mean
_add = np.add
_multiply = np.multiply
_subtract = np.subtract
_frombuffer = np.frombuffer


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
            + (users.biases[u] if u_flags & HAS_BIAS else 0.0)
            + (items.biases[i] if i_flags & HAS_BIAS else 0.0)
        )
        if u_flags & i_flags & HAS_LATENT:
            y_pred += users.matrix[u].dot(items.matrix[i])  # np.dot, without the dispatch
        return float(y_pred)

    def _rows(self, user: Hashable, item: Hashable) -> tuple[_Hot, _Hot]:
        """`(row, row view)` of `user` and `item`, creating what River's `predict_one` would.

        River's `learn_one` materializes state in this order (user bias, item bias, user latents,
        item latents); doing the same keeps the RNG draws, and so every learned value, identical.
        """
        users = self.user_table
        items = self.item_table
        users.ensure(user, HAS_BIAS)
        items.ensure(item, HAS_BIAS)
        u = users.ensure(user, HAS_LATENT)
        i = items.ensure(item, HAS_LATENT)
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
        has = (flags & HAS_LATENT) != 0
        vectors[has] = table.matrix[rows[has]]
        has = (flags & HAS_BIAS) != 0
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
