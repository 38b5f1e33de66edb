"""Metrics with a ``tenant`` label (core/metrics.py): bounded by the configured tenants (any other name is
``other``), created at 0 for each; the dashboard's ``tenant`` variable filters every panel of a tenant-labelled
metric."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from core import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "ecrm.json"
TENANT_LABELLED = (
    "ecrm_events_collected_total",
    "ecrm_events_rejected_total",
    "ecrm_collector_refused_total",
    "ecrm_api_request_seconds",
    "ecrm_training_runs_total",
    "ecrm_tenant_usage",
    "ecrm_training_overdue_seconds",
    "ecrm_model_info",
    "ecrm_model_age_seconds",
)


def test_only_configured_tenants_label_metrics_and_each_starts_at_zero() -> None:
    labels = metrics.host_tenants(["shop-a", "shop-b"])
    try:
        assert labels == ("default", "shop-a", "shop-b", "other")
        assert metrics.tenant_label("shop-a") == "shop-a"
        assert metrics.tenant_label("shop-zz") == "other" == metrics.tenant_label("../x")
        api = generate_latest(metrics.API_REGISTRY).decode()
        worker = generate_latest(metrics.WORKER_REGISTRY).decode()
        assert 'ecrm_collector_refused_total{reason="quota",tenant="shop-b"} 0.0' in api
        assert 'ecrm_events_collected_total{tenant="other",type="purchase"} 0.0' in api
        assert 'ecrm_training_runs_total{outcome="failed",tenant="shop-a"} 0.0' in worker
    finally:
        metrics.host_tenants([])
    assert metrics.tenant_label("shop-a") == "other"


def test_the_dashboard_has_a_tenant_variable_used_by_every_tenant_labelled_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["tenant"]["includeAll"] and variables["tenant"]["multi"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    tenant_exprs = [e for e in exprs if any(name in e for name in TENANT_LABELLED)]
    assert len(tenant_exprs) >= 12
    for expr in tenant_exprs:
        for name, matchers in re.findall(r"(ecrm_[a-z_]+)\{([^}]*)\}", expr):
            if any(name.startswith(m) for m in TENANT_LABELLED):
                assert 'tenant=~"$tenant"' in matchers, expr
