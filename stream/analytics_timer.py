"""The periodic analytics refresh in the worker: a Faust timer around :class:`analytics.refresh.Refresher`.

Every worker ticks; a Redis lock and the age of the last refresh make the whole group refresh about once per
``ECRM_ANALYTICS_INTERVAL_S``. A failed refresh is logged and counted, and the next tick tries again.
"""

from __future__ import annotations

import logging
import weakref

import faust

from analytics.refresh import Outcome, Refresher, make_refresher
from analytics.rules import RulesError
from analytics.settings import AnalyticsSettings
from analytics.store import AnalyticsStore
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
    """One tick: refresh when due, else republish the stored state (a refresh another worker made, or the one
    before this worker's start); never raises (a failure is logged and counted)."""
    try:
        result = await refresher.refresh()
        if result.outcome is not Outcome.REFRESHED:
            await refresher.republish()
    except (StoreUnavailable, RulesError) as exc:
        metrics.ANALYTICS_REFRESH_FAILURES.inc()
        log.warning("analytics refresh failed: %s", exc)
        return None
    except Exception:  # a timer that raises stops for good: keep it ticking
        metrics.ANALYTICS_REFRESH_FAILURES.inc()
        log.exception("analytics refresh failed")
        return None
    return result.outcome


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
        """One refresher per configured tenant (each its own keys and lock), on one Redis client."""
        if not refreshers:
            first = make_refresher(settings, cfg)
            refreshers.append(first)
            for tenant in configured_tenants(settings.api_keys, settings.tenants)[1:]:
                store = AnalyticsStore(first.store.client, settings.key_prefix, tenant)
                refreshers.append(Refresher(store, cfg, first.rules))
        return refreshers

    @app.task
    async def analytics_republish() -> None:  # at start: the gauges tell the stored state, not 0
        await republish(tenants_refreshers()[0])

    @app.timer(interval=min(cfg.analytics_interval_s, MAX_TICK_S), name="analytics_refresh")
    async def analytics_refresh() -> None:
        for refresher in tenants_refreshers():  # each tenant when due (its own lock and interval)
            await refresh_if_due(refresher)
