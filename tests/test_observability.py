"""The Grafana dashboard and the alert rules of ``scripts/observability/``.

Both are loaded as Grafana and Prometheus would, and every metric they query must
be one a real scrape serves: a process that counts one of everything
(``eda/metrics.py``'s counting functions, into a folder of its own) and scrapes
itself with the store's gauges read from the suite's Redis. (``promtool check
rules`` checks the rules' PromQL further, where Prometheus is installed: the suite
does not need it, so that a machine with only Python runs it.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisServer
from tests.workers import ROOT

FOLDER = ROOT / "scripts" / "observability"
DASHBOARD = FOLDER / "grafana-dashboard.json"
ALERTS = FOLDER / "alerts.yaml"

#: Counts one of each metric, then prints a scrape with the store's gauges.
SCRAPE = """
import sys
from datetime import UTC, datetime
from pathlib import Path

from eda import metrics
from eda.core import Core
from eda.settings import load

metrics.enable(Path(sys.argv[1]))
metrics.webhook("github", 202)
metrics.event_stored("issue.opened")
metrics.event_stored("issue.opened", blocked=True)
metrics.attempt_ended("h", "retry", final=False)
metrics.attempt_ended("h", "dead", final=True)
metrics.dead_letters("retried")
metrics.handler_started("h", datetime.now(UTC))
metrics.agent_run({
    "agent": "a", "model": "m", "outcome": "completed", "turns": 1,
    "usage": {"input_tokens": 5}, "tool_calls": [{"name": "t"}],
})
sys.stdout.write(metrics.exposition(Core(load()))[0].decode())
"""

NAME = re.compile(r"\beda_[a-z_]+\b")


@pytest.fixture(scope="module")
def served(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every family and sample name of a real scrape."""
    folder = tmp_path_factory.mktemp("observability")
    answer = subprocess.run(
        [sys.executable, "-c", SCRAPE, str(folder / "metrics")],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_server.url,
            "EDA_PREFIX": "observability",
            "EDA_DATA_DIR": str(folder / "data"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    names: set[str] = set()
    for family in text_string_to_metric_families(answer.stdout):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    assert "eda_store_up" in names and "eda_agent_tokens_total" in names, names
    return names


def queried(expressions: list[str]) -> set[str]:
    return {name for expression in expressions for name in NAME.findall(expression)}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_the_dashboard_is_grafana_json_over_metrics_a_scrape_serves(served: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    every = panels(dashboard)
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    expressions: list[str] = []
    for panel in every:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs)), panel["title"]
        expressions.extend(target["expr"] for target in panel["targets"])
    names = queried(expressions)
    assert names - served == set(), f"{DASHBOARD.name} queries metrics no scrape serves"
    # Rates, latencies, dead letters and agent tokens are all on it.
    for name in (
        "eda_webhooks_received_total",
        "eda_delivery_start_latency_seconds_bucket",
        "eda_dead_letters_held",
        "eda_agent_tokens_total",
    ):
        assert name in names


def test_the_alert_rules_are_prometheus_rules_over_metrics_a_scrape_serves(
    served: set[str],
) -> None:
    rules = [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]
    alerts = {rule["alert"] for rule in rules}
    for wanted in (
        "EdaDeadLettersGrowing",
        "EdaRelayQueueAging",
        "EdaDeliveriesStuck",
        "EdaAgentBudgetNearlySpent",
    ):
        assert wanted in alerts
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    names = queried([str(rule["expr"]) for rule in rules])
    assert names and names - served == set(), f"{ALERTS.name} queries metrics no scrape serves"
