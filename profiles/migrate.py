"""Upgrading the profile keys an older engine wrote (``ecrm migrate-keys``), one key at a time, each step atomic in
its profile's slot and idempotent, so it runs on a live single node or Redis Cluster beside the workers:

* an older engine's item times (``{p}:p:{T}:items_ts``, a hash item -> last time, and ``{p}:p:{T}:recent``, a
  sorted set of the same entries) and purchases (``{p}:p:{T}:bought``, item -> last purchase time) are now in
  ``items`` beside each weight (``"<weight> <time>[ <purchase>]"``, which also gives the recent items): folded into
  ``items`` (the later times win), then deleted;
* a single node's de-duplication set is cut to the window ``ECRM_DEDUPE_WINDOW_S`` (entries older go, and the set
  expires a window after now at the latest): a redelivery of an older message is recognised by its partition
  offset now;
* a key of the layout before tenants is moved into the tenant ``default`` (:func:`move_to_tenant`).
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

import redis

from core.keyspace import Keys, legacy_profile_key, tenant_of, untenanted
from core.redis import connect_sync, redis_errors
from core.settings import Settings
from core.tenants import configured_tenants

ITEMS_FORMAT = resources.files("profiles").joinpath("items.lua").read_text()  # the entries' format, as apply.lua

FOLD_TIMES = (
    ITEMS_FORMAT
    + """
local rows
if redis.call('TYPE', KEYS[1])['ok'] == 'zset' then
  rows = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
else
  rows = redis.call('HGETALL', KEYS[1])
end
local existed = redis.call('EXISTS', KEYS[2])
local purchases = ARGV[1] == 'bought'  -- else item times
local function put(item, w, t, p)  -- (the later of t and p: the result does not depend on the scan order)
  redis.call('HSET', KEYS[2], item, item_value(w, t, p))
end
local older = {}
for i = 1, #rows, 2 do older[rows[i]] = tonumber(rows[i + 1]) end
local items = redis.call('HGETALL', KEYS[2])
for i = 1, #items, 2 do  -- every entry in the current form, the later times kept
  local w, t, p = item_parse(items[i + 1])
  local o = older[items[i]]
  older[items[i]] = nil
  if o and purchases then
    if (not p) or o > p then p = o end
  elseif o and o > t then
    t = o
  end
  put(items[i], w, t, p)
end
for item, o in pairs(older) do
  if purchases then put(item, 0, 0, o) else put(item, 0, o, nil) end
end
local ttl = redis.call('PTTL', KEYS[1])
if existed == 0 and #rows > 0 and ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('DEL', KEYS[1])
return #rows / 2
"""
)

CUT_SEEN = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local gone = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', (now - window) * 1024))
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or ttl > window then redis.call('PEXPIRE', KEYS[1], window) end
return gone
"""

Step = Literal["recent", "items_ts", "bought", "seen"]


def upgrade_profile_key(client: redis.Redis, prefix: str, key: str, window_ms: int) -> Step | None:
    """Upgrade one key if it is an older profile key (:func:`core.keyspace.legacy_profile_key`): what was done, or
    None (any other key; a cluster's marker keys are left as they are: they hold the events' global records)."""
    found = legacy_profile_key(prefix, key)
    if found is None:
        return None
    kind, target = found
    if kind in ("recent", "items_ts", "bought"):
        client.eval(FOLD_TIMES, 2, key, target, kind)
        return "recent" if kind == "recent" else "items_ts" if kind == "items_ts" else "bought"
    client.eval(CUT_SEEN, 1, key, window_ms)
    return "seen"


Moved = Literal["moved", "done", "conflict"]


def move_to_tenant(client: redis.Redis, prefix: str, key: str, cluster: bool) -> tuple[Moved, str] | None:
    """Move one key of the layout before tenants into the tenant ``default`` (:func:`core.keyspace.untenanted`), with
    its value and expiry: ``moved``; ``done`` when the new key already holds the same value (a move cut off between
    its copy and its delete, finished now); ``conflict`` when the new key holds another value (the engine of the new
    layout wrote it: both are left for the operator). None for any other key, or one gone meanwhile.

    On a single node an atomic RENAMENX; on a Redis Cluster the key changes slot: DUMP, RESTORE with its expiry,
    then DEL (idempotent: run again after a crash in between, it finds the copy and deletes the original)."""
    new = untenanted(prefix, key)
    if new is None:
        return None
    if not cluster and client.renamenx(key, new):
        return "moved", new
    payload = client.dump(key)
    if payload is None:
        return None
    ttl = int(client.pttl(key))
    if cluster and not client.exists(new):
        try:
            client.restore(new, max(ttl, 0), payload)
        except redis.ResponseError as exc:  # BUSYKEY: created meanwhile
            if "BUSYKEY" not in str(exc):
                raise
        else:
            client.delete(key)
            return "moved", new
    if client.dump(new) == payload:
        client.delete(key)
        return "done", new
    return "conflict", new


def forget_offsets(client: redis.Redis, applied_offsets: str, topic: str) -> int:
    """Forget the applied offsets of ``topic``'s partitions (``{p}:{g}:offsets``): a topic created again starts at
    offset 0, and its messages must not pass for redeliveries of the old one's. Returns how many were forgotten."""
    fields = [
        f
        for f in client.hkeys(applied_offsets)
        if (f.decode() if isinstance(f, bytes) else f).rpartition(":")[0] == topic
    ]
    return int(client.hdel(applied_offsets, *fields)) if fields else 0


def forget_topic_offsets(settings: Settings) -> int:
    """:func:`forget_offsets` of the events topic for every tenant (the configured ones and any other whose offsets
    Redis holds), on the configured Redis."""
    client = connect_sync(settings)
    prefix = settings.key_prefix
    try:
        with redis_errors("forgetting the applied offsets of the events topic created"):
            tenants = set(configured_tenants(settings.api_keys, settings.tenants))
            for key in client.scan_iter(match=f"{prefix}:{{t:*}}:offsets", count=1000):
                found = tenant_of(prefix, key.decode() if isinstance(key, bytes) else str(key))
                tenants |= {found} if found else set()
            topic = settings.events_topic
            return sum(forget_offsets(client, Keys(prefix, t).applied_offsets, topic) for t in sorted(tenants))
    finally:
        client.close()
