"""The estimators: replay, IPS, SNIPS and doubly robust, each with a bootstrap interval.

`estimate` turns a log and a target policy into per-row sums, then per-list sums (the bootstrap
unit), and every estimator is a function of those sums, so a resample costs a multinomial draw,
not a pass over the log. `evaluate_policy` is the whole job: read, build the target, estimate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bandit.offpolicy.logs import (
    BoolArray,
    FloatArray,
    IntArray,
    LoggedData,
    OffPolicyError,
    read_log,
)
from streamrec.bandit.offpolicy.targets import TargetPolicy, target_policy

__all__ = ["ESTIMATORS", "estimate", "evaluate_data", "evaluate_policy", "reward_model"]


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


def _bootstrap_interval(
    per_cluster: FloatArray, n_bootstrap: int, seed: np.random.SeedSequence, ci_level: float
) -> tuple[FloatArray, FloatArray]:
    """Percentile-bootstrap (low, high) of every estimator in `ESTIMATORS` order, from
    `n_bootstrap` resamples of the clusters with replacement; NaN for an estimator undefined in
    some resample, and everywhere when `n_bootstrap` is 0.

    Drawing C clusters with replacement is drawing multinomial counts over the distinct cluster
    sum-vectors. Click logs have few distinct ones (action × reward × weight), so a resample of a
    10M-row log costs microseconds instead of a pass over 10M rows.
    """
    if n_bootstrap == 0:
        nan = np.full(len(ESTIMATORS), np.nan)
        return nan, nan
    n_clusters = len(per_cluster)
    distinct, freq = _distinct_rows(per_cluster)
    share = freq / freq.sum()
    rng = np.random.default_rng(seed)
    resampled = np.empty((n_bootstrap, len(ESTIMATORS)))
    for b in range(n_bootstrap):
        counts = rng.multinomial(n_clusters, share).astype(np.float64)
        resampled[b] = _estimates_from_sums(counts @ distinct)
    tail = 100.0 * (1.0 - ci_level) / 2.0
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(resampled).all(axis=0)
        low, high = np.percentile(resampled, [tail, 100.0 - tail], axis=0)
    return np.where(finite, low, np.nan), np.where(finite, high, np.nan)


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

    low, high = _bootstrap_interval(per_cluster, n_bootstrap, bootstrap_seed, ci_level)

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
