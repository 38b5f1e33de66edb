"""The recommender served end to end: training, promotion, hot swap, fold-in, fallback chain, rollback."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.kafka import make_producer, produce_events
from core.keyspace import Keys
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.store import ProfileStore
from profiles.updates import plan_update
from runtime.simulate import SimulationConfig, simulate
from schemas import parse_event_obj
from tests.conftest import wait_for
from tests.integration.helpers import api_client, now_ms, sync_redis, view
from trainer.training import train_once

pytestmark = pytest.mark.integration
DEMO = SimulationConfig(customers=150, anonymous_visitors=30, items=120, categories=6, seed=3)


async def load(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Write events straight through the store (the path the worker takes after Kafka)."""
    store = ProfileStore(connect(settings), settings)
    plans = [plan_update(parse_event_obj(e), settings.event_weights) for e in events]
    for start in range(0, len(plans), 500):
        await store.apply_plans(plans[start : start + 500])
    await store.client.aclose()


def demo_events() -> list[dict[str, Any]]:
    return list(simulate(DEMO))


async def test_promoted_model_is_served_with_fold_in(settings: Settings) -> None:
    await load(settings, demo_events())
    result = await asyncio.to_thread(train_once, settings)
    assert result.promoted and result.holdout["users"] > 0
    async with api_client(settings) as client:
        body = (await client.get("/v1/customers/cust-00001/recommendations", params={"n": 5})).json()
        assert body["model_version"] == result.version
        assert body["strategy"] == "personal"
        assert len(body["items"]) == 5
        assert all(i["reason"].startswith("because you") for i in body["items"])
        # a customer the model never saw is still personal: fold-in of the current history
        await load(settings, [view("newcomer", "sku-00003"), view("newcomer", "sku-00009")])
        fresh = (await client.get("/v1/customers/newcomer/recommendations", params={"n": 5})).json()
        assert fresh["strategy"] == "personal"
        assert {"sku-00003", "sku-00009"}.isdisjoint(i["item_id"] for i in fresh["items"])
        # category filter
        cat = (await client.get("/v1/customers/cust-00001/recommendations", params={"category": "makeup"})).json()
        store = ProfileStore(connect(settings), settings)
        makeup = await store.category_items("makeup")
        await store.client.aclose()
        assert cat["items"] and all(i["item_id"] in makeup for i in cat["items"])
        # similar items, cart, session
        similar = (await client.get("/v1/items/sku-00000/similar", params={"n": 5})).json()
        assert similar["strategy"] == "item-based" and "sku-00000" not in [i["item_id"] for i in similar["items"]]
        cart = (await client.post("/v1/recommendations/cart", json={"item_ids": ["sku-00001", "sku-00002"]})).json()
        assert cart["strategy"] == "item-based" and cart["items"]
        assert {"sku-00001", "sku-00002"}.isdisjoint(i["item_id"] for i in cart["items"])
        session = (await client.get("/v1/sessions/anon-00001/recommendations")).json()
        assert session["items"] and session["model_version"] == result.version


async def test_click_changes_recommendations_within_a_second(settings: Settings, worker: Callable[[], Any]) -> None:
    await load(settings, demo_events())
    await asyncio.to_thread(train_once, settings)
    worker()
    async with api_client(settings) as client:
        # the worker is up when an event goes through it
        assert (await client.post("/v1/events", json=[view("warmup", "sku-00001")])).status_code == 202
        deadline = time.monotonic() + 60
        while (await client.get("/v1/customers/warmup/profile")).status_code != 200:
            assert time.monotonic() < deadline, "worker did not start"
            await asyncio.sleep(0.1)
        before = (await client.get("/v1/customers/cust-00002/recommendations")).json()["items"]
        clicked = before[0]["item_id"]
        click = {**view("cust-00002", clicked), "type": "product_view"}
        assert (await client.post("/v1/events", json=click)).status_code == 202
        sent = time.monotonic()
        while True:
            after = (await client.get("/v1/customers/cust-00002/recommendations")).json()["items"]
            if after != before:
                break
            assert time.monotonic() - sent < 5, "the click did not change the recommendations"
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - sent
    assert clicked not in [i["item_id"] for i in after]  # viewed now, so it left the list
    assert elapsed < 1.0, f"recommendations changed only after {elapsed:.2f}s"


async def test_hot_swap_under_concurrent_requests(settings: Settings) -> None:
    await load(settings, demo_events())
    first = await asyncio.to_thread(train_once, settings)
    errors: list[str] = []
    versions: set[str] = set()
    async with api_client(settings) as client:
        stop = asyncio.Event()

        async def hammer(customer: str) -> None:
            while not stop.is_set():
                resp = await client.get(f"/v1/customers/{customer}/recommendations")
                if resp.status_code != 200 or not resp.json()["items"]:
                    errors.append(f"{resp.status_code} {resp.text[:200]}")
                else:
                    versions.add(resp.json()["model_version"])

        tasks = [asyncio.create_task(hammer(f"cust-{i:05d}")) for i in range(8)]
        await load(settings, [view("cust-00003", f"sku-{i:05d}") for i in range(20, 40)])
        second = await asyncio.to_thread(train_once, settings)
        deadline = time.monotonic() + 20
        while second.version not in versions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
    assert second.promoted
    assert errors == []
    assert {first.version, second.version} <= versions


async def test_rollback_serves_the_previous_version(settings: Settings) -> None:
    await load(settings, demo_events())
    first = await asyncio.to_thread(train_once, settings)
    await load(settings, [view("cust-00004", "sku-00050")])
    second = await asyncio.to_thread(train_once, settings)
    proc = subprocess.run(
        [*ECRM, "model", "rollback"], env=env_of(settings), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert first.version in proc.stdout
    listing = subprocess.run([*ECRM, "model", "list"], env=env_of(settings), capture_output=True, text=True)
    assert f"* {first.version}" in listing.stdout and second.version not in listing.stdout
    async with api_client(settings) as client:
        body = (await client.get("/v1/customers/cust-00001/recommendations")).json()
    assert body["model_version"] == first.version


async def test_worse_model_is_refused(settings: Settings, tmp_path: Path) -> None:
    await load(settings, demo_events())
    good = await asyncio.to_thread(train_once, settings.model_copy(update={"holdout_min_users": 10}))
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("algorithm: bpr\niterations: 1\nfactors: 2\nsequence_weight: 0\ncollaborative_weight: 1\n")
    worse = settings.model_copy(
        update={"recommender_config_file": str(bad_config), "promotion_margin": 0.0, "holdout_min_users": 10}
    )
    result = await asyncio.to_thread(train_once, worse)
    assert not result.promoted, result.reason
    assert sync_redis(settings).get(Keys(settings.key_prefix).model_current) == good.version


def test_worker_retrains_by_itself(settings: Settings, worker_factory: Callable[[Settings], Any]) -> None:
    eager = settings.model_copy(update={"retrain_check_s": 1.0, "retrain_min_interactions": 100})
    worker_factory(eager)
    producer = make_producer(eager)
    produce_events(producer, eager.events_topic, demo_events())
    producer.close()
    keys = Keys(eager.key_prefix)
    r = sync_redis(eager)
    wait_for(lambda: r.get(keys.model_current) is not None, timeout=120, what="a model trained by the worker")
    assert r.llen(keys.model_versions) >= 1


async def test_fallback_chain(settings: Settings) -> None:
    async with api_client(settings) as client:
        empty = (await client.get("/v1/customers/anyone/recommendations")).json()
        assert empty["items"] == [] and empty["strategy"] == "empty"  # an empty shop has nothing to show
        catalogue = [
            {"type": "item", "event_id": f"item-{c}{i}", "timestamp": now_ms(), "item_id": f"{c}{i}",
             "title": f"{c}{i}", "category": c, "price": 1.0}
            for c in ("shoes", "hats") for i in range(5)
        ]  # fmt: skip
        await load(settings, catalogue)
        only_catalogue = (await client.get("/v1/customers/anyone/recommendations", params={"n": 3})).json()
        assert only_catalogue["strategy"] == "catalogue" and len(only_catalogue["items"]) == 3
        await load(settings, [view("v1", "hats0"), view("v2", "hats0"), view("v3", "shoes1"), view("fan", "shoes2")])
        unknown = (await client.get("/v1/customers/nobody/recommendations", params={"n": 3})).json()
        assert unknown["strategy"] == "trending" and unknown["items"][0]["item_id"] == "hats0"
        fan = (await client.get("/v1/customers/fan/recommendations", params={"n": 3})).json()
        assert fan["strategy"] == "trending-in-category"
        assert fan["items"][0] == {"item_id": "shoes1", "score": fan["items"][0]["score"], "reason": "popular in shoes"}
        unknown_item = (await client.get("/v1/items/no-such-item/similar", params={"n": 2})).json()
        assert unknown_item["strategy"] == "trending" and len(unknown_item["items"]) == 2
        out = {"type": "item", "event_id": "oos", "timestamp": now_ms() + 1, "item_id": "hats0", "title": "h",
               "category": "hats", "price": 1.0, "in_stock": False}  # fmt: skip
        await load(settings, [out])
        no_oos = (await client.get("/v1/customers/nobody/recommendations", params={"n": 10})).json()
        assert "hats0" not in [i["item_id"] for i in no_oos["items"]] and len(no_oos["items"]) == 9


ECRM = [__import__("sys").executable, "-m", "ecrm"]


def env_of(settings: Settings) -> dict[str, str]:
    from runtime.local import settings_env

    return settings_env(settings)


def _popular_world(start_ms: int, days: int, users: int = 300, items: int = 200) -> list[dict[str, Any]]:
    """Customers who view items at random from one strongly skewed distribution: nothing to learn but popularity."""
    rng = np.random.default_rng(5)
    p = 1.0 / np.arange(1, items + 1) ** 1.3
    p /= p.sum()
    return [
        view(f"pop-{u}", f"sku-p{rng.choice(items, p=p)}", start_ms + int(t))
        for u in range(users)
        for t in np.sort(rng.integers(0, days * 86_400_000, 10))
    ]


def _cluster_world(
    start_ms: int, days: int, users: int = 300, clusters: int = 15, size: int = 8
) -> list[dict[str, Any]]:
    """Customers who walk through their own cluster's items in order: the engine learns it, popularity cannot."""
    rng = np.random.default_rng(6)
    events = []
    for u in range(users):
        first = int(rng.integers(size))
        for k, t in enumerate(np.sort(rng.integers(0, days * 86_400_000, 10))):
            events.append(view(f"clu-{u}", f"sku-c{u % clusters}-{(first + k) % size}", start_ms + int(t)))
    return events


async def test_the_served_strategy_follows_the_gate(settings: Settings) -> None:
    day = 86_400_000
    settings = settings.model_copy(update={"holdout_min_users": 20})
    await load(settings, _popular_world(now_ms() - 30 * day, 26))
    first = await asyncio.to_thread(train_once, settings)
    assert first.serve in {"popularity", "trending"}, first.reason
    assert first.promoted and f"{first.serve} serves the personal lists" in first.reason
    async with api_client(settings) as client:
        body = (await client.get("/v1/customers/pop-1/recommendations", params={"n": 5})).json()
        assert body["strategy"] == f"baseline:{first.serve}" and len(body["items"]) == 5
        history = {e["item_id"] for e in _popular_world(now_ms() - 30 * day, 26) if e["customer_id"] == "pop-1"}
        assert history.isdisjoint(i["item_id"] for i in body["items"])  # what they saw is not news
        similar = (await client.get("/v1/items/sku-p0/similar", params={"n": 3})).json()
        assert similar["strategy"] == "item-based"  # the engine still serves the item lists
        exposition = (await client.get("/metrics")).text
        assert f'ecrm_model_baseline_served{{baseline="{first.serve}"}} 1.0' in exposition
        listing = subprocess.run([*ECRM, "model", "list"], env=env_of(settings), capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        assert f"personal lists: the {first.serve} baseline serves instead of the engine" in listing.stdout
        assert f"gate={first.serve}" in listing.stdout

        # newer customers with strong structure fill the newest window: a version beats the baseline
        await load(settings, _cluster_world(now_ms() - 3 * day, 3))
        second = await asyncio.to_thread(train_once, settings)
        assert (second.promoted, second.serve) == (True, "engine"), second.reason
        deadline = time.monotonic() + 20
        while True:
            body = (await client.get("/v1/customers/clu-1/recommendations", params={"n": 5})).json()
            if body["strategy"] == "personal" and body["model_version"] == second.version:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        exposition = (await client.get("/metrics")).text
        assert f'ecrm_model_baseline_served{{baseline="{first.serve}"}} 0.0' in exposition
    listing = subprocess.run([*ECRM, "model", "list"], env=env_of(settings), capture_output=True, text=True)
    assert "personal lists: the engine serves" in listing.stdout


def test_the_registry_keeps_when_a_baseline_began_and_ignores_a_broken_record(settings: Settings) -> None:
    from core.registry import Registry

    r = sync_redis(settings)
    keys = Keys(settings.key_prefix)
    registry = Registry(connect_sync(settings), keys, settings.model_keep_versions)
    assert registry.baseline() is None
    registry.serve_baseline({"baseline": "trending", "reason": "first"})
    first = registry.baseline()
    assert first is not None and first["reason"] == "first"
    time.sleep(0.01)
    registry.serve_baseline({"baseline": "trending", "reason": "again"})
    again = registry.baseline()
    assert again is not None and again["reason"] == "again" and again["since"] == first["since"]
    registry.serve_baseline({"baseline": "popularity", "reason": "another"})
    other = registry.baseline()
    assert other is not None and other["since"] > first["since"]
    r.set(keys.model_baseline, "{not json")
    assert registry.baseline() is None  # the engine serves: never worse than before
    registry.clear_baseline()
    assert r.get(keys.model_baseline) is None


async def test_items_outside_the_catalogue_are_not_served_once_it_has_items(settings: Settings) -> None:
    """Issue 18: an id someone made up (seen before the catalogue had items, so in the popular ranking) is not
    served once the catalogue has items, unless ECRM_SERVE_UNCATALOGUED says so; later it does not even enter."""
    now = now_ms()
    ghosts = [view(f"fan-{k}", "ghost", now - 5000 + k) for k in range(5)]
    await load(settings, ghosts)
    item = {"type": "item", "timestamp": now - 1000, "title": "t", "category": "k", "price": 1.0}
    await load(settings, [{**item, "event_id": f"i{n}", "item_id": f"sku-{n}"} for n in range(3)])
    await load(settings, [view("fan-9", "sku-1", now), view("fan-9", "ghost-2", now + 1)])
    keys = Keys(settings.key_prefix)
    popular = set(sync_redis(settings).zrange(keys.popular, 0, -1))
    assert "ghost" in popular and "ghost-2" not in popular  # only catalogue items enter once there is a catalogue
    for serve, expected in ((False, False), (True, True)):
        async with api_client(settings.model_copy(update={"serve_uncatalogued": serve})) as client:
            body = (await client.get("/v1/customers/nobody/recommendations", params={"n": 10})).json()
            assert ("ghost" in [i["item_id"] for i in body["items"]]) is expected, body
            assert "sku-1" in [i["item_id"] for i in body["items"]]
