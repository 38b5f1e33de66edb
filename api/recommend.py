"""Serving recommendations: the fallback chain over what the store knows.

Current chain: trending (time-decayed popularity) -> all-time popular -> catalogue. Items the customer bought and
items out of stock are excluded. The list is never empty while the catalogue (or any interaction) is not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ecrm.keys import customer_pid
from ecrm.store import ProfileStore, ScoredItem, catalogue_sample

POPULARITY_VERSION = "popularity"


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


def new_recommendation_id() -> str:
    return uuid.uuid4().hex


def pick(
    candidates: list[ScoredItem], n: int, excluded: set[str], reason: str, taken: list[Recommended]
) -> list[Recommended]:
    """Append candidates not excluded nor already taken, up to ``n`` in all (pure)."""
    seen = {r.item_id for r in taken} | excluded
    out = list(taken)
    for c in candidates:
        if len(out) >= n:
            break
        if c.item_id not in seen:
            out.append(Recommended(c.item_id, round(c.score, 6), reason))
            seen.add(c.item_id)
    return out


async def popular_for_customer(store: ProfileStore, customer_id: str, n: int) -> RecList:
    """Trending, then popular, then catalogue items, without what the customer bought or what is out of stock."""
    bought = set(await store.bought(customer_pid(customer_id)))
    want = n + len(bought) + 10
    trending = await store.trending(want)
    popular = await store.popular(want) if len(trending) < want else []
    oos = await store.out_of_stock([c.item_id for c in trending + popular])
    excluded = bought | oos
    items = pick(trending, n, excluded, "trending", [])
    strategy = "trending"
    if len(items) < n:
        before = len(items)
        items = pick(popular, n, excluded, "popular", items)
        strategy = strategy if before else "popular"
    if not items:
        catalogue = [ScoredItem(i, 0.0) for i in await catalogue_sample(store, n + len(excluded))]
        items = pick(catalogue, n, excluded, "from the catalogue", [])
        strategy = "catalogue"
    return RecList(new_recommendation_id(), strategy, POPULARITY_VERSION, items)
