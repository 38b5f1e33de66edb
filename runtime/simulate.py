"""A clickstream simulator for demos, tests and benchmarks (pure: a seeded generator of event dicts).

Shape of the data: a catalogue with categories and prices, power-law (Zipf) item popularity, customers with
preferred categories, sessions of page views -> product views -> searches -> cart -> purchase funnels, and
anonymous visitors of whom some log in (so their history joins a customer profile).
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CATEGORY_NAMES = [
    "skincare", "makeup", "haircare", "fragrance", "bath", "nails",
    "men", "tools", "wellness", "sun", "kids", "gifts",
]  # fmt: skip
_NS = uuid.UUID("6f1c1b1e-8a43-4c1e-9a56-1f7f0d7d2c11")


@dataclass(frozen=True)
class SimulationConfig:
    customers: int = 200
    anonymous_visitors: int = 100
    items: int = 500
    categories: int = 8
    days: float = 30.0
    sessions_per_customer: float = 4.0
    zipf_exponent: float = 1.1
    cart_rate: float = 0.25
    purchase_rate: float = 0.5
    login_rate: float = 0.3
    currency: str = "EUR"
    seed: int = 7
    end_ms: int | None = None  # default: now
    run_id: str = ""  # part of every event id: the same seed with another run id gives the same data, new ids


@dataclass(frozen=True)
class CatalogueItem:
    item_id: str
    title: str
    category: str
    price: float


def make_catalogue(cfg: SimulationConfig, rng: random.Random) -> list[CatalogueItem]:
    cats = [CATEGORY_NAMES[i % len(CATEGORY_NAMES)] + ("" if i < len(CATEGORY_NAMES) else str(i)) for i in
            range(cfg.categories)]  # fmt: skip
    items = []
    for i in range(cfg.items):
        cat = cats[i % len(cats)]
        price = round(math.exp(rng.gauss(3.0, 0.6)), 2)
        items.append(CatalogueItem(f"sku-{i:05d}", f"{cat.title()} product {i}", cat, price))
    return items


class _Ids:
    def __init__(self, seed: int, run_id: str) -> None:
        self.prefix = f"{seed}:{run_id}:" if run_id else f"{seed}:"
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return str(uuid.uuid5(_NS, f"{self.prefix}{self.n}"))


def simulate(cfg: SimulationConfig) -> Iterator[dict[str, Any]]:
    """Yield events in time order: the catalogue first, then every visitor's sessions."""
    rng = random.Random(cfg.seed)
    ids = _Ids(cfg.seed, cfg.run_id)
    end = cfg.end_ms if cfg.end_ms is not None else int(time.time() * 1000)
    start = end - int(cfg.days * 86_400_000)
    catalogue = make_catalogue(cfg, rng)
    for item in catalogue:
        yield {
            "type": "item", "event_id": ids.next(), "timestamp": start, "item_id": item.item_id,
            "title": item.title, "category": item.category, "price": item.price, "in_stock": True,
            "image_url": f"/img/{item.item_id}.svg",  # drawn by the demo shop (runtime/shop.py)
        }  # fmt: skip
    weights = [1.0 / math.pow(rank + 1, cfg.zipf_exponent) for rank in range(len(catalogue))]
    by_cat: dict[str, list[int]] = {}
    for idx, item in enumerate(catalogue):
        by_cat.setdefault(item.category, []).append(idx)
    sessions: list[tuple[int, dict[str, Any]]] = []
    visitors: list[tuple[str | None, str | None]] = [(f"cust-{i:05d}", None) for i in range(cfg.customers)]
    visitors += [(None, f"anon-{i:05d}") for i in range(cfg.anonymous_visitors)]
    for customer_id, anonymous_id in visitors:
        n_sessions = max(1, int(rng.expovariate(1.0 / cfg.sessions_per_customer)))
        favourite = rng.choice(sorted(by_cat))
        for _ in range(n_sessions):
            t0 = rng.randint(start, end - 3_600_000)
            sessions.append((t0, {"c": customer_id, "a": anonymous_id, "fav": favourite}))
    sessions.sort(key=lambda s: s[0])
    all_events: list[dict[str, Any]] = []
    for t0, who in sessions:
        all_events.extend(_session(cfg, rng, ids, catalogue, weights, by_cat, t0, who))
    all_events.sort(key=lambda e: e["timestamp"])
    yield from all_events


def _session(
    cfg: SimulationConfig,
    rng: random.Random,
    ids: _Ids,
    catalogue: list[CatalogueItem],
    weights: list[float],
    by_cat: dict[str, list[int]],
    t0: int,
    who: dict[str, Any],
) -> list[dict[str, Any]]:
    sid = ids.next()
    ident: dict[str, Any] = {"customer_id": who["c"]} if who["c"] else {"anonymous_id": who["a"]}
    t = t0
    out: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        nonlocal t
        t += rng.randint(5_000, 90_000)
        out.append({"type": kind, "event_id": ids.next(), "timestamp": t, "session_id": sid, **ident, **fields})

    emit("page_view", url="https://shop.example/", referrer="https://search.example/")
    cart: list[CatalogueItem] = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.6:
            idx = rng.choice(by_cat[who["fav"]][: max(3, len(by_cat[who["fav"]]) // 3)])
        else:
            idx = rng.choices(range(len(catalogue)), weights=weights)[0]
        item = catalogue[idx]
        if rng.random() < 0.15:
            emit("search", query=item.category)
        emit("product_view", item_id=item.item_id, category=item.category, price=item.price,
             url=f"https://shop.example/p/{item.item_id}")  # fmt: skip
        if rng.random() < cfg.cart_rate:
            emit("add_to_cart", item_id=item.item_id, quantity=1, category=item.category, price=item.price)
            cart.append(item)
    if cart and rng.random() < 0.15:
        gone = cart.pop()
        emit("remove_from_cart", item_id=gone.item_id)
    if who["a"] and rng.random() < cfg.login_rate:
        ident["customer_id"] = "cust-" + who["a"].split("-")[1].rjust(5, "0") + "L"
        emit("page_view", url="https://shop.example/account/login")
    if cart and rng.random() < cfg.purchase_rate:
        lines = [{"item_id": i.item_id, "quantity": 1, "unit_price": i.price, "category": i.category} for i in cart]
        emit("purchase", order_id=ids.next()[:13], lines=lines, currency=cfg.currency)
    return out


# ----- a campaign played out (docs/campaigns.md): one variant truly converts better -----


@dataclass(frozen=True)
class Served:
    """What the API answered one simulated customer under a campaign."""

    customer_id: str
    variant: str
    recommendation_id: str
    item_ids: tuple[str, ...]


@dataclass(frozen=True)
class CampaignPlay:
    """The true behaviour per variant: the chance that a served customer buys (``rates``; a variant not named
    converts at ``base_rate``), the chance to click an item of a list with items, and the order value."""

    rates: dict[str, float]
    base_rate: float = 0.10
    click_rate: float = 0.25
    mean_order: float = 40.0
    seed: int = 11
    run_id: str = ""  # part of every event id (see SimulationConfig.run_id)


def campaign_events(play: CampaignPlay, served: list[Served], start_ms: int) -> Iterator[dict[str, Any]]:
    """Clicks on the served lists (with their ``recommendation_id``) and purchases, at each variant's true rate
    (pure, seeded). Event times start at ``start_ms``: after every exposure."""
    rng = random.Random(play.seed)
    ids = _Ids(play.seed + 1_000_003, play.run_id)
    t = start_ms
    for s in served:
        t += rng.randint(1, 50)
        if s.item_ids and rng.random() < play.click_rate:
            yield {"type": "recommendation_click", "event_id": ids.next(), "timestamp": t,
                   "customer_id": s.customer_id, "recommendation_id": s.recommendation_id,
                   "item_id": rng.choice(s.item_ids)}  # fmt: skip
        if rng.random() < play.rates.get(s.variant, play.base_rate):
            item = rng.choice(s.item_ids) if s.item_ids else "sku-00000"
            price = round(rng.expovariate(1 / play.mean_order) + 1.0, 2)
            yield {"type": "purchase", "event_id": ids.next(), "timestamp": t + 1, "customer_id": s.customer_id,
                   "order_id": ids.next()[:13], "currency": "EUR",
                   "lines": [{"item_id": item, "quantity": 1, "unit_price": price}]}  # fmt: skip
