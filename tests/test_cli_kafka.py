"""README's Kafka commands, run as a user runs them: produce → run (burst) → inspect-checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka_helpers import read_topic

from streamrec.cli import main

pytestmark = pytest.mark.kafka


def test_produce_run_inspect(
    kafka_bootstrap: str,
    unique_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events, recs, dlq = unique_topic("events"), unique_topic("recs"), unique_topic("dlq")
    log = tmp_path / "events.jsonl"
    assert main(["generate", str(log), "--events", "1500", "--invalid-fraction", "0.02"]) == 0
    lines = log.read_bytes().splitlines()
    # The environment twins of the flags: STREAMREC_KAFKA__*.
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("STREAMREC_KAFKA__TOPICS", orjson.dumps([events]).decode())
    monkeypatch.setenv("STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC", recs)
    monkeypatch.setenv("STREAMREC_KAFKA__DLQ_TOPIC", dlq)
    monkeypatch.setenv("STREAMREC_KAFKA__CONSUMER", '{"session.timeout.ms": 3000}')
    # run and inspect-checkpoint refuse to work without it (test_checkpoint_security.py).
    monkeypatch.setenv("STREAMREC_SERVICE__CHECKPOINT_KEY", "cli-test-" + "k" * 32)
    assert main(["produce", str(log)]) == 0

    state = tmp_path / "state"
    code = main(
        [
            "run",
            "--group-id",
            f"g-{events}",
            "--state-dir",
            str(state),
            "--max-events",
            str(len(lines)),
            "--metrics-port",
            "0",
        ]
    )
    assert code == 0
    capsys.readouterr()
    assert main(["inspect-checkpoint", str(state), "--json"]) == 0
    info = orjson.loads(capsys.readouterr().out)
    dead = read_topic(kafka_bootstrap, dlq, expected=1, timeout_s=15)
    assert info["events_learned"] > 0
    assert info["events_learned"] + len(dead) <= len(lines)
    assert info["offsets"] == [{"topic": events, "partition": 0, "offset": len(lines)}]
    assert len(info["model_digest"]) == 64
    assert read_topic(kafka_bootstrap, recs, expected=1, timeout_s=15)
