"""Campaigns for marketers: what is running, the effect report, and the e-mail export (docs/campaigns.md).

The API routes (:mod:`api.routes.campaigns`) and the command line (``ecrm campaign``) both call this service: the
campaigns file (:mod:`merchandising.campaigns`), the counters in Redis (:mod:`profiles.campaigns`) and the
statistics (:mod:`analytics.experiments`) meet here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from analytics.experiments import Arm, effect_report
from analytics.rules_file import tenant_segments
from analytics.service import AnalyticsService, NoRefreshYet, UnknownSegment
from analytics.settings import AnalyticsSettings
from analytics.store import AnalyticsStore
from api.recommend import RecommendationService
from api.serving import ModelHolder
from api.tenancy import acting_for, request_tenant
from core import metrics
from core.errors import BadRequest, NotFound
from core.keyspace import customer_pid
from core.redis import connect
from core.settings import Settings
from core.tenant_files import TenantFiles, tenants_dir
from core.tenants import DEFAULT_TENANT
from merchandising.campaign_source import CampaignsSource, campaigns_path, tenant_campaigns
from merchandising.campaigns import Campaign, CampaignSet, unknown_rules
from merchandising.source import RulesSource, rules_path, tenant_rules
from profiles.campaigns import CampaignStore
from profiles.store import ProfileStore

PAGE = 500


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def describe(c: Campaign, now_ms: int) -> dict[str, Any]:
    return {
        "name": c.name,
        "goal": c.goal,
        "from": _iso(c.start_ms),
        "until": _iso(c.end_ms),
        "running": c.running(now_ms),
        "audience": "all" if c.segment is None else {"segment": c.segment},
        "placements": sorted(c.placements),
        "attribution_days": c.attribution_ms / 86_400_000,
        "frequency_cap_days": c.frequency_cap_ms / 86_400_000,
        "min_customers": c.min_customers,
        "variants": [
            {
                "name": v.name,
                "weight": v.weight,
                "share": round(c.weights[v.name], 6),
                "strategy": v.strategy or None,
                "rules": sorted(v.rules),
                "holdout": v.holdout,
            }
            for v in c.variants
        ],
    }


def control_of(c: Campaign) -> str:
    """The holdout (else the first variant); for a ``click`` goal the first variant that shows items (a holdout
    shows none, so it cannot be clicked)."""
    if c.goal == "click":
        return next(v.name for v in c.variants if not v.holdout)
    return c.control.name


def arms_of(c: Campaign, counters: dict[str, dict[str, float]]) -> list[Arm]:
    weights = c.weights
    return [Arm.of(v.name, weights[v.name], counters.get(v.name, {}), v.holdout) for v in c.variants]


@dataclass
class ExportResult:
    campaign: str
    segment: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped_capped: int = 0  # exported to this campaign within its frequency cap
    skipped_holdout: int = 0  # in the holdout: assigned, sent nothing
    truncated: bool = False  # the limit was reached before the end of the segment


CLICK_RULE = (
    "a recommendation_click counts only for a recommendation_id served to that profile under the campaign (the "
    "exposure record keeps the newest 50 per profile); an id of the campaign's form that was never served to it "
    "counts nothing"
)


class CampaignService:
    def __init__(
        self,
        source: CampaignsSource | TenantFiles[CampaignsSource],
        store: CampaignStore,
        rules: RulesSource | TenantFiles[RulesSource] | None = None,
        recs: RecommendationService | None = None,
        analytics: AnalyticsService | None = None,
    ) -> None:
        self.sources = TenantFiles.of(source)
        self.store = store
        self.rule_sources = TenantFiles.of(rules) if rules is not None else None
        self.recs = recs
        self.analytics = analytics

    @property
    def source(self) -> CampaignsSource:
        """The campaigns file serving the request's tenant (its own, else the top-level file)."""
        return self.sources.get(request_tenant())

    @property
    def rules(self) -> RulesSource | None:
        return self.rule_sources.get(request_tenant()) if self.rule_sources is not None else None

    def current(self) -> CampaignSet:
        return self.source.current()

    def campaign(self, name: str) -> Campaign:
        found = self.current().get(name)
        if found is None:
            known = ", ".join(self.current().names) or "none"
            raise NotFound(f"no campaign named {name!r} in {self.source.path} (campaigns: {known})")
        return found

    def listing(self, now_ms: int | None = None) -> dict[str, Any]:
        """The file, whether its last edit was refused, the campaigns, and warnings (unknown rule names)."""
        now_ms = now_ms or int(time.time() * 1000)
        campaigns = self.current()
        rule_names = self.rules.current().names if self.rules is not None else []
        loaded = self.source.loaded_at
        return {
            "path": str(self.source.path or ""),
            "valid": self.source.error is None,
            "error": self.source.error,
            "loaded_at": datetime.fromtimestamp(loaded, tz=UTC).isoformat() if loaded else None,
            "campaigns": [describe(c, now_ms) for c in campaigns.campaigns],
            "warnings": unknown_rules(campaigns, rule_names) if self.rules is not None else [],
        }

    async def report(self, name: str, now_ms: int | None = None) -> dict[str, Any]:
        """The effect report of one campaign (see :mod:`analytics.experiments`)."""
        now_ms = now_ms or int(time.time() * 1000)
        c = self.campaign(name)
        arms = arms_of(c, await self.store.counters(c.name))
        report = effect_report(c.goal, arms, control_of(c), c.min_customers)
        counting = {**report.get("counting", {}), "clicks": CLICK_RULE}  # the rules the counters follow
        return {"campaign": describe(c, now_ms), "generated_at": _iso(now_ms), **report, "counting": counting}

    async def refresh_metrics(self) -> None:
        """The counters of every campaign in the file into the Prometheus gauges (each replica reads Redis). No money:
        revenue stays behind the admin report (``/metrics`` needs no key)."""
        for c in self.current().campaigns:
            counters = await self.store.counters(c.name)
            for arm in arms_of(c, counters):
                labels = (c.name, arm.name)
                for kind, value in (("assigned", arm.assigned), ("exposed", arm.exposed),
                                    ("clicked", arm.clickers), ("converted", arm.converters)):  # fmt: skip
                    metrics.CAMPAIGN_CUSTOMERS.labels(*labels, kind).set(value)
                for kind, value in (("impressions", arm.impressions), ("clicks", arm.clicks), ("orders", arm.orders),
                                    ("attributed_orders", arm.attributed_orders)):  # fmt: skip
                    metrics.CAMPAIGN_EVENTS.labels(*labels, kind).set(value)

    async def _members(self, segment: str) -> AsyncIterator[list[str]]:
        """The customer ids of a segment (the last analytics refresh), a page at a time."""
        if self.analytics is None:
            raise BadRequest("segments are not available here")
        cursor: str | None = None
        while True:
            try:
                page = await self.analytics.page(segment, cursor, PAGE)
            except (UnknownSegment, NoRefreshYet) as exc:
                raise NotFound(str(exc)) from exc
            yield [str(r["customer_id"]) for r in page.rows if r.get("customer_id")]
            cursor = page.next_cursor
            if cursor is None:
                return

    async def export(self, name: str, segment: str, n: int, limit: int, now_ms: int | None = None) -> ExportResult:
        """Per customer of ``segment``: the campaign's variant and its top-``n`` list (placement ``email``) with a
        ``recommendation_id`` of its own, so clicks from the e-mail are attributed. A customer exported to this
        campaign within its ``frequency_cap_days`` is skipped; a holdout customer is assigned and sent nothing."""
        now_ms = now_ms or int(time.time() * 1000)
        c = self.campaign(name)
        if "email" not in c.placements:
            raise BadRequest(f"campaign {name!r} does not cover the email placement: add email to its placements")
        if not c.running(now_ms):
            raise BadRequest(f"campaign {name!r} is not running (from {_iso(c.start_ms)} until {_iso(c.end_ms)})")
        if self.recs is None:
            raise BadRequest("recommendations are not available here")
        out = ExportResult(c.name, segment)
        async for customers in self._members(segment):
            pids = [customer_pid(cid) for cid in customers]
            last = await self.store.exported_at(pids, c.name)
            due = [(cid, pid) for cid, pid, at in zip(customers, pids, last, strict=True)
                   if at is None or now_ms - at >= c.frequency_cap_ms]  # fmt: skip
            out.skipped_capped += len(customers) - len(due)
            sent: list[str] = []
            for cid, pid in due:
                if len(out.rows) >= limit:
                    out.truncated = True
                    break
                recs = await self.recs.for_profile(pid, n, placement="email", campaign=c.name)
                if recs.variant is None:  # outside the campaign's audience: not exported
                    continue
                sent.append(pid)
                if not recs.items:
                    out.skipped_holdout += 1
                    continue
                out.rows.append({
                    "customer_id": cid,
                    "campaign": c.name,
                    "variant": recs.variant,
                    "recommendation_id": recs.recommendation_id,
                    "item_ids": [r.item_id for r in recs.items],
                })  # fmt: skip
            await self.store.mark_exported(sent, c.name, now_ms)
            if out.truncated:
                break
        await self.recs.drain()
        return out


@asynccontextmanager
async def standalone(settings: Settings, tenant: str = DEFAULT_TENANT) -> AsyncIterator[CampaignService]:
    """The service of ``tenant`` outside the API process (``ecrm campaign``): its own Redis clients and model, closed
    after; the files of ``tenant`` (its campaigns, rules and segment rules: docs/tenants.md)."""
    with acting_for(tenant):
        async with _standalone(settings, tenant) as service:
            yield service


@asynccontextmanager
async def _standalone(settings: Settings, tenant: str) -> AsyncIterator[CampaignService]:
    client = connect(settings)
    holder = ModelHolder(settings, tenant)
    try:
        await holder.refresh()
        store = ProfileStore(client, settings, tenant)
        folder = tenants_dir(settings.tenants_dir)  # a command acts for one tenant: its files (docs/tenants.md)
        rules = tenant_rules(rules_path(settings.rules_file), folder, 0.0)
        source = tenant_campaigns(campaigns_path(settings.campaigns_file), folder, 0.0)
        cfg = AnalyticsSettings()
        segments = tenant_segments(cfg.segments_file, folder, 0.0)
        analytics = AnalyticsService(
            AnalyticsStore(client, settings.key_prefix, tenant), lambda: segments.get(tenant), cfg
        )

        async def segment_of(pid: str, now: int) -> str | None:
            segment = (await analytics.profile_analytics(pid, now)).get("segment")
            return str(segment) if segment is not None else None

        recs = RecommendationService(store, holder, settings, None, rules, segment_of, source)
        yield CampaignService(source, recs.campaign_store, rules, recs, analytics)
        await recs.drain()
    finally:
        await holder.client.aclose()
        await client.aclose()
