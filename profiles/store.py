"""Redis adapter for profiles: applies update plans (worker) and reads profiles and popularity (API).

Key names come from :mod:`core.keyspace`; redis-py's errors become the engine's (:mod:`core.errors`) through
:func:`core.redis.redis_errors`, so callers never see redis-py's exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

from core.clock import now_ms
from core.errors import StoreUnavailable
from core.keyspace import (
    TRENDING_ERA_HALF_LIVES,
    Keys,
    ProfileId,
    anonymous_pid,
    customer_pid,
    parse_pid,
    trending_era,
)
from core.redis import redis_errors
from core.settings import Settings
from profiles.script import Lookups, ScriptParams, build_call, needed_lookups
from profiles.updates import Plan, decayed_now

Status = int | str  # APPLIED, DUPLICATE, ERASED, or the reason a plan was refused
APPLIED, DUPLICATE, ERASED = 1, 0, 2

_DAY_MS = 86_400_000.0
_HOUR_MS = 3_600_000.0
MAX_STALE_ROUNDS = 50  # reads that went stale before the script ran (a login meanwhile) before giving up


def _status(reply: object) -> Status:
    if isinstance(reply, int):
        return reply
    return reply.decode() if isinstance(reply, bytes) else str(reply)


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
class CatalogueEntry:
    """What the catalogue holds of an item for business rules and responses (absent fields: None / empty)."""

    category: str | None
    price: float | None
    attributes: dict[str, str | int | float]
    image_url: str | None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    score: float


class ProfileStore:
    """Profiles, catalogue and popularity in Redis (key layout: :mod:`core.keyspace`)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._aff_half_life_ms = settings.affinity_half_life_days * _DAY_MS
        self._trend_half_life_ms = settings.trending_half_life_hours * _HOUR_MS
        self._params = ScriptParams(
            dedupe_ttl_ms=int(settings.dedupe_ttl_days * _DAY_MS),
            recent_max=settings.recent_items_max,
            affinity_half_life_ms=self._aff_half_life_ms,
            trending_half_life_ms=self._trend_half_life_ms,
            era_half_lives=TRENDING_ERA_HALF_LIVES,
            log_maxlen=settings.interactions_log_maxlen,
            profile_ttl_ms=int(settings.profile_ttl_days * _DAY_MS),
            items_max=settings.profile_items_max,
            categories_max=settings.profile_categories_max,
            cart_lines_max=settings.cart_lines_max,
            popular_max=settings.popular_items_max,
        )
        self._apply = client.register_script(resources.files("profiles").joinpath("apply.lua").read_text())
        self._forget = client.register_script(resources.files("profiles").joinpath("forget.lua").read_text())

    async def ping(self) -> bool:
        with redis_errors(f"Redis unreachable at {self.settings.redis_url}"):
            return bool(await self.client.ping())

    async def apply_plans(self, plans: Sequence[Plan]) -> list[Status]:
        """Apply plans, each atomically with its de-duplication marker. Returns per plan :data:`APPLIED`,
        :data:`DUPLICATE` (event id seen before), :data:`ERASED` (the profile was erased after the event) or the
        reason it was refused (a string: nothing written). Raises :class:`StoreUnavailable` (retry) or
        :class:`StoreRefused` (Redis refused the command)."""
        statuses: list[Status] = []
        rest = list(plans)
        for _ in range(MAX_STALE_ROUNDS):
            if not rest:
                return statuses
            found = await self._lookups(rest)
            keys, args = build_call(rest, found, self.keys, self._params)
            with redis_errors(f"applying {len(rest)} updates"):
                done = [_status(x) for x in await self._apply(keys=keys, args=args)]
            statuses += done
            rest = rest[len(done) :]
        if rest:
            raise StoreUnavailable(f"{len(rest)} updates kept meeting concurrent logins; retrying", "contention")
        return statuses

    async def _lookups(self, plans: Sequence[Plan]) -> Lookups:
        """What decides the keys of ``plans``: the customers visitors logged in as, the items' categories."""
        visitors, items = needed_lookups(plans)
        if not visitors and not items:
            return Lookups()
        with redis_errors("reading visitors and catalogue before an update"):
            async with self.client.pipeline(transaction=False) as pipe:
                for visitor in visitors:
                    pipe.hget(self.keys.alias(visitor), "c")
                for item in items:
                    pipe.hget(self.keys.item(item), "category")
                replies = await pipe.execute()
        return Lookups(
            aliases=dict(zip(visitors, replies[: len(visitors)], strict=True)),
            categories=dict(zip(items, replies[len(visitors) :], strict=True)),
        )

    # ----- erasure -----

    async def forget(self, customer_id: str, now: int | None = None) -> list[str]:
        """Erase a customer and the visitors who logged in as them: profiles, login links, de-duplication markers.
        A tombstone per profile keeps their older events, replayed from Kafka, from coming back, and tells training
        and analytics to skip them. Returns the profile ids erased (the customer first)."""
        now = now or now_ms()
        tombstone_ms = int(self.settings.erasure_tombstone_days * _DAY_MS)
        for _ in range(MAX_STALE_ROUNDS):
            with redis_errors(f"reading the visitors of customer {customer_id!r}"):
                visitors = sorted(await self.client.smembers(self.keys.visitors(customer_id)))
            pids = [ProfileId("c", customer_id), *(ProfileId("a", v) for v in visitors)]
            keys = [self.keys.visitors(customer_id), self.keys.erasures, self.keys.profiles]
            for pid in pids:
                keys += [*self.keys.profile_keys(pid), self.keys.erased(pid)]
            keys += [self.keys.alias(v) for v in visitors]
            args = [now, tombstone_ms, orjson.dumps([str(p) for p in pids]).decode(), orjson.dumps(visitors).decode()]
            with redis_errors(f"erasing customer {customer_id!r}"):
                done = int(await self._forget(keys=keys, args=args))
            if done >= 0:
                await self._forget_markers(pids)
                with redis_errors(f"erasing the lists served to customer {customer_id!r}"):
                    for pid in pids:  # one slot each
                        await self.client.delete(self.keys.served(pid), self.keys.campaigns(pid))
                return [str(p) for p in pids]
        raise StoreUnavailable(f"erasing customer {customer_id!r}: their visitors kept changing", "contention")

    async def _forget_markers(self, pids: list[ProfileId]) -> None:
        """The de-duplication markers of erased profiles (encoded ids hold no glob characters)."""
        for pid in pids:
            with redis_errors(f"erasing the markers of {str(pid)!r}"):
                batch: list[str] = []
                async for key in self.client.scan_iter(match=f"{self.keys.profile(pid)}:seen:*", count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        await self.client.delete(*batch)
                        batch = []
                if batch:
                    await self.client.delete(*batch)

    # ----- reads -----

    async def profile(self, pid: str, now: int | None = None) -> dict[str, Any] | None:
        """The whole live profile of ``pid``, or None when it has never been seen."""
        k = self.keys
        with redis_errors(f"reading profile {pid!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(k.profile(pid))
                pipe.zrevrange(k.recent(pid), 0, -1, withscores=True)
                pipe.hgetall(k.cart(pid))
                pipe.hgetall(k.affinity(pid))
                pipe.execute_command("PFCOUNT", k.sessions(pid))  # (redis-py's cluster pipeline refuses .pfcount)
                h, recent, cart, aff, sessions = await pipe.execute()
        if not h:
            return None
        return build_profile(pid, h, recent, cart, aff, sessions, now or now_ms(), self._aff_half_life_ms)

    async def bought(self, pid: str) -> dict[str, int]:
        with redis_errors(f"reading purchases of {pid!r}"):
            raw = await self.client.hgetall(self.keys.bought(pid))
        return {item: int(ts) for item, ts in raw.items()}

    async def trending(self, n: int, now: int | None = None) -> list[ScoredItem]:
        """Top items by time-decayed popularity (score: decayed weight now)."""
        now = now or now_ms()
        era = trending_era(now, self._trend_half_life_ms)
        landmark = era * self._trend_half_life_ms * TRENDING_ERA_HALF_LIVES
        with redis_errors("reading trending items"):
            rows = await self.client.zrevrange(self.keys.trending(era), 0, n - 1, withscores=True)
        return [ScoredItem(item, decayed_now(score, landmark, now, self._trend_half_life_ms)) for item, score in rows]

    async def popular(self, n: int) -> list[ScoredItem]:
        """Top items by all-time interaction weight."""
        with redis_errors("reading popular items"):
            rows = await self.client.zrevrange(self.keys.popular, 0, n - 1, withscores=True)
        return [ScoredItem(item, float(score)) for item, score in rows]

    async def out_of_stock(self, items: list[str]) -> set[str]:
        """Items the catalogue marks as not in stock (unknown items count as available). One command."""
        if not items:
            return set()
        with redis_errors("reading the catalogue"):
            flags = await self.client.smismember(self.keys.out_of_stock, items)
        return {item for item, flag in zip(items, flags, strict=True) if flag}

    async def request_context(self, pid: str) -> RequestContext:
        """Everything a recommendation request needs of a profile, in one round trip."""
        with redis_errors(f"reading profile {pid!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.items(pid))
                pipe.hgetall(self.keys.items_ts(pid))
                pipe.hgetall(self.keys.bought(pid))
                pipe.hgetall(self.keys.affinity(pid))
                weights, times, bought, aff = await pipe.execute()
        return RequestContext(
            history=_history(weights, times),
            bought={item: int(ts) for item, ts in bought.items()},
            categories=[cat for cat, _ in sorted(aff.items(), key=lambda kv: -float(kv[1]))[:3]],
        )

    async def resolve_visitor(self, anonymous_id: str) -> str:
        """The profile of a visitor: their customer's when they logged in, else their own."""
        with redis_errors(f"reading visitor {anonymous_id!r}"):
            customer = await self.client.hget(self.keys.alias(anonymous_id), "c")
        return customer_pid(customer) if customer else anonymous_pid(anonymous_id)

    async def item_categories(self, items: list[str]) -> dict[str, str]:
        """Catalogue category of each item that has one."""
        if not items:
            return {}
        with redis_errors("reading the catalogue"):
            async with self.client.pipeline(transaction=False) as pipe:
                for item in items:
                    pipe.hget(self.keys.item(item), "category")
                cats = await pipe.execute()
        return {item: cat for item, cat in zip(items, cats, strict=True) if cat}

    async def catalogue_entries(self, items: list[str]) -> dict[str, CatalogueEntry | None]:
        """Category, price, attributes, image and title of each item (None: not in the catalogue). One round trip."""
        entries, _, _ = await self.rules_reads(items, [], None, 0)
        return entries

    async def rules_reads(
        self, items: list[str], stock_of: list[str], served_of: str | None, served_n: int
    ) -> tuple[dict[str, CatalogueEntry | None], set[str], list[tuple[int, frozenset[str]]]]:
        """What business rules read, in one round trip: the catalogue entries of ``items`` (None: unknown), which
        of ``stock_of`` are out of stock, and the last ``served_n`` lists served to ``served_of``."""
        if not items and not stock_of and served_of is None:
            return {}, set(), []
        with redis_errors("reading the catalogue for business rules"):
            async with self.client.pipeline(transaction=False) as pipe:
                for item in items:
                    pipe.hmget(self.keys.item(item), "category", "price", "attrs", "image", "title")
                if stock_of:
                    pipe.smismember(self.keys.out_of_stock, stock_of)
                if served_of is not None:
                    pipe.lrange(self.keys.served(served_of), 0, served_n - 1)
                rows = await pipe.execute()
        out: dict[str, CatalogueEntry | None] = {}
        for item, (cat, price, attrs, image, title) in zip(items, rows, strict=False):
            if cat is None and price is None:
                out[item] = None
                continue
            out[item] = CatalogueEntry(
                cat, float(price) if price is not None else None, orjson.loads(attrs) if attrs else {}, image, title
            )
        rest = rows[len(items) :]
        oos = {i for i, flag in zip(stock_of, rest.pop(0), strict=True) if flag} if stock_of else set()
        served = [_served(row) for row in rest.pop(0)] if served_of is not None else []
        return out, oos, served

    async def served_lists(self, pid: str, n: int) -> list[tuple[int, frozenset[str]]]:
        """The last ``n`` recommendation lists served to a profile, newest first: (time, item ids)."""
        _, _, served = await self.rules_reads([], [], pid, n)
        return served

    async def remember_served(self, pid: str, ts_ms: int, items: list[str], keep: int, ttl_ms: int) -> None:
        """Remember one served list (the newest ``keep`` lists are kept, for ``ttl_ms`` after the last one)."""
        key = self.keys.served(pid)
        with redis_errors(f"remembering a list served to {pid!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(key, orjson.dumps([ts_ms, items]))
                pipe.ltrim(key, 0, keep - 1)
                pipe.pexpire(key, ttl_ms)
                await pipe.execute()

    async def in_catalogue(self, item_id: str) -> bool:
        """Whether an item event ever described ``item_id``."""
        with redis_errors("reading the catalogue"):
            return bool(await self.client.sismember(self.keys.catalogue, item_id))

    async def category_items(self, category: str) -> set[str]:
        with redis_errors(f"reading category {category!r}"):
            return set(await self.client.smembers(self.keys.category(category)))


def _served(row: str) -> tuple[int, frozenset[str]]:
    ts, items = orjson.loads(row)
    return int(ts), frozenset(items)


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
    who = parse_pid(pid)
    return {
        "profile_id": pid,
        "customer_id": who.customer_id,
        "anonymous_id": who.anonymous_id,
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
    with redis_errors("reading the catalogue"):
        _, items = await store.client.sscan(store.keys.catalogue, 0, count=max(n * 4, 100))
    return sorted(items)[:n]
