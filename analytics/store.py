"""Redis adapter of the analytics: reads the whole base, publishes snapshots, serves the live state and pages.

Key layout (beside :mod:`ecrm.keys`, same prefix):

| key | type | holds |
|---|---|---|
| ``{p}:an:state`` | string | JSON :class:`~analytics.state.AnalyticsState` of the last refresh |
| ``{p}:an:lock`` | string | token of the refresh holding the lock (TTL) |
| ``{p}:an:snap:{sid}`` | string | JSON meta of snapshot ``sid``: segment names and sizes |
| ``{p}:an:snap:{sid}:{i}`` | list | JSON export rows of the ``i``-th segment of snapshot ``sid`` |

A snapshot is written under a new id with a TTL, then published atomically (state replaced, its keys made
persistent, the previous snapshot's keys given ``keep`` seconds to live), so an export paging through it is never
disturbed by a refresh. Redis errors become :class:`~ecrm.store.StoreUnavailable`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from analytics.snapshot import ProfileRow, Snapshot
from analytics.state import AnalyticsState, LiveInput
from ecrm.store import StoreUnavailable

PROFILE_FIELDS = (
    "orders",
    "revenue",
    "first_purchase",
    "last_purchase",
    "first_seen",
    "last_seen",
    "n:product_view",
    "n:page_view",
)
LIVE_FIELDS = ("orders", "revenue", "first_purchase", "last_purchase")
_WRITE_CHUNK = 1000

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ARGV: 1 prefix, 2 lock token ('' = no lock), 3 new snapshot id, 4 its segment count, 5 state JSON, 6 keep (ms)
_PUBLISH = """
local P = ARGV[1]
if ARGV[2] ~= '' and redis.call('GET', P .. ':an:lock') ~= ARGV[2] then return 0 end
local function snap_keys(sid, n)
  local keys = {P .. ':an:snap:' .. sid}
  for i = 0, n - 1 do keys[#keys + 1] = P .. ':an:snap:' .. sid .. ':' .. i end
  return keys
end
local old = redis.call('GET', P .. ':an:state')
for _, k in ipairs(snap_keys(ARGV[3], tonumber(ARGV[4]))) do redis.call('PERSIST', k) end
redis.call('SET', P .. ':an:state', ARGV[5])
if old then
  local o = cjson.decode(old)
  if o.snapshot_id ~= ARGV[3] then
    for _, k in ipairs(snap_keys(o.snapshot_id, #o.segments)) do redis.call('PEXPIRE', k, ARGV[6]) end
  end
end
return 1
"""


class AnalyticsKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def state(self) -> str:
        return f"{self.prefix}:an:state"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:an:lock"

    def snapshot(self, sid: str) -> str:
        return f"{self.prefix}:an:snap:{sid}"

    def members(self, sid: str, index: int) -> str:
        return f"{self.prefix}:an:snap:{sid}:{index}"


def _int(value: str | None) -> int | None:
    return int(float(value)) if value else None


def _money(value: str | None) -> float:
    """Revenue as stored (a float sum), rounded to 6 decimals so that equal sums compare equal."""
    return round(float(value), 6) if value else 0.0


def profile_row(pid: str, values: list[str | None], sessions: int) -> ProfileRow:
    """A :class:`ProfileRow` from the HMGET of :data:`PROFILE_FIELDS` (pure)."""
    orders, revenue, first_p, last_p, first_s, last_s, n_pv, n_page = values
    return ProfileRow(
        pid=pid,
        orders=_int(orders) or 0,
        revenue=_money(revenue),
        first_purchase_ms=_int(first_p),
        last_purchase_ms=_int(last_p),
        first_seen_ms=_int(first_s),
        last_seen_ms=_int(last_s),
        views=(_int(n_pv) or 0) + (_int(n_page) or 0),
        sessions=int(sessions),
    )


class AnalyticsStore:
    """Analytics reads and writes on one Redis client (decoded strings)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = AnalyticsKeys(prefix)
        self._profiles = f"{prefix}:profiles"
        self._release = client.register_script(_RELEASE)
        self._publish = client.register_script(_PUBLISH)

    # ----- reading the base -----

    async def scan_profiles(self, count: int = 1000) -> AsyncIterator[list[ProfileRow]]:
        """Every profile once, in batches (ZSCAN over the profiles index, one pipeline per batch)."""
        seen: set[str] = set()
        cursor = 0
        while True:
            try:
                cursor, batch = await self.client.zscan(self._profiles, cursor, count=count)
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(f"scanning the profiles failed: {exc}") from exc
            pids = [pid for pid, _ in batch if pid not in seen]
            seen.update(pids)
            if pids:
                yield await self._rows(pids)
            if cursor == 0:
                return

    async def _rows(self, pids: list[str]) -> list[ProfileRow]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for pid in pids:
                    pipe.hmget(f"{self.prefix}:p:{pid}", PROFILE_FIELDS)
                    pipe.pfcount(f"{self.prefix}:p:{pid}:sess")
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading {len(pids)} profiles failed: {exc}") from exc
        rows = []
        for i, pid in enumerate(pids):
            values, sessions = replies[2 * i], replies[2 * i + 1]
            if any(v is not None for v in values):  # a profile merged away since the scan saw it
                rows.append(profile_row(pid, values, sessions))
        return rows

    # ----- the refresh lock -----

    async def acquire_lock(self, ttl_s: float) -> str | None:
        """A token when this caller now holds the refresh lock, None when someone else does."""
        token = uuid.uuid4().hex
        try:
            ok = await self.client.set(self.keys.lock, token, nx=True, px=int(ttl_s * 1000))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"taking the analytics lock failed: {exc}") from exc
        return token if ok else None

    async def release_lock(self, token: str) -> None:
        try:
            await self._release(keys=[self.keys.lock], args=[token])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"releasing the analytics lock failed: {exc}") from exc

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
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.snapshot(sid), orjson.dumps(meta), px=ttl_ms)
                for i, name in enumerate(snap.segments):
                    rows = snap.members.get(name, [])
                    key = self.keys.members(sid, i)
                    for start in range(0, len(rows), _WRITE_CHUNK):
                        pipe.rpush(key, *(orjson.dumps(r) for r in rows[start : start + _WRITE_CHUNK]))
                    if rows:
                        pipe.pexpire(key, ttl_ms)
                    if len(pipe) >= 50:
                        await pipe.execute()
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"writing the segment snapshot failed: {exc}") from exc
        return sid

    async def publish(self, state: AnalyticsState, token: str | None, keep_s: float) -> bool:
        """Make ``state`` (and its snapshot) current; False when the lock ``token`` was lost meanwhile."""
        args: list[Any] = [
            self.prefix,
            token or "",
            state.snapshot_id,
            len(state.segments),
            state.to_json(),
            int(keep_s * 1000),
        ]
        try:
            return bool(await self._publish(keys=[], args=args))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"publishing the analytics state failed: {exc}") from exc

    # ----- reads for the API -----

    async def live(self, pid: str) -> tuple[LiveInput, str | None]:
        """The live raw RFM values of ``pid`` and the JSON of the last published state, in one round trip."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hmget(f"{self.prefix}:p:{pid}", LIVE_FIELDS)
                pipe.get(self.keys.state)
                (orders, revenue, first_p, last_p), raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading the analytics of {pid!r} failed: {exc}") from exc
        live = LiveInput(
            orders=_int(orders) or 0,
            revenue=_money(revenue),
            first_purchase_ms=_int(first_p),
            last_purchase_ms=_int(last_p),
        )
        return live, raw

    async def state_raw(self) -> str | None:
        """The JSON of the last published state, if any."""
        try:
            raw: str | None = await self.client.get(self.keys.state)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading the analytics state failed: {exc}") from exc
        return raw

    async def state(self) -> AnalyticsState | None:
        raw = await self.state_raw()
        return AnalyticsState.from_json(raw) if raw else None

    async def snapshot_meta(self, sid: str) -> dict[str, Any] | None:
        """Segment names and sizes of snapshot ``sid``; None when it has expired (or never existed)."""
        try:
            raw = await self.client.get(self.keys.snapshot(sid))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading segment snapshot {sid!r} failed: {exc}") from exc
        meta: dict[str, Any] | None = orjson.loads(raw) if raw else None
        return meta

    async def members(self, sid: str, index: int, offset: int, limit: int) -> list[dict[str, Any]]:
        """Rows ``offset`` .. ``offset + limit - 1`` of the ``index``-th segment of snapshot ``sid``."""
        try:
            rows = await self.client.lrange(self.keys.members(sid, index), offset, offset + limit - 1)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading segment snapshot {sid!r} failed: {exc}") from exc
        return [orjson.loads(r) for r in rows]
