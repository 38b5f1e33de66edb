"""Dependency aliases for the routes (FastAPI template style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.collector import Collector
from api.recommend import RecommendationService
from api.tenant_services import TenantDep
from core.settings import Settings
from profiles.store import ProfileStore


async def _store(services: TenantDep) -> ProfileStore:
    """The caller's tenant's store."""
    return services.store


async def _default_store(request: Request) -> ProfileStore:
    """The tenant default's store (routes without a key: the health checks)."""
    store: ProfileStore = request.app.state.store
    return store


async def _collector(request: Request) -> Collector:
    collector: Collector = request.app.state.collector
    return collector


async def _recs(services: TenantDep) -> RecommendationService:
    """The caller's tenant's recommendations."""
    return services.recs


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[ProfileStore, Depends(_store)]
DefaultStoreDep = Annotated[ProfileStore, Depends(_default_store)]
CollectorDep = Annotated[Collector, Depends(_collector)]
SettingsDep = Annotated[Settings, Depends(_settings)]
RecsDep = Annotated[RecommendationService, Depends(_recs)]
