"""Off-policy estimators: exact on hand-computed logs, calibrated on a simulated environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.bandit.offpolicy.cli import run_cli
from streamrec.bandit.offpolicy.estimators import estimate, evaluate_data, evaluate_policy
from streamrec.bandit.offpolicy.logs import (
    LoggedData,
    LoggedDecision,
    OffPolicyError,
    read_log,
    read_obd_csv,
)
from streamrec.bandit.offpolicy.targets import TargetPolicy, target_policy

OBD_SAMPLE = Path(__file__).parent / "data" / "obd_sample.csv"


def make_log(
    items: list[str], actions: list[str], propensity: list[float], reward: list[float]
) -> LoggedData:
    codes = {item: k for k, item in enumerate(items)}
    n = len(actions)
    return LoggedData(
        items=np.array(items),
        action=np.array([codes[a] for a in actions], dtype=np.int64),
        position=np.ones(n, dtype=np.int64),
        reward=np.array(reward, dtype=np.float64),
        propensity=np.array(propensity, dtype=np.float64),
        cluster=np.arange(n, dtype=np.int64),
    )


def values(report: dict[str, Any]) -> dict[str, float | None]:
    return {row["estimator"]: row["value"] for row in report["estimates"]}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------- exact, hand-computed values


# Items a, b, c; target = uniform, so π = 1/3 everywhere.
#
#   row  item  μ     r   w = π/μ  w·r
#   0    a     1/2   1   2/3      2/3
#   1    b     1/4   0   4/3      0
#   2    a     1/2   0   2/3      0
#   3    c     1/4   1   4/3      4/3
#   4    b     1/4   1   4/3      4/3
#   5    c     1/4   0   4/3      0
#
# logged = 3/6 = 1/2.  IPS = (10/3)/6 = 5/9.  SNIPS = (10/3)/(20/3) = 1/2.
# Clipped at 1: w = 2/3, 1, 2/3, 1, 1, 1 → Σw·r = 2/3 + 1 + 1 = 8/3 → IPS = 4/9, and
# Σw = 16/3 → SNIPS = 1/2.
#
# DR, 2-fold cross-fit by row parity. Even rows (0, 2, 4) use q̂ fitted on odd rows (1, 3, 5):
# b = 0, c = 1/2, a unseen → odd-row mean 1/3; E_π q̂ = (1/3 + 0 + 1/2)/3 = 5/18.
# Odd rows use q̂ from even rows: a = 1/2, b = 1, c unseen → even-row mean 2/3;
# E_π q̂ = (1/2 + 1 + 2/3)/3 = 13/18.  Row terms E_π q̂ + w·(r − q̂(a_t)):
#   0: 5/18 + 2/3·(1 − 1/3) = 13/18     1: 13/18 + 4/3·(0 − 1) = −11/18
#   2: 5/18 + 2/3·(0 − 1/3) =  1/18     3: 13/18 + 4/3·(1 − 2/3) = 21/18
#   4: 5/18 + 4/3·(1 − 0)   = 29/18     5: 13/18 + 4/3·(0 − 2/3) = −3/18
# DR = (50/18)/6 = 25/54.
def hand_log() -> LoggedData:
    return make_log(
        items=["a", "b", "c"],
        actions=["a", "b", "a", "c", "b", "c"],
        propensity=[0.5, 0.25, 0.5, 0.25, 0.25, 0.25],
        reward=[1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
    )


def test_ips_snips_dr_match_hand_computed_values() -> None:
    report = evaluate_data(hand_log(), "uniform", n_bootstrap=0)
    got = values(report)
    assert got["logged"] == pytest.approx(1 / 2, abs=1e-12)
    assert got["ips"] == pytest.approx(5 / 9, abs=1e-12)
    assert got["snips"] == pytest.approx(1 / 2, abs=1e-12)
    assert got["dr"] == pytest.approx(25 / 54, abs=1e-12)
    assert report["diagnostics"]["mean_weight"] == pytest.approx((20 / 3) / 6)


def test_clipping_caps_the_weights() -> None:
    got = values(evaluate_data(hand_log(), "uniform", n_bootstrap=0, clip=1.0))
    assert got["ips"] == pytest.approx(4 / 9, abs=1e-12)
    assert got["snips"] == pytest.approx((8 / 3) / (16 / 3), abs=1e-12)  # Σw = 2/3·2 + 4


def test_logged_policy_reproduces_the_observed_value() -> None:
    got = values(evaluate_data(hand_log(), "logged", n_bootstrap=50))
    for name in ("ips", "snips", "dr"):
        assert got[name] == pytest.approx(got["logged"], abs=1e-12)
    assert got["replay"] is None


# Popular learns in log order and must not see the row it acts on.
#   row  item  r   clicks before (a, b)  greedy   match
#   0    b     1   (0, 0) tie → a        a        no
#   1    b     0   (0, 1)                b        yes, r = 0
#   2    a     1   (0, 1)                b        no
#   3    a     1   (1, 1) tie → a        a        yes, r = 1
#   4    b     0   (2, 1)                a        no
# replay = 1/2 over 2 rows; μ = 1/2 → w = 2 on matches: IPS = 2/5, SNIPS = 2/4.
def popular_log() -> LoggedData:
    return make_log(
        items=["a", "b"],
        actions=["b", "b", "a", "a", "b"],
        propensity=[0.5] * 5,
        reward=[1.0, 0.0, 1.0, 1.0, 0.0],
    )


def test_popular_policy_learns_online_without_peeking() -> None:
    data = popular_log()
    policy = target_policy(data, "popular")
    assert policy.greedy is not None
    assert policy.greedy.tolist() == [0, 1, 1, 0, 0]
    report = estimate(data, policy, n_bootstrap=0)
    got = values(report)
    assert got["replay"] == pytest.approx(1 / 2)
    assert report["diagnostics"]["replay_matched_rows"] == 2
    assert got["ips"] == pytest.approx(2 / 5)
    assert got["snips"] == pytest.approx(1 / 2)


def test_epsilon_greedy_mixes_greedy_and_uniform() -> None:
    data = popular_log()
    policy = target_policy(data, "epsilon-greedy:0.2")
    assert policy.greedy is not None
    # CTR before each row: same leaders as popular on this log.
    assert policy.greedy.tolist() == [0, 1, 1, 0, 0]
    np.testing.assert_allclose(policy.prob, [0.1, 0.9, 0.1, 0.9, 0.1])
    dist = policy.distribution(data, 1)
    np.testing.assert_allclose(dist, [0.1, 0.9])


def test_source_policy_reweights_by_source_share(tmp_path: Path) -> None:
    def slot(
        rec: str, item: str, pos: int, source: str, p: float, q: float, r: float
    ) -> dict[str, Any]:
        return {
            "rec_id": rec,
            "user_id": "u",
            "item_id": item,
            "position": pos,
            "source": source,
            "propensity": p,
            "source_propensity": q,
            "reward": r,
        }

    log = write_jsonl(
        tmp_path / "log.jsonl",
        [
            slot("r1", "x", 1, "model", 0.9, 0.9, 1),
            slot("r1", "y", 2, "explore", 0.05, 0.1, 0),
            slot("r2", "y", 1, "model", 0.9, 0.9, 0),
            slot("r2", "z", 2, "explore", 0.05, 0.1, 1),
        ],
    )
    # source:explore → π = 1·0.05/0.1 = 1/2 on explore slots, w = 10; Σw·r = 10 over 4 rows.
    got = values(evaluate_policy(log, "source:explore", n_bootstrap=0))
    assert got["ips"] == pytest.approx(2.5)
    assert got["snips"] == pytest.approx(0.5)  # = the CTR of explore slots
    # Half/half: model w = 0.5/0.9, explore w = 5; Σw·r = 5/9 + 5 = 50/9.
    report = evaluate_policy(log, "source:model=1,explore=1", n_bootstrap=20)
    assert values(report)["ips"] == pytest.approx(50 / 36)
    assert report["lists"] == 2  # the bootstrap resamples lists, not slots


def test_candidates_restrict_the_action_set(tmp_path: Path) -> None:
    base = {"user_id": "u", "position": 1, "source": "model", "propensity": 0.5, "reward": 1}
    log = write_jsonl(
        tmp_path / "log.jsonl",
        [
            {**base, "rec_id": "r1", "item_id": "a", "candidates": ["a", "b"]},
            {**base, "rec_id": "r2", "item_id": "c", "candidates": ["a", "b", "c", "d"]},
            {**base, "rec_id": "r3", "item_id": "b"},  # no list: every item (a, b, c, d)
        ],
    )
    data = read_log(log)
    policy = target_policy(data, "uniform")
    np.testing.assert_allclose(policy.prob, [1 / 2, 1 / 4, 1 / 4])
    np.testing.assert_allclose(policy.distribution(data, 0), [0.5, 0.5, 0, 0])
    assert target_policy(data, "popular").greedy.tolist() == [0, 0, 0]  # type: ignore[union-attr]


# ---------------------------------------------------------------- calibration against truth

CLICK_P = np.array([0.1, 0.3, 0.5, 0.2])
LOGGING = np.array([0.4, 0.3, 0.2, 0.1])


def simulate(seed: int, n: int = 2000) -> LoggedData:
    rng = np.random.default_rng(seed)
    action = rng.choice(len(LOGGING), size=n, p=LOGGING)
    return LoggedData(
        items=np.array(["a", "b", "c", "d"]),
        action=action.astype(np.int64),
        position=np.ones(n, dtype=np.int64),
        reward=(rng.random(n) < CLICK_P[action]).astype(np.float64),
        propensity=LOGGING[action],
        cluster=np.arange(n, dtype=np.int64),
    )


def test_confidence_intervals_cover_the_true_value() -> None:
    epsilon, best = 0.3, 2
    targets = {
        "uniform": CLICK_P.mean(),
        "fixed epsilon-greedy": (1 - epsilon) * CLICK_P[best] + epsilon * CLICK_P.mean(),
    }
    seeds = range(50)
    covered = {(t, e): 0 for t in targets for e in ("ips", "snips", "dr")}
    for seed in seeds:
        data = simulate(seed)
        for target, truth in targets.items():
            if target == "uniform":
                policy = target_policy(data, "uniform")
            else:
                greedy = np.full(data.n_rows, best, dtype=np.int64)
                prob = epsilon / 4 + (1 - epsilon) * (data.action == best)
                policy = TargetPolicy(target, prob=prob, greedy=greedy, epsilon=epsilon)
            report = estimate(data, policy, n_bootstrap=200, seed=seed)
            for row in report["estimates"]:
                if (target, row["estimator"]) in covered:
                    covered[target, row["estimator"]] += row["ci_low"] <= truth <= row["ci_high"]
    coverage = {key: hits / len(seeds) for key, hits in covered.items()}
    print("95% CI coverage over 50 seeds:", {f"{t}/{e}": c for (t, e), c in coverage.items()})
    for key, share in coverage.items():
        assert share >= 0.8, f"{key}: coverage {share:.2f}"


# ---------------------------------------------------------------- readers


def test_obd_reader_reads_the_sample() -> None:
    data = read_obd_csv(OBD_SAMPLE)
    assert data.fmt == "obd"
    assert data.items.tolist() == ["0", "1", "2", "3"]
    assert data.action.tolist() == [2, 0, 3, 0, 1, 2]
    assert data.position.tolist() == [1, 2, 3, 1, 2, 3]
    assert data.reward.tolist() == [0, 1, 0, 1, 0, 1]
    assert data.propensity.tolist() == [0.25, 0.25, 0.25, 0.5, 0.125, 0.125]
    assert data.source is None
    # Uniform over 4 items: w = (1/4)/μ = 1, 1, 1, 1/2, 2, 2; Σw·r = 1 + 1/2 + 2 = 3.5.
    got = values(evaluate_policy(OBD_SAMPLE, "uniform", n_bootstrap=0))
    assert got["ips"] == pytest.approx(3.5 / 6)


def test_cli_prints_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli([str(OBD_SAMPLE), "--policy", "logged", "--bootstrap", "10", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["format"] == "obd"
    assert values(report)["ips"] == pytest.approx(0.5)


def test_cli_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli([str(OBD_SAMPLE), "--policy", "epsilon-greedy:0.1", "--bootstrap", "10"]) == 0
    assert "snips" in capsys.readouterr().out


# ---------------------------------------------------------------- errors


def test_obd_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("item_id,position,click\n1,1,0\n")
    with pytest.raises(OffPolicyError, match=r"missing column.*propensity_score"):
        read_obd_csv(path)


@pytest.mark.parametrize("pscore", ["0", "1.5", "-0.1", "nan"])
def test_obd_propensity_outside_unit_interval(tmp_path: Path, pscore: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"item_id,position,click,propensity_score\n1,1,0,0.5\n2,1,0,{pscore}\n")
    with pytest.raises(OffPolicyError, match=r"propensity_score must lie in \(0, 1\]; row 1"):
        read_obd_csv(path)


def test_obd_header_only(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("item_id,position,click,propensity_score\n")
    with pytest.raises(OffPolicyError, match="no rows"):
        read_obd_csv(path)


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    good = {
        "rec_id": "r",
        "user_id": "u",
        "item_id": "i",
        "position": 1,
        "source": "model",
        "propensity": 0.5,
        "reward": 0,
    }
    log = write_jsonl(tmp_path / "log.jsonl", [good, {**good, "propensity": 1.5}])
    with pytest.raises(OffPolicyError, match=r"log.jsonl:2: .*propensity"):
        read_log(log)
    log = write_jsonl(tmp_path / "log.jsonl", [{**good, "candidates": ["x"]}])
    with pytest.raises(OffPolicyError, match="candidates must contain"):
        read_log(log)
    log.write_text("{not json\n")
    with pytest.raises(OffPolicyError, match=":1: invalid decision"):
        read_log(log)


def test_logged_decision_round_trips() -> None:
    d = LoggedDecision(
        rec_id="r", user_id="u", item_id="i", position=2, source="explore", propensity=0.1, reward=1
    )
    assert LoggedDecision.model_validate_json(d.model_dump_json()) == d


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("greedy", "unknown policy"),
        ("epsilon-greedy:x", "must be a number"),
        ("epsilon-greedy:1.5", r"in \[0, 1\]"),
        ("source:bogus", "unknown source"),
        ("source:model=0", "positive weight"),
    ],
)
def test_bad_policy_specs(spec: str, message: str) -> None:
    with pytest.raises(OffPolicyError, match=message):
        target_policy(hand_log(), spec)


def test_source_policy_needs_sources() -> None:
    with pytest.raises(OffPolicyError, match="needs a streamrec log"):
        evaluate_policy(OBD_SAMPLE, "source:model")


def test_bad_options_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OffPolicyError, match="clip must be > 0"):
        evaluate_data(hand_log(), "uniform", clip=0.0)
    assert run_cli([str(tmp_path / "nope.csv"), "--policy", "uniform"]) == 2
    assert "no such file" in capsys.readouterr().err
