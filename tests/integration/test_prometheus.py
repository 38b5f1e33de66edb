"""The dashboard and the alert rules against a real Prometheus (Debian's, installed by `make` when missing).

`ecrm up`'s stack (``runtime.local.start_stack``: a worker process and an API process, on the session's embedded
broker and Redis) is scraped every second by Prometheus on loopback. The test drives traffic (valid events, 10
malformed messages, recommendation reads, one training) and asserts that the dashboard's own dead-letter, lag,
request and model expressions return the expected non-zero values, and that the rule file loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.kafka import make_producer
from core.settings import Settings
from runtime.embedded import die_with_parent, free_port
from runtime.local import LocalStack, settings_env, start_stack
from tests.integration.helpers import view
from trainer.training import train_once

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "ecrm.json"
DEADLINE_S = 90.0


def panel_expr(title: str, ref: str = "A") -> str:
    """A dashboard panel's expression, with Grafana's rate interval as a fixed window and every tenant (the
    ``tenant`` variable's "All")."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    panel = next(p for p in panels if p["title"] == title)
    expr: str = next(t["expr"] for t in panel["targets"] if t["refId"] == ref)
    return expr.replace("$__rate_interval", "30s").replace('tenant=~"$tenant"', 'tenant=~".*"')


@pytest.fixture()
def stack(settings: Settings) -> Iterator[LocalStack]:
    custom = settings.model_copy(
        update={"api_port": free_port(), "worker_metrics_port": free_port(), "lag_check_s": 1.0}
    )
    stack = start_stack(custom, lambda _: None, env=settings_env(custom))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture()
def prometheus(stack: LocalStack) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary is not None, "Prometheus is missing: `make prometheus` installs Debian's package"
    s = stack.settings
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ecrm-prom-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(REPO / "deploy" / "alerts.yml")],
                    "scrape_configs": [
                        {"job_name": "ecrm-api", "static_configs": [{"targets": [f"127.0.0.1:{s.api_port}"]}]},
                        {
                            "job_name": "ecrm-worker",
                            "static_configs": [{"targets": [f"127.0.0.1:{s.worker_metrics_port}"]}],
                        },
                    ],
                }
            )
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            until(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, "Prometheus ready")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def until(predicate: Any, what: Any) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {DEADLINE_S:.0f}s: {what() if callable(what) else what}")


def query(url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", body
    return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


def nonzero(url: str, expr: str, **labels: str) -> bool:
    return any(v > 0 and labels.items() <= m.items() for m, v in query(url, expr))


def test_the_dashboard_shows_dead_letters_lag_requests_and_the_model(stack: LocalStack, prometheus: str) -> None:
    s = stack.settings
    api = f"http://127.0.0.1:{s.api_port}"
    # both roles scraped before the traffic: a counter's rise is seen only after its first sample
    until(lambda: len([v for _, v in query(prometheus, 'up{job=~"ecrm-.*"} == 1')]) == 2, "both roles scraped")
    events = [view(f"c{i % 20}", f"sku-{i % 15}") for i in range(200)]
    assert httpx.post(f"{api}/v1/events", json=events, timeout=10).status_code == 202
    producer = make_producer(s)
    for k in range(10):
        producer.send(s.events_topic, key=b"bad", value=b"{not json %d" % k)
    producer.flush(10)
    producer.close()

    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) == 14

    dead = panel_expr("Dead letters by type")
    until(
        lambda: sum(v for _, v in query(prometheus, dead.replace("30s", "2m"))) >= 10,
        lambda: f"10 dead letters: {query(prometheus, 'up')} {query(prometheus, dead)}",
    )
    until(lambda: nonzero(prometheus, panel_expr("Events processed / s by type"), type="product_view"), "processed")
    until(lambda: nonzero(prometheus, panel_expr("Event-to-profile lag (live events)", "B")), "live lag p99")
    lag = panel_expr("Consumer lag by partition")
    until(lambda: len(query(prometheus, lag)) == s.topic_partitions, "consumer lag of each partition")
    until(
        lambda: nonzero(prometheus, panel_expr("Events collected / s (broker acknowledged) and rejected")), "collected"
    )

    def read_and(expr: str, **labels: str) -> bool:  # live traffic: a request per poll
        assert httpx.get(f"{api}/v1/customers/c1/recommendations", timeout=5).status_code == 200
        return nonzero(prometheus, expr, **labels)

    until(lambda: read_and(panel_expr("Requests / s by status"), status="200"), "requests by status")
    until(lambda: read_and(panel_expr("Recommendations / s by strategy")), "recommendations")

    until(lambda: train_once(s).version is not None, "a training")
    until(lambda: nonzero(prometheus, panel_expr("Model version served")), "model version served")
    until(lambda: nonzero(prometheus, panel_expr("Model age")), "model age")
    # the worker's metrics are not the API's: no cross-role series
    assert query(prometheus, 'ecrm_model_age_seconds{job="ecrm-worker"}') == []
    assert query(prometheus, 'ecrm_analytics_model_fitted{job="ecrm-api"}') == []
