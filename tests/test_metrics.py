"""Metrics: names by Prometheus conventions, values readable from a fresh registry, the HTTP
endpoint (metrics, liveness, readiness) and JSON logs."""

from __future__ import annotations

import io
import logging
import math
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from deploy_files import which
from prometheus_client import CollectorRegistry, generate_latest

from streamrec.core.observer import BatchObserver, BatchReport, Published
from streamrec.obs.collectors import RecentWindow
from streamrec.obs.http import serve
from streamrec.obs.logs import configure_logging
from streamrec.obs.metrics import DEAD_LETTER_REASONS, EVENT_TYPES, STAGES, Metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def families(registry: CollectorRegistry) -> dict[str, str]:
    """Exported family name → type, as a scraper sees them."""
    return {family.name: family.type for family in registry.collect()}


def test_names_follow_prometheus_conventions(registry: CollectorRegistry, metrics: Metrics) -> None:
    found = families(registry)
    ours = {name: kind for name, kind in found.items() if name.startswith("streamrec_")}
    assert len(ours) >= 30
    assert set(found) - set(ours) <= {
        f"process_{n}"
        for n in (
            "virtual_memory_bytes",
            "resident_memory_bytes",
            "start_time_seconds",
            "cpu_seconds",
            "open_fds",
            "max_fds",
        )
    }
    for family in registry.collect():
        if not family.name.startswith("streamrec_"):
            continue
        assert family.name == family.name.lower(), family.name
        assert family.documentation, f"{family.name} has no help text"
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_events")), family.name
        if family.type != "counter":
            assert not family.name.endswith("_total"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            # Unbounded cardinality is never a label.
            assert not {"user_id", "item_id", "user", "item", "event_id"} & set(sample.labels)


def test_each_attribute_is_exported_as_streamrec_plus_its_name(metrics: Metrics) -> None:
    """So a name seen in Grafana greps straight to its definition."""
    from prometheus_client.metrics import MetricWrapperBase

    attributes = {
        k: v
        for k, v in vars(metrics).items()
        if isinstance(v, MetricWrapperBase) and not k.startswith("_")
    }
    assert "events_consumed_total" in attributes and "build_info" in attributes
    for attribute, metric in attributes.items():
        # prometheus-client names a family without the suffix its samples get (_total, _info).
        (family,) = metric.describe()
        stem = attribute.removesuffix("_total").removesuffix("_info")
        assert family.name in (f"streamrec_{attribute}", f"streamrec_{stem}"), attribute


def test_counters_and_histograms_read_back(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.events_consumed_total.labels(type="click").inc(3)
    metrics.dead_letters_total.labels(reason="invalid_json").inc()
    metrics.batch_duration_seconds.labels(stage="learn").observe(0.004)
    metrics.event_to_publish_latency_seconds.observe(0.02)
    metrics.rebalances_total.labels(kind="assign").inc()
    metrics.checkpoints_total.labels(result="ok").inc()
    metrics.model_users.set(7)

    value = registry.get_sample_value
    assert value("streamrec_events_consumed_total", {"type": "click"}) == 3
    assert value("streamrec_dead_letters_total", {"reason": "invalid_json"}) == 1
    assert value("streamrec_batch_duration_seconds_count", {"stage": "learn"}) == 1
    assert value("streamrec_batch_duration_seconds_bucket", {"stage": "learn", "le": "0.005"}) == 1
    assert value("streamrec_batch_duration_seconds_bucket", {"stage": "learn", "le": "0.0025"}) == 0
    assert value("streamrec_event_to_publish_latency_seconds_sum") == pytest.approx(0.02)
    assert value("streamrec_rebalances_total", {"kind": "assign"}) == 1
    assert value("streamrec_checkpoints_total", {"result": "ok"}) == 1
    assert value("streamrec_model_users") == 7


def test_batch_histogram_exports_what_a_histogram_would() -> None:
    """The same exposition as prometheus-client's Histogram for the same observations, values on
    bucket bounds (inclusive), below the first, above the last and NaN included."""
    from prometheus_client import Histogram

    from streamrec.obs.collectors import BatchHistogram
    from streamrec.obs.metrics import LATENCY_BUCKETS

    values = [0.0, 0.001, 0.0011, 0.05, 0.049, 299.0, 300.0, 301.0, 1e9, *LATENCY_BUCKETS]
    values += [n / 997 for n in range(2000)]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("x_seconds", "X.", buckets=LATENCY_BUCKETS, registry=ours)
    reference = Histogram("x_seconds", "X.", buckets=LATENCY_BUCKETS, registry=theirs)
    batched.observe_many(values[:1000])
    batched.observe_many([])
    for value in values[1000:]:
        batched.observe(value)
    for value in values:
        reference.observe(value)

    # Same lines, except that the sum may differ in its last bits (numpy sums pairwise), and
    # `_created`, which the service turns off (`serve` calls disable_created_metrics).
    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [x for x in text.splitlines() if "_sum" not in x and "_created" not in x]

    assert lines(ours) == lines(theirs)
    assert ours.get_sample_value("x_seconds_sum") == pytest.approx(
        theirs.get_sample_value("x_seconds_sum"), rel=1e-12
    )
    batched.observe(math.nan)
    reference.observe(math.nan)
    assert ours.get_sample_value("x_seconds_bucket", {"le": "+Inf"}) == theirs.get_sample_value(
        "x_seconds_bucket", {"le": "+Inf"}
    )


def test_known_label_values_exist_at_zero_before_first_use(registry: CollectorRegistry) -> None:
    """Otherwise the first increment is invisible to rate() and 'no errors' reads as 'no data'."""
    Metrics(registry)
    for event_type in EVENT_TYPES:
        assert (
            registry.get_sample_value("streamrec_events_consumed_total", {"type": event_type}) == 0
        )
    for reason in DEAD_LETTER_REASONS:
        assert registry.get_sample_value("streamrec_dead_letters_total", {"reason": reason}) == 0
    assert registry.get_sample_value("streamrec_bandit_decisions_total", {"source": "explore"}) == 0


def test_duration_buckets_span_a_tenth_of_a_millisecond_to_ten_seconds(metrics: Metrics) -> None:
    bounds = [
        float(s.labels["le"])
        for family in metrics.batch_duration_seconds.collect()
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["stage"] == "total"
    ]
    finite = [b for b in bounds if math.isfinite(b)]
    assert min(finite) == 0.0001 and max(finite) == 10.0 and bounds[-1] == math.inf


def test_build_info_names_versions(registry: CollectorRegistry, metrics: Metrics) -> None:
    import platform

    samples = [s for f in registry.collect() if f.name == "streamrec_build" for s in f.samples]
    assert len(samples) == 1 and samples[0].name == "streamrec_build_info"
    assert samples[0].labels["python"] == platform.python_version()
    assert set(samples[0].labels) == {"version", "python", "river"}
    assert samples[0].labels["river"] != "unknown"


def test_online_quality_gauges_are_windowed_means(registry: CollectorRegistry) -> None:
    m = Metrics(registry, quality_window=4)
    value = registry.get_sample_value
    assert math.isnan(value("streamrec_online_rmse") or 0.0)  # a gap in Grafana, not a fake 0
    assert math.isnan(value("streamrec_online_hit_rate_at_k") or 0.0)

    for predicted, actual in [(3.0, 4.0), (5.0, 4.0), (4.0, 4.0), (2.0, 4.0)]:
        m.record_rating_prediction(predicted, actual)
    assert value("streamrec_online_mae") == pytest.approx((1 + 1 + 0 + 2) / 4)
    assert value("streamrec_online_rmse") == pytest.approx(math.sqrt((1 + 1 + 0 + 4) / 4))
    m.record_rating_prediction(4.0, 4.0)  # pushes out the first error (1.0)
    assert value("streamrec_online_mae") == pytest.approx((1 + 0 + 2 + 0) / 4)

    for hit in (True, False, False, True, True):
        m.record_top_k_hit(hit)
    assert value("streamrec_online_hit_rate_at_k") == pytest.approx(2 / 4)  # last four
    assert value("streamrec_online_evaluated_total", {"kind": "rating"}) == 5
    assert value("streamrec_online_evaluated_total", {"kind": "positive"}) == 5


def test_recent_window_matches_a_recomputed_mean_after_many_turnovers() -> None:
    import random

    rng = random.Random(7)
    window = RecentWindow(50)
    values = [rng.uniform(0, 1e6) if i % 97 else 1e-9 for i in range(5_000)]
    for v in values:
        window.add(v)
    assert len(window) == 50
    assert window.mean() == pytest.approx(math.fsum(values[-50:]) / 50, rel=1e-12)
    with pytest.raises(ValueError):
        RecentWindow(0)


def test_lag_from_librdkafka_statistics(registry: CollectorRegistry, metrics: Metrics) -> None:
    """Lag counts from streamrec's position, not from the last commit (commits trail by up to a
    checkpoint interval); partitions without a known position fall back to librdkafka's lag."""
    partitions = {
        # position known: end (last stable offset) - position
        "0": {
            "fetch_state": "active",
            "hi_offset": 120,
            "ls_offset": 100,
            "app_offset": 90,
            "consumer_lag": 60,
            "consumer_lag_stored": -1,
        },
        # nothing consumed yet: librdkafka's committed-offset lag
        "1": {
            "fetch_state": "offset-wait",
            "hi_offset": 50,
            "ls_offset": 50,
            "app_offset": -1001,
            "consumer_lag": 40,
            "consumer_lag_stored": -1,
        },
        # nothing known at all
        "2": {
            "fetch_state": "active",
            "hi_offset": -1,
            "ls_offset": -1,
            "app_offset": -1001,
            "consumer_lag": -1,
            "consumer_lag_stored": -1,
        },
        # revoked partitions linger in the statistics without being fetched
        "3": {
            "fetch_state": "none",
            "hi_offset": 10,
            "ls_offset": 10,
            "app_offset": 2,
            "consumer_lag": 8,
            "consumer_lag_stored": -1,
        },
        # librdkafka's internal "unassigned" bucket
        "-1": {"consumer_lag": 99, "consumer_lag_stored": 99},
    }
    stats = {"topics": {"streamrec.events": {"partitions": partitions}}}
    metrics.set_lag_from_statistics(orjson.dumps(stats).decode())

    def lag(partition: str) -> float | None:
        labels = {"topic": "streamrec.events", "partition": partition}
        return registry.get_sample_value("streamrec_consumer_lag", labels)

    assert [lag(p) for p in ("0", "1", "2", "3", "-1")] == [10, 40, None, None, None]

    metrics.forget_partitions([("streamrec.events", 0), ("streamrec.events", 7)])
    assert lag("0") is None and lag("1") == 40


def _report(published: Published | None = None) -> BatchReport:
    from streamrec.bandit.rewards import Feedback
    from streamrec.contract.events import Recommendation, RecommendedItem
    from streamrec.contract.records import DeadLetter, Record

    item = RecommendedItem("i1", 1.0, 1, "model", 1.0, "")
    explored = RecommendedItem("i2", 0.5, 2, "explore", 0.25, "")
    rec = Recommendation("r1", "u1", datetime.now(UTC), 7, [item, explored])
    dead = [DeadLetter(Record(b"x"), "invalid_json", "no"), DeadLetter(Record(b""), "oversize", "")]
    return BatchReport(
        consumed={"click": 4, "rating": 2},
        learned=6,
        duplicates=1,
        dead_letters=dead,
        recommendations=[rec],
        event_timestamps_ms=[1_000, 2_000],
        feedback=Feedback({"explore": 1}, {"explore": 0.5}, 3, 9, []),
        rating_predictions=[(3.0, 4.0)],
        top_k_hits=[True, False],
        decode_s=0.001,
        learn_s=0.002,
        refresh_s=0.003,
        model_users=5,
        model_items=8,
        model_events_learned=60,
        published=published,
    )


def test_a_batch_report_becomes_every_per_batch_metric(registry: CollectorRegistry) -> None:
    """`record_batch` is the one place a batch's figures are counted (the core's BatchObserver);
    the publish figures only when the batch was published."""
    observer: BatchObserver = Metrics(registry)  # structurally, for mypy and for readers
    observer.record_batch(_report())
    value = registry.get_sample_value
    assert value("streamrec_events_consumed_total", {"type": "click"}) == 4
    assert value("streamrec_events_consumed_total", {"type": "invalid"}) == 2
    assert value("streamrec_dead_letters_total", {"reason": "invalid_json"}) == 1
    assert value("streamrec_dead_letters_total", {"reason": "oversize"}) == 1
    assert value("streamrec_duplicates_total") == 1
    assert value("streamrec_events_learned_total") == 6
    assert value("streamrec_bandit_decisions_total", {"source": "explore"}) == 1
    assert value("streamrec_bandit_reward_value_total", {"source": "explore"}) == 0.5
    assert value("streamrec_bandit_expired_decisions_total") == 3
    assert value("streamrec_bandit_pending_decisions") == 9
    assert value("streamrec_exploration_ratio") == 0.5
    assert value("streamrec_online_evaluated_total", {"kind": "positive"}) == 2
    assert value("streamrec_online_mae") == 1.0
    assert value("streamrec_model_events_learned") == 60
    for stage in ("decode", "learn", "refresh"):
        assert value("streamrec_batch_duration_seconds_count", {"stage": stage}) == 1
    for stage in ("publish", "total"):
        assert value("streamrec_batch_duration_seconds_count", {"stage": stage}) == 0
    assert value("streamrec_batch_size_events_count") == 0
    assert value("streamrec_event_to_publish_latency_seconds_count") == 0

    observer.record_batch(_report(Published(12, 3, 0.004, 0.01, at=4.5)))
    assert value("streamrec_batch_size_events_sum") == 12
    assert value("streamrec_events_relearned_total") == 3
    assert value("streamrec_event_to_publish_latency_seconds_sum") == pytest.approx(3.5 + 2.5)
    counts = {s: value("streamrec_batch_duration_seconds_count", {"stage": s}) for s in STAGES}
    assert counts == {
        "decode": 2,
        "learn": 2,
        "refresh": 2,
        "publish": 1,
        "total": 1,
        "checkpoint": 0,
    }


def test_a_commit_point_is_recorded_in_one_call(registry: CollectorRegistry) -> None:
    import time

    metrics = Metrics(registry)
    before = time.time()
    metrics.record_checkpoint(0.02, 1234, 50)
    metrics.record_checkpoint_error()
    value = registry.get_sample_value
    assert value("streamrec_checkpoints_total", {"result": "ok"}) == 1
    assert value("streamrec_checkpoints_total", {"result": "error"}) == 1
    assert value("streamrec_checkpoint_duration_seconds_sum") == 0.02
    assert value("streamrec_batch_duration_seconds_sum", {"stage": "checkpoint"}) == 0.02
    assert value("streamrec_checkpoint_size_bytes") == 1234
    assert value("streamrec_events_committed_total") == 50
    assert (value("streamrec_checkpoint_last_success_timestamp_seconds") or 0) >= before


def test_default_registry_is_private_so_two_instances_coexist() -> None:
    a, b = Metrics(), Metrics()
    a.events_learned_total.inc()
    assert a.registry is not b.registry
    assert b.registry.get_sample_value("streamrec_events_learned_total") == 0


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_serve_metrics_health_and_readiness(metrics: Metrics) -> None:
    metrics.events_consumed_total.labels(type="rating").inc(2)
    with serve(metrics, "127.0.0.1", 0) as server:
        assert server.port > 0
        status, content_type, body = get(f"{server.url}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert 'streamrec_events_consumed_total{type="rating"} 2.0' in body
        assert "_created" not in body  # one series per counter, not two

        assert get(f"{server.url}/healthz")[::2] == (200, "ok\n")
        assert get(f"{server.url}/readyz")[0] == 503  # not restored, not assigned yet
        metrics.set_ready(True)
        assert get(f"{server.url}/readyz")[0] == 200
        metrics.set_ready(False)
        assert get(f"{server.url}/readyz")[0] == 503
        assert get(f"{server.url}/nope")[0] == 404


def test_serve_uses_the_given_readiness_check_and_survives_its_failure(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    state = {"ready": True}

    def ready() -> bool:
        if state["ready"] is None:
            raise RuntimeError("boom")
        return bool(state["ready"])

    with serve(metrics, "127.0.0.1", 0, ready=ready) as server:
        assert get(f"{server.url}/readyz")[0] == 200
        state["ready"] = None  # type: ignore[assignment]
        assert get(f"{server.url}/readyz")[0] == 503
        assert get(f"{server.url}/healthz")[0] == 200
    assert "readiness check failed" in caplog.text


def test_server_close_releases_the_port(metrics: Metrics) -> None:
    import socket

    server = serve(metrics, "127.0.0.1", 0)
    port = server.port
    server.close()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


@pytest.mark.skipif(
    which("promtool") is None, reason="promtool missing: apt-get install prometheus"
)
def test_exposition_passes_promtool_lint(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.batch_duration_seconds.labels(stage="total").observe(0.01)
    metrics.consumer_lag.labels(topic="t", partition="0").set(3)
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_logs_are_one_object_per_line_with_extras() -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    configure_logging("json", "debug", stream=stream)  # idempotent: still one handler of ours
    log = logging.getLogger("streamrec.test")
    log.info("checkpoint written", extra={"bytes": 1234, "path": "/tmp/x"})
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = orjson.loads(lines[0])
    assert first["message"] == "checkpoint written" and first["level"] == "info"
    assert first["logger"] == "streamrec.test" and first["bytes"] == 1234
    assert first["ts"].endswith("+00:00")
    second = orjson.loads(lines[1])
    assert "ValueError: bad" in second["exc_info"]


@pytest.mark.usefixtures("restore_root_logger")
def test_text_logs_and_bad_format() -> None:
    stream = io.StringIO()
    configure_logging("text", "WARNING", stream=stream)
    logging.getLogger("streamrec.test").info("hidden")
    logging.getLogger("streamrec.test").warning("shown")
    assert "hidden" not in stream.getvalue() and "shown" in stream.getvalue()
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml", "INFO")  # type: ignore[arg-type]


def test_catalog_and_rule_effects_are_counted_with_a_bounded_set_of_rule_labels(
    registry: CollectorRegistry,
) -> None:
    from dataclasses import replace

    from streamrec.obs.metrics import MAX_RULE_LABELS

    metrics = Metrics(registry)
    value = registry.get_sample_value
    assert value("streamrec_rule_items_total", {"rule": "unavailable", "effect": "filtered"}) == 0
    effects = {(f"r{n}", "boosted"): 1 for n in range(MAX_RULE_LABELS + 5)}
    effects[("unavailable", "filtered")] = 7
    metrics.record_batch(replace(_report(), catalog_records=3, rule_items=effects))
    assert value("streamrec_catalog_records_total") == 3
    assert value("streamrec_rule_items_total", {"rule": "unavailable", "effect": "filtered"}) == 7
    assert value("streamrec_rule_items_total", {"rule": "r0", "effect": "boosted"}) == 1
    names = {
        s.labels["rule"]
        for m in registry.collect()
        if m.name == "streamrec_rule_items"
        for s in m.samples
    }
    assert len(names - {"other"}) == MAX_RULE_LABELS and "other" in names
    assert value("streamrec_rule_items_total", {"rule": "other", "effect": "boosted"}) == 6
