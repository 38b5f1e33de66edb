"""The refresh job: read the whole base, fit the models, score and segment everyone, publish a snapshot.

Runs in the worker (:mod:`stream.analytics_timer`) and by hand (``ecrm analytics refresh``). A Redis lock lets only
one process refresh at a time; a refresh that is not forced is skipped while the last one is younger than the
interval, so several workers together refresh about once per interval. The CPU-bound part (fitting, scoring)
runs in a thread so the worker's event loop keeps consuming. :func:`refresh_round` refreshes several tenants that
are due with one walk of the keyspace (one SCAN), each from its own rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from analytics.fit import ModelFitError, check_enough, fit_purchases, fit_spend
from analytics.rules import SegmentRules
from analytics.rules_file import RulesSource, tenant_segments
from analytics.settings import AnalyticsSettings
from analytics.snapshot import Models, ProfileRow, Snapshot, build_snapshot, customers_only, fit_input
from analytics.state import AnalyticsState
from analytics.store import AnalyticsStore, scan_tenants
from core import metrics
from core.clock import now_ms
from core.redis import connect
from core.settings import Settings
from core.tenant_files import tenants_dir
from core.tenants import DEFAULT_TENANT

log = logging.getLogger(__name__)


ERASURE_CLOCK_MARGIN_MS = 60_000  # erasures this long before a refresh began count as during it (clock skew)


class Outcome(StrEnum):
    REFRESHED = "refreshed"
    NOT_DUE = "not due"
    LOCKED = "locked"
    LOCK_LOST = "lock lost"


@dataclass(frozen=True, slots=True)
class RefreshResult:
    outcome: Outcome
    state: AnalyticsState | None = None

    @property
    def message(self) -> str:
        if self.outcome is Outcome.LOCKED:
            return "another process is refreshing the analytics now; try again later"
        if self.outcome is Outcome.LOCK_LOST:
            return "the refresh took longer than the lock allows (ECRM_ANALYTICS_LOCK_TTL_S); nothing was published"
        if self.state is None:
            return str(self.outcome)
        s = self.state
        model = "model fitted" if s.purchase is not None else f"no model: {s.model_error}"
        verb = "refreshed" if self.outcome is Outcome.REFRESHED else "last refresh is recent"
        return (
            f"{verb}: {s.customers_scored} customers scored of {s.profiles} profiles, {model}, "
            f"{s.duration_s:.2f}s, snapshot {s.snapshot_id}"
        )


def fit_models(buyers: Sequence[ProfileRow], cfg: AnalyticsSettings, now: int) -> Models:
    """Fit the purchase and spend models, or say why not (pure but for the CPU it takes). The rows are taken in the
    order of their profile ids: the fits depend on the order of their input, and a scan gives the rows in any order
    (on a Redis Cluster, each node's as it answers), so the same base always gives the same models."""
    data = fit_input(sorted(buyers, key=lambda row: row.pid), now)
    try:
        check_enough(data, cfg.analytics_min_customers, cfg.analytics_min_repeat_customers)
        purchase = fit_purchases(data, cfg.analytics_model)
        spend = fit_spend(data)
    except ModelFitError as exc:
        return Models(error=str(exc), horizon_days=cfg.clv_horizon_days)
    return Models(purchase=purchase, spend=spend, horizon_days=cfg.clv_horizon_days)


def compute(rows: Sequence[ProfileRow], rules: SegmentRules, cfg: AnalyticsSettings, now: int) -> Snapshot:
    """Everything a refresh computes from the rows it read."""
    models = fit_models([row for row in customers_only(rows) if row.is_buyer], cfg, now)
    return build_snapshot(rows, rules, models, now)


class Refresher:
    """Runs refreshes against one store with one rules source."""

    def __init__(
        self,
        store: AnalyticsStore,
        cfg: AnalyticsSettings,
        rules: RulesSource | Callable[[], RulesSource],
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``rules``: the segment rules, or what returns those in force (a tenant's own file, once it has one)."""
        self.store = store
        self.cfg = cfg
        self._rules = rules
        self.clock = clock

    @property
    def rules(self) -> RulesSource:
        return self._rules if isinstance(self._rules, RulesSource) else self._rules()

    async def republish(self) -> AnalyticsState | None:
        """Set the gauges from the state stored in Redis (a worker's start, or a refresh another worker made)."""
        state = await self.store.state()
        if state is not None:
            if self.store.tenant == DEFAULT_TENANT:  # (the gauges have no tenant label yet)
                observe(state)
        return state

    async def refresh(self, force: bool = False) -> RefreshResult:
        """Refresh now (``force``) or when the last refresh is older than the interval."""
        begun = await self.begin(force)
        if isinstance(begun, RefreshResult):
            return begun
        try:
            rows = [row async for batch in self.store.scan_profiles(self.cfg.analytics_scan_count) for row in batch]
            return await self.finish(begun, rows)
        finally:
            await self.end(begun)

    async def begin(self, force: bool = False) -> Underway | RefreshResult:
        """Take the lock and, unless ``force``, check that a refresh is due: the refresh underway (its rows to read
        next: :meth:`finish`, then :meth:`end` whatever happens), or why not (the lock released)."""
        token = await self.store.acquire_lock(self.cfg.analytics_lock_ttl_s)
        if token is None:
            return RefreshResult(Outcome.LOCKED)
        try:
            if not force:
                last = await self.store.state()
                if last is not None and self.clock() - last.refreshed_at_ms < self.cfg.analytics_interval_s * 1000:
                    await self.store.release_lock(token)
                    return RefreshResult(Outcome.NOT_DUE, last)
            rules = self.rules.current(force=True)
        except BaseException:
            await self.store.release_lock(token)
            raise
        # the erasures' clock is the wall clock, whatever ``clock`` says
        return Underway(token, rules, self.clock(), now_ms(), time.perf_counter())

    async def end(self, run: Underway) -> None:
        """Release the lock of a refresh :meth:`begin` started."""
        await self.store.release_lock(run.token)

    async def finish(self, run: Underway, rows: Sequence[ProfileRow]) -> RefreshResult:
        """Compute from ``rows`` (every profile of the tenant, read after :meth:`begin`) and publish."""
        if not await self.store.renew_lock(run.token, self.cfg.analytics_lock_ttl_s):
            log.warning("analytics refresh not computed: the lock expired while the profiles were read")
            return RefreshResult(Outcome.LOCK_LOST)
        snap = await asyncio.to_thread(compute, rows, run.rules, self.cfg, run.now)
        keep_s = self.cfg.analytics_snapshot_keep_s
        sid = await self.store.write_snapshot(snap, ttl_s=self.cfg.analytics_lock_ttl_s + keep_s)
        status = self.rules.status()
        rules_info = {"path": status.path, "error": status.error}
        state = AnalyticsState.of(snap, sid, round(time.perf_counter() - run.perf_started, 3), rules_info)
        if not await self.store.publish(state, run.token, keep_s):
            log.warning("analytics refresh not published: the lock expired meanwhile")
            return RefreshResult(Outcome.LOCK_LOST)
        # An erasure while this refresh ran may have read its profiles before they were deleted: their rows leave
        # the published snapshot now (an erasure after this point removes them itself).
        erased = await self.store.erased_since(run.started_ms - ERASURE_CLOCK_MARGIN_MS)
        if erased:
            removed = await self.store.forget_rows(erased)
            if removed:
                log.info("analytics refresh: %d row(s) of profiles erased meanwhile removed", removed)
        if self.store.tenant == DEFAULT_TENANT:  # (the gauges have no tenant label yet)
            observe(state)
        log.info("%s: %s", self.store.tenant, RefreshResult(Outcome.REFRESHED, state).message)
        return RefreshResult(Outcome.REFRESHED, state)


@dataclass(frozen=True, slots=True)
class Underway:
    """A refresh that holds its tenant's lock (``token``) and has yet to read its rows."""

    token: str
    rules: SegmentRules
    now: int  # the refresh's time (its ``clock``)
    started_ms: int  # the wall clock at its start (the erasures')
    perf_started: float


async def refresh_round(refreshers: Sequence[Refresher], force: bool = False) -> list[RefreshResult | Exception]:
    """Refresh several tenants (one refresher each, on one Redis client) in one round, the result (or the error)
    of each in order: each takes its own lock and is refreshed when due (:meth:`Refresher.begin`), then the due
    ones read their profiles by ONE walk of the keyspace (:func:`~analytics.store.scan_tenants`) and each computes
    and publishes from its own rows, one after the other (:meth:`Refresher.finish`). The rows of all the due
    tenants are held in memory together until their turn. A failed scan fails every due tenant of the round."""
    results: dict[int, RefreshResult | Exception] = {}
    underway: dict[int, Underway] = {}
    for i, refresher in enumerate(refreshers):
        try:
            begun = await refresher.begin(force)
        except Exception as exc:
            results[i] = exc
            continue
        if isinstance(begun, RefreshResult):
            results[i] = begun
        else:
            underway[i] = begun
    try:
        if underway:
            await _read_and_finish(refreshers, underway, results)
    finally:
        for i, run in underway.items():
            try:
                await refreshers[i].end(run)
            except Exception as exc:  # the lock expires by itself
                log.warning("analytics lock of %s not released: %s", refreshers[i].store.tenant, exc)
    return [results[i] for i in range(len(refreshers))]


async def _read_and_finish(
    refreshers: Sequence[Refresher], underway: dict[int, Underway], results: dict[int, RefreshResult | Exception]
) -> None:
    """The due tenants' rows by one SCAN, then each tenant's computation and publication from its own rows."""
    index = {refreshers[i].store.tenant: i for i in underway}
    rows: dict[int, list[ProfileRow]] = {i: [] for i in underway}
    count = min(refreshers[i].cfg.analytics_scan_count for i in underway)
    try:
        async for store, batch in scan_tenants([refreshers[i].store for i in underway], count):
            rows[index[store.tenant]].extend(batch)
    except Exception as exc:
        results.update(dict.fromkeys(underway, exc))
        return
    for i, run in underway.items():
        try:
            results[i] = await refreshers[i].finish(run, rows.pop(i))
        except Exception as exc:
            results[i] = exc


def observe(state: AnalyticsState) -> None:
    """Set the analytics gauges from a published state."""
    metrics.ANALYTICS_SEGMENT_CUSTOMERS.clear()
    for seg in state.summary:
        metrics.ANALYTICS_SEGMENT_CUSTOMERS.labels(seg["name"]).set(seg["customers"])
    metrics.ANALYTICS_CUSTOMERS_SCORED.set(state.customers_scored)
    metrics.ANALYTICS_LAST_REFRESH.set(state.refreshed_at_ms / 1000.0)
    metrics.ANALYTICS_REFRESH_SECONDS.set(state.duration_s)
    metrics.ANALYTICS_MODEL_FITTED.set(1 if state.purchase is not None and state.spend is not None else 0)


def make_refresher(settings: Settings, cfg: AnalyticsSettings, tenant: str = DEFAULT_TENANT) -> Refresher:
    """A refresher of ``tenant``'s analytics on its own Redis client (close it with
    ``refresher.store.client.aclose()``), with the segment rules of ``tenant`` (its
    ``<ECRM_TENANTS_DIR>/<tenant>/segments.yaml`` when present, else ECRM_SEGMENTS_FILE)."""
    return make_refreshers(settings, cfg, [tenant])[0]


def make_refreshers(settings: Settings, cfg: AnalyticsSettings, tenants: Sequence[str]) -> list[Refresher]:
    """A refresher per tenant (:func:`make_refresher`: each its own keys, lock and segment rules), all on one Redis
    client (close it with ``refreshers[0].store.client.aclose()``): what :func:`refresh_round` takes."""
    files = tenant_segments(cfg.segments_file, tenants_dir(settings.tenants_dir), cfg.segments_check_interval_s)
    client = connect(settings)
    return [
        Refresher(AnalyticsStore(client, settings.key_prefix, tenant), cfg, partial(files.get, tenant))
        for tenant in tenants
    ]
