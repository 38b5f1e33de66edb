"""Load generators of the API benchmarks: a closed loop (the max rate) and an open loop at a fixed rate (latency
without coordinated omission), on 127.0.0.1, bounded in count and time."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True)
class Call:
    """One endpoint under load: how to make the k-th request."""

    name: str
    method: str
    url_of: Callable[[int], str]
    body_of: Callable[[int], bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def get(url_of: Callable[[int], str]) -> Call:
    """A GET of ``url_of(k)``, without a key."""
    return Call("get", "GET", url_of)


def pct(values: list[float], p: int) -> float:
    """The ``p``-th percentile (NaN for fewer than two values)."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else float("nan")


def server_ms(headers: object) -> float:
    """The app's own time from its ``server-timing`` header."""
    value = str(headers.get("server-timing", "app;dur=nan"))  # type: ignore[attr-defined]
    return float(value.split("dur=")[1])


async def _send(session: aiohttp.ClientSession, call: Call, k: int) -> aiohttp.ClientResponse:
    body = call.body_of(k) if call.body_of is not None else None
    headers = {**call.headers, "Content-Type": "application/json"} if body is not None else call.headers
    return await session.request(
        call.method, call.url_of(k), data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
    )


async def closed_loop(call: Call, seconds: float, concurrency: int = 16) -> float:
    """The rate ``concurrency`` clients reach, each sending its next request when the last one is answered."""
    count = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def loop(offset: int) -> None:
            nonlocal count
            k = offset
            while time.perf_counter() < deadline:
                async with await _send(session, call, k) as resp:
                    await resp.read()
                count += 1
                k += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(loop(c) for c in range(concurrency)))
    return count / (time.perf_counter() - started)


async def alternating_rates(calls: list[Call], seconds: float, rounds: int = 5) -> list[float]:
    """The closed-loop rate of each call, measured in ``rounds`` alternating slices of ``seconds / rounds``, so a
    change of the machine's load (other work on shared cores) weighs on every call alike."""
    counts = [0.0] * len(calls)
    for _ in range(rounds):
        for k, call in enumerate(calls):
            counts[k] += await closed_loop(call, seconds / rounds) * seconds / rounds
    return [count / seconds for count in counts]


async def open_loop(call: Call, rps: float, seconds: float) -> tuple[list[float], list[float], int]:
    """Requests at a fixed rate regardless of answers (no coordinated omission): server-side and client-side
    latencies of the successful ones (ms), and the count of failed ones."""
    server: list[float] = []
    client: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(k: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with await _send(session, call, k) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        errors += 1
                        return
                    server.append(server_ms(resp.headers))
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            client.append((time.perf_counter() - started) * 1000)

        t0 = time.perf_counter()
        tasks = []
        for k in range(int(rps * seconds)):
            delay = t0 + k / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k)))
        await asyncio.gather(*tasks)
    return server, client, errors
