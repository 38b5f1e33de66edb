"""A three-node Valkey Redis Cluster started by the suite (``runtime.embedded.start_redis_cluster``), reached with
``ECRM_REDIS_CLUSTER=1`` through any node's URL: the keyspace puts every key of one profile in one slot (a script
over all of them runs; one with a global key beside them is refused as CROSSSLOT), and profiles spread over the
nodes. The pipeline runs there too (tests/integration/test_pipeline.py, test_store.py and test_profile_bounds.py run
on one node and on this cluster); here, what only a cluster has: a crash between a chunk's profile calls and its
global call, a login's hand-off interrupted, and a model promoted and served through the cluster client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from core.errors import StoreUnavailable
from core.keyspace import Keys, ProfileId, marker_digest
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.layout import item_value
from profiles.store import APPLIED, DUPLICATE, ProfileStore
from profiles.updates import Plan, plan_update
from runtime.embedded import EmbeddedServer
from runtime.local import settings_env
from schemas import EventLimits, parse_event_obj
from tests.conftest import on_cluster as cluster_settings
from tests.integration import test_campaigns, test_serving

pytestmark = pytest.mark.integration
COUNT_KEYS = "return #KEYS"
T0 = 1_795_424_400_000
LIMITS = EventLimits(now=datetime.fromtimestamp((T0 + 86_400_000) / 1000, UTC))


@pytest.fixture()
def on_cluster(redis_cluster: list[EmbeddedServer], settings: Settings) -> Settings:
    return cluster_settings(settings, redis_cluster)


@pytest.fixture()
def client(on_cluster: Settings) -> redis.Redis:
    return connect_sync(on_cluster, decode_responses=True)


def profile_keys(keys: Keys, pid: ProfileId) -> list[str]:
    """Every key of one profile the engine writes."""
    out = [keys.profile(pid), *keys.legacy_profile_keys(pid), keys.seen(pid, "direct", "e1"), keys.seen_set(pid)]
    out.append(keys.erased(pid))
    out.append(keys.served(pid))
    out.append(keys.alias(pid.ident) if pid.kind == "a" else keys.visitors(pid.ident))
    return out


@pytest.mark.parametrize("pid", [ProfileId("c", "alice"), ProfileId("a", "v:{x}\n"), ProfileId("c", "ü{}")])
def test_a_profiles_keys_share_one_slot_on_a_real_cluster(
    client: redis.Redis, settings: Settings, pid: ProfileId
) -> None:
    keys = Keys(settings.key_prefix)
    names = profile_keys(keys, pid)
    assert len({client.cluster_keyslot(name) for name in names}) == 1
    assert client.eval(COUNT_KEYS, len(names), *names) == len(names)  # one slot: the cluster runs it
    node = client.get_node_from_key(names[0])
    direct = redis.Redis(host=node.host, port=node.port)  # past the client's own check: the server refuses
    with pytest.raises(redis.ResponseError, match="same slot"):
        direct.eval(COUNT_KEYS, 2, names[0], keys.popular)
    direct.close()


def test_profiles_spread_over_the_three_nodes(client: redis.Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    for n in range(300):
        client.hset(keys.profile(ProfileId("c", f"spread-{n}")), "n:page_view", 1)
    per_node = [
        sum(1 for key in client.scan_iter(match=f"{settings.key_prefix}:p:*", target_nodes=node))
        for node in client.get_primaries()
    ]
    assert len(per_node) == 3 and sum(per_node) == 300 and min(per_node) > 50, per_node


async def test_the_api_reads_a_profile_through_the_cluster_client(client: redis.Redis, on_cluster: Settings) -> None:
    keys = Keys(on_cluster.key_prefix)
    pid = ProfileId("c", "reader")
    client.hset(keys.profile(pid), mapping={"n:product_view": 2, "fs": 1_790_000_000_000, "ls": 1_790_000_060_000,
                                            "ss": 2, "#i": 2, "i:sku-2": item_value(1, 1790000060000),
                                            "i:sku-1": item_value(1, 1790000000000)})  # fmt: skip
    store = ProfileStore(connect(on_cluster), on_cluster)
    try:
        profile = await store.profile(str(pid))
    finally:
        await store.client.aclose()
    assert profile is not None
    assert profile["events_total"] == 2 and profile["sessions"] == 2
    assert [r["item_id"] for r in profile["recent_items"]] == ["sku-2", "sku-1"]


# ----- the pipeline's exactness where a chunk takes several calls -----


class CrashingStore(ProfileStore):
    """A real store whose process "dies" (an error, nothing written) at its first call of the given mode: the apply
    script's ``global`` call (after the profile calls) or a login's ``profile`` calls (after its hand-off)."""

    def __init__(self, client: Any, settings: Settings, mode: str) -> None:
        super().__init__(client, settings)
        self.mode = mode

    async def _script_calls(self, calls: Sequence[tuple[list[str], list[Any]]], what: str) -> list[Any]:
        if calls[0][1][12] == self.mode:
            raise StoreUnavailable("the worker died here", "connection")
        return await super()._script_calls(calls, what)


def plans_of(settings: Settings, events: list[dict[str, Any]]) -> list[Plan]:
    return [plan_update(parse_event_obj(e, LIMITS), settings.event_weights) for e in events]


def ev(kind: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"{kind}-{n}", "timestamp": T0 + n, **fields}


def global_state(r: redis.Redis, keys: Keys) -> tuple[Any, ...]:
    return (
        r.get(keys.applied_count),
        r.get(keys.interactions_count),
        r.xlen(keys.interactions),
        r.zrange(keys.popular, 0, -1, withscores=True),
        r.get(keys.profile_count),
    )


async def test_a_crash_between_the_profile_calls_and_the_global_call_is_repaired_once(
    on_cluster: Settings, settings: Settings, client: redis.Redis
) -> None:
    events = [ev("product_view", n, customer_id=f"c{n % 7}", item_id=f"i{n % 5}") for n in range(40)]
    events += [ev("purchase", 50 + n, customer_id=f"c{n}", order_id=f"o{n}", currency="EUR",
                  lines=[{"item_id": "i1", "quantity": 1, "unit_price": 3.0}]) for n in range(3)]  # fmt: skip
    plans = plans_of(on_cluster, events)
    origins: list[tuple[str, int] | None] = [("events:0", 100 + n) for n in range(len(plans))]
    keys = Keys(on_cluster.key_prefix)
    crashing = CrashingStore(connect(on_cluster), on_cluster, "global")
    with pytest.raises(StoreUnavailable):
        await crashing.apply_plans(plans, origins)  # the profiles were written, the global call never ran
    assert client.get(keys.applied_count) is None and client.xlen(keys.interactions) == 0
    store = ProfileStore(connect(on_cluster), on_cluster)
    assert await store.apply_plans(plans, origins) == [DUPLICATE] * len(plans)  # the redelivery completes it
    after = global_state(client, keys)
    assert await store.apply_plans(plans, origins) == [DUPLICATE] * len(plans)  # and again: nothing more
    assert global_state(client, keys) == after
    resent = [("events:1", n) for n in range(len(plans))]  # a producer sent the events again: new offsets
    assert await store.apply_plans(plans, resent) == [DUPLICATE] * len(plans)
    assert global_state(client, keys) == after
    # the same events on one node, in one call each chunk: the same effects across profiles
    single = ProfileStore(connect(settings), settings)
    assert await single.apply_plans(plans) == [APPLIED] * len(plans)
    one = Keys(settings.key_prefix)
    assert global_state(connect_sync(settings, decode_responses=True), one) == after
    assert int(after[0]) == len(plans) and int(after[1]) == after[2] == len(plans)
    for s in (crashing, store, single):
        await s.client.aclose()


async def test_a_login_interrupted_after_its_hand_off_is_finished_by_the_redelivery(
    on_cluster: Settings, client: redis.Redis
) -> None:
    visitor = [ev("product_view", 1, anonymous_id="v", item_id="a", category="k", session_id="s1"),
               ev("add_to_cart", 2, anonymous_id="v", item_id="a", quantity=2)]  # fmt: skip
    login = [ev("page_view", 3, anonymous_id="v", customer_id="c", session_id="s2")]
    store = ProfileStore(connect(on_cluster), on_cluster)
    assert await store.apply_plans(plans_of(on_cluster, visitor), [("e:0", 1), ("e:0", 2)]) == [APPLIED] * 2
    crashing = CrashingStore(connect(on_cluster), on_cluster, "profile")
    with pytest.raises(StoreUnavailable):
        await crashing.apply_plans(plans_of(on_cluster, login), [("e:0", 3)])
    keys = Keys(on_cluster.key_prefix)
    assert client.hget(keys.alias("v"), "c") == "c" and client.hlen(keys.handoff("v")) == 1  # handed over
    for _ in range(2):  # redelivered twice: merged once
        assert await store.apply_plans(plans_of(on_cluster, login), [("e:0", 3)]) in ([APPLIED], [DUPLICATE])
    assert not client.exists(keys.handoff("v"))
    assert await store.profile("a:v") is None
    p = await store.profile("c:c", now=T0 + 10)
    assert p is not None and p["merged_visitors"] == 1 and p["sessions"] == 2
    assert p["event_counts"] == {"product_view": 1, "add_to_cart": 1, "page_view": 1}
    assert p["cart"] == [{"item_id": "a", "quantity": 2}]
    assert client.smembers(keys.visitors("c")) == {"v"}
    assert client.get(keys.profile_count) == "1"  # the visitor's hash became the customer's
    for s in (crashing, store):
        await s.client.aclose()


async def test_a_model_is_promoted_and_served_through_the_cluster_client(on_cluster: Settings) -> None:
    await test_serving.test_promoted_model_is_served_with_fold_in(on_cluster)


async def test_rollback_on_the_cluster(on_cluster: Settings) -> None:
    await test_serving.test_rollback_serves_the_previous_version(on_cluster)


async def test_campaign_outcomes_count_once_on_the_cluster(on_cluster: Settings, tmp_path: Path) -> None:
    await test_campaigns.test_a_known_uplift_is_reported_with_an_interval_containing_it_and_redelivery_changes_nothing(
        on_cluster, tmp_path
    )


async def test_a_visitors_variant_follows_the_login_on_the_cluster(on_cluster: Settings, tmp_path: Path) -> None:
    await test_campaigns.test_a_visitor_keeps_the_variant_after_logging_in(on_cluster, tmp_path)


def before_tenants(key: str) -> str:
    """A key of the tenant ``default`` as the layouts before tenants (4 and older) named it."""
    return key.replace("{default|", "{").replace("{t:default}", "{g}")


def test_migrate_keys_moves_an_older_layout_under_the_global_tag(settings: Settings) -> None:
    r = connect_sync(settings, decode_responses=True)
    p = settings.key_prefix
    r.zadd(f"{p}:popular", {"sku-1": 3.0})
    r.hset(f"{p}:camp:{{exp}}", "a:assigned", 2)
    r.set(f"{p}:model:current", "v1")
    r.hset(f"{p}:p:{{c:x}}", "n:page_view", 1)  # a profile's key stays
    r.set(f"{p}:{{g}}:model:current", "v2")  # already written by the current engine: kept
    r.set(f"{p}:p:{{c:x}}:seen:open:ev%3A1", "1", px=60_000)  # a marker key per event (of "ev:1" from "open")
    keys = Keys(p)
    old_seen = before_tenants(keys.seen_set("c:y"))  # an older engine's set: entries of 14 days, some older than
    # the window
    now = int(time.time() * 1000)
    r.zadd(old_seen, {"old": (now - 2 * 86_400_000) * 1024, "new": (now - 1000) * 1024})
    r.pexpire(old_seen, 14 * 86_400_000)
    env = settings_env(settings)
    out = subprocess.run([sys.executable, "-m", "ecrm", "migrate-keys"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "moved 2 global keys" in out.stdout, out.stdout + out.stderr
    assert "1 de-duplication markers" in out.stdout and "de-duplication sets to the window" in out.stdout
    assert r.zrange(keys.seen_set("c:y"), 0, -1) == ["new"] and not r.exists(old_seen)
    assert 0 < r.pttl(keys.seen_set("c:y")) <= settings.dedupe_window_s * 1000
    assert r.zrange(keys.popular, 0, -1, withscores=True) == [("sku-1", 3.0)]
    assert r.hgetall(keys.campaign_stats("exp")) == {"a:assigned": "2"}
    assert r.get(keys.model_current) == "v2" and r.get(f"{p}:model:current") == "v1"
    assert r.hgetall(keys.profile("c:x")) == {"n:g": "1"}  # key layout 4's count name: the type's code now
    assert r.zscore(keys.seen_set("c:x"), marker_digest("open", "ev:1")) is not None
    assert not r.exists(f"{p}:p:{{c:x}}:seen:open:ev%3A1")


@pytest.mark.parametrize("where", ["single", "cluster"])
async def test_migrate_keys_folds_an_older_engines_keys_into_the_profile_hash(
    settings: Settings, where: str, request: pytest.FixtureRequest
) -> None:
    """Key layout 3 (before tenants) kept a profile's cart, affinities, items and sessions (a HyperLogLog) in keys
    beside its hash,
    and older engines the item times (``items_ts``, ``recent``) and purchases (``bought``) apart: migrate-keys folds
    them all into the hash, one script per profile (the later times win, weights add to what the new engine wrote
    meanwhile, the HyperLogLog becomes a count), deletes them, and the profile and the request context read the same
    figures; on one node and on the cluster."""
    target = settings if where == "single" else request.getfixturevalue("on_cluster")
    r = connect_sync(target, decode_responses=True)
    keys = Keys(target.key_prefix)
    old = before_tenants  # the older engine was a single shop: its keys move into the tenant default too
    pids = [ProfileId("c", f"old-{n}") for n in range(20)]  # spread over the cluster's nodes
    for pid in pids:
        # its hash held one view of sku-1 already (a layout-4 engine wrote it: still before tenants)
        r.hset(old(keys.profile(pid)), mapping={"n:product_view": 3, "first_seen": T0, "last_seen": T0 + 3, "aff_L": T0,
                                           "i:sku-1": item_value(1, T0 + 3), "#i": 1})  # fmt: skip
        r.hset(old(keys.legacy(pid, "items")), mapping={"sku-1": "1", "sku-2": f"2.5 {T0}"})  # a plain weight: oldest
        r.hset(old(keys.legacy(pid, "items_ts")), mapping={"sku-1": T0, "sku-2": T0 + 1})
        r.zadd(old(keys.legacy(pid, "recent")), {"sku-1": T0 + 2, "sku-2": T0 + 1, "sku-3": T0 - 5})  # sku-3 only here
        r.hset(old(keys.legacy(pid, "bought")), mapping={"sku-2": T0 + 1, "sku-4": T0 - 9})  # sku-4: its times trimmed
        r.hset(old(keys.legacy(pid, "cart")), mapping={"sku-1": 2})
        r.hset(old(keys.legacy(pid, "aff")), mapping={"k1": "1.5", "k2": "0.25"})
        r.pfadd(old(keys.legacy(pid, "sess")), "s1", "s2", "s3")
    # key layout 4's profiles index: 19 of the profiles and one that expired since (its hash is gone)
    r.zadd(old(keys.legacy_profiles_index), {**{str(pid): T0 for pid in pids[1:]}, "c:expired": T0})
    out = subprocess.run(
        [sys.executable, "-m", "ecrm", "migrate-keys"], env=settings_env(target), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "folded 140 older profile keys into 20 profile hashes" in out.stdout, out.stdout
    assert "dropped the profiles index (20 profiles), the profile counts set to 20 profile hashes" in out.stdout
    assert not r.exists(keys.legacy_profiles_index, old(keys.legacy_profiles_index))
    assert r.get(keys.profile_count) == "20"
    again = subprocess.run(
        [sys.executable, "-m", "ecrm", "migrate-keys"], env=settings_env(target), capture_output=True, text=True
    )
    assert "the profile counts set to 20 profile hashes" in again.stdout and "dropped" not in again.stdout
    assert r.get(keys.profile_count) == "20"  # idempotent
    store = ProfileStore(connect(target), target)
    try:
        for pid in pids:
            assert not r.exists(*keys.legacy_profile_keys(pid))
            assert r.hgetall(keys.profile(pid)) == {
                "n:v": "3", "fs": str(T0), "ls": str(T0 + 3), "aL": str(T0),  # layout 3's and 4's names renamed
                "i:sku-1": item_value(2, T0 + 3),
                "i:sku-2": item_value(2.5, T0 + 1, T0 + 1),
                "i:sku-3": item_value(0, T0 - 5),
                "i:sku-4": item_value(0, T0 - 9, T0 - 9),
                "#i": "4", "k:sku-1": "2", "#k": "1", "a:k1": "1.5", "a:k2": "0.25", "#a": "2", "ss": "3",
            }  # fmt: skip
            assert r.object("encoding", keys.profile(pid)) == "listpack"
            assert not r.exists(old(keys.profile(pid)), *(old(k) for k in keys.legacy_profile_keys(pid)))
            assert await store.bought(str(pid)) == {"sku-2": T0 + 1, "sku-4": T0 - 9}
            profile = await store.profile(str(pid), now=T0)
            assert profile is not None
            assert [x["item_id"] for x in profile["recent_items"]] == ["sku-1", "sku-2", "sku-3", "sku-4"]
            assert profile["sessions"] == 3 and profile["cart"] == [{"item_id": "sku-1", "quantity": 2}]
            assert profile["category_affinity"] == {"k1": 1.5, "k2": 0.25}
            context, _ = await store.request_context(str(pid), whole_stock=False)
            assert context.history == [("sku-1", 2.0, T0 + 3), ("sku-2", 2.5, T0 + 1)]
            assert context.bought == {"sku-2": T0 + 1, "sku-4": T0 - 9} and context.categories == ["k1", "k2"]
        # a session after the fold counts one more (no last session known yet), a cart add adds to the line
        plans = [
            plan_update(parse_event_obj(e), target.event_weights)
            for e in (
                {"type": "add_to_cart", "event_id": "new-1", "timestamp": T0 + 9, "customer_id": "old-0",
                 "item_id": "sku-1", "quantity": 1, "session_id": "s4"},
            )
        ]  # fmt: skip
        assert await store.apply_plans(plans) == [1]
        after = r.hmget(keys.profile(pids[0]), "k:sku-1", "#k", "ss")
        assert after == ["3", "1", "4"]
        again = subprocess.run(
            [sys.executable, "-m", "ecrm", "migrate-keys"], env=settings_env(target), capture_output=True, text=True
        )
        assert again.returncode == 0 and "folded 0 older profile keys into 0" in again.stdout  # idempotent
        assert r.hget(keys.profile(pids[1]), "i:sku-2") == item_value(2.5, T0 + 1, T0 + 1)
    finally:
        await store.client.aclose()
        r.close()
