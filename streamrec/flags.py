"""One way from command-line flags to `Settings`, for every command that takes settings.

A flag that sets a setting is declared by the setting's path (`"kafka.bootstrap_servers"`); its
name, type and help come from the settings model, so a flag cannot drift from the setting it
sets. `settings_from_args` then layers the flags that were given over `--config` and the
`STREAMREC_*` environment, the same way for `run`, `replay`, `simulate`, `demo`, `produce` and
`inspect-checkpoint`. Errors keep naming the flag's source ("command line").
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from streamrec.settings import Settings, load_settings

_PATHS = "setting_flags"
"""Namespace attribute that lists which of a parser's dests are settings (and of which path)."""


def add_setting_flags(
    parser: argparse.ArgumentParser,
    *paths: str,
    help: Mapping[str, str] | None = None,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Add `--config` and one flag per setting path (`section.name` → `--name`, dest `name`).

    `help` replaces a setting's description where a command means something more specific (the
    simulator's `--bootstrap-servers` also means "do not start an embedded broker"); `choices`
    restricts a free-text setting where the command knows the valid values.
    """
    if not any("--config" in action.option_strings for action in parser._actions):
        # SUPPRESS: a subcommand's unset --config must not hide `streamrec --config X COMMAND`.
        parser.add_argument(
            "--config",
            type=Path,
            default=argparse.SUPPRESS,
            help="settings file (JSON or TOML); flags override it, it overrides STREAMREC_*",
        )
    known: dict[str, str] = dict(parser.get_default(_PATHS) or {})
    for path in paths:
        section, name = path.split(".")
        info = _section(section).model_fields[name]
        convert, allowed = _converter(info.annotation)
        if choices and path in choices:
            allowed = list(choices[path])
        text = (help or {}).get(path) or info.description or ""
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=convert,
            choices=allowed,
            default=None,
            help=f"{text} [STREAMREC_{section.upper()}__{name.upper()}]",
        )
        known[name] = path
    parser.set_defaults(**{_PATHS: known})


def settings_from_args(args: argparse.Namespace, **defaults: Mapping[str, Any] | None) -> Settings:
    """Settings from STREAMREC_*, then `--config`, then `defaults` (a command's own, by section),
    then the setting flags that were given."""
    overrides: dict[str, dict[str, Any]] = {
        section: dict(values or {}) for section, values in defaults.items()
    }
    for name, path in (getattr(args, _PATHS, None) or {}).items():
        value = getattr(args, name, None)
        if value is not None:
            section, key = path.split(".")
            overrides.setdefault(section, {})[key] = value
    return load_settings(getattr(args, "config", None), **overrides)


def settings_help() -> str:
    """Every setting with its environment variable, default and description (for --help)."""
    lines = [
        "settings (environment variable, default: description); a --config file (JSON/TOML) "
        "uses the same",
        'sections and names, e.g. {"kafka": {"consumer": {"security.protocol": "SASL_SSL"}}}:',
    ]
    for section in Settings.model_fields:
        for name, info in _section(section).model_fields.items():
            default = info.get_default(call_default_factory=True)
            if name == "checkpoint_key":
                default = "no default: required, unless CHECKPOINT_KEY_FILE is set"
            described = f" {info.description}" if info.description else ""
            lines.append(f"  STREAMREC_{section.upper()}__{name.upper()} ({default!s}):{described}")
    return "\n".join(lines)


def _section(section: str) -> Any:
    model = Settings.model_fields[section].annotation
    if model is None or not hasattr(model, "model_fields"):
        raise KeyError(f"{section!r} is not a settings section")
    return model


def _converter(annotation: Any) -> tuple[Callable[[str], Any], list[Any] | None]:
    """argparse `type` (and `choices`) for a setting's annotation: plain scalars, paths,
    comma-separated lists, literals; `X | None` parses as X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _converter(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return str, list(args)
    if typing.get_origin(annotation) is list:
        return lambda text: [part for part in text.split(",") if part], None
    if annotation in (str, int, float, Path):
        return annotation, None
    raise TypeError(f"no command-line flag for a setting of type {annotation!r}")


__all__ = ["add_setting_flags", "settings_from_args", "settings_help"]
