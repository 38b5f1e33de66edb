"""The profile store on the real Redis-compatible server: atomic refusals, bounded structures, login links that
move, event ids scoped by source, and erasure (with its tombstones against replay); on one Redis node and on the
three-node Redis Cluster the suite starts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from analytics.store import AnalyticsStore
from core.clock import now_ms
from core.keyspace import Keys, ProfileId
from core.redis import connect, connect_sync
from core.settings import Settings
from ecrm.commands.privacy import erase
from profiles.store import APPLIED, DUPLICATE, ERASED, ProfileStore, Status
from profiles.updates import plan_update
from schemas import parse_event_obj
from tests.conftest import on_cluster
from trainer.training import read_interactions

pytestmark = pytest.mark.integration
T0 = 1_795_424_400_000


def ev(kind: str, n: int | str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"{kind}-{n}", "timestamp": ts, **fields}


async def apply(store: ProfileStore, events: list[dict[str, Any]], source: str = "direct") -> list[Status]:
    plans = [plan_update(parse_event_obj(e), store.settings.event_weights, source) for e in events]
    return await store.apply_plans(plans)


@pytest.fixture(params=["single", "cluster"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The test's settings on one Redis node, then on the Redis Cluster."""
    if request.param == "single":
        return settings
    return on_cluster(settings, request.getfixturevalue("redis_cluster"))


@pytest.fixture()
async def store(settings: Settings) -> Any:
    bounded = settings.model_copy(
        update={"profile_items_max": 10, "profile_categories_max": 3, "cart_lines_max": 2, "popular_items_max": 100}
    )
    s = ProfileStore(connect(bounded), bounded)
    yield s
    await s.client.aclose()


async def test_a_refused_plan_changes_nothing(store: ProfileStore) -> None:
    keys = store.keys
    await apply(store, [ev("page_view", 1, T0, customer_id="c")])
    await store.client.hset(keys.profile("c:c"), "revenue", "1.7e308")  # one more order overflows the total
    # the schema caps money far below this: the store checks again, as events may reach it another way
    ok = ev("purchase", 2, T0 + 1, customer_id="c", order_id="o", currency="EUR",
            lines=[{"item_id": "a", "quantity": 1, "unit_price": 10.0}])  # fmt: skip
    big = replace(plan_update(parse_event_obj(ok), store.settings.event_weights), revenue=1e308)
    page = plan_update(parse_event_obj(ev("page_view", 3, T0 + 2, customer_id="c")), store.settings.event_weights)
    before = {k: await store.client.dump(k) for k in keys.profile_keys("c:c")}
    statuses = await store.apply_plans([big, page])
    assert isinstance(statuses[0], str) and "overflow" in statuses[0]
    assert statuses[1] == APPLIED  # the next event of the chunk goes on
    after = {k: await store.client.dump(k) for k in keys.profile_keys("c:c")}
    changed = [k for k in after if before[k] != after[k]]
    assert changed == [keys.profile("c:c")]  # only the page view's count and last_seen
    assert not await store.remembers("c:c", "direct", "purchase-2")  # no marker: not "applied"
    assert await store.remembers("c:c", "direct", "page_view-3")
    assert (await store.profile("c:c"))["orders"] == 0  # type: ignore[index]


async def test_cart_lines_are_bounded(store: ProfileStore) -> None:
    adds = [ev("add_to_cart", i, T0 + i, customer_id="c", item_id=f"i{i}") for i in range(3)]
    statuses = await apply(store, adds + [ev("add_to_cart", 9, T0 + 9, customer_id="c", item_id="i0")])
    assert statuses[:2] == [APPLIED, APPLIED] and statuses[3] == APPLIED  # more of a line already there is fine
    assert isinstance(statuses[2], str) and "ECRM_CART_LINES_MAX" in statuses[2]
    profile = await store.profile("c:c")
    assert profile is not None and profile["cart"] == [
        {"item_id": "i0", "quantity": 2},
        {"item_id": "i1", "quantity": 1},
    ]


async def test_items_categories_and_popular_are_bounded(store: ProfileStore) -> None:
    views = [ev("product_view", i, T0 + i * 1000, customer_id="c", item_id=f"i{i}", category=f"k{i % 5}")
             for i in range(30)]  # fmt: skip
    assert await apply(store, views) == [APPLIED] * 30
    keys = store.keys
    items = await store.client.hgetall(keys.items("c:c"))
    assert 9 <= len(items) <= 10 and "i29" in items and "i0" not in items  # the newest kept
    assert [int(items[f"i{i}"].split()[1]) for i in (28, 29)] == [T0 + 28_000, T0 + 29_000]  # weight and time
    assert await store.client.hlen(keys.affinity("c:c")) <= 3
    await apply(store, [ev("product_view", f"p{i}", T0, customer_id=f"u{i}", item_id=f"x{i}") for i in range(120)])
    assert await store.client.zcard(keys.popular) <= 110


async def test_profiles_expire_without_events(store: ProfileStore) -> None:
    await apply(store, [ev("product_view", 1, T0, customer_id="c", item_id="a", session_id="s")])
    ttl_ms = store.settings.profile_ttl_days * 86_400_000
    existing = [key for key in store.keys.profile_keys("c:c") if await store.client.exists(key)]
    assert len(existing) == 3  # hash, items (also the recent items), sessions (no cart, category or purchase)
    for key in existing:
        assert 0 < await store.client.pttl(key) <= ttl_ms, key


async def test_a_later_login_moves_the_link_not_the_history(store: ProfileStore) -> None:
    await apply(store, [
        ev("product_view", 1, T0, anonymous_id="v", item_id="a"),
        ev("page_view", 2, T0 + 1, anonymous_id="v", customer_id="alice"),  # merges v into alice
        ev("page_view", 3, T0 + 5, anonymous_id="v", customer_id="bob"),  # the shared device: now bob's
        ev("page_view", 4, T0 + 3, anonymous_id="v", customer_id="carol"),  # older than bob's: ignored
        ev("product_view", 5, T0 + 6, anonymous_id="v", item_id="b"),
    ])  # fmt: skip
    assert await store.resolve_visitor("v") == "c:bob"
    alice, bob = await store.profile("c:alice"), await store.profile("c:bob")
    assert alice is not None and bob is not None
    assert [r["item_id"] for r in alice["recent_items"]] == ["a"] and alice["merged_visitors"] == 1
    assert [r["item_id"] for r in bob["recent_items"]] == ["b"] and bob["merged_visitors"] == 0
    assert await store.client.smembers(store.keys.visitors("bob")) == {"v"}
    assert await store.client.smembers(store.keys.visitors("alice")) == set()


async def test_event_ids_are_scoped_by_source(store: ProfileStore) -> None:
    view = ev("product_view", "order:42", T0, anonymous_id="v", item_id="a")
    assert await apply(store, [view], source="collect") == [APPLIED]
    assert await apply(store, [view], source="collect") == [DUPLICATE]
    assert await apply(store, [view], source="server") == [APPLIED]  # another sender cannot pre-claim an id


async def test_erasure_removes_everything_and_replays_stay_out(store: ProfileStore, settings: Settings) -> None:
    old = [
        ev("product_view", 1, T0, anonymous_id="v1", item_id="a"),
        ev("page_view", 2, T0 + 1, anonymous_id="v1", customer_id="gone"),
        ev("purchase", 3, T0 + 2, customer_id="gone", order_id="o", currency="EUR",
           lines=[{"item_id": "a", "quantity": 1, "unit_price": 9.0}]),
        ev("product_view", 4, T0, customer_id="stays", item_id="a"),
    ]  # fmt: skip
    await apply(store, old)
    settings = store.settings
    pids, _ = await erase(settings, "gone")
    assert pids == ["c:gone", "a:v1"]
    keys = store.keys
    for pid in pids:
        assert not any([await store.client.exists(k) for k in keys.profile_keys(pid)]), pid
        assert await store.client.zscore(keys.profiles, pid) is None
    assert not await store.client.exists(keys.alias("v1"), keys.visitors("gone"))
    assert [k async for k in store.client.scan_iter(match=f"{keys.profile('c:gone')}:seen:*")] == []
    # Kafka replays the old events: they stay out; a new event of the returning customer counts
    assert await apply(store, old[:3]) == [ERASED] * 3
    assert await apply(store, [ev("page_view", 5, now_ms() + 1000, customer_id="gone")]) == [APPLIED]
    assert (await store.profile("c:gone"))["event_counts"] == {"page_view": 1}  # type: ignore[index]
    assert await store.profile("c:stays") is not None
    log = read_interactions(connect_sync(settings), keys)
    assert set(log.user_ids) == {"c:stays"}  # training skips the erased entries


async def test_erasure_reaches_the_segment_snapshot(settings: Settings) -> None:
    from analytics.refresh import make_refresher
    from analytics.settings import AnalyticsSettings

    store = ProfileStore(connect(settings), settings)
    events = [ev("purchase", i, T0 + i, customer_id=f"k{i}", order_id=f"o{i}", currency="EUR",
                 lines=[{"item_id": "a", "quantity": 1, "unit_price": 5.0 + i}]) for i in range(6)]  # fmt: skip
    await apply(store, events)
    refresher = make_refresher(settings, AnalyticsSettings(analytics_min_customers=1000))
    result = await refresher.refresh(force=True)
    await refresher.store.client.aclose()
    assert result.state is not None
    analytics = AnalyticsStore(store.client, settings.key_prefix)

    async def exported() -> set[str]:
        state = await analytics.state()
        assert state is not None
        out: set[str] = set()
        for index in range(len(state.segments)):
            meta = await analytics.snapshot_meta(state.snapshot_id)
            assert meta is not None
            rows = await analytics.members(state.snapshot_id, index, 0, 1000)
            assert len(rows) == meta["sizes"][index]
            out |= {row["profile_id"] for row in rows}
        return out

    assert "c:k3" in await exported()
    pids, rows = await erase(settings, "k3")
    assert rows == 1 and "c:k3" not in await exported() and "c:k2" in await exported()
    await store.client.aclose()


def test_keys_of_a_profile_share_the_tombstone_slot() -> None:
    k = Keys("t")
    assert k.erased(ProfileId("c", "x")).startswith(k.profile("c:x"))


async def test_de_duplication_memory_per_profile_is_bounded_and_keeps_the_newest(settings: Settings) -> None:
    small = settings.model_copy(update={"dedupe_max_per_profile": 100})
    store = ProfileStore(connect(small), small)
    keys = Keys(small.key_prefix)
    events = [ev("page_view", n, T0 + n, customer_id="d") for n in range(150)]
    assert await apply(store, events) == [APPLIED] * 150
    assert await apply(store, events[50:]) == [DUPLICATE] * 100  # the newest are remembered
    assert await store.remembers("c:d", "direct", "page_view-149")
    if small.redis_cluster:  # a marker key per event (it holds the event's global record), bounded by the TTL
        assert await store.remembers("c:d", "direct", "page_view-0")
    else:  # one set per profile, bounded: the oldest go first
        assert await store.client.zcard(keys.seen_set("c:d")) == 100
        assert not await store.remembers("c:d", "direct", "page_view-49")
        assert await store.remembers("c:d", "direct", "page_view-50")
        ttl = await store.client.pttl(keys.seen_set("c:d"))
        assert 0 < ttl <= small.dedupe_window_s * 1000
    assert (await store.profile("c:d"))["event_counts"]["page_view"] == 150  # type: ignore[index]
    await store.client.aclose()
