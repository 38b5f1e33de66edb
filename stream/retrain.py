"""The worker decides when to retrain: a Faust timer checks the interaction count and the time since the last
training, and starts ``ecrm train`` as a separate process, so ingestion keeps flowing while it trains. Another timer
(``ECRM_TRAINING_LOG_DRAIN_S``) starts ``ecrm train-log drain`` likewise: the training log's entries move from Redis
to the training-log store on disk (trainer/logstore.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time

import faust

from core import metrics
from core.clock import now_ms
from core.errors import StoreUnavailable
from core.keyspace import Keys
from core.process import die_with_parent
from core.redis import connect
from core.registry import AsyncRegistry
from core.settings import Settings

log = logging.getLogger(__name__)
FAILED_BACKOFF_S = 60.0


def register_retraining(app: faust.App, settings: Settings) -> None:
    running: dict[str, asyncio.subprocess.Process] = {}
    started = [0.0]
    counted = [True]  # whether the last training's outcome is counted
    registry = AsyncRegistry(connect(settings), Keys(settings.key_prefix))

    if settings.training_log_drain_s > 0:
        draining: dict[str, asyncio.subprocess.Process] = {}

        @app.timer(interval=settings.training_log_drain_s)
        async def drain_training_log() -> None:
            """Copy the training log out of Redis into the store on disk (``ecrm train-log drain``, a process of
            its own at the training's low priority), unless a training (which drains first) or the last drain
            still runs."""
            if busy(running.get("proc")) or busy(draining.get("proc")):
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
        proc = running.get("proc")
        if proc is not None:
            if proc.returncode is None:
                return
            if not counted[0]:
                counted[0] = True
                metrics.TRAINING_RUNS.labels(training_outcome(proc.returncode)).inc()
            if proc.returncode not in (0, 1) and time.monotonic() - started[0] < FAILED_BACKOFF_S:
                return  # the last training failed (its error is in the worker's log): do not retry at once
        try:
            status = await registry.training_status()
        except StoreUnavailable as exc:
            log.warning("retraining check failed: %s", exc)
            return
        if status.busy or not should_retrain(
            status.interactions,
            status.trained_count,
            status.trained_at_ms,
            now_ms(),
            settings.retrain_min_interactions,
            settings.retrain_interval_s,
        ):
            return
        log.info("starting a training (%d interactions logged)", status.interactions)
        started[0] = time.monotonic()
        counted[0] = False
        running["proc"] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ecrm", "train", stdin=asyncio.subprocess.DEVNULL, preexec_fn=background_child
        )


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
