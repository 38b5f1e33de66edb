"""The FastAPI application: ``create_app(settings)``; ``uvicorn api.main:app`` uses the environment."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analytics.rules_file import tenant_segments
from analytics.service import AnalyticsService
from analytics.settings import AnalyticsSettings
from analytics.store import AnalyticsStore
from api import openapi
from api.auth import parse_keys, warn_if_open
from api.background import cancel_and_wait
from api.breaker import PROBE_DEADLINES, RedisBreaker
from api.campaigns import CampaignService
from api.collector import Collector
from api.degraded import PopularCopy
from api.errors import install_error_handlers
from api.guard import OpenModeGuard
from api.quotas import QuotaGate
from api.ratelimit import EntryLimits
from api.recommend import RecommendationService
from api.routes import campaigns, customers, events, health, recommendations, rules, segments, tracker
from api.serving import ModelHolder, model_root
from api.tenancy import TENANT_STATE
from api.tenant_services import Tenants, TenantServices
from core import __version__, metrics
from core.errors import ConfigError, ServiceUnavailable
from core.private_dir import private_dir
from core.quotas import tenant_quotas
from core.redis import connect
from core.settings import Settings, get_settings
from core.tenant_files import tenants_dir
from core.tenants import TenantError, configured_tenants
from merchandising.campaign_source import campaigns_path, tenant_campaigns
from merchandising.source import rules_path, tenant_rules
from profiles.store import ProfileStore
from recommender.threads import pin_blas_threads

log = logging.getLogger(__name__)


class LatencyMiddleware:
    """Observes request latency by route template, method and status (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            noted = scope.get("state", {}).get(TENANT_STATE)  # api/tenancy.py: set once the caller's key is known
            tenant = metrics.tenant_label(noted) if isinstance(noted, str) else metrics.NO_TENANT
            metrics.API_LATENCY.labels(path, scope["method"], str(status[0]), tenant).observe(
                time.perf_counter() - started
            )


def cors_origins(text: str) -> list[str]:
    """``ECRM_CORS_ORIGINS`` -> origins (``*`` for any; each else ``scheme://host[:port]``). Raises ConfigError."""
    origins = [origin.strip().rstrip("/") for origin in text.split(",") if origin.strip()]
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not sep or not rest or "/" in rest):
            raise ConfigError(f"ECRM_CORS_ORIGINS: {origin!r} is not an origin (expected e.g. https://shop.example)")
    return origins


async def _refresh_campaign_metrics(service: CampaignService, settings: Settings) -> None:
    """The campaigns' counters into the gauges every ``ECRM_CAMPAIGN_METRICS_S`` seconds (0: never)."""
    if settings.campaign_metrics_s <= 0:
        return
    while True:
        try:
            await service.refresh_metrics()
        except ServiceUnavailable as exc:
            log.debug("campaign gauges not refreshed: %s", exc)
        await asyncio.sleep(settings.campaign_metrics_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app. Raises :class:`ConfigError` for bad access-control settings (keys, CORS origins, rate limit)."""
    settings = settings or get_settings()
    keys = parse_keys(settings.api_keys)
    try:  # the tenants labelling the metrics (any other name: "other")
        metrics.host_tenants(configured_tenants(settings.api_keys, settings.tenants))
    except TenantError as exc:
        raise ConfigError(f"ECRM_TENANTS or ECRM_API_KEYS: {exc}") from exc
    entry_limits = EntryLimits(settings)  # ConfigError for a bad ECRM_RATE_LIMIT / ECRM_VISITOR_RATE_LIMIT
    origins = cors_origins(settings.cors_origins)
    # the model files' folder: this user's own, 0700 (UnsafeDirectory, a ConfigError, when another user owns it)
    private_dir(model_root(settings), "the model folder (ECRM_API_MODEL_DIR)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pin_blas_threads(1)  # one BLAS thread per replica: scale by replicas, not by threads
        client = connect(settings)
        app.state.settings = settings
        app.state.keys = keys
        app.state.entry_limits = entry_limits
        warn_if_open(keys)
        store = ProfileStore(client, settings)
        app.state.store = store  # the tenant default's (health checks; requests use their tenant's: api/tenancy.py)
        deadline_s = settings.request_deadline_ms / 1000
        app.state.breaker = RedisBreaker(  # when requests try Redis again (api/breaker.py)
            settings.redis_retry_s, probe=store.ping, probe_timeout_s=PROBE_DEADLINES * deadline_s
        )
        app.state.collector = Collector(settings)
        # each tenant's quotas (api/quotas.py): the settings' defaults, overridden by <tenants dir>/<tenant>/tenant.yaml
        entry_limits.quotas = QuotaGate(
            tenant_quotas(settings, tenants_dir(settings.tenants_dir)),
            client,
            settings.key_prefix,
            settings.tenant_quota_check_s,
        )
        # each tenant's configuration files (docs/tenants.md): its own under ECRM_TENANTS_DIR, else the top-level
        # business rules (merchandising/; checked at most every ECRM_RULES_CHECK_INTERVAL_S), campaigns
        # (ECRM_CAMPAIGNS_FILE, checked like the rules) and segment rules
        folder = tenants_dir(settings.tenants_dir)
        app.state.rules = tenant_rules(rules_path(settings.rules_file), folder, settings.rules_check_interval_s)
        app.state.campaigns = tenant_campaigns(
            campaigns_path(settings.campaigns_file), folder, settings.campaigns_check_interval_s
        )
        cfg = AnalyticsSettings()
        segment_files = tenant_segments(cfg.segments_file, folder, cfg.segments_check_interval_s)
        app.state.segment_rules = segment_files

        def build(tenant: str) -> TenantServices:
            """A tenant's services: its keys, its model, its popular items, its analytics and campaigns."""
            own = store.for_tenant(tenant)
            analytics = AnalyticsService(
                AnalyticsStore(client, settings.key_prefix, tenant), lambda: segment_files.get(tenant), cfg
            )

            async def segment_of(pid: str, now: int) -> str | None:
                segment = (await analytics.profile_analytics(pid, now)).get("segment")
                return str(segment) if segment is not None else None

            models = ModelHolder(settings, tenant)
            popular = PopularCopy(own, settings)
            recs = RecommendationService(
                own, models, settings, popular, app.state.rules, segment_of, app.state.campaigns, app.state.breaker
            )
            service = CampaignService(app.state.campaigns, recs.campaign_store, app.state.rules, recs, analytics)
            return TenantServices(tenant, own, models, popular, analytics, recs, service)

        default = build(store.tenant)
        app.state.tenants = Tenants(build, default)
        # the tenant default's, by their former names (tests, benchmarks)
        app.state.models, app.state.popular, app.state.analytics = default.models, default.popular, default.analytics
        app.state.recs, app.state.campaign_service = default.recs, default.campaigns
        campaign_gauges = asyncio.create_task(_refresh_campaign_metrics(default.campaigns, settings))
        # Neither the broker nor Redis is needed to start: the collector connects in the background, the model
        # and the popular items are loaded when Redis answers (see docs/deployment.md, "Degraded modes").
        await app.state.collector.start()
        await default.start()
        try:
            yield
        finally:
            await cancel_and_wait(campaign_gauges)
            await app.state.breaker.close()
            await app.state.tenants.stop()
            await app.state.collector.stop()
            await client.aclose()

    app = FastAPIOffline(  # Swagger UI (/docs) and ReDoc (/redoc) from the package's own files: no CDN
        title="eCRM personalization engine",
        version=__version__,
        description="Collect clickstream events; read live customer profiles and one-to-one recommendations.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(events.router)
    app.include_router(customers.router)
    app.include_router(recommendations.router)
    app.include_router(segments.router)
    app.include_router(rules.router)
    app.include_router(campaigns.router)
    app.include_router(health.router)
    app.include_router(tracker.router)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    if keys.open:  # loopback Host names and JSON bodies only (api/guard.py): no cross-site or rebinding requests
        app.add_middleware(OpenModeGuard)
    app.add_middleware(LatencyMiddleware)
    schema = app.openapi
    app.openapi = lambda: openapi.finish(schema(), settings, open_mode=keys.open)  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> Any:
    """``api.main:app`` for uvicorn, built lazily from the environment."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
