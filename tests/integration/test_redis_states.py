"""Redis in each state it can be put in (out of memory, a read-only replica after a failover, the master link down,
a busy script, gone and back): the worker's batch processor retries, and no event is lost or dead-lettered.

Each test runs its own Redis-compatible server, since it changes the server's configuration."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from core import metrics
from core.redis import connect
from core.settings import Settings
from profiles.store import ProfileStore
from runtime.embedded import EmbeddedServer, start_redis
from stream.processing import BatchProcessor, Envelope, RawMessage
from tests.integration.helpers import now_ms, purchase, view

pytestmark = pytest.mark.integration
CUSTOMERS = ["a", "b", "c:d", "e"]


@pytest.fixture()
def server() -> Iterator[EmbeddedServer]:
    srv = start_redis()
    yield srv
    srv.stop()


def batch() -> list[RawMessage]:
    import orjson

    ts = now_ms()
    events: list[dict[str, Any]] = [view(c, f"sku-{i}", ts=ts + i) for i, c in enumerate(CUSTOMERS * 5)]
    events += [purchase(c, [("sku-1", 2, 3.5)], ts=ts + 100) for c in CUSTOMERS]
    return [RawMessage(orjson.dumps(e), offset=i) for i, e in enumerate(events)]


def retries(reason: str) -> float:
    return metrics.STORE_RETRIES.labels(reason)._value.get()  # type: ignore[no-any-return]


async def process_through(
    settings: Settings, port: int, enter: Callable[[], None], leave: Callable[[], None], reason: str
) -> tuple[int, list[Envelope], ProfileStore]:
    """Put Redis in a state, start a batch, wait until the processor has retried for ``reason``, restore Redis,
    and return (events applied, dead letters, the store)."""
    settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    store = ProfileStore(connect(settings), settings)
    dead: list[Envelope] = []

    async def send(envelope: Envelope) -> None:
        dead.append(envelope)

    processor = BatchProcessor(store, settings, send, retry_delay_s=0.05)
    before = retries(reason)
    enter()
    task = asyncio.create_task(processor.process(batch()))
    deadline = time.monotonic() + 20
    while retries(reason) <= before and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.02)
    assert retries(reason) > before, f"the processor never met {reason!r}"
    assert not task.done(), "the batch finished while Redis could not take it"
    leave()
    result = await asyncio.wait_for(task, 30)
    return result.applied, dead, store


async def assert_all_applied(store: ProfileStore, applied: int, dead: list[Envelope]) -> None:
    assert dead == []
    assert applied == len(CUSTOMERS) * 6
    for customer in CUSTOMERS:
        profile = await store.profile(f"c:{customer}")
        assert profile is not None, customer
        assert profile["event_counts"] == {"product_view": 5, "purchase": 1}, customer
        assert profile["orders"] == 1 and profile["revenue"] == 7.0, customer
    await store.client.aclose()


async def test_out_of_memory(settings: Settings, server: EmbeddedServer) -> None:
    r = redis.Redis(port=server.port)
    r.config_set("maxmemory-policy", "noeviction")
    applied, dead, store = await process_through(
        settings, server.port, lambda: r.config_set("maxmemory", 1), lambda: r.config_set("maxmemory", 0), "oom"
    )
    await assert_all_applied(store, applied, dead)


async def test_read_only_replica_after_a_failover(settings: Settings, server: EmbeddedServer) -> None:
    r = redis.Redis(port=server.port)
    applied, dead, store = await process_through(
        settings,
        server.port,
        lambda: r.execute_command("REPLICAOF", "127.0.0.1", "1"),  # nothing listens there: stays a stale replica
        lambda: r.execute_command("REPLICAOF", "NO", "ONE"),
        "readonly",
    )
    await assert_all_applied(store, applied, dead)


async def test_master_link_down(settings: Settings, server: EmbeddedServer) -> None:
    r = redis.Redis(port=server.port)

    def enter() -> None:
        r.config_set("replica-serve-stale-data", "no")
        r.execute_command("REPLICAOF", "127.0.0.1", "1")

    def leave() -> None:
        r.execute_command("REPLICAOF", "NO", "ONE")
        r.config_set("replica-serve-stale-data", "yes")

    applied, dead, store = await process_through(settings, server.port, enter, leave, "masterdown")
    await assert_all_applied(store, applied, dead)


async def test_busy_script(settings: Settings, server: EmbeddedServer) -> None:
    r = redis.Redis(port=server.port)
    r.config_set("busy-reply-threshold", 50)
    stuck = threading.Thread(target=_run_forever, args=(server.port,), daemon=True)

    def enter() -> None:
        stuck.start()
        time.sleep(0.2)  # past the threshold: everyone else now gets BUSY

    def leave() -> None:
        r.script_kill()
        stuck.join(5)

    applied, dead, store = await process_through(settings, server.port, enter, leave, "busy")
    await assert_all_applied(store, applied, dead)


def _run_forever(port: int) -> None:
    try:
        redis.Redis(port=port).eval("while true do end", 0)
    except redis.ResponseError:
        pass  # SCRIPT KILL ends it


async def test_server_gone_and_back(settings: Settings, server: EmbeddedServer) -> None:
    port = server.port
    restarted: list[EmbeddedServer] = []
    try:
        applied, dead, store = await process_through(
            settings, port, server.stop, lambda: restarted.append(start_redis(port)), "connection"
        )
        await assert_all_applied(store, applied, dead)
    finally:
        for srv in restarted:
            srv.stop()
