"""Serving recommendations: the documented fallback chain (see docs/recommender.md).

    personal (model, fold-in of the whole current history)
      -> session / item-based (the model from the cart, the item, or the visitor's session)
      -> trending in the customer's (or the item's) categories
      -> trending (time-decayed popularity) -> all-time popular -> catalogue

When the retraining gate found that a simple baseline beats the engine on the newest window, that baseline takes
the personal step's place (``strategy: "baseline:<name>"``: popularity and trending from Redis, buy-again and
recently viewed from the profile's history) until a version beats it.

Each step only fills what the steps before it left empty; ``strategy`` names the first step that served items,
each item's ``reason`` says why it is there. Bought items (within the re-buy window), items out of stock and
items already shown are excluded throughout. The list is never empty while the catalogue is not.

When Redis cannot serve (down, a timeout ...), the whole chain is replaced by the replica's in-memory copy of
the popular items (:mod:`api.degraded`), with ``strategy: "degraded"``: a recommendation request never fails
because of Redis. All the Redis reads of a request (its campaign and segment, the profile, the popularity steps,
the rules' catalogue reads) share one budget, ``ECRM_REQUEST_DEADLINE_MS``: past it the request answers degraded
at once. After a failure the process's breaker (:mod:`api.breaker`) sends requests straight to the copy for
``ECRM_REDIS_RETRY_S``, then lets one request try Redis again, so a hung Redis never holds a page for seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from cachetools import TTLCache

from api.breaker import BreakerOpen, RedisBreaker, within
from api.degraded import PopularCopy, pick
from api.exposures import ExposureWriter
from api.reads import RequestReads, Stock
from api.serving import ModelHolder, Served
from api.tenancy import request_tenant
from core import metrics
from core.errors import ServiceUnavailable, StoreUnavailable
from core.keyspace import anonymous_pid, customer_pid
from core.settings import Settings
from core.tenant_files import TenantFiles
from merchandising.campaign_source import CampaignsSource
from merchandising.campaigns import Campaign, Variant, tagged_id
from merchandising.engine import Candidate, Context, apply_rules
from merchandising.engine import excluded_purchases as purchases_in_window
from merchandising.rules import EMPTY, ItemInfo, Rule, RuleSet
from merchandising.source import RulesSource
from profiles.campaigns import CampaignStore, Exposure
from profiles.store import CatalogueEntry, ProfileStore, ScoredItem, catalogue_sample
from recommender.base import Recommendation

log = logging.getLogger(__name__)
POPULARITY_VERSION = "popularity"
DEGRADED = "degraded"
CANDIDATE_POOL = 300
ASSIGNMENT_CACHE_SIZE = 100_000  # campaign variants of profiles a replica remembers ...
ASSIGNMENT_CACHE_S = 60.0  # ... for this long (a visitor's variant handed to a customer at login shows within it)
_DAY_MS = 86_400_000
BASELINE_PREFIX = "baseline:"
PERSONAL_BASELINES = frozenset({"buy-again", "recently-viewed"})  # lists of the customer's own items


@dataclass(frozen=True, slots=True)
class Recommended:
    item_id: str
    score: float
    reason: str
    extra: dict[str, object] | None = None  # explain=true, attributes=true: added to the item in the response


@dataclass(frozen=True, slots=True)
class RecList:
    recommendation_id: str
    strategy: str
    model_version: str
    items: list[Recommended]
    rules_applied: dict[str, int] = field(default_factory=dict)  # rule -> items it touched (filtered or moved)
    campaign: str | None = None  # the campaign the list was served under, and the profile's variant in it
    variant: str | None = None
    note: str | None = None  # the request named something unknown (an item, a category): what was done instead


@dataclass
class Chain:
    """Accumulates items from successive strategies (pure)."""

    n: int
    excluded: set[str]
    allowed: set[str] | None = None
    items: list[Recommended] = field(default_factory=list)
    strategy: str | None = None
    explained: dict[str, list[dict[str, float | str | None]]] = field(default_factory=dict)  # explain=true: ranker

    @property
    def full(self) -> bool:
        return len(self.items) >= self.n

    def add(self, strategy: str, candidates: Iterable[tuple[str, float, str]]) -> None:
        before = len(self.items)
        taken = {r.item_id for r in self.items}
        for item_id, score, reason in candidates:
            if self.full:
                break
            if item_id in taken or item_id in self.excluded:
                continue
            if self.allowed is not None and item_id not in self.allowed:
                continue
            self.items.append(Recommended(item_id, round(float(score), 6), reason))
            taken.add(item_id)
        if self.strategy is None and len(self.items) > before:
            self.strategy = strategy


def baseline_items(
    baseline: str,
    history: Iterable[tuple[str, float, int]],
    popular: Iterable[ScoredItem],
    trending: Iterable[ScoredItem],
) -> list[tuple[str, float, str]]:
    """A baseline's list (pure): ``popular`` / ``trending`` as read from Redis (items with ``item_id`` and
    ``score``); the history's items by summed weight then time (``buy-again``) or by time (``recently-viewed``)."""
    if baseline == "popularity":
        return [(p.item_id, p.score, "popular") for p in popular]
    if baseline == "trending":
        return [(t.item_id, t.score, "trending") for t in trending]
    entries = list(history)
    if baseline == "buy-again":
        ranked = sorted(entries, key=lambda e: (-e[1], -e[2], e[0]))
        return [(item, weight, "buy again") for item, weight, _ in ranked]
    if baseline == "recently-viewed":
        ranked = sorted(entries, key=lambda e: (-e[2], e[0]))
        return [(item, 1.0 / (k + 1), "you viewed this recently") for k, (item, _, _) in enumerate(ranked)]
    return []


def excluded_purchases(bought: dict[str, int], now_ms: int, rebuy_window_days: float) -> set[str]:
    """Bought items stay out; with a re-buy window they come back once it has passed (pure)."""
    return purchases_in_window(bought, now_ms, rebuy_window_days)


def pool_size(n: int) -> int:
    """Candidates gathered when rules are in force, so filters and re-ranking still leave ``n`` items."""
    return min(max(3 * n, n + 30), n + CANDIDATE_POOL)


@dataclass(frozen=True, slots=True)
class Ask:
    """How one request is served: the placement, the rules in force for it, what to add to each item."""

    placement: str
    n: int
    now_ms: int
    rules: RuleSet = EMPTY
    active: tuple[Rule, ...] = ()
    explain: bool = False
    attributes: bool = False
    remember: bool = True  # remember the list for ``rotate`` and record a campaign exposure (a preview does not)
    campaign: Campaign | None = None
    variant: Variant | None = None

    @property
    def mode(self) -> str:
        """What serves the list: ``engine`` (the whole chain), ``popularity`` or ``trending`` (a variant's
        strategy), ``holdout`` (nothing)."""
        if self.variant is None:
            return "engine"
        return "holdout" if self.variant.holdout else self.variant.strategy

    @property
    def pool(self) -> int:
        return pool_size(self.n) if self.active else self.n

    @property
    def rebuy(self) -> bool:
        return any(r.spec.rebuy is not None for r in self.active)


def _info(entry: CatalogueEntry) -> ItemInfo:
    return ItemInfo(entry.category, entry.price, entry.attributes)


def card_fields(entry: CatalogueEntry | None) -> dict[str, object]:
    """What ``attributes=true`` adds to an item: what a page needs to draw its card (None: not in the catalogue)."""
    if entry is None:
        return {"attributes": {}, "image_url": None, "title": None, "price": None, "category": None}
    return {
        "attributes": entry.attributes,
        "image_url": entry.image_url,
        "title": entry.title,
        "price": entry.price,
        "category": entry.category,
    }


def personal_reason(rec: Recommendation, bought: dict[str, int]) -> str:
    if rec.reason_item is None:
        return "recommended for you"
    verb = "bought" if rec.reason_item in bought else "viewed"
    return f"because you {verb} {rec.reason_item}"


SegmentOf = Callable[[str, int], Awaitable[str | None]]


class RecommendationService:
    def __init__(
        self,
        store: ProfileStore,
        holder: ModelHolder,
        settings: Settings,
        popular: PopularCopy | None = None,
        rules: RulesSource | TenantFiles[RulesSource] | None = None,
        segment_of: SegmentOf | None = None,
        campaigns: CampaignsSource | TenantFiles[CampaignsSource] | None = None,
        breaker: RedisBreaker | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self.settings = settings
        self.popular = popular or PopularCopy(store, settings)
        # each tenant's rules and campaigns (core/tenant_files.py): those of the request's tenant serve it
        self.rules = TenantFiles.of(rules or RulesSource(None))
        self.segment_of = segment_of
        self.campaigns = TenantFiles.of(campaigns or CampaignsSource(None))
        self.reads = RequestReads(store)
        self.campaign_store = CampaignStore(store.client, store.keys, int(settings.profile_ttl_days * _DAY_MS))
        self.exposures = ExposureWriter(self.campaign_store)
        # (campaign, profile) -> variant: a recorded variant never changes, so a replica need not read it again
        self._variants: TTLCache[tuple[str, str], str] = TTLCache(maxsize=ASSIGNMENT_CACHE_SIZE, ttl=ASSIGNMENT_CACHE_S)
        # catalogue entries the rules look at, fresh for a few seconds (stock is always read fresh)
        self._catalogue: TTLCache[str, CatalogueEntry | None] = TTLCache(
            maxsize=settings.rules_catalogue_cache_size, ttl=settings.rules_catalogue_cache_s
        )
        self.breaker = breaker or RedisBreaker(settings.redis_retry_s)
        self.deadline_s = settings.request_deadline_ms / 1000
        self._writes: set[asyncio.Task[None]] = set()  # what was served, written after the answer left

    def _version(self, served: Served | None) -> str:
        return served.version if served is not None else POPULARITY_VERSION

    async def ask(
        self,
        placement: str,
        n: int,
        pid: str | None = None,
        explain: bool = False,
        attributes: bool = False,
        remember: bool = True,
        *,
        campaign: str | None = None,
    ) -> Ask:
        """The rules in force for one request, and the campaign and variant of the profile (the files' mtimes are
        checked at most every few seconds)."""
        tenant = request_tenant()
        rules = self.rules.get(tenant).current()
        campaigns = self.campaigns.get(tenant).current()
        now = int(time.time() * 1000)
        running = campaigns.for_placement(placement, now) if pid is not None else ()
        if campaign is not None:  # an export for one campaign
            running = tuple(c for c in running if c.name == campaign)
        segment = None
        wants_segment = rules.needs_segment(placement) or any(c.segment is not None for c in running)
        if pid is not None and self.segment_of is not None and wants_segment:
            segment = await self.segment_of(pid, now)
        chosen, variant = await self._assign(running, pid, segment) if running else (None, None)
        active = rules.active(placement, segment, now)
        hidden = campaigns.rule_names(now) - (variant.rules if variant is not None else frozenset())
        if hidden:  # rules a variant names apply to that variant's lists only
            active = tuple(r for r in active if r.name not in hidden)
        return Ask(placement, n, now, rules, active, explain, attributes, remember, chosen, variant)

    async def _assign(
        self, running: tuple[Campaign, ...], pid: str | None, segment: str | None
    ) -> tuple[Campaign | None, Variant | None]:
        """The first running campaign whose audience holds the profile, and its variant: the one recorded for
        the profile (its first exposure, or a visitor's handed over at login), else the hash's."""
        if pid is None:
            return None, None
        for campaign in running:
            if campaign.segment is not None and (segment is None or segment.casefold() != campaign.segment.casefold()):
                continue
            known = self._variants.get((campaign.name, pid))
            if known is None:
                stored = await self.campaign_store.assignment(pid, campaign.name)
                known = stored.variant if stored is not None else campaign.assign(pid).name
                self._variants[(campaign.name, pid)] = known
            return campaign, campaign.variant(known) or campaign.assign(pid)
        return None, None

    async def _or_degraded(
        self, serve: Callable[[], Awaitable[RecList]], n: int, excluded: set[str], category: str | None = None
    ) -> RecList:
        """``serve()`` within the request deadline, or the in-memory popular items when Redis cannot serve it in
        time or the breaker says not to try (strategy ``degraded``)."""
        try:
            return await within(self.breaker, self.deadline_s, serve)
        except BreakerOpen:
            pass
        except StoreUnavailable as exc:
            metrics.DEPENDENCY_ERRORS.labels("redis").inc()  # ops: Redis errors seen by the API
            log.warning("recommendations degraded to the in-memory popular items: %s", exc)
        chain = Chain(n, excluded)
        chain.add(DEGRADED, pick(self.popular.items, excluded, category))
        return RecList(uuid.uuid4().hex, DEGRADED, POPULARITY_VERSION, chain.items)

    async def for_profile(
        self,
        pid: str,
        n: int,
        category: str | None = None,
        step: str = "personal",
        placement: str | None = None,
        campaign: str | None = None,
        **flags: bool,
    ) -> RecList:
        """A customer's (``step="personal"``) or a visitor session's (``step="session"``) recommendations; the
        business rules of ``placement`` (default: the step; ``email`` for a campaign's list) apply, and the first
        running campaign covering it (``campaign``: that one only)."""

        async def serve() -> RecList:
            ask = await self._ask_or_none(placement or step, n, pid, flags, campaign)
            return await self._for_profile(pid, ask, category, step)

        return await self._or_degraded(serve, n, set(), category)

    async def for_visitor(self, anonymous_id: str, n: int, follow_login: bool = True, **flags: bool) -> RecList:
        """A visitor's session recommendations; their customer's once they logged in when ``follow_login``."""

        async def serve() -> RecList:
            pid = await self.store.resolve_visitor(anonymous_id) if follow_login else anonymous_pid(anonymous_id)
            return await self._for_profile(pid, await self._ask_or_none("session", n, pid, flags), None, "session")

        return await self._or_degraded(serve, n, set())

    async def _ask_or_none(
        self, placement: str, n: int, pid: str | None, flags: dict[str, bool], campaign: str | None = None
    ) -> Ask:
        """The request's rules; without Redis (a segment condition or a campaign reads it) the rules that need no
        segment, and no campaign."""
        explain, attributes, remember = (flags.get(k, d) for k, d in (("explain", False), ("attributes", False),
                                                                       ("remember", True)))  # fmt: skip
        try:
            return await self.ask(placement, n, pid, explain, attributes, remember, campaign=campaign)
        except StoreUnavailable:
            return await self.ask(placement, n, None, explain, attributes, remember)

    async def _for_profile(self, pid: str, ask: Ask, category: str | None, step: str) -> RecList:
        served = self.holder.served
        if ask.mode == "holdout":
            return await self._finish(ask, Chain(ask.n, set()), self._version(served), pid)
        ctx, stock = await self.reads.profile(pid)
        bought, history = ctx.bought, ctx.history
        allowed = await self.store.category_items(category) if category else None
        rebuy = ask.rebuy or self.settings.rebuy_window_days > 0
        cats = await self.store.item_categories(list(bought)) if ask.rebuy and bought else None
        excluded = purchases_in_window(bought, ask.now_ms, self.settings.rebuy_window_days, ask.active, cats)
        chain = Chain(ask.pool, excluded, allowed)
        note = f"no item has the category {category!r}" if allowed is not None and not allowed else None
        baseline = self.holder.baseline if ask.mode == "engine" else None
        if baseline is not None:  # the gate found the simple list better than the engine on the newest window
            if baseline not in PERSONAL_BASELINES:  # as the engine: what they already saw is not news
                chain.excluded |= {item for item, _, _ in history if item not in bought}
            chain.add(BASELINE_PREFIX + baseline, await self._baseline_items(baseline, history))
        elif served is not None and ask.mode == "engine" and served.model.knows_any(item for item, _, _ in history):
            mask = served.mask(f"cat:{category}", allowed) if allowed is not None else None
            if rebuy:  # bought items past their window may come back: the history alone does not exclude them
                seen = chain.excluded | {item for item, _, _ in history if item not in bought}
                recs = served.model.recommend(history, ask.pool + 10, exclude=seen, allowed=mask, exclude_history=False)
            else:
                recs = served.model.recommend(history, ask.pool + 10, exclude=chain.excluded, allowed=mask)
            chain.add(step, ((r.item_id, r.score, personal_reason(r, bought)) for r in recs))
            if ask.explain:  # the ranking stage's top features of each item it ordered
                chain.explained = served.model.explain(
                    history, [r.item_id for r in chain.items], exclude_history=not rebuy
                )
        # what they already saw is not news in any step (bought items come back after their re-buy window)
        chain.excluded |= {item for item, _, _ in history if item not in bought}
        categories = [category] if category else ctx.categories
        await self._fill(chain, categories, ask.mode, stock)
        return await self._finish(ask, chain, self._version(served), pid, note=note)

    async def _baseline_items(
        self, baseline: str, history: list[tuple[str, float, int]]
    ) -> list[tuple[str, float, str]]:
        """The candidates of the baseline the gate serves: the shop's popular or trending items, or the customer's
        own items by frequency then recency (``buy-again``) or by recency (``recently-viewed``)."""
        return baseline_items(
            baseline,
            history,
            await self.store.popular(CANDIDATE_POOL) if baseline == "popularity" else [],
            await self.store.trending(CANDIDATE_POOL) if baseline == "trending" else [],
        )

    async def similar(self, item_id: str, n: int, **flags: bool) -> RecList:
        """Cross-sell on a product page: customers who viewed this also viewed ..."""

        async def serve() -> RecList:
            return await self._similar(item_id, await self._ask_or_none("similar", n, None, flags))

        return await self._or_degraded(serve, n, {item_id})

    async def _similar(self, item_id: str, ask: Ask) -> RecList:
        served = self.holder.served
        chain = Chain(ask.pool, {item_id})
        modelled = served is not None and served.model.knows_any([item_id])
        if served is not None and modelled:
            recs = served.model.similar_items(item_id, ask.pool + 10)
            chain.add("item-based", ((r.item_id, r.score, f"customers who viewed {item_id} also viewed") for r in recs))
        categories = list((await self.store.item_categories([item_id])).values())
        note = None
        if not modelled and not categories and not await self.store.in_catalogue(item_id):
            note = f"item {item_id!r} is neither in the catalogue nor known to the model: popular items instead"
        await self._fill(chain, categories)
        return await self._finish(ask, chain, self._version(served), None, note=note)

    async def cart(self, item_ids: list[str], customer_id: str | None, n: int, **flags: bool) -> RecList:
        """Complements for a cart (up-selling and cross-selling at checkout)."""
        pid = customer_pid(customer_id) if customer_id else None

        async def serve() -> RecList:
            return await self._cart(item_ids, pid, await self._ask_or_none("cart", n, pid, flags))

        return await self._or_degraded(serve, n, set(item_ids))

    async def _cart(self, item_ids: list[str], pid: str | None, ask: Ask) -> RecList:
        served = self.holder.served
        if ask.mode == "holdout":
            return await self._finish(ask, Chain(ask.n, set()), self._version(served), pid)
        bought = await self.store.bought(pid) if pid else {}
        cats = await self.store.item_categories(list(bought)) if ask.rebuy and bought else None
        in_window = purchases_in_window(bought, ask.now_ms, self.settings.rebuy_window_days, ask.active, cats)
        chain = Chain(ask.pool, set(item_ids) | in_window)
        if served is not None and ask.mode == "engine" and served.model.knows_any(item_ids):
            recs = served.model.cart_items(item_ids, ask.pool + 10 + len(chain.excluded))
            chain.add(
                "item-based",
                ((r.item_id, r.score, f"goes with {r.reason_item or 'your cart'}") for r in recs),
            )
        categories = sorted(set((await self.store.item_categories(item_ids)).values()))
        await self._fill(chain, categories, ask.mode)
        return await self._finish(ask, chain, self._version(served), pid, cart=item_ids)

    async def _finish(
        self,
        ask: Ask,
        chain: Chain,
        version: str,
        pid: str | None,
        cart: list[str] | None = None,
        note: str | None = None,
    ) -> RecList:
        """The rules in force applied to the chain's candidates; what was served remembered for ``rotate``; the
        exposure recorded for a campaign's list."""
        strategy = "holdout" if ask.mode == "holdout" else chain.strategy or "empty"
        applied: dict[str, int] = {}
        if ask.mode == "holdout":  # an empty list: the shop shows its default content
            items: list[Recommended] = []
        elif not ask.active and not ask.explain and not ask.attributes:
            items = chain.items[: ask.n]
        else:
            items = await self._ruled(ask, chain, cart or [], pid, applied)
        if pid is not None and ask.remember and ask.rules.may_rotate() and items:
            self._remember_later(pid, ask.now_ms, [r.item_id for r in items])
        if ask.campaign is None or ask.variant is None or pid is None:
            return RecList(uuid.uuid4().hex, strategy, version, items, applied, note=note)
        campaign, variant = ask.campaign.name, ask.variant.name
        recommendation_id = tagged_id(uuid.uuid4().hex, campaign)
        if ask.remember:  # the exposure knows the list's id: a click counts only on a list served to the profile
            metrics.CAMPAIGN_LISTS.labels(campaign, variant).inc()
            self.exposures.add(Exposure(pid, campaign, variant, ask.now_ms, bool(items), recommendation_id))
        return RecList(recommendation_id, strategy, version, items, applied, campaign, variant, note)

    def _remember_later(self, pid: str, now_ms: int, items: list[str]) -> None:
        """Remember what was served for ``rotate`` without making the answer wait for the write."""
        ttl_ms = int(self.settings.rules_served_ttl_hours * 3_600_000)
        write = self.store.remember_served(pid, now_ms, items, self.settings.rules_served_lists_max, ttl_ms)
        self._later(write, "remember the served list for rotation")

    def _later(self, write: Awaitable[None], what: str) -> None:
        """A write off the request path: the answer does not wait for it (:meth:`drain` does)."""
        task = asyncio.create_task(self._logged(write, what))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Wait for the writes still in flight (the app's shutdown, tests)."""
        await self.exposures.drain()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    @staticmethod
    async def _logged(write: Awaitable[None], what: str) -> None:
        try:
            await write
        except ServiceUnavailable as exc:
            log.warning("could not %s: %s", what, exc)

    async def _ruled(
        self, ask: Ask, chain: Chain, cart: list[str], pid: str | None, applied: dict[str, int]
    ) -> list[Recommended]:
        active = ask.active
        ids = [r.item_id for r in chain.items]
        extras = [i for r in active for i in (*(p.item_id for p in r.spec.pin or ()), *r.promote_ids)]
        listed = set(ids)
        extras = [i for i in dict.fromkeys(extras) if i not in listed]
        wanted = list(dict.fromkeys([*ids, *extras, *cart]))
        cache = self._catalogue
        missing = [i for i in wanted if i not in cache]
        rotate = pid if pid is not None and any(r.spec.rotate is not None for r in active) else None
        fresh, oos, served_lists = await self.store.rules_reads(
            missing, extras, rotate, self.settings.rules_served_lists_max
        )
        cache.update(fresh)
        entries = {i: e for i in wanted if (e := fresh[i] if i in fresh else cache.get(i)) is not None}
        blocked = set(chain.excluded) | set(cart) | oos
        cart_prices: dict[str, float] = {}
        for item in cart:
            e = entries.get(item)
            if e is not None and e.category is not None and e.price is not None:
                cart_prices[e.category] = max(cart_prices.get(e.category, 0.0), e.price)
        ctx = Context(
            now_ms=ask.now_ms,
            info={item: _info(e) for item, e in entries.items()},
            blocked=frozenset(blocked),
            served=served_lists,
            cart_prices=cart_prices,
        )
        outcome = apply_rules(active, [Candidate(r.item_id, r.score, r.reason) for r in chain.items], ask.n, ctx)
        applied.update(outcome.applied)
        for name in outcome.applied:
            metrics.RULES_APPLIED.labels(name).inc()
        out: list[Recommended] = []
        for r in outcome.items:
            extra: dict[str, object] = {}
            if ask.explain:
                extra.update(model_score=r.model_score, final_score=round(r.final_score, 6), rules=r.rules)
                extra["ranker"] = chain.explained.get(r.item_id)
            if ask.attributes:
                e = entries.get(r.item_id)
                extra.update(card_fields(e))
            score = round(r.model_score, 6) if r.model_score is not None else 0.0
            out.append(Recommended(r.item_id, score, r.reason, extra or None))
        return out

    async def _fill(
        self, chain: Chain, categories: list[str], mode: str = "engine", stock: Stock | None = None
    ) -> None:
        """The popularity steps, then out-of-stock removal (refilled once); ``stock``: the out-of-stock items read
        with the profile, when they were (else the store is asked about the list's items). Items not in the
        catalogue go too once the catalogue has items (unless ``ECRM_SERVE_UNCATALOGUED``)."""
        for _ in range(2):
            if not chain.full:
                await self._popular_steps(chain, categories, mode)
            ids = [r.item_id for r in chain.items]
            oos = stock.among(ids) if stock is not None else None
            if oos is None:
                oos = await self.store.out_of_stock(ids)
            if not self.settings.serve_uncatalogued:  # once there is a catalogue, only its items are served
                oos = oos | await self.store.not_in_catalogue(ids)
            chain.items = [r for r in chain.items if r.item_id not in oos]
            if not oos:
                return
            chain.excluded |= oos

    async def _popular_steps(self, chain: Chain, categories: list[str], mode: str = "engine") -> None:
        """Trending in the categories, trending, popular, the catalogue; a ``popularity`` variant starts with the
        all-time popular items, a ``trending`` one with the trending items (neither looks at the categories)."""
        if mode == "popularity":
            chain.add("popular", ((p.item_id, p.score, "popular") for p in await self.store.popular(CANDIDATE_POOL)))
        trending = await self.store.trending(CANDIDATE_POOL)
        if categories and not chain.full and mode == "engine":
            cats = await self.store.item_categories([t.item_id for t in trending])
            wanted = set(categories)
            chain.add(
                "trending-in-category",
                (
                    (t.item_id, t.score, f"popular in {cats[t.item_id]}")
                    for t in trending
                    if cats.get(t.item_id) in wanted
                ),
            )
        chain.add("trending", ((t.item_id, t.score, "trending") for t in trending))
        if not chain.full:
            chain.add("popular", ((p.item_id, p.score, "popular") for p in await self.store.popular(CANDIDATE_POOL)))
        if not chain.full:
            pool = chain.n + len(chain.excluded) + len(chain.items)
            sample = await catalogue_sample(self.store, pool) if chain.allowed is None else sorted(chain.allowed)
            chain.add("catalogue", ((i, 0.0, "from the catalogue") for i in sample))
