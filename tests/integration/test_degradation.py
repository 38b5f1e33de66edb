"""Degraded modes of the API against the real servers: no broker at start, the broker lost and back, Redis stopped
and back, a Redis that never answers, a corrupt model blob promoted.

Each test that stops a server runs its own (a dedicated broker or Valkey), so the session's servers stay up."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from core import metrics
from core.kafka import ensure_topics
from core.keyspace import Keys
from core.redis import connect, connect_sync
from core.registry import Registry
from core.settings import Settings
from profiles.store import ProfileStore
from profiles.updates import plan_update
from recommender import Engine
from runtime.embedded import EmbeddedServer, free_port, start_broker, start_redis
from schemas import parse_event_obj
from tests.integration.helpers import api_client, now_ms, view
from tests.integration.test_importers import read_topic
from tests.unit.test_recommender import clustered, config

pytestmark = pytest.mark.integration


async def load(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Write events straight through the store (the path the worker takes after Kafka)."""
    store = ProfileStore(connect(settings), settings)
    await store.apply_plans([plan_update(parse_event_obj(e), settings.event_weights) for e in events])
    await store.client.aclose()


def item(item_id: str, category: str) -> dict[str, Any]:
    return {
        "type": "item",
        "event_id": f"item-{item_id}",
        "timestamp": now_ms(),
        "item_id": item_id,
        "title": item_id,
        "category": category,
        "price": 10.0,
    }


def shop() -> list[dict[str, Any]]:
    """Three shoes and two hats; sku-1 the most viewed, then sku-2 ..."""
    cats = {"sku-1": "shoes", "sku-2": "hats", "sku-3": "shoes", "sku-4": "hats", "sku-5": "shoes"}
    events = [item(i, c) for i, c in cats.items()]
    ts = now_ms()
    for rank, sku in enumerate(cats):
        events += [view(f"c{k}", sku, ts=ts + k) for k in range(6 - rank)]
    return events


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await asyncio.sleep(0.2)


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, time.perf_counter() - started


@pytest.fixture()
def servers() -> Iterator[list[EmbeddedServer]]:
    """Dedicated servers a test starts (and stops, and starts again); all stopped at the end."""
    started: list[EmbeddedServer] = []
    yield started
    for server in started:
        server.stop()


# ----- the broker -----


async def test_api_starts_without_the_broker_and_takes_writes_once_it_appears(
    settings: Settings, servers: list[EmbeddedServer]
) -> None:
    port = free_port()  # nothing listens there yet
    settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    await load(settings, shop())
    async with api_client(settings) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json() | {"reads": True, "writes": False, "status": "degraded"} == ready.json()
        # reads are served
        assert (await client.get("/v1/customers/c0/profile")).json()["event_counts"] == {"product_view": 5}
        recs = (await client.get("/v1/customers/stranger/recommendations")).json()
        assert recs["strategy"] == "trending" and recs["items"][0]["item_id"] == "sku-1"
        # writes answer 503 at once, with Retry-After
        posted, elapsed = await timed(client.post("/v1/events", json=[view("late", "sku-1")]))
        assert posted.status_code == 503 and posted.headers["retry-after"] == "1"
        assert elapsed < 1.0, elapsed

        servers.append(await asyncio.to_thread(start_broker, port))
        await asyncio.to_thread(ensure_topics, settings)
        sent = view("late", "sku-1")

        async def accepted() -> bool:
            return (await client.post("/v1/events", json=[sent])).status_code == 202

        await eventually(accepted, what="the collector to connect to the new broker")
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ok" and ready.json()["writes"] is True
    on_topic = await asyncio.to_thread(read_topic, settings, 1)
    assert sent["event_id"] in {e["event_id"] for e in on_topic}


async def test_writes_answer_503_within_the_budget_while_the_broker_is_away(
    settings: Settings, servers: list[EmbeddedServer]
) -> None:
    broker = await asyncio.to_thread(start_broker)
    servers.append(broker)
    settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{broker.port}"})
    await asyncio.to_thread(ensure_topics, settings)
    async with api_client(settings) as client:
        assert (await client.post("/v1/events", json=[view("c", "sku-1")])).status_code == 202
        await asyncio.to_thread(broker.stop)
        for _ in range(3):
            posted, elapsed = await timed(client.post("/v1/events", json=[view("c", "sku-2")]))
            assert posted.status_code == 503 and posted.headers["retry-after"] == "1"
            assert elapsed < settings.api_produce_timeout_s + 0.5, elapsed
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["writes"] is False and ready.json()["reads"] is True
        assert (await client.get("/v1/customers/c/recommendations")).status_code == 200

        servers.append(await asyncio.to_thread(start_broker, broker.port))  # back, empty (in-memory storage)
        await asyncio.to_thread(ensure_topics, settings)

        async def accepted() -> bool:
            return (await client.post("/v1/events", json=[view("c", "sku-3")])).status_code == 202

        await eventually(accepted, what="writes accepted by the restarted broker")
        assert (await client.get("/health/ready")).json()["writes"] is True


# ----- Redis -----


async def test_redis_stopped_under_the_api(settings: Settings, servers: list[EmbeddedServer]) -> None:
    valkey = await asyncio.to_thread(start_redis)
    servers.append(valkey)
    settings = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{valkey.port}/0", "api_degraded_refresh_s": 0.2}
    )
    await load(settings, shop())
    async with api_client(settings) as client:
        before = (await client.get("/v1/customers/c0/recommendations")).json()
        assert before["strategy"] != "degraded"
        await asyncio.to_thread(valkey.stop)

        recs = (await client.get("/v1/customers/c0/recommendations", params={"n": 4})).json()
        assert recs["strategy"] == "degraded" and recs["model_version"] == "popularity"
        assert [i["item_id"] for i in recs["items"]] == ["sku-1", "sku-2", "sku-3", "sku-4"]
        shoes = (await client.get("/v1/customers/c0/recommendations", params={"category": "shoes"})).json()
        assert shoes["strategy"] == "degraded"
        assert [i["item_id"] for i in shoes["items"]] == ["sku-1", "sku-3", "sku-5"]
        session = (await client.get("/v1/sessions/visitor/recommendations")).json()
        assert session["strategy"] == "degraded" and len(session["items"]) == 5
        similar = (await client.get("/v1/items/sku-1/similar")).json()
        assert similar["strategy"] == "degraded" and "sku-1" not in [i["item_id"] for i in similar["items"]]
        cart = (await client.post("/v1/recommendations/cart", json={"item_ids": ["sku-2"]})).json()
        assert cart["strategy"] == "degraded" and cart["items"]
        assert "sku-2" not in [i["item_id"] for i in cart["items"]]

        profile, elapsed = await timed(client.get("/v1/customers/c0/profile"))
        assert profile.status_code == 503 and profile.headers["retry-after"] == "1" and elapsed < 1.0
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() | {"status": "unavailable", "reads": False, "writes": True} == ready.json()
        # writes go to the broker: they do not need Redis
        assert (await client.post("/v1/events", json=[view("c0", "sku-9")])).status_code == 202
        text = (await client.get("/metrics")).text
        assert 'ecrm_recommendations_total{endpoint="customer",strategy="degraded"}' in text

        servers.append(await asyncio.to_thread(start_redis, valkey.port))  # back, empty (no persistence)

        async def recovered() -> bool:
            body = (await client.get("/v1/customers/c0/recommendations")).json()
            return bool(body["strategy"] != "degraded")

        await eventually(recovered, what="recommendations from Redis again")
        assert (await client.get("/health/ready")).json()["reads"] is True
        assert (await client.get("/v1/customers/c0/profile")).status_code == 404  # the new server is empty


async def test_a_redis_that_never_answers_fails_fast(settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)  # connections are accepted by the kernel, nothing ever answers
        settings = settings.model_copy(
            update={
                "redis_url": f"redis://127.0.0.1:{hung.getsockname()[1]}/0",
                "redis_socket_timeout_s": 0.3,
                "redis_connect_timeout_s": 0.3,
            }
        )
        started = time.perf_counter()
        async with api_client(settings) as client:
            assert time.perf_counter() - started < 5.0  # the API starts without Redis
            profile, elapsed = await timed(client.get("/v1/customers/c0/profile"))
            assert profile.status_code == 503 and profile.headers["retry-after"] == "1" and elapsed < 1.5
            recs, elapsed = await timed(client.get("/v1/customers/c0/recommendations"))
            assert recs.status_code == 200 and recs.json()["strategy"] == "degraded" and elapsed < 1.5
            ready, elapsed = await timed(client.get("/health/ready"))
            assert ready.status_code == 503 and ready.json()["reads"] is False and elapsed < 1.5


async def test_a_hung_redis_never_holds_a_page_for_the_socket_timeout(settings: Settings) -> None:
    """Redis stopped with SIGSTOP (connections accepted, nothing answers): the first recommendation request answers
    degraded at the request deadline, not after two socket timeouts (4 s before the deadline existed), the next ones
    at once while the breaker is open, /health/ready within the deadline too; continued, Redis serves again within
    the breaker's retry interval. The figures themselves: ``ecrm bench hung-redis`` (docs/benchmarks.md, Hung Redis)."""
    from benchmarks.hung_redis import bench_hung_redis

    settings = settings.model_copy(update={"request_deadline_ms": 150.0})  # the default
    assert settings.redis_socket_timeout_s >= 2 * settings.request_deadline_ms / 1000
    figures = await asyncio.to_thread(bench_hung_redis, settings, 1.5, lambda _: None)
    print(figures.lines())
    assert figures.first_strategy == "degraded"
    assert figures.first_ms < settings.redis_socket_timeout_s * 1000 / 2  # the deadline decided, not the socket
    assert figures.next_requests > 5 and figures.next_degraded == figures.next_requests
    assert figures.next_max_ms < settings.redis_socket_timeout_s * 1000 / 2  # the trials too
    assert figures.ready_status == 503 and figures.ready_ms < settings.redis_socket_timeout_s * 1000 / 2
    assert figures.recovered_s < settings.redis_retry_s + 5


# ----- a corrupt model -----


def failures() -> float:
    return metrics.MODEL_LOAD_FAILURES._value.get()  # type: ignore[no-any-return]


def good_blob() -> bytes:
    return Engine(config("cosine")).fit(clustered()).to_bytes()


async def test_a_corrupt_model_blob_is_skipped_and_the_previous_version_keeps_serving(settings: Settings) -> None:
    registry = Registry(connect_sync(settings), Keys(settings.key_prefix), keep=5)
    blob = await asyncio.to_thread(good_blob)
    registry.promote("v-good", blob, {})
    async with api_client(settings) as client:

        async def serving(version: str) -> bool:
            body = (await client.get("/v1/customers/u1/recommendations")).json()
            return bool(body["model_version"] == version)

        await eventually(lambda: serving("v-good"), what="v-good served")
        before = failures()
        registry.promote("v-corrupt", blob[: len(blob) // 2] + b"\x00" * 64, {})

        async def counted() -> bool:
            return failures() > before

        await eventually(counted, what="the corrupt blob counted")
        await asyncio.sleep(0.5)  # several polls later: still the good one, counted once
        assert await serving("v-good")
        assert failures() == before + 1
        assert "ecrm_model_load_failures_total" in (await client.get("/metrics")).text

        registry.promote("v-next", blob, {})  # a good version again is picked up
        await eventually(lambda: serving("v-next"), what="v-next served")


async def test_the_api_starts_when_the_current_blob_is_corrupt(settings: Settings) -> None:
    await load(settings, shop())
    registry = Registry(connect_sync(settings), Keys(settings.key_prefix), keep=5)
    registry.promote("v-garbage", b"not a model at all", {})
    before = failures()
    async with api_client(settings) as client:
        body = (await client.get("/v1/customers/stranger/recommendations")).json()
        assert body["model_version"] == "popularity" and body["strategy"] == "trending" and body["items"]
        assert failures() == before + 1
