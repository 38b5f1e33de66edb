"""Campaign exposures written off the request path, in batches: a request only appends to a bounded in-memory
queue; one task per replica writes what has gathered in two Redis round trips (:meth:`CampaignStore.record_exposures`)
and ends when the queue is empty. Over ``max_pending`` queued exposures (Redis slow or away) new ones are dropped
and counted (``ecrm_campaign_exposures_dropped_total``): a campaign never slows or fails a recommendation."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from core import metrics
from core.errors import ServiceUnavailable
from profiles.campaigns import CampaignStore, Exposure

log = logging.getLogger(__name__)


class ExposureWriter:
    def __init__(self, store: CampaignStore, max_pending: int = 20_000, batch: int = 500) -> None:
        self.store = store
        self.max_pending = max_pending
        self.batch = batch
        self._queue: deque[Exposure] = deque()
        self._task: asyncio.Task[None] | None = None

    def add(self, exposure: Exposure) -> None:
        if len(self._queue) >= self.max_pending:
            metrics.CAMPAIGN_EXPOSURES_DROPPED.inc()
            return
        self._queue.append(exposure)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            try:
                await self.store.record_exposures(batch)
            except ServiceUnavailable as exc:
                metrics.CAMPAIGN_EXPOSURES_DROPPED.inc(len(batch))
                log.warning("could not record %d campaign exposures: %s", len(batch), exc)

    async def drain(self) -> None:
        """Wait until every queued exposure is written (the app's shutdown, tests)."""
        while self._task is not None and not self._task.done():
            await self._task
