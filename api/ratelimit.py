"""Abuse limits where events enter (the ``limits`` library, ``crawlerdetect``): what the collector counts and refuses
before an event reaches Kafka.

* ``ECRM_RATE_LIMIT`` counts **events** (a batch of 20 counts 20): per client address for collect keys and the open
  mode (a collect key is public: its senders are counted one by one), per key for server and admin keys. Over it the
  whole request is refused, 429 with ``Retry-After`` (a sender already over it is refused before its body is read).
* ``ECRM_VISITOR_RATE_LIMIT`` counts the events of one ``anonymous_id`` sent with a ``collect`` key, whatever
  address sends them: an event over it is refused by index (status 429) and dead-lettered with the reason.
* A ``collect`` key's request whose ``User-Agent`` is a bot's (``crawlerdetect``, the library the access-log importer
  uses, and an empty user agent) is refused whole, each event by index (status 403) and dead-lettered: browser
  events of bots never reach a profile, trending, popular or the training log.

Every refused event is counted in ``ecrm_collector_refused_total{reason}`` (``rate_limit``, ``visitor_rate_limit``,
``bot``; alert ``EcrmCollectorRefusing``). Requests refused whole with 429 are not dead-lettered (the sender is told
to retry; writing a flood to Kafka would only amplify it).

Counters live in the API process (sliding window counters in memory, expired with their window): with several
replicas behind a load balancer each one counts on its own, so a client gets up to replicas x the limit.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from typing import Annotated

from crawlerdetect import CrawlerDetect
from fastapi import Depends, Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from api.auth import Caller, CollectCaller
from api.quotas import QuotaGate
from api.tenancy import note_tenant, tenant_of
from core import metrics
from core.errors import ConfigError, RateLimited
from core.scopes import Scope
from core.settings import Settings

REASONS = metrics.COLLECTOR_REASONS


def parse_limits(text: str, variable: str = "ECRM_RATE_LIMIT") -> list[RateLimitItem]:
    """``100/second;3000/minute`` -> limits (empty: none). Raises :class:`ConfigError`."""
    if not text.strip():
        return []
    try:
        return parse_many(text)
    except ValueError as exc:
        raise ConfigError(
            f"{variable}={text!r} is not a rate limit (expected e.g. 100/second or 100/second;3000/minute): {exc}"
        ) from exc


class RateLimiter:
    """Counts events per key against every configured limit."""

    def __init__(self, text: str, variable: str = "ECRM_RATE_LIMIT", what: str = "") -> None:
        self.items = parse_limits(text, variable)
        self.what = what  # "" or e.g. " per visitor", in the refusal's message
        self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    @property
    def description(self) -> str:
        return "; ".join(str(item) for item in self.items) or "off"

    async def hit(self, key: str, cost: int = 1) -> None:
        """Count ``cost`` events of ``key``; raise :class:`RateLimited` with the wait when that is over a limit."""
        for item in self.items:
            if not await self.limiter.hit(item, key, cost=cost):
                raise await self._refusal(item, key)

    async def check(self, key: str) -> None:
        """Raise :class:`RateLimited` when ``key`` has no event left in a window (nothing is counted)."""
        for item in self.items:
            if not await self.limiter.test(item, key):
                raise await self._refusal(item, key)

    async def _refusal(self, item: RateLimitItem, key: str) -> RateLimited:
        stats = await self.limiter.get_window_stats(item, key)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        window = str(item).split(" per ", 1)[-1]
        return RateLimited(
            f"rate limit of {item.amount} events per {window}{self.what} exceeded; retry in {wait} s", wait
        )


_CRAWLERS = CrawlerDetect()


@lru_cache(maxsize=4096)
def is_bot(user_agent: str | None) -> bool:
    """A crawler's or bot's user agent (``crawlerdetect``), or none at all: a browser always sends one."""
    ua = (user_agent or "").strip()
    return not ua or ua == "-" or bool(_CRAWLERS.is_crawler(ua))


def bot_reason(user_agent: str | None) -> str:
    shown = (user_agent or "").strip()[:120] or "none"
    return (
        f"refused: the User-Agent ({shown!r}) is a bot's or crawler's, and a collect key's events are a browser's; "
        "bots' events are not counted"
    )


class EntryLimits:
    """The collector's limits of one API process: events per sender, events per visitor, bots."""

    def __init__(self, settings: Settings, quotas: QuotaGate | None = None) -> None:
        self.senders = RateLimiter(settings.rate_limit)
        self.visitors = RateLimiter(settings.visitor_rate_limit, "ECRM_VISITOR_RATE_LIMIT", " per visitor")
        self.quotas = quotas  # each tenant's quotas (api/quotas.py), set once Redis is connected

    async def before_body(self, sender: Caller) -> None:
        """429 before the body is read when the sender has no event left."""
        try:
            await self.senders.check(sender.rate_key)
        except RateLimited:
            metrics.COLLECTOR_REFUSED.labels("rate_limit", metrics.tenant_label(tenant_of(sender))).inc()
            raise

    async def admit(self, sender: Caller, events: int) -> None:
        """Count a request's ``events``; 429 (every event counted as refused) when over the sender's limit."""
        try:
            await self.senders.hit(sender.rate_key, events)
        except RateLimited:
            metrics.COLLECTOR_REFUSED.labels("rate_limit", metrics.tenant_label(tenant_of(sender))).inc(events)
            raise

    @staticmethod
    def bot(sender: Caller, user_agent: str | None) -> str | None:
        """Why a collect key's request is refused as a bot's, or None (other keys: a server may send anything)."""
        if sender.scope != Scope.COLLECT or sender.source != Scope.COLLECT.label:
            return None
        return bot_reason(user_agent) if is_bot(user_agent) else None

    async def visitor(self, sender: Caller, anonymous_id: str) -> RateLimited | None:
        """Count one event of a collect key's visitor; the refusal when over the visitor's limit, or None."""
        if sender.source != Scope.COLLECT.label or not anonymous_id:
            return None
        try:
            await self.visitors.hit(f"visitor:{sender.tenant}/{anonymous_id}")  # one shop's visitor is not another's
        except RateLimited as exc:
            return exc
        return None


async def rate_checked(request: Request, who: CollectCaller) -> Caller:
    """The caller, refused at once (429) when already over the collector's rate limit."""
    note_tenant(request, who)
    limits: EntryLimits = request.app.state.entry_limits
    await limits.before_body(who)
    return who


CountedCaller = Annotated[Caller, Depends(rate_checked)]
