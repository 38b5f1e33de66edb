"""Bounded input where events enter, on the real broker and Redis-compatible server: the collector answers with the
precise reason (413 for an event over the size limit), and the worker dead-letters what another producer put on
Kafka straight away (the reason kept, a large original cut to a bound with its size), while the valid events beside
them are applied and the profile stays readable."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from core.kafka import make_producer
from core.keyspace import Keys
from core.settings import Settings
from tests.conftest import wait_for
from tests.integration.helpers import api_client, now_ms, purchase, sync_redis, view, wait_committed

pytestmark = pytest.mark.integration
StartWorker = Callable[[], subprocess.Popen[bytes]]


def search_of_bytes(customer: str, size: int) -> dict[str, Any]:
    """A valid search event whose encoding is about ``size`` bytes (results: up to 1000 ids of 200 characters)."""
    n = min(1000, size // 203 + 1)
    return {
        "type": "search",
        "event_id": uuid.uuid4().hex,
        "timestamp": now_ms(),
        "customer_id": customer,
        "query": "q",
        "results": [f"{i:0200d}" for i in range(n)],
    }


def iso_in(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def test_the_collector_refuses_with_the_reason_and_413_for_size(settings: Settings) -> None:
    big = search_of_bytes("bob", 200_000)
    assert len(orjson.dumps(big)) > settings.max_event_bytes
    good = view("bob", "sku-1")
    future = {**view("bob", "sku-2"), "timestamp": iso_in(13)}
    floor = {**view("bob", "sku-3"), "timestamp": "0001-01-01T00:00:00+14:00"}
    control = view("bob\tx", "sku-4")
    inf_price = {
        **purchase("bob", [("sku-5", 1, 1.0)]),
        "lines": [{"item_id": "a", "quantity": 1, "unit_price": "inf"}],
    }
    async with api_client(settings) as client:
        single = await client.post("/v1/events", json=big)
        assert single.status_code == 413, single.text
        body = single.json()
        assert body["accepted"] == 0 and body["rejected"] == 1
        (error,) = body["errors"]
        assert error["index"] == 0 and error["field"] == "(event)" and error["status"] == 413
        assert error["event_id"] == big["event_id"]
        assert f"exceeds the limit of {settings.max_event_bytes:,} bytes (ECRM_MAX_EVENT_BYTES)" in error["reason"]

        batch = await client.post("/v1/events", json=[good, big, future, floor, control, inf_price])
        assert batch.status_code == 202, batch.text
        body = batch.json()
        assert body["accepted"] == 1 and body["rejected"] == 5
        by_index = {e["index"]: e for e in body["errors"]}
        assert by_index[1]["status"] == 413 and "ECRM_MAX_EVENT_BYTES" in by_index[1]["reason"]
        assert by_index[2]["field"] == "timestamp" and "in the future" in by_index[2]["reason"]
        assert by_index[3]["field"] == "timestamp" and "ECRM_TIMESTAMP_FLOOR" in by_index[3]["reason"]
        assert by_index[4]["field"] == "customer_id" and "U+0009 (TAB) at position 3" in by_index[4]["reason"]
        assert by_index[5]["field"] == "lines.0.unit_price" and "finite" in by_index[5]["reason"]
        assert {by_index[i]["status"] for i in (2, 3, 4, 5)} == {422}

        all_big = await client.post("/v1/events", json=[big, search_of_bytes("bob", 150_000)])
        assert all_big.status_code == 413 and all_big.json()["rejected"] == 2
        mixed = await client.post("/v1/events", json=[big, future])
        assert mixed.status_code == 422 and {e["status"] for e in mixed.json()["errors"]} == {413, 422}


def read_dead_letters(settings: Settings, expected: int, timeout_s: float = 90.0) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
        fetch_max_bytes=4 * 1024 * 1024,
    )
    letters: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(letters) < expected and time.monotonic() < deadline:
        letters.extend(orjson.loads(m.value) for m in consumer)
    consumer.close()
    return letters


def test_the_worker_dead_letters_what_another_producer_sent(settings: Settings, worker: StartWorker) -> None:
    ts = now_ms()
    customer = "carol"
    valid = [view(customer, f"sku-{i}", ts + i) for i in range(5)] + [purchase(customer, [("sku-1", 2, 10.0)], ts + 9)]
    line = {"item_id": "a", "quantity": 1, "unit_price": 1.0}
    bad_events: dict[str, tuple[dict[str, Any], str, str]] = {}

    def bad(event: dict[str, Any], field: str, why: str) -> None:
        bad_events[event["event_id"]] = (event, field, why)

    bad({**view(customer, "x"), "timestamp": iso_in(13)}, "timestamp", "in the future")
    bad({**view(customer, "x"), "timestamp": ts + 3_600_000}, "timestamp", "in the future")
    bad({**view(customer, "x"), "timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp", "ECRM_TIMESTAMP_FLOOR")
    bad({**purchase(customer, [])}, "lines", "at least 1 item")
    bad({**purchase(customer, []), "lines": [{**line, "unit_price": "inf"}]}, "lines.0.unit_price", "finite")
    bad(
        {**purchase(customer, []), "lines": [{**line, "quantity": 1_000_000, "unit_price": 1e300}]},
        "lines.0.unit_price",
        "less than or equal",
    )
    bad({**purchase(customer, []), "lines": [{**line, "quantity": 20, "unit_price": 999_999}]}, "lines.0", "line total")
    bad({**purchase(customer, []), "lines": [line] * 1001}, "lines", "at most 1000")
    bad(view(customer, "it\tem"), "item_id", "U+0009 (TAB) at position 2")
    huge = {**view(customer, "x"), "url": "u" * 700_000}  # invalid twice over: too large, and url too long
    bad(huge, "(event)", "ECRM_MAX_EVENT_BYTES")

    producer = make_producer(settings)
    for event in [*valid[:3], *(e for e, _, _ in bad_events.values()), *valid[3:]]:
        producer.send(settings.events_topic, value=orjson.dumps(event), key=customer.encode())
    producer.flush()
    producer.close()
    worker()

    keys = Keys(settings.key_prefix)
    r = sync_redis(settings)
    wait_for(lambda: int(r.get(keys.applied_count) or 0) >= len(valid), timeout=90, what="the valid events")
    letters = read_dead_letters(settings, len(bad_events))
    assert sorted(letter["event_id"] for letter in letters) == sorted(bad_events)  # each once, nothing else
    for letter in letters:
        event, field, why = bad_events[letter["event_id"]]
        assert any(e["field"] == field and why in e["reason"] for e in letter["errors"]), (field, letter["errors"])
        raw = orjson.dumps(event)
        assert letter["original_size"] == len(raw) and letter["stage"] == "validation"
        kept = base64.b64decode(letter["original_b64"])
        if len(raw) > settings.dlq_max_original_bytes:
            assert letter["original_truncated"] is True and kept == raw[: settings.dlq_max_original_bytes]
        else:
            assert letter["original_truncated"] is False and kept == raw
    (huge_letter,) = [x for x in letters if x["event_id"] == huge["event_id"]]
    assert huge_letter["original_truncated"] and len(orjson.dumps(huge_letter)) < 200_000

    wait_committed(settings, len(valid) + len(bad_events))  # every record acked: anything else would have landed
    assert int(r.get(keys.applied_count) or 0) == len(valid)

    async def read_profile() -> dict[str, Any]:
        async with api_client(settings) as client:
            resp = await client.get(f"/v1/customers/{customer}/profile")
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

    profile = asyncio.run(read_profile())
    assert profile["event_counts"] == {"product_view": 5, "purchase": 1}
    assert profile["orders"] == 1 and profile["revenue"] == 20.0
