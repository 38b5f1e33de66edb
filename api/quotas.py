"""Quotas per tenant at the collector (issue 22, docs/tenants.md "Quotas"): events per second, profiles, items.

* **Events per second** (``events_per_s``): every event a tenant's keys send counts (a batch of 20 counts 20), in a
  sliding window of one second per API replica (like ``ECRM_RATE_LIMIT``, :mod:`api.ratelimit`). Over it the whole
  request is refused, 429 with ``Retry-After``, and not dead-lettered (the sender is told to retry).
* **Profiles** (``profiles_max``) and **items** (``items_max``): the tenant's profile count (its counter
  ``{g}:stats:profiles``, kept by the workers and set right by every analytics refresh) and catalogue size
  (``SCARD``) are read from Redis at most every ``ECRM_TENANT_QUOTA_CHECK_S`` seconds per tenant and replica, and
  cached. Under the quota every event passes (no read per event). At or over it, the profiles and items a batch
  names are looked up in one round trip (``EXISTS`` of each profile's hash, ``SMISMEMBER``): events of
  a profile the tenant does not hold, and ``item`` events of an item not in its catalogue, are refused by index
  (429 with ``Retry-After``) and dead-lettered with the reason; events of existing profiles and items still pass.
  The quota is therefore exact to within what reaches Redis during one check interval (the count read may be up to
  that old, and events still in Kafka are not counted yet): a tenant may overshoot by the new profiles or items of
  a few seconds' events, never keep growing.

Every refused event counts in ``ecrm_collector_refused_total{reason="quota", tenant}``. When Redis does not answer,
the profile and item quotas are not checked (events are taken: the collector never needed Redis to take events)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from core import metrics
from core.errors import RateLimited, StoreUnavailable
from core.keyspace import Keys, anonymous_pid, customer_pid
from core.quotas import Quotas, QuotaSource
from core.redis import redis_errors
from core.tenant_files import TenantFiles

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Usage:
    profiles: int
    items: int
    read_at: float


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """One event refused by a quota: its index in the records, the field naming what it would create, why."""

    index: int
    field: str
    reason: str


class QuotaGate:
    """The quotas of every tenant, as one API replica enforces them."""

    def __init__(
        self,
        files: TenantFiles[QuotaSource],
        client: aioredis.Redis,
        prefix: str,
        check_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self.client = client
        self.prefix = prefix
        self.check_s = check_s
        self._clock = clock
        self._rates = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._usage: dict[str, Usage] = {}

    def quotas(self, tenant: str) -> Quotas:
        return self.files.get(tenant).current()

    async def admit(self, tenant: str, events: int) -> None:
        """Count ``events`` of ``tenant``; :class:`RateLimited` (429) when over its events per second."""
        per_s = self.quotas(tenant).events_per_s
        if per_s <= 0:
            return
        item = RateLimitItemPerSecond(per_s)
        if await self._rates.hit(item, "tenant", tenant, cost=events):
            return
        stats = await self._rates.get_window_stats(item, "tenant", tenant)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        metrics.COLLECTOR_REFUSED.labels("quota", metrics.tenant_label(tenant)).inc(events)
        raise RateLimited(
            f"the quota of {per_s} events per second of tenant {tenant!r} is exceeded; retry in {wait} s", wait
        )

    async def usage(self, tenant: str) -> Usage | None:
        """The tenant's profile and item counts, read at most every ``check_s`` seconds (None: Redis away)."""
        now = self._clock()
        known = self._usage.get(tenant)
        if known is not None and now - known.read_at < self.check_s:
            return known
        keys = Keys(self.prefix, tenant)
        try:
            with redis_errors(f"reading the profile and item counts of tenant {tenant!r}"):
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.get(keys.profile_count)
                    pipe.scard(keys.catalogue)
                    profiles, items = await pipe.execute()
        except StoreUnavailable as exc:
            log.warning("tenant quotas of profiles and items not checked: %s", exc)
            return None
        known = Usage(max(int(profiles or 0), 0), int(items), now)
        self._usage[tenant] = known
        label = metrics.tenant_label(tenant)
        metrics.TENANT_USAGE.labels(label, "profiles").set(known.profiles)
        metrics.TENANT_USAGE.labels(label, "items").set(known.items)
        return known

    async def refusals(self, tenant: str, records: list[tuple[str, bytes]], types: list[str]) -> list[QuotaRefusal]:
        """The records that would create a profile or an item past the tenant's quota (see the module)."""
        quotas = self.quotas(tenant)
        if not quotas.profiles_max and not quotas.items_max:
            return []
        usage = await self.usage(tenant)
        if usage is None:
            return []
        full_profiles = 0 < quotas.profiles_max <= usage.profiles
        full_items = 0 < quotas.items_max <= usage.items
        if not full_profiles and not full_items:
            return []
        profiles, items = new_candidates(records, types, full_profiles, full_items)
        if not profiles and not items:
            return []
        known_profiles, known_items = await self._known(tenant, [p for _, _, p in profiles], [i for _, i in items])
        if known_profiles is None or known_items is None:
            return []
        retry = self.retry_after_s
        out = [
            QuotaRefusal(index, field, profile_reason(tenant, usage.profiles, quotas.profiles_max, retry))
            for (index, field, _), known in zip(profiles, known_profiles, strict=True)
            if not known
        ]
        out += [
            QuotaRefusal(index, "item_id", item_reason(tenant, usage.items, quotas.items_max, retry))
            for (index, _), known in zip(items, known_items, strict=True)
            if not known
        ]
        return sorted(out, key=lambda r: r.index)

    @property
    def retry_after_s(self) -> int:
        """When a refused event may be sent again: once the counts were read again."""
        return max(1, math.ceil(self.check_s))

    async def _known(
        self, tenant: str, pids: list[str], items: list[str]
    ) -> tuple[list[bool] | None, list[bool] | None]:
        keys = Keys(self.prefix, tenant)
        try:
            with redis_errors(f"looking up the profiles and items of tenant {tenant!r}"):
                async with self.client.pipeline(transaction=False) as pipe:
                    for pid in pids:
                        pipe.exists(keys.profile(pid))
                    if items:
                        pipe.smismember(keys.catalogue, items)
                    found: list[Any] = await pipe.execute()
        except StoreUnavailable as exc:
            log.warning("tenant quotas of profiles and items not checked: %s", exc)
            return None, None
        members = found.pop() if items else []
        return [bool(n) for n in found], [bool(m) for m in members]


def new_candidates(
    records: list[tuple[str, bytes]], types: list[str], profiles: bool, items: bool
) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """The records that may create a profile (index, field, profile id) or an item (index, item id) (pure)."""
    found_profiles: list[tuple[int, str, str]] = []
    found_items: list[tuple[int, str]] = []
    for index, ((key, value), kind) in enumerate(zip(records, types, strict=True)):
        if kind == "item":
            if items:
                found_items.append((index, key))
            continue
        if not profiles:
            continue
        event = orjson.loads(value)
        customer, visitor = event.get("customer_id"), event.get("anonymous_id")
        if customer:
            found_profiles.append((index, "customer_id", customer_pid(customer)))
        elif visitor:
            found_profiles.append((index, "anonymous_id", anonymous_pid(visitor)))
    return found_profiles, found_items


def profile_reason(tenant: str, held: int, quota: int, retry_s: int) -> str:
    return (
        f"refused: tenant {tenant!r} holds {held} profiles, its quota is {quota}: events of a new profile are refused "
        f"(counts read again in {retry_s} s)"
    )


def item_reason(tenant: str, held: int, quota: int, retry_s: int) -> str:
    return (
        f"refused: tenant {tenant!r} holds {held} catalogue items, its quota is {quota}: new items are refused "
        f"(counts read again in {retry_s} s)"
    )
