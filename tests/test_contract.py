"""The published JSON Schema and the code judge every example and counter-example the same, and
every counter-example gets a fitting dead-letter reason (tests/contract_corpus.py lists them).

The schema side is what a producer would run: Python's json (without the NaN/Infinity it reads
beyond RFC 8259) and jsonschema's Draft 2020-12 validator with `date-time` format checking.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from contract_corpus import CORPUS, NOW, Case
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from streamrec.contract.events import (
    ClickEvent,
    PurchaseEvent,
    RatingEvent,
    decode_event,
)
from streamrec.contract.records import DeadLetter, Record
from streamrec.contract.schemas import json_schemas
from streamrec.core.preprocess import Preprocessor
from streamrec.settings import ModelSettings

SCHEMA = json_schemas()["event.schema.json"]
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def schema_accepts(data: bytes) -> bool:
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError):
        return False
    return VALIDATOR.is_valid(document)


def decodes(data: bytes) -> bool:
    try:
        decode_event(data)
    except ValidationError:
        return False
    return True


def test_the_schema_is_valid_and_formats_are_checked() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    # Without rfc3339-validator, jsonschema skips `date-time` silently and the corpus proves less.
    assert "date-time" in Draft202012Validator.FORMAT_CHECKER.checkers
    assert not VALIDATOR.is_valid({**json.loads(CORPUS[0].data), "timestamp": "2026-01-01"})


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_schema_and_decode_event_judge_alike(case: Case) -> None:
    assert (schema_accepts(case.data), decodes(case.data)) == (case.schema, case.decodes)
    if case.schema != case.decodes:
        assert case.why, "a disagreement must be deliberate and say why"


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_dead_letter_reason(case: Case) -> None:
    outcome = Preprocessor(ModelSettings()).check(Record(case.data), now=NOW)
    reason = outcome.reason if isinstance(outcome, DeadLetter) else None
    assert reason == case.reason, outcome
    if isinstance(outcome, DeadLetter):
        assert outcome.error and "\n" not in outcome.error  # it becomes a header and a log line
    else:
        assert outcome is not None
    if case.decodes and case.reason is not None:
        assert case.why, "valid by the contract, rejected anyway: say why"
    if case.why:
        assert case.schema != case.decodes or (case.decodes and case.reason), "stale `why`"


def test_corpus_covers_every_field() -> None:
    names = {c.name for c in CORPUS}
    assert len(names) == len(CORPUS), "case names must be unique"
    fields = {*ClickEvent.model_fields, *PurchaseEvent.model_fields, *RatingEvent.model_fields}
    for field in fields:
        rejected = [c for c in CORPUS if c.name.startswith(f"{field}:") and not c.decodes]
        accepted = [c for c in CORPUS if c.name.startswith(f"{field}:") and c.decodes]
        assert rejected and accepted, field


def test_schema_examples_are_valid_everywhere() -> None:
    examples = [e for d in SCHEMA["$defs"].values() for e in d.get("examples", [])]
    assert {e["type"] for e in examples} == {"click", "purchase", "rating"}
    for example in examples:
        data = json.dumps(example).encode()
        assert VALIDATOR.is_valid(example), example
        assert decode_event(data).model_dump(include=set(example) - {"timestamp"}) == {
            k: v for k, v in example.items() if k != "timestamp"
        }
        outcome = Preprocessor(ModelSettings()).check(Record(data), now=NOW + 86_400)
        assert outcome is not None and not isinstance(outcome, DeadLetter), outcome
