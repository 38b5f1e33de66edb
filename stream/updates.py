"""Pure profile logic: what one event changes, as a plain JSON-able plan.

The worker computes a plan per event here (no I/O, unit-tested) and hands a batch of plans to the Redis script
``apply.lua``, which applies each plan atomically together with its de-duplication marker. Change *what* an event
does here; change *how* it is stored in ``apply.lua``.
"""

from __future__ import annotations

import math
from typing import Any

from ecrm.keys import anonymous_pid, customer_pid
from schemas.events import (
    AddToCart,
    Behaviour,
    Item,
    ProductView,
    Purchase,
    RecommendationClick,
    RemoveFromCart,
    Search,
)

Plan = dict[str, Any]


def profile_pid(event: Behaviour) -> str:
    """The profile an event belongs to: the customer when known, else the anonymous visitor."""
    if event.customer_id is not None:
        return customer_pid(event.customer_id)
    assert event.anonymous_id is not None  # guaranteed by the schema
    return anonymous_pid(event.anonymous_id)


def plan_update(event: Behaviour | Item, weights: dict[str, float]) -> Plan:
    """The effects of one event. Keys (all optional but ``id``, ``t``, ``ts``):

    ``p`` profile id; ``login`` anonymous id to merge into the customer; ``s`` session id;
    ``items`` list of ``[item_id, category or "", weight]`` interactions; ``cart`` list of ``[item_id, delta]``
    (delta ``0`` removes the line); ``order`` revenue of a purchase; ``item`` catalogue fields.
    """
    plan: Plan = {"id": event.event_id, "t": event.type, "ts": event.ts_ms}
    if isinstance(event, Item):
        plan["item"] = {
            "id": event.item_id,
            "title": event.title,
            "category": event.category,
            "price": event.price,
            "in_stock": 1 if event.in_stock else 0,
        }
        return plan
    plan["p"] = profile_pid(event)
    if event.customer_id is not None and event.anonymous_id is not None:
        plan["login"] = event.anonymous_id
    if event.session_id is not None:
        plan["s"] = event.session_id
    weight = float(weights.get(event.type, 0.0))
    items = _interactions(event, weight)
    if items:
        plan["items"] = items
    cart = _cart_changes(event)
    if cart:
        plan["cart"] = cart
    if isinstance(event, Purchase):
        plan["order"] = round(event.revenue, 6)
    return plan


def _interactions(event: Behaviour, weight: float) -> list[list[Any]]:
    if isinstance(event, Purchase):
        return [[line.item_id, line.category or "", weight] for line in event.lines]
    if isinstance(event, ProductView | AddToCart):
        return [[event.item_id, event.category or "", weight]]
    if isinstance(event, RemoveFromCart | RecommendationClick):
        return [[event.item_id, "", weight]]
    if isinstance(event, Search):
        return []
    return []


def _cart_changes(event: Behaviour) -> list[list[Any]]:
    if isinstance(event, AddToCart):
        return [[event.item_id, event.quantity]]
    if isinstance(event, RemoveFromCart):
        return [[event.item_id, -event.quantity if event.quantity is not None else 0]]
    if isinstance(event, Purchase):
        return [[line.item_id, 0] for line in event.lines]
    return []


def decay_factor(from_ms: float, to_ms: float, half_life_ms: float) -> float:
    """2 ** ((to - from) / half_life): forward-decay weight of a time ``to`` relative to landmark ``from``."""
    return math.pow(2.0, (to_ms - from_ms) / half_life_ms)


def decayed_now(stored: float, landmark_ms: float, now_ms: float, half_life_ms: float) -> float:
    """The value at ``now`` of a forward-decayed sum stored relative to ``landmark``."""
    return stored / decay_factor(landmark_ms, now_ms, half_life_ms)
