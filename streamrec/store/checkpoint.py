"""Atomic, signed snapshots of everything the model has learned and where in the streams it stands.

A checkpoint is what makes model updates effectively-once: it pairs the pipeline state (model,
every RNG, the dedup window) with the next offset of every partition that state has consumed, so
a restart resumes exactly after the last event the restored model has seen.

File layout (integers big-endian):

    magic        8 bytes   b"STRMRCKP"
    version      u16       FORMAT_VERSION
    header_len   u32
    payload_len  u64
    header       JSON metadata: offsets, events_learned, users, items, model_digest, created_at
    payload      pickle of the pipeline state
    mac          32 bytes  HMAC-SHA256(key, every byte above)

Loading checks the length and the HMAC *before* anything is parsed or unpickled: unpickling runs
arbitrary code, so a file that was truncated, altered or signed with another key is refused with
`CheckpointError`. A verified payload is then unpickled through an allow-list of the globals real
states hold (restricted_pickle.py), so even a file signed with a leaked key cannot run a command.
The header is readable without unpickling the model, which is how `inspect` stays cheap and safe.
The key itself is chosen by the operator (checkpoint_key.py says how, and which keys are refused).

Only this process's user can read or write the state: the directory is 0700 (tightened, with a
warning, if it was not) and every checkpoint is created 0600. Whoever can write a file there can
at least replace the model, signed or not, so this is as sensitive as the key.

Writes are atomic: temp file in the same directory → fsync → rename → fsync the directory. A crash
mid-write leaves a stray temp file (removed on the next start), never a half checkpoint under a
real name. The newest `keep` checkpoints are kept.

Recovery policy: `CheckpointStore.latest()` loads the newest checkpoint that verifies. If a newer
one fails verification it is renamed to `*.rejected` (kept for forensics, never deleted) and an
ERROR is logged naming it; the older one is used and flagged `fell_back`, so the service replays
from its offsets. Falling back is safe because offsets are committed to Kafka only after the
checkpoint that holds them is durable. If no checkpoint verifies, nothing is renamed and
`CheckpointError` is raised: that is almost always a wrong `service.checkpoint_key`, and starting
from scratch would silently throw the model away.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import pickle
import re
import stat
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamrec.errors import CheckpointError, ConfigError
from streamrec.store import restricted_pickle

log = logging.getLogger(__name__)

MAGIC = b"STRMRCKP"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct(">8sHIQ")
_MAC_SIZE = hashlib.sha256().digest_size
_NAME = re.compile(r"^checkpoint-(\d{12})\.ckpt$")
_TEMP_PREFIX = ".tmp-checkpoint-"

TopicPartitionKey = tuple[str, int]
"""(topic, partition)."""


@dataclass(frozen=True, slots=True)
class CheckpointMeta:
    """What a checkpoint says about itself; signed, readable without unpickling the model."""

    sequence: int
    created_at: str  # RFC 3339, UTC
    offsets: dict[TopicPartitionKey, int]  # next offset to consume, per partition
    events_learned: int
    users: int
    items: int
    model_digest: str
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The shape `streamrec inspect-checkpoint --json` prints."""
        return {
            "format_version": self.format_version,
            "sequence": self.sequence,
            "created_at": self.created_at,
            "events_learned": self.events_learned,
            "users": self.users,
            "items": self.items,
            "model_digest": self.model_digest,
            "offsets": [
                {"topic": topic, "partition": partition, "offset": offset}
                for (topic, partition), offset in sorted(self.offsets.items())
            ],
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointMeta:
        return cls(
            sequence=int(data["sequence"]),
            created_at=str(data["created_at"]),
            offsets={(o["topic"], int(o["partition"])): int(o["offset"]) for o in data["offsets"]},
            events_learned=int(data["events_learned"]),
            users=int(data["users"]),
            items=int(data["items"]),
            model_digest=str(data["model_digest"]),
            format_version=int(data["format_version"]),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    meta: CheckpointMeta
    state: Any  # whatever Pipeline.state() returned
    path: Path
    fell_back: bool = False  # a newer checkpoint was rejected and this older one used instead


def _key_bytes(key: str | bytes | Any) -> bytes:
    if hasattr(key, "get_secret_value"):  # pydantic SecretStr
        key = key.get_secret_value()
    data = key.encode() if isinstance(key, str) else bytes(key or b"")
    if not data:
        raise ConfigError("service.checkpoint_key is empty: checkpoints must be signed with a key")
    return data


def encode(meta: CheckpointMeta, state: Any, key: str | bytes | Any) -> bytes:
    """The signed file content for `meta` and `state`."""
    header = orjson.dumps(meta.to_json())
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    body = _PREAMBLE.pack(MAGIC, meta.format_version, len(header), len(payload)) + header + payload
    return body + hmac.new(_key_bytes(key), body, hashlib.sha256).digest()


def _verify(data: bytes, key: str | bytes | Any, source: Path | str) -> tuple[bytes, int]:
    """Check magic, length and HMAC of a file's bytes; the header JSON and where the payload
    starts."""
    if len(data) < _PREAMBLE.size + _MAC_SIZE:
        raise CheckpointError(
            f"checkpoint {source} is truncated ({len(data)} bytes, shorter than any checkpoint); "
            "it was not loaded"
        )
    magic, version, header_len, payload_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError(f"{source} is not a streamrec checkpoint (bad magic bytes)")
    expected = _PREAMBLE.size + header_len + payload_len + _MAC_SIZE
    if len(data) != expected:
        raise CheckpointError(
            f"checkpoint {source} is truncated or padded: {len(data)} bytes where its header "
            f"promises {expected}; it was not loaded"
        )
    body, mac = data[:-_MAC_SIZE], data[-_MAC_SIZE:]
    if not hmac.compare_digest(mac, hmac.new(_key_bytes(key), body, hashlib.sha256).digest()):
        raise CheckpointError(
            f"checkpoint {source} failed its integrity check (HMAC-SHA256): it was altered, or "
            "signed with a different service.checkpoint_key; it was not loaded"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {source} has format version {version}; this streamrec reads version "
            f"{FORMAT_VERSION}. Run the streamrec version that wrote it, or start a new state dir"
        )
    start = _PREAMBLE.size
    return data[start : start + header_len], start + header_len


def read_meta(path: Path, key: str | bytes | Any) -> CheckpointMeta:
    """The verified metadata of one checkpoint file, without unpickling its model."""
    header, _ = _verify(_read(path), key, path)
    return CheckpointMeta.from_json(orjson.loads(header))


def load(path: Path, key: str | bytes | Any) -> Checkpoint:
    """Verify, then unpickle (allow-listed globals only), one checkpoint file."""
    data = _read(path)
    header, payload_start = _verify(data, key, path)
    meta = CheckpointMeta.from_json(orjson.loads(header))
    # A BytesIO over the whole file shares its buffer: no copy of a payload of hundreds of MB.
    stream = io.BytesIO(data)
    stream.seek(payload_start)
    try:
        state = restricted_pickle.load(stream, path)
    except CheckpointError:
        raise
    except Exception as exc:  # signed by us yet unreadable: an incompatible streamrec version
        raise CheckpointError(
            f"checkpoint {path} is authentic but its state cannot be restored ({exc!r}); "
            "it was probably written by another streamrec version"
        ) from exc
    return Checkpoint(meta=meta, state=state, path=path)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def _private_directory(directory: Path) -> None:
    """Create `directory` 0700, or take group and other permissions away from it (and from
    checkpoints older streamrec versions wrote 0644), with one WARNING saying so."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            directory.chmod(mode & 0o700)
            log.warning(
                "state dir %s was accessible to other users (mode %o); set it to %o. Anyone who "
                "can write there can replace the model",
                directory,
                mode,
                mode & 0o700,
            )
        for path in directory.iterdir():
            info = path.lstat()
            if _NAME.match(path.name) and stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
                path.chmod(0o600)
    except OSError as exc:
        raise CheckpointError(
            f"cannot create or secure the state dir {directory}: {exc}. It must be a directory "
            "this user owns (service.state_dir)"
        ) from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoints of one instance, in one directory (instances never share a directory)."""

    def __init__(self, directory: Path, key: str | bytes | Any, keep: int = 3) -> None:
        if keep < 1:
            raise ConfigError("service.checkpoints_kept must be at least 1")
        self.directory = Path(directory)
        self._key = _key_bytes(key)
        self.keep = keep
        _private_directory(self.directory)
        for stale in self.directory.glob(_TEMP_PREFIX + "*"):
            # Left by a crash in the middle of a write; never renamed, so never trusted.
            stale.unlink(missing_ok=True)

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: p.name)

    def _next_sequence(self) -> int:
        numbers = [
            int(m.group(1))
            for p in self.directory.iterdir()
            if (m := re.match(r"^checkpoint-(\d{12})\.ckpt", p.name))
        ]
        return max(numbers, default=0) + 1

    def save(
        self,
        state: Any,
        offsets: Mapping[TopicPartitionKey, int],
        *,
        events_learned: int,
        users: int,
        items: int,
        model_digest: str,
        extra: dict[str, Any] | None = None,
    ) -> tuple[CheckpointMeta, Path, int]:
        """Write a checkpoint durably; (its metadata, its path, its size in bytes).

        When this returns, the file and its directory entry are on disk: offsets it holds may now
        be committed to Kafka.
        """
        meta = CheckpointMeta(
            sequence=self._next_sequence(),
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            offsets=dict(offsets),
            events_learned=events_learned,
            users=users,
            items=items,
            model_digest=model_digest,
            extra=dict(extra or {}),
        )
        data = encode(meta, state, self._key)
        final = self.directory / f"checkpoint-{meta.sequence:012d}.ckpt"
        temp = self.directory / f"{_TEMP_PREFIX}{meta.sequence:012d}-{os.getpid()}"
        try:
            # Created 0600, never chmod-ed later: no moment at which others could open it.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
            _fsync_dir(self.directory)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise CheckpointError(f"cannot write checkpoint in {self.directory}: {exc}") from exc
        self._prune()
        return meta, final, len(data)

    def _prune(self) -> None:
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies, None if there is none; see the module docstring
        for what happens to newer ones that do not."""
        paths = self.paths()
        rejected: list[tuple[Path, CheckpointError]] = []
        for path in reversed(paths):
            try:
                checkpoint = load(path, self._key)
            except CheckpointError as exc:
                rejected.append((path, exc))
                continue
            for bad, error in rejected:
                quarantine = bad.with_name(bad.name + ".rejected")
                os.replace(bad, quarantine)
                log.error(
                    "REJECTED checkpoint %s (moved to %s): %s. Falling back to the older "
                    "checkpoint %s (sequence %d, %d events learned); events after it are "
                    "replayed from Kafka.",
                    bad,
                    quarantine.name,
                    error,
                    path.name,
                    checkpoint.meta.sequence,
                    checkpoint.meta.events_learned,
                )
            if rejected:
                _fsync_dir(self.directory)
                return Checkpoint(checkpoint.meta, checkpoint.state, path, fell_back=True)
            return checkpoint
        if rejected:
            details = "; ".join(str(error) for _, error in rejected)
            raise CheckpointError(
                f"no checkpoint in {self.directory} could be verified ({details}). Refusing to "
                "start from scratch over them: check service.checkpoint_key, or move the "
                "directory away to really start over"
            )
        return None


def inspect(
    directory: Path, key: str | bytes | Any, *, compute_digest: bool = True
) -> dict[str, Any]:
    """Metadata of the newest checkpoint that verifies in `directory` (or of the file `directory`):
    `events_learned`, `users`, `items`, `offsets`, `model_digest`, `created_at`, `sequence`,
    `format_version`, `path`, `size_bytes`, `age_seconds`.

    Read from the signed header without unpickling, except when the header has no digest (the
    service writes it only at shutdown): then, with `compute_digest`, the verified state is
    loaded and asked for `model_digest()`.

    Raises CheckpointError if there is none, or if none verifies.
    """
    directory = Path(directory)
    if directory.is_file():
        candidates = [directory]
    elif directory.is_dir():
        candidates = [p for p in directory.iterdir() if _NAME.match(p.name)]
        candidates.sort(key=lambda p: p.name, reverse=True)
    else:
        raise CheckpointError(f"{directory} does not exist")
    if not candidates:
        raise CheckpointError(f"no checkpoint in {directory}")
    errors: list[str] = []
    for path in candidates:
        try:
            meta = read_meta(path, key)
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        result = meta.to_json()
        if not meta.model_digest and compute_digest:
            # Interval checkpoints skip the (slow) digest; the file is verified, so loading it
            # is safe, and the state knows how to digest itself.
            state = load(path, key).state
            digest = getattr(state, "model_digest", None)
            if callable(digest):
                result["model_digest"] = digest()
        created = datetime.fromisoformat(meta.created_at).timestamp()
        result.update(
            path=str(path),
            size_bytes=path.stat().st_size,
            age_seconds=round(max(0.0, time.time() - created), 3),
            rejected_newer=errors,
        )
        return result
    raise CheckpointError("; ".join(errors))
