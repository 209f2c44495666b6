"""Where the deployment files are, and how to get the PromQL out of them (shared by tests).

Grafana variables are not PromQL: `grafana_to_promql` substitutes them the way Grafana would at
query time, so Prometheus (or promtool) can check the very expressions users run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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
