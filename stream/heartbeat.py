"""The worker's heartbeat: while it holds partitions of the events topic, every second it sets a key with a short
expiry, so ``GET /health/ready`` (``"worker": true``) and ``ecrm up`` know that an event posted now is consumed
(a worker that is still joining its group holds none, and a dead one stops beating)."""

from __future__ import annotations

import logging

import faust
import redis.asyncio as aioredis

from core.errors import StoreUnavailable
from core.keyspace import Keys
from core.redis import connect, redis_errors
from core.settings import Settings

log = logging.getLogger(__name__)
BEAT_S = 1.0
EXPIRES_MS = 5_000


def register_heartbeat(app: faust.App, settings: Settings) -> None:
    """Beat every second while the consumer holds partitions of the events topic."""
    key = Keys(settings.key_prefix).worker_consuming
    clients: list[aioredis.Redis] = []  # created on the first beat, inside the worker's event loop

    @app.timer(interval=BEAT_S, name="worker_heartbeat")
    async def worker_heartbeat() -> None:
        held = [tp for tp in app.consumer.assignment() if tp.topic == settings.events_topic]
        if not held:
            return
        if not clients:
            clients.append(connect(settings))
        try:
            with redis_errors("worker heartbeat"):
                await clients[0].set(key, len(held), px=EXPIRES_MS)
        except StoreUnavailable as exc:
            log.warning("%s", exc)
