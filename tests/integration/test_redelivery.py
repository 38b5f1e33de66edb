"""De-duplication on one Redis node: a redelivery from Kafka of a message produced before the window is known by its
partition offset, so the per-profile set of event ids only has to remember events for ``ECRM_DEDUPE_WINDOW_S``
(re-sends, and redeliveries of younger messages); a message younger than the window at an offset already passed
(a topic started again) is judged by the set; a plan the script refused is judged again when it comes back. And a
visitor's event is judged against the visitor's own events, also after their login (on a cluster too)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from core.keyspace import Keys
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.migrate import forget_offsets
from profiles.script import Origin
from profiles.store import APPLIED, DUPLICATE, ProfileStore, Status
from profiles.updates import plan_update
from schemas import parse_event_obj
from tests.conftest import on_cluster

pytestmark = pytest.mark.integration
T0 = 1_795_424_400_000
WINDOW_S = 0.5


def old() -> int:
    """When a message produced before the window was produced (ms)."""
    return int(time.time() * 1000) - 10_000


def ev(kind: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"{kind}-{n}", "timestamp": T0 + n, "customer_id": "r", **fields}


async def apply(store: ProfileStore, events: list[dict[str, Any]], origins: list[Origin | None]) -> list[Status]:
    plans = [plan_update(parse_event_obj(e), store.settings.event_weights) for e in events]
    return await store.apply_plans(plans, origins)


@pytest.fixture()
async def store(settings: Settings) -> Any:
    short = settings.model_copy(update={"dedupe_window_s": WINDOW_S, "cart_lines_max": 1})
    s = ProfileStore(connect(short), short)
    yield s
    await s.client.aclose()


async def window_passes(store: ProfileStore) -> None:
    keys = Keys(store.settings.key_prefix)
    await asyncio.sleep(WINDOW_S + 0.2)
    assert not await store.client.exists(keys.seen_set("c:r"))  # the set of event ids expired with the window


async def views(store: ProfileStore) -> int:
    profile = await store.profile("c:r")
    assert profile is not None
    return int(profile["event_counts"].get("product_view", 0))


async def test_a_redelivery_after_the_window_is_a_duplicate_by_its_offset(store: ProfileStore) -> None:
    events = [ev("product_view", n, item_id=f"sku-{n}") for n in range(5)]
    origins: list[Origin | None] = [("t.events:3", 100 + n, old()) for n in range(5)]
    assert await apply(store, events, origins) == [APPLIED] * 5
    await window_passes(store)
    assert await apply(store, events[2:], origins[2:]) == [DUPLICATE] * 3  # redelivered after a crash: no marker
    assert await views(store) == 5
    keys = Keys(store.settings.key_prefix)
    assert await store.client.hget(keys.applied_offsets, "t.events:3") == "104"
    # another partition's offsets are its own
    other = [ev("product_view", 9, item_id="sku-9")]
    assert await apply(store, other, [("t.events:1", 100, old())]) == [APPLIED]
    assert await views(store) == 6


async def test_a_young_message_at_an_offset_passed_is_judged_by_its_id(store: ProfileStore) -> None:
    """A topic started again (an embedded broker restarted empty) gives offsets from 0 again: a message produced
    within the window is applied unless its event was."""
    now = int(time.time() * 1000)
    first = [ev("product_view", n, item_id=f"sku-{n}") for n in range(3)]
    assert await apply(store, first, [("t.events:0", 500 + n, now) for n in range(3)]) == [APPLIED] * 3
    again = [ev("product_view", n, item_id=f"sku-{n}") for n in range(10, 13)]
    assert await apply(store, again, [("t.events:0", n, now) for n in range(3)]) == [APPLIED] * 3  # new events
    assert await apply(store, first[:1], [("t.events:0", 3, now)]) == [DUPLICATE]  # the same event: its id
    assert await views(store) == 6


async def test_a_re_send_is_a_duplicate_within_the_window_only(store: ProfileStore) -> None:
    event = [ev("product_view", 1, item_id="sku-1")]
    assert await apply(store, event, [("t.events:0", 10, old())]) == [APPLIED]
    assert await apply(store, event, [("t.events:0", 11, old())]) == [DUPLICATE]  # a producer's retry: a new offset
    assert await apply(store, event, [None]) == [DUPLICATE]  # not from Kafka: the set of event ids alone
    await window_passes(store)
    assert await apply(store, event, [("t.events:0", 12, old())]) == [APPLIED]  # past the window: counted again
    assert await views(store) == 2


async def test_a_refused_plan_is_judged_again_when_it_comes_back(store: ProfileStore) -> None:
    adds = [ev("add_to_cart", n, item_id=f"sku-{n}", quantity=1) for n in range(2)]
    origins: list[Origin | None] = [("t.events:2", 7, old()), ("t.events:2", 8, old())]
    first = await apply(store, adds, origins)  # one cart line at most: the second add is refused
    assert first[0] == APPLIED and isinstance(first[1], str) and "ECRM_CART_LINES_MAX" in first[1]
    later = [ev("product_view", 5, item_id="sku-5")]
    assert await apply(store, later, [("t.events:2", 9, old())]) == [APPLIED]  # the offset passes the refusal
    await window_passes(store)
    again = await apply(store, [*adds, *later], [*origins, ("t.events:2", 9, old())])
    assert again[0] == DUPLICATE and isinstance(again[1], str) and again[2] == DUPLICATE
    profile = await store.profile("c:r")
    assert profile is not None and profile["cart"] == [{"item_id": "sku-0", "quantity": 1}]


async def test_a_topic_created_again_starts_with_no_applied_offsets(store: ProfileStore) -> None:
    keys = Keys(store.settings.key_prefix)
    event = [ev("product_view", 1, item_id="sku-1")]
    assert await apply(store, event, [("t.events:0", 50, old())]) == [APPLIED]
    await store.client.hset(keys.applied_offsets, mapping={"t.events:1": 9, "t.events.dlq:0": 3, "other:0": 4})
    sync = connect_sync(store.settings)
    try:
        assert forget_offsets(sync, keys.applied_offsets, "t.events") == 2
    finally:
        sync.close()
    assert await store.client.hgetall(keys.applied_offsets) == {"t.events.dlq:0": "3", "other:0": "4"}
    await window_passes(store)
    fresh = [ev("product_view", 2, item_id="sku-2")]  # offset 0 of the new topic: applied, not a redelivery
    assert await apply(store, fresh, [("t.events:0", 0, old())]) == [APPLIED]
    assert await views(store) == 2


@pytest.fixture(params=["single", "cluster"])
async def plain_store(request: pytest.FixtureRequest, settings: Settings) -> Any:
    """A store with the default windows, on one node and on the suite's three-node Redis Cluster."""
    if request.param == "cluster":
        settings = on_cluster(settings, request.getfixturevalue("redis_cluster"))
    s = ProfileStore(connect(settings), settings)
    yield s
    await s.client.aclose()


def visit(visitor: str, event_id: str, n: int, customer: str | None = None) -> dict[str, Any]:
    """A page view of a visitor (with ``customer``: a login), sent by the shop's server with ``event_id``."""
    event = {"type": "page_view", "event_id": event_id, "timestamp": T0 + n, "anonymous_id": visitor}
    return event | ({"customer_id": customer} if customer else {})


async def page_views(store: ProfileStore, pid: str) -> int:
    profile = await store.profile(pid)
    return 0 if profile is None else int(profile["event_counts"].get("page_view", 0))


async def test_a_visitors_event_is_judged_against_the_visitors_own_events(plain_store: ProfileStore) -> None:
    """An event is a duplicate of one with the same sender and id of the same own profile: a visitor's event after
    their login is not one of the customer's own event with that id, and a re-send of the visitor's event is one
    whichever customer a later login (a shared device) moved the visitor to (on a cluster: known by a marker in
    the visitor's slot, written once the event's global effects are)."""
    store = plain_store
    assert await apply(store, [visit("v", "login-1", 1, customer="c1")], [None]) == [APPLIED]
    customers_own = {"type": "page_view", "event_id": "x", "timestamp": T0 + 2, "customer_id": "c1"}
    assert await apply(store, [customers_own], [None]) == [APPLIED]
    assert await apply(store, [visit("v", "x", 3)], [None]) == [APPLIED]  # lands in c1: not the customer's "x"
    assert await page_views(store, "c:c1") == 3
    assert await apply(store, [visit("v", "x", 3)], [None]) == [DUPLICATE]  # the visitor's "x" again
    assert await apply(store, [visit("v", "login-2", 4, customer="c2")], [None]) == [APPLIED]  # moved to c2
    assert await apply(store, [visit("v", "x", 3)], [None]) == [DUPLICATE]  # still the visitor's "x"
    assert (await page_views(store, "c:c1"), await page_views(store, "c:c2")) == (3, 1)
