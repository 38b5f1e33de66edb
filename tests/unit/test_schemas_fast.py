"""The validation fast path (schemas/events.py ``fast_event``): for any input it either declines (None: pydantic
decides and words the refusal) or returns exactly the event pydantic returns: equal, the same fields set, in the
same order, of the same types. It never accepts what pydantic refuses."""

from __future__ import annotations

import time
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from benchmarks.ingest import generate
from schemas.events import (
    _VALIDATOR,
    DEFAULT_LIMITS,
    MAX_ID_LENGTH,
    MAX_PRICE,
    EventLimits,
    InvalidEvent,
    fast_event,
    parse_event,
)


def pydantic_of(obj: dict[str, Any], limits: EventLimits = DEFAULT_LIMITS) -> BaseModel | None:
    """What pydantic alone returns for ``obj`` (None: refused)."""
    try:
        event: BaseModel = _VALIDATOR.validate_python(obj, context=limits.context())
        return event
    except ValidationError:
        return None


def assert_same(fast: BaseModel, slow: BaseModel | None) -> None:
    assert slow is not None, "the fast path accepted what pydantic refuses"
    assert type(fast) is type(slow)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert list(fast.__dict__) == list(slow.__dict__)  # the fields in the model's order
    assert [type(v) for v in fast.__dict__.values()] == [type(v) for v in slow.__dict__.values()]
    assert fast.model_dump_json() == slow.model_dump_json()
    if not any(isinstance(v, list) for v in slow.__dict__.values()):  # a search's results: unhashable either way
        assert hash(fast) == hash(slow)


def test_the_simulators_events_take_the_fast_path_and_equal_pydantics() -> None:
    events = [orjson.loads(orjson.dumps(e)) for e in generate(5000)]
    taken = 0
    for obj in events:
        fast = fast_event(obj, DEFAULT_LIMITS)
        if fast is not None:
            taken += 1
            assert_same(fast, pydantic_of(obj))
    fast_types = ("page_view", "product_view", "add_to_cart", "remove_from_cart", "search")
    common = sum(e["type"] in fast_types for e in events)
    assert taken == common  # every event of a common type the simulator writes is plainly valid


NOW_MS = int(time.time() * 1000)
ids = st.one_of(
    st.text(min_size=0, max_size=6),  # control and format characters, surrounding spaces, empty
    st.sampled_from(["c1", " c1", "c1 ", "c\t1", "c\u200b1", "c\u00a01", "\u3000c", "é", "x" * MAX_ID_LENGTH]),
    st.just("x" * (MAX_ID_LENGTH + 1)),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
)
numbers = st.one_of(
    st.integers(-2, 200_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, -0.0, MAX_PRICE, MAX_PRICE + 0.01, 10**30, True, False, "3", None]),
)
timestamps = st.one_of(
    st.integers(NOW_MS - 10**10, NOW_MS + 400_000),
    st.sampled_from(
        [
            int(DEFAULT_LIMITS.floor_ms) - 4000,
            int(DEFAULT_LIMITS.floor_ms) - 1,
            int(DEFAULT_LIMITS.floor_ms),
            int(DEFAULT_LIMITS.floor_ms) + 999,
            int(DEFAULT_LIMITS.floor_ms) + 1000,
            NOW_MS // 1000,  # epoch seconds
            4_102_444_800_001,
            float(NOW_MS),
            True,
            "2026-11-23T10:00:00+01:00",
            "2026-11-23T10:00:00",
            None,
        ]
    ),
)
texts = st.one_of(st.text(max_size=5), st.sampled_from([" u", "u ", "\tu", "u\n", "\u3000u", "u\u00a0", "\x85u"]))
FIELDS = {
    "event_id": ids,
    "session_id": ids,
    "customer_id": ids,
    "anonymous_id": ids,
    "item_id": ids,
    "category": ids,
    "recommendation_id": ids,
    "url": st.one_of(texts, st.none(), st.integers(0, 3), st.just("u" * 4097)),
    "title": st.one_of(texts, st.none(), st.just("t" * 1025)),
    "timestamp": timestamps,
    "query": st.one_of(texts, st.none(), st.integers(0, 3), st.just("q" * 1025)),
    "results": st.one_of(st.lists(ids, max_size=3), st.none(), st.just("sku-1")),
    "price": numbers,
    "quantity": numbers,
    "ip": st.just("10.0.0.1"),
    "lines": st.just([]),
}
TYPES = ["page_view", "product_view", "add_to_cart", "remove_from_cart", "recommendation_click", "search", "item"]


OWN = {  # the fields of a valid event of each type, beyond the common ones
    "page_view": {"title": "Home"},
    "product_view": {"item_id": "sku-1", "price": 10},
    "add_to_cart": {"item_id": "sku-1", "quantity": 2},
    "remove_from_cart": {"item_id": "sku-1"},
    "recommendation_click": {"item_id": "sku-1", "recommendation_id": "r-1"},
    "search": {"query": "shoes", "results": ["sku-1"]},
    "item": {"item_id": "sku-1", "title": "Shoe", "category": "shoes", "price": 10},
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """An event near the common shapes: a valid event of a type with a field or two dropped or replaced, at times
    one of another type's or an unknown one."""
    kind = draw(st.sampled_from(sorted(OWN)))
    obj: dict[str, Any] = {"type": kind, "event_id": "e-1", "timestamp": NOW_MS - 1000, "customer_id": "c-1"}
    obj.update(OWN[kind])
    for name in draw(st.lists(st.sampled_from(sorted(obj)), max_size=2)):
        if name != "type":
            obj.pop(name, None)
    own = sorted({*OWN[kind], "event_id", "session_id", "customer_id", "anonymous_id", "url", "category"})
    others = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=1)) if draw(st.integers(0, 9)) == 0 else []
    for name in [*draw(st.lists(st.sampled_from(own), max_size=3)), *others]:
        if name in FIELDS:
            obj[name] = draw(FIELDS[name])
    if draw(st.booleans()):
        obj["timestamp"] = draw(timestamps)
    return obj


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=events())
def test_the_fast_path_declines_or_equals_pydantic(obj: dict[str, Any]) -> None:
    fast = fast_event(obj, DEFAULT_LIMITS)
    if fast is not None:
        assert_same(fast, pydantic_of(obj))


def test_refusals_keep_pydantics_words() -> None:
    """What the fast path declines is refused by pydantic, with its field and reason (the worker's dead letters)."""
    base = {"type": "product_view", "event_id": "e-1", "timestamp": NOW_MS, "item_id": "sku-1"}
    cases = {
        "customer_id": ({**base, "customer_id": "c\t1"}, "control character U+0009 (TAB) at position 1"),
        "price": ({**base, "customer_id": "c1", "price": -1}, "greater than or equal to 0"),
        "(event)": (base, "customer_id or anonymous_id is required"),
        "ip": ({**base, "customer_id": "c1", "ip": "10.0.0.1"}, "raw IP addresses are never accepted"),
        "timestamp": ({**base, "customer_id": "c1", "timestamp": NOW_MS // 1000}, "multiply by 1000"),
    }
    for field, (obj, reason) in cases.items():
        assert fast_event(obj, DEFAULT_LIMITS) is None
        try:
            parse_event(orjson.dumps(obj))
        except InvalidEvent as exc:
            assert [e.field for e in exc.errors] == [field] and reason in exc.errors[0].reason
        else:
            raise AssertionError(f"{obj} was accepted")


def test_a_fixed_now_goes_to_pydantic() -> None:
    """Limits with a fixed present (tests, replays) are pydantic's alone: the fast path reads the clock."""
    limits = EventLimits(now=DEFAULT_LIMITS.floor)
    obj = {"type": "page_view", "event_id": "e-1", "timestamp": NOW_MS, "customer_id": "c1"}
    assert fast_event(obj, DEFAULT_LIMITS) is not None
    assert fast_event(obj, limits) is None
    assert pydantic_of(obj, limits) is None  # in the future of that present
