"""The profile store on the real Redis-compatible server: atomic refusals, bounded structures, login links that
move, event ids scoped by source, and erasure (with its tombstones against replay); on one Redis node and on the
three-node Redis Cluster the suite starts."""

from __future__ import annotations

from typing import Any

import pytest

from analytics.store import AnalyticsStore
from core.clock import now_ms
from core.keyspace import Keys, ProfileId
from core.redis import connect
from core.settings import Settings
from ecrm.commands.privacy import erase
from profiles import layout
from profiles.layout import COUNTS, SCALARS, ProfileHash, parse_item, recent_items, split
from profiles.store import APPLIED, DUPLICATE, ERASED, ProfileStore, Status
from profiles.updates import plan_update
from schemas import parse_event_obj
from tests.conftest import on_cluster
from trainer.logstore import read_training_log

pytestmark = pytest.mark.integration
T0 = 1_795_424_400_000


def ev(kind: str, n: int | str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"{kind}-{n}", "timestamp": ts, **fields}


async def apply(store: ProfileStore, events: list[dict[str, Any]], source: str = "direct") -> list[Status]:
    plans = [plan_update(parse_event_obj(e), store.settings.event_weights, source) for e in events]
    return await store.apply_plans(plans)


async def fields(store: ProfileStore, pid: str) -> ProfileHash:
    """A profile's hash, split by kind of field (items, affinities, cart, the rest)."""
    return split(await store.client.hgetall(store.keys.profile(pid)))


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
    big = plan_update(parse_event_obj(ok), store.settings.event_weights)._replace(revenue=1e308)
    page = plan_update(parse_event_obj(ev("page_view", 3, T0 + 2, customer_id="c")), store.settings.event_weights)
    before = {k: await store.client.dump(k) for k in [keys.profile("c:c"), *keys.legacy_profile_keys("c:c")]}
    statuses = await store.apply_plans([big, page])
    assert isinstance(statuses[0], str) and "overflow" in statuses[0]
    assert statuses[1] == APPLIED  # the next event of the chunk goes on
    after = {k: await store.client.dump(k) for k in before}
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
    found = await fields(store, "c:c")
    items = found.items
    assert 9 <= len(items) <= 10 and "i29" in items and "i0" not in items  # the newest kept
    assert [parse_item(items[f"i{i}"]).ts for i in (28, 29)] == [T0 + 28_000, T0 + 29_000]  # weight and time
    assert len(found.affinity) <= 3 and "k4" in found.affinity  # the strongest (the latest: decayed forward)
    counts = await store.client.hmget(keys.profile("c:c"), "#i", "#a")  # the counts the bounds are checked by
    assert [int(n) for n in counts] == [len(items), len(found.affinity)]
    await apply(store, [ev("product_view", f"p{i}", T0, customer_id=f"u{i}", item_id=f"x{i}") for i in range(120)])
    assert await store.client.zcard(keys.popular) <= 110


async def test_profiles_expire_without_events(store: ProfileStore) -> None:
    await apply(store, [ev("product_view", 1, T0, customer_id="c", item_id="a", session_id="s")])
    ttl_ms = store.settings.profile_ttl_days * 86_400_000
    keys = [store.keys.profile("c:c"), *store.keys.legacy_profile_keys("c:c")]
    existing = [key for key in keys if await store.client.exists(key)]
    assert existing == [store.keys.profile("c:c")]  # one key: the item and the session are fields of the hash
    assert 0 < await store.client.pttl(existing[0]) <= ttl_ms


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
    assert await store.client.get(store.keys.profile_count) == "2"  # gone (v1's hash became theirs) and stays
    await store.client.hset(store.keys.legacy("c:gone", "cart"), "a", 1)  # an older layout's key, not migrated yet
    settings = store.settings
    logged_before = await store.client.xlen(store.keys.interactions)
    pids, _, logged = await erase(settings, "gone")
    assert pids == ["c:gone", "a:v1"]
    # the training log's entries of the customer and their visitor are deleted, not only skipped (issue 18)
    assert logged == 2 and await store.client.xlen(store.keys.interactions) == logged_before - 2
    stream = await store.client.xrange(store.keys.interactions)
    assert {fields["p"] for _, fields in stream} == {"c:stays"}
    keys = store.keys
    for pid in pids:
        assert not await store.client.exists(keys.profile(pid), *keys.legacy_profile_keys(pid)), pid
    assert not await store.client.exists(keys.alias("v1"), keys.visitors("gone"))
    assert await store.client.get(keys.profile_count) == "1"  # one hash deleted: one profile less
    assert [k async for k in store.client.scan_iter(match=f"{keys.profile('c:gone')}:seen:*")] == []
    # Kafka replays the old events: they stay out; a new event of the returning customer counts
    assert await apply(store, old[:3]) == [ERASED] * 3
    assert await apply(store, [ev("page_view", 5, now_ms() + 1000, customer_id="gone")]) == [APPLIED]
    assert (await store.profile("c:gone"))["event_counts"] == {"page_view": 1}  # type: ignore[index]
    assert await store.client.get(keys.profile_count) == "2"
    assert await store.profile("c:stays") is not None
    log = read_training_log(settings)
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
    pids, rows, _ = await erase(settings, "k3")
    assert rows == 1 and "c:k3" not in await exported() and "c:k2" in await exported()
    await store.client.aclose()


async def test_the_analytics_refresh_scans_the_profile_hashes_and_sets_the_profile_count_right(
    store: ProfileStore,
) -> None:
    """Key layout 5: no profiles index. The refresh reads every profile hash by a SCAN (every primary's on the
    cluster), one batch per ``analytics_scan_count``, and a profile that expired (deleted here as its TTL would) is
    taken off the profile count the workers keep."""
    from analytics.refresh import make_refresher
    from analytics.settings import AnalyticsSettings

    settings = store.settings
    events = [ev("product_view", i, T0 + i, customer_id=f"s{i}", item_id="a") for i in range(25)]
    events.append(ev("page_view", 99, T0 + 99, anonymous_id="s-visitor"))
    await apply(store, events)
    keys = store.keys
    assert await store.client.get(keys.profile_count) == "26"
    await store.client.delete(keys.profile("c:s7"))  # expired (ECRM_PROFILE_TTL_DAYS)
    await store.client.hset(keys.campaigns("c:s8"), "x", "1")  # a profile's other key is not a profile
    analytics = AnalyticsStore(store.client, settings.key_prefix)
    batches = [batch async for batch in analytics.scan_profiles(count=10)]
    pids = [row.pid for batch in batches for row in batch]
    assert sorted(pids) == sorted({*(f"c:s{i}" for i in range(25)), "a:s-visitor"} - {"c:s7"})
    assert len(batches) >= 3 and all(len(batch) <= 10 for batch in batches)
    assert await store.client.get(keys.profile_count) == "25"
    refresher = make_refresher(settings, AnalyticsSettings(analytics_min_customers=1000, analytics_scan_count=10))
    result = await refresher.refresh(force=True)
    assert result.state is not None and result.state.profiles == 25
    assert await store.client.get(keys.profile_count) == "25"  # nothing changed since: the count stays
    await refresher.store.client.aclose()


async def test_a_refresh_running_during_an_erasure_brings_no_row_back(settings: Settings) -> None:
    """Issue 18: the refresh read the customer before the erasure deleted them; its snapshot, published after the
    erasure, does not list them (nor does the snapshot it replaced)."""
    from analytics.refresh import make_refresher
    from analytics.settings import AnalyticsSettings

    store = ProfileStore(connect(settings), settings)
    events = [ev("purchase", i, T0 + i, customer_id=f"r{i}", order_id=f"o{i}", currency="EUR",
                 lines=[{"item_id": "a", "quantity": 1, "unit_price": 5.0 + i}]) for i in range(6)]  # fmt: skip
    await apply(store, events)
    cfg = AnalyticsSettings(analytics_min_customers=1000, analytics_scan_count=10)
    first = make_refresher(settings, cfg)
    assert (await first.refresh(force=True)).state is not None
    await first.store.client.aclose()
    refresher = make_refresher(settings, cfg)
    scan = refresher.store.scan_profiles
    erased: list[int] = []

    async def scan_then_erase(count: int = 1000) -> Any:
        async for batch in scan(count):
            yield batch
            if not erased:  # every row read, the customer among them, before the erasure ends
                rows = [r async for b in scan(count) for r in b]
                assert "c:r3" in {r.pid for r in rows}
                erased.append((await erase(settings, "r3"))[1])

    refresher.store.scan_profiles = scan_then_erase  # type: ignore[method-assign]
    result = await refresher.refresh(force=True)
    assert result.state is not None and erased == [1]  # the erasure removed the row of the snapshot then current
    analytics = refresher.store
    state = await analytics.state()
    assert state is not None and state.snapshot_id == result.state.snapshot_id
    listed: set[str] = set()
    for index in range(len(state.segments)):
        listed |= {row["profile_id"] for row in await analytics.members(state.snapshot_id, index, 0, 1000)}
    assert "c:r3" not in listed and "c:r2" in listed
    await refresher.store.client.aclose()
    await store.client.aclose()


async def test_the_script_renames_a_layout_3_profiles_long_names_at_its_first_write(store: ProfileStore) -> None:
    """A profile key layout 3 wrote (long names; key layout 4's count names too), met by an event before ``ecrm
    migrate-keys``: the script renames its fields before writing, and the figures go on from what it held; a
    visitor's long names merge at a login."""
    client = store.client
    await client.hset(store.keys.profile("c:old"), mapping={"n:purchase": 1, "first_seen": T0 - 50, "last_seen": T0 - 5,
                      "orders": 1, "revenue": "2.5", "first_purchase": T0 - 5, "last_purchase": T0 - 5})  # fmt: skip
    await client.hset(store.keys.profile("a:oldv"), mapping={"n:page_view": 2, "first_seen": T0 - 90,
                      "last_seen": T0 - 60, "aff_L": T0 - 90, "a:k1": "1.5", "#a": 1})  # fmt: skip
    assert (await store.profile("c:old") or {})["first_seen"] is not None  # read before the rename too
    paid = ev("purchase", "p", T0, customer_id="old", order_id="o", currency="EUR",
              lines=[{"item_id": "a", "quantity": 1, "unit_price": 10.0}])  # fmt: skip
    login = ev("page_view", "l", T0 + 1, customer_id="old", anonymous_id="oldv")
    assert await apply(store, [paid, login], source="server") == [APPLIED] * 2
    h = await client.hgetall(store.keys.profile("c:old"))
    assert not set(h) & set(layout.LEGACY_NAMES) and "n:purchase" not in h and "n:page_view" not in h
    assert (h[layout.ORDERS], float(h[layout.REVENUE]), h["n:p"], h["n:g"]) == ("2", 12.5, "2", "3")
    assert (await store.profile("c:old") or {})["event_counts"] == {"purchase": 2, "page_view": 3}
    assert (h[layout.FIRST_SEEN], h[layout.LAST_SEEN]) == (str(T0 - 90), str(T0 + 1))
    assert (h[layout.FIRST_PURCHASE], h[layout.LAST_PURCHASE], h[layout.AFF_LANDMARK]) == (
        str(T0 - 5),
        str(T0),
        str(T0 - 90),
    )
    assert h["a:k1"] == "1.5" and h[layout.MERGED_VISITORS] == "1"


async def test_a_login_merges_the_visitor_field_by_field(store: ProfileStore) -> None:
    """Key layout 4: the visitor's items, cart lines, affinities, counts and sessions (fields of one hash) merge into
    the customer's at the first login, field by field, and the visitor's hash is gone."""
    await apply(store, [
        ev("product_view", 1, T0, customer_id="m", item_id="a", category="k1", session_id="s1"),
        ev("add_to_cart", 2, T0 + 1, customer_id="m", item_id="a", quantity=1, session_id="s1"),
        ev("product_view", 3, T0 + 10, anonymous_id="w", item_id="a", category="k1", session_id="s2"),
        ev("product_view", 4, T0 + 11, anonymous_id="w", item_id="b", category="k2", session_id="s3"),
        ev("add_to_cart", 5, T0 + 12, anonymous_id="w", item_id="a", quantity=2, session_id="s3"),
        ev("add_to_cart", 6, T0 + 13, anonymous_id="w", item_id="b", quantity=1, session_id="s3"),
    ])  # fmt: skip
    m, w = await fields(store, "c:m"), await fields(store, "a:w")
    assert (m.sessions, w.sessions) == (1, 2) and w.cart == {"a": "2", "b": "1"}
    # the login's own session is the visitor's last one: it counts no new session
    login = ev("page_view", 7, T0 + 20, customer_id="m", anonymous_id="w", session_id="s3")
    assert await apply(store, [login]) == [APPLIED]
    assert not await store.client.exists(store.keys.profile("a:w"))
    merged = await fields(store, "c:m")
    assert merged.cart == {"a": "3", "b": "1"}
    assert parse_item(merged.items["a"]).weight == parse_item(m.items["a"]).weight + parse_item(w.items["a"]).weight
    assert parse_item(merged.items["a"]).ts == T0 + 12 and parse_item(merged.items["b"]).ts == T0 + 13
    assert set(merged.affinity) == {"k1", "k2"}
    assert merged.sessions == 3 and merged.scalars["sl"] == w.scalars["sl"]
    assert 0 <= int(merged.scalars["sl"]) < 2**28  # a digest the listpack keeps as an integer
    assert {f for f in merged.scalars if not f.startswith(COUNTS)} <= set(SCALARS)  # no other field
    assert merged.scalars["n:v"] == "3" and merged.scalars["n:a"] == "3"  # the types' codes (layout.TYPE_CODES)
    assert await store.client.get(store.keys.profile_count) == "1"  # the visitor's hash went
    assert merged.scalars[layout.FIRST_SEEN] == str(T0) and merged.scalars[layout.LAST_SEEN] == str(T0 + 20)
    assert not set(await store.client.hkeys(store.keys.profile("c:m"))) & set(layout.LEGACY_NAMES)  # short names
    counts = await store.client.hmget(store.keys.profile("c:m"), "#i", "#a", "#k")
    assert counts == ["2", "2", "2"]
    profile = await store.profile("c:m")
    assert profile is not None and profile["sessions"] == 3 and profile["merged_visitors"] == 1
    assert profile["cart"] == [{"item_id": "a", "quantity": 3}, {"item_id": "b", "quantity": 1}]


async def test_sessions_count_changes_of_session_id(store: ProfileStore) -> None:
    """The session count is the number of changes of session id (profiles/layout.py): the same id again counts
    nothing, a return to an older id after another one counts again (the approximation the docs state)."""
    visits = ["s1", "s1", "s2", "s2", "s1"]
    await apply(store, [ev("page_view", n, T0 + n, customer_id="q", session_id=s) for n, s in enumerate(visits)])
    profile = await store.profile("c:q")
    assert profile is not None and profile["sessions"] == 3
    assert await apply(store, [ev("page_view", 9, T0 + 9, customer_id="q")]) == [APPLIED]  # no session: no change
    assert (await fields(store, "c:q")).sessions == 3


async def test_a_typical_profile_is_one_compact_hash(store: ProfileStore) -> None:
    """The bench's profile (20 events over 10 items, 3 sessions, 2 cart lines, a purchase) is one listpack hash,
    on a single node and on the cluster (the embedded Valkey's hash-max-listpack settings)."""
    from benchmarks.memory import history

    plans = history(7, 20, 10)
    assert await store.apply_plans(plans) == [APPLIED] * 20
    pid = plans[0].profile
    assert pid is not None
    key = store.keys.profile(pid)
    assert await store.client.object("encoding", key) == "listpack"
    assert not await store.client.exists(*store.keys.legacy_profile_keys(pid))
    found = await fields(store, str(pid))
    assert len(found.items) == 10 and len(found.cart) == 2 and found.sessions == 3
    assert await store.client.memory_usage(key, samples=0) <= 700  # the lead's measure: 592 bytes


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


async def claims(store: ProfileStore, events: list[dict[str, Any]], client: str | None) -> list[Status]:
    """Apply events as a browser's (collect key) from network address ``client``."""
    weights = store.settings.event_weights
    plans = [plan_update(parse_event_obj(e), weights, "collect", (), client) for e in events]
    return await store.apply_plans(plans)


async def test_a_browser_weighs_like_one_visitor_in_shared_state(store: ProfileStore) -> None:
    """Issue 18: a collect key's events count once per visitor, address and item per period in popular, trending
    and the training log, for a bounded number of items; its purchases add no money; only catalogue items count
    once there is a catalogue; a trusted source counts every event."""
    keys = store.keys
    now = now_ms()
    catalogue = [ev("item", f"i{n}", now - 60_000, item_id=f"sku-{n}", title="t", category="k", price=1.0)
                 for n in range(80)]  # fmt: skip
    assert await apply(store, catalogue, source="admin") == [APPLIED] * 80
    flood = [ev("product_view", f"f{n}", now - 1000 + n, anonymous_id="v", item_id="sku-0") for n in range(50)]
    flood += [ev("add_to_cart", "c1", now, anonymous_id="v", item_id="sku-0", quantity=1)]
    buy = ev("purchase", "p1", now, anonymous_id="v", order_id="o", currency="EUR",
             lines=[{"item_id": "sku-0", "quantity": 9, "unit_price": 999.0}])  # fmt: skip
    assert await claims(store, [*flood, buy], "addr-1") == [APPLIED] * 52
    assert await store.client.zscore(keys.popular, "sku-0") == 5.0  # the heaviest event's weight, once
    stream = await store.client.xrange(keys.interactions)
    assert [(f["p"], f["i"], float(f["w"])) for _, f in stream] == [("a:v", "sku-0", w) for w in (1.0, 2.0, 2.0)]
    visitor = await store.client.hgetall(keys.profile("a:v"))
    assert layout.REVENUE not in visitor and layout.ORDERS not in visitor and layout.LAST_PURCHASE not in visitor
    assert layout.event_counts(visitor) == {"claimed_purchase": 1, "product_view": 50, "add_to_cart": 1}
    assert "sku-0" in await store.bought("a:v")  # the visitor's own lists know it
    entry = parse_item((await fields(store, "a:v")).items.get("sku-0") or "0")
    assert entry.weight == 50 * 1.0 + 3.0 + 5.0 and entry.bought == now  # unbounded there
    # a thousand new ids from the same address, and junk ids: the address has counted sku-0 already
    sybils = [ev("add_to_cart", f"s{n}", now, anonymous_id=f"new-{n}", item_id="sku-0", quantity=1) for n in range(30)]
    junk = [ev("product_view", f"j{n}", now, anonymous_id=f"new-{n}", item_id=f"junk-{n}") for n in range(30)]
    assert await claims(store, [*sybils, *junk], "addr-1") == [APPLIED] * 60
    assert await store.client.zscore(keys.popular, "sku-0") == 5.0
    assert not [i for i, _ in await store.client.zrange(keys.popular, 0, -1, withscores=True) if i.startswith("junk")]
    # one visitor counts for at most ECRM_SHARED_ITEMS_PER_VISITOR items, one address for ECRM_SHARED_ITEMS_PER_CLIENT
    many = [ev("product_view", f"m{n}", now, anonymous_id="w", item_id=f"sku-{n}") for n in range(1, 80)]
    assert await claims(store, many, "addr-2") == [APPLIED] * 79
    counted = [i for i in (f"sku-{n}" for n in range(1, 80)) if await store.client.zscore(keys.popular, i)]
    assert len(counted) == store.settings.shared_items_per_visitor
    # the shop's server is trusted: each of its events counts, and its purchase is an order
    served = [ev("product_view", f"t{n}", now, customer_id="c", item_id="sku-79") for n in range(3)]
    paid = ev("purchase", "tp", now, customer_id="c", order_id="o2", currency="EUR",
              lines=[{"item_id": "sku-79", "quantity": 1, "unit_price": 10.0}])  # fmt: skip
    assert await apply(store, [*served, paid], source="server") == [APPLIED] * 4
    assert await store.client.zscore(keys.popular, "sku-79") == 3.0 + 5.0
    customer = await store.client.hgetall(keys.profile("c:c"))
    assert customer[layout.ORDERS] == "1" and float(customer[layout.REVENUE]) == 10.0
    trending = {t.item_id for t in await store.trending(1000)}
    assert "sku-0" in trending and not any(i.startswith("junk") for i in trending)


async def test_a_logged_in_browser_adds_no_money_to_the_customer(store: ProfileStore) -> None:
    keys = store.keys
    now = now_ms()
    login = ev("page_view", "l", now - 5000, customer_id="k", anonymous_id="dev")
    paid = ev("purchase", "p0", now - 4000, customer_id="k", order_id="o0", currency="EUR",
              lines=[{"item_id": "a", "quantity": 1, "unit_price": 10.0}])  # fmt: skip
    assert await apply(store, [login, paid], source="server") == [APPLIED] * 2
    before = await store.client.hgetall(keys.profile("c:k"))
    forged = ev("purchase", "p1", now, anonymous_id="dev", order_id="o1", currency="EUR",
                lines=[{"item_id": "b", "quantity": 100, "unit_price": 9999.0}])  # fmt: skip
    view = ev("product_view", "v1", now, anonymous_id="dev", item_id="c")
    assert await claims(store, [forged, view], "addr-9") == [APPLIED] * 2
    after = await store.client.hgetall(keys.profile("c:k"))
    for figure in (layout.ORDERS, layout.REVENUE, layout.FIRST_PURCHASE, layout.LAST_PURCHASE):
        assert after[figure] == before[figure], figure
    counts = layout.event_counts(after)
    assert (counts["claimed_purchase"], counts["product_view"]) == (1, 1)  # the signals follow the person
    assert "b" not in await store.bought("c:k") and "a" in await store.bought("c:k")  # not a customer's bought item
    items = (await fields(store, "c:k")).items
    assert parse_item(items.get("b") or "0").bought is None
    assert "c" in dict(recent_items(items, 50))
