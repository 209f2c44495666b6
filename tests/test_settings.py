"""Bad settings are one clear line: which setting, what value, what is wrong, where it was set."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.cli import main
from streamrec.errors import ConfigError
from streamrec.settings import load_settings


def test_bad_env_value_is_one_line_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMREC_MODEL__K", "0")
    assert main(["replay", str(tmp_path / "events.jsonl")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "streamrec: error: invalid setting model.k=0: Input should be greater than or equal to 1"
        " (env STREAMREC_MODEL__K)\n"
    )


def test_every_problem_of_a_config_file_on_one_line(tmp_path: Path) -> None:
    config = tmp_path / "streamrec.toml"
    config.write_text(
        '[model]\nk = 0\nrating_modle = "x"\n[service]\nmetrics_port = "ninety"\n[nope]\na = 1\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    where = f"(config file {config})"
    assert str(raised.value) == "; ".join(
        [
            f"invalid setting model.k=0: Input should be greater than or equal to 1 {where}",
            f"unknown setting model.rating_modle {where}",
            "invalid setting service.metrics_port=ninety: Input should be a valid integer,"
            f" unable to parse string as an integer {where}",
            f"unknown setting nope {where}",
        ]
    )


def test_command_line_values_and_checks_across_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_SERVICE__BATCH_SIZE", "10")  # valid: not blamed
    with pytest.raises(ConfigError, match=r"^invalid setting service\.batch_size=0: .*\(command"):
        load_settings(None, service={"batch_size": 0})
    with pytest.raises(ConfigError) as raised:
        load_settings(None, model={"rating_min": 5.0, "rating_max": 1.0})
    assert str(raised.value) == "invalid settings in model: rating_min must be below rating_max"


def test_secret_values_are_never_printed(tmp_path: Path) -> None:
    config = tmp_path / "streamrec.json"
    config.write_text(
        '{"service": {"checkpoint_key": ["hunter2"]},'
        ' "kafka": {"consumer": {"sasl.password": ["hunter2"]}}}'
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert "hunter2" not in message and "\n" not in message
    assert "service.checkpoint_key" in message and "kafka.consumer.sasl.password" in message


def test_unparsable_env_json_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__CONSUMER", "{not json")
    with pytest.raises(ConfigError, match="STREAMREC_KAFKA__CONSUMER") as raised:
        load_settings()
    assert "\n" not in str(raised.value)


def test_a_config_file_that_is_not_an_object(tmp_path: Path) -> None:
    config = tmp_path / "streamrec.json"
    config.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold an object of sections"):
        load_settings(config)
