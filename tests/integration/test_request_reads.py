"""A personal recommendation's reads in one round trip (api/reads.py): the same profile whichever way the stock is read,
and the same lists as the engine's ranking filtered by the store's stock check, with a small and a large
out-of-stock set."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import api.reads as reads_module
from api.reads import RequestReads
from api.serving import ModelHolder
from core.keyspace import Keys
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.layout import item_fields, item_value
from profiles.store import ProfileStore
from runtime.embedded import EmbeddedServer
from runtime.simulate import SimulationConfig, simulate
from tests.conftest import on_cluster as cluster_settings
from tests.integration.helpers import app_client, apply, now_ms
from trainer.training import train_once

pytestmark = pytest.mark.integration
DEMO = SimulationConfig(customers=120, anonymous_visitors=0, items=150, categories=5, seed=11)


def out_of_stock(items: list[str]) -> list[dict[str, Any]]:
    ts = now_ms() + 1
    return [
        {"type": "item", "event_id": f"oos-{item}", "timestamp": ts, "item_id": item, "title": item,
         "category": "gone", "price": 1.0, "in_stock": False}
        for item in items
    ]  # fmt: skip


async def test_one_round_trip_reads_the_profile_as_the_store_does(settings: Settings) -> None:
    await apply(settings, list(simulate(DEMO)))
    store = ProfileStore(connect(settings), settings)
    try:
        reads = RequestReads(store)
        for pid in ["c:cust-00000", "c:cust-00007", "c:cust-00042", "c:nobody"]:
            context, stock = await reads.profile(pid)
            assert context == (await store.request_context(pid, whole_stock=True))[0]
            assert stock.items == frozenset()  # nothing is out of stock yet
    finally:
        await store.client.aclose()


async def test_lists_match_the_engine_and_the_stock_check_with_a_small_and_a_large_set(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply(settings, list(simulate(DEMO)))
    result = await asyncio.to_thread(train_once, settings)
    assert result.promoted
    monkeypatch.setattr(reads_module, "SMALL_STOCK_SET", 3)  # so that 5 out-of-stock items make a large set
    rng = random.Random(5)
    customers = [f"cust-{k:05d}" for k in rng.sample(range(DEMO.customers), 12)]
    async with app_client(settings) as (app, client):
        store: ProfileStore = app.state.store
        model = app.state.models.served.model
        for gone in (2, 5):  # a set read whole with the profile, then one only counted (checked per list)
            first = (await client.get(f"/v1/customers/{customers[0]}/recommendations", params={"n": 8})).json()
            await apply(settings, out_of_stock([i["item_id"] for i in first["items"][:gone]]))
            for _ in range(2):  # the first request learns the set's size, the second reads accordingly
                for customer in customers:
                    body = (await client.get(f"/v1/customers/{customer}/recommendations", params={"n": 8})).json()
                    context = (await store.request_context(f"c:{customer}", whole_stock=True))[0]
                    if body["strategy"] != "personal":
                        continue
                    ranked = [r.item_id for r in model.recommend(context.history, 18, exclude=set(context.bought))]
                    gone_now = await store.out_of_stock(ranked[:8])
                    kept = [item for item in ranked[:8] if item not in gone_now]  # then refilled by popularity
                    served = [i["item_id"] for i in body["items"]]
                    assert served[: len(kept)] == kept and len(served) == 8
                    assert not (await store.out_of_stock(served))
            assert app.state.recs.reads._small is (gone == 2)  # 2 items out of stock, then 7


async def test_the_reads_work_on_a_redis_cluster(redis_cluster: list[EmbeddedServer], settings: Settings) -> None:
    """The profile's keys and the global out-of-stock set live in different slots: the cluster client splits the
    pipeline by node, and the answer is the same."""
    on_cluster = cluster_settings(settings, redis_cluster)
    keys = Keys(on_cluster.key_prefix)  # written directly: only the reads are under test
    direct = connect_sync(on_cluster, decode_responses=True)
    direct.hset(
        keys.profile("c:reader"),
        mapping=item_fields({"sku-1": item_value(1, 1790000000000), "sku-2": item_value(3, 1790000060000)}),
    )
    direct.sadd(keys.out_of_stock, "sku-9")
    direct.close()
    store = ProfileStore(connect(on_cluster), on_cluster)
    try:
        context, stock = await RequestReads(store).profile("c:reader")
        assert context == (await store.request_context("c:reader", whole_stock=True))[0]
        assert context.history == [("sku-2", 3.0, 1_790_000_060_000), ("sku-1", 1.0, 1_790_000_000_000)]
        assert stock.items == frozenset({"sku-9"}) and stock.among(["sku-1", "sku-9"]) == {"sku-9"}
    finally:
        await store.client.aclose()


async def test_a_loaded_version_has_its_lookups_built_off_the_event_loop(settings: Settings) -> None:
    """The item index (seconds at a million items) and the popular items are built in the loading thread, not by
    the first request after a swap."""
    await apply(settings, list(simulate(DEMO)))
    result = await asyncio.to_thread(train_once, settings)
    holder = ModelHolder(settings)
    try:
        assert await holder.refresh()
        assert holder.served is not None and holder.served.version == result.version
        model = holder.served.model
        assert model._index_cache is not None and model._index_cache[0] is model.item_ids
        assert model._popular_top is not None
    finally:
        await holder.client.aclose()
