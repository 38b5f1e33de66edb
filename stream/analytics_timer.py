"""The periodic analytics refresh in the worker: a Faust timer around :class:`analytics.refresh.Refresher`.

Every worker ticks; a Redis lock and the age of the last refresh make the whole group refresh about once per
``ECRM_ANALYTICS_INTERVAL_S``. Each tenant has its own lock and interval; the tenants due at a tick read their
profiles by one walk of the keyspace (one SCAN for all: :func:`analytics.refresh.refresh_round`). A failed refresh
is logged and counted, and the next tick tries again.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence

import faust

from analytics.refresh import Outcome, Refresher, RefreshResult, make_refreshers, refresh_round
from analytics.rules import RulesError
from analytics.settings import AnalyticsSettings
from core import metrics
from core.errors import StoreUnavailable
from core.settings import Settings
from core.tenants import configured_tenants

log = logging.getLogger(__name__)

MAX_TICK_S = 30.0
_REGISTERED: weakref.WeakSet[faust.App] = weakref.WeakSet()  # apps with the timer: registering twice adds one


async def republish(refresher: Refresher) -> None:
    """Set the analytics gauges from the state in Redis; never raises (a failure is logged)."""
    try:
        await refresher.republish()
    except StoreUnavailable as exc:
        log.warning("analytics state not republished: %s", exc)


async def refresh_if_due(refresher: Refresher) -> Outcome | None:
    """One tick of one tenant (:func:`refresh_due`)."""
    return (await refresh_due([refresher]))[0]


async def refresh_due(refreshers: Sequence[Refresher]) -> list[Outcome | None]:
    """One tick: each tenant (one refresher each, on one Redis client) refreshed when due, the due ones reading
    their profiles by one walk of the keyspace (:func:`analytics.refresh.refresh_round`); the others republish
    the stored state (a refresh another worker made, or the one before this worker's start). Never raises: a
    tenant's failure is logged and counted (None in its place)."""
    try:
        results: list[RefreshResult | Exception] = await refresh_round(refreshers)
    except Exception as exc:  # a timer that raises stops for good: keep it ticking
        results = [exc] * len(refreshers)
    outcomes: list[Outcome | None] = []
    for refresher, result in zip(refreshers, results, strict=True):
        if isinstance(result, Exception):
            metrics.ANALYTICS_REFRESH_FAILURES.inc()
            tenant = refresher.store.tenant
            if isinstance(result, StoreUnavailable | RulesError):
                log.warning("analytics refresh of %s failed: %s", tenant, result)
            else:
                log.error("analytics refresh of %s failed", tenant, exc_info=result)
            outcomes.append(None)
            continue
        if result.outcome is not Outcome.REFRESHED:
            await republish(refresher)
        outcomes.append(result.outcome)
    return outcomes


def register_analytics(app: faust.App, settings: Settings, cfg: AnalyticsSettings | None = None) -> None:
    """Attach the refresh timer to ``app`` once (nothing when ``ECRM_ANALYTICS_INTERVAL_S`` is 0)."""
    cfg = cfg or AnalyticsSettings()
    if app in _REGISTERED:
        return
    if cfg.analytics_interval_s <= 0:
        log.info("analytics refresh off (ECRM_ANALYTICS_INTERVAL_S=0)")
        return
    _REGISTERED.add(app)
    refreshers: list[Refresher] = []  # created on the first tick, inside the worker's event loop

    def tenants_refreshers() -> list[Refresher]:
        """One refresher per configured tenant (each its own keys, lock and segment rules), on one Redis client."""
        if not refreshers:
            refreshers.extend(make_refreshers(settings, cfg, configured_tenants(settings.api_keys, settings.tenants)))
        return refreshers

    @app.task
    async def analytics_republish() -> None:  # at start: the gauges tell the stored state, not 0
        await republish(tenants_refreshers()[0])

    @app.timer(interval=min(cfg.analytics_interval_s, MAX_TICK_S), name="analytics_refresh")
    async def analytics_refresh() -> None:
        await refresh_due(tenants_refreshers())  # each tenant when due (its own lock and interval), one SCAN
