"""A synthetic world of users with hidden tastes, and event logs drawn from it.

`TasteWorld` gives every user and item a hidden latent vector; how much a user likes an item is
their dot product plus an item quality term. Logs drawn from it have real structure (so models
can learn and evaluation means something), unlike uniform noise. `streamrec generate` writes such
a log so the demo and the tests need no downloaded data; the simulator reuses the same world so
its best achievable click-through rate is known.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

START_TIME_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass
class TasteWorld:
    n_users: int = 500
    n_items: int = 300
    n_tastes: int = 4
    seed: int = 0
    # Clicks need affinity above this: 2 makes a random item's click probability ~0.2 (lenient
    # users, what `generate_events` logs use); the simulator uses a higher bar by default, so
    # click-through rates look like real ones (a few percent for a random list).
    click_threshold: float = 2.0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.user_tastes = rng.normal(0.0, 1.0, (self.n_users, self.n_tastes))
        self.item_traits = rng.normal(0.0, 1.0, (self.n_items, self.n_tastes))
        self.item_quality = rng.normal(0.0, 0.5, self.n_items)
        self.user_activity = rng.pareto(1.5, self.n_users) + 1.0
        self.user_activity /= self.user_activity.sum()
        self.rng = rng

    def affinity(
        self, users: np.ndarray | int, items: np.ndarray | slice | int = slice(None)
    ) -> np.ndarray:
        """Hidden preference score(s): higher means more likely to click, buy, rate high."""
        tastes = self.user_tastes[users]
        return (
            tastes @ self.item_traits[items].T / math.sqrt(self.n_tastes) + self.item_quality[items]
        )

    def click_probability(
        self, users: np.ndarray | int, items: np.ndarray | slice = slice(None)
    ) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(2.0 * self.affinity(users, items) - self.click_threshold)))

    def rating(self, user: int, item: int) -> float:
        noisy = 3.0 + 1.2 * float(self.affinity(user, item)) + self.rng.normal(0.0, 0.6)
        return float(min(5, max(1, round(noisy))))

    def browse(
        self, user: int, n_available: int | None = None, exclude: Collection[int] = ()
    ) -> int:
        """An item the user finds on their own: chosen by taste with a softmax.

        `n_available` limits the choice to the first items of the catalog: the simulator adds items
        over time (the rest do not exist yet), so exploration has something new to find.
        `exclude` (items the user already has) must leave at least one item to choose.
        """
        n = self.n_items if n_available is None else n_available
        logits = 2.0 * self.affinity(user, slice(0, n))
        if exclude:
            logits[np.fromiter(exclude, dtype=np.int64)] = -np.inf
        p = np.exp(logits - logits.max())
        return int(self.rng.choice(n, p=p / p.sum()))


def generate_events(
    n_events: int,
    *,
    n_users: int = 500,
    n_items: int = 300,
    seed: int = 0,
    invalid_fraction: float = 0.0,
    duplicate_fraction: float = 0.0,
    interval_ms: int = 1_000,
) -> Iterator[bytes]:
    """JSON lines: clicks, purchases and ratings from a `TasteWorld`, optionally with bad lines."""
    world = TasteWorld(n_users=n_users, n_items=n_items, seed=seed)
    rng = world.rng
    users = rng.choice(n_users, size=n_events, p=world.user_activity)
    kinds = rng.choice(3, size=n_events, p=[0.6, 0.1, 0.3])
    for n in range(n_events):
        user = int(users[n])
        item = world.browse(user)
        event: dict[str, object] = {
            "event_id": f"e{seed}-{n}",
            "user_id": f"u{user}",
            "item_id": f"i{item}",
            "timestamp": int(START_TIME_S * 1000) + n * interval_ms,
            "type": ("click", "purchase", "rating")[kinds[n]],
        }
        if kinds[n] == 1:
            event["quantity"] = int(rng.integers(1, 4))
            event["price"] = round(float(rng.uniform(2, 80)), 2)
        elif kinds[n] == 2:
            event["rating"] = world.rating(user, item)
        line = orjson.dumps(event)
        if invalid_fraction and rng.random() < invalid_fraction:
            line = _corrupt(line, event, rng)
        yield line
        if duplicate_fraction and rng.random() < duplicate_fraction:
            yield line


def _corrupt(line: bytes, event: dict[str, object], rng: np.random.Generator) -> bytes:
    """One of the ways real producers get it wrong."""
    kind = int(rng.integers(6))
    bad = dict(event)
    if kind == 0:
        return line[: len(line) // 2]  # truncated JSON
    if kind == 1:
        bad["type"] = "like"  # unknown type
    elif kind == 2:
        del bad["user_id"]
    elif kind == 3:
        bad["type"], bad["rating"] = "rating", 11.0  # off the scale
    elif kind == 4:
        bad["timestamp"] = int(event["timestamp"]) + 10 * 365 * 86_400_000  # type: ignore[call-overload]
    else:
        bad["item_id"] = ""
    return orjson.dumps(bad)


def write_events(path: Path, lines: Iterator[bytes]) -> int:
    count = 0
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line + b"\n")
            count += 1
    return count
