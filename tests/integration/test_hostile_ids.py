"""Ids that hold key syntax (``:``, ``{``, ``}``, ``%``) or any unicode, through the real worker: none touches another
customer's data or a global key, and the training log reads them back exactly. Ids with control characters (a tab,
a newline) are refused by the schema: the worker dead-letters those events with the character and its position."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer

from core.kafka import make_producer, produce_events
from core.keyspace import Keys, ProfileId, customer_pid
from core.redis import connect
from core.settings import Settings
from profiles.store import ProfileStore
from tests.conftest import wait_for
from tests.integration.helpers import now_ms, sync_redis
from trainer.logstore import read_training_log
from trainer.training import train_once

pytestmark = pytest.mark.integration
StartWorker = Callable[[], subprocess.Popen[bytes]]

HOSTILE = ["victim:cart", "victim}:cart", "{victim}", "vïctim✓", "victim%3Acart", "c:victim", "a b\u00a0c"]
ODD_ITEM = "it{em}:%✓ x"
# refused: (id, the field it is sent in, the reason's character and position)
CONTROL = [
    ("victim\tx", "customer_id", "U+0009 (TAB) at position 6"),
    ("victim\nx", "customer_id", "U+000A (LINE FEED (newline)) at position 6"),
    ("it\tem\nnew", "item_id", "U+0009 (TAB) at position 2"),
    ("k\tc", "category", "U+0009 (TAB) at position 1"),
    ("vi\u200bctim", "anonymous_id", "U+200B (ZERO WIDTH SPACE) at position 2"),
]


def ev(kind: str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": uuid.uuid4().hex, "timestamp": ts, **fields}


def events(ts: int) -> list[dict[str, Any]]:
    out = [
        ev("item", ts, item_id="a", title="A", category="k}:x", price=1.0),
        ev("item", ts, item_id="a}:x", title="Evil", category="k", price=2.0),
        ev("product_view", ts, customer_id="victim", item_id="a", session_id="s"),
        ev("add_to_cart", ts + 1, customer_id="victim", item_id="a"),
    ]
    for n, who in enumerate(HOSTILE):
        out += [
            ev("add_to_cart", ts + 2 + n, customer_id=who, item_id="evil", quantity=5),
            ev("product_view", ts + 2 + n, customer_id=who, item_id=ODD_ITEM, category="k c"),
            # a visitor whose id looks like another's keys logs in as the hostile customer
            ev("product_view", ts + 2 + n, anonymous_id=f"{who}:alias", item_id="b"),
            ev("page_view", ts + 30 + n, anonymous_id=f"{who}:alias", customer_id=who),
        ]
    return out


def refused(ts: int) -> list[dict[str, Any]]:
    """Events whose ids hold control or format characters, each with the id in one field."""
    out = []
    for value, field, _ in CONTROL:
        base: dict[str, Any] = {"customer_id": "victim", "item_id": "a"}
        out.append(ev("product_view", ts, **{**base, field: value}))
    return out


def read_dead_letters(settings: Settings, expected: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    letters: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(letters) < expected and time.monotonic() < deadline:
        letters.extend(orjson.loads(m.value) for m in consumer)
    consumer.close()
    return letters


async def test_hostile_ids_stay_in_their_own_profile(settings: Settings, worker: StartWorker) -> None:
    worker()
    ts = now_ms()
    sent = events(ts)
    bad = refused(ts)
    producer = make_producer(settings)
    produce_events(producer, settings.events_topic, sent + bad)
    producer.close()
    keys = Keys(settings.key_prefix)
    r = sync_redis(settings)
    wait_for(lambda: int(r.get(keys.applied_count) or 0) >= len(sent), timeout=90, what="every event applied")

    # the ids with control characters were dead-lettered with the character and where it is; nothing else was
    letters = read_dead_letters(settings, len(bad))
    assert sorted(letter["event_id"] for letter in letters) == sorted(e["event_id"] for e in bad)
    by_id = {letter["event_id"]: letter for letter in letters}
    for event, (_, field, where) in zip(bad, CONTROL, strict=True):
        (error,) = by_id[event["event_id"]]["errors"]
        assert error["field"] == field and where in error["reason"], error
        assert by_id[event["event_id"]]["stage"] == "validation"
    assert int(r.get(keys.applied_count) or 0) == len(sent)

    store = ProfileStore(connect(settings), settings)
    try:
        victim = await store.profile(customer_pid("victim"))
        assert victim is not None
        assert victim["cart"] == [{"item_id": "a", "quantity": 1}]
        assert victim["event_counts"] == {"product_view": 1, "add_to_cart": 1}
        assert victim["merged_visitors"] == 0
        for who in HOSTILE:
            profile = await store.profile(customer_pid(who))
            assert profile is not None, who
            assert profile["customer_id"] == who
            assert profile["cart"] == [{"item_id": "evil", "quantity": 5}], who
            assert profile["event_counts"] == {"add_to_cart": 1, "product_view": 2, "page_view": 1}, who
            assert {i["item_id"] for i in profile["recent_items"]} == {"evil", ODD_ITEM, "b"}, who
            assert await store.resolve_visitor(f"{who}:alias") == customer_pid(who)
        # the catalogue: an item id with key syntax is its own item, a category with it its own category
        assert await store.category_items("k}:x") == {"a"}
        assert await store.category_items("k") == {"a}:x"}
        assert await store.item_categories(["a", "a}:x"]) == {"a": "k}:x", "a}:x": "k"}
    finally:
        await store.client.aclose()

    # every key is a global key or carries exactly one hash tag (one slot per profile)
    for key in r.scan_iter(f"{settings.key_prefix}:*", count=1000):
        assert key.count("{") == key.count("}") <= 1, key

    # the training log gives every id back exactly, and a training runs on it
    log = await asyncio.to_thread(read_training_log, settings)
    users = set(log.user_ids)
    assert {str(ProfileId("c", who)) for who in HOSTILE} <= users
    assert not any(u.startswith("a:") for u in users)  # visitors who logged in count as their customer
    assert ODD_ITEM in log.item_ids and "evil" in log.item_ids
    result = await asyncio.to_thread(train_once, settings.model_copy(update={"holdout_min_users": 1000}))
    assert result.promoted and result.interactions == len(log)
    again = await asyncio.to_thread(read_training_log, settings)  # the training drained the log to disk
    assert again.user_ids == log.user_ids and again.item_ids == log.item_ids and np.array_equal(again.ts, log.ts)
