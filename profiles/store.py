"""Redis adapter for profiles: applies update plans (worker) and reads profiles and popularity (API).

Key names come from :mod:`core.keyspace`; redis-py's errors become the engine's (:mod:`core.errors`) through
:func:`core.redis.redis_errors`, so callers never see redis-py's exceptions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis import exceptions as rx

from core.clock import now_ms
from core.errors import StoreUnavailable
from core.keyspace import (
    TRENDING_ERA_HALF_LIVES,
    Keys,
    ProfileId,
    anonymous_pid,
    customer_pid,
    marker_digest,
    parse_pid,
    trending_era,
)
from core.redis import redis_errors
from core.settings import Settings
from core.tenants import DEFAULT_TENANT
from profiles.layout import (
    AFF_LANDMARK,
    FIRST_PURCHASE,
    FIRST_SEEN,
    LAST_PURCHASE,
    LAST_SEEN,
    MERGED_VISITORS,
    ORDERS,
    REVENUE,
    ProfileHash,
    event_counts,
    history,
    recent_items,
    split,
)
from profiles.layout import bought as bought_items
from profiles.script import (
    SOURCE,
    LoginAnswer,
    Lookups,
    Origin,
    ScriptParams,
    build_call,
    build_globals,
    build_handoffs,
    home_tag,
    login_name,
    needed_lookups,
    target_of,
)
from profiles.updates import Plan, decayed_now

Status = int | str  # APPLIED, DUPLICATE, ERASED, or the reason a plan was refused
APPLIED, DUPLICATE, ERASED = 1, 0, 2

_DAY_MS = 86_400_000.0
_HOUR_MS = 3_600_000.0
MAX_STALE_ROUNDS = 50  # reads that went stale before the script ran (a login meanwhile) before giving up
MAX_TENANT_VIEWS = 4096  # stores kept per tenant (:meth:`ProfileStore.for_tenant`)


def _status(reply: object) -> Status:
    if isinstance(reply, int):
        return reply
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _is_login(plan: Plan) -> bool:
    """A customer's event naming the visitor they were (pure)."""
    return plan.login is not None and plan.profile is not None and plan.profile.kind == "c"


def _run_starts(plans: Sequence[Plan]) -> list[int]:
    """Where a chunk is cut into runs on a Redis Cluster (pure): the plans of a run are applied together, after the
    run before. A run starts at a login (its hand-off needs the visitor's events before it applied) and at an
    interaction whose item's category an earlier plan of the run sets (read once that plan applied)."""
    starts = [0]
    described: set[str] = set()
    for i, plan in enumerate(plans):
        cut = _is_login(plan) or any(x.item_id in described for x in plan.interactions if not x.category)
        if cut and i > starts[-1]:
            starts.append(i)
            described = set()
        if plan.catalogue is not None:
            described.add(plan.catalogue.item_id)
    return starts


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


LOG_ERASE_CHUNK = 10_000  # training-log entries read per round trip by an erasure


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure deleted: the profile ids (the customer first), the training-log entries."""

    pids: list[str]
    log_entries: int


class ProfileStore:
    """Profiles, catalogue and popularity of one tenant in Redis (key layout: :mod:`core.keyspace`). A store acts
    for the tenant ``default``; :meth:`for_tenant` gives the same store (client, scripts, settings) for another."""

    def __init__(self, client: aioredis.Redis, settings: Settings, tenant: str = DEFAULT_TENANT) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix, tenant)
        self._tenants: dict[str, ProfileStore] = {tenant: self}
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
            dedupe_max=settings.dedupe_max_per_profile,
            anonymous_ttl_ms=int(settings.anonymous_ttl_days * _DAY_MS),
            trending_max=settings.trending_items_max,
            shared_period_ms=int(settings.shared_period_hours * _HOUR_MS),
            shared_per_visitor=settings.shared_items_per_visitor,
            shared_per_client=settings.shared_items_per_client,
            catalogue_only=not settings.serve_uncatalogued,
            dedupe_window_ms=int(settings.dedupe_window_s * 1000),
        )
        self.cluster = settings.redis_cluster
        self._apply = client.register_script(SOURCE)
        self._sha: str | None = None  # Redis Cluster: the script, loaded on every primary
        self._forget = client.register_script(resources.files("profiles").joinpath("forget.lua").read_text())

    @property
    def tenant(self) -> str:
        return self.keys.tenant

    def for_tenant(self, tenant: str) -> ProfileStore:
        """This store acting for ``tenant`` (its keys; the client, the loaded scripts and the settings shared). Kept
        per tenant, at most :data:`MAX_TENANT_VIEWS` (callers name configured tenants only); a bad name:
        :class:`core.tenants.TenantError`."""
        found = self._tenants.get(tenant)
        if found is None:
            found = copy.copy(self)
            found.keys = Keys(self.settings.key_prefix, tenant)
            if len(self._tenants) >= MAX_TENANT_VIEWS:
                self._tenants.clear()
            self._tenants[tenant] = found
        return found

    async def ping(self) -> bool:
        with redis_errors(f"Redis unreachable at {self.settings.redis_url}"):
            return bool(await self.client.ping())

    async def apply_plans(self, plans: Sequence[Plan], origins: Sequence[Origin | None] | None = None) -> list[Status]:
        """Apply plans, each atomically with its de-duplication marker. Returns per plan :data:`APPLIED`,
        :data:`DUPLICATE` (event id seen before), :data:`ERASED` (the profile was erased after the event) or the
        reason it was refused (a string: nothing written). Raises :class:`StoreUnavailable` (retry) or
        :class:`StoreRefused` (Redis refused the command).

        ``origins`` (the Kafka message of each plan, in offset order per partition, with when it was produced) make
        a redelivery exact whatever its age: on one node a message produced before ``ECRM_DEDUPE_WINDOW_S`` at or
        below the highest offset applied of its partition is a duplicate (the de-duplication set remembers the
        events of the window); on a Redis Cluster they make the global effects exact across a crash between the
        profile calls and the global call: see :meth:`_apply_on_cluster`."""
        if self.cluster:
            return await self._apply_on_cluster(plans, origins)
        statuses: list[Status] = []
        rest = list(plans)
        rest_origins = list(origins) if origins is not None else None
        for _ in range(MAX_STALE_ROUNDS):
            if not rest:
                return statuses
            found = await self._lookups(rest)
            keys, args = build_call(rest, found, self.keys, self._params, origins=rest_origins)
            with redis_errors(f"applying {len(rest)} updates"):
                done = [_status(x) for x in await self._apply(keys=keys, args=args)]
            statuses += done
            rest = rest[len(done) :]
            rest_origins = rest_origins[len(done) :] if rest_origins is not None else None
        if rest:
            raise StoreUnavailable(f"{len(rest)} updates kept meeting concurrent logins; retrying", "contention")
        return statuses

    async def _lookups(self, plans: Sequence[Plan]) -> Lookups:
        """What decides the keys of ``plans``: the customers visitors logged in as, the items' categories (on a
        cluster also the visitors' erasures and markers, in slots the profile calls cannot read)."""
        visitors, items = needed_lookups(plans, self.cluster)
        if not visitors and not items:
            return Lookups()
        own = [p for p in plans if p.profile is not None and p.profile.kind == "a"] if self.cluster else []
        markers = [self.keys.seen(p.profile, p.source, p.event_id) for p in own if p.profile is not None]
        with redis_errors("reading visitors and catalogue before an update"):
            async with self.client.pipeline(transaction=False) as pipe:
                for visitor in visitors:
                    pipe.hget(self.keys.alias(visitor), "c")
                for item in items:
                    pipe.hget(self.keys.item(item), "category")
                if self.cluster:
                    for visitor in visitors:
                        pipe.get(self.keys.erased(ProfileId("a", visitor)))
                    for marker in markers:
                        pipe.exists(marker)
                replies = await pipe.execute()
        n, m = len(visitors), len(items)
        if not self.cluster:
            return Lookups(dict(zip(visitors, replies[:n], strict=True)), dict(zip(items, replies[n:], strict=True)))
        erased = replies[n + m : n + m + n]
        return Lookups(
            aliases=dict(zip(visitors, replies[:n], strict=True)),
            categories=dict(zip(items, replies[n : n + m], strict=True)),
            erased={v: int(at) for v, at in zip(visitors, erased, strict=True) if at},
            markers=frozenset(k for k, hit in zip(markers, replies[n + m + n :], strict=True) if hit),
        )

    # ----- Redis Cluster -----

    async def _apply_on_cluster(self, plans: Sequence[Plan], origins: Sequence[Origin | None] | None) -> list[Status]:
        """The profile part of every plan in its own slot (one call per slot, pipelined), then the global part of
        the plans applied in one call on the global slot.

        A profile call keeps each applied plan's global record in its marker with the plan's origin; when the same
        message comes again (a redelivery after a crash), the duplicate gives its record back, and the global call
        applies a record only when its offset is above the highest one applied of its partition: exactly once,
        whether the crash came before or after the global call. A producer's re-send of an event (a new offset) is
        a plain duplicate. Plans without an origin (not from Kafka) are exact only without a crash in between.
        A login first hands the visitor's profile over in the visitor's slot (:meth:`_handoffs`)."""
        origins = list(origins) if origins is not None else [None] * len(plans)
        statuses: list[Status | None] = [None] * len(plans)
        records = [""] * len(plans)
        logins: dict[str, LoginAnswer] = {}
        elsewhere: set[int] = set()  # visitors' events applied in the customer they logged in as
        starts = _run_starts(plans)
        for start, end in zip(starts, [*starts[1:], len(plans)], strict=True):
            logins.update(await self._handoffs(plans[start:end]))
            await self._profile_part(plans, list(range(start, end)), origins, logins, statuses, records, elsewhere)
        applied = [rec for rec in records if rec]
        if applied:
            await self._script_calls([build_globals(applied, self.keys, self._params)], "applying global effects")
        await self._finish_chunk(plans, statuses, logins, [i for i in sorted(elsewhere) if statuses[i] == APPLIED])
        return [s for s in statuses if s is not None]

    async def _profile_part(
        self,
        plans: Sequence[Plan],
        pending: list[int],
        origins: Sequence[Origin | None],
        logins: dict[str, LoginAnswer],
        statuses: list[Status | None],
        records: list[str],
        elsewhere: set[int],
    ) -> None:
        """The profile calls of the plans ``pending`` (one per slot, pipelined; again for those after a stale read),
        their statuses and global records written at their index; ``elsewhere`` gets the visitors' plans sent to the
        customer they logged in as."""
        for _ in range(MAX_STALE_ROUNDS):
            if not pending:
                return
            found = await self._lookups([plans[i] for i in pending])
            found = Lookups(found.aliases, found.categories, found.erased, found.markers, logins)
            for i in pending:
                own = plans[i].profile
                if own is not None and own.kind == "a" and target_of(plans[i], found) != own:
                    elsewhere.add(i)
            groups: dict[str, list[int]] = {}
            for i in pending:
                groups.setdefault(home_tag(plans[i], found), []).append(i)
            calls = [
                build_call([plans[i] for i in idx], found, self.keys, self._params, True, [origins[i] for i in idx])
                for idx in groups.values()
            ]
            replies = await self._script_calls(calls, f"applying {len(pending)} updates")
            pending = []
            for idx, (done, recs) in zip(groups.values(), replies, strict=True):
                for i, status, rec in zip(idx, done, recs, strict=False):
                    statuses[i], records[i] = _status(status), rec
                pending += idx[len(done) :]
            pending.sort()
        if pending:
            raise StoreUnavailable(f"{len(pending)} updates kept meeting concurrent logins; retrying", "contention")

    async def _handoffs(self, plans: Sequence[Plan]) -> dict[str, LoginAnswer]:
        """A login's first step, in the visitor's slot: link the visitor and hand their profile over."""
        groups: dict[str, list[Plan]] = {}
        for plan in plans:
            if plan.login is not None and _is_login(plan):
                groups.setdefault(ProfileId("a", plan.login).tag, []).append(plan)
        if not groups:
            return {}
        calls = [build_handoffs(group, self.keys, self._params) for group in groups.values()]
        replies = await self._script_calls(calls, "linking visitors who logged in")
        out: dict[str, LoginAnswer] = {}
        for group, answers in zip(groups.values(), replies, strict=True):
            for plan, (linked, previous, data) in zip(group, answers, strict=True):
                out[login_name(plan)] = LoginAnswer(int(linked) == 1, previous or "", data or "")
        return out

    async def _finish_chunk(
        self,
        plans: Sequence[Plan],
        statuses: Sequence[Status | None],
        logins: dict[str, LoginAnswer],
        elsewhere: Sequence[int] = (),
    ) -> None:
        """A chunk's last step on a Redis Cluster, once its global call ran. A login's last step: the link out of
        the previous customer's visitors, the hand-off deleted (kept when the login was refused: nothing took it).
        And a marker in the visitor's own slot
        for each of the visitor's events applied in a customer (``elsewhere``: their indexes): a re-send after a
        later login moved the visitor to another customer is known there (:meth:`_lookups`), as an event applied
        to the visitor before they logged in is."""
        done = [(p, logins[login_name(p)]) for p, s in zip(plans, statuses, strict=True)
                if login_name(p) in logins and s in (APPLIED, DUPLICATE, ERASED)]  # fmt: skip
        if not done and not elsewhere:
            return
        with redis_errors("finishing logins"):
            async with self.client.pipeline(transaction=False) as pipe:
                for i in elsewhere:
                    own = plans[i].profile
                    assert own is not None
                    pipe.set(
                        self.keys.seen(own, plans[i].source, plans[i].event_id),
                        "1",
                        nx=True,
                        px=self._params.dedupe_ttl_ms,
                    )
                for plan, answer in done:
                    assert plan.login is not None and plan.profile is not None
                    if answer.previous and answer.previous != plan.profile.ident:
                        pipe.srem(self.keys.visitors(answer.previous), plan.login)
                    pipe.hdel(self.keys.handoff(plan.login), login_name(plan))
                await pipe.execute()

    async def _script_calls(self, calls: Sequence[tuple[list[str], list[Any]]], what: str) -> list[Any]:
        """The apply script once per ``(KEYS, ARGV)``, pipelined (each call's keys in one slot)."""
        with redis_errors(what):
            try:
                if self._sha is None:
                    self._sha = str(await self.client.script_load(SOURCE))
                async with self.client.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)  # (.evalsha: refused)
                    return list(await pipe.execute())
            except rx.NoScriptError:
                self._sha = None  # a node restarted or failed over: load again on the retry
                raise

    # ----- erasure -----

    async def forget(self, customer_id: str, now: int | None = None) -> list[str]:
        """:meth:`erase`, returning the profile ids erased (the customer first)."""
        return (await self.erase(customer_id, now)).pids

    async def erase(self, customer_id: str, now: int | None = None) -> Erased:
        """Erase a customer and the visitors who logged in as them: profiles, login links, de-duplication markers.
        A tombstone per profile keeps their older events, replayed from Kafka, from coming back, and tells training
        and analytics to skip them; their training-log entries are deleted. Returns the profile ids erased (the
        customer first) and the training-log entries deleted."""
        now = now or now_ms()
        tombstone_ms = int(self.settings.erasure_tombstone_days * _DAY_MS)
        if self.cluster:
            pids = await self._forget_on_cluster(customer_id, now, tombstone_ms)
        else:
            pids = await self._forget_at_once(customer_id, now, tombstone_ms)
        await self._forget_markers(pids)
        with redis_errors(f"erasing the lists served to customer {customer_id!r}"):
            for pid in pids:  # one slot each
                await self.client.delete(self.keys.served(pid), self.keys.campaigns(pid))
        erased = [str(p) for p in pids]
        return Erased(erased, await self.forget_logged(erased))

    async def forget_logged(self, pids: list[str]) -> int:
        """Delete the training-log entries of ``pids`` (the stream read in chunks, theirs deleted; their events
        stopped applying with the tombstones, so none comes after). Returns the entries deleted."""
        wanted = set(pids)
        key = self.keys.interactions
        deleted = 0
        start = "-"
        while True:
            with redis_errors("erasing training-log entries"):
                rows = await self.client.xrange(key, min=start, count=LOG_ERASE_CHUNK)
                ids = [entry for entry, fields in rows if fields.get("p") in wanted]
                if ids:
                    deleted += int(await self.client.xdel(key, *ids))
            if len(rows) < LOG_ERASE_CHUNK:
                return deleted
            start = "(" + rows[-1][0]

    async def _forget_at_once(self, customer_id: str, now: int, tombstone_ms: int) -> list[ProfileId]:
        """One node: the customer, their visitors and the indexes in one script (forget.lua)."""
        for _ in range(MAX_STALE_ROUNDS):
            with redis_errors(f"reading the visitors of customer {customer_id!r}"):
                visitors = sorted(await self.client.smembers(self.keys.visitors(customer_id)))
            pids = [ProfileId("c", customer_id), *(ProfileId("a", v) for v in visitors)]
            keys = [self.keys.visitors(customer_id), self.keys.erasures, self.keys.profile_count]
            for pid in pids:  # forget.lua: 8 keys to delete (the profile's hash, an older engine's), the tombstone
                keys += [self.keys.profile(pid), *self.keys.legacy_profile_keys(pid), self.keys.erased(pid)]
            keys += [self.keys.alias(v) for v in visitors]
            args = [now, tombstone_ms, orjson.dumps([str(p) for p in pids]).decode(), orjson.dumps(visitors).decode()]
            with redis_errors(f"erasing customer {customer_id!r}"):
                done = int(await self._forget(keys=keys, args=args))
            if done >= 0:
                return pids
        raise StoreUnavailable(f"erasing customer {customer_id!r}: their visitors kept changing", "contention")

    async def _forget_on_cluster(self, customer_id: str, now: int, tombstone_ms: int) -> list[ProfileId]:
        """Redis Cluster: per slot, idempotent (run again after a failure, it finishes the job). Each profile's
        tombstone first (its events stop applying), then its keys (and a visitor's login link and hand-off), then
        the global indexes; the customer's visitors are read again until no login added one meanwhile."""
        done: list[ProfileId] = []
        for _ in range(MAX_STALE_ROUNDS):
            with redis_errors(f"reading the visitors of customer {customer_id!r}"):
                visitors = sorted(await self.client.smembers(self.keys.visitors(customer_id)))
            pids = [ProfileId("c", customer_id), *(ProfileId("a", v) for v in visitors)]
            todo = [pid for pid in pids if pid not in done]
            if not todo:
                with redis_errors(f"erasing customer {customer_id!r}"):
                    await self.client.delete(self.keys.visitors(customer_id))
                return pids
            with redis_errors(f"erasing customer {customer_id!r}"):
                hash_replies: list[int] = []  # where in the replies each profile hash's DEL answers
                async with self.client.pipeline(transaction=False) as pipe:
                    for pid in todo:
                        pipe.set(self.keys.erased(pid), now, px=tombstone_ms)
                        hash_replies.append(len(pipe))
                        pipe.delete(self.keys.profile(pid))
                        for key in self.keys.legacy_profile_keys(pid):
                            pipe.delete(key)
                        if pid.kind == "a":
                            pipe.delete(self.keys.alias(pid.ident))
                            pipe.delete(self.keys.handoff(pid.ident))
                    replies = await pipe.execute()
                hashes = sum(int(replies[i]) for i in hash_replies)  # the hashes this round deleted (idempotent)
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.zadd(self.keys.erasures, {str(pid): now for pid in todo})
                    if hashes:
                        pipe.decrby(self.keys.profile_count, hashes)
                    await pipe.execute()
            done += todo
        raise StoreUnavailable(f"erasing customer {customer_id!r}: their visitors kept changing", "contention")

    async def _forget_markers(self, pids: list[ProfileId]) -> None:
        """The de-duplication markers of erased profiles (encoded ids hold no glob characters)."""
        for pid in pids:
            with redis_errors(f"erasing the markers of {str(pid)!r}"):
                await self.client.delete(self.keys.seen_set(pid))
                batch: list[str] = []
                async for key in self.client.scan_iter(match=f"{self.keys.profile(pid)}:seen:*", count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        await self.client.delete(*batch)
                        batch = []
                if batch:
                    await self.client.delete(*batch)

    # ----- reads -----

    async def remembers(self, pid: str | ProfileId, source: str, event_id: str) -> bool:
        """Whether an event of ``pid`` from ``source`` is remembered as applied (its de-duplication marker)."""
        with redis_errors("reading a de-duplication marker"):
            if self.cluster:
                return bool(await self.client.exists(self.keys.seen(pid, source, event_id)))
            return await self.client.zscore(self.keys.seen_set(pid), marker_digest(source, event_id)) is not None

    async def profile(self, pid: str, now: int | None = None) -> dict[str, Any] | None:
        """The whole live profile of ``pid``, or None when it has never been seen (one HGETALL)."""
        with redis_errors(f"reading profile {pid!r}"):
            h = await self.client.hgetall(self.keys.profile(pid))
        if not h:
            return None
        return build_profile(pid, split(h), self.settings.recent_items_max, now or now_ms(), self._aff_half_life_ms)

    async def bought(self, pid: str) -> dict[str, int]:
        """Item -> last purchase time (ms) of the items a profile bought."""
        with redis_errors(f"reading purchases of {pid!r}"):
            raw = await self.client.hgetall(self.keys.profile(pid))
        return bought_items(split(raw).items)

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

    async def not_in_catalogue(self, items: list[str]) -> set[str]:
        """Items the catalogue does not hold, once it holds any (an empty catalogue: none). One round trip."""
        if not items:
            return set()
        with redis_errors("reading the catalogue"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.scard(self.keys.catalogue)
                pipe.smismember(self.keys.catalogue, items)
                size, flags = await pipe.execute()
        if not size:
            return set()
        return {item for item, flag in zip(items, flags, strict=True) if not flag}

    async def request_context(self, pid: str, whole_stock: bool) -> tuple[RequestContext, frozenset[str] | int]:
        """Everything a recommendation request needs of a profile and the out-of-stock set, in one round trip:
        the set's items (``whole_stock``) or only their count."""
        with redis_errors(f"reading profile {pid!r}"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.profile(pid))
                if whole_stock:
                    pipe.smembers(self.keys.out_of_stock)
                else:
                    pipe.scard(self.keys.out_of_stock)
                h, stock = await pipe.execute()
        found = split(h)
        context = RequestContext(
            history=history(found.items),
            bought=bought_items(found.items),
            categories=[cat for cat, _ in sorted(found.affinity.items(), key=lambda kv: -float(kv[1]))[:3]],
        )
        return context, stock if isinstance(stock, int) else frozenset(stock)

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


def build_profile(pid: str, found: ProfileHash, recent_max: int, now: int, aff_half_life_ms: float) -> dict[str, Any]:
    """Shape the hash of one profile (split by kind of field) into its JSON form (pure)."""
    h, cart, aff = found.scalars, found.cart, found.affinity
    recent = recent_items(found.items, recent_max)
    counts = event_counts(h)
    landmark = float(h.get(AFF_LANDMARK, now))
    affinity = {
        cat: round(decayed_now(float(v), landmark, now, aff_half_life_ms), 6)
        for cat, v in sorted(aff.items(), key=lambda kv: -float(kv[1]))
    }
    orders = int(h.get(ORDERS, 0))
    revenue = round(float(h.get(REVENUE, 0.0)), 2)
    last_purchase = h.get(LAST_PURCHASE)
    who = parse_pid(pid)
    return {
        "profile_id": pid,
        "customer_id": who.customer_id,
        "anonymous_id": who.anonymous_id,
        "first_seen": _iso(h.get(FIRST_SEEN)),
        "last_seen": _iso(h.get(LAST_SEEN)),
        "event_counts": counts,
        "events_total": sum(counts.values()),
        "sessions": found.sessions,
        "rfm": {
            "recency_days": round((now - int(last_purchase)) / _DAY_MS, 3) if last_purchase else None,
            "frequency": orders,
            "monetary": revenue,
        },
        "orders": orders,
        "revenue": revenue,
        "first_purchase": _iso(h.get(FIRST_PURCHASE)),
        "last_purchase": _iso(last_purchase),
        "recent_items": [{"item_id": item, "at": _iso(int(ts))} for item, ts in recent],
        "cart": [{"item_id": item, "quantity": int(q)} for item, q in sorted(cart.items())],
        "category_affinity": affinity,
        "merged_visitors": int(h.get(MERGED_VISITORS, 0)),
    }


async def catalogue_sample(store: ProfileStore, n: int) -> list[str]:
    """Up to ``n`` catalogue item ids (sorted, so the answer is stable): the last resort of every fallback."""
    with redis_errors("reading the catalogue"):
        _, items = await store.client.sscan(store.keys.catalogue, 0, count=max(n * 4, 100))
    return sorted(items)[:n]
