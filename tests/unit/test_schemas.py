"""The event schema: one valid example per type, and precise errors."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import (
    EVENT_TYPES,
    EventLimits,
    EventTooLarge,
    InvalidEvent,
    encode_event,
    event_json_schema,
    parse_event,
    parse_event_obj,
)
from schemas.events import MAX_ERRORS, MAX_LINE_TOTAL, MAX_LINES, MAX_PRICE, MAX_REVENUE

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
    "recommendation_view": {"recommendation_id": "r-1", "item_ids": ["sku-1", "sku-2"], **WHO},
    "item": {"item_id": "sku-1", "title": "Shoe", "category": "shoes", "price": 10.0},
}


NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # half an hour after TS
LIMITS = EventLimits(now=NOW)
DOC_LIMITS = EventLimits(now=datetime(2026, 11, 23, 12, 0, tzinfo=UTC))


def make(kind: str, **over: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"e-{kind}", "timestamp": TS, **EXAMPLES[kind], **over}


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_type_has_a_valid_example(kind: str) -> None:
    event = parse_event_obj(make(kind), LIMITS)
    assert event.type == kind
    assert event.ts_ms == 1795424400000


def test_epoch_milliseconds_and_iso_agree() -> None:
    a = parse_event_obj(make("page_view"))
    b = parse_event_obj(make("page_view", timestamp=1795424400000))
    assert a.timestamp == b.timestamp


def errors_of(obj: Any, limits: EventLimits = LIMITS) -> dict[str, str]:
    with pytest.raises(InvalidEvent) as info:
        parse_event_obj(obj, limits)
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


def test_json_schema_shows_what_is_accepted() -> None:
    """Numbers where text is read (a numeric customer id), epoch milliseconds; but the currency stays a string."""
    defs = event_json_schema()["$defs"]
    customer = defs["PageView"]["properties"]["customer_id"]["anyOf"]
    assert {"type": "number"} in customer and {"type": "null"} in customer
    assert parse_event_obj(make("page_view", customer_id=17850)).customer_id == "17850"  # type: ignore[union-attr]
    timestamp = defs["PageView"]["properties"]["timestamp"]["anyOf"]
    assert [t["type"] for t in timestamp] == ["string", "number"]
    assert defs["Purchase"]["properties"]["currency"]["type"] == "string"
    refs = event_json_schema(ref_template="#/components/schemas/{model}")["oneOf"]
    assert refs[0] == {"$ref": "#/components/schemas/PageView"}


def _document_blocks() -> list[dict[str, Any]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "event-schema.md").read_text()
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_every_example_in_the_schema_document_is_valid() -> None:
    """docs/event-schema.md stays true to the code: one valid example per type (at the document's "now")."""
    events = [parse_event_obj(e, DOC_LIMITS) for e in _document_blocks() if "type" in e and "stage" not in e]
    assert sorted(e.type for e in events) == sorted(EVENT_TYPES)


def test_every_refused_example_in_the_schema_document_gets_its_reason() -> None:
    refused = [block for block in _document_blocks() if "refused" in block]
    assert len(refused) >= 5
    for block in refused:
        assert errors_of(block["event"], DOC_LIMITS) == {block["refused"]["field"]: block["refused"]["reason"]}


# --- Limits (deterministic: "now" is injected) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name", "position"),
    [
        ("victim\tx", "TAB", 6),
        ("victim\nx", "LINE FEED (newline)", 6),
        ("a\x00", "NUL", 1),
        ("\x1bx", "U+001B", 0),
        ("ab\u200bc", "ZERO WIDTH SPACE", 2),
        ("x\u202ey", "RIGHT-TO-LEFT OVERRIDE", 1),
        ("x\u2028y", "LINE SEPARATOR", 1),
        ("\tvictim", "TAB", 0),  # not stripped away as whitespace: refused
        ("victim\n", "LINE FEED (newline)", 6),
    ],
)
def test_control_and_format_characters_are_refused_in_ids_with_which_and_where(
    value: str, name: str, position: int
) -> None:
    for field in ("customer_id", "event_id", "item_id", "category", "session_id"):
        reason = errors_of(make("product_view", **{field: value}))[field]
        assert name in reason and f"at position {position}" in reason, (field, reason)
        assert "is not allowed in an id" in reason
    reason = errors_of(make("search", results=["ok", value]))["results.1"]
    assert f"at position {position}" in reason


def test_limits_need_an_aware_floor() -> None:
    with pytest.raises(ValueError, match="time zone"):
        EventLimits(floor=datetime(2000, 1, 1))


def test_key_syntax_unicode_and_spaces_are_fine_in_ids() -> None:
    for value in ["victim:cart", "victim}:cart", "{victim}", "vïctim✓", "victim%3Acart", "c:victim", "a b", "ü\u00a0x"]:
        event = parse_event_obj(make("product_view", customer_id=value, item_id=value), LIMITS)
        assert event.kafka_key == value


def test_ids_and_texts_have_length_bounds() -> None:
    assert "at most 256" in errors_of(make("page_view", customer_id="x" * 257))["customer_id"]
    assert "at most 256" in errors_of(make("page_view", event_id="x" * 257))["event_id"]
    parse_event_obj(make("page_view", customer_id="x" * 256), LIMITS)
    assert "at most 4096" in errors_of(make("page_view", url="u" * 4097))["url"]
    assert "at most 1024" in errors_of(make("page_view", title="t" * 1025))["title"]
    assert "at most 1024" in errors_of(make("search", query="q" * 1025))["query"]
    assert "at most 1000" in errors_of(make("search", results=["r"] * 1001))["results"]


def test_a_refused_event_id_is_reported_cut_to_the_bound() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event_obj(make("page_view", event_id="e" * 100_000), LIMITS)
    assert info.value.event_id is not None and len(info.value.event_id) == 256


@pytest.mark.parametrize("timestamp", ["2026-11-23T09:35:00+00:00", NOW + timedelta(seconds=300)])
def test_timestamps_up_to_the_allowed_lead_are_accepted(timestamp: Any) -> None:
    value = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
    assert parse_event_obj(make("page_view", timestamp=value), LIMITS).timestamp > NOW
    ms = int((NOW + timedelta(seconds=300)).timestamp() * 1000)
    assert parse_event_obj(make("page_view", timestamp=ms), LIMITS).ts_ms == ms


@pytest.mark.parametrize(
    "timestamp",
    ["2026-11-23T09:35:01Z", "2026-12-06T09:30:00+00:00", "2026-11-23T23:35:01+14:00", 1795426501000, 4102444799000],
)
def test_timestamps_too_far_ahead_are_refused(timestamp: Any) -> None:
    reason = errors_of(make("product_view", timestamp=timestamp))["timestamp"]
    assert "in the future" in reason and "at most 300 s ahead" in reason and "ECRM_MAX_FUTURE_S" in reason


def test_the_future_is_relative_to_the_injected_now_and_lead() -> None:
    later = EventLimits(now=NOW + timedelta(days=14))
    assert parse_event_obj(make("product_view", timestamp="2026-12-06T09:30:00Z"), later).type == "product_view"
    strict = EventLimits(now=NOW, max_future_s=0)
    assert "in the future" in errors_of(make("page_view", timestamp="2026-11-23T09:30:01Z"), strict)["timestamp"]


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00+14:00",
        "1999-12-31T23:59:59Z",
        "2000-01-01T05:00:00+06:00",
        1,
        946684799999,
    ],
)
def test_timestamps_before_the_floor_are_refused(timestamp: Any) -> None:
    reason = errors_of(make("page_view", timestamp=timestamp))["timestamp"]
    assert "before the oldest accepted time 2000-01-01T00:00:00+00:00" in reason and "ECRM_TIMESTAMP_FLOOR" in reason


def test_a_lower_floor_lets_history_in() -> None:
    history = EventLimits(now=NOW, floor=datetime(1990, 1, 1, tzinfo=UTC))
    old = make("purchase", timestamp="1995-06-01T10:00:00+02:00")
    assert parse_event_obj(old, history).ts_ms == 801993600000
    assert parse_event_obj(make("page_view", timestamp=801993600000), history).ts_ms == 801993600000
    assert "before the oldest" in errors_of(old)["timestamp"]  # the default floor refuses it


@pytest.mark.parametrize("timestamp", [math.inf, -math.inf, math.nan, 10**20, True])
def test_timestamps_that_are_no_time_at_all(timestamp: Any) -> None:
    assert errors_of(make("page_view", timestamp=timestamp))["timestamp"]


def test_default_limits_read_the_clock() -> None:
    now = datetime.now(UTC)
    assert parse_event_obj(make("page_view", timestamp=(now + timedelta(seconds=200)).isoformat())).type
    with pytest.raises(InvalidEvent, match="in the future"):
        parse_event_obj(make("page_view", timestamp=(now + timedelta(seconds=400)).isoformat()))


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "Infinity", math.inf, math.nan, -1.0, MAX_PRICE * 1.01])
def test_money_is_finite_and_bounded(bad: Any) -> None:
    line = {"item_id": "a", "quantity": 1, "unit_price": bad}
    assert "lines.0.unit_price" in errors_of(make("purchase", lines=[line]))
    assert "price" in errors_of(make("product_view", price=bad))
    assert "price" in errors_of(make("add_to_cart", price=bad))
    assert "price" in errors_of(make("item", price=bad))


def test_line_totals_and_revenue_are_capped() -> None:
    at_cap = {"item_id": "a", "quantity": 10, "unit_price": MAX_LINE_TOTAL / 10}
    assert parse_event_obj(make("purchase", lines=[at_cap]), LIMITS).revenue == MAX_LINE_TOTAL  # type: ignore[union-attr]
    over = {**at_cap, "quantity": 11}
    assert "line total" in errors_of(make("purchase", lines=[over]))["lines.0"]
    n = int(MAX_REVENUE / MAX_LINE_TOTAL)
    assert parse_event_obj(make("purchase", lines=[at_cap] * n), LIMITS).revenue == MAX_REVENUE  # type: ignore[union-attr]
    reason = errors_of(make("purchase", lines=[at_cap] * (n + 1)))["lines"]
    assert "revenue" in reason and "100,000,000" in reason


def test_quantities_and_lines_are_capped() -> None:
    line = {"item_id": "a", "quantity": 1, "unit_price": 1.0}
    parse_event_obj(make("purchase", lines=[line] * MAX_LINES), LIMITS)
    assert "at most 1000" in errors_of(make("purchase", lines=[line] * (MAX_LINES + 1)))["lines"]
    assert "lines.0.quantity" in errors_of(make("purchase", lines=[{**line, "quantity": 1_000_001}]))
    assert "lines.0.quantity" in errors_of(make("purchase", lines=[{**line, "quantity": 1e308}]))
    assert "quantity" in errors_of(make("add_to_cart", quantity=100_001))
    assert "quantity" in errors_of(make("remove_from_cart", quantity=100_001))


def test_at_most_twenty_reasons_per_event() -> None:
    bad = make("purchase", lines=[{"item_id": "a", "quantity": 0, "unit_price": -1}] * 100)
    with pytest.raises(InvalidEvent) as info:
        parse_event_obj(bad, LIMITS)
    assert len(info.value.errors) == MAX_ERRORS
    assert info.value.errors[-1].reason == f"and {200 - MAX_ERRORS + 1} more errors"


def test_a_long_unknown_field_name_is_cut_in_the_report() -> None:
    errors = errors_of(make("page_view", **{"f" * 10_000: 1}))
    (field,) = errors
    assert len(field) == 200 and errors[field] == "unknown field"


def test_size_limit_on_encoded_events() -> None:
    limits = EventLimits(now=NOW, max_event_bytes=2048)
    fits = make("page_view", url="u" * 1500)
    event, raw = encode_event(fits, limits)
    assert event.type == "page_view" and raw == orjson.dumps(fits) and len(raw) <= 2048
    big = make("page_view", url="u" * 3000)
    with pytest.raises(EventTooLarge) as info:
        encode_event(big, limits)
    (error,) = info.value.errors
    assert error.field == "(event)" and f"event of {len(orjson.dumps(big)):,} bytes" in error.reason
    assert "exceeds the limit of 2,048 bytes (ECRM_MAX_EVENT_BYTES)" in error.reason
    assert info.value.event_id == "e-page_view"
    with pytest.raises(EventTooLarge):  # the worker's path: raw bytes
        parse_event(orjson.dumps(big), limits)
    with pytest.raises(EventTooLarge) as info:  # its size is the first reason, JSON or not
        parse_event(b"x" * 3000, limits)
    assert info.value.event_id is None
    with pytest.raises(EventTooLarge) as info:
        parse_event(orjson.dumps(big), limits)
    assert info.value.event_id == "e-page_view"
    with pytest.raises(InvalidEvent, match="JSON object"):
        parse_event(b"null", limits)
    assert parse_event(orjson.dumps(fits), limits).type == "page_view"


def test_default_size_limit_is_well_under_kafkas_message_size() -> None:
    assert EventLimits().max_event_bytes == 128 * 1024
    line = {"item_id": "sku-123456", "quantity": 1, "unit_price": 19.9, "category": "skincare"}
    _, raw = encode_event(make("purchase", lines=[line] * MAX_LINES), LIMITS)  # the most lines fit
    assert len(raw) < EventLimits().max_event_bytes


def test_the_json_schema_shows_the_caps() -> None:
    defs = event_json_schema()["$defs"]
    assert defs["OrderLine"]["properties"]["unit_price"]["maximum"] == MAX_PRICE
    assert defs["Purchase"]["properties"]["lines"]["maxItems"] == MAX_LINES
    assert defs["PageView"]["properties"]["customer_id"]["anyOf"][0]["maxLength"] == 256


def test_item_attributes_may_be_null_and_are_bounded() -> None:
    """Found by the OpenAPI fuzzing: ``"attributes": null`` raised a TypeError (a 500) instead of being accepted."""
    from schemas import InvalidEvent, parse_event_obj

    base = {"type": "item", "event_id": "e", "timestamp": 1_795_424_400_000, "item_id": "i", "title": "T",
            "category": "k", "price": 1}  # fmt: skip
    assert parse_event_obj({**base, "attributes": None}).attributes is None  # type: ignore[union-attr]
    with pytest.raises(InvalidEvent, match="at most 50 items"):
        parse_event_obj({**base, "attributes": {f"k{i}": 1 for i in range(51)}})
