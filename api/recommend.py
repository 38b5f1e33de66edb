"""Serving recommendations: the documented fallback chain (see docs/recommender.md).

    personal (model, fold-in of the whole current history)
      -> session / item-based (the model from the cart, the item, or the visitor's session)
      -> trending in the customer's (or the item's) categories
      -> trending (time-decayed popularity) -> all-time popular -> catalogue

Each step only fills what the steps before it left empty; ``strategy`` names the first step that served items,
each item's ``reason`` says why it is there. Bought items (within the re-buy window), items out of stock and
items already shown are excluded throughout. The list is never empty while the catalogue is not.

When Redis cannot serve (down, a timeout ...), the whole chain is replaced by the replica's in-memory copy of
the popular items (:mod:`api.degraded`), with ``strategy: "degraded"``: a recommendation request never fails
because of Redis. For ``DEGRADED_PROBE_S`` after such a failure requests go straight to the copy, so a hung
Redis does not hold every request for the socket timeout.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from api.degraded import PopularCopy, pick
from api.serving import ModelHolder, Served
from core import metrics
from core.errors import StoreUnavailable
from core.keyspace import anonymous_pid, customer_pid
from core.settings import Settings
from profiles.store import ProfileStore, catalogue_sample
from recommender.base import Recommendation

log = logging.getLogger(__name__)
POPULARITY_VERSION = "popularity"
DEGRADED = "degraded"
DEGRADED_PROBE_S = 1.0
CANDIDATE_POOL = 300
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Recommended:
    item_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class RecList:
    recommendation_id: str
    strategy: str
    model_version: str
    items: list[Recommended]


@dataclass
class Chain:
    """Accumulates items from successive strategies (pure)."""

    n: int
    excluded: set[str]
    allowed: set[str] | None = None
    items: list[Recommended] = field(default_factory=list)
    strategy: str | None = None

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


def excluded_purchases(bought: dict[str, int], now_ms: int, rebuy_window_days: float) -> set[str]:
    """Bought items stay out; with a re-buy window they come back once it has passed (pure)."""
    if rebuy_window_days <= 0:
        return set(bought)
    window = rebuy_window_days * _DAY_MS
    return {item for item, ts in bought.items() if now_ms - ts < window}


def personal_reason(rec: Recommendation, bought: dict[str, int]) -> str:
    if rec.reason_item is None:
        return "recommended for you"
    verb = "bought" if rec.reason_item in bought else "viewed"
    return f"because you {verb} {rec.reason_item}"


class RecommendationService:
    def __init__(
        self, store: ProfileStore, holder: ModelHolder, settings: Settings, popular: PopularCopy | None = None
    ) -> None:
        self.store = store
        self.holder = holder
        self.settings = settings
        self.popular = popular or PopularCopy(store, settings)
        self._skip_redis_until = 0.0

    def _version(self, served: Served | None) -> str:
        return served.version if served is not None else POPULARITY_VERSION

    async def _or_degraded(
        self, serve: Callable[[], Awaitable[RecList]], n: int, excluded: set[str], category: str | None = None
    ) -> RecList:
        """``serve()``, or the in-memory popular items when Redis cannot serve it (strategy ``degraded``)."""
        if time.monotonic() >= self._skip_redis_until:
            try:
                return await serve()
            except StoreUnavailable as exc:
                metrics.DEPENDENCY_ERRORS.labels("redis").inc()  # ops: Redis errors seen by the API
                self._skip_redis_until = time.monotonic() + DEGRADED_PROBE_S
                log.warning("recommendations degraded to the in-memory popular items: %s", exc)
        chain = Chain(n, excluded)
        chain.add(DEGRADED, pick(self.popular.items, excluded, category))
        return RecList(uuid.uuid4().hex, DEGRADED, POPULARITY_VERSION, chain.items)

    async def for_profile(self, pid: str, n: int, category: str | None = None, step: str = "personal") -> RecList:
        """A customer's (``step="personal"``) or a visitor session's (``step="session"``) recommendations."""
        return await self._or_degraded(lambda: self._for_profile(pid, n, category, step), n, set(), category)

    async def for_visitor(self, anonymous_id: str, n: int, follow_login: bool = True) -> RecList:
        """A visitor's session recommendations; their customer's once they logged in when ``follow_login``."""

        async def serve() -> RecList:
            pid = await self.store.resolve_visitor(anonymous_id) if follow_login else anonymous_pid(anonymous_id)
            return await self._for_profile(pid, n, None, "session")

        return await self._or_degraded(serve, n, set())

    async def _for_profile(self, pid: str, n: int, category: str | None, step: str) -> RecList:
        served = self.holder.served
        ctx = await self.store.request_context(pid)
        bought, history = ctx.bought, ctx.history
        now = int(time.time() * 1000)
        allowed = await self.store.category_items(category) if category else None
        chain = Chain(n, excluded_purchases(bought, now, self.settings.rebuy_window_days), allowed)
        if served is not None and history:
            mask = served.mask(f"cat:{category}", allowed) if allowed is not None else None
            recs = served.model.recommend(history, n + 10, exclude=chain.excluded, allowed=mask)
            chain.add(step, ((r.item_id, r.score, personal_reason(r, bought)) for r in recs))
        chain.excluded |= {item for item, _, _ in history}  # what they already saw is not news in any step
        categories = [category] if category else ctx.categories
        await self._fill(chain, categories)
        return RecList(uuid.uuid4().hex, chain.strategy or "empty", self._version(served), chain.items)

    async def similar(self, item_id: str, n: int) -> RecList:
        """Cross-sell on a product page: customers who viewed this also viewed ..."""
        return await self._or_degraded(lambda: self._similar(item_id, n), n, {item_id})

    async def _similar(self, item_id: str, n: int) -> RecList:
        served = self.holder.served
        chain = Chain(n, {item_id})
        if served is not None:
            recs = served.model.similar_items(item_id, n + 10)
            chain.add("item-based", ((r.item_id, r.score, f"customers who viewed {item_id} also viewed") for r in recs))
        categories = list((await self.store.item_categories([item_id])).values())
        await self._fill(chain, categories)
        return RecList(uuid.uuid4().hex, chain.strategy or "empty", self._version(served), chain.items)

    async def cart(self, item_ids: list[str], customer_id: str | None, n: int) -> RecList:
        """Complements for a cart (up-selling and cross-selling at checkout)."""
        return await self._or_degraded(lambda: self._cart(item_ids, customer_id, n), n, set(item_ids))

    async def _cart(self, item_ids: list[str], customer_id: str | None, n: int) -> RecList:
        served = self.holder.served
        bought = await self.store.bought(customer_pid(customer_id)) if customer_id else {}
        now = int(time.time() * 1000)
        chain = Chain(n, set(item_ids) | excluded_purchases(bought, now, self.settings.rebuy_window_days))
        if served is not None and item_ids:
            recs = served.model.cart_items(item_ids, n + 10 + len(chain.excluded))
            chain.add(
                "item-based",
                ((r.item_id, r.score, f"goes with {r.reason_item or 'your cart'}") for r in recs),
            )
        categories = sorted(set((await self.store.item_categories(item_ids)).values()))
        await self._fill(chain, categories)
        return RecList(uuid.uuid4().hex, chain.strategy or "empty", self._version(served), chain.items)

    async def _fill(self, chain: Chain, categories: list[str]) -> None:
        """The popularity steps, then out-of-stock removal (refilled once)."""
        for _ in range(2):
            if not chain.full:
                await self._popular_steps(chain, categories)
            oos = await self.store.out_of_stock([r.item_id for r in chain.items])
            chain.items = [r for r in chain.items if r.item_id not in oos]
            if not oos:
                return
            chain.excluded |= oos

    async def _popular_steps(self, chain: Chain, categories: list[str]) -> None:
        trending = await self.store.trending(CANDIDATE_POOL)
        if categories and not chain.full:
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
