"""Three tenants in their own keyspaces on real Redis, one slot (ECRM_TRAINING_CONCURRENCY=1): a large shop due at
every check never keeps the two small ones from training, each is trained on its own triggers, and a tenant too
small to train is never started (it serves the popular items)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from core.keyspace import Keys
from core.redis import connect
from core.settings import Settings
from stream.retrain import Trainings
from tests.integration.helpers import sync_redis

pytestmark = pytest.mark.integration


async def test_one_slot_is_shared_fairly_by_three_tenants(settings: Settings) -> None:
    r = sync_redis(settings)
    started: list[str] = []

    async def spawn(tenant: str) -> asyncio.subprocess.Process:
        started.append(tenant)
        keys = Keys(settings.key_prefix, tenant)
        count = int(r.get(keys.interactions_count) or 0)
        r.hset(keys.model_trained, mapping={"count": count, "at": 1})  # what `ecrm train --tenant` writes
        return await asyncio.create_subprocess_exec(sys.executable, "-c", "raise SystemExit(0)")

    sizes = {"big": 100_000, "small-a": 150, "small-b": 200, "tiny": 5}
    for tenant, count in sizes.items():
        r.set(Keys(settings.key_prefix, tenant).interactions_count, count)
    one = settings.model_copy(update={"training_concurrency": 1, "retrain_min_interactions": 10})
    client = connect(one)
    trainings = Trainings(one, tuple(sizes), client, spawn)
    try:
        for _ in range(12):
            r.incrby(Keys(one.key_prefix, "big").interactions_count, 1000)
            await trainings.check()
            for proc in list(trainings.procs.values()):
                await asyncio.wait_for(proc.wait(), 30)
        assert {"small-a", "small-b"} <= set(started[:3])  # both small shops within the first three trainings
        assert started.count("big") >= 4  # and the large one keeps training
        assert "tiny" not in started
    finally:
        await client.aclose()
