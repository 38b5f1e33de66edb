"""The alert rules pass their promtool unit tests, the Prometheus config loads them, and every expression of the
rules and of the dashboard names only metrics the code defines, each filtered to the role (``job``) exposing it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from core import metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
JOBS = {"ecrm-api": metrics.API_REGISTRY, "ecrm-worker": metrics.WORKER_REGISTRY}
SELECTOR = re.compile(r"\b((?:ecrm|process)_[a-z0-9_]+)\b(\{[^}]*\})?")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, check=False)


def names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose (``_total``, ``_bucket`` ... included; the process collector's,
    which describes nothing, from what it collects)."""
    collected = {sample.name for family in registry.collect() for sample in family.samples}
    return set(registry._names_to_collectors) | collected


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def panel_exprs() -> list[str]:
    dashboard: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboards" / "ecrm.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def problems(expr: str) -> list[str]:
    """What is wrong with an expression: an unknown metric, a metric without a ``job`` filter, or a ``job`` that
    does not expose it."""
    found = []
    for name, matchers in SELECTOR.findall(expr):
        job = re.search(r'job="([^"]+)"', matchers or "")
        if job is None:
            found.append(f"{name} without a job filter")
        elif job.group(1) not in JOBS:
            found.append(f"{name}: unknown job {job.group(1)}")
        elif name not in names(JOBS[job.group(1)]):
            found.append(f"{name} is not exposed by {job.group(1)}")
    return found


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(DEPLOY / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_prometheus_config_loads_the_rules() -> None:
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "14 rules found" in result.stdout


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_expression_names_metrics_of_the_role_it_filters(source: str) -> None:
    exprs = rule_exprs() if source == "rules" else panel_exprs()
    assert len(exprs) > 10
    assert {expr: problems(expr) for expr in exprs if problems(expr)} == {}


def test_the_check_catches_a_wrong_role_an_unknown_metric_and_a_missing_filter() -> None:
    assert problems('ecrm_analytics_model_fitted{job="ecrm-api"}') == [
        "ecrm_analytics_model_fitted is not exposed by ecrm-api"
    ]
    assert problems('rate(ecrm_nothing_total{job="ecrm-worker"}[5m])') == [
        "ecrm_nothing_total is not exposed by ecrm-worker"
    ]
    assert problems("max(ecrm_model_age_seconds)") == ["ecrm_model_age_seconds without a job filter"]
    assert problems('max(ecrm_model_age_seconds{job="ecrm-api"} > 0)') == []


def test_every_alert_has_a_summary_a_runbook_and_a_unit_test() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    tests = (DEPLOY / "alerts.test.yml").read_text()
    operations = (REPO / "docs" / "operations.md").read_text()
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert rule["annotations"]["summary"] and "docs/operations.md#" in rule["annotations"]["description"]
            assert f"alertname: {name}" in tests
            assert f"### {name}" in operations
