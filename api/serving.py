"""The served model: loaded at start, swapped for a newly promoted version without a restart.

A request takes ``holder.served`` once and uses that object throughout, so a swap in the middle of a request
cannot mix versions or fail it. A background task polls the registry's ``current`` key every
``ECRM_MODEL_POLL_S`` seconds and loads a new version off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from core import metrics
from core.errors import StoreUnavailable
from core.keyspace import Keys
from core.redis import connect_bytes
from core.registry import AsyncRegistry
from core.settings import Settings
from recommender.base import ItemMask
from recommender.model import Engine

log = logging.getLogger(__name__)
MASK_CACHE_S = 30.0


@dataclass
class Served:
    """One loaded model version, with a small cache of category masks."""

    model: Engine
    version: str
    meta: dict[str, object]
    loaded_at: float = field(default_factory=time.time)
    _masks: dict[str, tuple[float, ItemMask]] = field(default_factory=dict)

    def mask(self, key: str, items: set[str]) -> ItemMask:
        cached = self._masks.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < MASK_CACHE_S:
            return cached[1]
        mask = self.model.mask(items)
        self._masks[key] = (now, mask)
        return mask


class ModelHolder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = connect_bytes(settings)
        self.registry = AsyncRegistry(self.client, Keys(settings.key_prefix))
        self.served: Served | None = None
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Load the current version if it changed. Returns True when a new version is now served."""
        version = await self.registry.current()
        if version is None:
            if self.served is not None:
                self.served = None  # the registry was emptied: fall back to popularity
                return True
            return False
        if self.served is not None and self.served.version == version:
            return False
        loaded = await self.registry.load(version)
        if loaded is None:
            log.warning("model version %s is current but has no stored blob", version)
            return False
        model = await asyncio.to_thread(Engine.from_bytes, loaded.blob)
        meta = loaded.meta
        old = self.served
        self.served = Served(model, version, meta)
        if old is not None:
            metrics.MODEL_VERSION.remove(old.version)
        metrics.MODEL_VERSION.labels(version).set(1)
        holdout = meta.get("holdout", {}) if isinstance(meta, dict) else {}
        if "ndcg@10" in holdout:
            metrics.MODEL_HOLDOUT_NDCG.labels(version).set(float(holdout["ndcg@10"]))
        training = meta.get("training", {}) if isinstance(meta, dict) else {}
        if "duration_s" in training:
            metrics.MODEL_TRAINING_SECONDS.labels(version).set(float(training["duration_s"]))
        log.info("now serving model %s", version)
        return True

    async def start(self) -> None:
        try:
            await self.refresh()
        except (StoreUnavailable, ValueError) as exc:
            log.warning("no model loaded at start: %s", exc)
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.client.aclose()

    def age_s(self) -> float | None:
        served = self.served
        if served is None:
            return None
        created = served.meta.get("created_at")
        if isinstance(created, str):
            from datetime import datetime

            return time.time() - datetime.fromisoformat(created).timestamp()
        return time.time() - served.loaded_at

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.refresh()
            except (StoreUnavailable, ValueError) as exc:
                log.warning("model refresh failed (still serving %s): %s", self.served and self.served.version, exc)
            age = self.age_s()
            if age is not None:
                metrics.MODEL_AGE_SECONDS.set(age)
