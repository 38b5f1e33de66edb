"""``ecrm bench hung-redis``: how long a shopper's page waits when Redis hangs (its process stopped with SIGSTOP:
connections are accepted by the kernel, nothing answers), against the request deadline.

A dedicated Valkey (never the session's or a running ``ecrm up``'s) holds a small shop; the real app answers over
ASGI in this process. After a few normal requests Redis is stopped; then the first recommendation request, the
requests after it (the breaker open, then one trial per ``ECRM_REDIS_RETRY_S``) and ``/health/ready`` are timed;
then Redis is continued and the time until recommendations come from Redis again is measured. Target: the first
request within the deadline + 50 ms (before the deadline: two socket timeouts in a row, 4 s by default).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from api.main import create_app
from core.redis import connect
from core.settings import Settings, isolated
from profiles.store import ProfileStore
from profiles.updates import plan_update
from runtime.embedded import EmbeddedServer, free_port, start_redis
from schemas import parse_event_obj

Echo = Callable[[str], None]
MARGIN_MS = 50.0


@dataclass(frozen=True)
class HungFigures:
    deadline_ms: float
    socket_timeout_ms: float
    first_ms: float  # the first recommendation request after Redis hung
    first_strategy: str
    next_p50_ms: float  # the requests after it, over a few breaker windows
    next_max_ms: float
    next_requests: int
    next_degraded: int
    ready_ms: float
    ready_status: int
    recovered_s: float  # Redis continued -> a recommendation from Redis again

    @property
    def target_ms(self) -> float:
        return self.deadline_ms + MARGIN_MS

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "target_ms": self.target_ms, "met": self.first_ms <= self.target_ms}

    def lines(self) -> list[str]:
        met = "met" if self.first_ms <= self.target_ms else "NOT met"
        return [
            f"Redis hung (SIGSTOP), request deadline {self.deadline_ms:.0f} ms, socket timeout "
            f"{self.socket_timeout_ms:.0f} ms:",
            f"  first recommendation request: {self.first_ms:.1f} ms ({self.first_strategy}); target <= "
            f"{self.target_ms:.0f} ms: {met}",
            f"  next {self.next_requests} requests: p50 {self.next_p50_ms:.1f} ms, max {self.next_max_ms:.1f} ms "
            f"({self.next_degraded} degraded)",
            f"  /health/ready: {self.ready_ms:.1f} ms ({self.ready_status})",
            f"  Redis continued: recommendations from Redis again after {self.recovered_s:.2f} s",
        ]


def _shop() -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    events: list[dict[str, Any]] = []
    for i in range(20):
        events.append({"type": "item", "event_id": f"item-{i}", "timestamp": now, "item_id": f"sku-{i}",
                       "title": f"item {i}", "category": "shoes" if i % 2 else "hats", "price": 10.0})  # fmt: skip
    for c in range(30):
        for k in range(5):
            events.append({"type": "product_view", "event_id": f"v-{c}-{k}", "timestamp": now + k,
                           "customer_id": f"c{c}", "item_id": f"sku-{(c + k * 3) % 20}"})  # fmt: skip
    return events


async def _load(settings: Settings) -> None:
    store = ProfileStore(connect(settings), settings)
    try:
        await store.apply_plans([plan_update(parse_event_obj(e), settings.event_weights) for e in _shop()])
    finally:
        await store.client.aclose()


async def _timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, (time.perf_counter() - started) * 1000


async def _measure(settings: Settings, valkey: EmbeddedServer, seconds: float, echo: Echo) -> HungFigures:
    await _load(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30) as client:
            for k in range(5):  # warm: connections open, the popular copy filled
                body = (await client.get(f"/v1/customers/c{k}/recommendations")).json()
                assert body["strategy"] != "degraded", body
            echo("Redis answers; stopping it (SIGSTOP) ...")
            os.kill(valkey.proc.pid, signal.SIGSTOP)
            try:
                first, first_ms = await _timed(client.get("/v1/customers/c1/recommendations"))
                times: list[float] = []
                degraded = 0
                stop_at = time.monotonic() + seconds
                k = 0
                while time.monotonic() < stop_at:
                    resp, ms = await _timed(client.get(f"/v1/customers/c{k % 30}/recommendations"))
                    times.append(ms)
                    degraded += resp.json()["strategy"] == "degraded"
                    k += 1
                    await asyncio.sleep(0.05)
                ready, ready_ms = await _timed(client.get("/health/ready"))
            finally:
                os.kill(valkey.proc.pid, signal.SIGCONT)
            echo("Redis continued (SIGCONT); waiting for recommendations from Redis ...")
            continued = time.monotonic()
            while (await client.get("/v1/customers/c2/recommendations")).json()["strategy"] == "degraded":
                if time.monotonic() - continued > 30:
                    raise RuntimeError("recommendations still degraded 30 s after Redis was continued")
                await asyncio.sleep(0.02)
            recovered_s = time.monotonic() - continued
    return HungFigures(
        deadline_ms=settings.request_deadline_ms,
        socket_timeout_ms=settings.redis_socket_timeout_s * 1000,
        first_ms=first_ms,
        first_strategy=str(first.json()["strategy"]),
        next_p50_ms=statistics.median(times),
        next_max_ms=max(times),
        next_requests=len(times),
        next_degraded=degraded,
        ready_ms=ready_ms,
        ready_status=ready.status_code,
        recovered_s=recovered_s,
    )


def bench_hung_redis(base: Settings, seconds: float, echo: Echo) -> HungFigures:
    """The figures, on a Valkey of its own (started and stopped here)."""
    valkey = start_redis()
    try:
        settings = isolated(
            base,
            redis_url=f"redis://127.0.0.1:{valkey.port}/0",
            kafka_bootstrap=f"127.0.0.1:{free_port()}",  # no broker: writes are not measured here
            campaign_metrics_s=0.0,
        )
        return asyncio.run(_measure(settings, valkey, seconds, echo))
    finally:
        os.kill(valkey.proc.pid, signal.SIGCONT)  # a stopped process would not see the SIGTERM
        valkey.stop()
