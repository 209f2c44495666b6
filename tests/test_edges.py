"""The edges without a broker: every source and sink has the shape of `streamrec.io.edges`, and
the file source batches a log the way the replay has always read it."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streamrec.contract.events import Recommendation, RecommendedItem, encode_recommendation
from streamrec.contract.records import DeadLetter, Record
from streamrec.errors import StreamrecError
from streamrec.io.edges import Sink, Source
from streamrec.io.file_sink import DecisionLogFile, JsonlSink, ListSink, dead_letter_json
from streamrec.io.file_source import FileSource
from streamrec.io.kafka_sink import KafkaSink
from streamrec.io.kafka_source import KafkaSource


def _methods(cls: type) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(member).parameters)
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    }


@pytest.mark.parametrize("cls", [FileSource, KafkaSource])
def test_every_source_polls_like_the_protocol(cls: type) -> None:
    for name, parameters in _methods(Source).items():
        assert list(inspect.signature(getattr(cls, name)).parameters) == parameters


@pytest.mark.parametrize("cls", [JsonlSink, ListSink, KafkaSink])
def test_every_sink_takes_results_like_the_protocol(cls: type) -> None:
    assert set(_methods(Sink)) == {"publish", "dead_letter"}
    for name, parameters in _methods(Sink).items():
        assert list(inspect.signature(getattr(cls, name)).parameters) == parameters


def test_file_source_batches_non_blank_lines_numbered_from_one(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"a\n\n  \nb\nc \n\nd\ne")
    with FileSource(log) as source:
        batches = [source.poll(2, 1.0) for _ in range(4)]
    assert [[(r.value, r.offset) for r in batch] for batch in batches] == [
        [(b"a", 1), (b"b", 4)],
        [(b"c", 5), (b"d", 7)],
        [(b"e", 8)],
        [],
    ]
    assert {r.topic for batch in batches for r in batch} == {str(log)}


def test_file_source_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StreamrecError, match="cannot read event log"):
        FileSource(tmp_path / "missing.jsonl")


def test_file_sinks_write_the_service_encoding(tmp_path: Path) -> None:
    rec = Recommendation(
        rec_id="r-1",
        user_id="u1",
        generated_at=datetime.now(UTC),
        model_version=3,
        items=[
            RecommendedItem("i1", score=1.0, rank=1, source="model", propensity=1.0, reason="x")
        ],
    )
    dead = DeadLetter(Record(value=b"{", topic="log", offset=2), "invalid_json", "not JSON")
    recs, dlq, decisions = tmp_path / "r", tmp_path / "d", tmp_path / "x"
    in_memory = ListSink()
    with JsonlSink(recs, dlq) as sink, DecisionLogFile(decisions) as log:
        for each in (sink, in_memory):
            each.publish([rec, rec])
            each.publish([])
            each.dead_letter([dead])
        log.write([{"rec_id": "r-1", "reward": 1.0}])
        log.write([])
    assert recs.read_bytes() == 2 * (encode_recommendation(rec) + b"\n")
    assert dlq.read_bytes() == dead_letter_json(dead) + b"\n"
    assert orjson.loads(dead_letter_json(dead))["offset"] == 2
    assert in_memory.recommendations == [rec, rec] and in_memory.dead_letters == [dead]
    assert decisions.read_bytes() == b'{"rec_id":"r-1","reward":1.0}\n'
    with JsonlSink() as nowhere:  # no paths: outputs dropped, nothing opened
        nowhere.publish([rec])
