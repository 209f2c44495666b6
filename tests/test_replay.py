"""Replay of generated logs end to end through the CLI, as a user runs it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamrec.cli import main
from streamrec.contract.events import decode_recommendation

REPORT_KEYS = {
    "events",
    "invalid",
    "duplicates",
    "rmse",
    "mae",
    "recall_at_k",
    "ndcg_at_k",
    "k",
    "evaluated_positive",
    "coverage",
    "events_per_second",
    "series",
}


def test_generate_then_replay(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    assert (
        main(
            [
                "generate",
                str(log),
                "--events",
                "6000",
                "--users",
                "200",
                "--items",
                "120",
                "--invalid-fraction",
                "0.05",
                "--duplicate-fraction",
                "0.02",
            ]
        )
        == 0
    )
    lines = log.read_bytes().splitlines()
    report_path, recs, dlq = tmp_path / "r.json", tmp_path / "recs.jsonl", tmp_path / "dlq.jsonl"
    assert (
        main(
            [
                "replay",
                str(log),
                "--report",
                str(report_path),
                "--k",
                "5",
                "--recs-out",
                str(recs),
                "--dlq-out",
                str(dlq),
                "--window",
                "1000",
            ]
        )
        == 0
    )
    report = orjson.loads(report_path.read_bytes())
    assert set(report) >= REPORT_KEYS
    assert report["events"] == len(lines)
    assert report["invalid"] > 0 and report["duplicates"] > 0
    assert report["learned"] + report["invalid"] + report["duplicates"] == len(lines)
    assert report["k"] == 5
    # hidden tastes are learnable: better than guessing
    assert report["rmse"] < 1.1
    assert report["recall_at_k"] > 0.05
    assert len(report["series"]) >= 5
    dead = [orjson.loads(line) for line in dlq.read_bytes().splitlines()]
    assert len(dead) == report["invalid"]
    for d in dead:
        assert d["reason"] and d["error"] and d["original"] is not None
        assert lines[d["offset"] - 1].decode() == d["original"]
    published = [decode_recommendation(line) for line in recs.read_bytes().splitlines()]
    assert len(published) == report["recommendations_published"] > 0
    assert all(len(r.items) == 5 for r in published)


def test_convert_movielens_formats(tmp_path: Path) -> None:
    udata = tmp_path / "u.data"
    udata.write_text("1\t10\t5\t881250950\n2\t20\t3\t881250949\n1\t20\t4\t881250950\n")
    out = tmp_path / "ml.jsonl"
    assert main(["convert", "movielens", str(udata), "--out", str(out)]) == 0
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(e["user_id"], e["item_id"]) for e in events] == [("2", "20"), ("1", "10"), ("1", "20")]
    assert events[0]["timestamp"] == 881250949000 and events[0]["rating"] == 3.0

    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,0.5,1260759179\n")
    clicks = tmp_path / "clicks.jsonl"
    assert (
        main(
            [
                "convert",
                "movielens",
                str(csv),
                "--out",
                str(clicks),
                "--as",
                "click",
                "--min-rating",
                "2",
            ]
        )
        == 0
    )
    (only,) = [orjson.loads(line) for line in clicks.read_bytes().splitlines()]
    assert only["type"] == "click" and only["item_id"] == "31" and "rating" not in only


def test_half_star_scale_replays_with_rating_scale(tmp_path: Path) -> None:
    log = tmp_path / "half.jsonl"
    log.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "event_id": str(n),
                    "type": "rating",
                    "user_id": str(n % 7),
                    "item_id": str(n % 11),
                    "rating": 0.5 + (n % 10) / 2,
                    "timestamp": 1_260_759_144_000 + n,
                }
            )
            + b"\n"
            for n in range(200)
        )
    )
    report = tmp_path / "r.json"
    assert (
        main(["replay", str(log), "--report", str(report), "--quiet", "--rating-scale", "0.5:5"])
        == 0
    )
    assert orjson.loads(report.read_bytes())["invalid"] == 0
    assert main(["replay", str(log), "--report", str(report), "--quiet"]) == 0
    assert orjson.loads(report.read_bytes())["invalid"] == 20  # the 0.5 ratings, on a 1-5 scale


def test_missing_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_decision_log_feeds_off_policy_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay --decisions-out writes what evaluate-policy reads: the loop closes offline."""
    log = tmp_path / "events.jsonl"
    recs = tmp_path / "recs.jsonl"
    # Answer some published lists: replay once to learn rec_ids, then append clicks naming them.
    main(["generate", str(log), "--events", "3000", "--users", "60", "--items", "80"])
    main(["replay", str(log), "--recs-out", str(recs), "--quiet"])
    published = [decode_recommendation(x) for x in recs.read_bytes().splitlines()]
    last_ts = orjson.loads(log.read_bytes().splitlines()[-1])["timestamp"]
    answers = [
        orjson.dumps(
            {
                "event_id": f"answer-{n}",
                "type": "click",
                "user_id": rec.user_id,
                "item_id": rec.items[n % 3].item_id,
                "rec_id": rec.rec_id,
                "timestamp": last_ts + n,
            }
        )
        for n, rec in enumerate(published[-200:])
    ]
    log.write_bytes(log.read_bytes() + b"\n".join(answers) + b"\n")
    decisions = tmp_path / "decisions.jsonl"
    assert main(["replay", str(log), "--decisions-out", str(decisions), "--quiet"]) == 0
    lines = [orjson.loads(x) for x in decisions.read_bytes().splitlines()]
    assert lines and {"rec_id", "item_id", "position", "source", "propensity", "reward"} <= set(
        lines[0]
    )
    assert all(0.0 < line["propensity"] <= 1.0 for line in lines)
    assert {line["source"] for line in lines} >= {"model", "popular"}
    assert sum(line["reward"] > 0 for line in lines) > 0, "clicks naming rec_ids are joined"
    capsys.readouterr()
    assert (
        main(
            ["evaluate-policy", str(decisions), "--policy", "logged", "--json", "--bootstrap", "50"]
        )
        == 0
    )
    report = orjson.loads(capsys.readouterr().out)
    assert report["rows"] == len(lines)
    logged = {e["estimator"]: e["value"] for e in report["estimates"]}
    mean_reward = sum(line["reward"] for line in lines) / len(lines)
    assert logged["logged"] == pytest.approx(mean_reward)
    assert logged["ips"] == pytest.approx(mean_reward)  # the logging policy against itself
