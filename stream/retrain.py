"""The worker decides when to retrain: a Faust timer checks the interaction count and the time since the last
training, and starts ``ecrm train`` as a separate process, so ingestion keeps flowing while it trains."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import faust
from redis.exceptions import RedisError

from ecrm.embedded import die_with_parent
from ecrm.keys import Keys
from ecrm.settings import Settings
from ecrm.store import connect
from recommender.training import should_retrain

log = logging.getLogger(__name__)
FAILED_BACKOFF_S = 60.0


def register_retraining(app: faust.App, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    running: dict[str, asyncio.subprocess.Process] = {}
    started = [0.0]
    client = connect(settings)

    @app.timer(interval=settings.retrain_check_s)
    async def maybe_retrain() -> None:
        proc = running.get("proc")
        if proc is not None:
            if proc.returncode is None:
                return
            if proc.returncode not in (0, 1) and time.monotonic() - started[0] < FAILED_BACKOFF_S:
                return  # the last training failed (its error is in the worker's log): do not retry at once
        try:
            count = int(await client.get(keys.interactions_count) or 0)
            trained = await client.hgetall(keys.model_trained)
            busy = await client.exists(keys.model_lock)
        except (RedisError, OSError) as exc:
            log.warning("retraining check failed: %s", exc)
            return
        trained_count = int(trained["count"]) if "count" in trained else None
        trained_at = int(trained["at"]) if "at" in trained else None
        now = int(time.time() * 1000)
        if busy or not should_retrain(
            count, trained_count, trained_at, now, settings.retrain_min_interactions, settings.retrain_interval_s
        ):
            return
        log.info("starting a training (%d interactions logged)", count)
        started[0] = time.monotonic()
        running["proc"] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ecrm", "train", stdin=asyncio.subprocess.DEVNULL, preexec_fn=_background_child
        )


def _background_child() -> None:
    """The training process yields the CPU to ingestion (nice 10) and dies with the worker."""
    die_with_parent()
    os.nice(10)
