"""``ecrm bench tenants``: what the tenant operations cost the collector and a request (issue 22).

In one run, in one API process over ASGI (the real app: its Redis client, its aiokafka producer on the embedded
broker), batches of ``batch`` events posted back to back in rounds that alternate three set-ups, so the machine's
noise falls on all three alike:

* ``off``: no quota (the settings' defaults, 0);
* ``rate``: an events-per-second quota far above the rate (its sliding window counted on every request, never hit);
* ``full``: a profile quota already reached (every batch looks its profiles up in Redis: one ``ZMSCORE``; the
  events are of existing profiles, so none is refused).

Figures: events per second of each, and the ratios ``rate/off`` and ``full/off``. Then the per-tenant configuration
lookup a request makes (:meth:`core.tenant_files.TenantFiles.get` with 100 tenants), in nanoseconds per call.
Loopback only, bounded in count and time."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx

from api.main import create_app
from core.redis import connect
from core.settings import Settings, isolated
from core.tenant_files import TenantFiles
from merchandising.source import RulesSource, tenant_rules
from profiles.store import ProfileStore
from profiles.updates import plan_update
from schemas import parse_event_obj

Echo = Callable[[str], None]
SETUPS = ("off", "rate", "full")


@dataclass(frozen=True)
class TenantFigures:
    batch: int
    batches: int
    rounds: int
    events_per_s: dict[str, float]
    rate_ratio: float
    full_ratio: float
    lookup_ns: float


def events(batch: int, customers: int) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    return [
        {"type": "product_view", "event_id": uuid.uuid4().hex, "timestamp": now, "customer_id": f"c-{i % customers}",
         "item_id": f"sku-{i % 50}"}
        for i in range(batch)
    ]  # fmt: skip


async def one_setup(settings: Settings, batch: int, batches: int, customers: int) -> float:
    """Events per second of ``batches`` batches posted one after the other (the app started before the clock)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            warm = await client.post("/v1/events", json=events(batch, customers))
            assert warm.status_code == 202, warm.text
            started = time.perf_counter()
            for _ in range(batches):
                resp = await client.post("/v1/events", json=events(batch, customers))
                assert resp.status_code == 202 and resp.json()["accepted"] == batch, resp.text
            return batch * batches / (time.perf_counter() - started)


async def seed_profiles(settings: Settings, customers: int) -> None:
    """The customers' profiles written to Redis directly (this benchmark runs no worker)."""
    store = ProfileStore(connect(settings), settings)
    try:
        plans = [plan_update(parse_event_obj(e), settings.event_weights) for e in events(customers, customers)]
        await store.apply_plans(plans)
    finally:
        await store.client.aclose()


def lookup_ns(calls: int = 200_000) -> float:
    """Nanoseconds per :meth:`TenantFiles.get` for 100 tenants without files of their own (a dict look-up and, every
    check interval, a ``stat``; here the interval is the default 2 s)."""
    with TemporaryDirectory() as folder:
        files: TenantFiles[RulesSource] = tenant_rules(None, Path(folder), 2.0)
        names = [f"shop-{i}" for i in range(100)]
        for name in names:
            files.get(name)
        started = time.perf_counter_ns()
        for i in range(calls):
            files.get(names[i % 100]).current()
        return (time.perf_counter_ns() - started) / calls


def bench_tenants(settings: Settings, batch: int, batches: int, rounds: int, echo: Echo) -> TenantFigures:
    base = isolated(settings).model_copy(update={"rate_limit": "", "visitor_rate_limit": ""})
    customers = 200
    configured = {
        "off": base,
        "rate": base.model_copy(update={"tenant_events_per_s": 10_000_000}),
        "full": base.model_copy(update={"tenant_profiles_max": 1, "tenant_quota_check_s": 3600.0}),
    }
    seen: dict[str, list[float]] = {name: [] for name in SETUPS}
    asyncio.run(seed_profiles(base, customers))  # held before the "full" set-up reads them: its quota is reached
    for round_no in range(rounds):
        for name in SETUPS:
            rate = asyncio.run(one_setup(configured[name], batch, batches, customers))
            seen[name].append(rate)
            echo(f"round {round_no + 1}/{rounds} {name}: {rate:,.0f} events/s")
    medians = {name: statistics.median(values) for name, values in seen.items()}
    return TenantFigures(
        batch,
        batches,
        rounds,
        {k: round(v, 1) for k, v in medians.items()},
        round(medians["rate"] / medians["off"], 3),
        round(medians["full"] / medians["off"], 3),
        round(lookup_ns(), 1),
    )


def lines(f: TenantFigures) -> list[str]:
    rates = ", ".join(f"{name} {f.events_per_s[name]:,.0f}" for name in SETUPS)
    return [
        f"collector, batches of {f.batch} ({f.batches} per set-up, median of {f.rounds} rounds): events/s {rates}",
        f"ratio with an events-per-second quota: {f.rate_ratio:.3f}; with a profile quota reached: {f.full_ratio:.3f}",
        f"per-tenant configuration lookup: {f.lookup_ns:,.0f} ns per request (100 tenants)",
    ]
