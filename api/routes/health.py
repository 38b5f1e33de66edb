"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.breaker import within
from api.deps import CollectorDep, DefaultStoreDep
from api.models import Liveness, Readiness
from core import metrics
from core.errors import StoreUnavailable
from core.keyspace import Keys
from core.redis import redis_errors
from profiles.store import ProfileStore

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=Liveness)
async def live() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis is away: nothing can be read"}},
)
async def ready(request: Request, store: DefaultStoreDep, collector: CollectorDep) -> JSONResponse:
    """Reads (Redis) and writes (the broker) reported separately. 200 while reads work, even without the broker
    (``status`` is then ``degraded`` and ``POST /v1/events`` answers 503); 503 when Redis is away. ``auth`` says
    whether API keys are required (``keys``) or the API is open (``open``, loopback only). ``rules`` is ``refused``
    when the last edit of the business rules file was refused (the previous rules stay in force; see GET /v1/rules).
    ``worker`` says whether a stream worker consumes the events now (its heartbeat in Redis is fresh). Redis is
    asked within the request deadline (``ECRM_REQUEST_DEADLINE_MS``): a hung Redis is ``reads: false`` at once."""
    settings = request.app.state.settings

    async def redis_reads() -> tuple[bool, bool]:
        reads = await store.ping()
        return reads, reads and await worker_consuming(store)

    async def redis_state() -> tuple[bool, bool]:
        try:  # within the request deadline, told to the breaker (api/breaker.py)
            return await within(request.app.state.breaker, settings.request_deadline_ms / 1000, redis_reads, True)
        except StoreUnavailable:
            return False, False

    (reads, worker), writes = await asyncio.gather(redis_state(), collector.ready())
    status = "ok" if reads and writes else "degraded" if reads else "unavailable"
    return JSONResponse(
        {
            "status": status,
            "reads": reads,
            "writes": writes,
            "redis": reads,
            "kafka": writes,
            "worker": worker,
            "auth": request.app.state.keys.mode,  # access control (api/auth.py)
            # business rules (GET /v1/rules): "refused" when any tenant's file in force is (its own, or the top-level)
            "rules": "refused" if any(s.error for s in request.app.state.rules.sources()) else "ok",
        },
        status_code=200 if reads else 503,
    )


async def worker_consuming(store: ProfileStore) -> bool:
    """Whether a worker's heartbeat (stream/heartbeat.py) is fresh. Raises StoreUnavailable."""
    with redis_errors("reading the worker heartbeat"):
        return bool(await store.client.exists(Keys(store.settings.key_prefix).worker_consuming))


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(_: Request) -> Response:
    return Response(metrics.api_exposition(), media_type=CONTENT_TYPE_LATEST)
