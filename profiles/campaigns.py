"""Redis adapter for campaigns: a profile's recorded variants (in the profile's slot) and a campaign's counters.

The API records exposures here, off the request path (:meth:`CampaignStore.record_exposure`); the worker counts
outcomes (clicks, purchases, revenue) inside ``apply.lua``, atomically with each event's de-duplication marker, so
a redelivered event never counts twice. Key names: :meth:`core.keyspace.Keys.campaigns` (per profile) and
:meth:`core.keyspace.Keys.campaign_stats` (per campaign). See docs/campaigns.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from core.keyspace import Keys
from core.redis import redis_errors

COUNTS = (
    "assigned",
    "exposed",
    "lists",
    "impressions",
    "clicks",
    "clickers",
    "converters",
    "orders",
    "revenue",
    "revenue_sq",
    "attributed_orders",
    "attributed_revenue",
)


@dataclass(frozen=True, slots=True)
class Assignment:
    variant: str
    first_ms: int


def parse_counters(raw: dict[str, str]) -> dict[str, dict[str, float]]:
    """``{"<variant>:<count>": value}`` -> ``{variant: {count: value}}`` (pure; unknown counts are dropped)."""
    out: dict[str, dict[str, float]] = {}
    for field, value in raw.items():
        variant, sep, count = field.rpartition(":")
        if sep and count in COUNTS:
            out.setdefault(variant, dict.fromkeys(COUNTS, 0.0))[count] = float(value)
    return out


class CampaignStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, profile_ttl_ms: int = 0) -> None:
        self.client = client
        self.keys = keys
        self.profile_ttl_ms = profile_ttl_ms

    async def assignment(self, pid: str, campaign: str) -> Assignment | None:
        """The variant recorded for a profile (at its first exposure, or handed over at login), if any."""
        with redis_errors(f"reading the campaigns of {pid!r}"):
            variant, first = await self.client.hmget(self.keys.campaigns(pid), [campaign, f"{campaign}:t"])
        return Assignment(variant, int(first or 0)) if variant else None

    async def record_exposure(self, pid: str, campaign: str, variant: str, now_ms: int, shown: bool) -> None:
        """One list of ``variant`` served to ``pid`` (``shown``: it had items; a holdout's list has none). The
        first one records the assignment and its time; counters: lists, impressions, assigned, exposed."""
        ck, sk = self.keys.campaigns(pid), self.keys.campaign_stats(campaign)
        with redis_errors(f"recording an exposure of {pid!r} to {campaign!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hsetnx(ck, campaign, variant)
                pipe.hsetnx(ck, f"{campaign}:t", now_ms)
                pipe.hsetnx(ck, f"{campaign}:x", 1) if shown else pipe.hexists(ck, f"{campaign}:x")
                if self.profile_ttl_ms > 0:
                    pipe.pexpire(ck, self.profile_ttl_ms)
                pipe.hincrby(sk, f"{variant}:lists", 1)
                if shown:
                    pipe.hincrby(sk, f"{variant}:impressions", 1)
                new, _, first_shown, *_ = await pipe.execute()
            exposed = shown and bool(first_shown)
            if new or exposed:
                async with self.client.pipeline(transaction=False) as pipe:
                    if new:
                        pipe.hincrby(sk, f"{variant}:assigned", 1)
                    if exposed:
                        pipe.hincrby(sk, f"{variant}:exposed", 1)
                    await pipe.execute()

    async def counters(self, campaign: str) -> dict[str, dict[str, float]]:
        """Every counter of a campaign, per variant."""
        with redis_errors(f"reading the counters of campaign {campaign!r}"):
            raw = await self.client.hgetall(self.keys.campaign_stats(campaign))
        return parse_counters(raw)

    async def exported_at(self, pids: Sequence[str], campaign: str) -> list[int | None]:
        """When each profile was last exported to a campaign (ms), None: never."""
        if not pids:
            return []
        with redis_errors(f"reading the exports of campaign {campaign!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                for pid in pids:
                    pipe.hget(self.keys.campaigns(pid), f"{campaign}:exp")
                rows = await pipe.execute()
        return [int(r) if r else None for r in rows]

    async def mark_exported(self, pids: Sequence[str], campaign: str, now_ms: int) -> None:
        with redis_errors(f"recording an export of campaign {campaign!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                for pid in pids:
                    pipe.hset(self.keys.campaigns(pid), f"{campaign}:exp", now_ms)
                await pipe.execute()

    async def reset(self, campaign: str) -> None:
        """Drop a campaign's counters (tests, a campaign started again); profiles keep their variants."""
        with redis_errors(f"resetting campaign {campaign!r}"):
            await self.client.delete(self.keys.campaign_stats(campaign))
