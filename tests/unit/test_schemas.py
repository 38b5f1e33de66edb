"""The event schema: one valid example per type, and precise errors."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import EVENT_TYPES, InvalidEvent, event_json_schema, parse_event, parse_event_obj

TS = "2026-11-23T10:00:00+01:00"
WHO = {"customer_id": "c1"}
EXAMPLES: dict[str, dict[str, Any]] = {
    "page_view": {"url": "https://shop.example/", **WHO},
    "product_view": {"item_id": "sku-1", "category": "shoes", "price": 10.5, **WHO},
    "search": {"query": "red shoes", **WHO},
    "add_to_cart": {"item_id": "sku-1", "quantity": 2, **WHO},
    "remove_from_cart": {"item_id": "sku-1", **WHO},
    "purchase": {
        "order_id": "o-1",
        "currency": "EUR",
        "lines": [{"item_id": "sku-1", "quantity": 2, "unit_price": 10.0}],
        **WHO,
    },
    "recommendation_click": {"recommendation_id": "r-1", "item_id": "sku-1", **WHO},
    "item": {"item_id": "sku-1", "title": "Shoe", "category": "shoes", "price": 10.0},
}


def make(kind: str, **over: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"e-{kind}", "timestamp": TS, **EXAMPLES[kind], **over}


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_type_has_a_valid_example(kind: str) -> None:
    event = parse_event_obj(make(kind))
    assert event.type == kind
    assert event.ts_ms == 1795424400000


def test_epoch_milliseconds_and_iso_agree() -> None:
    a = parse_event_obj(make("page_view"))
    b = parse_event_obj(make("page_view", timestamp=1795424400000))
    assert a.timestamp == b.timestamp


def errors_of(obj: Any) -> dict[str, str]:
    with pytest.raises(InvalidEvent) as info:
        parse_event_obj(obj)
    return {e.field: e.reason for e in info.value.errors}


def test_naive_timestamp_is_refused() -> None:
    assert "timezone" in errors_of(make("page_view", timestamp="2026-11-23T10:00:00"))["timestamp"]


def test_epoch_seconds_are_refused_with_a_hint() -> None:
    assert "milliseconds" in errors_of(make("page_view", timestamp=1763888400))["timestamp"]


def test_identity_required_for_behaviour_not_for_items() -> None:
    obj = make("page_view")
    del obj["customer_id"]
    assert "customer_id or anonymous_id" in errors_of(obj)["(event)"]
    assert parse_event_obj(make("item")).type == "item"
    assert parse_event_obj({**obj, "anonymous_id": "v1"}).kafka_key == "v1"


def test_unknown_type_and_raw_ip() -> None:
    assert "must be one of" in errors_of(make("page_view", type="teleport"))["type"]
    assert "raw IP" in errors_of(make("page_view", ip="10.0.0.1"))["ip"]


def test_nested_field_path_in_purchase_lines() -> None:
    bad = make("purchase", lines=[{"item_id": "a", "quantity": 0, "unit_price": 1.0}], currency="eur")
    errs = errors_of(bad)
    assert "greater than 0" in errs["lines.0.quantity"]
    assert "currency" in errs


def test_event_id_is_required_and_reported() -> None:
    obj = make("search")
    del obj["event_id"]
    assert errors_of(obj)["event_id"] == "Field required"
    with pytest.raises(InvalidEvent) as info:
        parse_event_obj(make("search", query=""))
    assert info.value.event_id == "e-search"


def test_bytes_that_are_not_json() -> None:
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        parse_event(b"\xff")
    with pytest.raises(InvalidEvent, match="JSON object"):
        parse_event(b"[]")


def test_purchase_revenue_and_numeric_ids() -> None:
    event = parse_event_obj(make("purchase", customer_id=17850))
    assert event.kafka_key == "17850"
    assert event.revenue == 20.0  # type: ignore[union-attr]


def test_json_schema_is_a_tagged_union() -> None:
    schema = event_json_schema()
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)


def test_every_example_in_the_schema_document_is_valid() -> None:
    """docs/event-schema.md stays true to the code: one valid example per type."""
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "event-schema.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    events = [parse_event_obj(e) for e in examples if "type" in e]
    assert sorted(e.type for e in events) == sorted(EVENT_TYPES)
