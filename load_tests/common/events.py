"""The events a simulated shopper sends, built the way a shop's tracking would send them.

Ids follow the demo that ``ecrm up`` loads (``runtime/simulate.py``): customers ``cust-00000`` ... and the same
catalogue (``sku-00000`` ... with their categories and prices, popularity following a power law). Every event gets
a fresh ``event_id`` so the engine's de-duplication does not drop it, and the current time in epoch milliseconds.
Pure (no locust): ``tests/unit/test_load_tests.py`` checks the payloads against the schema.
"""

from __future__ import annotations

import itertools
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from runtime.simulate import CatalogueItem, SimulationConfig, make_catalogue

Event = dict[str, Any]
SHOP = "https://shop.example"
CURRENCY = "EUR"
MAX_SESSION_VIEWS = 6  # product views in one browsing session (a batch holds at most 3 * this + 3 events)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The demo catalogue with cumulative power-law weights for picking popular items more often."""

    items: tuple[CatalogueItem, ...]
    cum_weights: tuple[float, ...]

    def pick(self, rng: random.Random) -> CatalogueItem:
        return rng.choices(self.items, cum_weights=self.cum_weights)[0]


def demo_catalogue(cfg: SimulationConfig | None = None) -> Catalogue:
    """The catalogue ``ecrm up`` loads: ``make_catalogue`` is the first use of the demo's seeded generator."""
    cfg = cfg or SimulationConfig()
    items = tuple(make_catalogue(cfg, random.Random(cfg.seed)))
    weights = [1.0 / math.pow(rank + 1, cfg.zipf_exponent) for rank in range(len(items))]
    return Catalogue(items, tuple(itertools.accumulate(weights)))


def demo_customer(index: int) -> str:
    return f"cust-{index:05d}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Visitor:
    """One signed-in customer's browsing state: session, cart and the last recommendations shown."""

    customer_id: str
    catalogue: Catalogue
    rng: random.Random
    session_id: str = field(default_factory=lambda: new_id("lt-s"))
    cart: dict[str, CatalogueItem] = field(default_factory=dict)
    shown: tuple[str, list[str]] | None = None  # (recommendation_id, item ids)

    def _event(self, kind: str, **fields: Any) -> Event:
        return {
            "type": kind,
            "event_id": new_id("lt"),
            "timestamp": now_ms(),
            "customer_id": self.customer_id,
            "session_id": self.session_id,
            **fields,
        }

    def new_session(self) -> None:
        self.session_id = new_id("lt-s")

    def page_view(self, path: str = "/") -> Event:
        return self._event("page_view", url=SHOP + path, referrer="https://search.example/")

    def product_view(self, item: CatalogueItem | None = None) -> Event:
        item = item or self.catalogue.pick(self.rng)
        return self._event(
            "product_view",
            item_id=item.item_id,
            category=item.category,
            price=item.price,
            url=f"{SHOP}/p/{item.item_id}",
        )

    def search(self, query: str) -> Event:
        hits = [i.item_id for i in self.catalogue.items if i.category == query][:20]
        return self._event("search", query=query, results=hits)

    def add_to_cart(self, item: CatalogueItem) -> Event:
        self.cart[item.item_id] = item
        return self._event("add_to_cart", item_id=item.item_id, quantity=1, category=item.category, price=item.price)

    def remove_from_cart(self) -> Event | None:
        if not self.cart:
            return None
        item_id = self.rng.choice(sorted(self.cart))
        del self.cart[item_id]
        return self._event("remove_from_cart", item_id=item_id)

    def purchase(self) -> Event | None:
        """Buy what is in the cart (which empties it); ``None`` with an empty cart."""
        if not self.cart:
            return None
        lines = [
            {"item_id": i.item_id, "quantity": 1, "unit_price": i.price, "category": i.category}
            for i in self.cart.values()
        ]
        self.cart.clear()
        return self._event("purchase", order_id=new_id("lt-o"), currency=CURRENCY, lines=lines)

    def saw_recommendations(self, recommendation_id: str, item_ids: list[str]) -> None:
        self.shown = (recommendation_id, item_ids) if item_ids else None

    def recommendation_click(self) -> Event | None:
        """A click on one of the items last recommended (``None`` before any were shown)."""
        if self.shown is None:
            return None
        recommendation_id, item_ids = self.shown
        return self._event(
            "recommendation_click", recommendation_id=recommendation_id, item_id=self.rng.choice(item_ids)
        )

    def browsing_session(self) -> list[Event]:
        """A whole visit as a tracking SDK flushes it: landing page, product views (some after a search), cart
        changes and, half the time when the cart is not empty, a purchase. Starts a new session."""
        self.new_session()
        batch = [self.page_view()]
        for _ in range(self.rng.randint(1, MAX_SESSION_VIEWS)):
            item = self.catalogue.pick(self.rng)
            if self.rng.random() < 0.15:
                batch.append(self.search(item.category))
            batch.append(self.product_view(item))
            if self.rng.random() < 0.25:
                batch.append(self.add_to_cart(item))
        if self.rng.random() < 0.15 and (removed := self.remove_from_cart()) is not None:
            batch.append(removed)
        if self.rng.random() < 0.5 and (bought := self.purchase()) is not None:
            batch.append(bought)
        return batch
