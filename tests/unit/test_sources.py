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


HEADER_NAMES = st.sampled_from(["source", "client", "other", "Source", "tenant"])
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
    assert senders_of(headers)[:2] == (source_of(headers), client_of(headers))


def test_senders_of_a_collect_keys_event() -> None:
    headers = [("source", b"collect"), ("client", b"d1g3st"), ("source", b"server"), ("client", b"other")]
    assert senders_of(headers) == ("collect", "d1g3st", "default")  # the first of each, as source_of and client_of
    assert senders_of([("source", b"x" * 40), ("source", b"server")]) == ("server", None, "default")
    assert senders_of([]) == ("direct", None, "default")


def test_the_tenant_header_is_read_as_sent() -> None:
    """The first ``tenant`` header, as sent (cut to 64 bytes): the processor refuses what is not a hosted tenant."""
    assert senders_of([("tenant", b"acme"), ("tenant", b"other")])[2] == "acme"
    assert senders_of([("tenant", b"")])[2] == ""  # empty: refused, not taken for the default
    assert senders_of([("tenant", b"x" * 100)])[2] == "x" * 64
    assert senders_of([("tenant", None)])[2] == ""  # type: ignore[list-item]


def test_a_batch_is_applied_tenant_by_tenant_in_order() -> None:
    """Each tenant's plans in their order, the tenants in the order of their first message; one tenant: as is."""
    from profiles.updates import Plan
    from stream.processing import RawMessage, by_tenant

    tenants = ["a", "b", "a", "default", "b", "a"]
    msgs = [RawMessage(b"", offset=i, tenant=t) for i, t in enumerate(tenants)]
    plans = [Plan(f"e{i}", "page_view", i) for i in range(len(tenants))]
    groups = by_tenant(plans, msgs)
    assert [(t, [p.event_id for p in ps], [m.offset for m in ms]) for t, ps, ms in groups] == [
        ("a", ["e0", "e2", "e5"], [0, 2, 5]), ("b", ["e1", "e4"], [1, 4]), ("default", ["e3"], [3]),
    ]  # fmt: skip
    one = by_tenant(plans[:1], msgs[:1])
    assert one == [("a", plans[:1], msgs[:1])] and by_tenant([], []) == []


def test_a_tenant_header_is_refused_saying_why() -> None:
    from stream.processing import tenant_refusal

    hosted = frozenset({"default", "acme"})
    assert tenant_refusal("acme", hosted) is None
    unknown = tenant_refusal("shop-z", hosted)
    assert unknown is not None and unknown.field == "(header) tenant"
    assert "the tenant 'shop-z' is not hosted by this engine (hosted: acme, default; add it to ECRM_TENANTS" in (
        unknown.reason
    )
    bad = tenant_refusal("Acme|x" * 20, hosted)
    assert bad is not None and bad.reason.startswith("not a tenant name: 'Acme|x") and len(bad.reason) < 200
