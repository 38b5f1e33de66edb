"""One time budget per request for its Redis reads, and one breaker per API process that decides when a request
tries Redis again.

A request that reads Redis does it within ``ECRM_REQUEST_DEADLINE_MS`` (all its reads together): past it the
request stops waiting and answers from what needs no Redis (recommendations: the in-memory popular items,
``strategy: "degraded"``; ``/health/ready``: ``reads: false``). A Redis that fails or misses the deadline opens
the breaker: for ``ECRM_REDIS_RETRY_S`` every request goes straight to its answer without Redis, then one request
(and only one at a time) tries again; its success closes the breaker. So a hung Redis (a stopped process, a network
partition) never holds a shopper's page for the socket timeout, and a recovered one is used again within a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.errors import StoreUnavailable

T = TypeVar("T")


class RedisBreaker:
    """Closed (Redis is tried), open (it is not, until ``retry_s`` passed), half-open (one trial request)."""

    def __init__(self, retry_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_s = retry_s
        self.clock = clock
        self.open_until: float | None = None  # None: closed
        self.trying = False  # a trial request is in flight (half-open)

    @property
    def closed(self) -> bool:
        return self.open_until is None

    def allow(self) -> bool:
        """Whether this request may try Redis: always while closed; when open, one request once ``retry_s`` has
        passed (the trial), none while that trial is in flight."""
        if self.open_until is None:
            return True
        if self.trying or self.clock() < self.open_until:
            return False
        self.trying = True
        return True

    def succeeded(self) -> None:
        self.open_until, self.trying = None, False

    def failed(self) -> None:
        self.open_until, self.trying = self.clock() + self.retry_s, False

    def abandoned(self) -> None:
        """The request ended without telling (cancelled: the client went away): let another one try."""
        self.trying = False


class BreakerOpen(StoreUnavailable):
    """Redis is not tried now: it failed moments ago."""

    def __init__(self) -> None:
        super().__init__("Redis is not tried now: it failed moments ago (the breaker is open)", "breaker")


class DeadlineExceeded(StoreUnavailable):
    """Redis did not answer a request's reads within its budget."""

    def __init__(self, budget_s: float) -> None:
        super().__init__(f"Redis did not answer within the request deadline of {budget_s * 1000:.0f} ms", "timeout")


async def within(breaker: RedisBreaker, budget_s: float, reads: Callable[[], Awaitable[T]], always: bool = False) -> T:
    """``reads()`` within ``budget_s``, told to the breaker. Raises :class:`StoreUnavailable`: :class:`BreakerOpen`
    at once when the breaker says not to try, the adapter's error when Redis fails, :class:`DeadlineExceeded` when
    the budget is spent. With ``always`` (the readiness probe) Redis is tried even while the breaker is open, and
    the outcome is told to it all the same (a success closes it)."""
    if not breaker.allow() and not always:
        raise BreakerOpen()
    try:
        async with asyncio.timeout(budget_s):
            result = await reads()
    except TimeoutError:
        breaker.failed()
        raise DeadlineExceeded(budget_s) from None
    except StoreUnavailable:
        breaker.failed()
        raise
    except BaseException:
        breaker.abandoned()
        raise
    breaker.succeeded()
    return result
