"""Redis adapter for campaigns: a profile's recorded variants (in the profile's slot) and a campaign's counters.

The API records exposures here, off the request path (:meth:`CampaignStore.record_exposure`), with a digest of each
list's ``recommendation_id`` (the newest ``SERVED_IDS_KEPT`` per profile and campaign, field ``<campaign>:r``); the
worker counts outcomes (clicks, purchases, revenue) inside ``apply.lua``, atomically with each event's
de-duplication marker, so a redelivered event never counts twice. A ``recommendation_click`` counts as a
campaign click only when its id's digest is among those served to the profile: an id made up in the campaign's
form (``anything-<tag>``) counts nothing. Key names: :meth:`core.keyspace.Keys.campaigns` (per profile) and
:meth:`core.keyspace.Keys.campaign_stats` (per campaign). See docs/campaigns.md.
"""

from __future__ import annotations

import hashlib
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


SERVED_IDS_KEPT = 50  # recommendation ids (digests) remembered per profile and campaign: a click on an older list
# (50 lists of the campaign later) counts no more (about 650 bytes per profile in a campaign)


def served_digest(recommendation_id: str) -> str:
    """A list's ``recommendation_id`` as the exposure record keeps it: 12 hex characters (pure)."""
    return hashlib.blake2b(recommendation_id.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()


def remember_served(current: str | None, digests: Sequence[str], kept: int = SERVED_IDS_KEPT) -> str:
    """The ``<campaign>:r`` field with ``digests`` (newest last) in front of ``current``, the newest ``kept`` only
    (pure)."""
    ids = [*reversed(digests), *(current or "").split()]
    return " ".join(list(dict.fromkeys(ids))[:kept])


@dataclass(frozen=True, slots=True)
class Exposure:
    """One list served under a campaign: to whom, which variant, when (ms), whether it had items, and its
    ``recommendation_id`` (a click counts only on a list served to the profile)."""

    pid: str
    campaign: str
    variant: str
    ts_ms: int
    shown: bool
    recommendation_id: str = ""


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
        """One list of ``variant`` served to ``pid`` (see :meth:`record_exposures`)."""
        await self.record_exposures([Exposure(pid, campaign, variant, now_ms, shown)])

    async def record_exposures(self, batch: Sequence[Exposure]) -> None:
        """Lists served under campaigns, in two round trips for the whole batch. The first list of a profile records
        its assignment and its time; counters: ``lists``, ``impressions`` (lists with items), ``assigned`` (first
        list), ``exposed`` (first list with items; a holdout's lists have none). The digest of each shown list's
        ``recommendation_id`` joins the profile's served ids (``<campaign>:r``, the newest ``SERVED_IDS_KEPT``)."""
        if not batch:
            return
        per: list[int] = []
        with redis_errors(f"recording {len(batch)} campaign exposures"):
            async with self.client.pipeline(transaction=False) as pipe:
                for e in batch:
                    ck, sk = self.keys.campaigns(e.pid), self.keys.campaign_stats(e.campaign)
                    pipe.hsetnx(ck, e.campaign, e.variant)
                    pipe.hsetnx(ck, f"{e.campaign}:t", e.ts_ms)
                    pipe.hsetnx(ck, f"{e.campaign}:x", 1) if e.shown else pipe.hexists(ck, f"{e.campaign}:x")
                    pipe.hincrby(sk, f"{e.variant}:lists", 1)
                    n = 4
                    if e.shown:
                        pipe.hincrby(sk, f"{e.variant}:impressions", 1)
                        n += 1
                    if self.profile_ttl_ms > 0:
                        pipe.pexpire(ck, self.profile_ttl_ms)
                        n += 1
                    pipe.hget(ck, f"{e.campaign}:r")  # the served ids, last in each exposure's replies
                    per.append(n + 1)
                replies = await pipe.execute()
            at = 0
            served: dict[tuple[str, str], tuple[str | None, list[str]]] = {}  # (profile, campaign) -> (read, new)
            async with self.client.pipeline(transaction=False) as pipe:
                queued = 0
                for e, n in zip(batch, per, strict=True):
                    new, first_shown = replies[at], replies[at + 2]
                    current = served.setdefault((e.pid, e.campaign), (replies[at + n - 1], []))
                    if e.shown and e.recommendation_id:
                        current[1].append(served_digest(e.recommendation_id))
                    at += n
                    sk = self.keys.campaign_stats(e.campaign)
                    if new:
                        pipe.hincrby(sk, f"{e.variant}:assigned", 1)
                        queued += 1
                    if e.shown and first_shown:
                        pipe.hincrby(sk, f"{e.variant}:exposed", 1)
                        queued += 1
                for (pid, campaign), (read, digests) in served.items():
                    if digests:
                        pipe.hset(self.keys.campaigns(pid), f"{campaign}:r", remember_served(read, digests))
                        queued += 1
                if queued:
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
