"""The key layout's migration (``ecrm migrate-keys``, and ``ecrm restore`` of a backup of an older layout): the
global keys of an engine older than the Redis Cluster support move under the hash tag ``{g}``, and the
de-duplication markers of older engines (a key per event) into their profile's set. Single node only; keys
already moved stay as they are."""

from __future__ import annotations

import time

import redis

from core.keyspace import legacy_global, legacy_marker
from core.redis import redis_errors


def migrate_layout(client: redis.Redis, prefix: str, dedupe_ttl_days: float) -> tuple[int, int]:
    """Migrate every key under ``prefix`` on one node (a client that decodes); returns (global keys moved,
    de-duplication markers moved)."""
    moved = markers = 0
    ttl_ms = int(dedupe_ttl_days * 86_400_000)
    now = int(time.time() * 1000) * 1024  # the set's score: when, in 1/1024 ms (profiles/apply.lua)
    with redis_errors("moving the global keys under {g}"):
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            new = legacy_global(prefix, key)
            if new is not None and client.renamenx(key, new):
                moved += 1
            marker = legacy_marker(prefix, key)
            if marker is not None:
                pipe = client.pipeline(transaction=True)
                pipe.zadd(marker[0], {marker[1]: now}, nx=True).pexpire(marker[0], ttl_ms).delete(key)
                pipe.execute()
                markers += 1
    return moved, markers
