"""The Redis profile store (apply.lua) on the real Redis-compatible server, without Kafka: every test on one node
and on the three-node Redis Cluster the suite starts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from core.keyspace import TRENDING_ERA_HALF_LIVES, Keys
from core.redis import connect
from core.settings import Settings
from profiles.store import ProfileStore
from profiles.updates import plan_update
from schemas import EventLimits, parse_event_obj
from tests.conftest import on_cluster

pytestmark = pytest.mark.integration
DAY = 86_400_000
T0 = 1_795_424_400_000
LIMITS = EventLimits(now=datetime.fromtimestamp((T0 + 365 * DAY) / 1000, UTC))  # events up to a year after T0


def ev(kind: str, n: int, ts: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"{kind}-{n}", "timestamp": ts, **fields}


async def apply(store: ProfileStore, settings: Settings, events: list[dict[str, Any]]) -> list[int]:
    return await store.apply_plans([plan_update(parse_event_obj(e, LIMITS), settings.event_weights) for e in events])


@pytest.fixture(params=["single", "cluster"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The test's settings on one Redis node, then on the Redis Cluster."""
    if request.param == "single":
        return settings
    return on_cluster(settings, request.getfixturevalue("redis_cluster"))


@pytest.fixture()
async def store(settings: Settings) -> ProfileStore:
    return ProfileStore(connect(settings), settings)


async def test_each_event_applies_once(store: ProfileStore, settings: Settings) -> None:
    events = [ev("product_view", i, T0 + i, customer_id="c", item_id=f"i{i % 3}") for i in range(10)]
    assert await apply(store, settings, events) == [1] * 10
    assert await apply(store, settings, events[:5] + [ev("page_view", 99, T0, customer_id="c")]) == [0] * 5 + [1]
    profile = await store.profile("c:c", now=T0 + 100)
    assert profile is not None
    assert profile["event_counts"] == {"product_view": 10, "page_view": 1}
    assert [r["item_id"] for r in profile["recent_items"]] == ["i0", "i2", "i1"]


async def test_login_joins_the_anonymous_history(store: ProfileStore, settings: Settings) -> None:
    anon = [
        ev("product_view", 1, T0, anonymous_id="v", item_id="a", category="k", session_id="s1"),
        ev("add_to_cart", 2, T0 + 1, anonymous_id="v", item_id="a", quantity=2),
    ]
    before = [ev("purchase", 3, T0 - DAY, customer_id="c", order_id="o", currency="EUR",
                 lines=[{"item_id": "b", "quantity": 1, "unit_price": 4.0}])]  # fmt: skip
    login = [ev("page_view", 4, T0 + 2, anonymous_id="v", customer_id="c", session_id="s2")]
    after = [ev("product_view", 5, T0 + 3, anonymous_id="v", item_id="z")]  # still anonymous on another tab
    await apply(store, settings, anon + before + login + after)
    assert await store.profile("a:v") is None
    p = await store.profile("c:c", now=T0 + 10)
    assert p is not None
    assert p["event_counts"] == {"product_view": 2, "add_to_cart": 1, "purchase": 1, "page_view": 1}
    assert p["cart"] == [{"item_id": "a", "quantity": 2}]
    assert p["orders"] == 1 and p["revenue"] == 4.0
    assert p["sessions"] == 2 and p["merged_visitors"] == 1
    assert p["first_seen"].startswith("2026-11-22")
    assert [r["item_id"] for r in p["recent_items"]] == ["z", "a", "b"]
    assert list(p["category_affinity"]) == ["k"]


async def test_cart_add_remove_purchase(store: ProfileStore, settings: Settings) -> None:
    await apply(store, settings, [
        ev("add_to_cart", 1, T0, customer_id="c", item_id="a", quantity=3),
        ev("add_to_cart", 2, T0, customer_id="c", item_id="b"),
        ev("remove_from_cart", 3, T0, customer_id="c", item_id="a", quantity=1),
        ev("add_to_cart", 4, T0, customer_id="c", item_id="x"),
        ev("remove_from_cart", 5, T0, customer_id="c", item_id="x"),
        ev("purchase", 6, T0, customer_id="c", order_id="o", currency="EUR",
           lines=[{"item_id": "b", "quantity": 1, "unit_price": 1.0}]),
    ])  # fmt: skip
    p = await store.profile("c:c")
    assert p is not None and p["cart"] == [{"item_id": "a", "quantity": 2}]
    assert set(await store.bought("c:c")) == {"b"}


async def test_category_affinity_decays_with_event_time(store: ProfileStore, settings: Settings) -> None:
    half_life = int(settings.affinity_half_life_days * DAY)
    await apply(store, settings, [
        ev("product_view", 1, T0, customer_id="c", item_id="a", category="old"),
        ev("product_view", 2, T0 + half_life, customer_id="c", item_id="b", category="new"),
        ev("product_view", 3, T0 - half_life, customer_id="c", item_id="c", category="older"),  # out of order
    ])  # fmt: skip
    p = await store.profile("c:c", now=T0 + half_life)
    assert p is not None
    assert p["category_affinity"] == {"new": 1.0, "old": 0.5, "older": 0.25}


async def test_category_comes_from_the_catalogue(store: ProfileStore, settings: Settings) -> None:
    await apply(store, settings, [
        ev("item", 1, T0, item_id="a", title="A", category="shoes", price=3.0),
        ev("product_view", 2, T0, customer_id="c", item_id="a"),
    ])  # fmt: skip
    p = await store.profile("c:c", now=T0)
    assert p is not None and p["category_affinity"] == {"shoes": 1.0}


async def test_trending_is_continuous_across_an_era_boundary(store: ProfileStore, settings: Settings) -> None:
    half_life = settings.trending_half_life_hours * 3_600_000
    era_ms = int(half_life * TRENDING_ERA_HALF_LIVES)
    boundary = (T0 // era_ms + 1) * era_ms
    await apply(store, settings, [
        ev("product_view", 1, boundary - 1000, customer_id="c", item_id="before"),
        ev("product_view", 2, boundary - 1000, customer_id="d", item_id="before"),
        ev("product_view", 3, boundary + 1000, customer_id="c", item_id="after"),
    ])  # fmt: skip
    for now in (boundary - 500, boundary + 2000):
        top = await store.trending(5, now=now)
        expected = ["before", "after"] if now > boundary else ["before"]
        assert [t.item_id for t in top] == expected
        assert top[0].score == pytest.approx(2.0, rel=1e-3)


async def test_catalogue_updates_are_last_write_wins_and_stock_counts(store: ProfileStore, settings: Settings) -> None:
    await apply(store, settings, [
        ev("item", 1, T0 + 10, item_id="a", title="New", category="k2", price=2.0, in_stock=False),
        ev("item", 2, T0, item_id="a", title="Old", category="k1", price=1.0),  # older, arrives late
    ])  # fmt: skip
    keys = Keys(settings.key_prefix)
    assert await store.client.hget(keys.item("a"), "title") == "New"
    assert await store.out_of_stock(["a", "unknown"]) == {"a"}


async def test_interactions_log_for_training(store: ProfileStore, settings: Settings) -> None:
    await apply(store, settings, [
        ev("product_view", 1, T0, customer_id="c", item_id="a"),
        ev("page_view", 2, T0, customer_id="c"),
        ev("add_to_cart", 3, T0, customer_id="c", item_id="a"),
    ])  # fmt: skip
    rows = await store.client.xrange(Keys(settings.key_prefix).interactions)
    assert [(f["p"], f["i"], f["w"]) for _, f in rows] == [("c:c", "a", "1"), ("c:c", "a", "3")]
    assert all(int(f["t"]) == T0 for _, f in rows)
