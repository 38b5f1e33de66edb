"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import CollectorDep, StoreDep
from core.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request, store: StoreDep, collector: CollectorDep) -> JSONResponse:
    """Redis and the broker are reachable (503 otherwise); `auth` says whether API keys are required (`keys`) or
    the API is open (`open`, loopback only)."""
    try:
        redis_ok = await store.ping()
    except StoreUnavailable:
        redis_ok = False
    kafka_ok = await collector.ready()
    ok = redis_ok and kafka_ok
    return JSONResponse(
        {
            "status": "ok" if ok else "unavailable",
            "redis": redis_ok,
            "kafka": kafka_ok,
            "auth": request.app.state.keys.mode,  # access control (api/auth.py)
        },
        status_code=200 if ok else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
