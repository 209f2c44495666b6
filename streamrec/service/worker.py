"""One consumer's work: learn each consumed batch, publish what it produced, answer rebalances,
and keep going through outages.

`Worker` ties the model state, the Kafka source and sink, and the commit point together. The run
loop (streamrec.service.loop) calls `handle()` with each batch and `tick()` after it; librdkafka
calls the `PartitionListener` methods from inside `consume()`, on the same thread, so nothing
here needs a lock.

What the worker does when Kafka misbehaves:

* **Outputs cannot be delivered yet** (broker unreachable, or the producer's backlog passed
  `service.max_undelivered`): consumption pauses, /readyz says not ready, and the pending commit
  point is retried on every tick. Nothing is dropped and the process does not exit; when the
  broker answers again, the commit point completes and consumption resumes.
* **Outputs were lost** (undeliverable past `message.timeout.ms`) or **the producer failed
  fatally** (e.g. an idempotent producer whose broker forgot its producer id): `recover()` rolls
  the model back to its last checkpoint, seeks every owned partition back to it, and replays,
  through a new producer if the old one is fatal. Outputs stay at-least-once; the model stays
  effectively-once (`streamrec_events_relearned_total` counts the replayed events).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from streamrec.contract.records import Record
from streamrec.core.observer import Published
from streamrec.core.pipeline import BatchResult
from streamrec.io import learn_log
from streamrec.io.broker_watch import BrokerWatch
from streamrec.io.kafka_config import producer_config
from streamrec.io.kafka_sink import KafkaSink
from streamrec.io.kafka_source import TP, KafkaSource
from streamrec.obs.metrics import Metrics
from streamrec.service.commit import Committer, Outcome
from streamrec.service.state import ModelState, Progress
from streamrec.settings import Settings
from streamrec.store.checkpoint import CheckpointStore

log = logging.getLogger(__name__)

RETRY_FLUSH_S = 0.2
"""How long each tick waits for the producer while a commit point is deferred."""


class Worker:
    """The state shared by the consume loop and the rebalance callbacks of one consumer."""

    def __init__(
        self,
        settings: Settings,
        store: CheckpointStore,
        metrics: Metrics | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        # A replica of the learn log (streamrec.service.forwarder) learns every message but
        # publishes only what this instance forwarded.
        self.instance_id = instance_id
        self.metrics = metrics
        self.state = ModelState(settings, store, metrics, replica=instance_id is not None)
        self.committer = Committer(settings.service, self.state, metrics)
        self.watch = BrokerWatch(settings.kafka.bootstrap_servers)
        self.source: KafkaSource | None = None
        self.sink: KafkaSink | None = None
        self.failed = False  # after an error, callbacks must not checkpoint or commit
        self.deferred: str | None = None  # reason of a commit point waiting for delivery
        self.waiting_since: float | None = None  # monotonic time consumption was paused
        self.relearn_until = 0  # events_learned before the last rollback
        self.progress = Progress()
        if metrics is not None:  # read live at every scrape, so never stale
            metrics.ready.set_function(lambda: float(self.ready()))
            metrics.assigned_partitions.set_function(lambda: float(self.assigned()))
            metrics.kafka_reachable.set_function(lambda: float(self.watch.reachable))

    # -- start and stop --

    def restore(self) -> None:
        self.state.restore()

    def connect(self) -> None:
        """Consumer and producer; fails with one clear line if Kafka does not answer."""
        self.source = KafkaSource(self.settings, self, metrics=self.metrics, watch=self.watch)
        self.source.wait_until_reachable(self.settings.service.connect_timeout_s)
        self.sink = self._new_sink()
        self.source.subscribe()

    def _new_sink(self) -> KafkaSink:
        kafka = self.settings.kafka
        return KafkaSink(
            producer_config(kafka),
            kafka.recommendations_topic,
            kafka.dlq_topic,
            metrics=self.metrics,
            watch=self.watch,
        )

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        if self.sink is not None:
            self.sink.producer.flush(5.0)  # best effort: after a failure there may be nothing

    # -- PartitionListener (called from inside consume()) --

    def start_offset(self, key: TP, committed: int | None) -> int | None:
        return self.state.start_offset(key, committed)

    def check_topic(self, topic: str, topic_id: str) -> str | None:
        return self.state.check_topic(topic, topic_id)

    def forget_topic(self, topic: str) -> None:
        self.state.forget_topic(topic)

    def before_revoke(self, keys: list[TP]) -> None:
        assert self.source is not None
        # Before giving partitions up: the next owner starts at the offsets committed here. A
        # rollback (outputs lost) waits for the next tick, outside librdkafka's callback.
        if (
            self.committer.changed
            and not self.failed
            and self.commit_point("revoke") is Outcome.DONE
        ):
            self.state.remember(self.source.positions, keys)

    def after_lost(self, keys: list[TP]) -> None:
        """The group expelled us: another instance may already be learning these partitions.

        Whatever was learned since the last checkpoint may overlap with its work, so it is
        discarded; partitions still owned restart from the checkpoint.
        """
        if not self.failed:
            self._rollback("partitions_lost")

    # -- one batch --

    def handle(self, records: list[Record]) -> None:
        """Learn a consumed batch and publish what it produced. A replica's batch is learn-log
        messages, each one forwarded batch: learned one by one, so every replica cuts the same
        batches (see streamrec.io.learn_log)."""
        if self.instance_id is None:
            self._learn(records, records)
            return
        for message in records:
            forwarder, batch = learn_log.decode(message)
            self._learn(batch, [message], publish=forwarder == self.instance_id)

    def _learn(
        self, records: list[Record], consumed: list[Record], *, publish: bool = True
    ) -> BatchResult:
        """Learn one batch and publish it (unless another instance does); then report it, once,
        with its publish stage (so the pipeline does not report it first). `consumed`: the
        messages it came in (the ledger's)."""
        assert self.sink is not None
        started = time.perf_counter()
        state = self.state
        pipeline = state.pipeline
        learned_before = pipeline.events_learned
        result = pipeline.process(records, report=False)
        processed = time.perf_counter()
        recommendations, dead_letters = result.recommendations, result.dead_letters
        if not publish:
            recommendations, dead_letters = [], []
        self.sink.publish(recommendations)
        self.sink.dead_letter(dead_letters)
        if state.ledger is not None:
            state.ledger.add(consumed)

        n = len(records)
        self.committer.record(n)
        relearned = max(0, min(pipeline.events_learned, self.relearn_until) - learned_before)
        p = self.progress
        p.consumed += n
        p.learned += result.learned
        p.relearned += relearned
        p.dead_letters += len(dead_letters)
        p.duplicates += result.duplicates
        p.published += len(recommendations)
        report = result.report
        assert report is not None
        # The report stays the replica's view of the whole batch (with a learn log every replica
        # counts every dead letter and decision, as it counts every event); what this instance
        # sent out is counted by its sink.
        done = time.perf_counter()
        report.published = Published(
            records=n,
            relearned=relearned,
            publish_s=done - processed,
            total_s=done - started,
            at=time.time(),
        )
        pipeline.metrics.record_batch(report)  # this service's Metrics (ModelState gave it)
        return result

    # -- between batches --

    def tick(self) -> None:
        """Serve the producer; recover lost outputs; run a due (or deferred) commit point."""
        sink = self.sink
        assert sink is not None and self.source is not None
        sink.poll()
        stalled = self.watch.reachable and sink.stalled_s() > self.settings.service.producer_stall_s
        if sink.lost or sink.fatal is not None or stalled:
            self.recover()
            return
        limit = self.settings.service.max_undelivered
        outcome = None
        if self.deferred is not None and self.deferred != "backpressure":
            outcome = self.commit_point(self.deferred, RETRY_FLUSH_S)
        elif self.committer.due():
            outcome = self.commit_point("interval")
        elif sink.undelivered > limit:
            self._defer("backpressure", sink.undelivered)
        elif self.deferred == "backpressure" and sink.undelivered <= limit // 2:
            self._resume()
        if outcome is Outcome.ROLLBACK:
            self.recover()

    def commit_point(self, reason: str, wait_s: float | None = None) -> Outcome:
        """Run a commit point; deferred while outputs are undelivered (consumption pauses). On
        ROLLBACK the caller recovers (not from inside a rebalance callback)."""
        assert self.source is not None and self.sink is not None
        if wait_s is None:
            wait_s = self.settings.service.flush_timeout_s
        try:
            outcome = self.committer.commit_point(reason, self.source, self.sink, wait_s)
        except Exception:
            self.failed = True
            raise
        if outcome is Outcome.DONE:
            self.progress.checkpoints += 1
            self._resume()
        elif outcome is Outcome.DEFERRED:
            self._defer(reason, self.sink.undelivered)
        return outcome

    def _defer(self, reason: str, undelivered: int) -> None:
        if self.deferred is None or self.deferred == "backpressure":
            self.deferred = reason
        if self.waiting_since is not None:
            return
        assert self.source is not None
        self.waiting_since = time.monotonic()
        self.source.pause()
        log.warning(
            "%d outputs not delivered to Kafka yet: consumption paused and not ready until they "
            "are (nothing is dropped; the %s commit point waits)",
            undelivered,
            reason,
        )

    def _resume(self) -> None:
        if self.waiting_since is None:
            return
        assert self.source is not None
        waited = time.monotonic() - self.waiting_since
        self.waiting_since, self.deferred = None, None
        self.source.resume()
        log.warning("outputs delivered after %.0f s: consumption resumed", waited)

    def recover(self) -> None:
        """Outputs of learned events were lost, or the producer cannot deliver any more: a new
        producer, the model back to its last checkpoint, and a replay from there."""
        assert self.sink is not None and self.source is not None
        sink = self.sink
        if sink.fatal is not None:
            cause, what = "producer_fatal", f"fatal producer error ({sink.fatal.str()})"
        elif sink.lost:
            cause = "delivery_failed"
            what = f"{sink.lost} outputs could not be delivered (first: {sink.first_loss})"
        else:
            cause = "producer_stalled"
            what = (
                f"the producer delivered nothing for {sink.stalled_s():.0f} s although Kafka "
                f"answers ({sink.undelivered} outputs waiting)"
            )
        log.error(
            "%s: replacing the producer, rolling the model back to its last checkpoint and "
            "replaying from there",
            what,
        )
        sink.close()
        self.sink = self._new_sink()
        self.deferred, self.waiting_since = None, None
        self._rollback(cause)
        self.source.resume()

    def _rollback(self, cause: str) -> None:
        assert self.source is not None
        self.relearn_until = max(self.relearn_until, self.state.pipeline.events_learned)
        self.state.reload()
        self.committer.changed = False
        self.source.reposition()
        self.progress.rollbacks += 1
        if self.metrics is not None:
            self.metrics.rollbacks_total.labels(cause=cause).inc()

    # -- readiness --

    def assigned(self) -> int:
        return len(self.source.positions) if self.source is not None else 0

    def ready(self) -> bool:
        """What /readyz reports: model restored, partitions assigned, Kafka reachable and outputs
        being delivered."""
        return (
            self.state.restored
            and self.assigned() > 0
            and self.watch.reachable
            and self.waiting_since is None
        )

    def snapshot(self) -> Progress:
        p = self.progress
        pipeline = self.state.pipeline
        p.events_learned = pipeline.events_learned
        p.users = pipeline.n_users
        p.items = pipeline.n_items
        p.assigned = self.assigned()
        return Progress(**asdict(p))
