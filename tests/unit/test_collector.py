"""The collector's pure part: per-index refusals with their status, and the response status of a batch."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from api.collector import response_status, validate_batch
from schemas import EventLimits

LIMITS = EventLimits(now=datetime(2026, 11, 23, 12, 0, tzinfo=UTC), max_event_bytes=1024)


def view(n: int, **over: object) -> dict[str, object]:
    return {"type": "product_view", "event_id": f"e{n}", "timestamp": "2026-11-23T10:00:00Z", "customer_id": "c",
            "item_id": "i", **over}  # fmt: skip


def test_each_refusal_has_its_index_reason_and_status() -> None:
    big = view(1, url="u" * 2000)
    records, errors = validate_batch([view(0), big, view(2, timestamp="2026-11-24T10:00:00Z"), "nope"], limits=LIMITS)
    assert records == [("c", orjson.dumps(view(0)))]
    assert [(e["index"], e["field"], e["status"]) for e in errors] == [
        (1, "(event)", 413),
        (2, "timestamp", 422),
        (3, "(event)", 422),
    ]
    assert errors[0]["event_id"] == "e1" and "ECRM_MAX_EVENT_BYTES" in errors[0]["reason"]


def test_the_response_status() -> None:
    too_big = {"index": 0, "status": 413}
    invalid = {"index": 1, "status": 422}
    assert response_status(1, [too_big, invalid]) == 202
    assert response_status(0, [too_big]) == 413
    assert response_status(0, [too_big, {**too_big, "index": 1}]) == 413
    assert response_status(0, [too_big, invalid]) == 422
    assert response_status(0, [invalid]) == 422
