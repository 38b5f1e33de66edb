"""The analytics refresh round of several tenants on the real Redis-compatible server (one node, then the three-node
Redis Cluster): the tenants due read their profiles by ONE walk of the keyspace (counted with Redis' own
``INFO commandstats``), and each publishes what refreshing it alone publishes (its own rows, its own segment rules),
its profile count set right; a tenant not due is left as it was."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from analytics.refresh import Outcome, Refresher, Underway, make_refresher, make_refreshers
from analytics.rules_file import DEFAULT_RULES_PATH
from analytics.settings import AnalyticsSettings
from analytics.store import AnalyticsStore
from core.keyspace import Keys, profiles_pattern
from core.redis import connect
from core.settings import Settings
from core.tenant_files import tenant_path
from profiles.store import ProfileStore
from profiles.updates import plan_update
from runtime.embedded import EmbeddedServer
from schemas import parse_event_obj
from stream.analytics_timer import refresh_due
from tests.conftest import on_cluster
from tests.integration.helpers import now_ms

pytestmark = pytest.mark.integration
DAY = 86_400_000
NOW = now_ms()
DUE = ("shop-a", "shop-b", "shop-c")
IDLE = "shop-idle"
OWN_RULES = """
version: 1
segments:
  - name: Big spenders
    when: {m: [4, 5]}
  - name: Others
"""


@pytest.fixture(params=["single", "cluster"])
def servers(request: pytest.FixtureRequest) -> tuple[str, list[EmbeddedServer]]:
    if request.param == "single":
        return "single", [request.getfixturevalue("redis_server")]
    return "cluster", list(request.getfixturevalue("redis_cluster"))


@pytest.fixture()
def shops(settings: Settings, servers: tuple[str, list[EmbeddedServer]], tmp_path: Path) -> Settings:
    """Four tenants; ``shop-c`` has segment rules of its own."""
    own = tenant_path(tmp_path / "tenants", "shop-c", "segments.yaml")
    own.parent.mkdir(parents=True)
    own.write_text(OWN_RULES)
    base = settings if servers[0] == "single" else on_cluster(settings, servers[1])
    return base.model_copy(update={"tenants": ",".join((*DUE, IDLE)), "tenants_dir": str(tmp_path / "tenants")})


def scan_calls(servers: list[EmbeddedServer]) -> int:
    """SCAN calls the server(s) answered so far (every node of a cluster), by their own count."""
    total = 0
    for server in servers:
        with redis.Redis(port=server.port) as r:
            total += int(r.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))
    return total


def shop_events(seed: int, buyers: int) -> list[dict[str, Any]]:
    """Purchase histories (the same customer ids in every shop, other histories) and a few visitors."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(buyers):
        for n in range(1 + int(rng.expovariate(0.7))):
            events.append({
                "type": "purchase", "event_id": f"p{i}-{n}", "timestamp": NOW - int(rng.uniform(1, 300) * DAY),
                "customer_id": f"k{i}", "order_id": f"o{i}-{n}", "currency": "EUR",
                "lines": [{"item_id": f"sku{rng.randrange(9)}", "quantity": 1, "unit_price": rng.uniform(5, 150)}],
            })  # fmt: skip
    for v in range(3):
        events.append({"type": "page_view", "event_id": f"v{v}", "timestamp": NOW - DAY, "anonymous_id": f"v{v}"})
    return events


async def write(settings: Settings, tenant: str, events: list[dict[str, Any]]) -> ProfileStore:
    store = ProfileStore(connect(settings), settings, tenant)
    plans = [plan_update(parse_event_obj(e), settings.event_weights, "direct") for e in events]
    await store.apply_plans(plans)
    return store


async def published(store: AnalyticsStore) -> dict[str, Any]:
    """The published state but for its times and id, and every segment's rows."""
    state = await store.state()
    assert state is not None
    out: dict[str, Any] = orjson.loads(state.to_json())
    for field in ("refreshed_at_ms", "snapshot_id", "duration_s"):
        out.pop(field)
    out["rows"] = {
        name: sorted(await store.members(state.snapshot_id, i, 0, 10_000), key=lambda r: str(r["profile_id"]))
        for i, name in enumerate(state.segments)
    }
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 (a cluster's nodes are walked in any order: the model's sums too)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def fixed(refresher: Refresher) -> Refresher:
    refresher.clock = lambda: NOW  # the same scores whenever it runs
    return refresher


async def test_one_round_walks_the_keyspace_once_for_every_tenant_due(
    shops: Settings, servers: tuple[str, list[EmbeddedServer]]
) -> None:
    # On a cluster the nodes' replies come in any order, so do the rows; the models are fitted on the rows in the
    # order of their ids (analytics.refresh.fit_models), so they are the same however the scan went.
    cfg = AnalyticsSettings(segments_file=DEFAULT_RULES_PATH, segments_check_interval_s=0, analytics_scan_count=10)
    stores = [await write(shops, t, shop_events(seed, 40)) for seed, t in enumerate((*DUE, IDLE))]
    idle = fixed(make_refresher(shops, cfg, IDLE))
    assert (await idle.refresh(force=True)).outcome is Outcome.REFRESHED  # refreshed just now: not due
    idle_before = await idle.store.state_raw()
    r = stores[0].client
    await r.set(Keys(shops.key_prefix, IDLE).profile_count, 999)  # wrong, and left so: the tenant is not refreshed
    for tenant in DUE:  # a profile of each due shop expires: its count is one too many until the refresh
        keys = Keys(shops.key_prefix, tenant)
        assert await r.delete(keys.profile("c:k7")) == 1 and await r.get(keys.profile_count) == "43"

    before = scan_calls(servers[1])
    walked = [key async for key in r.scan_iter(match=profiles_pattern(shops.key_prefix), count=10, _type="hash")]
    one_walk = scan_calls(servers[1]) - before
    assert len(walked) == 4 * 43 - 3 and one_walk >= 10  # every shop's profile hashes, in many round trips

    refreshers = [fixed(r) for r in make_refreshers(shops, cfg, [*DUE, IDLE])]
    before = scan_calls(servers[1])
    outcomes = await refresh_due(refreshers)
    round_calls = scan_calls(servers[1]) - before
    assert outcomes == [Outcome.REFRESHED] * 3 + [Outcome.NOT_DUE]
    assert round_calls <= one_walk + 2, (round_calls, one_walk)  # one walk, not three (the lock keys may add a step)
    round_states = {t: await published(refreshers[i].store) for i, t in enumerate(DUE)}
    assert await refreshers[3].store.state_raw() == idle_before  # the tenant not due: untouched
    assert await r.get(Keys(shops.key_prefix, IDLE).profile_count) == "999"
    for tenant in DUE:
        assert await r.get(Keys(shops.key_prefix, tenant).profile_count) == "42", tenant
    await refreshers[0].store.client.aclose()

    # each shop refreshed alone (``ecrm analytics refresh --tenant``) publishes the same, by a walk of its own
    before = scan_calls(servers[1])
    for tenant in DUE:
        alone = fixed(make_refresher(shops, cfg, tenant))
        assert (await alone.refresh(force=True)).outcome is Outcome.REFRESHED
        alone_state = await published(alone.store)
        assert same(alone_state, round_states[tenant]), (tenant, alone_state, round_states[tenant])
        await alone.store.client.aclose()
    assert scan_calls(servers[1]) - before >= 3 * one_walk - 6
    assert not same(round_states["shop-a"], round_states["shop-b"])  # other histories, other rows
    assert [s["name"] for s in round_states["shop-c"]["summary"]][:2] == ["Big spenders", "Others"]  # its own rules
    assert "Champions" in [s["name"] for s in round_states["shop-a"]["summary"]]
    assert all(round_states[t]["profiles"] == 42 for t in DUE)
    fitted = [t for t in DUE if round_states[t]["purchase"] is not None]
    assert fitted, {t: round_states[t]["model_error"] for t in DUE}
    await idle.store.client.aclose()
    for store in stores:
        await store.client.aclose()


async def test_a_tenant_locked_elsewhere_waits_and_the_others_refresh_in_the_round(settings: Settings) -> None:
    """A tenant whose lock another process holds is LOCKED (its state untouched, the other's lock kept); the other
    due tenants refresh; every lock the round took is released; a lost lock is not renewed (nothing computed)."""
    shops = settings.model_copy(update={"tenants": ",".join(DUE)})
    cfg = AnalyticsSettings(segments_file=DEFAULT_RULES_PATH, analytics_min_customers=1000)
    stores = [await write(shops, t, shop_events(seed, 12)) for seed, t in enumerate(DUE)]
    refreshers = make_refreshers(shops, cfg, list(DUE))
    r = stores[0].client
    held = await refreshers[1].store.acquire_lock(60)
    assert held is not None
    outcomes = await refresh_due(refreshers)
    assert outcomes == [Outcome.REFRESHED, Outcome.LOCKED, Outcome.REFRESHED]
    assert await refreshers[1].store.state() is None and await r.get(refreshers[1].store.keys.analytics_lock) == held
    for i in (0, 2):
        state = await refreshers[i].store.state()
        assert state is not None and state.profiles == 15
        assert not await r.exists(refreshers[i].store.keys.analytics_lock)
    begun = await refreshers[0].begin(force=True)
    assert isinstance(begun, Underway)
    await r.delete(refreshers[0].store.keys.analytics_lock)  # expired meanwhile
    before = await refreshers[0].store.state_raw()
    assert (await refreshers[0].finish(begun, [])).outcome is Outcome.LOCK_LOST
    assert await refreshers[0].store.state_raw() == before and not await r.exists(
        refreshers[0].store.keys.analytics_lock
    )
    await refreshers[0].store.client.aclose()
    for store in stores:
        await store.client.aclose()
