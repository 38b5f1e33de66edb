"""Redis adapter of the analytics: reads the whole base, publishes snapshots, serves the live state and pages.

Its keys (``an:state``, ``an:lock``, ``an:snap:...``) are named in :mod:`core.keyspace` with every other key: the
state is the JSON :class:`~analytics.state.AnalyticsState` of the last refresh, a snapshot's meta holds its segment
names and sizes, and its ``i``-th list the JSON export rows of the ``i``-th segment.

A snapshot is written under a new id with a TTL, then published atomically (state replaced, its keys made
persistent, the previous snapshot's keys given ``keep`` seconds to live), so an export paging through it is never
disturbed by a refresh. Redis errors become :class:`~core.errors.StoreUnavailable` (:mod:`core.redis`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from analytics.snapshot import ProfileRow, Snapshot
from analytics.state import AnalyticsState, LiveInput
from core.errors import StoreUnavailable
from core.keyspace import Keys, profile_of, profiles_pattern
from core.redis import redis_errors
from core.tenants import DEFAULT_TENANT

# A profile's fields (profiles/layout.py, a sibling library: not imported; tests/unit/test_profile_layout.py checks
# they match): orders, revenue, first and last purchase, first and last seen, then the same under key layout 3's
# long names (a profile ecrm migrate-keys or the apply script has not renamed yet: either is read); the views: the
# counts of product and page views (their codes' fields, and key layout 4's names: added up).
SESSIONS = "ss"
NAMES = ("or", "rv", "fp", "lp", "fs", "ls")
LEGACY = ("orders", "revenue", "first_purchase", "last_purchase", "first_seen", "last_seen")
VIEWS = ("n:v", "n:g", "n:product_view", "n:page_view")
PROFILE_FIELDS = (*NAMES, *LEGACY, *VIEWS, SESSIONS)
LIVE_FIELDS = (*NAMES[:4], *LEGACY[:4])
_WRITE_CHUNK = 1000
_PUBLISH_ATTEMPTS = 10

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: 1 lock, 2 state, then the new snapshot's keys (ARGV[4] of them), then the replaced snapshot's keys.
# ARGV: 1 lock token ('' = no lock), 2 state JSON, 3 keep (ms), 4 count of new keys, 5 replaced snapshot id ('').
# Returns 1 published, 0 lock lost, -1 the state changed since it was read (read again).
_PUBLISH = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local old = redis.call('GET', KEYS[2])
local old_sid = ''
if old then old_sid = cjson.decode(old).snapshot_id or '' end
if old_sid ~= ARGV[5] then return -1 end
local n = tonumber(ARGV[4])
for i = 3, 2 + n do redis.call('PERSIST', KEYS[i]) end
redis.call('SET', KEYS[2], ARGV[2])
for i = 3 + n, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return 1
"""


def _int(value: str | None) -> int | None:
    return int(float(value)) if value else None


def _money(value: str | None) -> float:
    """Revenue as stored (a float sum), rounded to 6 decimals so that equal sums compare equal."""
    return round(float(value), 6) if value else 0.0


def _either(values: list[str | None], n: int) -> list[str | None]:
    """The first ``n`` fields of an HMGET of names then legacy names: each under its name, else its legacy name."""
    return [values[i] if values[i] is not None else values[n + i] for i in range(n)]


def profile_row(pid: str, values: list[str | None]) -> ProfileRow:
    """A :class:`ProfileRow` from the HMGET of :data:`PROFILE_FIELDS` (pure)."""
    orders, revenue, first_p, last_p, first_s, last_s = _either(values, len(NAMES))
    views, sessions = values[2 * len(NAMES) : -1], values[-1]
    return ProfileRow(
        pid=pid,
        orders=_int(orders) or 0,
        revenue=_money(revenue),
        first_purchase_ms=_int(first_p),
        last_purchase_ms=_int(last_p),
        first_seen_ms=_int(first_s),
        last_seen_ms=_int(last_s),
        views=sum(_int(v) or 0 for v in views),
        sessions=_int(sessions) or 0,
    )


class AnalyticsStore:
    """Analytics reads and writes of one tenant on one Redis client (decoded strings)."""

    def __init__(self, client: aioredis.Redis, prefix: str, tenant: str = DEFAULT_TENANT) -> None:
        self.client = client
        self.prefix = prefix
        self.tenant = tenant
        self.keys = Keys(prefix, tenant)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._publish = client.register_script(_PUBLISH)

    # ----- reading the base -----

    async def scan_profiles(self, count: int = 1000) -> AsyncIterator[list[ProfileRow]]:
        """Every profile once, in batches: a SCAN of the profile hashes (:meth:`~core.keyspace.Keys.
        profile_pattern`; on a Redis Cluster every primary's), one pipeline per batch. A scan run to its end sets
        the profile count right (:meth:`_recount`). :func:`scan_tenants` reads several tenants in one SCAN."""
        async for _, batch in scan_tenants([self], count):
            yield batch

    async def _recount(self, counted_before: int, found: int) -> None:
        """The profile count (``{g}:stats:profiles``) made ``found`` as of the scan's start: the hashes that expired
        (``ECRM_PROFILE_TTL_DAYS``) are taken off, what the workers added or took off meanwhile is kept. Exact when
        no profile was created during the scan; one created meanwhile that the scan saw counts twice until the next
        refresh."""
        if found != counted_before:
            with redis_errors("setting the profile count right"):
                await self.client.incrby(self.keys.profile_count, found - counted_before)

    async def _rows(self, pids: list[str]) -> list[ProfileRow]:
        with redis_errors(f"reading {len(pids)} profiles"):
            async with self.client.pipeline(transaction=False) as pipe:
                for pid in pids:
                    pipe.hmget(self.keys.profile(pid), PROFILE_FIELDS)
                replies = await pipe.execute()
        # a hash gone since the scan found it (merged away, expired, erased) has no row
        return [
            profile_row(pid, values)
            for pid, values in zip(pids, replies, strict=True)
            if any(v is not None for v in values)
        ]

    async def forget_rows(self, pids: list[str]) -> int:
        """Remove erased profiles' rows from every segment snapshot: the current one, the previous one kept for
        exports in progress, and one a refresh is writing (its publication removes them again:
        :meth:`erased_since`). Returns the rows removed."""
        state = await self.state()
        sids = {state.snapshot_id: len(state.segments)} if state is not None else {}
        prefix = self.keys.snapshot("")
        with redis_errors("listing the segment snapshots"):
            async for key in self.client.scan_iter(match=f"{prefix}*", count=1000):
                sid = key[len(prefix) :]
                if ":" not in sid and sid not in sids:
                    meta = await self.snapshot_meta(sid)
                    if meta is not None:
                        sids[sid] = len(meta.get("segments", []))
        wanted = set(pids)
        removed = 0
        for sid, segments in sids.items():
            here = 0
            for index in range(segments):
                key = self.keys.snapshot_members(sid, index)
                with redis_errors("erasing rows of a segment snapshot"):
                    rows = await self.client.lrange(key, 0, -1)
                    for raw in rows:
                        if orjson.loads(raw).get("profile_id") in wanted:
                            here += int(await self.client.lrem(key, 0, raw))
            if here:
                await self._resize_snapshot(sid, segments)
            removed += here
        return removed

    async def erased_since(self, since_ms: int) -> list[str]:
        """The profiles erased at or after ``since_ms`` (the erasures index)."""
        with redis_errors("reading the erasures"):
            return list(await self.client.zrangebyscore(self.keys.erasures, since_ms, "+inf"))

    async def _resize_snapshot(self, sid: str, segments: int) -> None:
        meta = await self.snapshot_meta(sid)
        if meta is None:
            return
        with redis_errors("updating a segment snapshot"):
            meta["sizes"] = [int(await self.client.llen(self.keys.snapshot_members(sid, i))) for i in range(segments)]
            await self.client.set(self.keys.snapshot(sid), orjson.dumps(meta), keepttl=True)

    # ----- the refresh lock -----

    async def acquire_lock(self, ttl_s: float) -> str | None:
        """A token when this caller now holds the refresh lock, None when someone else does."""
        token = uuid.uuid4().hex
        with redis_errors("taking the analytics lock"):
            ok = await self.client.set(self.keys.analytics_lock, token, nx=True, px=int(ttl_s * 1000))
        return token if ok else None

    async def renew_lock(self, token: str, ttl_s: float) -> bool:
        """Give the lock ``token`` holds ``ttl_s`` seconds to live again; False when it is no longer held."""
        with redis_errors("renewing the analytics lock"):
            return bool(await self._renew(keys=[self.keys.analytics_lock], args=[token, int(ttl_s * 1000)]))

    async def release_lock(self, token: str) -> None:
        with redis_errors("releasing the analytics lock"):
            await self._release(keys=[self.keys.analytics_lock], args=[token])

    # ----- publishing -----

    async def write_snapshot(self, snap: Snapshot, ttl_s: float) -> str:
        """Write the snapshot's members under a new id (with a TTL until published); returns the id."""
        sid = f"{snap.refreshed_at_ms:x}-{uuid.uuid4().hex[:8]}"
        ttl_ms = int(ttl_s * 1000)
        meta = {
            "refreshed_at_ms": snap.refreshed_at_ms,
            "segments": snap.segments,
            "sizes": [len(snap.members.get(name, [])) for name in snap.segments],
        }
        with redis_errors("writing the segment snapshot"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.snapshot(sid), orjson.dumps(meta), px=ttl_ms)
                for i, name in enumerate(snap.segments):
                    rows = snap.members.get(name, [])
                    key = self.keys.snapshot_members(sid, i)
                    for start in range(0, len(rows), _WRITE_CHUNK):
                        pipe.rpush(key, *(orjson.dumps(r) for r in rows[start : start + _WRITE_CHUNK]))
                    if rows:
                        pipe.pexpire(key, ttl_ms)
                    if len(pipe) >= 50:
                        await pipe.execute()
                await pipe.execute()
        return sid

    async def publish(self, state: AnalyticsState, token: str | None, keep_s: float) -> bool:
        """Make ``state`` (and its snapshot) current; False when the lock ``token`` was lost meanwhile."""
        new_keys = self.keys.snapshot_keys(state.snapshot_id, len(state.segments))
        for _ in range(_PUBLISH_ATTEMPTS):
            old = await self.state()
            old_keys = self.keys.snapshot_keys(old.snapshot_id, len(old.segments)) if old is not None else []
            keys = [self.keys.analytics_lock, self.keys.analytics_state, *new_keys, *old_keys]
            args: list[Any] = [token or "", state.to_json(), int(keep_s * 1000), len(new_keys)]
            args.append(old.snapshot_id if old is not None else "")
            with redis_errors("publishing the analytics state"):
                result = int(await self._publish(keys=keys, args=args))
            if result >= 0:
                return result == 1
        raise StoreUnavailable("publishing the analytics state: it kept changing meanwhile", "contention")

    # ----- reads for the API -----

    async def live(self, pid: str) -> tuple[LiveInput, str | None]:
        """The live raw RFM values of ``pid`` and the JSON of the last published state, in one round trip."""
        with redis_errors(f"reading the analytics of {pid!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hmget(self.keys.profile(pid), LIVE_FIELDS)
                pipe.get(self.keys.analytics_state)
                values, raw = await pipe.execute()
        orders, revenue, first_p, last_p = _either(values, 4)
        live = LiveInput(
            orders=_int(orders) or 0,
            revenue=_money(revenue),
            first_purchase_ms=_int(first_p),
            last_purchase_ms=_int(last_p),
        )
        return live, raw

    async def state_raw(self) -> str | None:
        """The JSON of the last published state, if any."""
        with redis_errors("reading the analytics state"):
            raw: str | None = await self.client.get(self.keys.analytics_state)
        return raw

    async def state(self) -> AnalyticsState | None:
        raw = await self.state_raw()
        return AnalyticsState.from_json(raw) if raw else None

    async def snapshot_meta(self, sid: str) -> dict[str, Any] | None:
        """Segment names and sizes of snapshot ``sid``; None when it has expired (or never existed)."""
        with redis_errors(f"reading segment snapshot {sid!r}"):
            raw = await self.client.get(self.keys.snapshot(sid))
        meta: dict[str, Any] | None = orjson.loads(raw) if raw else None
        return meta

    async def members(self, sid: str, index: int, offset: int, limit: int) -> list[dict[str, Any]]:
        """Rows ``offset`` .. ``offset + limit - 1`` of the ``index``-th segment of snapshot ``sid``."""
        with redis_errors(f"reading segment snapshot {sid!r}"):
            rows = await self.client.lrange(self.keys.snapshot_members(sid, index), offset, offset + limit - 1)
        return [orjson.loads(r) for r in rows]


async def scan_tenants(
    stores: Sequence[AnalyticsStore], count: int = 1000
) -> AsyncIterator[tuple[AnalyticsStore, list[ProfileRow]]]:
    """Every profile of each store's tenant once, in batches of one tenant (``(store, rows)``), read by ONE walk of
    the keyspace: a SCAN matching every tenant's profile hashes (:func:`~core.keyspace.profiles_pattern`; one
    tenant's own pattern when there is one store; on a Redis Cluster every primary's), the keys of tenants not
    among ``stores`` skipped, one pipeline per batch. A scan run to its end sets each tenant's profile count right
    (:meth:`AnalyticsStore._recount`). The stores share one client and prefix."""
    if not stores:
        return
    client, prefix = stores[0].client, stores[0].prefix
    by_tenant = {store.tenant: store for store in stores}
    if len(by_tenant) != len(stores) or any(s.client is not client or s.prefix != prefix for s in stores):
        raise ValueError("scan_tenants: one store per tenant, all on one client and prefix")
    pattern = stores[0].keys.profile_pattern() if len(stores) == 1 else profiles_pattern(prefix)
    with redis_errors("reading the profile counts"):
        async with client.pipeline(transaction=False) as pipe:
            for store in stores:
                pipe.get(store.keys.profile_count)
            counted_before = {s.tenant: int(n or 0) for s, n in zip(stores, await pipe.execute(), strict=True)}
    seen: dict[str, set[str]] = {tenant: set() for tenant in by_tenant}
    batches: dict[str, list[str]] = {tenant: [] for tenant in by_tenant}
    with redis_errors("scanning the profiles"):
        async for key in client.scan_iter(match=pattern, count=count, _type="hash"):
            found = profile_of(prefix, key)
            if found is None or found[0] not in by_tenant:
                continue  # a tenant not refreshed now
            tenant, pid = found
            if (text := str(pid)) in seen[tenant]:
                continue
            seen[tenant].add(text)
            batch = batches[tenant]
            batch.append(text)
            if len(batch) >= count:
                yield by_tenant[tenant], await by_tenant[tenant]._rows(batch)
                batches[tenant] = []
    for tenant, batch in batches.items():
        if batch:
            yield by_tenant[tenant], await by_tenant[tenant]._rows(batch)
    for tenant, store in by_tenant.items():
        await store._recount(counted_before[tenant], len(seen[tenant]))
