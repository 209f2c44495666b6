"""Whether Kafka can be reached, said once when an outage starts and once when it ends.

librdkafka retries a lost broker by itself and reports every failed attempt (several lines a
second per client). An operator needs two facts instead: "unreachable since T (address)" and
"reachable again after N s". Both clients (consumer and producer) feed one `BrokerWatch` from
their `error_cb` and `stats_cb`; the service reads `reachable` for readiness and for whether a
commit point can work at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

DOWN_ERRORS = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})
"""Client errors that mean no broker answers at all. A single `_TRANSPORT` error is one dropped
connection, which librdkafka fails over by itself: not an outage."""


class BrokerWatch:
    """Broker reachability from the clients' callbacks (called on the polling thread)."""

    def __init__(
        self,
        address: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.clock = clock
        self.reachable = True
        self.down_since: float | None = None  # clock() when the current outage began
        self._down_wall = 0.0  # time.time() then: statistics from before it are stale
        self.outages = 0
        self.last_error = ""

    def on_error(self, error: KafkaError) -> None:
        """An `error_cb` report; fatal errors are the caller's business (they stop a client)."""
        self.last_error = error.str()
        if error.code() in DOWN_ERRORS:
            self.down(self.last_error)

    def on_statistics(self, stats: bytes | str | Mapping[str, Any]) -> None:
        """A `stats_cb` document: any broker in state UP means Kafka answers again."""
        doc = orjson.loads(stats) if isinstance(stats, bytes | str) else stats
        if not self.reachable and doc.get("time", 0) <= self._down_wall:
            return  # written before the outage began (whole seconds), served after it
        brokers = doc.get("brokers") or {}
        if any(b.get("state") == "UP" for b in brokers.values() if isinstance(b, Mapping)):
            self.up()

    def down(self, why: str) -> None:
        if not self.reachable:
            return
        self.reachable = False
        self.down_since = self.clock()
        self._down_wall = time.time()
        self.outages += 1
        since = datetime.now(UTC).isoformat(timespec="seconds")
        log.warning("Kafka unreachable at %s since %s: %s", self.address, since, why)

    def up(self) -> None:
        """A broker answers again. Only statistics written after the outage began say so: a
        delivery report or a prefetched record served now may date from before it."""
        if self.reachable:
            return
        outage = self.clock() - (self.down_since or self.clock())
        self.reachable = True
        self.down_since = None
        log.warning("Kafka reachable again at %s after %.0f s", self.address, outage)
