"""Tenant quotas through the real collector (issue 22, api/quotas.py): events per second per tenant (429 with
Retry-After, another tenant untouched), profiles and items past the quota refused by index and dead-lettered, the
refusals counted with reason "quota" and the tenant; events of existing profiles and items still taken.

The caller's tenant: see tests/integration/tenant_callers.py. The profile and item quotas are tested on the tenant
``default``, whose keyspace is the same before and after keys carry the tenant."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from core import metrics
from core.settings import Settings
from tests.integration.helpers import app_client, apply, now_ms, view
from tests.integration.tenant_callers import tenant, tenant_keys_for
from tests.integration.test_bounded_input import read_dead_letters

pytestmark = pytest.mark.integration


def refused(tenant_name: str) -> float:
    return float(metrics.COLLECTOR_REFUSED.labels("quota", tenant_name)._value.get())


def item(item_id: str) -> dict[str, Any]:
    return {"type": "item", "event_id": uuid.uuid4().hex, "timestamp": now_ms() - 60_000, "item_id": item_id,
            "title": item_id, "category": "a", "price": 10.0}  # fmt: skip


async def test_a_tenant_over_its_events_per_second_gets_429_and_another_tenant_does_not(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "shop-a").mkdir()
    (tmp_path / "shop-a" / "tenant.yaml").write_text("version: 1\nquotas:\n  events_per_s: 50\n")
    configured = settings.model_copy(update={"tenants_dir": str(tmp_path), "tenants": "shop-a,shop-b"})
    before = refused("shop-a")
    async with app_client(configured) as (app, client):
        tenant_keys_for(app)
        batch = [view(f"c-{i}", "sku-1") for i in range(50)]
        first = await client.post("/v1/events", json=batch, headers=tenant("shop-a"))
        assert first.status_code == 202 and first.json()["accepted"] == 50
        over = await client.post("/v1/events", json=batch[:20], headers=tenant("shop-a"))
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        assert "quota of 50 events per second of tenant 'shop-a'" in over.json()["detail"]
        other = await client.post("/v1/events", json=batch + batch[:20], headers=tenant("shop-b"))
        assert other.status_code == 202 and other.json()["accepted"] == 70
        text = (await client.get("/metrics")).text
    assert refused("shop-a") - before == 20
    assert 'ecrm_collector_refused_total{reason="quota",tenant="shop-b"} 0.0' in text


async def test_new_profiles_and_items_past_the_quota_are_refused_by_index_and_dead_lettered(
    settings: Settings,
) -> None:
    await apply(settings, [view("known-1", "sku-1"), view("known-2", "sku-1"), item("sku-1")])
    configured = settings.model_copy(
        update={"tenant_profiles_max": 2, "tenant_items_max": 1, "tenant_quota_check_s": 60.0}
    )
    before = refused("default")
    async with app_client(configured) as (app, client):
        tenant_keys_for(app)
        mixed = [view("known-1", "sku-2"), view("newbie", "sku-2"), item("sku-1"), item("sku-2")]
        resp = await client.post("/v1/events", json=mixed, headers=tenant("default"))
        body = resp.json()
        assert resp.status_code == 202 and body["accepted"] == 2, body
        assert [(e["index"], e["field"], e["status"]) for e in body["errors"]] == [
            (1, "customer_id", 429),
            (3, "item_id", 429),
        ]
        assert "tenant 'default' holds 2 profiles, its quota is 2" in body["errors"][0]["reason"]
        assert "holds 1 catalogue items, its quota is 1" in body["errors"][1]["reason"]
        only_new = await client.post("/v1/events", json=[view("newbie-2", "sku-1")], headers=tenant("default"))
        assert only_new.status_code == 429 and only_new.headers["retry-after"] == "60"
        text = (await client.get("/metrics")).text
    assert refused("default") - before == 3
    assert 'ecrm_tenant_usage{kind="profiles",tenant="default"} 2.0' in text
    letters = read_dead_letters(configured, 3)
    assert sorted((d["stage"], d["errors"][0]["field"], d["key"]) for d in letters) == [
        ("collector", "customer_id", "newbie"),
        ("collector", "customer_id", "newbie-2"),
        ("collector", "item_id", "sku-2"),
    ]


async def test_under_the_quota_every_event_is_taken(settings: Settings) -> None:
    await apply(settings, [view("known-1", "sku-1")])
    configured = settings.model_copy(update={"tenant_profiles_max": 3, "tenant_quota_check_s": 60.0})
    async with app_client(configured) as (app, client):
        tenant_keys_for(app)
        batch = [view(f"new-{i}", "sku-1") for i in range(5)]  # the count read (1) is under 3: no lookup
        resp = await client.post("/v1/events", json=batch, headers=tenant("default"))
        assert resp.status_code == 202 and resp.json()["accepted"] == 5
