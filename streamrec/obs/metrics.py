"""Every Prometheus metric streamrec exports.

All metrics are created against one injectable `CollectorRegistry`, so a test builds a fresh
registry, drives the code, and reads values back with `registry.get_sample_value(...)`; the service
builds one registry, hands it to the pipeline and serves it with `streamrec.obs.http.serve()`.

Naming rule: attribute `x` is exported as `streamrec_x` (counters are declared without `_total` in
prometheus-client and exported with it), so a name seen in Grafana greps straight to this file.
Labels are bounded sets only (event type, reason, stage, source, partition); never user or item
ids, whose cardinality is unbounded.

Hot-path cost matters (the whole per-event budget outside River is ~2-3 µs), so:
- per-event counters are pre-bound children (`labels()` costs ~1 µs per call, `inc()` ~0.2 µs);
- the prequential quality gauges are computed at scrape time from running sums
  (`Gauge.set_function`), not set once per event.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.process_collector import ProcessCollector

from streamrec.core.rules import UNAVAILABLE
from streamrec.obs.collectors import QUALITY_WINDOW, BatchHistogram, RecentWindow

if TYPE_CHECKING:
    from streamrec.core.observer import BatchReport

EVENT_TYPES = ("click", "purchase", "rating", "invalid")
"""Values of the `type` label of `events_consumed_total`: the event types, and `invalid` for a
record that went to the dead-letter sink (its type may not even be readable)."""

MAX_RULE_LABELS = 100
"""Distinct business-rule names exported as `rule` label values; further rules count as "other"."""

DEAD_LETTER_REASONS = (
    "missing_key",
    "empty_value",
    "oversize",
    "invalid_json",
    "unknown_type",
    "missing_field",
    "invalid_event",
    "rating_out_of_range",
    "timestamp_in_future",
    "timestamp_too_old",
    "invalid_catalog",
)
"""The reasons `streamrec.core.preprocess` gives, pre-created at zero so `rate()` works before the
first bad record. The label may take other values, but each must come from a fixed set in code,
never from the input.
"""

STAGES = ("decode", "learn", "refresh", "publish", "checkpoint", "total")
"""Values of the `stage` label of `batch_duration_seconds`."""

REBALANCE_KINDS = ("assign", "revoke", "lost")
ROLLBACK_CAUSES = ("delivery_failed", "producer_fatal", "producer_stalled", "partitions_lost")
RECOMMENDATION_SOURCES = ("model", "popular", "explore", "new", "pinned")

# 0.1 ms .. 10 s: a batch stage ranges from a cheap decode of a few records to a checkpoint of a
# large model; roughly 2.5x steps keep histogram_quantile's interpolation error modest.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Freshness target is p99 <= 50 ms, so resolution is finest there; the tail reaches minutes because
# a consumer catching up on a backlog publishes for events that are minutes old.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000)


class Metrics:
    """The metrics of one streamrec process, created against `registry`.

    Attributes are the prometheus-client metric objects; call them directly
    (`m.events_consumed_total.labels(type="click").inc()`), or use the few helpers below that
    exist because they keep state (quality windows) or parse something (librdkafka statistics).

    It is the core's `BatchObserver` (streamrec.core.observer), structurally: `record_batch` is
    the one place where a batch's figures become metrics.

    >>> from prometheus_client import CollectorRegistry
    >>> registry = CollectorRegistry()
    >>> m = Metrics(registry)
    >>> m.events_consumed_total.labels(type="click").inc(3)
    >>> registry.get_sample_value("streamrec_events_consumed_total", {"type": "click"})
    3.0
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        quality_window: int = QUALITY_WINDOW,
        process_metrics: bool = True,
    ) -> None:
        # A fresh registry by default, not the global one: two Metrics in one process (tests, or
        # replay beside run) must not collide on names.
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process_metrics:
            # process_resident_memory_bytes, CPU seconds, open fds: the memory target is judged
            # on resident size. Yields nothing on platforms without /proc.
            ProcessCollector(registry=r)

        # -- consumption and validation --
        self.events_consumed_total = Counter(
            "streamrec_events_consumed",
            "Records consumed from the source, by event type (invalid: sent to dead letters).",
            ["type"],
            registry=r,
        )
        self.events_learned_total = Counter(
            "streamrec_events_learned",
            "Valid events the model learned from (after a rollback, replayed events count again: "
            "see events_relearned_total and events_committed_total).",
            registry=r,
        )
        self.events_relearned_total = Counter(
            "streamrec_events_relearned",
            "Events learned again after the model rolled back to its last checkpoint.",
            registry=r,
        )
        self.events_committed_total = Counter(
            "streamrec_events_committed",
            "Events whose learning is in a durable checkpoint with committed offsets: across "
            "restarts its increase is exactly the events learned once.",
            registry=r,
        )
        self.catalog_records_total = Counter(
            "streamrec_catalog_records",
            "Catalog records applied: items described or retired, rules set or removed.",
            registry=r,
        )
        self.rule_items_total = Counter(
            "streamrec_rule_items",
            "Items affected by each business rule, by effect: filtered (kept out of the "
            "candidates a list is chosen from), boosted (shown with a boosted score), pinned, "
            "capped (skipped: their category was full). Rule 'unavailable' is built in.",
            ["rule", "effect"],
            registry=r,
        )
        self.dead_letters_total = Counter(
            "streamrec_dead_letters",
            "Records sent to the dead-letter sink, by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicates_total = Counter(
            "streamrec_duplicates",
            "Events dropped because their event_id was seen recently.",
            registry=r,
        )

        # -- batch processing --
        self.batch_duration_seconds = Histogram(
            "streamrec_batch_duration_seconds",
            "Wall time of each stage of a batch (total = the whole batch).",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size_events = Histogram(
            "streamrec_batch_size_events",
            "Records per consumed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.event_to_publish_latency_seconds = BatchHistogram(
            "streamrec_event_to_publish_latency_seconds",
            "From an event's message timestamp to the publish of the refreshed recommendation.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # -- Kafka consumer --
        self.consumer_lag = Gauge(
            "streamrec_consumer_lag",
            "Messages between the consumer's stored (else committed) offset and the high "
            "watermark, from librdkafka statistics.",
            ["topic", "partition"],
            registry=r,
        )
        self.rebalances_total = Counter(
            "streamrec_rebalances",
            "Consumer group rebalance callbacks, by kind.",
            ["kind"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "streamrec_assigned_partitions",
            "Partitions currently assigned to this consumer.",
            registry=r,
        )
        self.kafka_reachable = Gauge(
            "streamrec_kafka_reachable",
            "1 while a Kafka broker answers, 0 during an outage.",
            registry=r,
        )
        self.consumption_paused = Gauge(
            "streamrec_consumption_paused",
            "1 while consumption is paused because outputs wait for delivery.",
            registry=r,
        )
        self.log_resets_total = Counter(
            "streamrec_log_resets",
            "Partitions learned again from their start because their log was reset "
            "(service.on_log_reset=earliest).",
            registry=r,
        )
        self.rollbacks_total = Counter(
            "streamrec_rollbacks",
            "Times the model went back to its last checkpoint and replayed, by cause.",
            ["cause"],
            registry=r,
        )

        # -- checkpoints --
        self.checkpoint_duration_seconds = Histogram(
            "streamrec_checkpoint_duration_seconds",
            "Time to write one checkpoint durably (serialize, fsync, rename).",
            buckets=CHECKPOINT_BUCKETS,
            registry=r,
        )
        self.checkpoint_size_bytes = Gauge(
            "streamrec_checkpoint_size_bytes", "Size of the last checkpoint written.", registry=r
        )
        self.checkpoint_last_success_timestamp_seconds = Gauge(
            "streamrec_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last durable checkpoint (or of the one restored at start).",
            registry=r,
        )
        self.checkpoints_total = Counter(
            "streamrec_checkpoints", "Checkpoint attempts, by result.", ["result"], registry=r
        )

        # -- model --
        self.model_users = Gauge("streamrec_model_users", "Users the model knows.", registry=r)
        self.model_items = Gauge("streamrec_model_items", "Items the model knows.", registry=r)
        self.model_events_learned = Gauge(
            "streamrec_model_events_learned",
            "Events learned by the model since it was created (survives restarts, unlike the "
            "counter).",
            registry=r,
        )

        self.forwarded_records_total = Counter(
            "streamrec_forwarded_records",
            "Records this instance forwarded from its event partitions into the learn log "
            "(kafka.learn_log_topic); repeats after a crash count again.",
            registry=r,
        )

        # -- recommendations and bandit --
        self.recommendations_published_total = Counter(
            "streamrec_recommendations_published",
            "Recommendation lists delivered to the sink.",
            registry=r,
        )
        self.recommendation_publish_errors_total = Counter(
            "streamrec_recommendation_publish_errors",
            "Recommendation lists the sink failed to deliver.",
            registry=r,
        )
        self.produce_errors_total = Counter(
            "streamrec_produce_errors",
            "Outputs Kafka can never take (too large, invalid), skipped, by output and error.",
            ["output", "error"],
            registry=r,
        )
        self.bandit_decisions_total = Counter(
            "streamrec_bandit_decisions",
            "Items shown in published recommendations, by how they got there.",
            ["source"],
            registry=r,
        )
        self.bandit_rewards_total = Counter(
            "streamrec_bandit_rewards",
            "Feedback events that answer a shown item (rewards joined to their decision).",
            ["source"],
            registry=r,
        )
        self.bandit_reward_value_total = Counter(
            "streamrec_bandit_reward_value",
            "Sum of reward values joined to decisions (a purchase can be worth more than a click).",
            ["source"],
            registry=r,
        )
        self.bandit_pending_decisions = Gauge(
            "streamrec_bandit_pending_decisions",
            "Shown items still waiting for feedback inside the reward window.",
            registry=r,
        )
        self.bandit_expired_decisions_total = Counter(
            "streamrec_bandit_expired_decisions",
            "Shown items whose reward window closed without feedback (reward 0).",
            registry=r,
        )
        self.exploration_ratio = Gauge(
            "streamrec_exploration_ratio",
            "Share of recommended slots currently given to exploration.",
            registry=r,
        )

        # -- online quality (prequential: predict, score, then learn) --
        self._rating_abs_errors = RecentWindow(quality_window)
        self._rating_sq_errors = RecentWindow(quality_window)
        self._hits = RecentWindow(quality_window)
        self.online_rmse = Gauge(
            "streamrec_online_rmse",
            f"Prequential RMSE over the last {quality_window} rating predictions.",
            registry=r,
        )
        self.online_rmse.set_function(lambda: math.sqrt(self._rating_sq_errors.mean()))
        self.online_mae = Gauge(
            "streamrec_online_mae",
            f"Prequential MAE over the last {quality_window} rating predictions.",
            registry=r,
        )
        self.online_mae.set_function(self._rating_abs_errors.mean)
        self.online_hit_rate_at_k = Gauge(
            "streamrec_online_hit_rate_at_k",
            f"Share of the last {quality_window} positive events whose item was in the user's "
            "top-K just before.",
            registry=r,
        )
        self.online_hit_rate_at_k.set_function(self._hits.mean)
        self.online_evaluated_total = Counter(
            "streamrec_online_evaluated",
            "Prequential evaluations, by kind (rating prediction or positive top-K hit).",
            ["kind"],
            registry=r,
        )

        # -- lifecycle --
        self.ready = Gauge(
            "streamrec_ready",
            "1 when the model is restored and partitions are assigned (what /readyz reports).",
            registry=r,
        )
        self.build_info = Info("streamrec_build", "Versions this process runs.", registry=r)
        self.build_info.info(_build_labels())

        self._rule_labels: set[str] = {UNAVAILABLE}
        self._precreate_children()
        self._evaluated_rating = self.online_evaluated_total.labels(kind="rating")
        self._evaluated_positive = self.online_evaluated_total.labels(kind="positive")

    def _precreate_children(self) -> None:
        """Export known label values at 0 from the start.

        A counter that appears only at its first increment makes `rate()` miss that increment
        and makes "no dead letters" look like "no data" in Grafana.
        """
        for event_type in EVENT_TYPES:
            self.events_consumed_total.labels(type=event_type)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters_total.labels(reason=reason)
        for stage in STAGES:
            self.batch_duration_seconds.labels(stage=stage)
        # The built-in rule exists with or without a catalog.
        self.rule_items_total.labels(rule=UNAVAILABLE, effect="filtered")
        for kind in REBALANCE_KINDS:
            self.rebalances_total.labels(kind=kind)
        for cause in ROLLBACK_CAUSES:
            self.rollbacks_total.labels(cause=cause)
        for result in ("ok", "error"):
            self.checkpoints_total.labels(result=result)
        for source in RECOMMENDATION_SOURCES:
            self.bandit_decisions_total.labels(source=source)
            self.bandit_rewards_total.labels(source=source)
            self.bandit_reward_value_total.labels(source=source)
        for kind in ("rating", "positive"):
            self.online_evaluated_total.labels(kind=kind)

    # -- one batch ---------------------------------------------------------------------------

    def record_batch(self, report: BatchReport) -> None:
        """Every per-batch metric, from the batch's report (the core's `BatchObserver`).

        Called once per batch: by the pipeline used on its own, or by the service once the
        batch is published (then with `report.published`, the figures only it knows).
        """
        shown: dict[str, int] = {}
        for rec in report.recommendations:
            for item in rec.items:
                shown[item.source] = shown.get(item.source, 0) + 1
        for source, n in shown.items():
            self.bandit_decisions_total.labels(source=source).inc(n)
        feedback = report.feedback
        for source, n in feedback.rewarded.items():
            self.bandit_rewards_total.labels(source=source).inc(n)
        for source, value in feedback.earned.items():
            self.bandit_reward_value_total.labels(source=source).inc(value)
        if feedback.expired_slots:
            self.bandit_expired_decisions_total.inc(feedback.expired_slots)
        self.bandit_pending_decisions.set(feedback.pending)
        total_shown = sum(shown.values())
        if total_shown:
            self.exploration_ratio.set(1.0 - shown.get("model", 0) / total_shown)

        for event_type, n in report.consumed.items():
            self.events_consumed_total.labels(type=event_type).inc(n)
        for dead in report.dead_letters:
            self.dead_letters_total.labels(reason=dead.reason).inc()
        if report.dead_letters:
            self.events_consumed_total.labels(type="invalid").inc(len(report.dead_letters))
        if report.duplicates:
            self.duplicates_total.inc(report.duplicates)
        self.events_learned_total.inc(report.learned)
        if report.catalog_records:
            self.catalog_records_total.inc(report.catalog_records)
        for (rule, effect), n in (report.rule_items or {}).items():
            self.rule_items_total.labels(rule=self._rule_label(rule), effect=effect).inc(n)
        for predicted, actual in report.rating_predictions:
            self.record_rating_prediction(predicted, actual)
        for hit in report.top_k_hits:
            self.record_top_k_hit(hit)

        stage = self.batch_duration_seconds
        stage.labels(stage="decode").observe(report.decode_s)
        stage.labels(stage="learn").observe(report.learn_s)
        stage.labels(stage="refresh").observe(report.refresh_s)
        self.model_users.set(report.model_users)
        self.model_items.set(report.model_items)
        self.model_events_learned.set(report.model_events_learned)

        published = report.published
        if published is None:
            return
        if report.event_timestamps_ms:
            sent_s = np.array(report.event_timestamps_ms, dtype=np.float64) / 1000.0
            self.event_to_publish_latency_seconds.observe_many(
                np.maximum(published.at - sent_s, 0.0)
            )
        if published.relearned:
            self.events_relearned_total.inc(published.relearned)
        self.batch_size_events.observe(published.records)
        stage.labels(stage="publish").observe(published.publish_s)
        stage.labels(stage="total").observe(published.total_s)

    def _rule_label(self, rule: str) -> str:
        """The rule's name as a label, for the first MAX_RULE_LABELS names; "other" after.

        Rule names come from settings and the catalog stream, not from a fixed set in code, so
        the number of series they make is bounded here.
        """
        labels = self._rule_labels
        if rule in labels:
            return rule
        if len(labels) < MAX_RULE_LABELS:
            labels.add(rule)
            return rule
        return "other"

    # -- one commit point --------------------------------------------------------------------

    def record_checkpoint(self, duration_s: float, size_bytes: int, newly_committed: int) -> None:
        """A durable checkpoint with its offsets committed: `duration_s` from the producer flush
        to the offset commit (also the `checkpoint` stage of `batch_duration_seconds`), and
        `newly_committed` events learned since the previous one."""
        self.checkpoints_total.labels(result="ok").inc()
        self.checkpoint_duration_seconds.observe(duration_s)
        self.batch_duration_seconds.labels(stage="checkpoint").observe(duration_s)
        self.checkpoint_size_bytes.set(size_bytes)
        self.checkpoint_last_success_timestamp_seconds.set(time.time())
        self.events_committed_total.inc(newly_committed)

    def record_checkpoint_error(self) -> None:
        """A checkpoint that could not be written (the service stops on it)."""
        self.checkpoints_total.labels(result="error").inc()

    # -- helpers that keep state -------------------------------------------------------------

    def record_rating_prediction(self, predicted: float, actual: float) -> None:
        """Score one rating prediction made before learning the event (prequential)."""
        error = predicted - actual
        self._rating_abs_errors.add(abs(error))
        self._rating_sq_errors.add(error * error)
        self._evaluated_rating.inc()

    def record_top_k_hit(self, hit: bool) -> None:
        """Score one positive event: was its item in the user's top-K before learning it?"""
        self._hits.add(1.0 if hit else 0.0)
        self._evaluated_positive.inc()

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1.0 if ready else 0.0)

    def is_ready(self) -> bool:
        """What the `ready` gauge says; what `obs.http.serve` reports by default."""
        return any(
            sample.value == 1.0 for family in self.ready.collect() for sample in family.samples
        )

    # -- consumer lag ------------------------------------------------------------------------

    def set_lag_from_statistics(self, stats: bytes | str | Mapping[str, Any]) -> None:
        """Update `consumer_lag` from a librdkafka statistics document.

        Pass it as the consumer's `stats_cb` (with `statistics.interval.ms` set): librdkafka
        already knows each partition's end offset from its fetches, so no extra requests are made.

        Lag is measured from the application's position (`app_offset`: the last record handed to
        streamrec + 1) to the end of the partition (`ls_offset`, the last stable offset under the
        default read_committed isolation, else `hi_offset`). librdkafka's own `consumer_lag`
        counts from the *committed* offset, and streamrec commits only at checkpoints, so that
        figure would overstate the lag by up to a checkpoint interval; it is the fallback before
        the first record arrives. Skipped rather than exported as bogus values: partition -1
        (librdkafka's internal "unassigned" bucket), partitions not being fetched (revoked ones
        linger in the statistics), and unknown (negative) offsets.
        """
        doc = orjson.loads(stats) if isinstance(stats, bytes | str) else stats
        for topic, topic_stats in (doc.get("topics") or {}).items():
            for partition, p in (topic_stats.get("partitions") or {}).items():
                if partition == "-1" or not isinstance(p, Mapping):
                    continue
                if p.get("fetch_state", "active") in ("none", "stopping", "stopped"):
                    continue
                lag = _position_lag(p)
                if lag is not None:
                    self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop lag series of revoked partitions, so a stale lag does not page anyone."""
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(topic, str(partition))


def _position_lag(p: Mapping[str, Any]) -> int | None:
    """Records between the application's position and the partition end, if both are known."""
    end = p.get("ls_offset", -1)
    if not isinstance(end, int) or end < 0:
        end = p.get("hi_offset", -1)
    position = p.get("app_offset", -1)
    if isinstance(end, int) and isinstance(position, int) and end >= 0 and position >= 0:
        return max(0, end - position)
    for key in ("consumer_lag_stored", "consumer_lag"):
        lag = p.get(key, -1)
        if isinstance(lag, int) and lag >= 0:
            return lag
    return None


def _build_labels() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "version": version("streamrec"),
        "python": platform.python_version(),
        "river": version("river"),
    }


__all__ = [
    "DEAD_LETTER_REASONS",
    "EVENT_TYPES",
    "STAGES",
    "Metrics",
    "RecentWindow",
]
