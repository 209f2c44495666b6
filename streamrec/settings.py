"""One typed settings model for everything streamrec does.

Read from `STREAMREC_*` environment variables (nested with `__`, e.g. `STREAMREC_MODEL__K=20`),
then an optional config file (`--config FILE`, JSON or TOML), then CLI flags: later sources win.
Kafka client options are passed to librdkafka untouched (`kafka.consumer` / `kafka.producer`
dicts, or `STREAMREC_KAFKA__CONSUMER='{"security.protocol": "SASL_SSL", ...}'`), so SASL/SSL and
every librdkafka option work without streamrec knowing them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from streamrec.contract.catalog import Rule
from streamrec.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Section):
    """What is learned and how it is recommended."""

    rating_model: str = Field(
        "ensemble", description="Rating model: 'ensemble' (quality) or 'biased_mf' (speed)."
    )
    rating_params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the rating model."
    )
    ranker: str = Field(
        "knn",
        description="Top-N ranker: 'knn' (learns from positive events) or 'mf' (ranks by the"
        " rating model's predicted rating; the speed configuration for rating streams).",
    )
    ranker_params: dict[str, Any] = Field(default_factory=dict)
    rating_min: float = Field(1.0, description="Lowest valid rating.")
    rating_max: float = Field(5.0, description="Highest valid rating.")
    positive_threshold: float = Field(
        4.0, description="Ratings at or above this also count as positive feedback for top-N."
    )
    click_weight: float = Field(1.0, ge=0)
    purchase_weight: float = Field(3.0, ge=0)
    rating_weight: float = Field(1.0, ge=0, description="Weight of a positive rating for top-N.")
    k: int = Field(10, ge=1, le=1000, description="Items per recommendation list.")
    history_length: int = Field(
        200, ge=1, description="Items remembered per user (for exclusion and ranking)."
    )
    popularity_half_life_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="Half-life of the 'recently popular' counts (seconds)."
    )
    dedup_window: int = Field(
        200_000, ge=0, description="How many recent event_ids are remembered to drop duplicates."
    )
    max_future_skew_s: float = Field(
        300.0, ge=0, description="Reject events timestamped further than this in the future."
    )
    min_timestamp_s: float = Field(
        631_152_000.0, description="Reject events timestamped before this (default 1990-01-01)."
    )
    exploration: str = Field(
        "epsilon_greedy",
        description="Policy choosing each slot's source (model/popular/new): none, epsilon_greedy,"
        " ucb, thompson, bayes_ucb, exp3, linucb.",
    )
    exploration_params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the River bandit policy."
    )
    new_item_age_s: float = Field(
        3 * 24 * 3600.0, gt=0, description="Items first seen this recently count as 'new'."
    )
    reward_window_s: float = Field(
        3600.0, gt=0, description="Event-time window in which a click or purchase rewards a list."
    )
    click_reward: float = Field(1.0, ge=0)
    purchase_reward: float = Field(2.0, ge=0, description="Purchases may reward more than clicks.")
    max_pending: int = Field(100_000, ge=1, description="Lists awaiting rewards, at most.")
    online_eval_every: int = Field(
        100,
        ge=0,
        description="Live service: evaluate every Nth event prequentially (0: never). One"
        " evaluation costs about as much as learning ten events; at 10k events/s, 100 still"
        " scores 100 events a second.",
    )
    rules: list[Rule] = Field(
        default_factory=list,
        description="Business rules applied before each list's top-K is chosen (exclude, boost,"
        " pin, cap; see schemas/catalog.schema.json). Rules on the catalog stream replace"
        " configured ones of the same name.",
    )
    content_weight: float = Field(
        0.2,
        ge=0,
        le=10,
        description="With a catalog: weight of content similarity (to the user's recent"
        " positives) added to the ranker's score, itself scaled to [0, 1] per list; 0: off."
        " 0.2 was chosen on the first half of ML-100K (bench/quality_ml100k.py).",
    )
    content_history: int = Field(
        20, ge=1, description="Recent positives whose content makes a user's profile."
    )
    seed: int = 42

    @model_validator(mode="after")
    def _check_scale(self) -> ModelSettings:
        if not self.rating_min < self.rating_max:
            raise ValueError("rating_min must be below rating_max")
        return self


class KafkaSettings(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka brokers, HOST:PORT[,...].")
    topics: list[str] = Field(
        default_factory=lambda: ["streamrec.events"], description="Event topics to consume."
    )
    group_id: str = Field("streamrec", description="Consumer group: instances share partitions.")
    recommendations_topic: str = Field(
        "streamrec.recommendations", description="Where refreshed lists go (key = user_id)."
    )
    dlq_topic: str = Field(
        "streamrec.events.dlq", description="Where undecodable/invalid records go, with headers."
    )
    learn_log_topic: str | None = Field(
        None,
        description="Several instances, one model: a one-partition topic into which each "
        "instance forwards the events of the partitions it owns, and from which every instance "
        "learns every event in the same order; each publishes the lists of its own partitions' "
        "users. Unset: each instance learns only the partitions it owns.",
    )
    catalog_topic: str | None = Field(
        None,
        description="Topic of catalog records (items keyed by item_id, rules by rule:NAME; a "
        "tombstone retires an item), read with the events. Unset: no catalog.",
    )
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra librdkafka consumer options, passed through."
    )
    producer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra librdkafka producer options, passed through."
    )
    require_key: bool = Field(
        True,
        description="Send records without a key to the dead-letter topic (reason missing_key): "
        "events must be keyed by user_id so one user's events stay in order.",
    )


class ServiceSettings(_Section):
    state_dir: Path = Field(
        Path("./streamrec-state"), description="Checkpoints of this instance (one dir each)."
    )
    checkpoint_every_events: int = Field(
        50_000, ge=1, description="Checkpoint + commit after this many records..."
    )
    checkpoint_every_seconds: float = Field(30.0, gt=0, description="...or after this long.")
    checkpoints_kept: int = Field(3, ge=1, description="Newest checkpoints kept on disk.")
    checkpoint_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key that signs checkpoints, at least 16 random bytes. No"
        " default: `streamrec run` refuses to start without it (or checkpoint_key_file). Generate"
        ' one: python -c "import secrets; print(secrets.token_hex(32))"',
    )
    checkpoint_key_file: Path | None = Field(
        None,
        description="Instead of checkpoint_key: a file holding the key (a mounted secret).",
    )
    instance_id: str | None = Field(
        None,
        description="With kafka.learn_log_topic: this instance's name, stable across restarts "
        "(its learn-log position is kept under it). Unset: one generated into state_dir.",
    )
    batch_size: int = Field(2000, ge=1, description="Max records per poll.")
    poll_timeout_s: float = Field(0.05, gt=0, description="Longest wait for a batch.")
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="After SIGTERM/SIGINT, finish batch + checkpoint + commit within this, or exit "
        "non-zero (the next start replays from the last checkpoint).",
    )
    flush_timeout_s: float = Field(
        5.0,
        gt=0,
        description="How long a commit point waits for the producer to deliver before it pauses "
        "consumption and reports not ready; it keeps waiting (outputs are never dropped).",
    )
    max_undelivered: int = Field(
        50_000,
        ge=1,
        description="Pause consumption while more outputs than this wait for delivery (bounds "
        "memory when Kafka accepts events faster than it takes recommendations).",
    )
    producer_stall_s: float = Field(
        30.0,
        gt=0,
        description="Outputs waiting this long without one delivery report while Kafka answers "
        "mean a stuck producer: it is replaced and the model replays from its last checkpoint.",
    )
    connect_timeout_s: float = Field(
        30.0, gt=0, description="At start, how long to wait for Kafka to answer before failing."
    )
    on_log_reset: Literal["fail", "earliest"] = Field(
        "fail",
        description="When a partition's log no longer holds the offset the model stands at "
        "(topic recreated, broker data lost, retention): 'fail' stops with a message; "
        "'earliest' learns the partition again from its start (streamrec_log_resets_total).",
    )
    offset_ledger: bool = Field(
        False,
        description="Keep every consumed (partition, offset) range in the checkpoint header, to "
        "audit exactly-once learning (tests, investigations).",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of /metrics, /healthz, /readyz ('0.0.0.0': every interface, as a "
        "container needs).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of /metrics; unset: 9108, or a free port if 9108 is taken; 0 disables.",
    )
    log_format: Literal["text", "json"] = Field("text", description="'json': one object a line.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)


def load_settings(config_file: Path | None = None, **overrides: dict[str, Any]) -> Settings:
    """Settings from environment, then `config_file` (JSON or TOML), then `overrides` by section.

    Raises ConfigError with one line naming each offending setting, its value and where it came
    from, instead of a traceback or pydantic's multi-line report.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = config_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        try:
            data = (
                tomllib.loads(raw.decode()) if config_file.suffix == ".toml" else orjson.loads(raw)
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} is not valid JSON/TOML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {config_file} must hold an object of sections")
    try:
        env_defaults = Settings()
    except SettingsError as exc:
        names = ", ".join(sorted(k for k in os.environ if k.upper().startswith(_ENV_PREFIX)))
        raise ConfigError(f"cannot read settings from the environment ({names}): {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, _env_variable)) from exc
    merged = env_defaults.model_dump()
    for section, values in data.items():
        if isinstance(values, dict) and section in merged:
            merged[section].update(values)
        else:
            merged[section] = values
    for section, values in overrides.items():
        merged.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})

    def source(loc: tuple[str, ...]) -> str | None:
        section, key = loc[0], (loc[1] if len(loc) > 1 else None)
        if key is not None and overrides.get(section, {}).get(key) is not None:
            return "command line"
        given = data.get(section)
        # A check across fields (no key) has no single source, unless the section itself is bad.
        if section in data and (
            not isinstance(given, dict)
            or section not in Settings.model_fields
            or (key is not None and key in given)
        ):
            return f"config file {config_file}"
        return _env_variable(loc)

    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from exc


_ENV_PREFIX = "STREAMREC_"
_SECRET_WORDS = ("key", "password", "secret", "token", "credential")
"""A setting whose name contains one of these never has its value printed in an error."""


def _one_line(exc: ValidationError, source: Callable[[tuple[str, ...]], str | None]) -> str:
    """Each problem of a pydantic ValidationError as `invalid setting model.k=0: why (where)`,
    joined with '; ': operator errors are one line."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        name = ".".join(loc)
        where = source(loc) if loc else None
        suffix = f" ({where})" if where else ""
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting {name}{suffix}")
        elif error["type"] == "missing":
            problems.append(f"missing setting {name}{suffix}")
        elif isinstance(error["input"], dict | list) or not loc:
            problems.append(f"invalid settings in {name or 'settings'}: {message}{suffix}")
        else:
            value = _shown(error["input"], secret=any(w in name.lower() for w in _SECRET_WORDS))
            problems.append(f"invalid setting {name}={value}: {message}{suffix}")
    return "; ".join(problems)


def _shown(value: object, *, secret: bool) -> str:
    if secret:
        return "***"
    plain = isinstance(value, str) and value and not any(c.isspace() for c in value)
    text = str(value) if plain else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _env_variable(loc: tuple[str, ...]) -> str | None:
    """The STREAMREC_* variable that set the setting at `loc`, if one did (names are matched
    without regard to case, as pydantic-settings reads them)."""
    present = {name.upper(): name for name in os.environ}
    for depth in range(min(len(loc), 2), 0, -1):
        candidate = _ENV_PREFIX + "__".join(loc[:depth]).upper()
        if candidate in present:
            return f"env {present[candidate]}"
    return None
