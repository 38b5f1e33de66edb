"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import CollectorDep, StoreDep
from core import metrics
from core.errors import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request, store: StoreDep, collector: CollectorDep) -> JSONResponse:
    """Reads (Redis) and writes (the broker) reported separately. 200 while reads work, even without the broker
    (``status`` is then ``degraded`` and ``POST /v1/events`` answers 503); 503 when Redis is away. ``auth`` says
    whether API keys are required (``keys``) or the API is open (``open``, loopback only). ``rules`` is ``refused``
    when the last edit of the business rules file was refused (the previous rules stay in force; see GET /v1/rules)."""
    try:
        reads = await store.ping()
    except StoreUnavailable:
        reads = False
    writes = await collector.ready()
    status = "ok" if reads and writes else "degraded" if reads else "unavailable"
    return JSONResponse(
        {
            "status": status,
            "reads": reads,
            "writes": writes,
            "redis": reads,
            "kafka": writes,
            "auth": request.app.state.keys.mode,  # access control (api/auth.py)
            "rules": "refused" if request.app.state.rules.error else "ok",  # business rules (GET /v1/rules)
        },
        status_code=200 if reads else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(_: Request) -> Response:
    return Response(metrics.api_exposition(), media_type=CONTENT_TYPE_LATEST)
