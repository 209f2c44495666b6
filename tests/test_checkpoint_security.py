"""No default secret, nothing unpickled unverified, an allow-list behind the HMAC, private files.

The attack these tests replay: someone who can write one file into the state dir plants a
checkpoint whose pickle runs a command, signed with a key they know. Earlier versions shipped
such keys as defaults (`streamrec-development-key`, `change-me-before-production`).
"""

from __future__ import annotations

import logging
import os
import pickle
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamrec.cli import main as cli_main
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.errors import CheckpointError, ConfigError
from streamrec.io.embedded_broker import free_port
from streamrec.service import ServiceState
from streamrec.settings import ModelSettings, ServiceSettings
from streamrec.sim.loops import InProcessLoop
from streamrec.sim.options import SimulationOptions
from streamrec.sim.run import run_loop
from streamrec.sim.users import Users
from streamrec.store import checkpoint, restricted_pickle
from streamrec.store.checkpoint import CheckpointMeta, CheckpointStore
from streamrec.store.checkpoint_key import (
    KEY_ENV,
    KEY_FILE_ENV,
    MIN_KEY_BYTES,
    PUBLIC_KEYS,
    STATE_DIR_KEY,
    signing_key,
    state_dir_key,
)

OLD_DEFAULTS = sorted(key.decode() for key in PUBLIC_KEYS)
PROPER_KEY = "d1c7a0f3b5e2" * 4  # 48 bytes, as an operator would set one


class RunsCommand:
    """Unpickling it runs `touch marker` through os.system: the forged checkpoint's payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


class RunsProcess(RunsCommand):
    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.call, (["touch", str(self.marker)],))


class Evaluates(RunsCommand):
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class Executes(RunsCommand):
    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


class ImportsOs(RunsCommand):
    """`__import__("os")`: the first step of the getattr(__import__("os"), "system") chain."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (__import__, ("os",))


class GetsAttribute(RunsCommand):
    """getattr on an object a checkpoint may hold, asking for something it may not."""

    def __reduce__(self) -> tuple[Any, ...]:
        from river import stats

        return (getattr, (stats.Mean(), "__reduce_ex__"))


ATTACKS = [RunsCommand, RunsProcess, Evaluates, Executes, ImportsOs, GetsAttribute]


def forge(state_dir: Path, payload: object, key: str) -> Path:
    """A checkpoint file holding `payload`, signed with `key`, with no digest in its header (so
    `inspect-checkpoint` would need to unpickle it to report one)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta(
        sequence=1,
        created_at="2026-01-01T00:00:00.000+00:00",
        offsets={("events", 0): 0},
        events_learned=1,
        users=1,
        items=1,
        model_digest="",
    )
    path = state_dir / "checkpoint-000000000001.ckpt"
    path.write_bytes(checkpoint.encode(meta, payload, key))
    return path


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which key it configures; none inherits one from the shell."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)


def test_the_forged_payload_really_runs_a_command_when_unpickled_plainly(tmp_path: Path) -> None:
    """Without this the other tests could pass on a payload that never did anything."""
    for attack in (RunsCommand, RunsProcess, Evaluates, Executes):
        marker = tmp_path / f"{attack.__name__}.marker"
        pickle.loads(pickle.dumps(attack(marker)))
        assert marker.exists(), attack.__name__


# -- the forged checkpoint in `streamrec run` and `streamrec inspect-checkpoint` ---------------

CASES = [
    # (name, key the forger signs with, key the operator configured, what the error says)
    *[(f"no-key-{k}", k, None, "no checkpoint key is configured") for k in OLD_DEFAULTS],
    *[
        (f"old-default-{k}", k, k, "a default that earlier streamrec versions published")
        for k in OLD_DEFAULTS
    ],
    *[(f"hmac-mismatch-{k}", k, PROPER_KEY, "failed its integrity check") for k in OLD_DEFAULTS],
    ("signed-with-the-proper-key", PROPER_KEY, PROPER_KEY, "which no streamrec checkpoint holds"),
]


def _assert_one_error_line(code: int, stderr: str, expected: str) -> None:
    assert code != 0
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("streamrec: error: "), stderr
    assert expected in last, last


@pytest.mark.parametrize(("name", "forged_with", "configured", "expected"), CASES)
def test_run_refuses_a_forged_checkpoint_at_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    forged_with: str,
    configured: str | None,
    expected: str,
) -> None:
    """`streamrec run`: one error line and a non-zero exit before Kafka is touched (the broker
    address is a closed port: reaching it would hang, not fail)."""
    marker = tmp_path / "marker"
    forge(tmp_path / "state", RunsCommand(marker), forged_with)
    if configured is not None:
        monkeypatch.setenv(KEY_ENV, configured)

    code = cli_main([*_run_args(tmp_path / "state", name)])

    _assert_one_error_line(code, capsys.readouterr().err, expected)
    assert not marker.exists()


def _run_args(state: Path, group: str) -> list[str]:
    closed = f"127.0.0.1:{free_port()}"
    return [
        *("run", "--bootstrap-servers", closed, "--topics", "events", "--group-id", group),
        *("--state-dir", str(state), "--metrics-port", "0"),
    ]


def test_the_service_process_refuses_forged_checkpoints(tmp_path: Path) -> None:
    """The deployed entry point itself (`python -m streamrec.service`), for the two ways in:
    no key at all, and a file forged with the real key. Both processes run at once."""
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, KEY_FILE_ENV)}
    started = []
    for name, forged_with, configured, expected in (CASES[0], CASES[-1]):
        marker = tmp_path / name / "marker"
        forge(tmp_path / name / "state", RunsCommand(marker), forged_with)
        args = _run_args(tmp_path / name / "state", name)[1:]
        process = subprocess.Popen(
            [sys.executable, "-m", "streamrec.service", *args],
            env={**env, KEY_ENV: configured} if configured else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((name, expected, marker, process))
    for name, expected, marker, process in started:
        _, stderr = process.communicate(timeout=120)
        _assert_one_error_line(process.returncode, stderr, expected)
        assert not marker.exists(), f"{name}: the forged checkpoint ran its command"


@pytest.mark.parametrize(("name", "forged_with", "configured", "expected"), CASES)
def test_inspect_checkpoint_never_unpickles_a_forged_checkpoint(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    forged_with: str,
    configured: str | None,
    expected: str,
) -> None:
    marker = tmp_path / "marker"
    forge(tmp_path / "state", RunsCommand(marker), forged_with)
    if configured is not None:
        monkeypatch.setenv(KEY_ENV, configured)

    code = cli_main(["inspect-checkpoint", str(tmp_path / "state"), "--json"])

    _assert_one_error_line(code, capsys.readouterr().err, expected)
    assert not marker.exists()


def test_the_cli_run_command_refuses_to_start_without_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`streamrec run` is `python -m streamrec.service`; the refusal also says how to fix it."""
    code = cli_main(["run", "--state-dir", str(tmp_path / "state"), "--metrics-port", "0"])

    err = capsys.readouterr().err
    _assert_one_error_line(code, err, "no checkpoint key is configured")
    for hint in (KEY_ENV, KEY_FILE_ENV, "secrets.token_hex(32)"):
        assert hint in err.splitlines()[-1]
    assert not (tmp_path / "state").exists(), "refused before creating anything"


# -- the restricted unpickler -------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__)
def test_a_checkpoint_signed_with_the_real_key_still_cannot_run_code(
    tmp_path: Path, attack: type[RunsCommand]
) -> None:
    """Defence in depth: a leaked key lets a forger sign, not execute."""
    marker = tmp_path / "marker"
    path = forge(tmp_path / "state", [{"model": attack(marker)}], PROPER_KEY)

    with pytest.raises(CheckpointError, match="which no streamrec checkpoint holds"):
        checkpoint.load(path, PROPER_KEY)
    with pytest.raises(CheckpointError, match="which no streamrec checkpoint holds"):
        CheckpointStore(tmp_path / "state", PROPER_KEY).latest()
    assert not marker.exists()


def _raw_global(module: str, name: str) -> bytes:
    """A protocol-4 pickle that only looks up `module`.`name` (dotted names walk attributes)."""

    def short(text: str) -> bytes:
        data = text.encode()
        return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE

    return b"\x80\x04" + short(module) + short(name) + b"\x93."  # STACK_GLOBAL, STOP


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("streamrec.bandit", "SlotPolicy.__init__"),  # an allowed class, walked to its globals
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("builtins", "__import__"),
        ("numpy._core.multiarray", "_reconstruct"),  # object arrays: pointers from bytes
    ],
)
def test_only_exact_allowed_names_are_looked_up(tmp_path: Path, module: str, name: str) -> None:
    import io

    with pytest.raises(CheckpointError, match=f"names {module}.{name}"):
        restricted_pickle.load(io.BytesIO(_raw_global(module, name)), "test")


def test_object_arrays_cannot_be_rebuilt_from_raw_bytes() -> None:
    """numpy's allowed array reconstructor refuses object dtypes: no pointers forged from bytes."""
    import io

    import numpy as np

    module = "numpy._core.numeric" if hasattr(np, "_core") else "numpy.core.numeric"
    unpickler = restricted_pickle._Unpickler(io.BytesIO(b""))
    rebuild = unpickler.find_class(module, "_frombuffer")  # what a pickle naming it gets
    with pytest.raises(ValueError, match="OBJECT"):
        rebuild(b"\0" * 16, np.dtype("O"), (2,), "C")


COMBINATIONS = [
    (rating, ranker, exploration)
    for rating in ("ensemble", "biased_mf")
    for ranker in ("knn", "mf")
    for exploration in (
        "none",
        "epsilon_greedy",
        "ucb",
        "thompson",
        "bayes_ucb",
        "exp3",
        "linucb",
    )
] + [
    # The reference configurations settings can also name.
    ("river_baseline", "knn", "epsilon_greedy"),
    ("river_biased_mf", "popular", "ucb"),
    ("ensemble", "popular", "thompson"),
]


def _learned_pipeline(settings: ModelSettings) -> Pipeline:
    """A pipeline after a short closed-loop run: ratings, clicks, purchases, rewarded lists."""
    options = SimulationOptions(
        events=120,
        users=20,
        items=20,
        new_items=2,
        new_item_every=20,
        window_visits=60,
        batch_visits=10,
        progress=False,
    )
    loop = InProcessLoop(settings)
    run_loop(loop, Users(options, settings.k), options)
    return loop.pipeline


def test_every_real_state_round_trips_through_the_restricted_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every rating model, ranker and exploration policy: restored through the allow-list, the
    model is the same and learns on the same way. A learner that needs a global the allow-list
    lacks fails here, not at a customer's restart. And the list holds nothing states do not use."""
    used: set[tuple[str, str]] = set()
    find_class = restricted_pickle._Unpickler.find_class

    def recording(self: Any, module: str, name: str) -> Any:
        used.add((module, name))
        return find_class(self, module, name)

    monkeypatch.setattr(restricted_pickle._Unpickler, "find_class", recording)
    failures = []
    for n, (rating, ranker, exploration) in enumerate(COMBINATIONS):
        # Configured business rules travel in the pickled settings: once is enough.
        rules = [] if n else [{"name": "old", "action": "exclude", "attribute": {"name": "year"}}]
        settings = ModelSettings(
            rating_model=rating, ranker=ranker, exploration=exploration, rules=rules
        )
        pipeline = _learned_pipeline(settings)
        store = CheckpointStore(tmp_path / f"{rating}-{ranker}-{exploration}", PROPER_KEY)
        store.save(
            ServiceState(pipeline.state()), {}, events_learned=1, users=1, items=1, model_digest=""
        )
        try:
            loaded = store.latest()
        except CheckpointError as exc:
            failures.append(f"{rating}/{ranker}/{exploration}: {exc}")
            continue
        assert loaded is not None
        restored = Pipeline.from_state(settings, loaded.state.pipeline)
        assert restored.model_digest() == pipeline.model_digest()
        more = [
            Record(value=orjson.dumps(event), key=str(event["user_id"]).encode())
            for event in (
                {
                    "event_id": f"more-{n}",
                    "type": "rating",
                    "user_id": f"u{n % 7}",
                    "item_id": f"i{n % 5}",
                    "timestamp": 1_767_225_600_000,
                    "rating": 4,
                }
                for n in range(20)
            )
        ]
        pipeline.process(more)
        restored.process(more)
        assert restored.model_digest() == pipeline.model_digest(), (rating, ranker, exploration)
    assert failures == []
    other_numpy = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
    assert restricted_pickle.GLOBALS - used - other_numpy == set()
    assert ("builtins", "getattr") in used  # the bound methods of METHODS were exercised


# -- file modes ---------------------------------------------------------------------------------


@pytest.fixture
def no_umask() -> Iterator[None]:
    """umask 0: modes must come from how files are created, not from the user's umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_is_created_0700_and_checkpoints_0600(tmp_path: Path, no_umask: None) -> None:
    state = tmp_path / "new" / "state"
    store = CheckpointStore(state, PROPER_KEY)
    _, path, _ = store.save({"n": 1}, {}, events_learned=1, users=1, items=1, model_digest="")

    assert _mode(state) == 0o700
    assert _mode(path) == 0o600


def test_an_open_state_dir_is_tightened_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o775)
    old = state / "checkpoint-000000000001.ckpt"  # as earlier versions wrote them: 0644
    old.write_bytes(b"old")
    old.chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="streamrec.store.checkpoint"):
        CheckpointStore(state, PROPER_KEY)
        CheckpointStore(state, PROPER_KEY)  # already private: nothing more to say

    assert _mode(state) == 0o700 and _mode(old) == 0o600
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "775" in warnings[0].getMessage()


# -- where the key comes from -------------------------------------------------------------------


def test_no_key_is_refused_with_how_to_set_one() -> None:
    with pytest.raises(ConfigError) as error:
        signing_key(ServiceSettings())
    message = str(error.value)
    assert "\n" not in message
    for hint in (KEY_ENV, KEY_FILE_ENV, "secrets.token_hex(32)"):
        assert hint in message


@pytest.mark.parametrize("old", OLD_DEFAULTS)
def test_formerly_shipped_keys_are_refused_from_settings_and_from_files(
    tmp_path: Path, old: str
) -> None:
    with pytest.raises(ConfigError, match="earlier streamrec versions published"):
        signing_key(ServiceSettings(checkpoint_key=old))
    key_file = tmp_path / "key"
    key_file.write_text(old + "\n")
    with pytest.raises(ConfigError, match="earlier streamrec versions published"):
        signing_key(ServiceSettings(checkpoint_key_file=key_file))


def test_short_and_empty_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=f"15 bytes, too short.*at least {MIN_KEY_BYTES}"):
        signing_key(ServiceSettings(checkpoint_key="x" * 15))
    with pytest.raises(ConfigError, match="empty"):
        signing_key(ServiceSettings(checkpoint_key=""))
    assert signing_key(ServiceSettings(checkpoint_key="x" * 16)) == b"x" * 16


def test_key_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(PROPER_KEY + "\n")
    assert signing_key(ServiceSettings(checkpoint_key_file=key_file)) == PROPER_KEY.encode()
    with pytest.raises(ConfigError, match="set only one"):
        signing_key(ServiceSettings(checkpoint_key=PROPER_KEY, checkpoint_key_file=key_file))
    with pytest.raises(ConfigError, match="cannot read the checkpoint key file"):
        signing_key(ServiceSettings(checkpoint_key_file=tmp_path / "missing"))


def test_key_file_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamrec.settings import load_settings

    key_file = tmp_path / "key"
    key_file.write_text(PROPER_KEY)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    assert signing_key(load_settings(None).service) == PROPER_KEY.encode()


def test_demo_key_is_random_per_state_dir_private_and_reused(
    tmp_path: Path, no_umask: None
) -> None:
    first = state_dir_key(tmp_path / "a")
    assert state_dir_key(tmp_path / "a") == first
    assert state_dir_key(tmp_path / "b") != first
    assert len(first) >= 2 * MIN_KEY_BYTES
    assert _mode(tmp_path / "a" / STATE_DIR_KEY) == 0o600
    assert _mode(tmp_path / "a") == 0o700
    # Signs checkpoints the service accepts.
    assert signing_key(ServiceSettings(checkpoint_key=first)) == first.encode()


def test_a_planted_symlink_is_not_taken_as_the_demo_key(tmp_path: Path) -> None:
    known = tmp_path / "known"
    known.write_text("k" * 64)
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_DIR_KEY).symlink_to(known)
    with pytest.raises(ConfigError, match="cannot read the demo key file"):
        state_dir_key(state)
