"""Checkpoints: atomic, signed; truncated/altered/wrong-key files refused, never unpickled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.data.synthetic import generate_events
from streamrec.errors import CheckpointError, ConfigError
from streamrec.service import ServiceState
from streamrec.settings import ModelSettings
from streamrec.store import checkpoint
from streamrec.store.checkpoint import CheckpointStore

KEY = "test-key"
UNPICKLED: list[str] = []


def _record_unpickle(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Canary:
    """Unpickling it leaves a trace, so a test can prove a file was never unpickled."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickle, (self.tag,))


def _save(store: CheckpointStore, state: Any, learned: int = 10) -> Path:
    _, path, _ = store.save(
        state,
        {("events", 0): learned, ("events", 1): 7},
        events_learned=learned,
        users=3,
        items=4,
        model_digest="ab" * 32,
    )
    return path


@pytest.fixture(autouse=True)
def _clear_canary() -> None:
    UNPICKLED.clear()


def test_round_trip_keeps_state_offsets_and_metadata(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY)
    path = _save(store, {"model": [1.0, 2.0], "rng": (1, 2, 3)}, learned=42)

    loaded = store.latest()

    assert loaded is not None and loaded.path == path and not loaded.fell_back
    assert loaded.state == {"model": [1.0, 2.0], "rng": (1, 2, 3)}
    assert loaded.meta.offsets == {("events", 0): 42, ("events", 1): 7}
    assert (loaded.meta.events_learned, loaded.meta.users, loaded.meta.items) == (42, 3, 4)


def test_inspect_reads_signed_metadata_without_unpickling(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY)
    _save(store, Canary("inspect"), learned=5)

    info = checkpoint.inspect(tmp_path, KEY)

    assert UNPICKLED == []
    assert info["events_learned"] == 5 and info["users"] == 3 and info["items"] == 4
    assert info["model_digest"] == "ab" * 32
    assert info["offsets"] == [
        {"topic": "events", "partition": 0, "offset": 5},
        {"topic": "events", "partition": 1, "offset": 7},
    ]
    assert info["created_at"].endswith("+00:00")


@pytest.mark.parametrize("where", ["preamble", "header", "payload", "mac"])
def test_an_altered_byte_anywhere_is_refused_before_unpickling(tmp_path: Path, where: str) -> None:
    store = CheckpointStore(tmp_path, KEY)
    path = _save(store, Canary("tampered"))
    data = bytearray(path.read_bytes())
    header_start = checkpoint._PREAMBLE.size
    position = {
        "preamble": 9,  # inside the version field
        "header": header_start + 3,
        "payload": len(data) - 40,
        "mac": len(data) - 1,
    }[where]
    data[position] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(CheckpointError, match=r"not loaded|not a streamrec checkpoint"):
        store.latest()
    with pytest.raises(CheckpointError):
        checkpoint.inspect(tmp_path, KEY)
    assert UNPICKLED == []


def test_truncated_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY)
    path = _save(store, Canary("truncated"))
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path, KEY)
    path.write_bytes(b"STRM")
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path, KEY)
    assert UNPICKLED == []


def test_wrong_key_is_refused_and_nothing_is_renamed(tmp_path: Path) -> None:
    _save(CheckpointStore(tmp_path, KEY), Canary("a"))
    _save(CheckpointStore(tmp_path, KEY), Canary("b"))
    before = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(CheckpointError, match="checkpoint_key"):
        CheckpointStore(tmp_path, "another-key").latest()

    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert UNPICKLED == []


def test_newest_corrupt_falls_back_loudly_to_the_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path, KEY)
    _save(store, {"n": 1}, learned=1)
    newest = _save(store, {"n": 2}, learned=2)
    newest.write_bytes(newest.read_bytes()[:-1])

    loaded = store.latest()

    assert loaded is not None and loaded.fell_back and loaded.state == {"n": 1}
    assert not newest.exists() and newest.with_name(newest.name + ".rejected").exists()
    assert any(r.levelname == "ERROR" and "REJECTED" in r.message for r in caplog.records)
    # The next checkpoint never reuses the rejected file's sequence number.
    assert _save(store, {"n": 3}, learned=3).name > newest.name


def test_keeps_only_the_newest_n(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY, keep=2)
    paths = [_save(store, {"n": n}, learned=n) for n in range(5)]

    assert store.paths() == paths[-2:]
    loaded = store.latest()
    assert loaded is not None and loaded.state == {"n": 4}


def test_failed_write_leaves_no_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path, KEY)
    good = _save(store, {"n": 1})

    def disk_full(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(CheckpointError, match="cannot write"):
        _save(store, {"n": 2})
    monkeypatch.undo()

    assert list(tmp_path.iterdir()) == [good]


def test_stray_temp_file_from_a_crash_is_removed_and_ignored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, KEY)
    good = _save(store, {"n": 1})
    (tmp_path / ".tmp-checkpoint-000000000002-123").write_bytes(b"half a checkpoint")

    reopened = CheckpointStore(tmp_path, KEY)

    assert list(tmp_path.iterdir()) == [good]
    loaded = reopened.latest()
    assert loaded is not None and loaded.state == {"n": 1}


def test_empty_directory_has_no_checkpoint_and_inspect_says_so(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path, KEY).latest() is None
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.inspect(tmp_path, KEY)


def test_empty_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checkpoint_key"):
        CheckpointStore(tmp_path, "")


def test_inspect_computes_a_missing_digest_from_the_verified_state(tmp_path: Path) -> None:
    # A real service state: only the classes real states hold are unpickled (restricted_pickle).
    pipeline = Pipeline(ModelSettings(rating_model="biased_mf"))
    events = generate_events(300, n_users=20, n_items=15)
    pipeline.process([Record(value=v, key=b"k") for v in events], refresh=False)
    store = CheckpointStore(tmp_path, KEY)
    store.save(
        ServiceState(pipeline.state()), {}, events_learned=1, users=1, items=1, model_digest=""
    )

    assert checkpoint.inspect(tmp_path, KEY)["model_digest"] == pipeline.model_digest()
    assert checkpoint.inspect(tmp_path, KEY, compute_digest=False)["model_digest"] == ""
