"""``POST /v1/events``: the HTTP collector."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.collector import response_status
from api.deps import CollectorDep, SettingsDep
from api.errors import PayloadTooLarge
from api.models import CollectResponse

router = APIRouter(prefix="/v1/events", tags=["events"])


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "",
    status_code=202,
    response_model=CollectResponse,
    responses={422: {"model": CollectResponse}, 413: {"model": CollectResponse}, 400: {}, 503: {}},
    summary="Collect one event or a batch (up to the configured limit, 500 by default)",
)
async def collect(request: Request, collector: CollectorDep, settings: SettingsDep) -> JSONResponse:
    """Valid events go to Kafka; invalid ones are reported by index, field, reason and status (422 when none is
    valid; 413 when every event is over the size limit, or the body or batch is)."""
    body = await read_limited(request, settings.api_max_body_bytes)
    result = await collector.collect(body)
    rejected = len({e["index"] for e in result.errors})
    payload = {"accepted": result.accepted, "rejected": rejected, "errors": result.errors}
    return JSONResponse(payload, status_code=response_status(result.accepted, result.errors))
