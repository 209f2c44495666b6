"""A real Prometheus scrapes a streamrec metrics endpoint; every dashboard query and every alert
rule is evaluated through Prometheus' HTTP API.

This is what a user's Grafana does: if a metric is renamed, a label changes or a query is wrong,
a panel goes blank or an alert can never fire, and only a real server evaluating the real
expressions over real scrapes notices.

Two endpoints are scraped, and every test runs against both:

- `consumer`: the real `streamrec.service.run` consuming a stream of valid and invalid events
  from the test broker and serving its own metrics port, exactly as `streamrec run` does;
- `simulated`: `serve()` over a `Metrics` object driven the way the run loop drives it, with every
  metric fed (quality, bandit rewards included), so the dashboard is proven on its own terms
  whatever a given consumer run happens to exercise.

Needs the `prometheus` and `promtool` binaries (Debian package `prometheus`).
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from deploy_files import (
    ALERTS,
    alert_names,
    dashboard_queries,
    grafana_to_promql,
    metric_names_in,
    which,
)

from streamrec.obs.http import serve
from streamrec.obs.metrics import DEAD_LETTER_REASONS, STAGES, Metrics

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        which("prometheus") is None or which("promtool") is None,
        reason="prometheus/promtool missing: apt-get install prometheus",
    ),
]

SCRAPE_INTERVAL = "1s"
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval would be: several scrapes
STARTUP_TIMEOUT_S = 20.0
DATA_TIMEOUT_S = 30.0


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.25,
) -> Any:
    """Poll `condition` until it returns something truthy; fail describing `what` at the deadline.

    `what` may be a function, to report the state at the deadline rather than a fixed message.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {detail}")
        time.sleep(min(interval, remaining))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the scraped consumer ----------------------------------------------------------------------


def drive_like_a_consumer(metrics: Metrics, stop: threading.Event) -> None:
    """Update `metrics` the way the Kafka run loop does, batch after batch, until `stop`.

    Numbers are plausible rather than measured: ~8% of records are invalid (so the dead-letter
    alert's expression is true), three partitions lag a little, a checkpoint every few batches.
    """
    rng = random.Random(5)
    topic = "streamrec.events"
    metrics.rebalances_total.labels(kind="assign").inc()
    metrics.assigned_partitions.set(3)
    metrics.checkpoint_last_success_timestamp_seconds.set(time.time())  # restored at start
    metrics.set_ready(True)
    metrics.kafka_reachable.set(1)
    metrics.produce_errors_total.labels(output="dead_letter", error="MSG_SIZE_TOO_LARGE")
    users = items = learned = 0
    batch = 0
    while not stop.is_set():
        batch += 1
        size = rng.randint(50, 400)
        metrics.batch_size_events.observe(size)
        invalid = sum(rng.random() < 0.08 for _ in range(size))
        duplicates = rng.randint(0, 2)
        valid = size - invalid - duplicates
        for reason in rng.choices(DEAD_LETTER_REASONS, k=invalid):
            metrics.dead_letters_total.labels(reason=reason).inc()
        metrics.events_consumed_total.labels(type="invalid").inc(invalid)
        metrics.duplicates_total.inc(duplicates)
        for event_type, n in zip(
            ("click", "purchase", "rating"), _split(rng, valid, (0.6, 0.1, 0.3)), strict=True
        ):
            metrics.events_consumed_total.labels(type=event_type).inc(n)
        metrics.events_learned_total.inc(valid)
        learned += valid
        users += rng.randint(0, 5)
        items += rng.randint(0, 2)
        metrics.model_users.set(users)
        metrics.model_items.set(items)
        metrics.model_events_learned.set(learned)

        for stage in STAGES:
            metrics.batch_duration_seconds.labels(stage=stage).observe(rng.lognormvariate(-6, 1))
        for _ in range(valid // 10):
            metrics.event_to_publish_latency_seconds.observe(rng.lognormvariate(-4.5, 0.6))
            metrics.record_rating_prediction(rng.uniform(1, 5), rng.randint(1, 5))
            metrics.record_top_k_hit(rng.random() < 0.15)
        published = rng.randint(10, 60)
        metrics.recommendations_published_total.inc(published)
        shown = dict(zip(("model", "popular", "explore", "new"), (7, 1, 2, 0), strict=True))
        for source, per_list in shown.items():
            if per_list:
                metrics.bandit_decisions_total.labels(source=source).inc(per_list * published)
                rewards = sum(rng.random() < 0.05 for _ in range(per_list * published))
                metrics.bandit_rewards_total.labels(source=source).inc(rewards)
                metrics.bandit_reward_value_total.labels(source=source).inc(rewards * 1.5)
        metrics.bandit_pending_decisions.set(rng.randint(100, 500))
        metrics.bandit_expired_decisions_total.inc(rng.randint(0, 20))
        metrics.exploration_ratio.set(0.2)
        for partition in range(3):
            metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(
                rng.randint(0, 300)
            )
        if batch % 5 == 0:
            metrics.checkpoint_duration_seconds.observe(rng.lognormvariate(-3, 0.5))
            metrics.checkpoint_size_bytes.set(1_000_000 + 100 * learned)
            metrics.checkpoint_last_success_timestamp_seconds.set(time.time())
            metrics.checkpoints_total.labels(result="ok").inc()
        stop.wait(0.02)  # the next poll; Event.wait so teardown is immediate


def _split(rng: random.Random, n: int, shares: tuple[float, ...]) -> list[int]:
    counts = [0] * len(shares)
    for index in rng.choices(range(len(shares)), weights=shares, k=n):
        counts[index] += 1
    return counts


CONSUMER_NAN_ALLOWED: frozenset[str] = frozenset()
"""Metrics whose panels may show NaN (nothing evaluated yet) when scraping the real consumer.

Empty: the consumer feeds every metric the dashboard shows, including prequential quality
(`evaluation.LiveQuality`). Add a name here only with the reason it cannot have data in a short
run; the simulated endpoint requires every panel regardless.
"""


@dataclass
class Endpoint:
    """A scraped streamrec metrics endpoint and what its dashboard may legitimately lack."""

    kind: str
    port: int
    nan_allowed: frozenset[str] = frozenset()
    failures: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_alive(self) -> None:
        if self.failures:
            raise AssertionError(f"the {self.kind} endpoint failed") from self.failures[0]


def _in_thread(name: str, target: Callable[[], Any], failures: list[BaseException]) -> Any:
    def body() -> None:
        try:
            target()
        except BaseException as exc:  # reported by Endpoint.check_alive and at teardown
            failures.append(exc)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread


@contextmanager
def simulated_endpoint() -> Iterator[Endpoint]:
    metrics = Metrics()
    stop = threading.Event()
    with serve(metrics, "127.0.0.1", 0) as server:
        endpoint = Endpoint("simulated", server.port)
        driver = _in_thread(
            "drive-metrics", lambda: drive_like_a_consumer(metrics, stop), endpoint.failures
        )
        try:
            yield endpoint
        finally:
            stop.set()
            driver.join(timeout=10)


def produce_forever(bootstrap: str, topic: str, stop: threading.Event) -> None:
    """~1,000 events/s stamped now (so event-to-publish latency is real), ~8% of them invalid."""
    from confluent_kafka import Producer

    rng = random.Random(11)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sent = 0
    while not stop.is_set():
        for _ in range(50):
            sent += 1
            user = f"u{rng.randrange(300)}"
            roll = rng.random()
            if roll < 0.04:
                value = b"{not json"
            elif roll < 0.08:
                value = orjson.dumps(
                    {
                        "event_id": f"e{sent}",
                        "type": "rating",
                        "user_id": user,
                        "item_id": "i1",
                        "timestamp": int(time.time() * 1000),
                        "rating": 42,
                    }
                )
            else:
                kind = rng.choice(("rating", "click", "click", "purchase"))
                event: dict[str, Any] = {
                    "event_id": f"e{sent}",
                    "type": kind,
                    "user_id": user,
                    "item_id": f"i{int(rng.paretovariate(1.2)) % 400}",
                    "timestamp": int(time.time() * 1000),
                }
                if kind == "rating":
                    event["rating"] = rng.randint(1, 5)
                value = orjson.dumps(event)
            producer.produce(topic, value, user.encode())
        producer.poll(0)
        stop.wait(0.05)
    producer.flush(10)


@contextmanager
def consumer_endpoint(bootstrap: str, state_dir: Path) -> Iterator[Endpoint]:
    from streamrec.io.kafka_config import create_topics
    from streamrec.service import run
    from streamrec.settings import KafkaSettings, ModelSettings, ServiceSettings, Settings

    suffix = uuid.uuid4().hex[:8]
    topic = f"live-prometheus.events.{suffix}"
    create_topics(bootstrap, [topic], partitions=3)
    port = free_port()
    settings = Settings(
        # The fast rating model: this test is about what the service exports, not model quality.
        model=ModelSettings(rating_model="biased_mf"),
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topics=[topic],
            group_id=f"live-prometheus-{suffix}",
            recommendations_topic=f"{topic}.recommendations",
            dlq_topic=f"{topic}.dlq",
            consumer={"statistics.interval.ms": 1000},  # lag every second, not every five
        ),
        service=ServiceSettings(
            state_dir=state_dir,
            checkpoint_key="live-prometheus-test-key",
            metrics_host="127.0.0.1",
            metrics_port=port,
            checkpoint_every_seconds=2.0,  # checkpoint metrics inside every rate window
        ),
    )
    endpoint = Endpoint("consumer", port, nan_allowed=CONSUMER_NAN_ALLOWED)
    stop = threading.Event()
    producer = _in_thread(
        "produce-events", lambda: produce_forever(bootstrap, topic, stop), endpoint.failures
    )
    consumer = _in_thread(
        "streamrec-run", lambda: run(settings, stop=stop, handle_signals=False), endpoint.failures
    )
    try:
        yield endpoint
    finally:
        stop.set()
        consumer.join(timeout=30)
        producer.join(timeout=10)
    assert not consumer.is_alive(), "the consumer did not stop within 30 s of being asked"
    endpoint.check_alive()


@pytest.fixture(
    scope="module",
    params=["simulated", pytest.param("consumer", marks=pytest.mark.kafka)],
)
def streamrec_endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Endpoint]:
    """One endpoint per kind for the whole module: the tests only read from it."""
    if request.param == "simulated":
        with simulated_endpoint() as endpoint:
            yield endpoint
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        with consumer_endpoint(bootstrap, tmp_path_factory.mktemp("state")) as endpoint:
            yield endpoint


# -- the Prometheus server ---------------------------------------------------------------------


class Prometheus:
    """HTTP API client of a Prometheus server started for one test."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # 400 carries the PromQL error as JSON
            return json.loads(error.read())

    def query(self, promql: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=promql)

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, streamrec_endpoint: Endpoint
) -> Iterator[Prometheus]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "streamrec",
                "static_configs": [{"targets": [f"127.0.0.1:{streamrec_endpoint.port}"]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_until(ready, STARTUP_TIMEOUT_S, "prometheus to become ready")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scraped_enough(prometheus: Prometheus, endpoint: Endpoint) -> bool:
    """Enough scrapes for rate() over RATE_INTERVAL, with the consumer up in every one."""
    endpoint.check_alive()
    result = prometheus.query(f'min_over_time(up{{job="streamrec"}}[{RATE_INTERVAL}])')
    samples = result.get("data", {}).get("result", [])
    count = prometheus.query(f'count_over_time(up{{job="streamrec"}}[{RATE_INTERVAL}])')
    counts = count.get("data", {}).get("result", [])
    return bool(samples and samples[0]["value"][1] == "1" and counts)


def returns_data(result: dict[str, Any], finite: bool) -> bool:
    """Non-empty result; with `finite`, at least one value a panel can draw."""
    data = result.get("data", {})
    values = [s["value"][1] for s in data.get("result", [])] if data else []
    if data.get("resultType") == "scalar":
        values = [data["result"][1]]
    if not finite:
        return bool(values)
    return any(v not in ("NaN", "+Inf", "-Inf") for v in values)


# -- the tests ---------------------------------------------------------------------------------


def test_every_dashboard_query_returns_data(
    prometheus: Prometheus, streamrec_endpoint: Endpoint
) -> None:
    endpoint = streamrec_endpoint
    wait_until(lambda: scraped_enough(prometheus, endpoint), DATA_TIMEOUT_S, "scrapes")
    queries = {
        (q.panel, q.ref_id): grafana_to_promql(q.expr, RATE_INTERVAL) for q in dashboard_queries()
    }
    assert len(queries) >= 20
    pending = dict(queries)
    errors: dict[tuple[str, str], str] = {}

    def all_return_data() -> bool:
        for key, promql in list(pending.items()):
            result = prometheus.query(promql)
            if result.get("status") != "success":
                errors[key] = f"{promql}\n  → {result.get('errorType')}: {result.get('error')}"
                del pending[key]
            elif returns_data(result, finite=not metric_names_in(promql) & endpoint.nan_allowed):
                del pending[key]
        return not pending or bool(errors)

    def still_empty() -> str:
        return "data from dashboard queries:\n" + "\n".join(
            f"{panel} [{ref}]: {promql}" for (panel, ref), promql in pending.items()
        )

    # Rates need two scrapes inside their window and quantiles need observations in it, so a
    # query may come up empty at first; it gets until the deadline, never longer.
    wait_until(all_return_data, DATA_TIMEOUT_S, still_empty, interval=0.5)
    assert not errors, "invalid dashboard queries:\n" + "\n".join(errors.values())


def test_dashboard_instance_variable_finds_the_consumer(
    prometheus: Prometheus, streamrec_endpoint: Endpoint
) -> None:
    def instances() -> list[str]:
        streamrec_endpoint.check_alive()
        result = prometheus.get(
            "/api/v1/label/instance/values", **{"match[]": "streamrec_build_info"}
        )
        return list(result.get("data", []))

    found = wait_until(instances, DATA_TIMEOUT_S, "instance label values of streamrec_build_info")
    assert len(found) == 1 and found[0].startswith("127.0.0.1:")


def test_every_alert_rule_evaluates_and_the_dead_letter_alert_is_pending(
    prometheus: Prometheus, streamrec_endpoint: Endpoint
) -> None:
    expected = set(alert_names())

    def evaluated_rules() -> dict[str, dict[str, Any]]:
        streamrec_endpoint.check_alive()
        groups = prometheus.get("/api/v1/rules", type="alert").get("data", {}).get("groups", [])
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        if set(rules) != expected or any(r["health"] == "unknown" for r in rules.values()):
            return {}
        return rules

    rules = wait_until(evaluated_rules, DATA_TIMEOUT_S, "a first evaluation of every alert")
    broken = {name: rule.get("lastError") for name, rule in rules.items() if rule["health"] != "ok"}
    assert not broken, f"alert rules failing in Prometheus: {broken}"
    for name, rule in rules.items():
        result = prometheus.query(rule["query"])
        assert result.get("status") == "success", (name, rule["query"], result.get("error"))

    # ~8% of the driven records are invalid, above the 5% threshold: the alert must be on its
    # way (pending for its `for:` duration) once rates exist; a healthy consumer raises nothing
    # else.
    def dead_letter_alert_state() -> str | None:
        alerts = prometheus.get("/api/v1/alerts").get("data", {}).get("alerts", [])
        states = {a["labels"]["alertname"]: a["state"] for a in alerts}
        others = set(states) - {"StreamrecDeadLetterRateHigh"}
        assert not others, f"alerts raised for a healthy consumer: {sorted(others)}"
        return states.get("StreamrecDeadLetterRateHigh")

    state = wait_until(dead_letter_alert_state, DATA_TIMEOUT_S, "the dead-letter alert")
    assert state in ("pending", "firing")


def test_live_scrape_passes_promtool_check_metrics(
    prometheus: Prometheus, streamrec_endpoint: Endpoint
) -> None:
    wait_until(lambda: scraped_enough(prometheus, streamrec_endpoint), DATA_TIMEOUT_S, "scrapes")
    with urllib.request.urlopen(f"{streamrec_endpoint.url}/metrics", timeout=5) as response:
        exposition = response.read()
    assert b"streamrec_events_learned_total" in exposition
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    assert result.returncode == 0 and not result.stdout.strip(), (
        result.stdout.decode() + result.stderr.decode()
    )
    # And Prometheus ingested it all: no sample the scrape rejected.
    result_json = prometheus.query('scrape_samples_post_metric_relabeling{job="streamrec"}')
    assert int(float(result_json["data"]["result"][0]["value"][1])) > 100
