"""The policy under evaluation, as the probability it gives each logged action.

Every estimator is a function of π(logged action | row), and two (DR, replay) also need π's
whole distribution; `TargetPolicy` carries both, built from a short spec (`POLICY_HELP`). Policies
that learn (`popular`, `epsilon-greedy`) learn in log order and never see the row they act on.
Separate from the estimators so that adding a candidate policy touches this file alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from streamrec.bandit.offpolicy.logs import (
    SOURCES,
    BoolArray,
    FloatArray,
    IntArray,
    LoggedData,
    OffPolicyError,
)

__all__ = ["POLICY_HELP", "TargetPolicy", "target_policy"]

_BLOCK_CELLS = 1 << 21
"""Rows × items per block when replaying an online policy: bounds memory at ~16 MB per array."""


@dataclass(frozen=True, eq=False)
class TargetPolicy:
    """The policy under evaluation, as seen on the logged rows.

    Every policy here is (1 - epsilon) on a per-row greedy action plus epsilon spread uniformly
    over the row's action set (uniform: epsilon = 1; popular: epsilon = 0). That form gives the
    full distribution cheaply, which DR's direct term and replay's sampling need. Policies that
    only know π for the logged action (`logged`, `source:`) have `epsilon = None`.
    """

    spec: str
    prob: FloatArray  # π(logged action | row)
    greedy: IntArray | None = None
    epsilon: float | None = None

    @property
    def knows_distribution(self) -> bool:
        return self.epsilon is not None

    def distribution(self, data: LoggedData, row: int) -> FloatArray:
        """π(· | row) over `data.items` (for inspection and tests)."""
        if self.epsilon is None:
            raise OffPolicyError(f"policy {self.spec!r} knows π only for the logged action")
        probs = np.zeros(data.n_actions)
        if data.cand_indptr is not None and data.cand_indices is not None:
            allowed = data.cand_indices[data.cand_indptr[row] : data.cand_indptr[row + 1]]
        else:
            allowed = np.empty(0, dtype=np.int64)
        if len(allowed) == 0:
            allowed = np.arange(data.n_actions)
        probs[allowed] = self.epsilon / len(allowed)
        if self.greedy is not None:
            probs[self.greedy[row]] += 1.0 - self.epsilon
        return probs


def target_policy(data: LoggedData, spec: str) -> TargetPolicy:
    """Build the policy named by `spec` on `data` (see `POLICY_HELP`)."""
    name, _, arg = spec.strip().partition(":")
    if name == "uniform" and not arg:
        return _mixture(data, spec, greedy=None, epsilon=1.0)
    if name == "logged" and not arg:
        return TargetPolicy(spec=spec, prob=data.propensity.copy())
    if name == "popular" and not arg:
        return _mixture(data, spec, greedy=_online_greedy(data, "clicks"), epsilon=0.0)
    if name == "epsilon-greedy":
        try:
            epsilon = float(arg)
        except ValueError:
            raise OffPolicyError(
                f"{spec!r}: epsilon must be a number, e.g. epsilon-greedy:0.1"
            ) from None
        if not 0.0 <= epsilon <= 1.0:
            raise OffPolicyError(f"{spec!r}: epsilon must lie in [0, 1]")
        return _mixture(data, spec, greedy=_online_greedy(data, "ctr"), epsilon=epsilon)
    if name == "source" and arg:
        return _source_policy(data, spec, _parse_source_weights(spec, arg))
    raise OffPolicyError(f"unknown policy {spec!r}; {POLICY_HELP}")


POLICY_HELP = (
    "policies: uniform | logged | popular | epsilon-greedy:EPS | "
    "source:NAME | source:NAME=W,NAME=W (sources: " + ", ".join(SOURCES) + ")"
)


def _mixture(
    data: LoggedData, spec: str, *, greedy: IntArray | None, epsilon: float
) -> TargetPolicy:
    prob = epsilon / data.n_candidates()
    if greedy is not None:
        prob = prob + (1.0 - epsilon) * (greedy == data.action)
    return TargetPolicy(spec=spec, prob=prob, greedy=greedy, epsilon=epsilon)


def _online_greedy(data: LoggedData, score: Literal["clicks", "ctr"]) -> IntArray:
    """Per row, the best item by reward sum (`clicks`) or mean (`ctr`) over the rows before it.

    The policy learns in log order and never sees the row it acts on. Ties (including the very
    first row, when nothing is known) go to the lowest item index; items outside a row's
    candidates are never chosen. Rows are processed in blocks, with the state before each row
    of a block reconstructed by a cumulative sum, so the work is vectorized.
    """
    n, n_items = data.n_rows, data.n_actions
    rewards_before = np.zeros(n_items)
    shows_before = np.zeros(n_items)
    greedy = np.empty(n, dtype=np.int64)
    block = max(1, _BLOCK_CELLS // n_items)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.arange(stop - start)
        actions = data.action[start:stop]
        shown = np.zeros((len(rows), n_items))
        shown[rows, actions] = 1.0
        earned = np.zeros((len(rows), n_items))
        earned[rows, actions] = data.reward[start:stop]
        r_before = rewards_before + _exclusive_cumsum(earned)
        s_before = shows_before + _exclusive_cumsum(shown)
        values = r_before if score == "clicks" else r_before / np.maximum(s_before, 1.0)
        if data.cand_indptr is not None and data.cand_indices is not None:
            values = np.where(_candidate_mask(data, start, stop), values, -np.inf)
        greedy[start:stop] = np.argmax(values, axis=1)
        rewards_before = r_before[-1] + earned[-1]
        shows_before = s_before[-1] + shown[-1]
    return greedy


def _exclusive_cumsum(x: FloatArray) -> FloatArray:
    """Row t holds the sum of rows before t (not t itself)."""
    out = np.zeros_like(x)
    np.cumsum(x[:-1], axis=0, out=out[1:])
    return out


def _candidate_mask(data: LoggedData, start: int, stop: int) -> BoolArray:
    assert data.cand_indptr is not None and data.cand_indices is not None
    indptr = data.cand_indptr[start : stop + 1]
    sizes = np.diff(indptr)
    mask = np.ones((stop - start, data.n_actions), dtype=bool)
    mask[sizes > 0] = False
    rows = np.repeat(np.arange(stop - start), sizes)
    mask[rows, data.cand_indices[indptr[0] : indptr[-1]]] = True
    return mask


def _parse_source_weights(spec: str, arg: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in arg.split(","):
        name, eq, value = part.partition("=")
        name = name.strip()
        if name not in SOURCES:
            raise OffPolicyError(
                f"{spec!r}: unknown source {name!r}; sources: {', '.join(SOURCES)}"
            )
        try:
            weight = float(value) if eq else 1.0
        except ValueError:
            raise OffPolicyError(f"{spec!r}: weight of {name!r} must be a number") from None
        if not (weight >= 0.0 and math.isfinite(weight)):
            raise OffPolicyError(f"{spec!r}: weight of {name!r} must be finite and >= 0")
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    if total <= 0.0:
        raise OffPolicyError(f"{spec!r}: at least one source needs a positive weight")
    return {name: weight / total for name, weight in weights.items()}


def _source_policy(data: LoggedData, spec: str, weights: dict[str, float]) -> TargetPolicy:
    """Pick a source with probability `weights[s]`, then an item as the logging policy did.

    π(a | slot) = w_s · μ(a | slot, s) = w_s · propensity / q_s, where q_s is the probability
    that the logging policy filled the slot from source s: `source_propensity` when logged,
    else the source's share at that position (a plug-in estimate, so slightly biased).
    """
    if data.source is None:
        raise OffPolicyError(f"{spec!r} needs a streamrec log with a source on every slot")
    n_sources = len(SOURCES)
    cell = data.position * n_sources + data.source
    counts = np.bincount(cell, minlength=(data.position.max() + 1) * n_sources)
    per_position = counts.reshape(-1, n_sources).sum(axis=1)
    q = counts[cell] / per_position[data.position]
    if data.source_propensity is not None:
        q = np.where(np.isnan(data.source_propensity), q, data.source_propensity)
    w = np.array([weights.get(name, 0.0) for name in SOURCES])[data.source]
    return TargetPolicy(spec=spec, prob=w * data.propensity / q)
