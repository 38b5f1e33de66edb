"""Upgrading the profile keys an older engine wrote (``ecrm migrate-keys``), one profile at a time, each step atomic
in its profile's slot and idempotent, so it runs on a live single node or Redis Cluster beside the workers:

* the keys an older engine kept beside a profile's hash (core/keyspace.py ``LEGACY_PROFILE_SUFFIXES``: layout 3's
  ``cart``, ``aff``, ``items`` and ``sess``, a HyperLogLog, and before it ``recent``, ``items_ts`` and ``bought``)
  are folded into the hash (profiles/layout.py): items as ``i:`` fields (weights added, the later times kept: the
  result does not depend on the order), affinities as ``a:`` fields (the same landmark ``aff_L``), cart lines as
  ``k:`` fields, the HyperLogLog's count (PFCOUNT) added to the session count ``ss``; then deleted. Layout 3's
  long field names (``first_seen``, ``orders``, ...) are renamed to the short ones in every profile hash
  (:func:`upgrade_profile_names`; the apply script does it too the first time it writes such a profile). All of a
  profile's keys share its hash tag, so one script folds them all: a reader never sees a half-folded profile;
* a single node's de-duplication set is cut to the window ``ECRM_DEDUPE_WINDOW_S`` (entries older go, and the set
  expires a window after now at the latest): a redelivery of an older message is recognised by its partition
  offset now;
* a key of the layout before tenants is moved into the tenant ``default`` (:func:`move_to_tenant`).
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

import redis

from core.keyspace import LEGACY_PROFILE_SUFFIXES, Keys, legacy_profile_key, legacy_siblings, tenant_of, untenanted
from core.redis import connect_sync, redis_errors
from core.settings import Settings
from core.tenants import configured_tenants

FIELDS_FORMAT = resources.files("profiles").joinpath("items.lua").read_text()  # the hash's fields, as apply.lua

# KEYS[1] the profile's hash, then the older keys beside it in the order of ARGV (their suffixes). Returns the
# suffixes of the keys that were there (folded and deleted).
FOLD_PROFILE = (
    FIELDS_FORMAT
    + """
local h = KEYS[1]
local existed = redis.call('EXISTS', h)
upgrade_names(h)
local ttl = -1
local folded = {}
for k = 2, #KEYS do
  local key, kind = KEYS[k], ARGV[k - 1]
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' then
    if kind == 'sess' then
      local n = 0
      if t == 'string' then n = redis.call('PFCOUNT', key) end
      if n > 0 then redis.call('HINCRBY', h, F_SESSIONS, n) end
    else
      local rows
      if t == 'zset' then
        rows = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      else
        rows = redis.call('HGETALL', key)
      end
      for i = 1, #rows, 2 do
        local name, v = rows[i], rows[i + 1]
        if kind == 'items' then
          local w, ti, p = item_parse_decimal(v)
          item_fold(h, name, w or 0, ti or 0, p)
        elseif kind == 'recent' or kind == 'items_ts' then
          item_fold(h, name, 0, tonumber(v) or 0, nil)
        elseif kind == 'bought' then
          item_fold(h, name, 0, 0, tonumber(v))
        elseif kind == 'cart' then
          cart_add(h, name, tonumber(v) or 0)
        elseif kind == 'aff' then
          affinity_add(h, name, tonumber(v) or 0)
        end
      end
    end
    local left = redis.call('PTTL', key)
    if left > ttl then ttl = left end
    redis.call('DEL', key)
    folded[#folded + 1] = kind
  end
end
if existed == 0 and ttl > 0 and redis.call('EXISTS', h) == 1 then redis.call('PEXPIRE', h, ttl) end
return folded
"""
)

# KEYS[1] a profile's hash: key layout 3's long field names renamed (profiles/layout.py LEGACY_NAMES) and key layout
# 4's count fields n:<type> moved to their code's (TYPE_CODES). Returns 1 if there were any.
RENAME_FIELDS = (
    FIELDS_FORMAT
    + """
local names = upgrade_names(KEYS[1])
if upgrade_counts(KEYS[1]) or names then return 1 end
return 0
"""
)

# KEYS[1] key layout 4's profiles index, [2] the profile count: the index's size added to the count, the index
# deleted (idempotent: it is gone after). Returns the profiles the index held (0: no index).
DROP_INDEX = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return 0 end
local n = redis.call('ZCARD', KEYS[1])
redis.call('INCRBY', KEYS[2], n)
redis.call('DEL', KEYS[1])
return n
"""

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


def upgrade_profile_key(client: redis.Redis, prefix: str, key: str, window_ms: int) -> list[str]:
    """Upgrade the profile ``key`` belongs to if it is an older profile key (:func:`core.keyspace.
    legacy_profile_key`): the older keys folded into its hash (their suffixes, all of the profile's at once), or
    ``["seen"]`` (a de-duplication set cut to the window); [] for any other key (a cluster's marker keys are left as
    they are: they hold the events' global records) or a profile folded already."""
    found = legacy_profile_key(prefix, key)
    if found is None:
        return []
    kind, target = found
    if kind == "seen":
        client.eval(CUT_SEEN, 1, key, window_ms)
        return ["seen"]
    folded = client.eval(FOLD_PROFILE, 1 + len(LEGACY_PROFILE_SUFFIXES), target, *legacy_siblings(target),
                         *LEGACY_PROFILE_SUFFIXES)  # fmt: skip
    return [f.decode() if isinstance(f, bytes) else str(f) for f in folded or []]


def upgrade_profile_names(client: redis.Redis, key: str) -> bool:
    """Rename key layout 3's long field names and key layout 4's count fields (``n:<type>``: to their code's) in
    the profile hash ``key`` (atomic, idempotent): whether it had any."""
    return bool(client.eval(RENAME_FIELDS, 1, key))


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


def drop_profiles_index(client: redis.Redis, keys: Keys) -> int:
    """Key layout 4's profiles index folded into the profile count (:attr:`~core.keyspace.Keys.profile_count`:
    its size added) and deleted (atomic, idempotent). Returns the profiles it held (0: there was none)."""
    return int(client.eval(DROP_INDEX, 2, keys.legacy_profiles_index, keys.profile_count))


def recount_profiles(client: redis.Redis, keys: Keys, counted_before: int, found: int) -> None:
    """The profile count made ``found`` (the profile hashes a full scan found) as of the scan's start
    (``counted_before``: the count then), what the workers changed meanwhile kept."""
    if found != counted_before:
        client.incrby(keys.profile_count, found - counted_before)


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
