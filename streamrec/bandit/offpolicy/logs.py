"""Off-policy evaluation: what would another policy have earned on the traffic we logged?

Every published item carries `propensity`, the probability that the logging policy showed it in
that slot. With it, a log of shown slots and their rewards estimates the value (expected reward
per shown slot) of a *different* policy without deploying it. This module reads such logs, builds
the candidate policy's probabilities for the logged actions, and reports four estimators, each
with a bootstrap confidence interval, next to the logging policy's own observed value.

Decision log format (streamrec JSONL)
-------------------------------------
One JSON object per line, one line per *shown slot* (a top-K list gives K lines), modelled by
`LoggedDecision`::

    {"rec_id": "r-17", "user_id": "u3", "item_id": "i42", "position": 1,
     "source": "model", "propensity": 0.85, "reward": 1,
     "source_propensity": 0.9,                  # optional
     "candidates": ["i42", "i7", "i9"],         # optional
     "context": {"device": "ios"}}              # optional

- `rec_id`: the recommendation list the slot belongs to. Slots of one list share a user and a
  moment, so the bootstrap resamples whole lists, not slots.
- `position`: the rank (1 = first slot).
- `source`: how the item got there (`model`, `popular`, `explore`, `new`).
- `propensity`: probability in (0, 1] that the logging policy put this item in this slot.
- `reward`: 0/1 for a click, or any finite float (e.g. revenue); 0 when nothing happened.
- `source_propensity`: probability that the logging policy filled this slot from `source` at all
  (e.g. 0.1 for an explore slot chosen with probability 0.1). Needed to evaluate source-mixing
  policies; when absent it is estimated as that source's share at that position. In streamrec's
  lists each source proposes one item per slot, so `propensity` sums the probabilities of every
  source that proposed the shown item and may exceed `source_propensity`; the source-mixing
  estimate below is exact only for slots where one source alone proposed the item.
- `candidates`: the items the policy could have put in this slot (must contain `item_id`). When
  absent the action set is every item in the log.
- `context`: small flat feature object; validated and kept in the file for future contextual
  policies, but no policy here uses it, so it is not loaded into memory.

Open Bandit Dataset (CSV)
-------------------------
The ZOZOTOWN Open Bandit Dataset layout: an unnamed index column, `timestamp`, `item_id` (dense
integer index, so the action set is `0..max(item_id)`), `position` (1, 2, 3), `click`,
`propensity_score`, then `user_feature_*` and `user-item_affinity_*`. Only the four columns the
estimators need are parsed, which keeps a 10M-row file within memory. Rows stay in file order
(the published files are in time order); each row is its own bootstrap unit.

How a slate is treated
----------------------
Each slot is one decision: the target policy gives π(a | slot) for the logged item and the value
is the expected reward per shown slot (the position-wise treatment used with OBD). Interactions
between slots (one item cannot fill two slots of a list) are ignored; a greedy target that would
show its favourite in every slot is evaluated slot by slot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamrec.errors import StreamrecError
from streamrec.events import Id, Source

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SOURCES: tuple[str, ...] = ("model", "popular", "explore", "new")
"""Source names in code order (the `Source` literal of the recommendation contract)."""

OBD_REQUIRED_COLUMNS: tuple[str, ...] = ("item_id", "position", "click", "propensity_score")

_BLOCK_CELLS = 1 << 21
"""Rows × items per block when replaying an online policy: bounds memory at ~16 MB per array."""


class OffPolicyError(StreamrecError, ValueError):
    """Bad input to off-policy evaluation; the message says what to fix."""


# --------------------------------------------------------------------------------------------
# The line format


class LoggedDecision(BaseModel):
    """One shown slot of a published recommendation list and the reward it earned."""

    # A log we write ourselves, read back by newer code: extra fields are ignored, as for events.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    rec_id: Id
    user_id: Id
    item_id: Id
    position: int = Field(ge=1, description="Rank of the slot, 1 = first.")
    source: Source
    propensity: float = Field(
        gt=0.0, le=1.0, description="P(logging policy showed this item in this slot)."
    )
    reward: float = Field(description="0/1 click or any finite reward; 0 if nothing happened.")
    source_propensity: float | None = Field(
        default=None, gt=0.0, le=1.0, description="P(logging policy filled this slot from source)."
    )
    candidates: list[Id] | None = Field(
        default=None, min_length=1, description="Items eligible for this slot."
    )
    context: dict[str, str | int | float | bool | None] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LoggedDecision:
        if self.candidates is not None and self.item_id not in self.candidates:
            raise ValueError("candidates must contain the shown item_id")
        return self


# --------------------------------------------------------------------------------------------
# The in-memory form


@dataclass(frozen=True, eq=False)
class LoggedData:
    """A decision log as parallel numpy arrays, one entry per shown slot, in log order.

    `action[t]` indexes `items`. `cluster[t]` numbers the bootstrap unit (the list a slot
    belongs to). Optional per-row candidate sets are stored CSR-style: row t's candidates are
    `cand_indices[cand_indptr[t]:cand_indptr[t + 1]]`; an empty range means "every item".
    """

    items: npt.NDArray[np.str_]
    action: IntArray
    position: IntArray
    reward: FloatArray
    propensity: FloatArray
    cluster: IntArray
    source: IntArray | None = None
    source_propensity: FloatArray | None = None  # NaN where unknown
    cand_indptr: IntArray | None = None
    cand_indices: IntArray | None = None
    fmt: str = "memory"

    def __post_init__(self) -> None:
        n = len(self.action)
        if n == 0:
            raise OffPolicyError("the log has no decisions")
        arrays: dict[str, np.ndarray | None] = {
            "position": self.position,
            "reward": self.reward,
            "propensity": self.propensity,
            "cluster": self.cluster,
            "source": self.source,
            "source_propensity": self.source_propensity,
        }
        for name, values in arrays.items():
            if values is not None and len(values) != n:
                raise OffPolicyError(f"{name} has {len(values)} rows, action has {n}")
        _check_propensity(self.propensity, "propensity")
        bad = ~np.isfinite(self.reward)
        if bad.any():
            raise OffPolicyError(
                f"reward must be finite; row {_first(bad)} is {self.reward[bad][0]}"
            )
        if self.action.min() < 0 or self.action.max() >= len(self.items):
            raise OffPolicyError("action codes must index items")
        if self.position.min() < 1:
            raise OffPolicyError(f"position must be >= 1 (rank); row {_first(self.position < 1)}")
        if (self.cand_indptr is None) != (self.cand_indices is None):
            raise OffPolicyError("cand_indptr and cand_indices come together")
        if self.cand_indptr is not None and len(self.cand_indptr) != n + 1:
            raise OffPolicyError("cand_indptr needs one more entry than there are rows")

    @property
    def n_rows(self) -> int:
        return len(self.action)

    @property
    def n_actions(self) -> int:
        return len(self.items)

    def n_candidates(self) -> IntArray:
        """Size of each row's action set."""
        if self.cand_indptr is None:
            return np.full(self.n_rows, self.n_actions, dtype=np.int64)
        sizes = np.diff(self.cand_indptr)
        return np.where(sizes > 0, sizes, self.n_actions)


def _first(mask: BoolArray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_propensity(values: FloatArray, name: str) -> None:
    # A zero propensity means the logging policy could not show the item: the row cannot be
    # reweighted and the log is wrong. Above 1 is not a probability.
    bad = ~((values > 0.0) & (values <= 1.0))
    if bad.any():
        row = _first(bad)
        raise OffPolicyError(f"{name} must lie in (0, 1]; row {row} has {values[row]!r}")


# --------------------------------------------------------------------------------------------
# Readers


def read_streamrec_log(path: str | Path) -> LoggedData:
    """Read a streamrec JSONL decision log (one `LoggedDecision` per line)."""
    rec_ids: list[str] = []
    item_ids: list[str] = []
    positions: list[int] = []
    sources: list[int] = []
    propensities: list[float] = []
    rewards: list[float] = []
    source_props: list[float] = []
    candidates: list[list[str] | None] = []
    source_code = {name: code for code, name in enumerate(SOURCES)}
    with open(path, encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                d = LoggedDecision.model_validate_json(line)
            except ValidationError as exc:
                errors = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise OffPolicyError(f"{path}:{lineno}: invalid decision: {errors}") from None
            rec_ids.append(d.rec_id)
            item_ids.append(d.item_id)
            positions.append(d.position)
            sources.append(source_code[d.source])
            propensities.append(d.propensity)
            rewards.append(d.reward)
            source_props.append(math.nan if d.source_propensity is None else d.source_propensity)
            candidates.append(d.candidates)
    if not item_ids:
        raise OffPolicyError(f"{path}: no decisions in the log")

    has_candidates = any(c is not None for c in candidates)
    every_item = item_ids + [i for c in candidates if c for i in c]
    items, codes = np.unique(np.array(every_item), return_inverse=True)
    action = codes[: len(item_ids)].astype(np.int64)
    cand_indptr = cand_indices = None
    if has_candidates:
        sizes = np.array([len(c) if c else 0 for c in candidates], dtype=np.int64)
        cand_indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        cand_indices = codes[len(item_ids) :].astype(np.int64)
    _, cluster = np.unique(np.array(rec_ids), return_inverse=True)
    sp = np.array(source_props, dtype=np.float64)
    return LoggedData(
        items=items,
        action=action,
        position=np.array(positions, dtype=np.int64),
        reward=np.array(rewards, dtype=np.float64),
        propensity=np.array(propensities, dtype=np.float64),
        cluster=cluster.astype(np.int64),
        source=np.array(sources, dtype=np.int64),
        source_propensity=None if np.isnan(sp).all() else sp,
        cand_indptr=cand_indptr,
        cand_indices=cand_indices,
        fmt="streamrec",
    )


def read_obd_csv(path: str | Path) -> LoggedData:
    """Read an Open Bandit Dataset CSV, parsing only the columns the estimators need."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n")
        has_rows = bool(f.readline().strip())
    if not header:
        raise OffPolicyError(f"{path}: empty file, expected an Open Bandit Dataset CSV header")
    names = [name.strip().strip('"') for name in header.split(",")]
    missing = [c for c in OBD_REQUIRED_COLUMNS if c not in names]
    if missing:
        raise OffPolicyError(
            f"{path}: not an Open Bandit Dataset CSV, missing column(s) {', '.join(missing)} "
            f"(need {', '.join(OBD_REQUIRED_COLUMNS)})"
        )
    if not has_rows:
        raise OffPolicyError(f"{path}: no rows after the header")
    usecols = [names.index(c) for c in OBD_REQUIRED_COLUMNS]
    try:
        # numpy's C reader converts only `usecols`; the hashed user features stay unparsed.
        table = np.loadtxt(
            path, delimiter=",", skiprows=1, usecols=usecols, dtype=np.float64, ndmin=2
        )
    except ValueError as exc:
        raise OffPolicyError(f"{path}: unreadable value in {OBD_REQUIRED_COLUMNS}: {exc}") from None
    item, position, click, pscore = table.T
    for name, values in (("item_id", item), ("position", position)):
        bad = (values != np.round(values)) | (values < 0) | ~np.isfinite(values)
        if bad.any():
            raise OffPolicyError(
                f"{path}: {name} must be a non-negative integer; row {_first(bad)}"
            )
    _check_propensity(pscore, f"{path}: propensity_score")
    action = item.astype(np.int64)
    return LoggedData(
        items=np.arange(action.max() + 1).astype(str),
        action=action,
        position=position.astype(np.int64),
        reward=click,
        propensity=pscore,
        cluster=np.arange(len(action), dtype=np.int64),
        fmt="obd",
    )


def read_log(path: str | Path, fmt: str = "auto") -> LoggedData:
    """Read a decision log; `fmt` is `streamrec`, `obd` or `auto` (by suffix, then content)."""
    path = Path(path)
    if not path.is_file():
        raise OffPolicyError(f"{path}: no such file")
    if fmt == "auto":
        if path.suffix.lower() == ".csv":
            fmt = "obd"
        elif path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
            fmt = "streamrec"
        else:
            with open(path, encoding="utf-8") as f:
                fmt = "streamrec" if f.read(1) == "{" else "obd"
    if fmt == "streamrec":
        return read_streamrec_log(path)
    if fmt == "obd":
        return read_obd_csv(path)
    raise OffPolicyError(f"unknown log format {fmt!r}: use auto, streamrec or obd")


# --------------------------------------------------------------------------------------------
# Candidate policies


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


# --------------------------------------------------------------------------------------------
# Estimators


ESTIMATORS: tuple[str, ...] = ("logged", "replay", "ips", "snips", "dr")

# Columns of the per-row (then per-cluster) sums every estimator is a function of.
_N, _R, _WR, _W, _DR, _M, _MR = range(7)


def reward_model(data: LoggedData) -> tuple[FloatArray, IntArray]:
    """Per-action mean reward, 2-fold cross-fitted: one table per fold, fitted on the other.

    Folds alternate rows (even / odd), so both span the whole log. Cross-fitting keeps a row's
    own reward out of its prediction, which DR needs to stay unbiased. An action unseen in the
    training fold gets that fold's mean reward. Returns (tables of shape (2, n_actions), fold
    of each row).
    """
    fold = (np.arange(data.n_rows) % 2).astype(np.int64)
    tables = np.empty((2, data.n_actions))
    for k in (0, 1):
        train = fold != k
        if not train.any():  # a one-row log: nothing to cross-fit against
            train = np.ones(data.n_rows, dtype=bool)
        sums = np.bincount(data.action[train], data.reward[train], minlength=data.n_actions)
        counts = np.bincount(data.action[train], minlength=data.n_actions)
        fallback = data.reward[train].mean()
        tables[k] = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
    return tables, fold


def _direct_term(
    data: LoggedData, policy: TargetPolicy, tables: FloatArray, fold: IntArray
) -> FloatArray | None:
    """E_{a~π}[q̂(a)] per row, or None when π's full distribution is unknown."""
    if policy.epsilon is None:
        return None
    mean_q = tables.mean(axis=1)[fold]
    if data.cand_indptr is not None and data.cand_indices is not None:
        sizes = np.diff(data.cand_indptr)
        rows = np.repeat(np.arange(data.n_rows), sizes)
        sums = np.bincount(rows, tables[fold[rows], data.cand_indices], minlength=data.n_rows)
        mean_q = np.where(sizes > 0, sums / np.maximum(sizes, 1), mean_q)
    direct = policy.epsilon * mean_q
    if policy.greedy is not None:
        direct = direct + (1.0 - policy.epsilon) * tables[fold, policy.greedy]
    return direct


def _replay_matches(
    data: LoggedData, policy: TargetPolicy, rng: np.random.Generator
) -> BoolArray | None:
    """Li et al. (2011): draw the target's action for each row; keep rows where it equals the log.

    Unbiased only when the logging policy is uniform over the action set; reported because it
    is the classic sanity check and needs no propensities. None when π cannot be sampled.
    """
    if policy.epsilon is None:
        return None
    n = data.n_rows
    if policy.epsilon == 0.0 and policy.greedy is not None:
        return np.asarray(policy.greedy == data.action)
    draw = np.floor(rng.random(n) * data.n_candidates()).astype(np.int64)
    if data.cand_indptr is not None and data.cand_indices is not None:
        # Rows with a candidate list drew an index into it; map that index to the item.
        sizes = np.diff(data.cand_indptr)
        offset = data.cand_indptr[:-1] + np.where(sizes > 0, draw, 0)
        from_list = data.cand_indices[np.minimum(offset, len(data.cand_indices) - 1)]
        draw = np.where(sizes > 0, from_list, draw)
    if policy.greedy is not None:
        explore = rng.random(n) < policy.epsilon
        draw = np.where(explore, draw, policy.greedy)
    return np.asarray(draw == data.action)


def _distinct_rows(x: FloatArray) -> tuple[FloatArray, IntArray]:
    """Distinct rows of `x` and how often each occurs (all rows, once each, if too varied).

    Rows are keyed by mixed-radix codes of their per-column values: one 1-D sort per column is
    far cheaper than `np.unique(axis=0)`, which sorts rows as opaque byte strings.
    """
    key = np.zeros(len(x), dtype=np.int64)
    radix = 1
    for column in x.T:
        uniq, code = np.unique(column, return_inverse=True)
        if radix * len(uniq) >= 1 << 62:
            return x, np.ones(len(x), dtype=np.int64)
        key += code.astype(np.int64) * radix
        radix *= len(uniq)
    _, first, freq = np.unique(key, return_index=True, return_counts=True)
    return x[first], freq.astype(np.int64)


def _estimates_from_sums(sums: FloatArray) -> FloatArray:
    """(..., 7) column sums → (..., 5) estimates in `ESTIMATORS` order; NaN where undefined."""
    n, w, m = sums[..., _N], sums[..., _W], sums[..., _M]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack(
            [
                sums[..., _R] / n,
                np.where(m > 0, sums[..., _MR] / np.where(m > 0, m, 1.0), np.nan),
                sums[..., _WR] / n,
                np.where(w > 0, sums[..., _WR] / np.where(w > 0, w, 1.0), np.nan),
                sums[..., _DR] / n,
            ],
            axis=-1,
        )


def estimate(
    data: LoggedData,
    policy: TargetPolicy,
    *,
    n_bootstrap: int = 500,
    seed: int = 0,
    clip: float | None = None,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Value of `policy` on `data` by replay, IPS, SNIPS and DR, with percentile bootstrap CIs.

    The bootstrap resamples clusters (whole recommendation lists) with replacement and keeps
    the fitted reward model fixed, as is usual for DR; with `n_bootstrap=0` intervals are None.
    `clip` caps the importance weights π/μ, trading bias for variance.
    """
    if n_bootstrap < 0:
        raise OffPolicyError("n_bootstrap must be >= 0")
    if clip is not None and not clip > 0:
        raise OffPolicyError("clip must be > 0")
    if not 0.0 < ci_level < 1.0:
        raise OffPolicyError("ci_level must lie in (0, 1)")
    replay_seed, bootstrap_seed = np.random.SeedSequence(seed).spawn(2)

    weights = policy.prob / data.propensity
    if clip is not None:
        weights = np.minimum(weights, clip)
    tables, fold = reward_model(data)
    q_logged = tables[fold, data.action]
    direct = _direct_term(data, policy, tables, fold)
    if direct is None:
        # E_π[q̂] estimated from the logged row itself (w · q̂); DR then equals IPS.
        direct = weights * q_logged
    matches = _replay_matches(data, policy, np.random.default_rng(replay_seed))
    matched = np.zeros(data.n_rows) if matches is None else matches.astype(np.float64)

    per_row = np.column_stack(
        [
            np.ones(data.n_rows),
            data.reward,
            weights * data.reward,
            weights,
            direct + weights * (data.reward - q_logged),
            matched,
            matched * data.reward,
        ]
    )
    n_clusters = int(data.cluster.max()) + 1
    if n_clusters == data.n_rows and np.array_equal(data.cluster, np.arange(data.n_rows)):
        per_cluster = per_row
    else:
        per_cluster = np.column_stack(
            [np.bincount(data.cluster, col, minlength=n_clusters) for col in per_row.T]
        )
    point = _estimates_from_sums(per_cluster.sum(axis=0))

    low = high = np.full(len(ESTIMATORS), np.nan)
    if n_bootstrap > 0:
        # Drawing C clusters with replacement is drawing multinomial counts over the distinct
        # cluster sum-vectors. Click logs have few distinct ones (action × reward × weight), so
        # a resample of a 10M-row log costs microseconds instead of a pass over 10M rows.
        distinct, freq = _distinct_rows(per_cluster)
        share = freq / freq.sum()
        rng = np.random.default_rng(bootstrap_seed)
        resampled = np.empty((n_bootstrap, len(ESTIMATORS)))
        for b in range(n_bootstrap):
            counts = rng.multinomial(n_clusters, share).astype(np.float64)
            resampled[b] = _estimates_from_sums(counts @ distinct)
        tail = 100.0 * (1.0 - ci_level) / 2.0
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(resampled).all(axis=0)
            low, high = np.percentile(resampled, [tail, 100.0 - tail], axis=0)
        low = np.where(finite, low, np.nan)
        high = np.where(finite, high, np.nan)

    notes = {
        "logged": "observed mean reward of the logging policy",
        "replay": "rows where the target's draw equals the logged item; unbiased for uniform logs"
        if matches is not None
        else "needs the target's full distribution",
        "ips": "inverse propensity scoring",
        "snips": "self-normalized IPS",
        "dr": "doubly robust, per-action mean reward model, 2-fold cross-fitted"
        if policy.knows_distribution
        else "equals IPS: the target's full distribution is unknown",
    }
    results = []
    for k, name in enumerate(ESTIMATORS):
        available = not (name == "replay" and matches is None)
        results.append(
            {
                "estimator": name,
                "value": _json_float(point[k]) if available else None,
                "ci_low": _json_float(low[k]) if available else None,
                "ci_high": _json_float(high[k]) if available else None,
                "note": notes[name],
            }
        )
    sum_w = float(weights.sum())
    return {
        "policy": policy.spec,
        "rows": data.n_rows,
        "lists": n_clusters,
        "actions": data.n_actions,
        "clip": clip,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "ci_level": ci_level,
        "estimates": results,
        "diagnostics": {
            "mean_weight": sum_w / data.n_rows,  # ≈ 1 when π and μ share support
            "max_weight": float(weights.max()),
            "effective_sample_size": sum_w**2 / float((weights**2).sum()) if sum_w > 0 else 0.0,
            "replay_matched_rows": None if matches is None else int(matches.sum()),
        },
    }


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def evaluate_data(
    data: LoggedData,
    policy_spec: str,
    *,
    n_bootstrap: int = 500,
    seed: int = 0,
    clip: float | None = None,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """`evaluate_policy` on an already loaded log."""
    policy = target_policy(data, policy_spec)
    report = estimate(
        data, policy, n_bootstrap=n_bootstrap, seed=seed, clip=clip, ci_level=ci_level
    )
    report["format"] = data.fmt
    return report


def evaluate_policy(
    path: str | Path,
    policy_spec: str,
    *,
    fmt: str = "auto",
    n_bootstrap: int = 500,
    seed: int = 0,
    clip: float | None = None,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Estimate the value of `policy_spec` on the decision log at `path`; a JSON-able report."""
    report = evaluate_data(
        read_log(path, fmt),
        policy_spec,
        n_bootstrap=n_bootstrap,
        seed=seed,
        clip=clip,
        ci_level=ci_level,
    )
    return {"log": str(path), **report}


# --------------------------------------------------------------------------------------------
# Output and command line


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """Render a report from `evaluate_policy` as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()

    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.5f}"

    title = f"policy {report['policy']} on {report.get('log', 'log')} ({report.get('format', '')})"
    table = Table(title=title)
    table.add_column("estimator")
    table.add_column("value", justify="right")
    level = round(100 * report["ci_level"])
    table.add_column(f"{level}% CI", justify="right")
    table.add_column("note", style="dim")
    for row in report["estimates"]:
        ci = "—" if row["ci_low"] is None else f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
        table.add_row(row["estimator"], fmt(row["value"]), ci, row["note"])
    console.print(table)
    d = report["diagnostics"]
    console.print(
        f"rows {report['rows']}, lists {report['lists']}, actions {report['actions']}, "
        f"clip {report['clip']}, bootstrap {report['n_bootstrap']} (seed {report['seed']}); "
        f"weights: mean {d['mean_weight']:.3f}, max {d['max_weight']:.3g}, "
        f"ESS {d['effective_sample_size']:.1f}"
    )


def run_cli(argv: Sequence[str]) -> int:
    """`streamrec evaluate-policy LOG --policy SPEC [...]`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="streamrec evaluate-policy",
        description="Estimate a policy's value from a logged-decision file (off-policy).",
        epilog=POLICY_HELP,
    )
    parser.add_argument("log", help="streamrec JSONL decision log or Open Bandit Dataset CSV")
    parser.add_argument("--policy", required=True, help="policy to evaluate (see below)")
    parser.add_argument("--format", default="auto", choices=["auto", "streamrec", "obd"])
    parser.add_argument("--bootstrap", type=int, default=500, help="resamples (0: no CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip", type=float, default=None, help="cap importance weights")
    parser.add_argument("--ci-level", type=float, default=0.95)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(list(argv))
    try:
        report = evaluate_policy(
            args.log,
            args.policy,
            fmt=args.format,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            clip=args.clip,
            ci_level=args.ci_level,
        )
    except OffPolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
