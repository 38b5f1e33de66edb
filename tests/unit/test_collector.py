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


def test_an_entry_refusal_is_dead_lettered_in_the_workers_shape() -> None:
    from api.auth import Caller
    from api.collector import entry_dead_letter, refusal
    from core.scopes import Scope

    event = view(0)
    reason = "refused: rate limit of 30 events per 1 minute per visitor"
    refused = refusal(3, event, "anonymous_id", reason, 429)
    assert refused == {"index": 3, "event_id": event["event_id"], "field": "anonymous_id", "reason": reason,
                       "status": 429}  # fmt: skip
    sender = Caller(Scope.COLLECT, "collect", "client:1.2.3.4")
    letter = entry_dead_letter(event, refused, sender, "v1", 16)
    assert letter["stage"] == "collector" and letter["source"] == {"api": "collect"} and letter["key"] == "v1"
    assert letter["reason"] == "anonymous_id: refused: rate limit of 30 events per 1 minute per visitor"
    assert letter["event_id"] == event["event_id"] and letter["type"] == event["type"]
    assert letter["original_truncated"] and len(letter["original"]) == 16 and letter["original_size"] > 16
    assert "1.2.3.4" not in str(letter)  # the sender's address is not kept
    odd = entry_dead_letter(["not", "an", "event"], refusal(0, [], "user_agent", "bot", 403), sender, None, 1024)
    assert odd["event_id"] is None and odd["type"] is None and odd["original"] == '["not","an","event"]'


def test_a_browsers_purchase_has_few_lines_and_its_sender_a_client_digest() -> None:
    """Issue 18: a collect key's purchase is capped at ECRM_COLLECT_MAX_LINES lines (422 naming the setting); a
    server key's is not; a collect key's events carry a digest of the sender's address, other keys' none."""
    from api.auth import Caller
    from api.collector import client_of
    from core.scopes import Scope

    limits = EventLimits(now=datetime(2026, 11, 23, 12, 0, tzinfo=UTC), collect_max_lines=3)
    lines = [{"item_id": f"i{k}", "quantity": 1, "unit_price": 1.0} for k in range(4)]
    buy = {"type": "purchase", "event_id": "p", "timestamp": "2026-11-23T10:00:00Z", "anonymous_id": "v",
           "order_id": "o", "currency": "EUR", "lines": lines}  # fmt: skip
    browser = Caller(Scope.COLLECT, "collect", "client:203.0.113.9")
    shop = Caller(Scope.SERVER, "server", "key:1")
    records, errors = validate_batch([buy, {**buy, "lines": lines[:3]}], browser, limits)
    assert len(records) == 1 and [(e["index"], e["field"], e["status"]) for e in errors] == [(0, "lines", 422)]
    assert "ECRM_COLLECT_MAX_LINES" in errors[0]["reason"]
    assert len(validate_batch([buy], shop, limits)[0]) == 1
    digest = client_of(browser)
    assert digest is not None and len(digest) == 16 and "203.0.113.9" not in digest
    assert client_of(Caller(Scope.COLLECT, "collect", "client:203.0.113.10")) != digest
    assert client_of(shop) is None
