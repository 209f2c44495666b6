"""Where the deployment files are, and how to get the PromQL out of them (shared by tests).

Grafana variables are not PromQL: `grafana_to_promql` substitutes them the way Grafana would at
query time, so Prometheus (or promtool) can check the very expressions users run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamrec.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamrec.yml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

METRIC_NAME = re.compile(r"\b(streamrec_[a-z0-9_]+|process_[a-z0-9_]+)\b")

REPLICATED_METRICS = frozenset(
    {
        "streamrec_events_consumed_total",
        "streamrec_events_learned_total",
        "streamrec_duplicates_total",
        "streamrec_consumer_lag",
        "streamrec_model_users",
        "streamrec_model_items",
        "streamrec_bandit_pending_decisions",
        "streamrec_bandit_expired_decisions_total",
        "streamrec_bandit_decisions_total",
        "streamrec_bandit_rewards_total",
        "streamrec_dead_letters_total",
    }
)
"""Metrics every instance reports for the whole stream when it replicates the learn log.

With `kafka.learn_log_topic` every instance learns every event, so these count each event once
per instance: a `sum` over instances of them counts each event three times with three instances.
Every per-batch figure is the replica's view, dead letters and bandit decisions and rewards too
(so a CTR or a dead-letter rate is right per instance); only what leaves an instance (published
lists, dead letters sent, forwarded records) is counted by the one instance that sends it.
"""


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[PanelQuery]:
    """Every target expression of every panel, including panels nested in collapsed rows."""
    dashboard = dashboard if dashboard is not None else load_dashboard()
    queries = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append(PanelQuery(panel["title"], target["refId"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return queries


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    """Substitute the dashboard's Grafana variables; fails loudly on one it does not know."""
    promql = (
        expr.replace("${__rate_interval}", rate_interval)
        .replace("$__rate_interval", rate_interval)
        .replace('"$instance"', '".+"')
    )
    if "$" in promql:
        raise AssertionError(f"unknown Grafana variable in {expr!r}; teach grafana_to_promql")
    return promql


def alert_names() -> list[str]:
    """`alert:` names in alerts.yml, read without a YAML parser (the test env has none)."""
    return re.findall(r"^\s*- alert:\s*(\S+)", ALERTS.read_text(), flags=re.MULTILINE)


def metric_names_in(text: str) -> set[str]:
    """Metric names a PromQL text (or whole file) refers to, with histogram suffixes removed."""
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in METRIC_NAME.findall(text)}


def which(binary: str) -> str | None:
    """Path of `binary`, or None (its tests then skip), except where CI says tools are required
    (`STREAMREC_REQUIRE_TOOLS=1`, set by `.ci/run`): there a missing tool fails the run."""
    path = shutil.which(binary)
    if path is None and os.environ.get("STREAMREC_REQUIRE_TOOLS") == "1":
        raise RuntimeError(f"{binary} is required here (STREAMREC_REQUIRE_TOOLS=1) but missing")
    return path


# -- PromQL aggregations --------------------------------------------------------------------

AGGREGATION = re.compile(
    r"\b(sum|count|avg|min|max|group|stddev|stdvar|topk|bottomk|quantile)\s*"
    r"(?:(by|without)\s*\(([^)]*)\)\s*)?\("
)


@dataclass(frozen=True)
class Aggregation:
    op: str
    grouping: str | None
    """"by", "without", or None (also for one written `op (...) by (...)`: not trusted)."""
    labels: frozenset[str]
    span: tuple[int, int]
    """Where the aggregated expression is in the query: its parentheses, both included."""

    def keeps(self, label: str) -> bool:
        return (self.grouping == "by" and label in self.labels) or (
            self.grouping == "without" and label not in self.labels
        )

    def inside(self, other: Aggregation) -> bool:
        return other.span[0] < self.span[0] and self.span[1] < other.span[1]


def aggregations(expr: str) -> list[Aggregation]:
    """Every aggregation in a PromQL expression, outermost first where they nest."""
    found = []
    for match in AGGREGATION.finditer(expr):
        start = match.end() - 1  # its "("
        depth, quoted, end = 0, False, len(expr)
        for i in range(start, len(expr)):
            char = expr[i]
            if char == '"' and expr[i - 1] != "\\":
                quoted = not quoted
            elif not quoted and char == "(":
                depth += 1
            elif not quoted and char == ")":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        labels = frozenset(label.strip() for label in (match.group(3) or "").split(",")) - {""}
        found.append(Aggregation(match.group(1), match.group(2), labels, (start, end)))
    return found


def sums_over_instances(expr: str) -> list[Aggregation]:
    """The sums and counts in `expr` that add up instances: they keep no `instance` label, and
    nothing inside them collapsed the instances first with max, min or avg (as in
    `sum by (topic) (max by (topic, partition) (lag))`: each partition once, whoever reports it)."""
    found = aggregations(expr)
    return [
        outer
        for outer in found
        if outer.op in ("sum", "count")
        and not outer.keeps("instance")
        and not any(
            inner.op in ("max", "min", "avg")
            and inner.inside(outer)
            and not inner.keeps("instance")
            for inner in found
        )
    ]


# -- docker-compose -------------------------------------------------------------------------


def consumer_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of a rendered compose config that run the consumer (`streamrec run`)."""
    return {
        name: service
        for name, service in config["services"].items()
        if service.get("command") == ["run"]
    }


FAKE_KAFKA_TOOL = r"""#!{python}
# A stand-in for Kafka's kafka-topics.sh and kafka-configs.sh: keeps topics in a JSON file, and
# prints --describe the way Kafka 3.9 does (a topic line, then one line per partition).
import json, sys
from pathlib import Path

state_path = Path({state!r})
topics = json.loads(state_path.read_text())
args = sys.argv[1:]

def value(flag, default=None):
    return args[args.index(flag) + 1] if flag in args else default

def values(flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]

if value("--bootstrap-server") != "kafka:9092":
    sys.exit("no --bootstrap-server kafka:9092: " + " ".join(args))
tool = Path(sys.argv[0]).name
if tool == "kafka-topics.sh" and "--create" in args:
    name = value("--topic")
    if name in topics:
        if "--if-not-exists" not in args:
            sys.exit("Topic '" + name + "' already exists.")
    else:
        config = dict(c.split("=", 1) for c in values("--config"))
        topics[name] = {{"partitions": int(value("--partitions", "1")), "config": config}}
elif tool == "kafka-topics.sh" and "--describe" in args:
    name = value("--topic")
    if name not in topics:
        sys.exit("Topic '" + name + "' does not exist as expected")
    topic = topics[name]
    configs = ",".join(k + "=" + v for k, v in topic["config"].items())
    print("Topic: " + name + "\tTopicId: AAAAAAAAAAAAAAAAAAAAAA\tPartitionCount: "
          + str(topic["partitions"]) + "\tReplicationFactor: 1\tConfigs: " + configs)
    for p in range(topic["partitions"]):
        print("\tTopic: " + name + "\tPartition: " + str(p)
              + "\tLeader: 1\tReplicas: 1\tIsr: 1\tElr: \tLastKnownElr: ")
elif tool == "kafka-topics.sh" and "--list" in args:
    print("\n".join(sorted(topics)))
elif tool == "kafka-configs.sh" and "--alter" in args and value("--entity-type") == "topics":
    name = value("--entity-name")
    if name not in topics:
        sys.exit("Topic " + name + " does not exist")
    for change in values("--add-config"):
        topics[name]["config"].update(c.split("=", 1) for c in change.split(","))
else:
    sys.exit("the fake Kafka does not know: " + tool + " " + " ".join(args))
state_path.write_text(json.dumps(topics))
"""


@dataclass
class InitRun:
    returncode: int
    stdout: str
    stderr: str
    topics: dict[str, dict[str, Any]]
    """Topic name -> {"partitions": n, "config": {key: value}} after the run."""


def run_kafka_init(
    service: dict[str, Any], workdir: Path, existing: dict[str, dict[str, Any]] | None = None
) -> InitRun:
    """Run the kafka-init service's script, as its container would, against a fake Kafka.

    `service` is kafka-init from the rendered compose config: its entrypoint runs its command
    with its environment, compose's `$$` escapes become `$`, and /opt/kafka/bin/ is a directory of
    fake tools keeping the topics in a file, starting from `existing`.
    """
    bin_dir = workdir / "bin"
    bin_dir.mkdir(parents=True)
    state = workdir / "topics.json"
    state.write_text(json.dumps(existing or {}))
    for tool in ("kafka-topics.sh", "kafka-configs.sh"):
        path = bin_dir / tool
        path.write_text(FAKE_KAFKA_TOOL.format(python=sys.executable, state=str(state)))
        path.chmod(0o755)
    (script,) = service["command"]
    script = script.replace("$$", "$").replace("/opt/kafka/bin/", f"{bin_dir}/")
    assert "/opt/kafka" not in script, "kafka-init uses a Kafka tool outside /opt/kafka/bin/"
    env = {"PATH": os.environ["PATH"], **service.get("environment", {})}
    result = subprocess.run(
        [*service["entrypoint"], script], capture_output=True, text=True, timeout=60, env=env
    )
    return InitRun(result.returncode, result.stdout, result.stderr, json.loads(state.read_text()))
