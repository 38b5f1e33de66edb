"""Pure profile logic: what one event changes (a typed plan)."""

from __future__ import annotations

import pytest

from core.keyspace import ProfileId
from profiles.layout import ItemEntry, bought, history, item_value, parse_item, recent_items
from profiles.updates import (
    CampaignOutcome,
    CartChange,
    CatalogueUpdate,
    Interaction,
    Plan,
    decay_factor,
    decayed_now,
    plan_update,
)
from schemas import parse_event_obj
from schemas.weights import DEFAULT_EVENT_WEIGHTS

TS = 1_763_888_400_000


def plan(obj: dict[str, object]) -> Plan:
    return plan_update(parse_event_obj({"event_id": "e", "timestamp": TS, **obj}), DEFAULT_EVENT_WEIGHTS)


def test_product_view_is_an_interaction_with_its_weight() -> None:
    p = plan({"type": "product_view", "customer_id": "c", "item_id": "i", "category": "k", "session_id": "s"})
    assert p == Plan(
        event_id="e",
        type="product_view",
        ts=TS,
        profile=ProfileId("c", "c"),
        session="s",
        interactions=(Interaction("i", "k", DEFAULT_EVENT_WEIGHTS["product_view"]),),
    )


def test_anonymous_visitor_has_own_profile_and_login_merges() -> None:
    alone = plan({"type": "page_view", "anonymous_id": "v"})
    assert alone.profile == ProfileId("a", "v") and alone.login is None
    both = plan({"type": "page_view", "anonymous_id": "v", "customer_id": "c"})
    assert both.profile == ProfileId("c", "c") and both.login == "v"


def test_cart_changes() -> None:
    add = plan({"type": "add_to_cart", "customer_id": "c", "item_id": "i", "quantity": 3})
    assert add.cart == (CartChange("i", 3),)
    some = plan({"type": "remove_from_cart", "customer_id": "c", "item_id": "i", "quantity": 2})
    assert some.cart == (CartChange("i", -2),)
    everything = plan({"type": "remove_from_cart", "customer_id": "c", "item_id": "i"})
    assert everything.cart == (CartChange("i", 0),)


def test_purchase_revenue_lines_and_cart_clearing() -> None:
    p = plan(
        {
            "type": "purchase",
            "customer_id": "c",
            "order_id": "o",
            "currency": "EUR",
            "lines": [
                {"item_id": "a", "quantity": 2, "unit_price": 1.25},
                {"item_id": "b", "quantity": 1, "unit_price": 3.0, "category": "k"},
            ],
        }
    )
    assert p.revenue == 5.5
    assert p.interactions == (Interaction("a", "", 5.0), Interaction("b", "k", 5.0))
    assert p.cart == (CartChange("a", 0), CartChange("b", 0))


def test_search_and_page_view_touch_no_items() -> None:
    assert plan({"type": "search", "customer_id": "c", "query": "q"}).interactions == ()
    assert plan({"type": "page_view", "customer_id": "c"}).interactions == ()


def test_catalogue_item() -> None:
    p = plan({"type": "item", "item_id": "i", "title": "T", "category": "k", "price": 2.0, "in_stock": False})
    assert p.catalogue == CatalogueUpdate("i", "T", "k", 2.0, False)
    assert p.profile is None


def test_configurable_weights() -> None:
    event = parse_event_obj(
        {"type": "product_view", "event_id": "e", "timestamp": TS, "customer_id": "c", "item_id": "i"}
    )
    assert plan_update(event, {"product_view": 7.0}).interactions == (Interaction("i", "", 7.0),)


def test_forward_decay_halves_per_half_life() -> None:
    assert decay_factor(0, 10, 10) == pytest.approx(2.0)
    assert decayed_now(8.0, landmark_ms=0, now_ms=30, half_life_ms=10) == pytest.approx(1.0)


PURCHASE = {
    "type": "purchase",
    "anonymous_id": "v",
    "order_id": "o",
    "currency": "EUR",
    "lines": [{"item_id": "a", "quantity": 2, "unit_price": 1.25}],
}


@pytest.mark.parametrize("source", ["server", "admin", "open", "direct"])
def test_a_purchase_from_the_shop_is_an_order(source: str) -> None:
    p = plan_update(parse_event_obj({"event_id": "e", "timestamp": TS, **PURCHASE}), DEFAULT_EVENT_WEIGHTS, source)
    assert p.trusted and p.bought and p.revenue == 2.5


def test_a_browsers_purchase_is_a_claim_without_money() -> None:
    """Issue 18: a collect purchase tells the visitor's own profile what they bought, and adds no revenue."""
    outcome = CampaignOutcome("spring", 86_400_000)
    clicked = CampaignOutcome("spring", 86_400_000, clicked=True)
    event = parse_event_obj({"event_id": "e", "timestamp": TS, **PURCHASE})
    p = plan_update(event, DEFAULT_EVENT_WEIGHTS, "collect", (outcome,), client="c0ffee")
    assert not p.trusted and p.revenue is None and p.bought and p.client == "c0ffee"
    assert p.interactions == (Interaction("a", "", 5.0),)
    assert p.campaigns == ()  # no conversion from a claim
    click = parse_event_obj({
        "event_id": "k", "timestamp": TS, "type": "recommendation_click", "anonymous_id": "v", "item_id": "a",
        "recommendation_id": "r-x",
    })  # fmt: skip
    assert plan_update(click, DEFAULT_EVENT_WEIGHTS, "collect", (clicked,)).campaigns == (clicked,)


def test_the_recent_items_are_the_newest_of_the_item_times() -> None:
    items = {"a": item_value(1, 1000), "b": item_value(2, 3000), "c": item_value(0, 2000),
             "d": item_value(1.5, 3000, 2900), "e": item_value(4, 500)}  # fmt: skip
    assert recent_items(items, 3) == [("d", 3000.0), ("b", 3000.0), ("c", 2000.0)]  # ties: as ZREVRANGE orders them
    assert recent_items(items, 10)[-1] == ("e", 500.0) and recent_items({}, 5) == []
    assert history(items) == [("b", 2.0, 3000), ("d", 1.5, 3000), ("a", 1.0, 1000), ("e", 4.0, 500)]  # weight > 0
    assert bought(items) == {"d": 2900}


def test_an_item_entry_holds_its_weight_and_time() -> None:
    assert item_value(3.0, 1_790_000_000_000) == "3 mubbs7i8"  # times in base 36: 8 digits, not 13
    assert parse_item("3 mubbs7i8").ts == 1_790_000_000_000
    assert item_value(5.0, 9, bought_ms=8) == "5 9 8" and item_value(1, 35) == "1 z" and item_value(1, 36) == "1 10"
    assert parse_item(item_value(0.1 + 0.2, 5)) == ItemEntry(0.1 + 0.2, 5, None)
    assert parse_item("0.30000000000000004 7 6") == (0.30000000000000004, 7, 6)  # as the script writes it (%.17g)
    assert parse_item("1 z 10") == (1.0, 35, 36)
    assert parse_item("2.5") == (2.5, 0, None)  # an older engine's plain weight: time unknown until migrate-keys
    for bad in ("x 1", "1 2 3 4", "1 -5", "1 +5", "1 5!", "1 é"):
        with pytest.raises(ValueError):
            parse_item(bad)
