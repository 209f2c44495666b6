"""The one path from command-line flags to settings: flags > --config > STREAMREC_* > defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamrec.cli import build_parser
from streamrec.errors import ConfigError
from streamrec.flags import add_setting_flags, settings_from_args, settings_help


def parser(*paths: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_setting_flags(p, *paths)
    return p


def test_a_flag_beats_the_config_file_which_beats_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "s.json"
    config.write_text('{"kafka": {"group_id": "from-file", "bootstrap_servers": "file:1"}}')
    monkeypatch.setenv("STREAMREC_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("STREAMREC_SERVICE__BATCH_SIZE", "77")
    p = parser("kafka.group_id", "kafka.bootstrap_servers", "service.batch_size")
    settings = settings_from_args(p.parse_args(["--config", str(config), "--group-id", "flag"]))
    assert settings.kafka.group_id == "flag"
    assert settings.kafka.bootstrap_servers == "file:1"
    assert settings.service.batch_size == 77


def test_flags_take_the_settings_types() -> None:
    p = parser("kafka.topics", "service.state_dir", "service.checkpoint_every_seconds")
    args = p.parse_args(
        ["--topics", "a,b", "--state-dir", "/tmp/x", "--checkpoint-every-seconds", "2.5"]
    )
    settings = settings_from_args(args)
    assert settings.kafka.topics == ["a", "b"]
    assert settings.service.state_dir == Path("/tmp/x")
    assert settings.service.checkpoint_every_seconds == 2.5
    with pytest.raises(SystemExit):
        p.parse_args(["--checkpoint-every-seconds", "soon"])


def test_a_command_default_sits_under_the_flags() -> None:
    p = parser("model.k")
    assert settings_from_args(p.parse_args([]), model={"k": 5}).model.k == 5
    assert settings_from_args(p.parse_args(["--k", "7"]), model={"k": 5}).model.k == 7


def test_a_bad_flag_value_names_the_command_line() -> None:
    args = parser("model.k").parse_args(["--k", "0"])
    with pytest.raises(ConfigError, match=r"model\.k=0.*command line"):
        settings_from_args(args)


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_read_before_or_after_the_subcommand(tmp_path: Path, where: str) -> None:
    config = tmp_path / "s.toml"
    config.write_text('[kafka]\ngroup_id = "toml-group"\n')
    tail = ["inspect-checkpoint", str(tmp_path)]
    argv = (
        ["--config", str(config), *tail] if where == "before" else [*tail, "--config", str(config)]
    )
    args = build_parser().parse_args(argv)
    assert settings_from_args(args).kafka.group_id == "toml-group"


def test_every_command_with_settings_declares_them_the_same_way() -> None:
    """`run`, `replay`, `simulate`, `demo` and `produce` take their setting flags from the one
    helper: the help text names the environment twin of each."""
    for command, flag, variable in [
        ("run", "--group-id", "STREAMREC_KAFKA__GROUP_ID"),
        ("replay", "--ranker", "STREAMREC_MODEL__RANKER"),
        ("simulate", "--k", "STREAMREC_MODEL__K"),
        ("demo", "--bootstrap-servers", "STREAMREC_KAFKA__BOOTSTRAP_SERVERS"),
        ("produce", "--bootstrap-servers", "STREAMREC_KAFKA__BOOTSTRAP_SERVERS"),
    ]:
        sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        [action] = [a for a in sub._actions if flag in a.option_strings]
        assert action.help is not None and variable in action.help, (command, action.help)


def test_settings_help_lists_every_setting_with_its_variable() -> None:
    text = settings_help()
    assert "STREAMREC_SERVICE__CHECKPOINT_KEY (no default" in text
    assert "STREAMREC_KAFKA__TOPICS (['streamrec.events'])" in text
