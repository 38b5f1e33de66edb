"""Recommendations while Redis is away: an in-memory copy of the last popular items.

Each API replica keeps the top ``ECRM_API_DEGRADED_ITEMS`` items (trending first, then all-time popular, without
the items out of stock, each with its category) and refreshes the copy every ``ECRM_API_DEGRADED_REFRESH_S``
seconds while Redis answers. When Redis cannot serve a recommendation request, the answer comes from this copy
with ``strategy: "degraded"`` (200, never 503); a failed refresh keeps the last copy. The copy is bounded and
holds no customer data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from api.background import cancel_and_wait
from core import metrics
from core.errors import StoreUnavailable
from core.settings import Settings
from core.tenants import DEFAULT_TENANT
from profiles.store import ProfileStore, ScoredItem

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PopularItem:
    item_id: str
    score: float
    reason: str
    category: str | None


def merge_popular(
    trending: Iterable[ScoredItem],
    popular: Iterable[ScoredItem],
    categories: dict[str, str],
    out_of_stock: set[str],
    limit: int,
) -> tuple[PopularItem, ...]:
    """Trending items, then all-time popular ones, each once, none out of stock, at most ``limit`` (pure)."""
    out: list[PopularItem] = []
    seen: set[str] = set()
    for reason, rows in (("trending", trending), ("popular", popular)):
        for row in rows:
            if len(out) >= limit:
                return tuple(out)
            if row.item_id in seen or row.item_id in out_of_stock:
                continue
            seen.add(row.item_id)
            out.append(PopularItem(row.item_id, row.score, reason, categories.get(row.item_id)))
    return tuple(out)


def pick(
    items: Iterable[PopularItem], excluded: set[str], category: str | None = None
) -> Iterator[tuple[str, float, str]]:
    """The copy's candidates for one request: (item, score, reason), without ``excluded``, only ``category``'s
    items when one is asked for (pure)."""
    for item in items:
        if item.item_id in excluded or (category is not None and item.category != category):
            continue
        yield item.item_id, item.score, item.reason


class PopularCopy:
    """The replica's copy of the popular items, refreshed in the background while Redis works."""

    def __init__(self, store: ProfileStore, settings: Settings) -> None:
        self.store = store
        self.limit = settings.api_degraded_items
        self.interval_s = settings.api_degraded_refresh_s
        self.items: tuple[PopularItem, ...] = ()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Replace the copy with Redis's current popular items (four round trips). Raises StoreUnavailable."""
        trending = await self.store.trending(self.limit)
        popular = await self.store.popular(self.limit)
        ids = list(dict.fromkeys(row.item_id for row in [*trending, *popular]))
        categories = await self.store.item_categories(ids)
        out_of_stock = await self.store.out_of_stock(ids)
        self.items = merge_popular(trending, popular, categories, out_of_stock, self.limit)
        if self.store.tenant == DEFAULT_TENANT:  # (the gauge has no tenant label yet)
            metrics.DEGRADED_ITEMS.set(len(self.items))

    async def start(self) -> None:
        """A first copy now if Redis answers (the API starts either way), then one every interval."""
        await self._try_refresh()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._try_refresh()

    async def _try_refresh(self) -> None:
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()
            log.warning("popular items not refreshed, keeping the last %d in memory: %s", len(self.items), exc)
