"""``POST /v1/events``: the HTTP collector."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.collector import response_status
from api.deps import CollectorDep, SettingsDep
from api.errors import PayloadTooLarge
from api.models import CollectResponse
from api.ratelimit import CountedCaller

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
    responses={
        422: {"model": CollectResponse},
        403: {"model": CollectResponse},
        413: {"model": CollectResponse},
        401: {},
        400: {},
        429: {},
        503: {},
    },
    summary="Collect one event or a batch (up to the configured limit, 500 by default)",
)
async def collect(
    request: Request, collector: CollectorDep, settings: SettingsDep, sender: CountedCaller
) -> JSONResponse:
    """Valid events go to Kafka; invalid ones are reported by index, field, reason and status (422 when none is
    valid; 413 when every event is over the size limit, or the body or batch is).

    Any key may post, and each event is checked against its scope: anonymous visitors' behavioural events need
    `collect`, an event with a `customer_id` (a login links a visitor to a customer) needs `server`, an `item`
    event needs `admin`. Events the key may not send are refused by index with a reason starting with
    `forbidden` (403 when none is accepted). The collector is rate limited (429 with `Retry-After`)."""
    body = await read_limited(request, settings.api_max_body_bytes)
    result = await collector.collect(body, sender)
    rejected = len({e["index"] for e in result.errors})
    payload = {"accepted": result.accepted, "rejected": rejected, "errors": result.errors}
    return JSONResponse(payload, status_code=response_status(result.accepted, result.errors))
