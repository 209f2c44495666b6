"""The closed-loop user simulator: users with hidden tastes answer streamrec's own lists.

Offline replays can only say how well a model predicts what users did under some *other* system.
A recommender changes what users see, so the only honest test of the whole loop (learning,
exploration, reward join, refresh) is to let simulated users react to its lists:

    users (hidden tastes, `TasteWorld`) ─ events ─▶ streamrec ─ lists ─▶ users ─ events ─▶ ...

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

One loop, two transports: **in-process** drives `Pipeline.process` batch by batch (fast and
deterministic: tests and measurements), **Kafka** produces events to the events topic and reads
lists back from the recommendations topic while the streamrec consumer runs (started here as a
child process, or anywhere else). After each batch the Kafka loop waits, with a
deadline, until every user who acted got a fresh list, so both transports see lists equally fresh.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamrec.bandit.policies import POLICIES
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.data.synthetic import START_TIME_S, TasteWorld
from streamrec.errors import StreamrecError
from streamrec.settings import ModelSettings, Settings
from streamrec.store.checkpoint_key import KEY_ENV, KEY_FILE_ENV, state_dir_key

log = logging.getLogger(__name__)

Transport = Literal["in-process", "kafka"]
POLICY_NAMES = ("none", *POLICIES)

SIMULATION_MODEL_DEFAULTS: dict[str, Any] = {"rating_model": "biased_mf"}
"""What the simulator changes in the model settings unless told otherwise: the ensemble buys
rating accuracy that top-K lists (ranked by the item ranker) do not use, at several times the
cost."""


@dataclass(frozen=True)
class SimulationOptions:
    """The simulated world and how the loop runs. Defaults finish in seconds in-process."""

    events: int = 20_000  # stop after the batch in which this many events were sent
    users: int = 500
    items: int = 300  # catalog at the start
    new_items: int = 100  # items that arrive during the run, one every `new_item_every` visits
    new_item_every: int = 40
    browse_probability: float = 0.5  # chance that a visit includes browsing on one's own
    purchase_rate: float = 0.3  # P(buy | clicked) = purchase_rate × click probability
    rating_probability: float = 0.3  # P(rate | clicked)
    position_bias: float = 0.0  # P(examine rank r) = r^-position_bias (0: every slot is seen)
    click_threshold: float = 4.0  # see TasteWorld: a random list's CTR ≈ 5%, the oracle's ≈ 40%
    # Simulated event time between visits. One a second: a user's next visit (and so their
    # clicks on the list they were shown) mostly falls inside the default 1 h reward window.
    visit_seconds: float = 1.0
    batch_visits: int = 50  # visits per batch (in-process) or per produce → wait round (Kafka)
    window_visits: int = 500  # visits per point of the report's series
    seed: int = 0
    sync_timeout_s: float = 20.0  # Kafka: longest wait for the lists a batch should produce
    progress: bool = False  # live progress on stderr


@dataclass
class ShownList:
    """A recommendation list as the simulated user sees it (what came back on the topic)."""

    user_id: str
    rec_id: str
    items: list[str]
    sources: list[str]


class Loop(Protocol):
    """How events reach streamrec and lists come back: one call per batch of visits."""

    def exchange(self, events: list[tuple[bytes, bytes]], users: set[str]) -> list[ShownList]:
        """Deliver `(key, value)` events; return the lists published since the last call.

        `users` are the user ids that acted: each should get a fresh list.
        """
        ...

    def close(self) -> None: ...


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


@dataclass
class SimulationReport:
    transport: str
    exploration: str
    rating_model: str
    ranker: str
    k: int
    seed: int
    events: int
    visits: int
    users: int
    items: int  # catalog size at the end
    seconds: float
    events_per_second: float | None
    lists_received: int
    sync_timeouts: int  # Kafka: batches whose lists did not all arrive within the deadline
    overall: dict[str, float | None]
    second_half: dict[str, float | None]  # after the model had time to learn: judge this
    ctr_by_source: dict[str, float | None]
    slots_by_source: dict[str, int]
    discovery: Discovery
    series: list[dict[str, Any]]
    options: dict[str, Any]
    consumer: dict[str, Any] | None = None  # Kafka: the consumer's run summary, if we ran it

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; top-level `ctr` and friends are the overall rates (what plots compare)."""
        data = asdict(self)
        data["kind"] = "simulation"
        data.update(self.overall)
        return data


def write_report(report: SimulationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")


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


def _index(identifier: str, prefix: str, limit: int) -> int | None:
    """`u12` → 12 (None for ids this world did not make, e.g. left over from another run)."""
    if not identifier.startswith(prefix) or not identifier[len(prefix) :].isdigit():
        return None
    value = int(identifier[len(prefix) :])
    return value if value < limit else None


def _item_indices(item_ids: Sequence[str], available: int) -> list[int]:
    return [i for i in (_index(x, "i", available) for x in item_ids) if i is not None]


# ---- transports -----------------------------------------------------------------------------


class InProcessLoop:
    """Events straight into a `Pipeline` (the one the service runs); its lists straight back."""

    def __init__(self, settings: ModelSettings) -> None:
        self.pipeline = Pipeline(settings)

    def exchange(self, events: list[tuple[bytes, bytes]], users: set[str]) -> list[ShownList]:
        result = self.pipeline.process([Record(value=value, key=key) for key, value in events])
        return [
            ShownList(
                rec.user_id,
                rec.rec_id,
                [item.item_id for item in rec.items],
                [item.source for item in rec.items],
            )
            for rec in result.recommendations
        ]

    def close(self) -> None:
        pass


class KafkaLoop:
    """Produce events to the events topic; read lists from the recommendations topic.

    Reads from the end of the recommendations topic as it was when the loop started (lists from
    earlier runs are not this run's). After each batch it waits until every user who acted got
    a list or `sync_timeout_s` passes; `check()` is called while waiting so a dead consumer
    service fails the run at once instead of after a timeout per batch.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        events_topic: str,
        recommendations_topic: str,
        *,
        sync_timeout_s: float = 20.0,
        producer_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        from streamrec.io.kafka_config import producer_config

        self.events_topic = events_topic
        self.sync_timeout_s = sync_timeout_s
        self.check = check or (lambda: None)
        self.timeouts = 0
        config = producer_config(None, **{"bootstrap.servers": bootstrap_servers})
        config.update(producer_options or {})
        self.producer = Producer(config)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"streamrec-simulator-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                **(consumer_options or {}),
            }
        )
        metadata = self.consumer.list_topics(recommendations_topic, timeout=15)
        topic = metadata.topics.get(recommendations_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise StreamrecError(f"cannot read topic {recommendations_topic!r}: does it exist?")
        start = []
        for partition in topic.partitions:
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(recommendations_topic, partition), timeout=15
            )
            start.append(TopicPartition(recommendations_topic, partition, high))
        self.consumer.assign(start)
        self.failures: list[str] = []

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failures.append(str(error))

    def exchange(self, events: list[tuple[bytes, bytes]], users: set[str]) -> list[ShownList]:
        from streamrec.io.kafka_config import produce

        for key, value in events:
            produce(self.producer, self.events_topic, value, key, on_delivery=self._delivered)
        self.producer.poll(0)
        waiting = set(users)
        lists: list[ShownList] = []
        deadline = time.monotonic() + self.sync_timeout_s
        while True:
            for message in self.consumer.consume(1000, 0.02):
                if message.error() is not None:
                    continue
                shown = _decode_list(message.value())
                if shown is not None:
                    lists.append(shown)
                    waiting.discard(shown.user_id)
            self.producer.poll(0)
            if self.failures:
                raise StreamrecError(f"could not produce events: {self.failures[0]}")
            if not waiting:
                return lists
            self.check()
            if time.monotonic() >= deadline:
                self.timeouts += 1
                log.warning(
                    "%d users got no fresh list within %.0f s", len(waiting), self.sync_timeout_s
                )
                return lists

    def close(self) -> None:
        self.producer.flush(10.0)
        self.consumer.close()
        # Drop the clients now, not at some later garbage collection: a librdkafka handle that
        # outlives the embedded broker logs connection errors for a broker stopped on purpose.
        del self.producer, self.consumer
        gc.collect()


def _decode_list(value: bytes | None) -> ShownList | None:
    try:
        data = orjson.loads(value or b"")
        items = data["items"]
        return ShownList(
            str(data["user_id"]),
            str(data["rec_id"]),
            [str(item["item_id"]) for item in items],
            [str(item.get("source", "model")) for item in items],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class ServiceProcess:
    """The streamrec consumer (`python -m streamrec.service`, what `streamrec run` runs) as a
    child process with these settings.

    A process, not a thread: on two cores the consumer and the simulated users then run in
    parallel instead of taking turns on one interpreter lock, and the demo shows the service as
    it is deployed, stopped by SIGTERM (finish the batch, checkpoint, commit, exit 0). Settings go
    through a config file, except the checkpoint key, which goes through the environment. Without
    a configured key (or key file) it uses the state dir's own random key (`state_dir_key`): a
    throwaway consumer needs no secret from its user, and a reused state dir keeps its key. Its
    logs go to `workdir/service.log`; `check()` raises with their tail if it dies.
    """

    def __init__(self, settings: Settings, workdir: Path, *, log_level: str = "WARNING") -> None:
        self.workdir = workdir
        self.log_path = workdir / "service.log"
        self.out_path = workdir / "service.out"
        self.summary: dict[str, Any] = {}  # its RunSummary, once stopped
        config = settings.model_dump(mode="json")
        config["service"].pop("checkpoint_key", None)
        config["service"]["log_level"] = log_level
        config_path = workdir / "service-config.json"
        config_path.write_bytes(orjson.dumps(config))
        # The key the settings say (a key file goes through the config), not whatever the
        # environment holds: both set would be refused.
        env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, KEY_FILE_ENV)}
        env["OPENBLAS_NUM_THREADS"] = "1"  # DESIGN.md: multithreaded BLAS slows the refresh
        service = settings.service
        if service.checkpoint_key is not None:
            env[KEY_ENV] = service.checkpoint_key.get_secret_value()
        elif service.checkpoint_key_file is None:
            env[KEY_ENV] = state_dir_key(service.state_dir)
        command = [sys.executable, "-m", "streamrec.service", "--config", str(config_path)]
        with self.log_path.open("wb") as log_file, self.out_path.open("wb") as out_file:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out_file, stderr=log_file, env=env
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise StreamrecError(
                f"the streamrec consumer exited with code {code}; its log ends:\n{self._log_tail()}"
            )

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM, wait for the graceful exit; returns the run summary it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise StreamrecError(
                    f"the streamrec consumer did not stop within {timeout_s:.0f} s; killed it"
                ) from None
        if self.process.returncode != 0:
            raise StreamrecError(
                f"the streamrec consumer exited with code {self.process.returncode}; its log "
                f"ends:\n{self._log_tail()}"
            )
        for line in reversed(self.out_path.read_bytes().splitlines()):
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(line)
                if isinstance(data, dict) and "summary" in data:
                    self.summary = dict(data["summary"])
                    break
        return self.summary


# ---- the loop -------------------------------------------------------------------------------


def run_loop(
    loop: Loop,
    users: Users,
    options: SimulationOptions,
    *,
    on_window: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[CtrTally, CtrTally, list[dict[str, Any]], int]:
    """Visit, exchange, repeat until `options.events` were sent.

    Returns (overall tally, second-half tally, series, lists received).
    """
    overall, window = CtrTally(), CtrTally()
    halves: list[CtrTally] = []
    series: list[dict[str, Any]] = []
    received = 0
    started = time.perf_counter()
    window_started, window_events = started, 0
    while users.events_made < options.events:
        users.begin_batch()
        events: list[tuple[bytes, bytes]] = []
        acted: set[str] = set()
        for user in users.visitors(options.batch_visits).tolist():
            users.maybe_add_item()
            tally = CtrTally()
            made = users.visit(user, tally)
            if made:
                events.extend(made)
                acted.add(f"u{user}")
            window.add(tally)
            halves.append(tally)
            if users.visits % options.window_visits == 0:
                overall.add(window)
                now = time.perf_counter()
                point = _point(users, window, window_events + len(events), now - window_started)
                series.append(point)
                if on_window is not None:
                    on_window(point)
                window, window_started, window_events = CtrTally(), now, -len(events)
        lists = loop.exchange(events, acted)
        window_events += len(events)
        received += len(lists)
        users.receive(lists)
    if window.visits or window.visits_without_list:
        overall.add(window)
        series.append(_point(users, window, window_events, time.perf_counter() - window_started))
    second = CtrTally()
    for tally in halves[len(halves) // 2 :]:
        second.add(tally)
    return overall, second, series, received


def _point(users: Users, tally: CtrTally, events: int, seconds: float) -> dict[str, Any]:
    point: dict[str, Any] = {
        "events": users.events_made,
        "visits": users.visits,
        "items": users.available,
        "visits_with_list": tally.visits,
        "slots": tally.slots,
        "clicks": tally.clicks,
        "events_per_second": events / seconds if seconds > 0 else None,
    }
    point.update(tally.rates())
    return point


def simulate(
    settings: Settings,
    options: SimulationOptions = SimulationOptions(),
    *,
    transport: Transport = "in-process",
    bootstrap_servers: str | None = None,
    start_consumer: bool = True,
    on_window: Callable[[dict[str, Any]], None] | None = None,
    on_service: Callable[[ServiceProcess, Settings], None] | None = None,
    before_stop: Callable[[], None] | None = None,
    workdir: Path | None = None,
    state_dir: Path | None = None,
) -> SimulationReport:
    """Run the closed loop once and report streamrec's CTR beside oracle, random and popular.

    `transport="kafka"`: events go to `settings.kafka.topics[0]` and lists are read from
    `settings.kafka.recommendations_topic` on `bootstrap_servers` (an embedded broker is started
    when it is None). With `start_consumer` the streamrec consumer runs as a child process, its
    checkpoints in `state_dir` (default: a temporary directory, whatever the settings say, so a
    simulation never resumes an unrelated model); without it, something else must be consuming
    (e.g. `streamrec run`). `on_service` is called
    once the consumer started, `before_stop` after the last batch while everything still runs;
    logs and state go to `workdir` (default: a temporary directory).
    """
    model_settings = settings.model
    k = model_settings.k
    started = time.perf_counter()
    services: list[ServiceProcess] = []
    with ExitStack() as stack:
        if transport == "in-process":
            users = Users(options, k)
            loop: Loop = InProcessLoop(model_settings)
        elif transport == "kafka":
            users = Users(options, k, run_token=f"-{uuid.uuid4().hex[:8]}")

            def remember(service: ServiceProcess, service_settings: Settings) -> None:
                services.append(service)
                if on_service is not None:
                    on_service(service, service_settings)

            loop = stack.enter_context(
                kafka_loop(
                    settings,
                    options,
                    bootstrap_servers,
                    start_consumer,
                    workdir=workdir,
                    state_dir=state_dir,
                    on_service=remember,
                )
            )
        else:
            raise StreamrecError(f"unknown transport {transport!r}: in-process or kafka")
        with _live_progress(options, model_settings.exploration) as progress:
            overall, second, series, received = run_loop(
                loop, users, options, on_window=_both(on_window, progress)
            )
        timeouts = getattr(loop, "timeouts", 0)
        if before_stop is not None:
            before_stop()
    seconds = time.perf_counter() - started
    consumer = services[0].summary if services else None
    return SimulationReport(
        transport=transport,
        exploration=model_settings.exploration,
        rating_model=model_settings.rating_model,
        ranker=model_settings.ranker,
        k=k,
        seed=options.seed,
        events=users.events_made,
        visits=users.visits,
        users=options.users,
        items=users.available,
        seconds=seconds,
        events_per_second=users.events_made / seconds if seconds > 0 else None,
        lists_received=received,
        sync_timeouts=timeouts,
        overall=overall.rates(),
        second_half=second.rates(),
        ctr_by_source={
            source: users.source_clicks.get(source, 0) / slots
            for source, slots in sorted(users.source_slots.items())
        },
        slots_by_source=dict(sorted(users.source_slots.items())),
        discovery=users.discovery(),
        series=series,
        options=asdict(options),
        consumer=consumer,
    )


@contextmanager
def kafka_loop(
    settings: Settings,
    options: SimulationOptions,
    bootstrap_servers: str | None,
    start_consumer: bool,
    *,
    workdir: Path | None = None,
    state_dir: Path | None = None,
    on_service: Callable[[ServiceProcess, Settings], None] | None = None,
) -> Iterator[KafkaLoop]:
    """Broker (embedded if no address) + topics + optional consumer process + the loop.

    The consumer's checkpoints go to `state_dir`, or `workdir/state`. Teardown runs in reverse:
    loop clients, consumer (graceful), broker. `on_service(process, settings)` is called once the
    consumer was started (the demo prints where its metrics are).
    """
    from streamrec.io.kafka_config import create_topics

    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streamrec-")))
        if bootstrap_servers is None:
            from streamrec.io.embedded_broker import EmbeddedBroker

            broker = stack.enter_context(EmbeddedBroker(log_path=workdir / "broker.log"))
            bootstrap_servers = broker.bootstrap_servers
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        settings = settings.model_copy(update={"kafka": kafka})
        create_topics(
            bootstrap_servers, [*kafka.topics, kafka.recommendations_topic, kafka.dlq_topic]
        )
        service: ServiceProcess | None = None
        if start_consumer:
            state = state_dir or workdir / "state"
            state.mkdir(parents=True, exist_ok=True)
            service_settings = settings.service.model_copy(update={"state_dir": state})
            settings = settings.model_copy(update={"service": service_settings})
            service = ServiceProcess(settings, workdir)
            stack.push(_stopper(service))
            if on_service is not None:
                on_service(service, settings)
        loop = KafkaLoop(
            bootstrap_servers,
            kafka.topics[0],
            kafka.recommendations_topic,
            sync_timeout_s=options.sync_timeout_s,
            producer_options=dict(kafka.producer),
            consumer_options=dict(kafka.consumer),
            check=service.check if service is not None else None,
        )
        stack.callback(loop.close)
        yield loop


def _stopper(service: ServiceProcess) -> Callable[..., None]:
    """Exit callback: stop the consumer; after a failure, do not hide it behind a second one."""

    def stop(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            service.stop()
        else:
            with contextlib.suppress(StreamrecError):
                service.stop()

    return stop


def _both(
    a: Callable[[dict[str, Any]], None] | None, b: Callable[[dict[str, Any]], None] | None
) -> Callable[[dict[str, Any]], None] | None:
    if a is None or b is None:
        return a or b

    def call(point: dict[str, Any]) -> None:
        a(point)
        b(point)

    return call


@contextmanager
def _live_progress(
    options: SimulationOptions, exploration: str
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A one-line live display on stderr, updated every window; nothing when progress is off."""
    if not options.progress:
        yield None
        return
    with Progress(
        TextColumn(f"[bold]simulate[/] ({exploration})"),
        TextColumn("{task.fields[events]:>8,} events · {task.fields[rate]:>7,.0f}/s"),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("simulate", events=0, rate=0.0, line="waiting for lists…")

        def update(point: dict[str, Any]) -> None:
            progress.update(
                task,
                events=point["events"],
                rate=point["events_per_second"] or 0.0,
                line=ctr_line(point),
            )

        yield update


def ctr_line(point: dict[str, Any]) -> str:
    """`CTR 0.41 · oracle 0.88 · random 0.21 · popular 0.30` for one window (or the run)."""

    def fmt(x: Any) -> str:
        return "—" if x is None else f"{x:.3f}"

    return (
        f"CTR {fmt(point.get('ctr'))} · oracle {fmt(point.get('oracle_ctr'))} · "
        f"random {fmt(point.get('random_ctr'))} · popular {fmt(point.get('popular_ctr'))}"
    )


# ---- tables ---------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def summary_table(report: SimulationReport) -> Table:
    """Per-window CTR beside the three references, then the run's totals."""
    table = Table(
        title=f"simulation ({report.transport}, exploration {report.exploration}, K={report.k})"
    )
    for column in ("events", "visits", "items", "CTR", "expected", "oracle", "random", "popular"):
        table.add_column(column, justify="right")
    for point in report.series:
        table.add_row(
            f"{point['events']:,}",
            f"{point['visits']:,}",
            str(point["items"]),
            _fmt(point["ctr"]),
            _fmt(point["expected_ctr"]),
            _fmt(point["oracle_ctr"]),
            _fmt(point["random_ctr"]),
            _fmt(point["popular_ctr"]),
        )
    table.add_section()
    for name, rates in (("overall", report.overall), ("second half", report.second_half)):
        table.add_row(
            name,
            "",
            "",
            _fmt(rates["ctr"]),
            _fmt(rates["expected_ctr"]),
            _fmt(rates["oracle_ctr"]),
            _fmt(rates["random_ctr"]),
            _fmt(rates["popular_ctr"]),
        )
    d = report.discovery
    table.caption = (
        f"{report.events:,} events in {report.seconds:.1f} s "
        f"({_fmt(report.events_per_second, ',.0f')}/s) · CTR by source: "
        + ", ".join(f"{s} {_fmt(v)}" for s, v in report.ctr_by_source.items())
        + f" · new items: {d.shown}/{d.new_items} shown, median visits to shown "
        f"{_fmt(d.median_visits_to_shown, '.0f')} (never shown counts as ∞)"
    )
    return table


@dataclass
class PolicyFailure:
    """A policy whose run raised: the comparison goes on and shows why this row is missing."""

    exploration: str
    error: str


def comparison_table(reports: Sequence[SimulationReport | PolicyFailure]) -> Table:
    """One row per exploration policy: second-half CTRs and new-item discovery."""
    table = Table(title="exploration policies, second half of each run (expected CTR per slot)")
    for column in (
        "policy",
        "CTR",
        "expected",
        "oracle",
        "random",
        "popular",
        "vs oracle",
        "new shown",
        "visits→shown",
        "known→shown",
        "shown ≤250",
    ):
        table.add_column(column, justify="right")
    failures = [r for r in reports if isinstance(r, PolicyFailure)]
    if failures:
        table.caption = "; ".join(f"{f.exploration} failed: {f.error}" for f in failures)
    for r in reports:
        if isinstance(r, PolicyFailure):
            table.add_row(r.exploration, "[red]failed[/]", *[""] * 9)
            continue
        h, d = r.second_half, r.discovery
        ratio = (
            h["expected_ctr"] / h["oracle_ctr"] if h["expected_ctr"] and h["oracle_ctr"] else None
        )
        table.add_row(
            r.exploration,
            _fmt(h["ctr"]),
            _fmt(h["expected_ctr"]),
            _fmt(h["oracle_ctr"]),
            _fmt(h["random_ctr"]),
            _fmt(h["popular_ctr"]),
            _fmt(ratio, ".0%"),
            f"{d.shown}/{d.new_items}",
            _fmt(d.median_visits_to_shown, ".0f"),
            _fmt(d.median_visits_known_to_shown, ".0f"),
            _fmt(d.shown_within.get("250"), ".0%"),
        )
    return table


def compare_policies(
    settings: Settings, options: SimulationOptions, policies: Sequence[str]
) -> list[SimulationReport | PolicyFailure]:
    """The same world, seed and budget in-process under each exploration policy.

    A policy that raises becomes a `PolicyFailure` row (logged with its traceback) instead of
    hiding the measurements of the others.
    """
    reports: list[SimulationReport | PolicyFailure] = []
    for policy in policies:
        model = settings.model.model_copy(update={"exploration": policy})
        try:
            reports.append(simulate(settings.model_copy(update={"model": model}), options))
        except Exception as exc:
            log.exception("exploration policy %s failed", policy)
            reports.append(PolicyFailure(policy, f"{type(exc).__name__}: {exc}"))
    return reports


# ---- command line: `streamrec simulate` ------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `streamrec simulate` (model settings still come from --config / STREAMREC_*)."""
    d = SimulationOptions()
    parser.add_argument("--events", type=int, default=d.events, help="stop after ~this many")
    parser.add_argument("--users", type=int, default=d.users)
    parser.add_argument("--items", type=int, default=d.items, help="catalog size at the start")
    parser.add_argument("--new-items", type=int, default=d.new_items, help="items added later")
    parser.add_argument(
        "--new-item-every", type=int, default=d.new_item_every, help="visits between arrivals"
    )
    parser.add_argument(
        "--browse-probability", type=float, default=d.browse_probability, help="per visit"
    )
    parser.add_argument(
        "--position-bias",
        type=float,
        default=d.position_bias,
        help="rank r is looked at with probability r^-X (0: every slot is seen)",
    )
    parser.add_argument("--batch-visits", type=int, default=d.batch_visits)
    parser.add_argument("--window", type=int, default=d.window_visits, help="visits per row")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--k", type=int, help="list length (default: model setting, 10)")
    parser.add_argument(
        "--exploration", choices=POLICY_NAMES, help="slot policy (default: model setting)"
    )
    parser.add_argument(
        "--policies",
        help="compare these exploration policies in-process, comma-separated, or 'all'",
    )
    parser.add_argument(
        "--rating-model", help="default here: biased_mf (lists do not use the rating model)"
    )
    parser.add_argument("--ranker", help="top-N ranker (default: model setting)")
    parser.add_argument("--transport", choices=("in-process", "kafka"), default="in-process")
    parser.add_argument(
        "--bootstrap-servers", help="Kafka to use (default: start an embedded broker)"
    )
    parser.add_argument(
        "--no-consumer",
        action="store_true",
        help="do not start the streamrec consumer: one is already running (`streamrec run`)",
    )
    parser.add_argument("--state-dir", type=Path, help="consumer checkpoints (default: temp dir)")
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="consumer's /metrics port (default: off)"
    )
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--quiet", action="store_true", help="no live progress or table")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from --config / environment, with the simulator's defaults and the flags on top."""
    from streamrec.settings import load_settings

    model: dict[str, Any] = dict(SIMULATION_MODEL_DEFAULTS)
    for name in ("k", "exploration", "rating_model", "ranker"):
        value = getattr(args, name, None)
        if value is not None:
            model[name] = value
    kafka = {"bootstrap_servers": getattr(args, "bootstrap_servers", None)}
    service = {"metrics_port": getattr(args, "metrics_port", 0)}
    return load_settings(getattr(args, "config", None), model=model, kafka=kafka, service=service)


def options_from_args(args: argparse.Namespace) -> SimulationOptions:
    return SimulationOptions(
        events=args.events,
        users=args.users,
        items=args.items,
        new_items=args.new_items,
        new_item_every=args.new_item_every,
        browse_probability=args.browse_probability,
        position_bias=args.position_bias,
        batch_visits=args.batch_visits,
        window_visits=args.window,
        seed=args.seed,
        progress=not args.quiet and sys.stderr.isatty(),
    )


def main(args: argparse.Namespace) -> int:
    """`streamrec simulate`: run, print the table on stderr, write the report if asked."""
    settings = settings_from_args(args)
    options = options_from_args(args)
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=140)  # piped or logged: no terminal to fit
    if args.policies:
        policies = POLICY_NAMES if args.policies == "all" else tuple(args.policies.split(","))
        unknown = [p for p in policies if p not in POLICY_NAMES]
        if unknown:
            raise StreamrecError(
                f"unknown policies {unknown}; choose from {', '.join(POLICY_NAMES)}"
            )
        reports = compare_policies(settings, options, policies)
        if not args.quiet:
            console.print(comparison_table(reports))
        if args.report:
            runs = [r.as_dict() if isinstance(r, SimulationReport) else asdict(r) for r in reports]
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_bytes(
                orjson.dumps(
                    {"kind": "simulation-comparison", "runs": runs}, option=orjson.OPT_INDENT_2
                )
                + b"\n"
            )
        return 1 if any(isinstance(r, PolicyFailure) for r in reports) else 0
    if args.transport != "kafka" and (args.bootstrap_servers or args.no_consumer):
        raise StreamrecError(
            "--bootstrap-servers and --no-consumer only apply with --transport kafka "
            "(in-process runs the pipeline here, without a broker)"
        )
    report = simulate(
        settings,
        options,
        transport=args.transport,
        bootstrap_servers=args.bootstrap_servers,
        start_consumer=not args.no_consumer,
        state_dir=args.state_dir,
    )
    if not args.quiet:
        console.print(summary_table(report))
    if args.report:
        write_report(report, args.report)
        if not args.quiet:
            console.print(f"report written to {args.report}")
    return 0


__all__ = [
    "InProcessLoop",
    "KafkaLoop",
    "ServiceProcess",
    "SimulationOptions",
    "SimulationReport",
    "add_arguments",
    "compare_policies",
    "main",
    "simulate",
    "summary_table",
    "write_report",
]
