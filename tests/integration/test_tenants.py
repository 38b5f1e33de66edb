"""Two shops on one engine (issue 22), through the worker's batch processor and the real app: they use the same
customer and item ids, and no endpoint shows one shop what the other did (profile, recommendations, popular and
trending, similar items, segments and their export, the served model, campaign counters, erasure); a key of one shop
gets 404 for a customer only the other has, exactly as for an unknown one; erasure in one shop leaves the other's
customer of the same id; events naming an unknown or invalid tenant are dead-lettered, saying why; a batch mixing
shops is applied per shop and a redelivery of it changes nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from analytics.refresh import make_refresher
from analytics.settings import AnalyticsSettings
from core.kafka import tenant_key
from core.keyspace import Keys
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.store import ProfileStore
from runtime.local import settings_env
from stream.processing import BatchProcessor, Envelope, RawMessage
from tests.integration.helpers import app_client, now_ms, purchase, view
from tests.integration.test_serving import demo_events
from trainer.training import train_once

pytestmark = pytest.mark.integration

SECRETS = {
    ("shop-a", "admin"): "shop-a-admin-" + "a" * 20,
    ("shop-a", "collect"): "shop-a-collect-" + "c" * 20,
    ("shop-b", "admin"): "shop-b-admin-" + "b" * 20,
    ("shop-b", "collect"): "shop-b-collect-" + "d" * 20,
}
KEYS = ",".join(f"{tenant}:{scope}:{secret}" for (tenant, scope), secret in SECRETS.items())


def auth(tenant: str, scope: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[(tenant, scope)]}"}


def item(item_id: str, category: str, title: str) -> dict[str, Any]:
    return {"type": "item", "event_id": uuid.uuid4().hex, "timestamp": now_ms() - 60_000, "item_id": item_id,
            "title": title, "category": category, "price": 10.0}  # fmt: skip


def shop_events(category: str, favourite: str, alice_items: list[str], buys: bool) -> list[dict[str, Any]]:
    """A small shop: six items of one category, ``favourite`` the most viewed, alice's views (and a purchase)."""
    events = [item(f"sku-{i}", category, f"{category} {i}") for i in range(1, 7)]
    events += [view(f"fan-{k}", favourite) for k in range(8)]
    events += [view(f"fan-{k}", "sku-4") for k in range(2)]
    events += [view("alice", sku) for sku in alice_items]
    if buys:
        events.append(purchase("alice", [(alice_items[0], 1, 25.0)]))
    return events


def messages(tenant: str, events: list[dict[str, Any]], first_offset: int) -> list[RawMessage]:
    key = tenant_key(tenant, b"k")
    return [
        RawMessage(orjson.dumps(e), key, "events", 0, first_offset + i, "admin", None, None, tenant)
        for i, e in enumerate(events)
    ]


async def process(settings: Settings, batch: list[RawMessage]) -> tuple[Any, list[Envelope]]:
    letters: list[Envelope] = []

    async def dead(envelope: Envelope) -> None:
        letters.append(envelope)

    processor = BatchProcessor(ProfileStore(connect(settings), settings), settings, dead)
    try:
        return await processor.process(batch), letters
    finally:
        await processor.store.client.aclose()


@pytest.fixture()
def shops(settings: Settings, tmp_path: Path) -> Settings:
    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(
        """
version: 1
campaigns:
  - name: exp
    goal: purchase
    from: "2020-01-01T00:00:00Z"
    until: "2099-01-01T00:00:00Z"
    placements: [personal, session]
    min_customers: 1
    variants: [{name: a, weight: 50}, {name: b, weight: 50}]
"""
    )
    return settings.model_copy(
        update={"api_keys": KEYS, "campaigns_file": str(campaigns), "campaign_metrics_s": 0.0, "rate_limit": ""}
    )


async def test_two_shops_with_the_same_ids_never_see_each_other(shops: Settings) -> None:
    a_events = shop_events("shoes", "sku-3", ["sku-1", "sku-2"], buys=True)
    a_events += [view("only-a", "sku-2"), purchase("only-a", [("sku-2", 2, 40.0)])]
    b_events = shop_events("books", "sku-5", ["sku-6"], buys=False)
    mixed = [m for pair in zip(messages("shop-a", a_events, 0), messages("shop-b", b_events, 1000), strict=False)
             for m in pair]  # fmt: skip
    mixed += messages("shop-a", a_events[len(b_events) :], len(b_events))  # the rest of shop-a's
    unknown = RawMessage(orjson.dumps(view("x", "sku-1")), b"x", "events", 1, 7, "admin", None, None, "shop-z")
    invalid = RawMessage(orjson.dumps(view("x", "sku-1")), b"x", "events", 1, 8, "admin", None, None, "Shop|A")
    result, letters = await process(shops, [*mixed, unknown, invalid])
    assert result.applied == len(a_events) + len(b_events)
    assert [(d["tenant"], d["errors"][0]["field"]) for d in letters] == [
        ("shop-z", "(header) tenant"), ("Shop|A", "(header) tenant"),
    ]  # fmt: skip
    assert "the tenant 'shop-z' is not hosted by this engine" in letters[0]["reason"]
    assert "not a tenant name: 'Shop|A'" in letters[1]["reason"]
    again, _ = await process(shops, mixed)  # redelivered: every event of both shops is a duplicate
    assert (again.applied, again.duplicates) == (0, len(mixed))
    r = connect_sync(shops, decode_responses=True)
    assert not r.exists(Keys(shops.key_prefix).profile("c:alice"))  # nothing in the tenant default
    assert r.get(Keys(shops.key_prefix, "shop-z").applied_count) is None

    async with app_client(shops) as (_, client):
        # profiles: the same id, each shop's own
        a = (await client.get("/v1/customers/alice/profile", headers=auth("shop-a"))).json()
        b = (await client.get("/v1/customers/alice/profile", headers=auth("shop-b"))).json()
        assert {x["item_id"] for x in a["recent_items"]} == {"sku-1", "sku-2"} and a["orders"] == 1
        assert {x["item_id"] for x in b["recent_items"]} == {"sku-6"} and b["orders"] == 0
        assert set(a["category_affinity"]) == {"shoes"} and set(b["category_affinity"]) == {"books"}
        # another shop's customer is an unknown one
        theirs = await client.get("/v1/customers/only-a/profile", headers=auth("shop-b"))
        unknown_one = await client.get("/v1/customers/no-such-one/profile", headers=auth("shop-b"))
        assert theirs.status_code == unknown_one.status_code == 404
        assert theirs.json()["detail"].replace("only-a", "X") == unknown_one.json()["detail"].replace(
            "no-such-one", "X"
        )
        assert (await client.get("/v1/customers/only-a/profile", headers=auth("shop-a"))).status_code == 200

        # popularity and trending: each shop's own favourite first (a customer nobody has seen)
        for tenant, favourite in (("shop-a", "sku-3"), ("shop-b", "sku-5")):
            recs = await client.get("/v1/customers/newbie/recommendations", headers=auth(tenant), params={"n": 3})
            body = recs.json()
            assert body["strategy"] in ("trending", "popular") and body["items"][0]["item_id"] == favourite, body
            session = await client.get(
                "/v1/sessions/anon-1/recommendations", headers=auth(tenant, "collect"), params={"n": 3}
            )
            assert session.json()["items"][0]["item_id"] == favourite
            similar = (await client.get("/v1/items/sku-1/similar", headers=auth(tenant), params={"n": 6})).json()
            assert similar["items"] and favourite in {x["item_id"] for x in similar["items"]}
        # alice's bought item stays out in shop-a only
        a_recs = (await client.get("/v1/customers/alice/recommendations", headers=auth("shop-a"))).json()
        b_recs = (await client.get("/v1/customers/alice/recommendations", headers=auth("shop-b"))).json()
        assert "sku-1" not in {x["item_id"] for x in a_recs["items"]}
        assert "sku-1" in {x["item_id"] for x in b_recs["items"]}

        # segments and their export: each shop's customers
        for tenant in ("shop-a", "shop-b"):
            refresher = make_refresher(shops, AnalyticsSettings(analytics_min_customers=1000), tenant)
            await refresher.refresh(force=True)
            await refresher.store.client.aclose()
        exported = {t: await export_all(client, t) for t in ("shop-a", "shop-b")}
        assert {"only-a", "alice"} <= exported["shop-a"] and "only-a" not in exported["shop-b"]
        assert "alice" in exported["shop-b"] and "fan-0" in exported["shop-b"]

        # campaign counters: only shop-a's lists were served under the campaign
        report_b = (await client.get("/v1/campaigns/exp/report", headers=auth("shop-b"))).json()
        await client.get("/v1/customers/newbie/recommendations", headers=auth("shop-a"))
        await client.get("/v1/customers/alice/recommendations", headers=auth("shop-a"))
        await asyncio.sleep(0.2)  # the exposures are written after the answer
        report_a = (await client.get("/v1/campaigns/exp/report", headers=auth("shop-a"))).json()
        report_b_after = (await client.get("/v1/campaigns/exp/report", headers=auth("shop-b"))).json()
        assert report_b_after == report_b or strip_times(report_b_after) == strip_times(report_b)
        assert assigned(report_a) >= 2 and assigned(report_b_after) == assigned(report_b)

        # erasure in shop-a leaves shop-b's alice
        gone = await client.delete("/v1/customers/alice", headers=auth("shop-a"))
        assert gone.status_code == 200 and gone.json()["erased_profiles"] == ["c:alice"]
        assert (await client.get("/v1/customers/alice/profile", headers=auth("shop-a"))).status_code == 404
        still = (await client.get("/v1/customers/alice/profile", headers=auth("shop-b"))).json()
        assert {x["item_id"] for x in still["recent_items"]} == {"sku-6"}
        assert "alice" in await export_all(client, "shop-b") and "alice" not in await export_all(client, "shop-a")
    r.close()


def assigned(report: dict[str, Any]) -> int:
    return sum(int(v.get("assigned", 0)) for v in report.get("variants", []))


def strip_times(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if "at" not in k and "time" not in k}


async def export_all(client: httpx.AsyncClient, tenant: str) -> set[str]:
    out: set[str] = set()
    for segment in (await client.get("/v1/segments", headers=auth(tenant))).json()["segments"]:
        page = await client.get(f"/v1/segments/{segment['name']}/customers", headers=auth(tenant))
        out |= {row["customer_id"] for row in page.json()["customers"]}
    return out


async def test_each_shop_is_served_its_own_model(shops: Settings) -> None:
    """shop-a's model is trained on shop-a's log and served to shop-a's keys only; shop-b, with no model, serves
    popularity, and shop-a's customers are unknown there."""
    events = demo_events()
    for start in range(0, len(events), 500):
        result, _ = await process(shops, messages("shop-a", events[start : start + 500], start))
        assert result.applied == len(events[start : start + 500])
    trained = await asyncio.to_thread(train_once, shops, lambda _: None, None, "shop-a")
    assert trained.promoted
    assert Keys(shops.key_prefix).model_current not in connect_sync(shops, decode_responses=True).keys("*model*")
    async with app_client(shops) as (_, client):
        a = (await client.get("/v1/customers/cust-00001/recommendations", headers=auth("shop-a"))).json()
        assert a["model_version"] == trained.version and a["strategy"] == "personal"
        b = await client.get("/v1/customers/cust-00001/recommendations", headers=auth("shop-b"))
        assert b.json()["model_version"] == "popularity" and b.json()["strategy"] != "personal"
        assert (await client.get("/v1/customers/cust-00001/profile", headers=auth("shop-b"))).status_code == 404


def ecrm(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecrm", *args], env=settings_env(settings), capture_output=True, text=True, timeout=180
    )


async def test_commands_act_inside_their_tenant(shops: Settings, tmp_path: Path) -> None:
    """``--tenant``: training, model versions, analytics, erasure, campaign report and backup/restore of one shop
    leave the other's data as it is; without ``--tenant`` a command acts on the tenant default."""
    events = demo_events()
    for start in range(0, len(events), 500):
        await process(shops, messages("shop-a", events[start : start + 500], start))
    b_events = shop_events("books", "sku-5", ["sku-6"], buys=True)
    await process(shops, messages("shop-b", b_events, 0))
    r = connect_sync(shops, decode_responses=True)
    a_keys, b_keys = Keys(shops.key_prefix, "shop-a"), Keys(shops.key_prefix, "shop-b")

    trained = ecrm(shops, "train", "--tenant", "shop-a")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    listed = ecrm(shops, "model", "list", "--tenant", "shop-a")
    assert listed.returncode == 0 and listed.stdout.startswith("* "), listed.stdout
    assert "no model version yet" in ecrm(shops, "model", "list", "--tenant", "shop-b").stdout
    assert "no model version yet" in ecrm(shops, "model", "list").stdout  # the tenant default
    bad = ecrm(shops, "model", "list", "--tenant", "Shop_A")
    assert bad.returncode == 2 and "not a tenant name: 'Shop_A'" in bad.stderr

    refreshed = ecrm(shops, "analytics", "refresh", "--tenant", "shop-b")
    assert refreshed.returncode == 0, refreshed.stderr
    assert r.get(b_keys.analytics_state) is not None and r.get(a_keys.analytics_state) is None
    report = ecrm(shops, "campaign", "report", "exp", "--json", "--tenant", "shop-b")
    assert report.returncode == 0, report.stderr

    backup = tmp_path / "shop-b.tar.gz"
    saved = ecrm(shops, "backup", str(backup), "--tenant", "shop-b")
    assert saved.returncode == 0 and "of the tenant shop-b" in saved.stdout, saved.stdout + saved.stderr
    a_before = {k: r.dump(k) for k in r.scan_iter(f"{shops.key_prefix}:*") if a_keys.owns(k)}
    b_alice = r.hgetall(b_keys.profile("c:alice"))
    assert b_alice and r.exists(a_keys.profile("c:cust-00001"))

    erased = ecrm(shops, "forget", "alice", "--tenant", "shop-b")
    assert erased.returncode == 0, erased.stderr
    assert not r.exists(b_keys.profile("c:alice"))
    restored = ecrm(shops, "restore", str(backup))  # the backup holds shop-b only: shop-a's keys are left alone
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "erased again 1 customer(s)" in restored.stdout  # alice, erased after the backup, stays erased
    assert not r.exists(b_keys.profile("c:alice")) and r.exists(b_keys.profile("c:fan-1"))
    a_after = {k: r.dump(k) for k in r.scan_iter(f"{shops.key_prefix}:*") if a_keys.owns(k)}
    assert a_after.keys() == a_before.keys()
    wrong = ecrm(shops, "restore", str(backup), "--tenant", "shop-a")
    assert wrong.returncode == 2 and "holds the tenant 'shop-b' only" in wrong.stderr
    r.close()
