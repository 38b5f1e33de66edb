"""Helpers for integration tests: events, a sync Redis view, an API client on the real app."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import redis
import uvicorn
from fastapi import FastAPI
from kafka import KafkaAdminClient

from api.main import create_app
from core.keyspace import Keys
from core.redis import connect, connect_sync
from core.settings import Settings
from profiles.store import ProfileStore
from profiles.updates import plan_update
from runtime.embedded import free_port
from schemas import parse_event_obj
from tests.conftest import wait_for


def now_ms() -> int:
    return int(time.time() * 1000)


def view(customer: str, item: str, ts: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "product_view",
        "event_id": uuid.uuid4().hex,
        "timestamp": ts or now_ms(),
        "customer_id": customer,
        "item_id": item,
        **extra,
    }


def purchase(customer: str, lines: list[tuple[str, int, float]], ts: int | None = None) -> dict[str, Any]:
    return {
        "type": "purchase",
        "event_id": uuid.uuid4().hex,
        "timestamp": ts or now_ms(),
        "customer_id": customer,
        "order_id": uuid.uuid4().hex[:10],
        "currency": "EUR",
        "lines": [{"item_id": i, "quantity": q, "unit_price": p} for i, q, p in lines],
    }


def sync_redis(settings: Settings) -> redis.Redis:
    """A blocking client of the test's Redis (the cluster client on a Redis Cluster), decoding strings."""
    return connect_sync(settings, decode_responses=True)


def profile_hash(settings: Settings, pid: str) -> dict[str, str]:
    return sync_redis(settings).hgetall(Keys(settings.key_prefix).profile(pid))  # type: ignore[no-any-return]


# What a shop's page sends with a collect key comes from a browser: the collector refuses a bot's user agent on a
# collect key (api/ratelimit.py), and httpx's own ("python-httpx/...") is a bot's for crawlerdetect.
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real FastAPI app (lifespan included: Redis client, aiokafka producer), and a client of it over ASGI."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield app, client


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the real FastAPI app over ASGI (see :func:`app_client`)."""
    async with app_client(settings) as (_, client):
        yield client


async def apply(settings: Settings, events: list[dict[str, Any]], tenant: str = "default") -> None:
    """Apply ``events`` to their profiles of ``tenant`` directly (no broker); each must be applied once."""
    store = ProfileStore(connect(settings), settings, tenant)
    try:
        plans = [plan_update(parse_event_obj(e), settings.event_weights) for e in events]
        assert set(await store.apply_plans(plans)) == {1}
    finally:
        await store.client.aclose()


def committed(settings: Settings) -> int:
    """The offsets the worker's consumer group committed on the events topic, summed over its partitions: the number
    of records it read, wrote and acknowledged (offsets count records from 0 on each partition)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","))
    try:
        offsets = admin.list_group_offsets(settings.worker_app_id).get(settings.worker_app_id, {})
    finally:
        admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == settings.events_topic and meta.offset > 0)


def wait_committed(settings: Settings, records: int, timeout: float = 60.0) -> None:
    """Wait until the worker's group has acknowledged all ``records`` of the events topic. A worker acks a record only
    once it is written, and only unacknowledged records are delivered again: from then on nothing more can land (no
    duplicate, nothing late), so a test checks "nothing counted twice" here instead of after a fixed sleep."""
    wait_for(lambda: committed(settings) == records, timeout=timeout, interval=0.2, what=f"{records} records acked")


def worker_metrics(port: int, *names: str) -> list[float] | None:
    """Each named metric of a worker's Prometheus endpoint, summed over its labels (0 when absent); None while the
    endpoint does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return None
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return [totals[name] for name in names]


class ApiServer:
    """The real app served over HTTP by uvicorn on 127.0.0.1 (in a thread, with its own event loop): a client
    meets real sockets, and the test's own loop stays free. ``start`` and ``stop`` may be called again: the next
    start serves a new app on the same port."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        config = uvicorn.Config(
            create_app(self.settings), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        server = self._server = uvicorn.Server(config)
        thread = self._thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        """A graceful stop (what uvicorn does on SIGTERM): requests in flight are answered first."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)
            assert not self._thread.is_alive(), "the API did not stop"
            self._server = self._thread = None


@contextmanager
def serve_api(settings: Settings) -> Iterator[ApiServer]:
    """An :class:`ApiServer` started, and stopped at the end."""
    server = ApiServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
