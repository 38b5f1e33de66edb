"""Redis adapter for profiles: applies update plans (worker) and reads profiles and popularity (API).

Redis errors are mapped to :class:`StoreUnavailable` here, at the boundary; callers never see redis-py's
exceptions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ecrm.keys import TRENDING_ERA_HALF_LIVES, Keys, anonymous_pid, customer_pid, trending_era
from ecrm.settings import Settings
from stream.updates import Plan, decayed_now

_DAY_MS = 86_400_000.0
_HOUR_MS = 3_600_000.0


class StoreUnavailable(RuntimeError):
    """Redis could not be reached or failed a command."""


def now_ms() -> int:
    return int(time.time() * 1000)


def connect(settings: Settings) -> aioredis.Redis:
    """An asyncio Redis client that decodes strings."""
    return aioredis.Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)


def _history(weights: dict[str, str], times: dict[str, str]) -> list[tuple[str, float, int]]:
    """(item, summed weight, last time), positive weights only, newest first (pure)."""
    out = [(item, float(w), int(times.get(item, 0))) for item, w in weights.items() if float(w) > 0]
    out.sort(key=lambda entry: -entry[2])
    return out


@dataclass(frozen=True, slots=True)
class RequestContext:
    """A profile's current history, purchases (item -> last time) and strongest categories."""

    history: list[tuple[str, float, int]]
    bought: dict[str, int]
    categories: list[str]


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float


class ProfileStore:
    """Profiles, catalogue and popularity in Redis (key layout: :mod:`ecrm.keys`)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._aff_half_life_ms = settings.affinity_half_life_days * _DAY_MS
        self._trend_half_life_ms = settings.trending_half_life_hours * _HOUR_MS
        lua = resources.files("stream").joinpath("apply.lua").read_text()
        self._apply = client.register_script(lua)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unreachable at {self.settings.redis_url}: {exc}") from exc

    async def apply_plans(self, plans: list[Plan]) -> list[int]:
        """Apply plans atomically; returns per plan 1 (applied) or 0 (duplicate event id)."""
        if not plans:
            return []
        s = self.settings
        args = [
            orjson.dumps(plans).decode(),
            s.key_prefix,
            int(s.dedupe_ttl_days * _DAY_MS),
            s.recent_items_max,
            self._aff_half_life_ms,
            self._trend_half_life_ms,
            TRENDING_ERA_HALF_LIVES,
            s.interactions_log_maxlen,
        ]
        try:
            result = await self._apply(keys=[], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"applying {len(plans)} updates failed: {exc}") from exc
        return [int(x) for x in result]

    # ----- reads -----

    async def profile(self, pid: str, now: int | None = None) -> dict[str, Any] | None:
        """The whole live profile of ``pid``, or None when it has never been seen."""
        k = self.keys
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(k.profile(pid))
                pipe.zrevrange(k.recent(pid), 0, -1, withscores=True)
                pipe.hgetall(k.cart(pid))
                pipe.hgetall(k.affinity(pid))
                pipe.pfcount(k.sessions(pid))
                h, recent, cart, aff, sessions = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading profile {pid!r} failed: {exc}") from exc
        if not h:
            return None
        return build_profile(pid, h, recent, cart, aff, sessions, now or now_ms(), self._aff_half_life_ms)

    async def bought(self, pid: str) -> dict[str, int]:
        try:
            raw = await self.client.hgetall(self.keys.bought(pid))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading purchases of {pid!r} failed: {exc}") from exc
        return {item: int(ts) for item, ts in raw.items()}

    async def trending(self, n: int, now: int | None = None) -> list[ScoredItem]:
        """Top items by time-decayed popularity (score: decayed weight now)."""
        now = now or now_ms()
        era = trending_era(now, self._trend_half_life_ms)
        landmark = era * self._trend_half_life_ms * TRENDING_ERA_HALF_LIVES
        try:
            rows = await self.client.zrevrange(self.keys.trending(era), 0, n - 1, withscores=True)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading trending items failed: {exc}") from exc
        return [ScoredItem(item, decayed_now(score, landmark, now, self._trend_half_life_ms)) for item, score in rows]

    async def popular(self, n: int) -> list[ScoredItem]:
        """Top items by all-time interaction weight."""
        try:
            rows = await self.client.zrevrange(self.keys.popular, 0, n - 1, withscores=True)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading popular items failed: {exc}") from exc
        return [ScoredItem(item, float(score)) for item, score in rows]

    async def out_of_stock(self, items: list[str]) -> set[str]:
        """Items the catalogue marks as not in stock (unknown items count as available). One command."""
        if not items:
            return set()
        try:
            flags = await self.client.smismember(self.keys.out_of_stock, items)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading the catalogue failed: {exc}") from exc
        return {item for item, flag in zip(items, flags, strict=True) if flag}

    async def request_context(self, pid: str) -> RequestContext:
        """Everything a recommendation request needs of a profile, in one round trip."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.items(pid))
                pipe.hgetall(self.keys.items_ts(pid))
                pipe.hgetall(self.keys.bought(pid))
                pipe.hgetall(self.keys.affinity(pid))
                weights, times, bought, aff = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading profile {pid!r} failed: {exc}") from exc
        return RequestContext(
            history=_history(weights, times),
            bought={item: int(ts) for item, ts in bought.items()},
            categories=[cat for cat, _ in sorted(aff.items(), key=lambda kv: -float(kv[1]))[:3]],
        )

    async def resolve_visitor(self, anonymous_id: str) -> str:
        """The profile of a visitor: their customer's when they logged in, else their own."""
        try:
            customer = await self.client.get(self.keys.alias(anonymous_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading visitor {anonymous_id!r} failed: {exc}") from exc
        return customer_pid(customer) if customer else anonymous_pid(anonymous_id)

    async def item_categories(self, items: list[str]) -> dict[str, str]:
        """Catalogue category of each item that has one."""
        if not items:
            return {}
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for item in items:
                    pipe.hget(self.keys.item(item), "category")
                cats = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading the catalogue failed: {exc}") from exc
        return {item: cat for item, cat in zip(items, cats, strict=True) if cat}

    async def category_items(self, category: str) -> set[str]:
        try:
            return set(await self.client.smembers(self.keys.category(category)))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"reading category {category!r} failed: {exc}") from exc


def _iso(ms: str | int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000.0, tz=UTC).isoformat().replace("+00:00", "Z")


def build_profile(
    pid: str,
    h: dict[str, str],
    recent: list[tuple[str, float]],
    cart: dict[str, str],
    aff: dict[str, str],
    sessions: int,
    now: int,
    aff_half_life_ms: float,
) -> dict[str, Any]:
    """Shape the raw Redis values of one profile into its JSON form (pure)."""
    counts = {k[2:]: int(v) for k, v in h.items() if k.startswith("n:")}
    landmark = float(h.get("aff_L", now))
    affinity = {
        cat: round(decayed_now(float(v), landmark, now, aff_half_life_ms), 6)
        for cat, v in sorted(aff.items(), key=lambda kv: -float(kv[1]))
    }
    orders = int(h.get("orders", 0))
    revenue = round(float(h.get("revenue", 0.0)), 2)
    last_purchase = h.get("last_purchase")
    kind, _, ident = pid.partition(":")
    return {
        "profile_id": pid,
        "customer_id": ident if kind == "c" else None,
        "anonymous_id": ident if kind == "a" else None,
        "first_seen": _iso(h.get("first_seen")),
        "last_seen": _iso(h.get("last_seen")),
        "event_counts": counts,
        "events_total": sum(counts.values()),
        "sessions": int(sessions),
        "rfm": {
            "recency_days": round((now - int(last_purchase)) / _DAY_MS, 3) if last_purchase else None,
            "frequency": orders,
            "monetary": revenue,
        },
        "orders": orders,
        "revenue": revenue,
        "first_purchase": _iso(h.get("first_purchase")),
        "last_purchase": _iso(last_purchase),
        "recent_items": [{"item_id": item, "at": _iso(int(ts))} for item, ts in recent],
        "cart": [{"item_id": item, "quantity": int(q)} for item, q in sorted(cart.items())],
        "category_affinity": affinity,
        "merged_visitors": int(h.get("merged_visitors", 0)),
    }


async def catalogue_sample(store: ProfileStore, n: int) -> list[str]:
    """Up to ``n`` catalogue item ids (sorted, so the answer is stable): the last resort of every fallback."""
    try:
        _, items = await store.client.sscan(store.keys.catalogue, 0, count=max(n * 4, 100))
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"reading the catalogue failed: {exc}") from exc
    return sorted(items)[:n]
