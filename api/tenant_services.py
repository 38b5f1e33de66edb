"""The services of each tenant an API process serves: its store (its keys), its served model, its in-memory popular
items, its analytics, recommendations and campaigns (issue 22).

A request acts inside its key's tenant (:attr:`api.auth.Caller.tenant`) only: the routes take these services through
:data:`TenantDep`, never the process's. The tenant ``default``'s services are built at start; another tenant's on its
first request (its model loaded then, its poller started), and at most ``MAX_SERVED_TENANTS`` are kept: the least
recently used tenant's are stopped to make room (built again at its next request). A tenant is only ever named by a
configured key, so the names are bounded by the configuration as well.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from analytics.service import AnalyticsService
from api.auth import AnyCaller
from api.campaigns import CampaignService
from api.degraded import PopularCopy
from api.recommend import RecommendationService
from api.serving import ModelHolder
from profiles.store import ProfileStore

log = logging.getLogger(__name__)
MAX_SERVED_TENANTS = 64


@dataclass
class TenantServices:
    """Everything a request of one tenant reads and writes through."""

    tenant: str
    store: ProfileStore
    models: ModelHolder
    popular: PopularCopy
    analytics: AnalyticsService
    recs: RecommendationService
    campaigns: CampaignService

    async def start(self) -> None:
        await self.models.start()
        await self.popular.start()

    async def stop(self) -> None:
        await self.recs.drain()
        await self.popular.stop()
        await self.models.stop()


class Tenants:
    """The tenants' services of one API process, built on first use, at most ``limit`` kept (least recently used
    stopped first; the tenant ``default``'s is kept always)."""

    def __init__(
        self, build: Callable[[str], TenantServices], default: TenantServices, limit: int = MAX_SERVED_TENANTS
    ) -> None:
        self._build = build
        self.default = default
        self.limit = limit
        self._served: OrderedDict[str, TenantServices] = OrderedDict()
        self._lock = asyncio.Lock()

    def cached(self) -> list[str]:
        """The tenants whose services are kept now (the tenant ``default`` first)."""
        return [self.default.tenant, *self._served]

    async def get(self, tenant: str) -> TenantServices:
        if tenant == self.default.tenant:
            return self.default
        found = self._served.get(tenant)
        if found is not None:
            self._served.move_to_end(tenant)
            return found
        async with self._lock:  # one build per tenant, however many requests wait for it
            found = self._served.get(tenant)
            if found is None:
                found = self._build(tenant)
                await found.start()
                self._served[tenant] = found
                log.info("serving the tenant %s (%d tenants kept)", tenant, len(self._served) + 1)
                while len(self._served) > self.limit - 1:
                    _, gone = self._served.popitem(last=False)
                    await gone.stop()
            return found

    async def stop(self) -> None:
        for services in [*self._served.values(), self.default]:
            await services.stop()
        self._served.clear()


async def _tenant(request: Request, who: AnyCaller) -> TenantServices:
    tenants: Tenants = request.app.state.tenants
    return await tenants.get(who.tenant)


TenantDep = Annotated[TenantServices, Depends(_tenant)]
StartStop = Callable[[], Awaitable[None]]
