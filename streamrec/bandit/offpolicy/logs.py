"""Decision logs: the line format streamrec writes, and readers into one in-memory form.

Every reader returns a `LoggedData` (parallel numpy arrays, one entry per shown slot), so the
policies and estimators never see a file. Kept apart from them because a log format changes for
other reasons (a new source of logs) than an estimator does.

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
  estimate (`source:` policies, targets.py) is exact only for slots where one source alone
  proposed the item.
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamrec.contract.events import Id, Source
from streamrec.errors import StreamrecError

__all__ = [
    "SOURCES",
    "LoggedData",
    "LoggedDecision",
    "OffPolicyError",
    "read_log",
    "read_obd_csv",
    "read_streamrec_log",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SOURCES: tuple[str, ...] = ("model", "popular", "explore", "new")
"""Source names in code order (the `Source` literal of the recommendation contract)."""

OBD_REQUIRED_COLUMNS: tuple[str, ...] = ("item_id", "position", "click", "propensity_score")


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
