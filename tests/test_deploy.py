"""The deployment files are valid for the tools that read them.

promtool (Debian package `prometheus`) checks the scrape config, the alert rules, the alert unit
tests and every dashboard query; docker-compose (Debian package `docker-compose`) validates the
stack. Both are installed by `.ci/run`; elsewhere these tests skip and say what to install.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_files import (
    ALERT_TESTS,
    ALERTS,
    COMPOSE,
    DASHBOARD,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    DOCKERFILE,
    PROMETHEUS_CONFIG,
    REPLICATED_METRICS,
    ROOT,
    aggregations,
    alert_names,
    consumer_services,
    dashboard_queries,
    grafana_to_promql,
    load_dashboard,
    metric_names_in,
    run_kafka_init,
    sums_over_instances,
    which,
)

from streamrec.obs.metrics import Metrics

needs_promtool = pytest.mark.skipif(
    which("promtool") is None, reason="promtool missing: apt-get install prometheus"
)
needs_compose = pytest.mark.skipif(
    which("docker-compose") is None, reason="docker-compose missing: apt-get install docker-compose"
)


# docker-compose refuses the stack without a checkpoint key (it has no default): give it one.
COMPOSE_ENV = {**os.environ, "STREAMREC_CHECKPOINT_KEY": "compose-test-" + "k" * 32}


def run(
    *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def rendered_compose() -> dict[str, Any]:
    """The stack as docker-compose resolves it (anchors merged, variables substituted)."""
    import yaml

    result = run("docker-compose", "-f", COMPOSE, "config", env=COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def exported_metric_names() -> set[str]:
    """Family names a streamrec process exports (histogram/counter suffixes as PromQL sees them)."""
    names = set()
    for family in Metrics().registry.collect():
        # Families without children yet (labelled gauges such as the lag) have no samples.
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        for sample in family.samples:
            names.add(re.sub(r"_(bucket|sum|count)$", "", sample.name))
    return names


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    result = run("promtool", "check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


@needs_promtool
def test_alert_rules_are_valid() -> None:
    result = run("promtool", "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_names())} rules found" in result.stdout


@needs_promtool
def test_alerts_fire_when_they_should_and_not_otherwise() -> None:
    """promtool's rule unit tests: synthetic series in, expected alerts (with text) out."""
    result = run("promtool", "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname:\s*(\S+)", ALERT_TESTS.read_text()))
    assert tested == set(alert_names()), "every alert needs a unit test"


def test_alerts_have_for_severity_and_annotations() -> None:
    text = ALERTS.read_text()
    blocks = re.split(r"^\s*- alert:", text, flags=re.MULTILINE)[1:]
    assert {
        "StreamrecConsumerLagGrowing",
        "StreamrecDeadLetterRateHigh",
        "StreamrecNoEventsConsumed",
        "StreamrecCheckpointStale",
        "StreamrecConsumerNotReady",
    } <= set(alert_names())
    for block in blocks:
        name = block.split()[0]
        for field in ("expr:", "for:", "severity:", "summary:", "description:"):
            assert field in block, f"{name} lacks {field}"


def test_dashboard_and_alerts_use_only_metrics_that_exist() -> None:
    """A renamed metric must not leave an empty panel or an alert that can never fire."""
    exported = exported_metric_names()
    used = metric_names_in(ALERTS.read_text())
    for query in dashboard_queries():
        used |= metric_names_in(query.expr)
    assert used - exported == set()


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses PromQL when it checks rules: wrap each panel query in a recording rule."""
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(q.expr)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = run("promtool", "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries)} rules found" in result.stdout


def test_dashboard_covers_what_operators_look_at() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "streamrec" and 36 <= dashboard["schemaVersion"] <= 41
    text = " ".join(q.expr for q in dashboard_queries(dashboard))
    for metric in (
        "streamrec_events_consumed_total",
        "streamrec_events_learned_total",
        "streamrec_event_to_publish_latency_seconds_bucket",
        "streamrec_batch_duration_seconds_bucket",
        "streamrec_consumer_lag",
        "streamrec_dead_letters_total",
        "streamrec_online_rmse",
        "streamrec_online_mae",
        "streamrec_online_hit_rate_at_k",
        "streamrec_bandit_rewards_total",
        "streamrec_bandit_decisions_total",
        "streamrec_exploration_ratio",
        "streamrec_checkpoint_last_success_timestamp_seconds",
        "streamrec_model_users",
        "streamrec_model_items",
        "streamrec_rebalances_total",
        "streamrec_kafka_reachable",
        "streamrec_consumption_paused",
        "streamrec_rollbacks_total",
        "streamrec_log_resets_total",
        "streamrec_produce_errors_total",
        "streamrec_forwarded_records_total",
        "streamrec_rule_items_total",
        "streamrec_catalog_records_total",
    ):
        assert metric in text, f"no panel shows {metric}"
    assert "histogram_quantile(0.99" in text


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = load_dashboard()
    datasource_uid = re.search(r"uid:\s*(\S+)", DATASOURCES.read_text())
    assert datasource_uid is not None
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource_uid.group(1), panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource_uid.group(1)


def test_grafana_provisioning_points_at_the_dashboard_mount() -> None:
    providers = DASHBOARD_PROVIDERS.read_text()
    path = re.search(r"path:\s*(\S+)", providers)
    assert path is not None
    compose = COMPOSE.read_text()
    assert f"./deploy/grafana/dashboards:{path.group(1)}" in compose
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in compose
    assert "./deploy/prometheus:/etc/prometheus" in compose
    assert DASHBOARD.name in compose  # the home dashboard


def test_compose_bind_mounts_exist() -> None:
    for source in re.findall(r"^\s*- (\./[^:]+):", COMPOSE.read_text(), flags=re.MULTILINE):
        assert (ROOT / source).exists(), source


@needs_compose
def test_compose_file_is_valid() -> None:
    result = run("docker-compose", "-f", COMPOSE, "config", "-q", env=COMPOSE_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@needs_compose
def test_compose_refuses_to_start_without_a_checkpoint_key(tmp_path: Path) -> None:
    """No shipped default: the stack does not even render until the operator sets a key."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMREC_CHECKPOINT_KEY"}
    no_dotenv = tmp_path / "empty.env"  # a developer's .env beside the file must not count
    no_dotenv.write_text("")
    result = run("docker-compose", "--env-file", no_dotenv, "-f", COMPOSE, "config", "-q", env=env)
    assert result.returncode != 0
    assert "set STREAMREC_CHECKPOINT_KEY" in result.stderr
    rendered = run("docker-compose", "-f", COMPOSE, "config", env=COMPOSE_ENV)
    assert rendered.returncode == 0, rendered.stderr
    assert COMPOSE_ENV["STREAMREC_CHECKPOINT_KEY"] in rendered.stdout


@needs_compose
def test_compose_configures_streamrec_through_its_settings() -> None:
    """Every STREAMREC_* variable in the stack must name a real settings field."""
    from streamrec.settings import Settings

    result = run("docker-compose", "-f", COMPOSE, "config", env=COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    variables = set(re.findall(r"\b(STREAMREC_[A-Z0-9_]+):", result.stdout))
    assert "STREAMREC_KAFKA__BOOTSTRAP_SERVERS" in variables
    for variable in variables:
        section, _, field = variable.removeprefix("STREAMREC_").lower().partition("__")
        model = Settings.model_fields[section].annotation
        assert field in model.model_fields, variable  # type: ignore[union-attr]


def test_dockerfile_builds_the_package_on_python_311_slim() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in text
    assert re.search(r"pip (wheel|install)[^\n]*\.", text)
    assert 'ENTRYPOINT ["streamrec"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "tests" in ignored


def test_dockerfile_copies_every_file_the_build_reads() -> None:
    """setuptools fails when `readme` or a `license-files` entry is missing from the context."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    build_stage = DOCKERFILE.read_text().split("\nFROM ")[1]  # [0] is the header comment
    copied = {
        source
        for line in build_stage.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert {project["readme"], *project["license-files"], "streamrec"} <= copied, copied
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert not copied & {line.strip() for line in ignore if not line.startswith("#")}


@needs_compose
def test_compose_simulator_feeds_the_deployed_consumer() -> None:
    """The stack's simulator must produce to Kafka for the streamrec instances to learn from,
    not run its own in-process pipeline beside it (it did, silently, until the CLI refused)."""
    import yaml

    from streamrec.cli import build_parser

    result = run("docker-compose", "-f", COMPOSE, "config", env=COMPOSE_ENV)
    assert result.returncode == 0, result.stderr
    command = yaml.safe_load(result.stdout)["services"]["simulator"]["command"]
    args = build_parser().parse_args(command)
    assert (args.transport, args.bootstrap_servers, args.no_consumer) == (
        "kafka",
        "kafka:9092",
        True,
    )


def test_dashboard_does_not_add_up_replicas() -> None:
    """With a learn log every instance counts every event: a metric each replica reports for the
    whole stream must be shown per instance (or max/avg), never summed over instances."""
    checked = 0
    for query in dashboard_queries():
        if not metric_names_in(query.expr) & REPLICATED_METRICS:
            continue
        checked += 1
        assert sums_over_instances(query.expr) == [], (
            f"{query.panel} ({query.ref_id}) adds up instances: {query.expr}"
        )
    assert checked >= len(REPLICATED_METRICS), "the dashboard stopped showing replicated metrics"


def test_sums_over_instances_are_found() -> None:
    """The check above is only as good as this parser."""
    expr = 'sum by (instance, type) (rate(x{a="b)"}[1m])) > 0'
    (agg,) = aggregations(expr)
    assert (agg.op, agg.grouping, agg.labels) == ("sum", "by", {"instance", "type"})
    assert agg.span == (expr.index("(rate"), expr.index(" > 0") - 1)  # the ")" in quotes skipped
    per_instance = [
        'sum by (instance, type) (rate(x{a="b"}[1m]))',
        "sum without (type) (x)",
        "max(x)",
        "sum by (topic) (max by (topic, partition) (x))",
        "avg by (job) (sum by (instance, job) (x))",
    ]
    for expr in per_instance:
        assert sums_over_instances(expr) == [], expr
    summed = [
        "sum(x)",
        "sum(rate(x[1m])) by (instance)",  # written after: not trusted
        "sum without (instance) (x)",
        "sum by (topic) (max by (instance, topic) (x))",
        "sum(x) / max(y)",
        "max(sum by (instance) (x)) + count(y)",
    ]
    for expr in summed:
        assert sums_over_instances(expr), expr


@needs_compose
def test_compose_runs_instances_of_one_group_sharing_one_learn_log() -> None:
    """Several consumers, configured alike but for their instance id: one consumer group, one
    learn log, one checkpoint key (the operator's), the same model settings."""
    from streamrec.settings import Settings

    consumers = consumer_services(rendered_compose())
    assert len(consumers) >= 3, sorted(consumers)
    envs = {name: dict(service["environment"]) for name, service in consumers.items()}
    ids = {name: env.pop("STREAMREC_SERVICE__INSTANCE_ID", None) for name, env in envs.items()}
    assert None not in ids.values() and "" not in ids.values(), ids
    assert len(set(ids.values())) == len(ids), f"instance ids must differ: {ids}"
    first = next(iter(envs.values()))
    for name, env in envs.items():
        assert env == first, f"{name} is configured unlike the others"
    # Set, not left to defaults: the topic must be the one kafka-init creates (next test).
    assert first["STREAMREC_KAFKA__LEARN_LOG_TOPIC"]
    assert first["STREAMREC_KAFKA__GROUP_ID"] == Settings().kafka.group_id
    assert first["STREAMREC_SERVICE__CHECKPOINT_KEY"] == COMPOSE_ENV["STREAMREC_CHECKPOINT_KEY"]
    assert "STREAMREC_KAFKA__TOPICS" not in first  # kafka-init's events topic is the default


@needs_compose
def test_compose_instances_have_their_own_state_and_metrics_port() -> None:
    config = rendered_compose()
    consumers = consumer_services(config)
    volumes, host_ports = {}, {}
    for name, service in consumers.items():
        env = service["environment"]
        state_dir, port = (
            env["STREAMREC_SERVICE__STATE_DIR"],
            int(env["STREAMREC_SERVICE__METRICS_PORT"]),
        )
        mounts = [v for v in service["volumes"] if v.split(":")[1] == state_dir]
        assert len(mounts) == 1, f"{name}: no volume at its state dir {state_dir}"
        source = mounts[0].split(":")[0]
        assert source in config["volumes"], f"{name}: {source} is not a named volume"
        volumes[name] = source
        (mapping,) = service["ports"]
        assert int(mapping["target"]) == port, f"{name} maps a port it does not serve"
        host_ports[name] = int(mapping["published"])
        assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"]), name
    assert len(set(volumes.values())) == len(volumes), f"state volumes must differ: {volumes}"
    assert len(set(host_ports.values())) == len(host_ports), f"ports must differ: {host_ports}"


@needs_compose
def test_kafka_init_creates_the_topics_the_instances_use(tmp_path: Path) -> None:
    """kafka-init's script, run against a fake Kafka: the learn log the instances name, with
    exactly 1 partition and kept forever, and enough event partitions for every instance."""
    from streamrec.settings import Settings

    config = rendered_compose()
    consumers = consumer_services(config)
    env = next(iter(consumers.values()))["environment"]
    init = run_kafka_init(config["services"]["kafka-init"], tmp_path)
    assert init.returncode == 0, init.stderr
    kafka = Settings().kafka
    learn_log = init.topics.get(env["STREAMREC_KAFKA__LEARN_LOG_TOPIC"])
    assert learn_log is not None, f"no learn log among {sorted(init.topics)}"
    assert learn_log["partitions"] == 1
    assert learn_log["config"]["retention.ms"] == "-1"
    assert learn_log["config"].get("retention.bytes", "-1") == "-1"
    assert learn_log["config"].get("cleanup.policy", "delete") == "delete"
    for topic in kafka.topics:
        assert init.topics[topic]["partitions"] >= len(consumers), topic
    assert init.topics[kafka.recommendations_topic]["config"]["cleanup.policy"] == "compact"
    assert kafka.dlq_topic in init.topics
    catalog = init.topics.get(env["STREAMREC_KAFKA__CATALOG_TOPIC"])
    assert catalog is not None and catalog["config"]["cleanup.policy"] == "compact"
    assert set(init.stdout.split()) == set(init.topics)  # the closing --list


@needs_compose
def test_kafka_init_repairs_the_retention_of_an_existing_learn_log(tmp_path: Path) -> None:
    """--if-not-exists keeps an existing topic as it is; a learn log with a retention would lose
    the events a new instance needs, so kafka-init sets it to keep everything."""
    config = rendered_compose()
    topic = next(iter(consumer_services(config).values()))["environment"][
        "STREAMREC_KAFKA__LEARN_LOG_TOPIC"
    ]
    existing = {topic: {"partitions": 1, "config": {"retention.ms": "604800000"}}}
    init = run_kafka_init(config["services"]["kafka-init"], tmp_path, existing)
    assert init.returncode == 0, init.stderr
    assert init.topics[topic]["config"]["retention.ms"] == "-1"
    assert init.topics[topic]["config"]["cleanup.policy"] == "delete"


@needs_compose
def test_kafka_init_refuses_a_learn_log_of_several_partitions(tmp_path: Path) -> None:
    config = rendered_compose()
    topic = next(iter(consumer_services(config).values()))["environment"][
        "STREAMREC_KAFKA__LEARN_LOG_TOPIC"
    ]
    existing = {topic: {"partitions": 3, "config": {}}}
    init = run_kafka_init(config["services"]["kafka-init"], tmp_path, existing)
    assert init.returncode != 0
    assert f"{topic} has 3 partitions" in init.stderr


@needs_compose
def test_prometheus_scrapes_every_instance() -> None:
    import yaml

    config = rendered_compose()
    consumers = consumer_services(config)
    expected = {
        f"{name}:{service['environment']['STREAMREC_SERVICE__METRICS_PORT']}"
        for name, service in consumers.items()
    }
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "streamrec"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == expected
    assert set(config["services"]["prometheus"]["depends_on"]) >= set(consumers)
    assert set(config["services"]["simulator"]["depends_on"]) >= set(consumers)
