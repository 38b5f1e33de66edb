"""The worker's trainings on real Redis (stream/retrain.py): the tenant's status read from its keys, a training
started when it is due (a real process standing in for ``ecrm train``), its outcome counted with the tenant, and a
tenant whose training lock is held elsewhere, or too small to train, not started.

The same with several tenants in their own keyspaces: tests/integration/after_merge_fair_training.py (it needs
``Keys(prefix, tenant)``)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from core import metrics
from core.keyspace import Keys
from core.redis import connect
from core.settings import Settings
from stream.retrain import Trainings
from tests.conftest import wait_for
from tests.integration.helpers import sync_redis

pytestmark = pytest.mark.integration


def runs(outcome: str, tenant: str = "default") -> float:
    return float(metrics.TRAINING_RUNS.labels(outcome, tenant)._value.get())


def exits_with(code: int) -> object:
    async def spawn(_tenant: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(sys.executable, "-c", f"raise SystemExit({code})")

    return spawn


async def test_a_due_tenant_is_trained_once_and_its_outcome_counted(settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    r = sync_redis(settings)
    r.set(keys.interactions_count, 50)
    client = connect(settings)
    trainings = Trainings(settings, ("default",), client, exits_with(1))  # type: ignore[arg-type]
    try:
        assert await trainings.check() == []  # 50 interactions: too small (ECRM_TRAINING_MIN_INTERACTIONS=100)
        r.set(keys.interactions_count, 150)
        r.set(keys.model_lock, "someone")
        assert await trainings.check() == []  # its lock is held: not started, still due
        assert trainings.queue.due_since.get("default") is not None
        r.delete(keys.model_lock)
        before = runs("refused")
        assert await trainings.check() == ["default"]
        assert await trainings.check() == []  # running: not started twice
        proc = trainings.procs["default"]
        await asyncio.wait_for(proc.wait(), 30)
        r.hset(keys.model_trained, mapping={"count": 150, "at": 1})  # what `ecrm train` writes
        assert await trainings.check() == []
        assert runs("refused") - before == 1 and trainings.procs == {}
        wait_for(lambda: trainings.queue.waiting() == 0, timeout=5, what="nothing waiting")
    finally:
        await client.aclose()
