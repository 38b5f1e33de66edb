"""``POST /v1/events``: the HTTP collector."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.collector import response_status
from api.deps import CollectorDep, SettingsDep
from api.errors import PayloadTooLarge
from api.models import CollectResponse, ErrorBody
from api.ratelimit import CountedCaller
from schemas.events import event_json_schema

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
        # every event over the size limit (refused by index), or the body or the batch as a whole
        413: {"model": CollectResponse | ErrorBody},
        401: {"model": ErrorBody},
        400: {"model": ErrorBody},
        429: {"model": CollectResponse | ErrorBody},
        503: {"model": ErrorBody},
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
    `forbidden` (403 when none is accepted). The collector counts events against its rate limits (429 with
    `Retry-After`: per client address or key, and per `anonymous_id` of a `collect` key, whose events over its limit
    are refused by index); a `collect` key's request from a bot's user agent is refused (403 by index). Those
    refusals go to the dead-letter topic with the reason."""
    body = await read_limited(request, settings.api_max_body_bytes)
    entry = request.app.state.entry_limits  # the abuse limits (api/ratelimit.py)
    result = await collector.collect(body, sender, entry, request.headers.get("user-agent"))
    rejected = len({e["index"] for e in result.errors})
    payload = {
        "detail": collect_summary(result.accepted, rejected),
        "accepted": result.accepted,
        "rejected": rejected,
        "errors": result.errors,
    }
    status = response_status(result.accepted, result.errors)
    retry = {"Retry-After": str(result.retry_after_s)} if status == 429 and result.retry_after_s else None
    return JSONResponse(payload, status_code=status, headers=retry)


def collect_summary(accepted: int, rejected: int) -> str:
    """``2 events accepted, 1 refused`` (pure)."""

    def count(n: int) -> str:
        return f"{n} event{'' if n == 1 else 's'}"

    if not rejected:
        return f"{count(accepted)} accepted"
    if not accepted:
        return f"{count(rejected)} refused"
    return f"{count(accepted)} accepted, {rejected} refused"


EXAMPLE_EVENT = {
    "type": "product_view",
    "event_id": "2f6c1a9e-5b7d-4e21-9a0c-1d3e5f7a9b11",
    "timestamp": "2026-11-23T10:00:00Z",
    "anonymous_id": "anon-00001",
    "session_id": "s-1",
    "item_id": "sku-00001",
    "category": "skincare",
    "price": 19.9,
}
EXAMPLE_PURCHASE = {
    "type": "purchase",
    "event_id": "7a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c44",
    "timestamp": "2026-11-23T10:05:00Z",
    "customer_id": "cust-00000",
    "order_id": "o-1001",
    "currency": "EUR",
    "lines": [{"item_id": "sku-00001", "quantity": 1, "unit_price": 19.9, "category": "skincare"}],
}
EXAMPLE_BATCH = [
    {
        "type": "page_view",
        "event_id": "0b8e4f0c-8a51-4d1f-b3a5-6c2d7e9f1a01",
        "timestamp": "2026-11-23T09:59:30Z",
        "anonymous_id": "anon-00001",
        "session_id": "s-1",
        "url": "https://shop.example/",
    },
    EXAMPLE_EVENT,
    {
        "type": "add_to_cart",
        "event_id": "5c9d3e1f-2a4b-4c6d-8e0f-1a2b3c4d5e02",
        "timestamp": "2026-11-23T10:01:00Z",
        "anonymous_id": "anon-00001",
        "session_id": "s-1",
        "item_id": "sku-00001",
        "quantity": 1,
        "price": 19.9,
    },
]
EXAMPLES = {
    "product_view": {"summary": "One event: a visitor views a product", "value": EXAMPLE_EVENT},
    "purchase": {"summary": "One event: a customer's purchase (needs a server key)", "value": EXAMPLE_PURCHASE},
    "batch": {"summary": "A batch: page view, product view, add to cart", "value": EXAMPLE_BATCH},
}


def document_body(openapi: dict[str, Any], max_batch: int) -> dict[str, Any]:
    """Document the body of ``POST /v1/events`` in the OpenAPI document: the route reads it itself (to refuse
    events one by one rather than the whole request), so FastAPI does not see it. One event of the event schema
    (:func:`schemas.events.event_json_schema`, its models in ``components``) or a batch of them. Idempotent."""
    operation = openapi.get("paths", {}).get(router.prefix, {}).get("post")
    if operation is None:
        return openapi
    schema = event_json_schema(ref_template="#/components/schemas/{model}")
    models = schema.pop("$defs", {})
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(models)
    operation["requestBody"] = {
        "required": True,
        "description": f"One event, or a JSON array of 1 to {max_batch} events (ECRM_API_MAX_BATCH); each is "
        "checked on its own, see docs/event-schema.md. The examples can be sent as they are; an `event_id` seen "
        "before is applied once, so change it to send an example again",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        schema,
                        {"type": "array", "items": schema, "minItems": 1, "maxItems": max_batch},
                    ]
                },
                "examples": EXAMPLES,
            }
        },
    }
    return openapi
