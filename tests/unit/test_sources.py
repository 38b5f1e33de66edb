"""Where an event came from decides what it may do: a page's key writes only anonymous visitors."""

from __future__ import annotations

import pytest

from schemas import parse_event_obj
from stream.agents import source_of
from stream.processing import source_refusal

TS = 1_795_424_400_000
VIEW = {"type": "product_view", "event_id": "e", "timestamp": TS, "item_id": "i"}
ITEM = {"type": "item", "event_id": "e", "timestamp": TS, "item_id": "i", "title": "T", "category": "k", "price": 1}


@pytest.mark.parametrize(
    ("event", "source", "field"),
    [
        ({**VIEW, "anonymous_id": "v"}, "collect", None),
        ({**VIEW, "customer_id": "c"}, "collect", "customer_id"),
        ({**VIEW, "customer_id": "c", "anonymous_id": "v"}, "collect", "customer_id"),  # a login
        (ITEM, "collect", "type"),
        ({**VIEW, "customer_id": "c", "anonymous_id": "v"}, "server", None),
        (ITEM, "admin", None),
        ({**VIEW, "customer_id": "c"}, "direct", None),
    ],
)
def test_source_refusal(event: dict[str, object], source: str, field: str | None) -> None:
    refused = source_refusal(parse_event_obj(event), source)
    assert (refused.field if refused else None) == field


def test_source_header() -> None:
    assert source_of([("source", b"collect")]) == "collect"
    assert source_of({"source": b"server"}) == "server"
    assert source_of(None) == "direct"
    assert source_of([("other", b"x")]) == "direct"
    assert source_of([("source", b"x" * 100)]) == "direct"  # not a source name
