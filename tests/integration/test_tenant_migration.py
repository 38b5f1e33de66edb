"""``ecrm migrate-keys`` moves a single-shop deployment (the key layout before tenants) into the tenant ``default``,
on one node and on the suite's three-node Redis Cluster (where every key changes slot: DUMP, RESTORE with its expiry,
DEL): values, types and expiries kept, nothing left under the old names, the engine reads the moved profile; a second
run moves nothing; a move cut off between its copy and its delete is finished; a key the new engine already wrote is
a conflict, reported (exit 1) and left as it is."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from core.keyspace import Keys, ProfileId, untenanted
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.layout import count_field, item_value
from profiles.store import ProfileStore
from runtime.embedded import EmbeddedServer
from runtime.local import settings_env
from tests.conftest import on_cluster

pytestmark = pytest.mark.integration
T0 = 1_795_424_400_000


def before_tenants(key: str) -> str:
    """A key of the tenant ``default`` as the layout before tenants named it."""
    return key.replace("{default|", "{").replace("{t:default}", "{g}")


def migrate(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecrm", "migrate-keys"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_single_shop(r: redis.Redis, keys: Keys, customers: int) -> dict[str, str]:
    """A single shop's keys of every Redis type, as layout 5 (one hash per profile, before tenants) named them;
    returns old name -> new name."""
    names: dict[str, str] = {}
    for n in range(customers):  # spread over the cluster's slots
        pid = ProfileId("c", f"cust-{n}")
        old = before_tenants(keys.profile(pid))
        r.hset(old, mapping={count_field("product_view"): 2, "fs": T0, "ls": T0 + 5, "i:sku-1": item_value(2, T0 + 5),
                             "#i": 1, "ss": 2})  # fmt: skip
        r.set(before_tenants(keys.erased(ProfileId("c", f"gone-{n}"))), T0, px=3_600_000)
        r.hset(before_tenants(keys.item(f"sku-{n}")), mapping={"category": "shoes", "price": "9.5"})
        names[old] = keys.profile(pid)
        names[before_tenants(keys.item(f"sku-{n}"))] = keys.item(f"sku-{n}")
        names[before_tenants(keys.erased(ProfileId("c", f"gone-{n}")))] = keys.erased(ProfileId("c", f"gone-{n}"))
    r.zadd(before_tenants(keys.popular), {"sku-1": 3.0, "sku-2": 1.0})
    r.xadd(before_tenants(keys.interactions), {"p": "c:cust-0", "i": "sku-1", "w": "2", "t": str(T0)})
    r.sadd(before_tenants(keys.catalogue), "sku-1", "sku-2")
    r.set(before_tenants(keys.model_current), "v7")
    r.hset(before_tenants(keys.campaign_stats("spring")), "a:assigned", 4)
    for k in (keys.popular, keys.interactions, keys.catalogue, keys.model_current, keys.campaign_stats("spring")):
        names[before_tenants(k)] = k
    return names


@pytest.mark.parametrize("where", ["single", "cluster"])
async def test_migrate_keys_moves_a_single_shop_into_the_tenant_default(
    settings: Settings, where: str, redis_cluster: list[EmbeddedServer]
) -> None:
    target = settings if where == "single" else on_cluster(settings, redis_cluster)
    r = connect_sync(target, decode_responses=True)
    keys = Keys(target.key_prefix)
    names = write_single_shop(r, keys, 12)
    assert all(untenanted(target.key_prefix, old) == new for old, new in names.items())
    before = {old: (r.type(old), r.dump(old)) for old in names}
    ttl = r.pttl(before_tenants(keys.erased(ProfileId("c", "gone-0"))))
    try:
        out = migrate(target)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"moved {len(names)} keys into the tenant default" in out.stdout, out.stdout
        for old, new in names.items():
            assert not r.exists(old), old
            assert (r.type(new), r.dump(new)) == before[old], new
        moved_ttl = r.pttl(keys.erased(ProfileId("c", "gone-0")))
        assert 0 < moved_ttl <= ttl and r.pttl(keys.popular) == -1
        left = [k for k in r.scan_iter(match=f"{target.key_prefix}:*", count=1000) if untenanted(target.key_prefix, k)]
        assert left == []  # no key of the layout before tenants is left, on every node
        store = ProfileStore(connect(target), target)
        try:
            profile = await store.profile("c:cust-3")
            assert profile is not None and profile["event_counts"] == {"product_view": 2} and profile["sessions"] == 2
            assert [s.item_id for s in await store.popular(5)] == ["sku-1", "sku-2"]
        finally:
            await store.client.aclose()

        again = migrate(target)  # idempotent
        assert again.returncode == 0 and "moved 0 keys into the tenant default" in again.stdout, again.stdout

        # a profile of layout 3 (its cart and sessions in keys beside its hash, before tenants): folded into its
        # hash first, then the hash moved into the tenant default (the move is the last pass)
        pid = ProfileId("c", "layout-3")
        r.hset(before_tenants(keys.profile(pid)), mapping={"n:add_to_cart": 1, "fs": T0, "ls": T0})
        r.hset(before_tenants(keys.legacy(pid, "cart")), mapping={"sku-9": 2})
        r.pfadd(before_tenants(keys.legacy(pid, "sess")), "s1")
        folded = migrate(target)
        assert folded.returncode == 0, folded.stdout + folded.stderr
        assert "folded 2 older profile keys into 1 profile hashes" in folded.stdout, folded.stdout
        assert "moved 1 keys into the tenant default" in folded.stdout, folded.stdout
        assert r.hmget(keys.profile(pid), "k:sku-9", "#k", "ss") == ["2", "1", "1"]
        assert not r.exists(before_tenants(keys.profile(pid)), *keys.legacy_profile_keys(pid))
        assert not any(r.exists(before_tenants(k)) for k in keys.legacy_profile_keys(pid))

        # a move cut off after its copy (the old key still there, the new one holding the same value): finished
        r.restore(before_tenants(keys.popular), 0, r.dump(keys.popular))
        # a key the new engine already wrote under its new name: a conflict, both kept
        r.set(before_tenants(keys.model_current), "v6")
        third = migrate(target)
        assert third.returncode == 1, third.stdout + third.stderr
        assert "moved 1 keys into the tenant default" in third.stdout
        assert "1 keys were not moved" in third.stderr and before_tenants(keys.model_current) in third.stderr
        assert not r.exists(before_tenants(keys.popular))
        assert r.get(keys.model_current) == "v7" and r.get(before_tenants(keys.model_current)) == "v6"
    finally:
        r.close()
