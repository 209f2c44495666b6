"""Scale out, checked the way `bench/scale.py` measures it: N instances, one model.

Each test runs `python -m bench.scale` against the session's broker (so the bench's own code path
is what is tested, as tests/test_bench.py does for `python -m bench`), on the first events of
ML-100K when it is present and on the bench's synthetic ratings otherwise, with the speed
configuration (biased_mf). The bench audits every replica's final checkpoint against the learn
log and the events produced; these tests assert on that audit and on quality, never on a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ml100k import ml100k_path

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent


def run_bench(kafka_bootstrap: str, *args: str) -> dict[str, Any]:
    """`python -m bench.scale ARGS` on biased_mf; its JSON (stdout), or a failure with its log."""
    data = ml100k_path()
    command = [
        sys.executable,
        "-m",
        "bench.scale",
        *("--bootstrap-servers", kafka_bootstrap, "--rating-model", "biased_mf"),
        *(("--data", str(data)) if data is not None else ()),
        *args,
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_one_model(result: dict[str, Any]) -> None:
    """Every replica of every run: the learn log replayed, each source event learned once by
    each, and every user's whole history in every model."""
    assert result["problems"] == []
    assert result["item_digests_equal"] is True
    assert result["lost"] == 0
    assert result["learned_twice"] == 0
    assert result["users_split"] == 0


def test_one_two_and_three_instances_hold_one_model_of_the_same_quality(
    kafka_bootstrap: str,
) -> None:
    result = run_bench(kafka_bootstrap, "--events", "12000", "--instances", "1,2,3", "--no-moves")

    assert result["instances"] == [1, 2, 3]
    assert_one_model(result)
    for run in result["runs"]:
        assert [r["events_learned"] for r in run["replicas"]] == [12_000] * run["instances"]
        # The group split the partitions: every instance forwarded, so every one published.
        assert all(published > 0 for published in run["published"]), run["published"]
    # Another interleaving of the partitions in the learn log, not another model.
    one, two, three = result["rmse"]
    assert abs(two - one) / one <= 0.01
    assert abs(three - one) / one <= 0.01
    assert all(0.0 < recall < 1.0 for recall in result["recall_at_10"])


@pytest.mark.slow
def test_instances_joining_killed_and_leaving_mid_stream_lose_nothing(
    kafka_bootstrap: str,
) -> None:
    result = run_bench(
        kafka_bootstrap, "--events", "6000", "--instances", "2", "--moves-seconds", "40"
    )

    moves = result["move_run"]
    assert [step["action"] for step in moves["schedule"]] == ["join", "join", "kill", "leave"]
    # Partitions did move, and each was forwarded again by its new owner.
    assert moves["moves"], moves
    assert result["rebalance_resume_s_p99"] is not None
    assert_one_model(result)
    # The SIGKILLed replica came back from its last checkpoint and caught up like the others.
    assert [r["events_learned"] for r in moves["replicas"]] == [6_000] * 3
