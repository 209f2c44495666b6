"""The key that signs checkpoints: where it comes from, and which keys are refused.

A checkpoint that verifies against the key is restored. Anyone who knows the key and can write a
file into the state dir therefore decides what the service loads at its next start. So there is
no default key. `streamrec run` and `streamrec inspect-checkpoint` call `signing_key`, and it
refuses to go on without a key that was set on purpose:

- from `service.checkpoint_key` (`STREAMREC_SERVICE__CHECKPOINT_KEY`), or
- from the file named by `service.checkpoint_key_file` (`STREAMREC_SERVICE__CHECKPOINT_KEY_FILE`),
  the way Kubernetes and Docker mount secrets; one trailing newline is ignored.

Keys that shipped in earlier versions (`PUBLIC_KEYS`) are refused: they are public. So are keys
shorter than `MIN_KEY_BYTES`.

`streamrec demo` and `streamrec simulate --transport kafka` run a throwaway consumer. It may use
`state_dir_key`: a random key kept in the state dir, 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from streamrec.errors import ConfigError
from streamrec.settings import ServiceSettings

KEY_ENV = "STREAMREC_SERVICE__CHECKPOINT_KEY"
KEY_FILE_ENV = "STREAMREC_SERVICE__CHECKPOINT_KEY_FILE"
GENERATE = 'python -c "import secrets; print(secrets.token_hex(32))"'

MIN_KEY_BYTES = 16
"""A key shorter than 16 bytes cannot hold 128 bits, the usual floor for a symmetric secret.
Length does not prove randomness, but it rules out the words people type (`secret`, `test-key`,
`changeme`). Use a random key; `GENERATE` prints 32 random bytes as 64 hex characters."""

PUBLIC_KEYS = frozenset({b"streamrec-development-key", b"change-me-before-production"})
"""Keys earlier versions shipped as defaults (settings.py, docker-compose.yml): public, so a
checkpoint signed with one proves nothing."""

STATE_DIR_KEY = "checkpoint.key"
"""Name of the demo's generated key file inside its state dir."""

_HOW = (
    f"set {KEY_ENV}, or {KEY_FILE_ENV} to a file holding it (service.checkpoint_key / "
    f"service.checkpoint_key_file in a --config file); generate one with: {GENERATE}"
)


def signing_key(service: ServiceSettings) -> bytes:
    """The configured checkpoint key, checked; ConfigError (one line, saying what to do) if
    there is none or it cannot be secret."""
    key, key_file = service.checkpoint_key, service.checkpoint_key_file
    if key is not None and key_file is not None:
        raise ConfigError(
            f"both service.checkpoint_key and service.checkpoint_key_file are set; set only one "
            f"({KEY_ENV} or {KEY_FILE_ENV})"
        )
    if key is not None:
        return check_key(key.get_secret_value().encode(), f"service.checkpoint_key ({KEY_ENV})")
    if key_file is not None:
        return check_key(_read_key_file(key_file), f"the key file {key_file}")
    raise ConfigError(f"no checkpoint key is configured (checkpoints are signed with it): {_HOW}")


def check_key(key: bytes, source: str) -> bytes:
    """`key` if it can be secret, else ConfigError naming `source`."""
    if not key:
        raise ConfigError(f"{source} is empty: {_HOW}")
    if key.strip() in PUBLIC_KEYS:
        raise ConfigError(
            f"{source} is {key.strip().decode()!r}, a default that earlier streamrec versions "
            f"published, so it signs nothing: {_HOW}"
        )
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{source} is {len(key)} bytes, too short to be secret (at least {MIN_KEY_BYTES} "
            f"random bytes): {_HOW}"
        )
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the checkpoint key file {path} (service.checkpoint_key_file): "
            f"{exc.strerror or exc}"
        ) from exc
    # `echo KEY > file` and most editors end the file with a newline that is not part of it.
    return data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")


def state_dir_key(state_dir: Path) -> str:
    """The random key of a throwaway consumer's state dir (`<state_dir>/checkpoint.key`, 0600):
    read if it exists, so a reused state dir restores its checkpoints; else created."""
    path = Path(state_dir) / STATE_DIR_KEY
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_NOFOLLOW: a symlink planted there could point at a file whose content others know.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        key = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # another process created it just now: use theirs
            return state_dir_key(state_dir)
        except OSError as exc:
            raise ConfigError(f"cannot create the demo key file {path}: {exc}") from exc
        with open(fd, "w") as handle:
            handle.write(key + "\n")
        return key
    except OSError as exc:
        raise ConfigError(f"cannot read the demo key file {path}: {exc}") from exc
    with open(fd, "rb") as handle:
        text = handle.read().strip()
    try:
        return check_key(text, f"the demo key file {path}").decode()
    except UnicodeDecodeError:  # it goes to the consumer through the environment: text only
        raise ConfigError(f"the demo key file {path} is not text; delete it") from None
