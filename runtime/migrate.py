"""The key layout's migration (``ecrm migrate-keys``, and ``ecrm restore`` of a backup of an older layout), one key
at a time, each step atomic and idempotent (it may run beside the workers and the API of this engine):

* on a single node or a Redis Cluster: the keys an older engine kept beside a profile's hash (``cart``, ``aff``,
  ``items``, ``sess``, and the item times and purchases ``recent``, ``items_ts``, ``bought``) folded into the hash,
  one script per profile, key layout 3's long field names renamed in every profile hash
  (:func:`profiles.migrate.upgrade_profile_names`), and the de-duplication sets cut to ``ECRM_DEDUPE_WINDOW_S``
  (:func:`profiles.migrate.upgrade_profile_key`); key layout 4's count fields ``n:<type>`` moved to their code's
  (``n:<code>``), and its profiles index (a sorted set) dropped for the profile count (its size added first, then
  the count set to the profile hashes the scan found);
* on a single node only (a cluster never held those layouts): the global keys of an engine older than the Redis
  Cluster support moved under the hash tag ``{g}``, and the de-duplication markers of older engines (a key per event)
  into their profile's set (kept for the window);
* last, every key of the layouts before tenants (4 and older) moved into the tenant ``default``
  (:func:`profiles.migrate.move_to_tenant`; a profile's older keys are folded first, so the move finds its hash)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from core.keyspace import Keys, is_profile_hash, legacy_global, legacy_marker, legacy_profile_key, tenant_of
from core.redis import connect_sync, redis_errors
from core.settings import Settings
from core.tenants import DEFAULT_TENANT
from profiles.migrate import (
    drop_profiles_index,
    move_to_tenant,
    recount_profiles,
    upgrade_profile_key,
    upgrade_profile_names,
)

MAX_CONFLICTS_NAMED = 20


@dataclass
class Migrated:
    """What a migration did: global keys moved under ``{g}``, markers moved into their profile's set, profiles whose
    older keys were folded into their hash, and per step of :func:`profiles.migrate.upgrade_profile_key` (an older
    key's suffix, or ``seen``) the keys upgraded."""

    moved: int = 0
    markers: int = 0
    profiles: int = 0
    upgraded: Counter[str] = field(default_factory=Counter)
    to_tenant: int = 0  # keys moved into the tenant default
    conflicts: int = 0  # keys whose new name the new engine already wrote (left for the operator)
    conflicting: list[str] = field(default_factory=list)  # the first MAX_CONFLICTS_NAMED of them
    indexed: int = 0  # profiles key layout 4's profiles indexes held (folded into the profile counts, then deleted)
    counted: int = 0  # profile hashes found: each tenant's profile count set to its own

    @property
    def folded(self) -> int:
        """Older keys (cart, aff, items, sess, recent, items_ts, bought) folded into their profile's hash."""
        return sum(n for step, n in self.upgraded.items() if step not in ("seen", "names"))

    @property
    def renamed(self) -> int:
        """Profile hashes whose key layout 3 field names were renamed (a hash folded first was renamed then)."""
        return self.upgraded["names"]


def migrate_layout(
    client: redis.Redis,
    prefix: str,
    window_ms: int,
    cluster: bool = False,
    progress: Callable[[int], None] = lambda _: None,
) -> Migrated:
    """Migrate every key under ``prefix`` (a client that decodes; on a cluster every primary is scanned);
    ``window_ms``: the de-duplication window (ECRM_DEDUPE_WINDOW_S). ``progress`` is called with the number of keys
    looked at every 100,000 keys."""
    done = Migrated()
    now = int(time.time() * 1000) * 1024  # the set's score: when, in 1/1024 ms (profiles/apply.lua)
    with redis_errors("upgrading the key layout"):
        hashes: set[str] = set()  # a SCAN may give a key twice
        for n, key in enumerate(client.scan_iter(match=f"{prefix}:*", count=1000), start=1):
            steps = upgrade_profile_key(client, prefix, key, window_ms)
            done.upgraded.update(steps)
            if is_profile_hash(prefix, key):
                hashes.add(key)
                if upgrade_profile_names(client, key):
                    done.upgraded["names"] += 1
            done.profiles += 1 if steps and steps != ["seen"] else 0
            if (
                legacy_profile_key(prefix, key) is None and not cluster
            ):  # a cluster never held the layouts before the tag {g}
                new = legacy_global(prefix, key)
                if new is not None and client.renamenx(key, new):
                    done.moved += 1
                marker = legacy_marker(prefix, key)
                if marker is not None:
                    pipe = client.pipeline(transaction=True)
                    pipe.zadd(marker[0], {marker[1]: now}, nx=True).pexpire(marker[0], window_ms).delete(key)
                    pipe.execute()
                    done.markers += 1
            if n % 100_000 == 0:
                progress(n)
        _move_to_tenant(client, prefix, cluster, done, progress)
        _count_profiles(client, prefix, hashes, done)
    return done


def _count_profiles(client: redis.Redis, prefix: str, hashes: set[str], done: Migrated) -> None:
    """The last step, once every key is in a tenant: each tenant's profiles index of layout 4 (moved into the tenant
    ``default``) dropped for its profile count, and each count set to the profile hashes the scan found for it
    (the workers stopped: the analytics refresh counts again on its own anyway)."""
    found: Counter[str] = Counter(tenant_of(prefix, key) or DEFAULT_TENANT for key in hashes)
    for tenant in sorted(set(found) | {DEFAULT_TENANT}):
        keys = Keys(prefix, tenant)
        done.indexed += drop_profiles_index(client, keys)
        recount_profiles(client, keys, int(client.get(keys.profile_count) or 0), found[tenant])
    done.counted = sum(found.values())


def _move_to_tenant(
    client: redis.Redis, prefix: str, cluster: bool, done: Migrated, progress: Callable[[int], None]
) -> None:
    """The second pass: every key of the layout before tenants into the tenant ``default`` (a key the first pass
    upgraded is moved in its upgraded form)."""
    for n, key in enumerate(client.scan_iter(match=f"{prefix}:*", count=1000), start=1):
        found = move_to_tenant(client, prefix, key, cluster)
        if found is not None and found[0] == "conflict":
            done.conflicts += 1
            if len(done.conflicting) < MAX_CONFLICTS_NAMED:
                done.conflicting.append(key)
        elif found is not None:
            done.to_tenant += 1
        if n % 100_000 == 0:
            progress(n)


def migrate_deployment(settings: Settings, progress: Callable[[int], None] = lambda _: None) -> Migrated:
    """:func:`migrate_layout` on the deployment ``settings`` name (its Redis, prefix, window and cluster flag)."""
    client = connect_sync(settings, decode_responses=True)
    try:
        window_ms = int(settings.dedupe_window_s * 1000)
        return migrate_layout(client, settings.key_prefix, window_ms, cluster=settings.redis_cluster, progress=progress)
    finally:
        client.close()
