"""Dependency aliases for the routes (FastAPI template style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.collector import Collector
from api.recommend import RecommendationService
from core.settings import Settings
from profiles.store import ProfileStore


async def _store(request: Request) -> ProfileStore:
    store: ProfileStore = request.app.state.store
    return store


async def _collector(request: Request) -> Collector:
    collector: Collector = request.app.state.collector
    return collector


async def _recs(request: Request) -> RecommendationService:
    recs: RecommendationService = request.app.state.recs
    return recs


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[ProfileStore, Depends(_store)]
CollectorDep = Annotated[Collector, Depends(_collector)]
SettingsDep = Annotated[Settings, Depends(_settings)]
RecsDep = Annotated[RecommendationService, Depends(_recs)]
