"""``ecrm bench auth``: the API's rate and latency with access control on against off, in one run.

One small model is trained, then one API process is started per round, alternately *off* (no keys: the open mode,
no rate limit) and *on* (``ECRM_API_KEYS`` with the three scopes, a server key on every request, the collector's
rate limit counted but set too high to refuse). Each round measures two endpoints:

* ``GET /v1/customers/{id}/recommendations`` (a server-scope read, personal recommendations),
* ``POST /v1/events`` with one anonymous ``product_view`` (key check, per-event scope, rate limit, ``source``
  header, produced to the broker),

first their max rate (closed loop, 16 connections), then their latency at a steady open-loop rate (server-side
from the ``server-timing`` header, and client-side). Everything targets 127.0.0.1 and is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx
import numpy as np
import redis

from benchmarks.load import Call, closed_loop, open_loop, pct
from benchmarks.recommender import synthetic_log, write_log
from core.kafka import ensure_topics
from core.keyspace import Keys
from core.settings import Settings, isolated
from profiles.layout import item_fields, item_value
from runtime.local import spawn_role, stop_process, wait_ready
from trainer.training import train_once

Echo = Callable[[str], None]
SECRETS = {scope: f"bench-{scope}-{uuid.uuid4().hex}" for scope in ("collect", "server", "admin")}
KEYS = ",".join(f"{scope}:{secret}" for scope, secret in SECRETS.items())
CUSTOMERS = 500


@dataclass
class Figures:
    mode: str
    endpoint: str
    max_rps: float
    steady_rps: float
    errors: int
    server_p50_ms: float
    server_p99_ms: float
    client_p50_ms: float
    client_p99_ms: float


def _prepare(settings: Settings, items: int, echo: Echo) -> None:
    """A trained model over ``items`` items and ``CUSTOMERS`` customers with a history each."""
    r = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    echo(f"training a model over a {items}-item catalogue ...")
    write_log(r, keys, synthetic_log(items * 5, n_users=max(items // 2, 100), n_items=items, seed=1), echo)
    result = train_once(settings.model_copy(update={"holdout_max_users": 200, "gate_baselines": ""}))  # engine path
    echo(f"  {result.version}")
    pipe = r.pipeline(transaction=False)
    rng = np.random.default_rng(2)
    for c in range(CUSTOMERS):
        entries = {
            f"i{i}": item_value(1.0, 1_790_000_000_000 + j) for j, i in enumerate(rng.integers(0, items, 20).tolist())
        }
        pipe.hset(keys.profile(f"c:bench{c}"), mapping=item_fields(entries))
    pipe.execute()


def _calls(base_url: str) -> list[Call]:
    def event(k: int) -> bytes:
        now = int(time.time() * 1000)
        return (
            f'{{"type":"product_view","event_id":"{uuid.uuid4().hex}","timestamp":{now},'
            f'"anonymous_id":"bench-visitor-{k % 1000}","item_id":"i{k % 500}"}}'
        ).encode()

    return [
        Call(
            "GET /v1/customers/{id}/recommendations",
            "GET",
            lambda k: f"{base_url}/v1/customers/bench{k % CUSTOMERS}/recommendations?n=10",
        ),
        Call("POST /v1/events (one event)", "POST", lambda _: f"{base_url}/v1/events", event),
    ]


def bench_auth(
    base: Settings, port: int, items: int, rps: float, seconds: float, rounds: int, echo: Echo
) -> list[Figures]:
    settings = isolated(base, api_port=port, model_poll_s=1.0)
    ensure_topics(settings)
    _prepare(settings, items, echo)
    modes = {
        "off": ({"api_keys": "", "rate_limit": ""}, {}),
        "on": (
            {"api_keys": KEYS, "rate_limit": "1000000/second"},
            {"Authorization": f"Bearer {SECRETS['server']}"},
        ),
    }
    base_url = f"http://127.0.0.1:{port}"
    figures: list[Figures] = []
    for round_ in range(rounds):
        for mode, (update, headers) in modes.items():
            # a fresh events topic per API process: the broker's cost does not grow from one to the next
            run = settings.model_copy(update={**update, "events_topic": f"{settings.events_topic}.{mode}{round_}"})
            ensure_topics(run)
            proc = spawn_role(["api", "--port", str(port)], run)
            try:
                wait_ready(f"{base_url}/health/ready", 60, [proc])
                auth = httpx.get(f"{base_url}/health/ready", timeout=5).json()["auth"]
                echo(f"round {round_ + 1}/{rounds}, access control {mode} (auth: {auth}) ...")
                for bare in _calls(base_url):
                    call = replace(bare, headers=headers)
                    asyncio.run(open_loop(call, rps=50, seconds=1))  # warm-up
                    max_rps = asyncio.run(closed_loop(call, 5.0))
                    time.sleep(0.5)
                    server, client, errors = asyncio.run(open_loop(call, rps, seconds))
                    figures.append(
                        Figures(
                            mode,
                            call.name,
                            max_rps,
                            (len(server) + errors) / seconds,
                            errors,
                            statistics.median(server),
                            pct(server, 99),
                            statistics.median(client),
                            pct(client, 99),
                        )  # fmt: skip
                    )
                    echo(f"  {call.name}: max {max_rps:.0f}/s; p99 {figures[-1].server_p99_ms:.2f} ms at {rps:.0f}/s")
            finally:
                stop_process(proc)
    return figures


def check_costs(n: int = 20_000) -> dict[str, float]:
    """Microseconds per call of the checks themselves, in process: matching a key among three, a rate-limit hit."""
    from api.auth import parse_keys
    from api.ratelimit import RateLimiter

    ring = parse_keys(KEYS)
    started = time.perf_counter()
    for _ in range(n):
        ring.match(SECRETS["server"])
    match_us = (time.perf_counter() - started) / n * 1e6
    limiter = RateLimiter("1000000/second")

    async def hits() -> float:
        started = time.perf_counter()
        for k in range(n):
            await limiter.hit(f"client:{k % 100}")
        return (time.perf_counter() - started) / n * 1e6

    return {"key match (3 keys)": match_us, "rate-limit hit": asyncio.run(hits())}


def lines(figures: list[Figures], rps: float) -> list[str]:
    """The table, then the medians over rounds of on against off."""
    out = [
        f"{'access control':<15}{'endpoint':<40}{'max req/s':>10}{'errors':>8}"
        f"{'server p50/p99 ms':>20}{'client p50/p99 ms':>20}   (steady load {rps:.0f} req/s)",
    ]
    for f in figures:
        out.append(
            f"{f.mode:<15}{f.endpoint:<40}{f.max_rps:>10.0f}{f.errors:>8}"
            f"{f.server_p50_ms:>10.2f}/{f.server_p99_ms:<9.2f}{f.client_p50_ms:>10.2f}/{f.client_p99_ms:<9.2f}"
        )
    out.append("")
    costs = ", ".join(f"{name} {us:.1f} µs" for name, us in check_costs().items())
    out.append(f"cost of the checks in process, per request: {costs}")
    for endpoint in dict.fromkeys(f.endpoint for f in figures):
        off = [f for f in figures if f.endpoint == endpoint and f.mode == "off"]
        on = [f for f in figures if f.endpoint == endpoint and f.mode == "on"]
        rate_off, rate_on = statistics.median(f.max_rps for f in off), statistics.median(f.max_rps for f in on)
        p99_off = statistics.median(f.server_p99_ms for f in off)
        p99_on = statistics.median(f.server_p99_ms for f in on)
        out.append(
            f"{endpoint}: max rate {rate_on:.0f}/s on vs {rate_off:.0f}/s off ({rate_on / rate_off - 1:+.1%}); "
            f"server p99 {p99_on:.2f} ms on vs {p99_off:.2f} ms off (medians of {len(off)} rounds)"
        )
    return out
