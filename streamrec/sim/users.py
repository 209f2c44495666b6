"""The simulated users: hidden tastes, what each has seen, the lists they hold, and the tallies.

Each visit, an activity-weighted user looks at the latest list streamrec published for them,
clicks each shown item with its hidden click probability (optionally discounted by position),
sometimes buys or rates a clicked item, and sometimes browses on their own (an item by taste, not
from the list). List actions carry the list's `rec_id`, so the bandit's reward join sees them.
The catalog grows during the run: an item that arrives is unknown to streamrec until someone
browses it, and only exploration (the `new` source) shows it to others quickly.

Because the simulator knows the hidden probabilities, it can say how good each list *could* have
been. For every visit that showed a list, at that moment and for that user, it computes
analytically (no sampling noise) the expected CTR of the **oracle** (the best unseen items),
of a **random** list and of a **popularity** list (most clicked so far), beside streamrec's
realised CTR and its expected CTR (the hidden probabilities of what it actually showed).

Nothing here knows how events travel (see `streamrec.sim.loops`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streamrec.data.synthetic import START_TIME_S, TasteWorld
from streamrec.sim.options import SimulationOptions


@dataclass
class ShownList:
    """A recommendation list as the simulated user sees it (what came back on the topic)."""

    user_id: str
    rec_id: str
    items: list[str]
    sources: list[str]
    reasons: list[str] = field(default_factory=list)


# ---- statistics -----------------------------------------------------------------------------


@dataclass
class CtrTally:
    """Sums over shown slots; every rate is a sum divided by `slots`."""

    visits: int = 0  # visits that showed a list
    visits_without_list: int = 0
    slots: int = 0
    clicks: int = 0
    expected: float = 0.0  # hidden click probability of what streamrec showed
    oracle: float = 0.0
    random: float = 0.0
    popular: float = 0.0

    def add(self, other: CtrTally) -> None:
        self.visits += other.visits
        self.visits_without_list += other.visits_without_list
        self.slots += other.slots
        self.clicks += other.clicks
        self.expected += other.expected
        self.oracle += other.oracle
        self.random += other.random
        self.popular += other.popular

    def rates(self) -> dict[str, float | None]:
        def rate(x: float) -> float | None:
            return x / self.slots if self.slots else None

        return {
            "ctr": rate(self.clicks),
            "expected_ctr": rate(self.expected),
            "oracle_ctr": rate(self.oracle),
            "random_ctr": rate(self.random),
            "popular_ctr": rate(self.popular),
        }


@dataclass
class Discovery:
    """How fast items that arrived during the run reached users through streamrec's lists.

    Visits are counted from the item's arrival in the catalog. An item never shown counts as
    infinitely late, so a median is `None` when more than half were never shown: slow discovery
    must not look fast just because the slowest items were left out.
    """

    new_items: int = 0
    shown: int = 0
    clicked: int = 0
    median_visits_to_known: float | None = None  # first event of any kind (a browse, usually)
    median_visits_to_shown: float | None = None
    median_visits_to_clicked: float | None = None
    median_visits_known_to_shown: float | None = None
    shown_within: dict[str, float] = field(default_factory=dict)  # "200": share shown within 200


def _censored_median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    median = float(np.median(np.asarray(values, dtype=np.float64)))
    return median if math.isfinite(median) else None


# ---- the simulated users --------------------------------------------------------------------


class Users:
    """The simulator's side of the loop: hidden tastes, what each user has seen, the lists they
    hold, and the tallies. Knows nothing about how events travel."""

    def __init__(self, options: SimulationOptions, k: int, run_token: str = "") -> None:
        self.options = options
        self.k = k
        self.world = TasteWorld(
            n_users=options.users,
            n_items=options.items + options.new_items,
            seed=options.seed,
            click_threshold=options.click_threshold,
        )
        self.rng = np.random.default_rng(options.seed + 1)
        self.run_token = run_token
        self.available = options.items
        self.seen: list[set[int]] = [set() for _ in range(options.users)]
        self.latest: dict[int, ShownList] = {}
        self.clicks = np.zeros(self.world.n_items, dtype=np.float64)
        self.popular_order = np.zeros(0, dtype=np.int64)
        self.examine = np.arange(1, k + 1, dtype=np.float64) ** -options.position_bias
        n = self.world.n_items
        self.arrived_at = np.full(n, -1, dtype=np.int64)
        self.known_at = np.full(n, -1, dtype=np.int64)
        self.shown_at = np.full(n, -1, dtype=np.int64)
        self.clicked_at = np.full(n, -1, dtype=np.int64)
        self.source_slots: dict[str, int] = {}
        self.source_clicks: dict[str, int] = {}
        self.events_made = 0
        self.visits = 0
        span = (options.events + 1) * options.visit_seconds
        # Event time starts in the past so the pipeline's clock guards accept every event.
        self.start_s = min(START_TIME_S, time.time() - span - 3600.0)

    def begin_batch(self) -> None:
        """Popularity for the baseline as of the batch start, like streamrec's own lists."""
        self.popular_order = np.lexsort(
            (np.arange(self.available), -self.clicks[: self.available])
        ).astype(np.int64)

    def visitors(self, n: int) -> np.ndarray:
        return self.rng.choice(self.options.users, size=n, p=self.world.user_activity)

    def maybe_add_item(self) -> None:
        o = self.options
        if (
            self.visits
            and self.visits % o.new_item_every == 0
            and self.available < o.items + (o.new_items)
        ):
            self.arrived_at[self.available] = self.visits
            self.available += 1

    def visit(self, user: int, tally: CtrTally) -> list[tuple[bytes, bytes]]:
        """One visit: look at the list, click, buy, rate, browse. Returns the events it made."""
        o, rng, world = self.options, self.rng, self.world
        seen = self.seen[user]
        t_ms = int((self.start_s + self.visits * o.visit_seconds) * 1000)
        actions: list[tuple[str, int, str | None]] = []  # (type, item, rec_id)
        shown = self.latest.get(user)
        items = _item_indices(shown.items, self.available) if shown else []
        if shown is None or not items:
            tally.visits_without_list += 1
        else:
            self._look(user, shown, items, tally, actions)
        if rng.random() < o.browse_probability and len(seen) < self.available:
            self._act(user, world.browse(user, self.available, exclude=seen), None, actions)
        events = []
        for n, (kind, item, rec_id) in enumerate(actions):
            events.append(self._event(user, item, kind, rec_id, t_ms + n))
            seen.add(item)
            if self.known_at[item] < 0:
                self.known_at[item] = self.visits
        self.visits += 1
        return events

    def _look(
        self,
        user: int,
        shown: ShownList,
        items: list[int],
        tally: CtrTally,
        actions: list[tuple[str, int, str | None]],
    ) -> None:
        seen, n = self.seen[user], len(items)
        p = self.world.click_probability(user, np.asarray(items, dtype=np.int64))
        p = np.where([item in seen for item in items], 0.0, p)  # already have it: no click
        examine = self.examine[:n]
        clicked = self.rng.random(n) < p * examine
        tally.visits += 1
        tally.slots += n
        tally.clicks += int(clicked.sum())
        tally.expected += float(p @ examine)
        self._baselines(user, examine, tally)
        for item, source, hit in zip(items, shown.sources, clicked, strict=False):
            self.source_slots[source] = self.source_slots.get(source, 0) + 1
            if self.shown_at[item] < 0:
                self.shown_at[item] = self.visits
            if hit:
                self.source_clicks[source] = self.source_clicks.get(source, 0) + 1
                if self.clicked_at[item] < 0:
                    self.clicked_at[item] = self.visits
                self._act(user, item, shown.rec_id, actions)

    def _baselines(self, user: int, examine: np.ndarray, tally: CtrTally) -> None:
        """Expected clicks of the oracle, random and popularity lists of the same length."""
        n = len(examine)
        p = self.world.click_probability(user, slice(0, self.available))
        unseen = np.ones(self.available, dtype=bool)
        seen = self.seen[user]
        if seen:
            unseen[list(seen)] = False
        candidates = p[unseen]
        if len(candidates) == 0:
            return
        m = min(n, len(candidates))
        best = -np.partition(-candidates, m - 1)[:m]
        tally.oracle += float(np.sort(best)[::-1] @ examine[:m])
        tally.random += float(candidates.mean() * examine[:m].sum())
        popular = [i for i in self.popular_order[: n + len(seen)].tolist() if i not in seen][:m]
        tally.popular += float(p[popular] @ examine[: len(popular)])

    def _act(
        self, user: int, item: int, rec_id: str | None, actions: list[tuple[str, int, str | None]]
    ) -> None:
        """A click, then maybe a purchase (likelier the more the user likes it), maybe a rating."""
        o = self.options
        actions.append(("click", item, rec_id))
        self.clicks[item] += 1.0
        p = float(self.world.click_probability(user, np.asarray([item]))[0])
        if self.rng.random() < o.purchase_rate * p:
            actions.append(("purchase", item, rec_id))
        if self.rng.random() < o.rating_probability:
            actions.append(("rating", item, rec_id))

    def _event(
        self, user: int, item: int, kind: str, rec_id: str | None, t_ms: int
    ) -> tuple[bytes, bytes]:
        user_id = f"u{user}"
        event: dict[str, Any] = {
            "event_id": f"sim{self.options.seed}{self.run_token}-{self.events_made}",
            "type": kind,
            "user_id": user_id,
            "item_id": f"i{item}",
            "timestamp": t_ms,
        }
        if rec_id is not None:
            event["rec_id"] = rec_id
        if kind == "rating":
            event["rating"] = self.world.rating(user, item)
        self.events_made += 1
        return user_id.encode(), orjson.dumps(event)

    def catalog_record(self, item: int) -> tuple[bytes, bytes]:
        """The catalog record of `item`: a title, and as categories the genres of its strongest
        hidden traits, so "popular in Drama" and content similarity mean what they say."""
        traits = self.world.item_traits[item]
        order = np.argsort(-traits)
        genres = [GENRES[order[0] % len(GENRES)]]
        if traits[order[1]] > 1.0:
            genres.append(GENRES[order[1] % len(GENRES)])
        first = _TITLE_A[item % len(_TITLE_A)]
        second = _TITLE_B[(item // len(_TITLE_A)) % len(_TITLE_B)]
        title = f"{first} {second}"
        record = {
            "type": "item",
            "item_id": f"i{item}",
            "title": f"{title} (#{item})",
            "categories": genres,
        }
        return f"i{item}".encode(), orjson.dumps(record)

    def receive(self, lists: Sequence[ShownList]) -> None:
        for shown in lists:
            user = _index(shown.user_id, "u", self.options.users)
            if user is not None:
                self.latest[user] = shown

    def discovery(self) -> Discovery:
        arrived = np.flatnonzero(self.arrived_at >= 0)
        d = Discovery(new_items=len(arrived))
        if not len(arrived):
            return d

        def delays(at: np.ndarray, start: np.ndarray) -> list[float]:
            return [
                float(a - s) if a >= 0 and s >= 0 else math.inf
                for a, s in zip(at, start, strict=True)
            ]

        start = self.arrived_at[arrived]
        to_shown = delays(self.shown_at[arrived], start)
        d.shown = int((self.shown_at[arrived] >= 0).sum())
        d.clicked = int((self.clicked_at[arrived] >= 0).sum())
        d.median_visits_to_known = _censored_median(delays(self.known_at[arrived], start))
        d.median_visits_to_shown = _censored_median(to_shown)
        d.median_visits_to_clicked = _censored_median(delays(self.clicked_at[arrived], start))
        known = self.known_at[arrived]
        d.median_visits_known_to_shown = _censored_median(
            [
                delay
                for delay, k in zip(delays(self.shown_at[arrived], known), known, strict=True)
                if k >= 0  # items nobody found cannot be shown: not exploration's fault
            ]
        )
        for horizon in (100, 250, 500):
            # Only items that have been around that long can be judged at that horizon.
            old = [s for s, a in zip(to_shown, start, strict=True) if self.visits - a >= horizon]
            if old:
                d.shown_within[str(horizon)] = sum(s <= horizon for s in old) / len(old)
        return d


GENRES = ("Drama", "Comedy", "Sci-Fi", "Thriller", "Romance", "Documentary")
"""One genre per hidden taste dimension (the world has `n_tastes` of them, 4 by default)."""
_TITLE_A = ("Silent", "Golden", "Last", "Hidden", "Broken", "Midnight", "Northern", "Paper")
_TITLE_B = ("Harbor", "Garden", "Signal", "Orbit", "Letters", "Engine", "Summer", "Crown", "River")


def _index(identifier: str, prefix: str, limit: int) -> int | None:
    """`u12` → 12 (None for ids this world did not make, e.g. left over from another run)."""
    if not identifier.startswith(prefix) or not identifier[len(prefix) :].isdigit():
        return None
    value = int(identifier[len(prefix) :])
    return value if value < limit else None


def _item_indices(item_ids: Sequence[str], available: int) -> list[int]:
    return [i for i in (_index(x, "i", available) for x in item_ids) if i is not None]
