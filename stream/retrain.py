"""The worker decides when to retrain: a Faust timer checks, for each tenant the engine hosts, the interaction count
and the time since its last training, and starts ``ecrm train --tenant T`` as a separate process, so ingestion keeps
flowing while it trains.

At most ``ECRM_TRAINING_CONCURRENCY`` trainings run at once, the longest-due tenant first
(:mod:`stream.training_queue`): one large shop never starves the others. A tenant with fewer than
``ECRM_TRAINING_MIN_INTERACTIONS`` interactions is not trained and serves the popular items.

Another timer (``ECRM_TRAINING_LOG_DRAIN_S``) starts ``ecrm train-log drain`` likewise: the training log's entries move
from Redis to the training-log store on disk (trainer/logstore.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import faust
import redis.asyncio as aioredis

from core import metrics
from core.clock import now_ms
from core.errors import ConfigError, StoreUnavailable
from core.keyspace import Keys
from core.process import die_with_parent
from core.redis import connect
from core.registry import AsyncRegistry, TrainingStatus
from core.settings import Settings
from core.tenants import DEFAULT_TENANT, TenantError, configured_tenants
from stream.training_queue import TrainingQueue

log = logging.getLogger(__name__)
FAILED_BACKOFF_S = 60.0

Spawn = Callable[[str], Awaitable[asyncio.subprocess.Process]]


def register_retraining(app: faust.App, settings: Settings) -> None:
    try:
        tenants = configured_tenants(settings.api_keys, settings.tenants)
    except TenantError as exc:
        raise ConfigError(f"ECRM_TENANTS or ECRM_API_KEYS: {exc}") from exc
    metrics.host_tenants(tenants)
    trainings = Trainings(settings, tenants, connect(settings))

    if settings.training_log_drain_s > 0:
        draining: dict[str, asyncio.subprocess.Process] = {}

        @app.timer(interval=settings.training_log_drain_s)
        async def drain_training_log() -> None:
            """Copy the training log out of Redis into the store on disk (``ecrm train-log drain``, a process of
            its own at the training's low priority), unless a training (which drains first) or the last drain
            still runs."""
            if any(map(busy, trainings.procs.values())) or busy(draining.get("proc")):
                return
            draining["proc"] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ecrm",
                "train-log",
                "drain",
                "--no-wait",
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=background_child,
            )

    @app.timer(interval=settings.retrain_check_s)
    async def maybe_retrain() -> None:
        await trainings.check()


async def training_status(client: aioredis.Redis, keys: Keys) -> TrainingStatus:
    """One tenant's training status (its interactions logged, its last training, its lock), in its keyspace."""
    return await AsyncRegistry(client, keys).training_status()


def train_command(tenant: str) -> list[str]:
    """``ecrm train`` for one tenant (``--tenant`` for any but the default one, which needs none)."""
    command = [sys.executable, "-m", "ecrm", "train"]
    return command if tenant == DEFAULT_TENANT else [*command, "--tenant", tenant]


async def spawn_training(tenant: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *train_command(tenant), stdin=asyncio.subprocess.DEVNULL, preexec_fn=background_child
    )


@dataclass
class Trainings:
    """The worker's trainings: each tenant's triggers checked, the queue fed, finished trainings counted."""

    settings: Settings
    tenants: Sequence[str]
    client: aioredis.Redis
    spawn: Spawn = spawn_training
    queue: TrainingQueue = field(init=False)
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queue = TrainingQueue(self.settings.training_concurrency, int(FAILED_BACKOFF_S * 1000))

    async def check(self) -> list[str]:
        """One round: count the finished trainings, read every tenant's status, start the next. The tenants started."""
        now = now_ms()
        self._reap(now)
        busy: list[str] = []
        for tenant in self.tenants:
            if tenant in self.queue.running:
                continue
            try:
                status = await training_status(self.client, Keys(self.settings.key_prefix, tenant))
            except StoreUnavailable as exc:
                log.warning("retraining check failed: %s", exc)
                return []
            if status.busy:
                busy.append(tenant)
            self.queue.observe(tenant, self.due(status, now), now)
        started = self.queue.next(now, blocked=busy)
        for tenant in started:
            log.info("starting a training of tenant %s (%d waiting)", tenant, self.queue.waiting() - 1)
            self.queue.started(tenant)
            self.procs[tenant] = await self.spawn(tenant)
        self._observe(now)
        return started

    def due(self, status: TrainingStatus, now: int) -> bool:
        s = self.settings
        if status.interactions < s.training_min_interactions:
            return False  # too small to train: the popular items serve it
        return should_retrain(
            status.interactions,
            status.trained_count,
            status.trained_at_ms,
            now,
            s.retrain_min_interactions,
            s.retrain_interval_s,
        )

    def _reap(self, now: int) -> None:
        for tenant, proc in list(self.procs.items()):
            if proc.returncode is None:
                continue
            del self.procs[tenant]
            outcome = training_outcome(proc.returncode)
            metrics.TRAINING_RUNS.labels(outcome, metrics.tenant_label(tenant)).inc()
            self.queue.finished(tenant, outcome != "failed", now)

    def _observe(self, now: int) -> None:
        metrics.TRAINING_WAITING.set(self.queue.waiting())
        for tenant in self.tenants:
            since = self.queue.due_since.get(tenant)
            waited = (now - since) / 1000 if since is not None and tenant not in self.queue.running else 0.0
            metrics.TRAINING_OVERDUE.labels(metrics.tenant_label(tenant)).set(waited)


def busy(proc: asyncio.subprocess.Process | None) -> bool:
    return proc is not None and proc.returncode is None


def training_outcome(returncode: int) -> str:
    """``ecrm train``'s exit code -> ``promoted`` (0), ``refused`` by the holdout gate (1), else ``failed``."""
    return {0: "promoted", 1: "refused"}.get(returncode, "failed")


def background_child() -> None:
    """The training process yields the CPU to ingestion and dies with the worker: the lowest priority (nice 19) under
    the batch scheduling policy (``SCHED_BATCH``: a CPU-bound job that never preempts the worker on a wake-up), so on
    a busy host the training takes longer, not the events."""
    die_with_parent()
    os.nice(19)
    if hasattr(os, "sched_setscheduler"):  # Linux
        with contextlib.suppress(OSError):  # a sandbox refusing the call leaves nice 19 alone
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def should_retrain(
    count_now: int, trained_count: int | None, trained_at_ms: int | None, now_ms: int, min_new: int, interval_s: float
) -> bool:
    """The worker's trigger (pure): never trained yet, N new interactions, or T seconds with at least one new one."""
    new = count_now - (trained_count or 0)
    if new <= 0:
        return False
    if trained_at_ms is None or new >= min_new:
        return True
    return (now_ms - trained_at_ms) / 1000.0 >= interval_s
