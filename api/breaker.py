"""One time budget per request for its Redis reads, and one breaker per API process that decides when a request
tries Redis again.

A request that reads Redis does it within ``ECRM_REQUEST_DEADLINE_MS`` (all its reads together, and the work
between them): past it the request stops waiting and answers from what needs no Redis (recommendations: the
in-memory popular items, ``strategy: "degraded"``; ``/health/ready``: ``reads: false``). A Redis that fails opens the
breaker: for ``ECRM_REDIS_RETRY_S`` every request goes straight to its answer without Redis, then one request (and
only one at a time) tries again; its success closes the breaker. A missed deadline opens it only once Redis is
found slow: one ``PING`` in the background, within a few deadlines (a busy host that made one request late must not
send every request to the degraded answer). So a hung Redis (a stopped process, a network partition) never holds a
shopper's page for the socket timeout, and a recovered one is used again within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.errors import StoreUnavailable

T = TypeVar("T")


PROBE_DEADLINES = 4  # a missed deadline's PING waits this many deadlines before Redis counts as slow


class RedisBreaker:
    """Closed (Redis is tried), open (it is not, until ``retry_s`` passed), half-open (one trial request).

    ``probe``: a Redis round trip (``PING``), run in the background after a missed deadline while closed; its
    failure or a reply later than ``probe_timeout_s`` opens the breaker."""

    def __init__(
        self,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[], Awaitable[object]] | None = None,
        probe_timeout_s: float = 0.6,
    ) -> None:
        self.retry_s = retry_s
        self.clock = clock
        self.open_until: float | None = None  # None: closed
        self.trying = False  # a trial request is in flight (half-open)
        self.probe = probe
        self.probe_timeout_s = probe_timeout_s
        self._probing: asyncio.Task[None] | None = None

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

    def missed(self, trial: bool) -> None:
        """A request missed its deadline. A trial's miss (Redis failed moments ago) opens the breaker again; else
        one background ``PING`` decides (without a probe: opens it)."""
        if trial or self.probe is None:
            self.failed()
            return
        if self._probing is None or self._probing.done():
            self._probing = asyncio.create_task(self._check())

    async def _check(self) -> None:
        assert self.probe is not None
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                await self.probe()
        except (TimeoutError, StoreUnavailable):
            self.failed()

    async def close(self) -> None:
        """Stop a probe in flight (the app's shutdown)."""
        if self._probing is not None and not self._probing.done():
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing


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
    trial = not breaker.closed
    if not breaker.allow() and not always:
        raise BreakerOpen()
    try:
        async with asyncio.timeout(budget_s):
            result = await reads()
    except TimeoutError:
        breaker.missed(trial)
        raise DeadlineExceeded(budget_s) from None
    except StoreUnavailable:
        breaker.failed()
        raise
    except BaseException:
        breaker.abandoned()
        raise
    breaker.succeeded()
    return result
