"""Where an event came from decides what it may do: a page's key writes only anonymous visitors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import parse_event_obj
from stream.agents import client_of, senders_of, source_of
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


HEADER_NAMES = st.sampled_from(["source", "client", "other", "Source"])
HEADER_VALUES = st.one_of(st.binary(max_size=40), st.sampled_from([b"collect", b"server", b"", b"x" * 33]), st.none())
HEADERS = st.one_of(
    st.none(),
    st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5),
    st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5).map(tuple),
    st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
)


@given(HEADERS)
def test_senders_in_one_pass_as_read_one_by_one(headers: Any) -> None:
    """The worker's one pass over a message's headers gives what the two readers give, in every case."""
    assert senders_of(headers) == (source_of(headers), client_of(headers))


def test_senders_of_a_collect_keys_event() -> None:
    headers = [("source", b"collect"), ("client", b"d1g3st"), ("source", b"server"), ("client", b"other")]
    assert senders_of(headers) == ("collect", "d1g3st")  # the first of each, as source_of and client_of read
    assert senders_of([("source", b"x" * 40), ("source", b"server")]) == ("server", None)
    assert senders_of([]) == ("direct", None)
