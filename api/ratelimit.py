"""The collector's rate limit (the ``limits`` library): ``ECRM_RATE_LIMIT`` per client address for collect keys
and the open mode, per key for server and admin keys. Over the limit: 429 with ``Retry-After``.

Counters live in the API process (sliding window counters in memory): with several replicas behind a load balancer
each one counts on its own, so a client gets up to replicas x the limit.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from api.auth import Caller, CollectCaller
from core.errors import ConfigError, RateLimited


def parse_limits(text: str) -> list[RateLimitItem]:
    """``100/second;3000/minute`` -> limits (empty: none). Raises :class:`ConfigError`."""
    if not text.strip():
        return []
    try:
        return parse_many(text)
    except ValueError as exc:
        raise ConfigError(
            f"ECRM_RATE_LIMIT={text!r} is not a rate limit (expected e.g. 100/second or 100/second;3000/minute): {exc}"
        ) from exc


class RateLimiter:
    """Counts requests per caller against every configured limit."""

    def __init__(self, text: str) -> None:
        self.items = parse_limits(text)
        self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    @property
    def description(self) -> str:
        return "; ".join(str(item) for item in self.items) or "off"

    async def hit(self, key: str) -> None:
        """Count one request of ``key``; raise :class:`RateLimited` with the wait when it is over a limit."""
        for item in self.items:
            if not await self.limiter.hit(item, key):
                stats = await self.limiter.get_window_stats(item, key)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(f"rate limit of {item} exceeded; retry in {wait} s", wait)


async def rate_limited(request: Request, who: CollectCaller) -> Caller:
    """The caller, once counted against the collector's rate limit (429 when over it)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    await limiter.hit(who.rate_key)
    return who


CountedCaller = Annotated[Caller, Depends(rate_limited)]
