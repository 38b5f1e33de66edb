"""Pure profile logic: what one event changes, as a typed :class:`Plan`.

The worker computes a plan per event here (no I/O, unit-tested) and hands a chunk of plans to the store
(:mod:`profiles.store`), which applies each plan atomically together with its de-duplication marker through the
Redis script ``apply.lua``. Change *what* an event does here; change *how* it is stored in ``apply.lua`` (its
key layout is written by :mod:`profiles.script`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from core.keyspace import ProfileId
from core.scopes import trusted
from schemas.events import (
    AddToCart,
    Behaviour,
    Item,
    ProductView,
    Purchase,
    RecommendationClick,
    RemoveFromCart,
)

DIRECT = "direct"  # the source of events a producer wrote to Kafka itself (no ``source`` header)


class Interaction(NamedTuple):
    """An item the visitor interacted with, and how much it says about their interest. (Named tuples here and in
    :class:`CartChange`: immutable, and built for every event at a quarter of a frozen dataclass's cost.)"""

    item_id: str
    category: str  # "" when the event names none: the store then takes the catalogue's
    weight: float


class CartChange(NamedTuple):
    item_id: str
    delta: int  # 0 removes the line


@dataclass(frozen=True, slots=True)
class CatalogueUpdate:
    item_id: str
    title: str
    category: str
    price: float
    in_stock: bool
    attributes: Mapping[str, str | float] | None = None
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class CampaignOutcome:
    """A running campaign an event may count for (filled in by the worker from the campaigns file): the store
    counts it for the variant recorded in the profile, if any, when the event comes after the first exposure."""

    name: str
    attribution_ms: int  # a purchase within this long of a click on the campaign's list is attributed to it
    clicked: bool = False  # a recommendation_click on a list of this campaign
    served: str = ""  # the click's recommendation_id digest: it counts only if that list was served to the profile


class Plan(NamedTuple):
    """The effects of one event. A behavioural event has a ``profile``; a catalogue event has ``catalogue``.
    ``source`` names the sender (an API key scope, or ``direct``): event ids are unique per source. (A named tuple,
    built for every event: a third of a frozen dataclass's cost, ~2 µs per event less in the worker.)"""

    event_id: str
    type: str
    ts: int
    profile: ProfileId | None = None
    login: str | None = None  # the anonymous id merged into the customer (a visitor who logged in)
    session: str | None = None
    interactions: tuple[Interaction, ...] = ()
    cart: tuple[CartChange, ...] = ()
    revenue: float | None = None  # a purchase's order value

    catalogue: CatalogueUpdate | None = None
    source: str = DIRECT
    campaigns: tuple[CampaignOutcome, ...] = ()
    # A browser's claim (a ``collect`` source) is not a fact: no order or revenue (``revenue`` None), a purchase
    # marks the items bought only in an anonymous visitor's own profile, and its weight in trending, popular and
    # the training log is bounded per visitor and per ``client`` (the collector's digest of the sender's address).
    trusted: bool = True
    bought: bool = False  # a purchase: its lines are the visitor's bought items
    client: str | None = None


def profile_of(event: Behaviour) -> ProfileId:
    """The profile an event belongs to: the customer when known, else the anonymous visitor."""
    if event.customer_id is not None:
        return ProfileId("c", event.customer_id)
    assert event.anonymous_id is not None  # guaranteed by the schema
    return ProfileId("a", event.anonymous_id)


def plan_update(
    event: Behaviour | Item,
    weights: Mapping[str, float],
    source: str = DIRECT,
    campaigns: tuple[CampaignOutcome, ...] = (),
    client: str | None = None,
) -> Plan:
    """The effects of one event from ``source``, with interactions weighted by ``weights`` (event type -> weight),
    counting for ``campaigns`` (the running campaigns it may count for: see ``stream.processing``). A purchase adds
    an order and revenue only from a trusted source (:func:`core.scopes.trusted`)."""
    if isinstance(event, Item):
        update = CatalogueUpdate(
            event.item_id, event.title, event.category, event.price, event.in_stock, event.attributes, event.image_url
        )
        return Plan(event.event_id, event.type, event.ts_ms, catalogue=update, source=source, campaigns=campaigns)
    customer = event.customer_id
    is_fact = trusted(source)
    bought = isinstance(event, Purchase)
    shape = _SHAPES.get(type(event))
    interactions, cart = shape(event, float(weights.get(event.type, 0.0))) if shape is not None else ((), ())
    return Plan(
        event_id=event.event_id,
        type=event.type,
        ts=event.ts_ms,
        profile=profile_of(event),
        login=event.anonymous_id if customer is not None else None,
        session=event.session_id,
        interactions=interactions,
        cart=cart,
        revenue=round(event.revenue, 6) if isinstance(event, Purchase) and is_fact else None,
        source=source,
        campaigns=campaigns if is_fact else tuple(c for c in campaigns if c.clicked),
        trusted=is_fact,
        bought=bought,
        client=client,
    )


Changes = tuple[tuple[Interaction, ...], tuple[CartChange, ...]]


def _viewed(event: ProductView, weight: float) -> Changes:
    return (Interaction(event.item_id, event.category or "", weight),), ()


def _added(event: AddToCart, weight: float) -> Changes:
    return (Interaction(event.item_id, event.category or "", weight),), (CartChange(event.item_id, event.quantity),)


def _removed(event: RemoveFromCart, weight: float) -> Changes:
    delta = -event.quantity if event.quantity is not None else 0  # 0 removes the line
    return (Interaction(event.item_id, "", weight),), (CartChange(event.item_id, delta),)


def _clicked(event: RecommendationClick, weight: float) -> Changes:
    return (Interaction(event.item_id, "", weight),), ()


def _bought(event: Purchase, weight: float) -> Changes:
    lines = event.lines
    return (
        tuple(Interaction(line.item_id, line.category or "", weight) for line in lines),
        tuple(CartChange(line.item_id, 0) for line in lines),
    )


# What each behavioural event type does to the visitor's items and cart (the others: neither).
_SHAPES: dict[type[Behaviour], Callable[[Any, float], Changes]] = {
    ProductView: _viewed,
    AddToCart: _added,
    RemoveFromCart: _removed,
    RecommendationClick: _clicked,
    Purchase: _bought,
}


def decay_factor(from_ms: float, to_ms: float, half_life_ms: float) -> float:
    """2 ** ((to - from) / half_life): forward-decay weight of a time ``to`` relative to landmark ``from``."""
    return math.pow(2.0, (to_ms - from_ms) / half_life_ms)


def decayed_now(stored: float, landmark_ms: float, now_ms: float, half_life_ms: float) -> float:
    """The value at ``now`` of a forward-decayed sum stored relative to ``landmark``."""
    return stored / decay_factor(landmark_ms, now_ms, half_life_ms)
