"""``ecrm bench analytics-scan``: what the analytics refresh of many tenants costs Redis, each tenant walking the
keyspace alone (a SCAN of its own profile hashes, as ``ecrm analytics refresh --tenant`` does) against one round for
all of them (one SCAN of every tenant's profile hashes, as the worker's timer does), in one run.

A Valkey of its own (started and stopped here) is filled with ``keys`` keys: ``profiles`` profile hashes spread over
``tenants`` tenants (a purchase history's fields), the rest small strings (what a keyspace holds beside: markers,
items, counters). Two phases, each measured both ways: the scan alone (every profile's row read: the SCAN and the
``HMGET`` pipelines) and the whole refresh (scan, scoring, segments, publication; no model fitted, so that the
figures say what Redis does). Figures: SCAN calls and the time Redis spent in them (``INFO commandstats``), the
server's CPU (``INFO cpu``, user + system) and the wall time.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from analytics.refresh import Outcome, make_refresher, make_refreshers, refresh_round
from analytics.settings import AnalyticsSettings
from analytics.snapshot import ProfileRow
from analytics.store import AnalyticsStore, scan_tenants
from core.keyspace import Keys
from core.settings import Settings, isolated
from runtime.embedded import free_port, start_redis

Echo = Callable[[str], None]
NOW = 1_795_000_000_000
DAY = 86_400_000
_WRITE = 10_000


@dataclass
class Phase:
    """What one way of reading (or refreshing) every tenant cost."""

    scan_calls: int
    scan_redis_s: float  # time Redis spent answering SCAN (commandstats)
    redis_cpu_s: float  # the server's CPU, user + system, every command
    wall_s: float
    rows: int


@dataclass
class ScanFigures:
    keys: int
    tenants: int
    profiles: int
    phases: dict[str, Phase] = field(default_factory=dict)
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "phases": {name: asdict(p) for name, p in self.phases.items()}}

    def lines(self) -> list[str]:
        out = [
            f"{self.keys:,} keys, {self.profiles:,} profile hashes over {self.tenants} tenants "
            f"(load {self.load_avg[0]:.1f})",
            f"{'':34}{'SCAN calls':>11}{'SCAN (Redis)':>14}{'Redis CPU':>11}{'wall':>9}{'rows':>10}",
        ]
        for name, p in self.phases.items():
            out.append(
                f"{name:34}{p.scan_calls:>11,}{p.scan_redis_s:>13.2f}s{p.redis_cpu_s:>10.2f}s{p.wall_s:>8.2f}s"
                f"{p.rows:>10,}"
            )
        return out


def _tenant(i: int) -> str:
    return f"shop-{i:03d}"


def fill(r: redis.Redis, prefix: str, keys: int, tenants: int, profiles: int, echo: Echo) -> None:
    """``profiles`` profile hashes spread over the tenants, then small strings up to ``keys`` keys."""
    rng = random.Random(7)
    names = [Keys(prefix, _tenant(i)) for i in range(tenants)]
    pipe = r.pipeline(transaction=False)
    for n in range(keys):
        k = names[n % tenants]
        if n < profiles:
            last = NOW - int(rng.uniform(1, 400) * DAY)
            orders = 1 + int(rng.expovariate(0.8))
            fields = {"or": orders, "rv": round(rng.uniform(5, 300) * orders, 2), "fp": last - orders * 9 * DAY,
                      "lp": last, "fs": last - 400 * DAY, "ls": last, "n:v": orders * 4, "ss": orders + 1}  # fmt: skip
            pipe.hset(k.profile(f"c:u{n}"), mapping=fields)
        else:
            pipe.set(k.seen(f"c:u{n % max(profiles, 1)}", "direct", f"e{n}"), "1")
        if len(pipe) >= _WRITE:
            pipe.execute()
            if n % 200_000 < _WRITE:
                echo(f"  {n + 1:,} keys written")
    pipe.execute()
    for i, k in enumerate(names):  # each tenant's profile count, as the workers keep it
        r.set(k.profile_count, len(range(i, min(profiles, keys), tenants)))


def _counters(r: redis.Redis) -> tuple[int, float, float]:
    stats = r.info("commandstats").get("cmdstat_scan", {})
    cpu = r.info("cpu")
    return int(stats.get("calls", 0)), float(stats.get("usec", 0)) / 1e6, cpu["used_cpu_user"] + cpu["used_cpu_sys"]


async def _measured(r: redis.Redis, run: Callable[[], Any]) -> Phase:
    calls0, usec0, cpu0 = _counters(r)
    started = time.perf_counter()
    rows = await run()
    wall = time.perf_counter() - started
    calls1, usec1, cpu1 = _counters(r)
    return Phase(calls1 - calls0, round(usec1 - usec0, 3), round(cpu1 - cpu0, 3), round(wall, 3), rows)


async def _count(batches: AsyncIterator[Any]) -> int:
    n = 0
    async for batch in batches:
        rows: list[ProfileRow] = batch[1] if isinstance(batch, tuple) else batch
        n += len(rows)
    return n


async def _measure(settings: Settings, r: redis.Redis, tenants: int, echo: Echo) -> dict[str, Phase]:
    cfg = AnalyticsSettings(analytics_min_customers=10**9, analytics_lock_ttl_s=3600)
    names = [_tenant(i) for i in range(tenants)]
    refreshers = make_refreshers(settings, cfg, names)
    stores: Sequence[AnalyticsStore] = [x.store for x in refreshers]
    phases: dict[str, Phase] = {}
    try:

        async def scans_alone() -> int:
            return sum([await _count(store.scan_profiles(cfg.analytics_scan_count)) for store in stores])

        async def scan_once() -> int:
            return await _count(scan_tenants(stores, cfg.analytics_scan_count))

        async def refreshes_alone() -> int:
            total = 0
            for name in names:
                alone = make_refresher(settings, cfg, name)
                try:
                    result = await alone.refresh(force=True)
                finally:
                    await alone.store.client.aclose()
                assert result.state is not None, result.message
                total += result.state.profiles
            return total

        async def refresh_once() -> int:
            results = await refresh_round(refreshers, force=True)
            states = [x.state for x in results if not isinstance(x, Exception) and x.outcome is Outcome.REFRESHED]
            assert len(states) == len(results), results
            return sum(s.profiles for s in states if s is not None)

        for name, run in (
            ("scan, each tenant alone", scans_alone),
            ("scan, one round", scan_once),
            ("refresh, each tenant alone", refreshes_alone),
            ("refresh, one round", refresh_once),
        ):
            echo(f"{name} ...")
            phases[name] = await _measured(r, run)
    finally:
        await refreshers[0].store.client.aclose()
    return phases


def bench_analytics_scan(base: Settings, keys: int, tenants: int, profiles: int, echo: Echo) -> ScanFigures:
    """The figures, on a Valkey of its own (started and stopped here)."""
    valkey = start_redis()
    try:
        settings = isolated(
            base,
            redis_url=f"redis://127.0.0.1:{valkey.port}/0",
            kafka_bootstrap=f"127.0.0.1:{free_port()}",  # no broker: nothing is produced
            tenants=",".join(_tenant(i) for i in range(tenants)),
        )
        with redis.Redis(port=valkey.port) as r:
            echo(f"writing {keys:,} keys ({profiles:,} profile hashes over {tenants} tenants) ...")
            fill(r, settings.key_prefix, keys, tenants, min(profiles, keys), echo)
            phases = asyncio.run(_measure(settings, r, tenants, echo))
        return ScanFigures(keys, tenants, min(profiles, keys), phases, os.getloadavg())
    finally:
        valkey.stop()
