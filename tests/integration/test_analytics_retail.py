"""The RFM of the real Online Retail sample, imported through Kafka and the worker, equals an independent
computation over the CSV (plain Python here), score for score and segment for segment."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from analytics.refresh import Outcome, Refresher
from analytics.rules_file import DEFAULT_RULES_PATH, RulesSource
from analytics.settings import AnalyticsSettings
from analytics.store import AnalyticsStore
from core.kafka import make_producer
from core.keyspace import Keys, customer_pid
from core.redis import connect
from core.settings import Settings
from ecrm.cli import app
from ecrm.commands import import_orders
from profiles import layout
from tests.conftest import wait_for
from tests.integration.helpers import api_client, sync_redis
from tests.integration.test_analytics_api import expected_segment

pytestmark = pytest.mark.integration
NON_PRODUCT = {"POST", "DOT", "C2", "M", "D", "S", "B", "PADS", "CRUK", "AMAZONFEE", "BANK CHARGES"}
DAY = 86_400_000


@dataclass
class Customer:
    last_ms: int = 0
    orders: int = 0
    revenue: float = 0.0


def from_csv(path: Path) -> dict[str, Customer]:
    """Orders per customer: invoices with a customer, not cancelled, positive quantities, product lines only."""
    invoices: dict[str, tuple[str, int, float]] = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            invoice, customer = row["InvoiceNo"].strip(), row["CustomerID"].strip().removesuffix(".0")
            quantity, price = int(float(row["Quantity"])), float(row["UnitPrice"])
            if invoice.upper().startswith("C") or quantity <= 0 or not customer or price < 0:
                continue
            if row["StockCode"].strip().upper() in NON_PRODUCT:
                continue
            when = datetime.strptime(row["InvoiceDate"].strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            ms = int(when.timestamp() * 1000)
            owner, first_ms, revenue = invoices.get(invoice, (customer, ms, 0.0))
            if owner != customer:
                continue  # an invoice belongs to one customer
            invoices[invoice] = (owner, min(first_ms, ms), revenue + quantity * price)
    customers: dict[str, Customer] = {}
    for owner, ms, revenue in invoices.values():
        c = customers.setdefault(owner, Customer())
        c.last_ms, c.orders, c.revenue = max(c.last_ms, ms), c.orders + 1, c.revenue + revenue
    return customers


def quintile_scores(values: dict[str, float]) -> dict[str, int]:
    ordered = sorted(values.values())
    cuts = []
    for q in (0.2, 0.4, 0.6, 0.8):
        h = (len(ordered) - 1) * q
        lo = int(h)
        hi = min(lo + 1, len(ordered) - 1)
        cuts.append(ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo]))
    return {k: 1 + sum(v > c for c in cuts) for k, v in values.items()}


def expected_rfm(customers: dict[str, Customer]) -> dict[str, tuple[int, int, int]]:
    r = quintile_scores({k: float(c.last_ms) for k, c in customers.items()})
    f = quintile_scores({k: float(c.orders) for k, c in customers.items()})
    m = quintile_scores({k: round(c.revenue, 6) for k, c in customers.items()})
    return {k: (r[k], f[k], m[k]) for k in customers}


@pytest.fixture()
def imported(settings: Settings, worker: Callable[[], Any], datasets: Path, tmp_path: Path, monkeypatch: Any) -> None:
    """The CSV imported with ``ecrm import-orders`` and applied by a real worker."""
    monkeypatch.setattr(import_orders, "get_settings", lambda: settings)
    csv_path = datasets / "online_retail_sample.csv"
    result = CliRunner().invoke(
        app, ["import-orders", str(csv_path), "--rejects", str(tmp_path / "r"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    worker()
    customers = from_csv(csv_path)
    total = sum(c.orders for c in customers.values())
    r = sync_redis(settings)

    def applied() -> int:
        with r.pipeline(transaction=False) as pipe:
            for customer in customers:
                pipe.hget(Keys(settings.key_prefix).profile(customer_pid(customer)), layout.ORDERS)
            return sum(int(v or 0) for v in pipe.execute())

    wait_for(lambda: applied() >= total, timeout=240, interval=1.0, what=f"the worker to apply {total} orders")


async def test_rfm_of_the_retail_sample_equals_an_independent_computation(
    settings: Settings, imported: None, datasets: Path
) -> None:
    customers = from_csv(datasets / "online_retail_sample.csv")
    assert len(customers) > 3000 and sum(c.orders for c in customers.values()) == 11_476  # as the importer counts
    expected = expected_rfm(customers)
    end_of_data = max(c.last_ms for c in customers.values()) + DAY
    cfg = AnalyticsSettings(segments_file=DEFAULT_RULES_PATH)
    store = AnalyticsStore(connect(settings), settings.key_prefix)
    refresher = Refresher(store, cfg, RulesSource(DEFAULT_RULES_PATH), clock=lambda: end_of_data)
    try:
        result = await refresher.refresh(force=True)
    finally:
        await store.client.aclose()
    assert result.outcome is Outcome.REFRESHED and result.state is not None
    assert result.state.customers_scored == len(customers)

    async with api_client(settings) as client:
        overview = (await client.get("/v1/segments")).json()
        sizes = {s["name"]: s["customers"] for s in overview["segments"]}
        want = Counter(expected_segment(*scores) for scores in expected.values())
        assert {k: v for k, v in sizes.items() if k != "Prospects"} == {
            k: want.get(k, 0) for k in sizes if k != "Prospects"
        }
        revenue = sum(c.revenue for c in customers.values())
        assert sum(s["revenue"] for s in overview["segments"]) == pytest.approx(revenue, abs=0.5)

        exported: dict[str, dict[str, Any]] = {}
        for name in sizes:
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
                page = (await client.get(f"/v1/segments/{name}/customers", params=params)).json()
                exported.update({row["customer_id"]: row for row in page["customers"] if row["customer_id"]})
                if (cursor := page["next_cursor"]) is None:
                    break
        assert set(exported) == set(customers)
        for customer, (r, f, m) in expected.items():
            row = exported[customer]
            assert (row["r_score"], row["f_score"], row["m_score"]) == (r, f, m), customer
            assert row["segment"] == expected_segment(r, f, m), customer
            assert row["orders"] == customers[customer].orders
            assert row["revenue"] == pytest.approx(customers[customer].revenue, abs=0.01)

        for customer in sorted(customers)[::25]:  # the live profile scores agree as well
            rfm = (await client.get(f"/v1/customers/{customer}/profile")).json()["rfm"]
            assert (rfm["r_score"], rfm["f_score"], rfm["m_score"]) == expected[customer], customer

    model = overview["model"]
    assert model["error"] is None, model
    assert all(0 <= row["churn_risk"] <= 1 and row["lifetime_value"] >= 0 for row in exported.values())


def test_importing_the_same_file_again_changes_nothing(
    settings: Settings, imported: None, datasets: Path, tmp_path: Path
) -> None:
    """A second ``ecrm import-orders`` of the same CSV reaches the worker and leaves every profile as it was."""
    r = sync_redis(settings)
    k = Keys(settings.key_prefix)
    keys = [
        key for key in r.scan_iter(match=k.profile_pattern(), count=1000) if str(k.profile_id(key)).startswith("c:")
    ]
    before = {key: r.hgetall(key) for key in keys}
    csv_path = str(datasets / "online_retail_sample.csv")
    result = CliRunner().invoke(app, ["import-orders", csv_path, "--rejects", str(tmp_path / "r2"), "--no-progress"])
    assert result.exit_code == 0, result.output
    # one sentinel per partition: once all are applied, everything produced before them was read too
    producer = make_producer(settings)
    for partition in range(settings.topic_partitions):
        # (a time in the past: the schema accepts no time more than ECRM_MAX_FUTURE_S ahead)
        sentinel = {"type": "page_view", "event_id": f"sentinel-{partition}", "customer_id": f"sentinel-{partition}",
                    "timestamp": 1_790_000_000_000}  # fmt: skip
        producer.send(settings.events_topic, value=orjson.dumps(sentinel), partition=partition)
    producer.flush()
    producer.close()
    wait_for(
        lambda: all(r.exists(k.profile(customer_pid(f"sentinel-{p}"))) for p in range(settings.topic_partitions)),
        timeout=240,
        interval=1.0,
        what="the worker to read the second import",
    )
    assert {key: r.hgetall(key) for key in keys} == before
